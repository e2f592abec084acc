"""hrpose: top-down 2D human pose estimation with HRNet and SimpleBaseline (pose_resnet)."""

__version__ = "0.1.0"
