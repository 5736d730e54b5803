"""Image decoding and the paper's stored resolution (§2): short side to S, then the central SxS patch."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, UnidentifiedImageError

try:  # libjpeg-turbo without PIL's object overhead; same pixels as PIL (tests/test_images.py)
  import simplejpeg
except ImportError:  # pragma: no cover - optional speed-up
  simplejpeg = None

JPEG_MAGIC = b"\xff\xd8\xff"


class BadImage(ValueError):
  """A file that is empty, not an image, or truncated."""


def decode(data: bytes, size_hint: int | None = None) -> np.ndarray:
  """Bytes of any image file PIL reads -> uint8 RGB [H, W, 3]. ``size_hint`` lets JPEGs decode at a
  reduced scale that still covers it (the DCT-domain shortcut), which makes big photos cheap."""
  if not data:
    raise BadImage("empty file")
  if simplejpeg is not None and data[:3] == JPEG_MAGIC:
    try:
      return _decode_jpeg(data, size_hint)
    except ValueError:
      pass  # truncated and other rare JPEGs: PIL below decides
  try:
    with Image.open(io.BytesIO(data)) as image:
      if size_hint is not None:
        image.draft("RGB", (size_hint, size_hint))
      return np.asarray(image.convert("RGB"))
  except UnidentifiedImageError:
    raise BadImage("not an image file PIL can read") from None
  except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
    raise BadImage(str(error) or type(error).__name__) from None


def draft_scale(height: int, width: int, size_hint: int | None) -> int:
  """The DCT-domain reduction PIL's ``Image.draft`` picks: the largest of 8, 4, 2, 1 that keeps both sides
  at least ``size_hint``."""
  if size_hint is None:
    return 1
  fits = min(width // size_hint, height // size_hint)
  return next(scale for scale in (8, 4, 2, 1) if scale <= max(fits, 1))


def _decode_jpeg(data: bytes, size_hint: int | None) -> np.ndarray:
  height, width, colorspace, _ = simplejpeg.decode_jpeg_header(data)
  if colorspace not in ("YCbCr", "Gray", "RGB") or height * width > 2 * Image.MAX_IMAGE_PIXELS:
    # CMYK/YCCK: PIL's conversion to RGB differs from libjpeg-turbo's by one level; bombs: PIL's error.
    raise ValueError(colorspace)
  scale = draft_scale(height, width, size_hint)
  # libjpeg-turbo picks the smallest of its scales M/8 that keeps these sides: exactly 1/scale.
  return simplejpeg.decode_jpeg(data, colorspace="RGB", min_height=-(-height // scale), min_width=-(-width // scale))


def resize_short_side_and_center_crop(image: np.ndarray, size: int) -> np.ndarray:
  """Paper §2: rescale so the shorter side is ``size``, then crop out the central ``size`` x ``size``."""
  height, width = image.shape[:2]
  if (height, width) != (size, size):
    scale = size / min(height, width)
    new = (max(size, round(width * scale)), max(size, round(height * scale)))
    image = np.asarray(Image.fromarray(image).resize(new, Image.Resampling.BILINEAR, reducing_gap=2.0))
    height, width = image.shape[:2]
  top, left = (height - size) // 2, (width - size) // 2
  return np.ascontiguousarray(image[top:top + size, left:left + size])


def encode_jpeg(image: np.ndarray, quality: int = 90) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
  return buffer.getvalue()


def load_stored(data: bytes, size: int) -> np.ndarray:
  """Any image file's bytes -> uint8 [size, size, 3] at the paper's stored resolution."""
  return resize_short_side_and_center_crop(decode(data, size_hint=size), size)
