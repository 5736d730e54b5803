"""Random-access image-classification sources: ``len(source)`` and ``source[i] -> {'image', 'label'}``.

Images are uint8 ``[S, S, 3]`` at the *stored* resolution (the paper's 256x256 rescale, §2), from
which training crops and evaluation crops are cut.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from alexnet_jax.errors import ConfigError


class ArraySource:
  """A source over in-memory arrays (grain's RandomAccessDataSource protocol)."""

  def __init__(self, images: np.ndarray, labels: np.ndarray):
    if len(images) != len(labels):
      raise ValueError(f"{len(images)} images but {len(labels)} labels")
    self.images, self.labels = images, labels

  def __len__(self) -> int:
    return len(self.images)

  def __getitem__(self, index: int) -> dict:
    return {"image": self.images[index], "label": np.int32(self.labels[index])}


@dataclasses.dataclass(frozen=True)
class Splits:
  train: ArraySource
  eval: ArraySource
  num_classes: int
  stored_size: int
  class_names: tuple[str, ...]


def stored_size_for(image_size: int) -> int:
  """The paper crops 224 from 256: keep that ratio for other input sizes (64 -> 73)."""
  return int(round(image_size * 256 / 224))


def _resize_bilinear(images: np.ndarray, size: int) -> np.ndarray:
  """[N, h, w] -> [N, size, size], bilinear with pixel centres aligned (as PIL / jax.image)."""
  def weights(n_in: int) -> np.ndarray:
    centres = (np.arange(size) + 0.5) * n_in / size - 0.5
    centres = np.clip(centres, 0, n_in - 1)
    lo = np.floor(centres).astype(int)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = centres - lo
    w = np.zeros((size, n_in))
    w[np.arange(size), lo] += 1 - frac
    w[np.arange(size), hi] += frac
    return w
  rows, cols = weights(images.shape[1]), weights(images.shape[2])
  return np.einsum("ih,nhw,jw->nij", rows, images, cols)


def digits(image_size: int, eval_fraction: float = 0.2) -> Splits:
  """scikit-learn's bundled handwritten digits (1,797 real 8x8 scans, 10 classes): the demo's data.

  Upscaled to the stored size and repeated to RGB. The held-out split is fixed (stratified, seed 0),
  whatever the run's seed, so every run is evaluated on the same images.
  """
  from sklearn.datasets import load_digits
  from sklearn.model_selection import train_test_split

  data = load_digits()
  size = stored_size_for(image_size)
  grey = _resize_bilinear(data.images.astype(np.float64) * (255.0 / 16.0), size)
  rgb = np.repeat(np.clip(np.round(grey), 0, 255).astype(np.uint8)[..., None], 3, axis=-1)
  train_idx, eval_idx = train_test_split(np.arange(len(rgb)), test_size=eval_fraction, random_state=0,
                                         stratify=data.target)
  labels = data.target.astype(np.int32)
  return Splits(ArraySource(rgb[train_idx], labels[train_idx]), ArraySource(rgb[eval_idx], labels[eval_idx]),
                num_classes=10, stored_size=size, class_names=tuple(str(d) for d in range(10)))


def load(data_config, image_size: int) -> Splits:
  """The train and eval splits named by ``config.data``."""
  if data_config.source == "digits":
    return digits(image_size)
  if data_config.source in ("tfds", "folder"):
    raise NotImplementedError(f"data.source={data_config.source!r} is not implemented yet (issue: ImageNet input)")
  raise ConfigError(f"data.source must be 'tfds', 'folder' or 'digits', got {data_config.source!r}")
