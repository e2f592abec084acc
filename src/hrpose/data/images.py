"""Compatibility alias: the dataset image reader lives in `hrpose.images` (one module, one `ImageReadError`)."""

from hrpose.images import READ_FLAGS, ImageReadError, read_image

__all__ = ["READ_FLAGS", "ImageReadError", "read_image"]
