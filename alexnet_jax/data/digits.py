"""The demo's data: 1,797 real 8x8 handwritten digits, shipped in the package (no download, no scikit-learn).

``digits.csv.gz`` is scikit-learn's own copy of the test set of the UCI "Optical Recognition of Handwritten
Digits" data (see DIGITS-LICENSE.txt): one row per image, 64 pixels in 0..16 then the label.

The held-out split is the one ``sklearn.model_selection.train_test_split(..., test_size=0.2, random_state=0,
stratify=labels)`` gave (scikit-learn 1.9), reproduced step by step below with numpy's RandomState, so the
demo's measured results still hold; tests/test_digits.py compares the two where scikit-learn is installed.
"""

from __future__ import annotations

import gzip
import importlib.resources
import math

import numpy as np

from alexnet_jax.data.dataset import ArraySource, Splits, stored_size_for

NUM_IMAGES = 1797


def raw() -> tuple[np.ndarray, np.ndarray]:
  """(images float64 [1797, 8, 8] in 0..16, labels int [1797]), as ``sklearn.datasets.load_digits`` gives them."""
  with importlib.resources.files("alexnet_jax.data").joinpath(
      "digits.csv.gz"
  ).open("rb") as f:
    table = np.loadtxt(gzip.open(f), delimiter=",")
  return table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(int)


def _approximate_mode(
    class_counts: np.ndarray, n_draws: int, rng: np.random.RandomState
) -> np.ndarray:
  """sklearn.utils.extmath._approximate_mode: draws per class, ties in the remainders broken by ``rng``."""
  continuous = class_counts / class_counts.sum() * n_draws
  floored = np.floor(continuous)
  need_to_add = int(n_draws - floored.sum())
  if need_to_add > 0:
    remainder = continuous - floored
    for value in np.sort(np.unique(remainder))[::-1]:
      (inds,) = np.where(remainder == value)
      add_now = min(len(inds), need_to_add)
      floored[rng.choice(inds, size=add_now, replace=False)] += 1
      need_to_add -= add_now
      if need_to_add == 0:
        break
  return floored.astype(int)


def stratified_split(
    labels: np.ndarray, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
  """(train, test) indices exactly as ``train_test_split(test_size=test_fraction, random_state=seed,
  stratify=labels)``: sklearn's StratifiedShuffleSplit, one split. Every rng call is in sklearn's order,
  since any other order gives another permutation."""
  if not 0 < test_fraction < 1:
    raise ValueError(f"test_fraction={test_fraction} must be in (0, 1)")
  # sklearn rounds the test share up
  n_test = math.ceil(test_fraction * len(labels))
  n_train = len(labels) - n_test
  _, y_indices, class_counts = np.unique(
      labels, return_inverse=True, return_counts=True
  )
  class_indices = np.split(
      np.argsort(y_indices, kind="stable"), np.cumsum(class_counts)[:-1]
  )
  rng = np.random.RandomState(seed)
  n_i = _approximate_mode(class_counts, n_train, rng)
  t_i = _approximate_mode(class_counts - n_i, n_test, rng)
  train, test = [], []
  for i, members in enumerate(class_indices):
    shuffled = members.take(rng.permutation(class_counts[i]), mode="clip")
    train.extend(shuffled[: n_i[i]])
    test.extend(shuffled[n_i[i] : n_i[i] + t_i[i]])
  return rng.permutation(train), rng.permutation(test)


def load(
    image_size: int, eval_fraction: float = 0.2, stored_size: int = 0
) -> Splits:
  """The digits upscaled to the stored size and repeated to RGB. The held-out split is fixed (stratified,
  seed 0), whatever the run's seed, so every run is evaluated on the same images.
  """
  pixels, labels = raw()
  size = stored_size_for(image_size, stored_size)
  grey = _resize_bilinear(pixels * (255.0 / 16.0), size)
  rgb = np.repeat(
      np.clip(np.round(grey), 0, 255).astype(np.uint8)[..., None], 3, axis=-1
  )
  train_idx, eval_idx = stratified_split(labels, eval_fraction, seed=0)
  labels = labels.astype(np.int32)
  return Splits(
      ArraySource(rgb[train_idx], labels[train_idx]),
      ArraySource(rgb[eval_idx], labels[eval_idx]),
      num_classes=10,
      stored_size=size,
      class_names=tuple(str(d) for d in range(10)),
  )


def _resize_bilinear(grey: np.ndarray, size: int) -> np.ndarray:
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

  rows, cols = weights(grey.shape[1]), weights(grey.shape[2])
  return np.einsum("ih,nhw,jw->nij", rows, grey, cols)
