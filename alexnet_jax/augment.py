"""Per-image preprocessing on the host workers (paper §2 and §4.1): crops, flips, mean subtraction.

Pixels stay on the paper's 0..255 scale (minus the mean) unless ``scale`` says otherwise.
Each transform maps ``{'image': uint8 [S, S, 3], 'label'}`` to ``{'image': float32 [s, s, 3], 'label'}``.
Random transforms draw from the numpy Generator grain derives from (seed, record index), so the
augmentation of every image in every pass is fixed by ``config.seed``.
"""

from __future__ import annotations

import numpy as np
import grain


def _crop_minus_mean(image: np.ndarray, mean: np.ndarray, top: int, left: int, size: int,
                     scale: float) -> np.ndarray:
  # The paper subtracts the mean image from the 256x256 image; cropping both alike is the same thing.
  window = (slice(top, top + size), slice(left, left + size))
  centred = image[window].astype(np.float32) - mean[window]
  return centred if scale == 1.0 else centred * np.float32(scale)


class RandomCropFlip(grain.transforms.RandomMap):
  """Training: a random ``size`` crop (§4.1: 224 of 256), mirrored with probability 1/2 if ``flip``."""

  def __init__(self, mean: np.ndarray, size: int, flip: bool = True, scale: float = 1.0):
    self.mean, self.size, self.flip, self.scale = mean, size, flip, scale

  def random_map(self, element: dict, rng: np.random.Generator) -> dict:
    image = element["image"]
    top, left = rng.integers(0, image.shape[0] - self.size + 1), rng.integers(0, image.shape[1] - self.size + 1)
    crop = _crop_minus_mean(image, self.mean, top, left, self.size, self.scale)
    if self.flip and rng.random() < 0.5:
      crop = crop[:, ::-1]
    return {"image": np.ascontiguousarray(crop), "label": element["label"]}


class CenterCrop(grain.transforms.Map):
  """Evaluation with one view: the centre ``size`` crop."""

  def __init__(self, mean: np.ndarray, size: int, scale: float = 1.0):
    self.mean, self.size, self.scale = mean, size, scale

  def map(self, element: dict) -> dict:
    image = element["image"]
    top, left = (image.shape[0] - self.size) // 2, (image.shape[1] - self.size) // 2
    return {"image": _crop_minus_mean(image, self.mean, top, left, self.size, self.scale),
            "label": element["label"]}
