"""Inference on people's own images and videos: `PoseEstimator`, person detectors, drawing, video, tracking.

Arrays are BGR (OpenCV's order) everywhere in this package unless a function says otherwise.
"""

from __future__ import annotations

from hrpose.data.layout import layout_from_config as meta_from_config  # the old name, kept for one release
from hrpose.images import ImageReadError, load_image, to_bgr8
from hrpose.inference.detectors import (
    DetectionFileDetector,
    Detector,
    DetectorError,
    HOGDetector,
    OnnxDetector,
    WholeImageDetector,
    build_detector,
    nms_boxes,
)
from hrpose.inference.drawing import draw_poses, joint_side
from hrpose.inference.estimator import PersonPose, PoseEstimator
from hrpose.inference.tracking import OneEuroFilter, PoseTracker
from hrpose.inference.video import VideoError, VideoReader, VideoWriter
from hrpose.runtime import Backend

__all__ = [
    "Backend",
    "DetectionFileDetector",
    "Detector",
    "DetectorError",
    "HOGDetector",
    "ImageReadError",
    "OneEuroFilter",
    "OnnxDetector",
    "PersonPose",
    "PoseEstimator",
    "PoseTracker",
    "VideoError",
    "VideoReader",
    "VideoWriter",
    "WholeImageDetector",
    "build_detector",
    "draw_poses",
    "joint_side",
    "load_image",
    "meta_from_config",
    "nms_boxes",
    "to_bgr8",
]
