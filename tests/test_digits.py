"""The demo's shipped digits: fixed facts without scikit-learn, and the split against sklearn's where it is installed.

The demo's measured results (README) hold only for the same train/eval images in the same order.
"""

import hashlib

import numpy as np
import pytest

from alexnet_jax.data import digits


def _split():
  _, labels = digits.raw()
  return labels, *digits.stratified_split(labels, 0.2, seed=0)


def test_the_shipped_file_holds_the_1797_digits():
  pixels, labels = digits.raw()
  assert pixels.shape == (1797, 8, 8) and labels.shape == (1797,)
  assert pixels.min() == 0 and pixels.max() == 16
  assert np.bincount(labels).tolist() == [
      178,
      182,
      177,
      183,
      181,
      182,
      181,
      179,
      174,
      180,
  ]
  assert labels[:12].tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]
  # The first and last csv rows, read by hand from digits.csv.gz.
  assert pixels[0, 1].tolist() == [0, 0, 13, 15, 10, 15, 5, 0]
  assert pixels[0, 7].tolist() == [0, 0, 6, 13, 10, 0, 0, 0]
  assert (
      pixels[1796, 6].tolist() == [0, 8, 16, 10, 8, 16, 8, 0]
      and labels[1796] == 8
  )


def test_the_split_is_the_one_the_demo_was_measured_on():
  labels, train, test = _split()
  assert np.bincount(labels[train]).tolist() == [
      142,
      146,
      142,
      146,
      145,
      145,
      145,
      143,
      139,
      144,
  ]
  assert np.bincount(labels[test]).tolist() == [
      36,
      36,
      35,
      37,
      36,
      37,
      36,
      36,
      35,
      36,
  ]
  assert sorted(np.concatenate([train, test]).tolist()) == list(range(1797))
  assert train[:8].tolist() == [1346, 295, 257, 385, 1640, 849, 640, 757]
  assert test[:8].tolist() == [1496, 188, 705, 820, 413, 744, 1466, 500]
  # The whole order, from scikit-learn 1.9.1's train_test_split(test_size=0.2, random_state=0, stratify=labels).
  order = np.concatenate([train, test]).astype("<i8").tobytes()
  assert (
      hashlib.sha256(order).hexdigest()
      == "c2c37eddf53c5760fcdd74abac61600a5d88406ff48a08fa172800c1236593b6"
  )


def test_the_splits_pixels_and_labels():
  splits = digits.load(64)
  assert (
      len(splits.train),
      len(splits.eval),
      splits.stored_size,
      splits.num_classes,
  ) == (1437, 360, 73, 10)
  labels, train, test = _split()
  assert (
      splits.eval.labels.dtype == np.int32
      and splits.eval.labels.tolist() == labels[test].tolist()
  )
  image = splits.eval[0]["image"]
  assert image.shape == (73, 73, 3) and image.dtype == np.uint8
  assert (image[..., 0] == image[..., 2]).all()  # grey, repeated to RGB
  # Eval image 0 is csv row 1496, a 7; train image 0 is row 1346, a 3 (values seen with the sklearn loader).
  assert splits.eval[0]["label"] == 7 and splits.train[0]["label"] == 3
  assert (
      int(image[0, 0, 0]),
      int(image[36, 36, 0]),
      int(image[20, 36, 0]),
  ) == (0, 171, 56)
  assert int(image[..., 0].astype(np.int64).sum()) == 368843
  assert int(splits.train[0]["image"][..., 0].astype(np.int64).sum()) == 406006


def test_the_split_matches_sklearn():
  model_selection = pytest.importorskip("sklearn.model_selection")
  datasets = pytest.importorskip("sklearn.datasets")
  data = datasets.load_digits()
  pixels, labels = digits.raw()
  np.testing.assert_array_equal(pixels, data.images)
  np.testing.assert_array_equal(labels, data.target)
  # the rng order, not just one lucky case
  for fraction, seed in ((0.2, 0), (0.25, 3), (0.1, 42)):
    want = model_selection.train_test_split(
        np.arange(len(labels)),
        test_size=fraction,
        random_state=seed,
        stratify=data.target,
    )
    got = digits.stratified_split(labels, fraction, seed)
    for w, g in zip(want, got):
      np.testing.assert_array_equal(w, g)
