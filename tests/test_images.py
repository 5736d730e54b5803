"""JPEG decoding: the libjpeg-turbo fast path gives PIL's pixels exactly, at PIL's draft scale."""

import io

import numpy as np
import pytest
from PIL import Image, ImageOps

from alexnet_jax.data import images


def photo(rng, height, width, mode="RGB") -> np.ndarray:
  y, x = np.mgrid[0:height, 0:width] / max(height, width)
  smooth = (
      np.stack(
          [np.sin(7 * x + 3 * y), np.cos(5 * y - 2 * x), np.sin(11 * x * y)], -1
      )
      * 90
      + 128
  )
  pixels = np.clip(smooth + rng.normal(0, 12, smooth.shape), 0, 255).astype(
      np.uint8
  )
  return pixels[..., 0] if mode == "L" else pixels


def encode(pixels: np.ndarray, mode="RGB", **options) -> bytes:
  buffer = io.BytesIO()
  image = Image.fromarray(pixels)
  (image.convert(mode) if mode == "CMYK" else image).save(
      buffer, format="JPEG", quality=90, **options
  )
  return buffer.getvalue()


def pil_reference(data: bytes, size_hint) -> np.ndarray:
  with Image.open(io.BytesIO(data)) as image:
    if size_hint is not None:
      image.draft("RGB", (size_hint, size_hint))
    return np.asarray(image.convert("RGB"))


@pytest.mark.parametrize(
    "height,width",
    [
        (256, 256),
        (375, 500),
        (600, 800),
        (1200, 1600),
        (2100, 2900),
        (513, 1025),
        (300, 257),
        (255, 300),
    ],
)
@pytest.mark.parametrize("subsampling", [0, 1, 2])  # 4:4:4, 4:2:2, 4:2:0
def test_jpeg_decoding_equals_pil_with_and_without_a_size_hint(
    height, width, subsampling
):
  data = encode(
      photo(np.random.default_rng(height * width), height, width),
      subsampling=subsampling,
  )
  for size_hint in (None, 256, 64):
    want = pil_reference(data, size_hint)
    got = images.decode(data, size_hint=size_hint)
    assert got.shape == want.shape and got.dtype == np.uint8
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("kind", ["grayscale", "progressive", "cmyk"])
def test_unusual_jpegs_decode_as_pil_does(kind):
  rng = np.random.default_rng(1)
  if kind == "grayscale":
    data = encode(photo(rng, 400, 600, "L"))
  elif kind == "progressive":
    data = encode(photo(rng, 400, 600), progressive=True)
  else:
    data = encode(photo(rng, 400, 600), mode="CMYK")
  for size_hint in (None, 128):
    np.testing.assert_array_equal(
        images.decode(data, size_hint=size_hint), pil_reference(data, size_hint)
    )


def test_draft_scale_is_pils_choice():
  # By hand: the largest of 8, 4, 2, 1 with both sides / scale >= the hint.
  assert images.draft_scale(375, 500, 256) == 1
  assert images.draft_scale(600, 800, 256) == 2
  assert images.draft_scale(1023, 4000, 256) == 2  # 1023 // 256 = 3 -> 2
  assert images.draft_scale(2100, 2900, 256) == 8
  assert images.draft_scale(5000, 5000, 256) == 8  # never beyond 1/8
  assert images.draft_scale(100, 100, 256) == 1
  assert images.draft_scale(5000, 5000, None) == 1


def test_truncated_and_corrupt_jpegs_are_bad_images():
  data = encode(photo(np.random.default_rng(2), 300, 300))
  with pytest.raises(images.BadImage):
    images.decode(data[:200])
  with pytest.raises(images.BadImage):
    images.decode(images.JPEG_MAGIC + b"\x00" * 500)


def test_decompression_bombs_are_refused_as_pil_refuses_them(monkeypatch):
  data = encode(photo(np.random.default_rng(3), 100, 100))
  # PIL refuses images above twice this (10,000 pixels here)
  monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 4000)
  for size_hint in (None, 32):
    with pytest.raises(images.BadImage):
      images.decode(data, size_hint=size_hint)
  monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 5000)
  assert images.decode(data).shape == (100, 100, 3)


def saved(image: Image.Image, fmt: str, **options) -> bytes:
  buffer = io.BytesIO()
  image.save(buffer, format=fmt, **options)
  return buffer.getvalue()


def grey(values) -> np.ndarray:
  """Expected RGB for grey levels written out by hand: [[v, ...]] -> [[[v, v, v], ...]]."""
  return np.repeat(np.asarray(values, np.uint8)[..., None], 3, axis=-1)


def palette_png() -> bytes:
  image = Image.new("P", (3, 1))
  image.putpalette([255, 0, 0, 0, 0, 255, 10, 200, 30])
  image.putdata([0, 1, 2])
  # palette entry 1 (blue) is transparent
  return saved(image, "PNG", transparency=1)


def palette_alpha_tiff() -> bytes:
  image = Image.new("PA", (2, 1))
  image.putpalette([0, 100, 200, 40, 50, 60])
  image.putdata([(0, 51), (1, 255)])
  return saved(image, "TIFF")


