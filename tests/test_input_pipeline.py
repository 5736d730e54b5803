"""The grain pipeline: exact resume with and without worker processes; folder datasets with bad files;
read-ahead bounded while the consumer pauses; worker batches' shared memory freed on close.
"""

import os
import time

import numpy as np
import pytest
from absl import flags
from PIL import Image

from alexnet_jax import sharding
from alexnet_jax.data import dataset, digits, folder_source, input_pipeline, stats as stats_lib
from alexnet_jax.errors import ConfigError
from alexnet_jax.training import metrics
from alexnet_jax.errors import TrainingError
from conftest import load_config, run_cli, tiny_flags


@pytest.mark.parametrize("workers", [0, 2])
def test_resumed_iterator_continues_with_exactly_the_next_batch(workers):
  flags.FLAGS.mark_as_parsed()  # grain's worker processes read absl flags
  config = load_config("demo")
  config.batch_size = 8
  config.data.num_workers = workers
  splits = digits.load(64)
  uninterrupted = input_pipeline.train_iterator(splits, config)
  expected = [next(uninterrupted) for _ in range(6)]
  first = input_pipeline.train_iterator(splits, config)
  for _ in range(3):
    next(first)
  state = first.get_state()
  # a new process would start like this
  resumed = input_pipeline.train_iterator(splits, config)
  resumed.set_state(state)
  for want in expected[3:]:
    got = next(resumed)
    for key in want:
      np.testing.assert_array_equal(got[key], want[key])
  for it in (uninterrupted, first, resumed):
    if hasattr(it, "close"):
      it.close()


@pytest.mark.skipif(
    not os.path.isdir("/dev/shm"),
    reason="needs POSIX shared memory in /dev/shm",
)
def test_closing_frees_the_shared_memory_of_batches_made_into_device_arrays():
  # Worker processes hand batches over in shared memory; jax arrays made from them on the CPU alias it
  # and are freed only by the cycle collector. Left to the interpreter's exit, Python warns of leaked
  # shared_memory objects and removes them itself.
  flags.FLAGS.mark_as_parsed()
  config = load_config("demo")
  config.batch_size, config.data.num_workers = 8, 1
  iterator = input_pipeline.train_iterator(digits.load(64), config)
  mesh = sharding.make_mesh(1, 1)
  names = []
  for _ in range(3):
    host = next(iterator)
    names += [
        os.path.join("/dev/shm", array.shm.name.lstrip("/"))
        for array in host.values()
    ]
    assert all(map(os.path.exists, names[-len(host) :]))
    device = sharding.global_batch(mesh, host, config.batch_size)
    del host, device
  input_pipeline.close(iterator)
  deadline = time.monotonic() + 10  # grain unlinks on a background thread
  while any(map(os.path.exists, names)) and time.monotonic() < deadline:
    time.sleep(0.05)
  assert not [name for name in names if os.path.exists(name)]


