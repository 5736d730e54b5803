"""Per-image augmentation on the host workers (paper §4.1 and §4.1's test procedure).

The host cuts the uint8 crops: cheap work that also shrinks what travels to the device. It records
where each crop came from and whether it is to be mirrored (``offset``: top, left, flipped) and draws
the PCA-lighting coefficients (``alpha``); ``preprocess`` mirrors, subtracts the mean image and adds the
lighting on the device, where mirroring costs nothing (on the host, a mirrored copy of a 224x224 crop
took ~0.35 ms: a third of a JPEG decode).
All randomness comes from the numpy Generator the pipeline seeds with (seed, pass, record).
"""

from __future__ import annotations

import numpy as np

from alexnet_jax.data.batch import ALPHA, IMAGE, LABEL, OFFSET, VALID


def _crop(image: np.ndarray, top: int, left: int, size: int) -> np.ndarray:
  return np.ascontiguousarray(image[top : top + size, left : left + size])


def random_crop_flip(
    element: dict,
    rng: np.random.Generator,
    size: int,
    flip: bool,
    lighting_std: float,
) -> dict:
  """Training: a random ``size`` crop (224 of 256), to be mirrored with probability 1/2 (on the device),
  and the lighting coefficients alpha ~ N(0, lighting_std) drawn once per image per pass.
  """
  image = element[IMAGE]
  top = int(rng.integers(0, image.shape[0] - size + 1))
  left = int(rng.integers(0, image.shape[1] - size + 1))
  flipped = bool(flip and rng.random() < 0.5)
  alpha = rng.normal(0.0, lighting_std, 3) if lighting_std > 0 else np.zeros(3)
  return {
      IMAGE: _crop(image, top, left, size),
      OFFSET: np.array([top, left, flipped], np.int32),
      ALPHA: alpha.astype(np.float32),
      LABEL: element[LABEL],
      VALID: element.get(VALID, True),
  }


def view_offsets(stored: int, size: int, views: int) -> np.ndarray:
  """[views, 3] (top, left, flipped): 1 = the centre crop; 10 = corners and centre, then their mirrors."""
  far, mid = stored - size, (stored - size) // 2
  centre = [(mid, mid)]
  if views == 1:
    return np.array([(mid, mid, 0)], np.int32)
  if views != 10:
    raise ValueError(f"evaluation takes 1 or 10 views, not {views}")
  places = [(0, 0), (0, far), (far, 0), (far, far)] + centre
  return np.array([(t, l, f) for f in (0, 1) for t, l in places], np.int32)


def eval_views(element: dict, size: int, views: int) -> dict:
  """Evaluation: the centre crop (views=1) or the paper's 10 crops. ``offset`` [views, 3] lists every view;
  ``image`` holds each window once, [windows, size, size, 3] in the order of the unmirrored views: the
  device mirrors them for the other five (``preprocess.views_input``), so the host cuts and sends half.
  """
  image = element[IMAGE]
  offsets = view_offsets(image.shape[0], size, views)
  crops = np.stack(
      [_crop(image, t, l, size) for t, l, flipped in offsets if not flipped]
  )
  return {
      IMAGE: crops,
      OFFSET: offsets,
      LABEL: element[LABEL],
      VALID: element.get(VALID, True),
  }