# Each file's expected pixels are worked out by hand: 16-bit values keep their high byte (v >> 8, as PIL does
# for 16-bit RGB PNGs); floats in [0, 1] are scaled by 255, others clipped to [0, 255]; transparency is
# composited on white: c * a/255 + 255 * (1 - a/255).
MODE_CASES = {
    "1": (
        lambda: saved(Image.fromarray(np.array([[0, 1, 1]], bool)), "PNG"),
        grey([[0, 255, 255]]),
    ),
    "L": (
        lambda: saved(
            Image.fromarray(np.array([[0, 100, 255]], np.uint8)), "PNG"
        ),
        grey([[0, 100, 255]]),
    ),
    "I;16": (
        lambda: saved(
            Image.fromarray(
                np.array([[0, 255, 256, 32767, 32768, 65280, 65535]], np.uint16)
            ),
            "PNG",
        ),
        grey([[0, 0, 1, 127, 128, 255, 255]]),
    ),
    "I;16B": (
        lambda: saved(
            Image.frombytes(
                "I;16B",
                (4, 1),
                np.array([0, 511, 4096, 65535], ">u2").tobytes(),
            ),
            "TIFF",
        ),
        grey([[0, 1, 16, 255]]),
    ),
    "I;16 with transparency": (
        lambda: saved(
            Image.fromarray(np.array([[1000, 2000]], np.uint16)),
            "PNG",
            transparency=1000,
        ),
        grey([[255, 7]]),
    ),  # 2000 >> 8 = 7
    "I": (
        lambda: saved(
            Image.fromarray(
                np.array([[-5, 0, 255, 256, 40000, 65535, 70000]], np.int32)
            ),
            "TIFF",
        ),
        grey([[0, 0, 0, 1, 156, 255, 255]]),
    ),  # 40000 = 156 * 256 + 64
    "F in [0, 1]": (
        lambda: saved(
            Image.fromarray(np.array([[0.0, 0.25, 0.5, 1.0]], np.float32)),
            "TIFF",
        ),
        grey([[0, 64, 128, 255]]),
    ),  # 63.75 -> 64, 127.5 -> 128
    "F beyond 1": (
        lambda: saved(
            Image.fromarray(
                np.array([[-3.0, 0.4, 100.6, 300.0, np.nan]], np.float32)
            ),
            "TIFF",
        ),
        grey([[0, 0, 101, 255, 0]]),
    ),
    "LA": (
        lambda: saved(
            Image.fromarray(
                np.array([[[200, 0], [200, 255], [100, 128]]], np.uint8), "LA"
            ),
            "PNG",
        ),
        grey([[255, 200, 177]]),
    ),  # 100 * 128/255 + 255 * 127/255 = 177.2
    "RGBA": (
        lambda: saved(
            Image.fromarray(
                np.array(
                    [[[10, 20, 30, 0], [10, 20, 30, 255], [0, 100, 200, 51]]],
                    np.uint8,
                ),
                "RGBA",
            ),
            "PNG",
        ),
        # 0.2 c + 204
        np.array([[[255, 255, 255], [10, 20, 30], [204, 224, 244]]], np.uint8),
    ),
    "PA": (
        palette_alpha_tiff,
        np.array([[[204, 224, 244], [40, 50, 60]]], np.uint8),
    ),
    "P with transparency": (
        palette_png,
        np.array([[[255, 0, 0], [255, 255, 255], [10, 200, 30]]], np.uint8),
    ),
    "CMYK": (
        lambda: saved(
            Image.fromarray(
                np.array(
                    [[[255, 0, 0, 0], [100, 0, 0, 100], [0, 0, 0, 255]]],
                    np.uint8,
                ),
                "CMYK",
            ),
            "TIFF",
        ),
        # (255 - c)(255 - k)/255
        np.array([[[0, 255, 255], [94, 155, 155], [0, 0, 0]]], np.uint8),
    ),
    "YCbCr": (
        lambda: saved(
            Image.fromarray(
                np.array(
                    [[[128, 128, 255], [76, 85, 255], [200, 128, 128]]],
                    np.uint8,
                ),
                "YCbCr",
            ),
            "TIFF",
        ),
        # JFIF: R = Y + 1.402 (Cr - 128), G = Y - 0.344 (Cb - 128) - 0.714 (Cr - 128), B = Y + 1.772 (Cb - 128)
        np.array([[[255, 37, 128], [254, 0, 0], [200, 200, 200]]], np.uint8),
    ),
    # a, b are signed bytes (0 neutral); L 100 is L* 100 * 100/255 = 39.2 -> Y = ((39.2 + 16) / 116)^3 = 0.108
    # -> sRGB 1.055 Y^(1/2.4) - 0.055 = 0.362
    "LAB": (
        lambda: saved(
            Image.frombytes("LAB", (1, 1), bytes([100, 0, 0])), "TIFF"
        ),
        grey([[92]]),
    ),
}


