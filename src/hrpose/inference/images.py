"""Compatibility alias: the image readers live in `hrpose.images` (one module, one `ImageReadError`)."""

from hrpose.images import (
    IMAGE_SUFFIXES,
    ImageReadError,
    apply_orientation,
    check_pixels,
    decode_image,
    exif_orientation,
    is_image_path,
    jpeg_truncated,
    load_image,
    max_file_bytes,
    to_bgr8,
)

__all__ = [
    "IMAGE_SUFFIXES", "ImageReadError", "apply_orientation", "check_pixels", "decode_image", "exif_orientation",
    "is_image_path", "jpeg_truncated", "load_image", "max_file_bytes", "to_bgr8",
]  # fmt: skip