def write_folder(root):
  rng = np.random.default_rng(0)
  for split, count in (("train", 8), ("val", 3)):
    for name in ("cat", "dog"):
      os.makedirs(root / split / name)
      for i in range(count):
        pixels = rng.integers(0, 256, (60 + 5 * i, 90, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(
            root / split / name / f"{i}.{'png' if i % 2 else 'jpg'}"
        )
  (root / "train" / "cat" / "empty.jpg").write_bytes(b"")
  (root / "train" / "dog" / "notes.txt").write_text("not an image")
  (root / "train" / "dog" / "truncated.jpg").write_bytes(
      (root / "train" / "dog" / "0.jpg").read_bytes()[:200]
  )
  (root / "val" / "cat" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 garbage")


def test_folder_dataset_skips_and_reports_bad_files(tmp_path):
  data = tmp_path / "data"
  write_folder(data)
  workdir = tmp_path / "run"
  done = run_cli(
      "alexnet_jax.main",
      *tiny_flags(),
      f"--workdir={workdir}",
      "--config.data.source=folder",
      f"--config.data.data_dir={data}",
      "--config.model.num_classes=2",
      "--config.batch_size=4",
      "--config.num_train_steps=5",
      "--config.log_every_steps=1",
      "--config.eval_every_steps=5",
      env={"XLA_FLAGS": "--xla_force_host_platform_device_count=1"},
  )
  assert done.returncode == 0, done.stderr[-3000:]
  for name in ("empty.jpg", "notes.txt", "truncated.jpg", "broken.jpg"):
    assert (
        "skipping unreadable image" in done.stderr and name in done.stderr
    ), name
  lines = metrics.read_metrics(str(workdir))
  # 19 files, 3 of them bad: the first 5 batches of 4 hold every training file once (and one more).
  skipped = sum(m["train_skipped_images"] for m in lines if "train_loss" in m)
  assert skipped in (3, 4)
  final = [m for m in lines if "eval_loss" in m][-1]
  assert (final["eval_images"], final["eval_skipped_images"]) == (6, 1)


@pytest.mark.parametrize(
    "damage, message",
    [
        (
            lambda data: [os.remove(f) for f in (data / "val").glob("*/*")],
            "val holds no files",
        ),
        (
            lambda data: os.rename(data / "val" / "dog", data / "val" / "wolf"),
            "val has class directories that",
        ),
    ],
    ids=["empty_val", "class_not_in_train"],
)
def test_unusable_evaluation_folders_are_refused_before_training(
    tmp_path, damage, message
):
  data = tmp_path / "data"
  write_folder(data)
  damage(data)
  with pytest.raises(ConfigError, match=message):
    folder_source.load(str(data), 64)


def test_no_readable_training_image_stops_with_one_line():
  class Unreadable:

    def __len__(self):
      return 3

    def __getitem__(self, index):
      return {
          "image": np.zeros((0, 0, 3), np.uint8),
          "label": np.int32(0),
          "valid": False,
      }

  with pytest.raises(
      TrainingError, match="none of the 3 training images could be read"
  ):
    stats_lib.compute(Unreadable())


def test_missing_data_directory_stops_before_compiling_with_one_line(tmp_path):
  done = run_cli(
      "alexnet_jax.main",
      *tiny_flags(),
      f"--workdir={tmp_path / 'run'}",
      "--config.data.source=folder",
      f"--config.data.data_dir={tmp_path / 'nowhere'}",
      "--config.model.num_classes=2",
  )
  assert done.returncode != 0 and "Traceback" not in done.stderr
  last = done.stderr.strip().splitlines()[-1]
  assert (
      last.startswith("alexnet_jax: no training images:")
      and str(tmp_path / "nowhere") in last
  )


class CountingSource:
  """Tiny blank images; counts how many were read."""

  def __init__(self, count, size):
    self.count, self.size, self.reads = count, size, 0

  def __len__(self):
    return self.count

  def __getitem__(self, index):
    self.reads += 1
    return {
        "image": np.zeros((self.size, self.size, 3), np.uint8),
        "label": np.int32(index % 10),
        "valid": True,
    }


def test_reading_ahead_stops_while_the_consumer_waits():
  # A consumer that pauses (evaluating, saving) must not make the pipeline buffer batches without end:
  # grain's default read up to 500 batches ahead. Bound: the threads' batches plus as many buffered.
  config = load_config("demo")
  config.batch_size, config.data.num_workers = 4, 0
  splits = dataset.Splits(
      CountingSource(1000, 73),
      CountingSource(100, 73),
      10,
      73,
      tuple(map(str, range(10))),
  )
  iterator = input_pipeline.train_iterator(splits, config)
  next(iterator)
  # blank images take microseconds: unbounded, thousands would be read by now
  time.sleep(1.0)
  threads = input_pipeline.read_options(0).num_threads
  assert splits.train.reads <= (2 * threads + 1) * config.batch_size
  iterator.close()

  batches = input_pipeline.eval_batches(splits, 64, global_batch=4, views=10)
  next(batches)
  time.sleep(1.0)
  # two batches ahead, the one taken, one per thread in flight
  assert splits.eval.reads <= 3 * 4 + 8
