"""Image decoding and the paper's stored resolution (§2): short side to S, then the central SxS patch.

Every mode PIL reads becomes 8-bit RGB: 16-bit and 32-bit integer images keep the high byte of the 16-bit range
(``v >> 8``, as PIL does for 16-bit RGB PNGs); float images are taken as [0, 1] when no value exceeds 1, else as
[0, 255] (PIL's convention), and clipped; transparent pixels are composited on white (their hidden colour is
arbitrary, often black); the rest (1, L, P, CMYK, YCbCr, LAB) through PIL's conversion. The EXIF orientation is
applied, so phone photos come out upright.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# libjpeg-turbo without PIL's object overhead; same pixels as PIL (tests/test_images.py)
try:
  import simplejpeg
except ImportError:  # pragma: no cover - optional speed-up
  simplejpeg = None

JPEG_MAGIC = b"\xff\xd8\xff"


class BadImage(ValueError):
  """A file that is empty, not an image, or truncated."""


def decode(data: bytes, size_hint: int | None = None) -> np.ndarray:
  """Bytes of any image file PIL reads -> uint8 RGB [H, W, 3]. ``size_hint`` lets JPEGs decode at a
  reduced scale that still covers it (the DCT-domain shortcut), which makes big photos cheap.
  """
  if not data:
    raise BadImage("empty file")
  if simplejpeg is not None and data[:3] == JPEG_MAGIC:
    try:
      return _decode_jpeg(data, size_hint)
    except ValueError:
      pass  # truncated and other rare JPEGs: PIL below decides
  try:
    with Image.open(io.BytesIO(data)) as image:
      # a square request: the scale is the same once a 90 degree turn swaps the sides
      if size_hint is not None:
        image.draft("RGB", (size_hint, size_hint))
      image.load()
      try:
        ImageOps.exif_transpose(image, in_place=True)
      # a damaged EXIF block never costs the pixels: they stay as stored
      except Exception:
        pass
      return _to_rgb(image)
  except UnidentifiedImageError:
    raise BadImage("not an image file PIL can read") from None
  except (
      OSError,
      SyntaxError,
      ValueError,
      Image.DecompressionBombError,
  ) as error:
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
  if (
      colorspace not in ("YCbCr", "Gray", "RGB")
      or height * width > 2 * Image.MAX_IMAGE_PIXELS
  ):
    # CMYK/YCCK: PIL's conversion to RGB differs from libjpeg-turbo's by one level; bombs: PIL's error.
    raise ValueError(colorspace)
  scale = draft_scale(height, width, size_hint)
  # libjpeg-turbo picks the smallest of its scales M/8 that keeps these sides: exactly 1/scale.
  pixels = simplejpeg.decode_jpeg(
      data,
      colorspace="RGB",
      min_height=-(-height // scale),
      min_width=-(-width // scale),
  )
  orientation = jpeg_orientation(data)
  return (
      pixels
      if orientation == 1
      else np.ascontiguousarray(_ORIENT[orientation](pixels))
  )


# EXIF orientation -> what turns the stored pixels upright (PIL's ImageOps.exif_transpose, on arrays).
_ORIENT = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),
    8: lambda a: np.rot90(a, 1),
}


def jpeg_orientation(data: bytes) -> int:
  """The EXIF Orientation (1-8) of a JPEG, read from its header without PIL; 1 when absent or unreadable."""
  pos = 2
  while pos + 4 <= len(data) and data[pos] == 0xFF:
    marker = data[pos + 1]
    if marker == 0xFF:  # fill byte
      pos += 1
      continue
    if marker in (0xDA, 0xD9):  # start of scan, end of image: no more headers
      break
    length = int.from_bytes(data[pos + 2 : pos + 4], "big")
    # the first Exif segment, as PIL reads
    if marker == 0xE1 and data[pos + 4 : pos + 10] == b"Exif\0\0":
      return _tiff_orientation(data[pos + 10 : pos + 2 + length])
    pos += 2 + length
  return 1


def _tiff_orientation(tiff: bytes) -> int:
  """Orientation (tag 0x0112) from IFD0 of an Exif TIFF block; 1 when absent or malformed."""
  order = {b"II": "little", b"MM": "big"}.get(tiff[:2])
  if order is None or len(tiff) < 8:
    return 1
  read = lambda at, n: int.from_bytes(tiff[at : at + n], order)
  ifd = read(4, 4)
  if ifd + 2 > len(tiff):
    return 1
  for entry in range(
      ifd + 2, min(ifd + 2 + 12 * read(ifd, 2), len(tiff) - 11), 12
  ):
    if read(entry, 2) == 0x0112:
      # SHORT as the standard says; some writers use LONG
      kind = read(entry + 2, 2)
      value = (
          read(entry + 8, 2)
          if kind == 3
          else read(entry + 8, 4)
          if kind == 4
          else 1
      )
      return value if 1 <= value <= 8 else 1
  return 1


def _to_rgb(image: Image.Image) -> np.ndarray:
  """A PIL image of any mode -> uint8 RGB [H, W, 3] (the rules are in the module's docstring)."""
  mode = image.mode
  if mode.startswith("I") or mode == "F":
    values = np.asarray(image)
    if mode == "F":
      values = np.nan_to_num(
          values.astype(np.float64), nan=0.0, posinf=255.0, neginf=0.0
      )
      scale = 255.0 if values.size and values.max() <= 1.0 else 1.0
      grey = np.rint(np.clip(values * scale, 0, 255)).astype(np.uint8)
    # I;16* hold 0..65535; PIL gives "I" to 16-bit data too (e.g. PGMs, scaled to the full 16 bits)
    else:
      grey = (np.clip(values.astype(np.int64), 0, 65535) >> 8).astype(np.uint8)
    transparent = image.info.get("transparency")
    if isinstance(transparent, int):  # a greyscale PNG's tRNS value
      grey[values == transparent] = 255
    return np.repeat(grey[..., None], 3, axis=-1)
  if mode in ("LA", "La", "PA", "RGBA", "RGBa") or "transparency" in image.info:
    rgba = np.asarray(image.convert("RGBA")).astype(np.float64)
    alpha = rgba[..., 3:] / 255.0
    return np.rint(rgba[..., :3] * alpha + 255.0 * (1.0 - alpha)).astype(
        np.uint8
    )
  return np.asarray(image.convert("RGB"))


def resize_short_side_and_center_crop(
    image: np.ndarray, size: int
) -> np.ndarray:
  """Paper §2: rescale so the shorter side is ``size``, then crop out the central ``size`` x ``size``."""
  height, width = image.shape[:2]
  if (height, width) != (size, size):
    scale = size / min(height, width)
    new = (max(size, round(width * scale)), max(size, round(height * scale)))
    image = np.asarray(
        Image.fromarray(image).resize(
            new, Image.Resampling.BILINEAR, reducing_gap=2.0
        )
    )
    height, width = image.shape[:2]
  top, left = (height - size) // 2, (width - size) // 2
  return np.ascontiguousarray(image[top : top + size, left : left + size])


def encode_jpeg(image: np.ndarray, quality: int = 90) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
  return buffer.getvalue()


def load_stored(data: bytes, size: int) -> np.ndarray:
  """Any image file's bytes -> uint8 [size, size, 3] at the paper's stored resolution."""
  return resize_short_side_and_center_crop(decode(data, size_hint=size), size)
