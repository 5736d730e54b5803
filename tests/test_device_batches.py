"""The data path's last leg: the batch schema, and placed, prefetched device batches whose saved state is
that of the last batch a step consumed (so a resumed run continues exactly)."""

import os
import time

import jax
import numpy as np
import pytest
from absl import flags
from jax.sharding import NamedSharding

from alexnet_jax import sharding
from alexnet_jax.data import batch as batch_lib, digits, input_pipeline
from alexnet_jax.data.batch import IMAGE, LABEL, MASK, PADDING, VALID
from alexnet_jax.training import experiment, metrics, steps, train
from alexnet_jax.workdir import checkpointing
from conftest import load_config

real_global_batch = sharding.global_batch


def demo(workers=0, batch_size=8):
  flags.FLAGS.mark_as_parsed()  # grain's worker processes read absl flags
  config = load_config("demo")
  config.batch_size, config.data.num_workers = batch_size, workers
  return config


def assert_same(got, want):
  assert set(got) == set(want)
  for key in want:
    np.testing.assert_array_equal(np.asarray(got[key]), want[key], err_msg=key)


def test_pipeline_batches_follow_the_schema():
  splits = digits.load(64)
  config = demo()
  iterator = input_pipeline.train_iterator(splits, config)
  batch_lib.check(next(iterator), batch_lib.TRAIN, size=64)
  input_pipeline.close(iterator)
  for views in (1, 10):
    # 360 images over 7 processes: 52 for the first three, 51 for process 6, whose last batch is padding alone.
    batches = list(input_pipeline.eval_batches(splits, 64, 7 * 51, views, 6, 7))
    for batch in batches:
      batch_lib.check(
          batch, batch_lib.EVAL, size=64, **batch_lib.eval_dims(views)
      )
    assert (
        len(batches) == 2
        and batches[-1][PADDING].all()
        and not batches[0][PADDING].any()
    )
  with pytest.raises(
      ValueError,
      match=r"batch\['offset'\] is int32\[2\] per example, the schema's int32\[3\]",
  ):
    batch_lib.check(
        {
            **batch_lib.blank(batch_lib.TRAIN, 4, size=64),
            "offset": np.zeros((4, 2), np.int32),
        },
        batch_lib.TRAIN,
        size=64,
    )


@pytest.mark.parametrize("workers,size", [(0, 0), (0, 2), (2, 3)])
def test_a_prefetching_iterator_saves_the_position_of_the_batch_handed_out(
    workers, size
):
  config = demo(workers)
  splits = digits.load(64)
  mesh = sharding.make_mesh(data=2, model=1, devices=jax.devices()[:2])
  plain = input_pipeline.train_iterator(splits, config)
  expected = [next(plain) for _ in range(7)]
  input_pipeline.close(plain)

  first = input_pipeline.device_batches(
      input_pipeline.train_iterator(splits, config), mesh, 8, size
  )
  for want in expected[:3]:
    assert_same(next(first), want)
  state = first.get_state()
  # running on does not move the state already taken
  assert_same(next(first), expected[3])
  input_pipeline.close(first)

  resumed = input_pipeline.device_batches(
      input_pipeline.train_iterator(splits, config), mesh, 8, size
  )
  resumed.set_state(state)
  for want in expected[3:]:
    assert_same(next(resumed), want)
  input_pipeline.close(resumed)


def test_a_checkpoint_of_a_prefetching_iterator_restores_into_a_plain_one_and_back(
    tmp_path,
):
  # The saved file is grain's own: checkpoints from before prefetching resume, and the other way round.
  config = demo()
  splits = digits.load(64)
  mesh = sharding.make_mesh(data=1, model=1, devices=jax.devices()[:1])
  plain = input_pipeline.train_iterator(splits, config)
  expected = [next(plain) for _ in range(5)]
  input_pipeline.close(plain)
  state = {"step": jax.numpy.zeros(())}
  ckpt = checkpointing.Checkpointer(str(tmp_path))
  prefetching = input_pipeline.device_batches(
      input_pipeline.train_iterator(splits, config), mesh, 8, 2
  )
  next(prefetching), next(prefetching)
  ckpt.save(2, state, prefetching, {})
  ckpt.wait()
  input_pipeline.close(prefetching)
  for wrap in (
      lambda it: it,
      lambda it: input_pipeline.device_batches(it, mesh, 8, 2),
  ):
    restored = wrap(input_pipeline.train_iterator(splits, config))
    ckpt.restore(2, checkpointing.abstract_like(state), restored)
    assert_same(next(restored), expected[2])
    input_pipeline.close(restored)
  ckpt.close()


