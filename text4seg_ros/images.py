"""Camera pixels to the Segmenter's ``(H, W, 3)`` uint8 RGB, shared by the node and the CLI.

ROS-free (numpy and Pillow). One rule for every entry point:

* 8-bit pixels are used as they are;
* 16-bit pixels are scaled to 8 bits by their high byte (``v >> 8``: 0..65535 onto 0..255,
  what the node does with ``mono16``), never clipped;
* float pixels, and integers beyond 16 bits, have no agreed range (depth in metres, HDR
  radiance, ...): they are refused with an :class:`ImageError` saying so, never clipped.

Image files and compressed frames are decoded with Pillow after their size (from the header)
was checked against ``max_pixels``, so a huge image is refused before its pixels are allocated.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

# A 4K frame is 8.3 Mpx; 8K (33 Mpx) and above is refused by default (the node's
# max_image_pixels default).
DEFAULT_MAX_PIXELS = 3840 * 2160

# Pillow modes of 16-bit single-channel pixels (PNG, TIFF, PGM).
_MODES_16 = ("I;16", "I;16L", "I;16B", "I;16N")
_FLOAT_HINT = "convert it to an 8-bit or 16-bit image first"


class ImageError(ValueError):
    """Pixels or an image file that cannot be used (size, encoding, depth, undecodable)."""


def check_size(height: int, width: int, max_pixels: int | None) -> None:
    """Raise :class:`ImageError` for a zero-size image or one above ``max_pixels``."""
    if height <= 0 or width <= 0:
        raise ImageError(f"image has zero size ({width} x {height}); need width, height >= 1")
    if max_pixels is not None and height * width > max_pixels:
        raise ImageError(
            f"image of {width} x {height} = {height * width} pixels exceeds max_image_pixels "
            f"{max_pixels}"
        )


def to_uint8(pixels: np.ndarray, what: str = "image") -> np.ndarray:
    """``pixels`` (any shape) as uint8: uint8 as is, uint16 by its high byte (``v >> 8``).

    Signed integer pixels within 0..65535 (Pillow's 32-bit ``I`` mode of a 16-bit file) count
    as 16-bit. Floats and wider or negative integers raise :class:`ImageError`.
    """
    if pixels.dtype == np.uint8:
        return pixels
    if pixels.dtype == np.uint16:
        return (pixels >> 8).astype(np.uint8)
    if pixels.dtype.kind in "iu":
        low, high = (int(pixels.min()), int(pixels.max())) if pixels.size else (0, 0)
        if low >= 0 and high <= 0xFFFF:
            return (pixels >> 8).astype(np.uint8)
        raise ImageError(
            f"{what} has {pixels.dtype.itemsize * 8}-bit integer pixels in {low}..{high}, "
            f"outside the 16-bit range 0..65535; {_FLOAT_HINT}"
        )
    if pixels.dtype.kind == "f":
        raise ImageError(
            f"{what} has floating-point pixels ({pixels.dtype}), which have no fixed range "
            f"(8- and 16-bit images are read); {_FLOAT_HINT}"
        )
    raise ImageError(f"{what} has pixels of dtype {pixels.dtype}; 8- or 16-bit images are read")


def gray_to_rgb(gray: np.ndarray, what: str = "image") -> np.ndarray:
    """``(H, W)`` grey pixels (8- or 16-bit, see :func:`to_uint8`) as ``(H, W, 3)`` uint8."""
    return np.repeat(to_uint8(gray, what)[:, :, None], 3, axis=2)


def decode_image(
    source: bytes | Path,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    what: str = "image",
    exif: bool = False,
) -> np.ndarray:
    """An encoded image (file ``Path`` or bytes: PNG, JPEG, TIFF, ...) as ``(H, W, 3)`` uint8 RGB.

    Grey, palette, alpha and CMYK images become RGB (alpha dropped); 16-bit grey is scaled by
    :func:`to_uint8` (Pillow's own conversion clips it at 255); float images are refused.
    ``exif``: apply the EXIF orientation (files from phones; never for camera frames, whose
    pixel frame must stay the camera's). ``max_pixels`` is checked from the header, before the
    pixels are decoded. Raises :class:`ImageError` for every problem, naming ``what``.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        handle = Image.open(source if isinstance(source, Path) else io.BytesIO(source))
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise ImageError(f"cannot decode {what}: {exc}") from None
    try:
        with handle as img:
            width, height = img.size
            check_size(height, width, max_pixels)
            if exif:
                img = ImageOps.exif_transpose(img)
            if img.mode in _MODES_16 or img.mode in ("I", "F"):
                return gray_to_rgb(np.asarray(img), what)
            return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()
    except ImageError:
        raise
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageError(f"cannot decode {what}: {exc}") from None
