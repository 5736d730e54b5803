"""The paper's training augmentation as the step receives it (§4.1), through ``train_iterator`` rather
than the augment functions: ``data.random_flip`` and ``data.pca_lighting`` decide the batches, every pass
draws each image's crop, mirror and lighting afresh, and a resumed iterator draws what an uninterrupted
one would.

Each record's label is its index, so a batch element maps back to the image it was cut from.
"""

import jax.numpy as jnp
import numpy as np
import pytest

from alexnet_jax.data import dataset, input_pipeline, preprocess, stats as stats_lib
from conftest import load_config

RECORDS, STORED, CROP, BATCH = 128, 20, 16, 16
PER_PASS = RECORDS // BATCH


def splits():
  # distinct random images: no two crops of different records or windows agree
  images = np.random.default_rng(1).integers(
      0, 256, (RECORDS, STORED, STORED, 3), np.uint8
  )
  source = dataset.ArraySource(images, np.arange(RECORDS))
  return dataset.Splits(
      train=source,
      eval=source,
      num_classes=RECORDS,
      stored_size=STORED,
      class_names=tuple(map(str, range(RECORDS))),
  )


def config(flip, lighting):
  config = load_config("demo")
  config.model.image_size = CROP
  config.batch_size = BATCH
  config.data.num_workers = 0
  config.data.random_flip = flip
  config.data.pca_lighting = lighting
  config.data.lighting_std = 0.1  # the paper's
  return config


def take(iterator, count):
  return [next(iterator) for _ in range(count)]


def passes(flip, lighting, count):
  """``count`` passes of host batches, each pass as arrays ordered by record:
  [pass][key] -> [RECORDS, ...]."""
  data = splits()
  iterator = input_pipeline.train_iterator(data, config(flip, lighting))
  batches = take(iterator, count * PER_PASS)
  input_pipeline.close(iterator)
  out = []
  for p in range(count):
    joined = {
        key: np.concatenate(
            [b[key] for b in batches[p * PER_PASS : (p + 1) * PER_PASS]]
        )
        for key in batches[0]
    }
    # every record exactly once per pass
    assert sorted(joined["label"].tolist()) == list(range(RECORDS))
    order = np.argsort(joined["label"])
    out.append({key: value[order] for key, value in joined.items()})
  # the crop is the window the offset names, of the record the label names
  for one in out:
    for record in range(RECORDS):
      top, left, _ = one["offset"][record]
      np.testing.assert_array_equal(
          one["image"][record],
          data.train.images[record][top : top + CROP, left : left + CROP],
      )
  return out


def test_no_image_is_mirrored_when_random_flip_is_off():
  for one in passes(flip=False, lighting=False, count=3):
    assert not one["offset"][:, 2].any()


def test_about_half_the_images_are_mirrored_when_random_flip_is_on():
  drawn = passes(flip=True, lighting=False, count=4)
  flags = np.concatenate([one["offset"][:, 2] for one in drawn])
  assert set(flags.tolist()) <= {0, 1}
  # n = 512 draws of Bernoulli(1/2): sd 11.3; 4.5 sd (51 images) either side of 256
  n = len(flags)
  assert abs(flags.sum() - n / 2) <= 4.5 * np.sqrt(n / 4), flags.sum()

  # and the step mirrors exactly those (zero mean image: the network sees the crop itself)
  first = drawn[0]
  consts = preprocess.constants(
      stats_lib.DatasetStats(
          np.zeros((STORED, STORED, 3), np.float32),
          np.ones(3, np.float32),
          np.eye(3, dtype=np.float32),
          1,
      )
  )
  seen = np.asarray(
      preprocess.network_input(
          jnp.asarray(first["image"]),
          jnp.asarray(first["offset"]),
          consts,
          1.0,
          jnp.asarray(first["alpha"]),
      )
  )
  mirrored = first["offset"][:, 2].astype(bool)
  want = np.where(
      mirrored[:, None, None, None], first["image"][:, :, ::-1], first["image"]
  )
  np.testing.assert_array_equal(seen, want.astype(np.float32))


def test_alpha_is_zero_when_pca_lighting_is_off():
  for one in passes(flip=True, lighting=False, count=3):
    assert one["alpha"].shape == (RECORDS, 3)
    assert not one["alpha"].any()


def test_alpha_is_drawn_with_the_configured_std_when_pca_lighting_is_on():
  alpha = np.concatenate(
      [one["alpha"] for one in passes(flip=False, lighting=True, count=4)]
  )
  values = alpha.ravel()
  n = len(values)  # 512 images x 3 coefficients
  assert np.count_nonzero(values) == n
  # N(0, 0.1): the sample std's relative sd is 1/sqrt(2n) = 1.8%; allow 10% (5.5 sd).
  # The mean's sd is 0.1/sqrt(n) = 0.0026; allow 5 sd.
  assert values.std() == pytest.approx(0.1, rel=0.10), values.std()
  assert abs(values.mean()) <= 5 * 0.1 / np.sqrt(n), values.mean()


def test_every_pass_draws_new_crops_flips_and_lighting_for_each_image():
  first, second = passes(flip=True, lighting=True, count=2)
  a, b = first["offset"], second["offset"]
  window_moved = np.any(a[:, :2] != b[:, :2], axis=1).mean()
  flip_changed = (a[:, 2] != b[:, 2]).mean()
  alpha_changed = np.any(first["alpha"] != second["alpha"], axis=1).mean()
  # Fresh draws: 5x5 windows keep their place 1 time in 25 (expected 96% moved, allow down to 75%);
  # the flag changes with probability 1/2 (expected 64 of 128, sd 5.7; allow down to 30%, 3.5 sd);
  # continuous alpha always changes. Draws tied to the record alone would give 0 for all three.
  assert window_moved >= 0.75, window_moved
  assert flip_changed >= 0.30, flip_changed
  assert alpha_changed == 1.0, alpha_changed


def test_a_resumed_iterator_draws_the_same_augmentation_as_an_uninterrupted_one():
  data, cfg = splits(), config(flip=True, lighting=True)
  uninterrupted = input_pipeline.train_iterator(data, cfg)
  # past the middle of the second pass, across into the third
  expected = take(uninterrupted, 2 * PER_PASS + 2)
  input_pipeline.close(uninterrupted)
  stopped_at = PER_PASS + PER_PASS // 2

  first = input_pipeline.train_iterator(data, cfg)
  take(first, stopped_at)
  state = first.get_state()
  input_pipeline.close(first)
  # a new process would start like this
  resumed = input_pipeline.train_iterator(data, cfg)
  resumed.set_state(state)
  for want in expected[stopped_at:]:
    got = next(resumed)
    for key in ("offset", "alpha", "image", "label"):
      np.testing.assert_array_equal(got[key], want[key], err_msg=key)
  input_pipeline.close(resumed)
  # the resumed batches are augmented at all: not a comparison of zeros
  tail = np.concatenate([b["alpha"] for b in expected[stopped_at:]])
  assert tail.any()