def test_the_train_loop_gets_batches_already_placed_over_the_data_axis(
    tiny_demo_config, tmp_path, monkeypatch
):
  (
      tiny_demo_config.num_train_steps,
      tiny_demo_config.mesh.data,
      tiny_demo_config.mesh.model,
  ) = (3, 4, 1)
  # training batches placed so far; what each step got
  train_placed, seen = [], []
  real = steps.make_train_step

  def recording(spec, mesh, *args):
    step = real(spec, mesh, *args)

    def train_step(state, batch, *rest):
      seen.append(
          (
              len(train_placed),
              {k: v.sharding for k, v in batch.items()},
              batch[IMAGE].shape,
          )
      )
      return step(state, batch, *rest)

    return train_step

  def placing(mesh, local, global_size):
    if VALID in local:  # a training batch (eval batches carry a mask instead)
      train_placed.append(mesh)
    return real_global_batch(mesh, local, global_size)

  monkeypatch.setattr(steps, "make_train_step", recording)
  monkeypatch.setattr(sharding, "global_batch", placing)
  train.train_and_evaluate(tiny_demo_config, str(tmp_path))
  mesh = train_placed[0]
  assert mesh.shape["data"] == 4
  # Step k starts with batches k+1 and k+2 already on their way (data.prefetch = 2).
  assert [placed for placed, _, _ in seen] == [3, 4, 5]
  for _, shardings, shape in seen:
    assert shape == (16, 64, 64, 3)  # the global batch
    assert all(
        s == NamedSharding(mesh, sharding.BATCH_SPEC)
        for s in shardings.values()
    )


def test_a_resumed_prefetching_run_equals_an_uninterrupted_one_without_prefetch(
    tiny_demo_config, tmp_path
):
  tiny_demo_config.data.prefetch = 0
  whole = str(tmp_path / "whole")
  train.train_and_evaluate(tiny_demo_config, whole)
  parts = str(tmp_path / "parts")
  first = tiny_demo_config.copy_and_resolve_references()
  first.data.prefetch, first.num_train_steps = 3, 3
  train.train_and_evaluate(first, parts)
  second = tiny_demo_config.copy_and_resolve_references()
  second.data.prefetch = 3
  train.train_and_evaluate(second, parts)
  losses = lambda workdir: {
      m["step"]: m["train_loss"]
      for m in metrics.read_metrics(workdir)
      if "train_loss" in m
  }
  assert losses(parts) == losses(whole) and len(losses(whole)) == 6


@pytest.mark.skipif(
    not os.path.isdir("/dev/shm"),
    reason="needs POSIX shared memory in /dev/shm",
)
def test_closing_frees_the_shared_memory_of_batches_placed_ahead(monkeypatch):
  names = []

  def placing(mesh, local, global_size):
    names.extend(
        os.path.join("/dev/shm", array.shm.name.lstrip("/"))
        for array in local.values()
    )
    return real_global_batch(mesh, local, global_size)

  monkeypatch.setattr(sharding, "global_batch", placing)
  mesh = sharding.make_mesh(data=1, model=1, devices=jax.devices()[:1])
  iterator = input_pipeline.device_batches(
      input_pipeline.train_iterator(digits.load(64), demo(1)), mesh, 8, 2
  )
  next(iterator)
  # the batch handed out and two ahead
  assert len(names) == 3 * 5 and all(map(os.path.exists, names))
  input_pipeline.close(iterator)
  deadline = time.monotonic() + 10  # grain unlinks on a background thread
  while any(map(os.path.exists, names)) and time.monotonic() < deadline:
    time.sleep(0.05)
  assert not [name for name in names if os.path.exists(name)]


def test_eval_batches_for_the_steps_are_placed_and_count_every_image(
    tiny_demo_config,
):
  exp = experiment.build(tiny_demo_config)
  batches = exp.eval_batches()
  labels = []
  for batch in batches:
    assert batch[LABEL].sharding == NamedSharding(exp.mesh, sharding.BATCH_SPEC)
    labels.append(np.asarray(batch[LABEL])[np.asarray(batch[MASK])])
  batches.close()
  assert sorted(np.concatenate(labels).tolist()) == sorted(
      exp.splits.eval.labels.tolist()
  )