@pytest.mark.parametrize("case", list(MODE_CASES))
def test_every_mode_pil_reads_decodes_to_its_8bit_rgb(case):
  make, want = MODE_CASES[case]
  got = images.decode(make())
  assert got.dtype == np.uint8 and got.shape == want.shape
  # PIL's fixed-point arithmetic rounds either way
  tolerance = 1 if case in ("YCbCr", "LAB") else 0
  np.testing.assert_allclose(
      got.astype(int), want.astype(int), atol=tolerance, err_msg=case
  )


def test_a_16bit_greyscale_gradient_png_is_scaled_to_8_bits_not_clipped():
  # row r holds r * 256 ... r * 256 + 255
  gradient = np.arange(65536, dtype=np.uint16).reshape(256, 256)
  got = images.decode(saved(Image.fromarray(gradient), "PNG"))
  np.testing.assert_array_equal(
      got,
      np.repeat(
          np.repeat(np.arange(256, dtype=np.uint8)[:, None], 256, 1)[..., None],
          3,
          -1,
      ),
  )
  assert got.mean() == 127.5


def upright(height=48, width=80) -> np.ndarray:
  """A smooth picture that no rotation or flip maps onto itself."""
  y, x = np.mgrid[0:height, 0:width]
  return np.stack(
      [x * 255 // (width - 1), y * 255 // (height - 1), (x + 2 * y) % 256], -1
  ).astype(np.uint8)


def exif(orientation: int, byte_order: str = "MM") -> bytes:
  """An APP1 Exif payload whose IFD0 holds only Orientation (tag 0x0112, SHORT), written out by hand."""
  e = "big" if byte_order == "MM" else "little"
  entry = (
      (0x0112).to_bytes(2, e)
      + (3).to_bytes(2, e)
      + (1).to_bytes(4, e)
      + orientation.to_bytes(2, e)
      + b"\0\0"
  )
  tiff = (
      byte_order.encode()
      + (42).to_bytes(2, e)
      + (8).to_bytes(4, e)
      + (1).to_bytes(2, e)
      + entry
      + bytes(4)
  )
  return b"Exif\0\0" + tiff


# Stored pixels that the orientation tag turns upright: 6 says rotate 90 degrees clockwise to display,
# 8 counter-clockwise.
STORED_FOR = {6: lambda up: np.rot90(up, 1), 8: lambda up: np.rot90(up, -1)}


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "TIFF"])
@pytest.mark.parametrize("orientation", [6, 8])
def test_exif_orientation_turns_the_image_upright(fmt, orientation):
  want = upright()
  stored = np.ascontiguousarray(STORED_FOR[orientation](want))
  options = (
      {"tiffinfo": {0x0112: orientation}}
      if fmt == "TIFF"
      else {"exif": exif(orientation)}
  )
  if fmt == "JPEG":
    options["quality"] = 95
  got = images.decode(saved(Image.fromarray(stored), fmt, **options))
  assert got.shape == want.shape == (stored.shape[1], stored.shape[0], 3)
  error = np.abs(got.astype(int) - want)
  # lossy: close, where a wrong rotation or flip would be off by ~100 levels
  if fmt == "JPEG":
    assert error.mean() < 2 and error.max() < 40
  else:
    assert error.max() == 0


@pytest.mark.parametrize("byte_order", ["MM", "II"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_the_jpeg_fast_path_orients_as_pil_does(
    monkeypatch, orientation, byte_order
):
  data = saved(
      Image.fromarray(photo(np.random.default_rng(orientation), 120, 200)),
      "JPEG",
      exif=exif(orientation, byte_order),
  )
  with Image.open(io.BytesIO(data)) as image:
    want = np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
  monkeypatch.setattr(images.Image, "open", None)  # the fast path, not PIL
  np.testing.assert_array_equal(images.decode(data), want)


# libjpeg-turbo's path and PIL's
@pytest.mark.parametrize("mode", ["RGB", "CMYK"])
def test_an_oriented_jpeg_keeps_its_draft_scale_with_its_sides_swapped(mode):
  data = encode(
      photo(np.random.default_rng(4), 600, 1000), mode=mode, exif=exif(6)
  )
  # By hand: min(1000 // 256, 600 // 256) = 2 -> decoded at 1/2, 300 x 500 stored, 500 x 300 upright.
  assert images.decode(data, size_hint=256).shape == (500, 300, 3)
  assert images.load_stored(data, 256).shape == (256, 256, 3)


@pytest.mark.filterwarnings(
    "ignore:Corrupt EXIF data:UserWarning",
    "ignore:Truncated File Read:UserWarning",
)
@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_malformed_exif_leaves_the_image_as_stored(fmt):
  pixels = photo(np.random.default_rng(5), 64, 96)
  plain = images.decode(saved(Image.fromarray(pixels), fmt))
  for payload in (
      b"Exif\0\0MM\0*\xff\xff\xff\xff",
      b"Exif\0\0II*\0\x08\0\0\0\x05\0",
      b"Exif\0\0XX",
      exif(9),
      b"Exif\0\0MM\0*\0\0\0\x08\0\x01\x01\x12\0\x02\0\0\0\x05\0\0\0\x40",
  ):
    np.testing.assert_array_equal(
        images.decode(saved(Image.fromarray(pixels), fmt, exif=payload)), plain
    )
