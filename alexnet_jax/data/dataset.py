"""What every image source gives: ``len(source)`` and ``source[i] -> {'image', 'label', 'valid'}``, the
train and eval ``Splits`` of one dataset, and the stored resolution.

Images are uint8 ``[S, S, 3]`` at the *stored* resolution (the paper's 256x256 rescale, §2), from
which training crops and evaluation crops are cut.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from absl import logging

from alexnet_jax.data import images


class ArraySource:
  """A source over in-memory arrays (grain's RandomAccessDataSource protocol)."""

  def __init__(self, images: np.ndarray, labels: np.ndarray):
    if len(images) != len(labels):
      raise ValueError(f"{len(images)} images but {len(labels)} labels")
    self.images, self.labels = images, labels

  def __len__(self) -> int:
    return len(self.images)

  def __getitem__(self, index: int) -> dict:
    return {
        "image": self.images[index],
        "label": np.int32(self.labels[index]),
        "valid": True,
    }


class DecodingSource:
  """Base for sources of encoded images: a record that cannot be decoded comes back ``valid=False``
  (zeros), is named in a warning once per worker, and is masked out of the loss and the metrics.
  """

  size: int

  def __init__(self, size: int):
    self.size = size
    self._warned: set[int] = set()

  def _decoded(self, index: int, data: bytes, label: int, name: str) -> dict:
    try:
      return {
          "image": images.load_stored(data, self.size),
          "label": np.int32(label),
          "valid": True,
      }
    except images.BadImage as error:
      return self._unreadable(index, label, name, str(error))

  def _unreadable(self, index: int, label: int, name: str, reason: str) -> dict:
    if index not in self._warned:
      self._warned.add(index)
      logging.warning("skipping unreadable image %s: %s", name, reason)
    return {
        "image": np.zeros((self.size, self.size, 3), np.uint8),
        "label": np.int32(label),
        "valid": False,
    }


@dataclasses.dataclass(frozen=True)
class Splits:
  # random-access sources: len() and [i] -> {'image': uint8 [S, S, 3], 'label', 'valid'}
  train: object
  eval: object
  num_classes: int
  stored_size: int
  class_names: tuple[str, ...]
  # precomputed training-set statistics, if the data came with them
  stats_path: str | None = None
  # class directories without a training image (folder data)
  empty_classes: tuple[str, ...] = ()


def stored_size_for(image_size: int, stored_size: int = 0) -> int:
  """``stored_size`` where set (``data.stored_size``); else the paper's ratio, 224 crops from 256, kept
  for other input sizes (64 -> 73)."""
  return stored_size or int(round(image_size * 256 / 224))
