"""JPEG decoding: the libjpeg-turbo fast path gives PIL's pixels exactly, at PIL's draft scale."""

import io

import numpy as np
import pytest
from PIL import Image

from alexnet_jax import images


def photo(rng, height, width, mode="RGB") -> np.ndarray:
  y, x = np.mgrid[0:height, 0:width] / max(height, width)
  smooth = np.stack([np.sin(7 * x + 3 * y), np.cos(5 * y - 2 * x), np.sin(11 * x * y)], -1) * 90 + 128
  pixels = np.clip(smooth + rng.normal(0, 12, smooth.shape), 0, 255).astype(np.uint8)
  return pixels[..., 0] if mode == "L" else pixels


def encode(pixels: np.ndarray, mode="RGB", **options) -> bytes:
  buffer = io.BytesIO()
  image = Image.fromarray(pixels)
  (image.convert(mode) if mode == "CMYK" else image).save(buffer, format="JPEG", quality=90, **options)
  return buffer.getvalue()


def pil_reference(data: bytes, size_hint) -> np.ndarray:
  with Image.open(io.BytesIO(data)) as image:
    if size_hint is not None:
      image.draft("RGB", (size_hint, size_hint))
    return np.asarray(image.convert("RGB"))


@pytest.mark.parametrize("height,width", [(256, 256), (375, 500), (600, 800), (1200, 1600), (2100, 2900),
                                          (513, 1025), (300, 257), (255, 300)])
@pytest.mark.parametrize("subsampling", [0, 1, 2])  # 4:4:4, 4:2:2, 4:2:0
def test_jpeg_decoding_equals_pil_with_and_without_a_size_hint(height, width, subsampling):
  data = encode(photo(np.random.default_rng(height * width), height, width), subsampling=subsampling)
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
    np.testing.assert_array_equal(images.decode(data, size_hint=size_hint), pil_reference(data, size_hint))


def test_draft_scale_is_pils_choice():
  # By hand: the largest of 8, 4, 2, 1 with both sides / scale >= the hint.
  assert images.draft_scale(375, 500, 256) == 1
  assert images.draft_scale(600, 800, 256) == 2
  assert images.draft_scale(1023, 4000, 256) == 2   # 1023 // 256 = 3 -> 2
  assert images.draft_scale(2100, 2900, 256) == 8
  assert images.draft_scale(5000, 5000, 256) == 8   # never beyond 1/8
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
  monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 4000)  # PIL refuses images above twice this (10,000 pixels here)
  for size_hint in (None, 32):
    with pytest.raises(images.BadImage):
      images.decode(data, size_hint=size_hint)
  monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 5000)
  assert images.decode(data).shape == (100, 100, 3)
