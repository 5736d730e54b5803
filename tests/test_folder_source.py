"""Folder datasets: listing survives broken symlinks and names what it skips, files that vanish or fail to read
mid-run come back masked out, and training class directories without images are refused by name.
"""

import errno
import io
import logging
import os

import numpy as np
import pytest
from PIL import Image

from alexnet_jax.data import folder_source


def image(path, value=128):
  Image.fromarray(np.full((20, 30, 3), value, np.uint8)).save(path)


def write_tree(root, train=("cat", "dog"), val=("cat", "dog"), per_class=2):
  for split, names in (("train", train), ("val", val)):
    for name in names:
      os.makedirs(root / split / name)
      for i in range(per_class):
        image(root / split / name / f"{i}.png")


def warnings_of(caplog):
  return [
      r.getMessage() for r in caplog.records if r.levelno == logging.WARNING
  ]


def test_listing_skips_broken_entries_and_names_them_in_one_warning(
    tmp_path, caplog
):
  data = tmp_path / "data"
  write_tree(data)
  cat = data / "train" / "cat"
  os.symlink("0.png", cat / "link.png")  # a symlinked file that resolves: kept
  os.symlink("missing.png", cat / "dangling.png")
  os.symlink("loop.png", cat / "loop.png")
  os.mkdir(cat / "dir.jpg")
  os.mkfifo(cat / "pipe.jpg")  # opening it would block a worker for ever
  # hidden names stay silently out, as before
  (cat / ".hidden.png").write_bytes(b"")
  os.symlink("loopclass", data / "train" / "loopclass")
  os.makedirs(tmp_path / "elsewhere" / "bird")
  image(tmp_path / "elsewhere" / "bird" / "0.png")
  # a symlinked class directory: kept
  os.symlink(tmp_path / "elsewhere" / "bird", data / "train" / "bird")
  with caplog.at_level(logging.WARNING):
    splits = folder_source.load(str(data), 64)
  assert (
      splits.class_names == ("bird", "cat", "dog") and splits.num_classes == 3
  )
  train = data / "train"
  want = [
      "bird/0.png",
      "cat/0.png",
      "cat/1.png",
      "cat/link.png",
      "dog/0.png",
      "dog/1.png",
  ]
  assert splits.train.files == [str(train / name) for name in want]
  np.testing.assert_array_equal(splits.train.labels, [0, 1, 1, 1, 2, 2])
  assert splits.train[3]["valid"] and splits.train[3]["image"].shape == (
      73,
      73,
      3,
  )
  [message] = [m for m in warnings_of(caplog) if str(train) in m]
  assert message.startswith(
      f"skipping 5 entries under {train} that are not image files or class directories: "
  )
  for name in (
      "loopclass (symlink loop)",
      "cat/dangling.png (dangling symlink)",
      "cat/dir.jpg (a directory)",
      "cat/loop.png (symlink loop)",
      "cat/pipe.jpg (not a regular file)",
  ):
    assert name in message, name
  assert ".hidden" not in message and "link.png" not in message


def test_the_skip_warning_names_five_entries_and_counts_the_rest(
    tmp_path, caplog
):
  data = tmp_path / "data"
  write_tree(data)
  for i in range(7):
    os.symlink(f"gone{i}", data / "train" / "dog" / f"d{i}.png")
  with caplog.at_level(logging.WARNING):
    folder_source.load(str(data), 64)
  [message] = [m for m in warnings_of(caplog) if "skipping" in m]
  assert (
      message.startswith("skipping 7 entries")
      and message.count("(dangling symlink)") == 5
  )
  assert message.endswith("dog/d4.png (dangling symlink), ...")


def test_a_class_directory_that_links_to_an_ancestor_is_named_as_empty(
    tmp_path, caplog
):
  data = tmp_path / "data"
  write_tree(data)
  # a cycle: listing must neither hang nor find images in it
  os.symlink("..", data / "train" / "up")
  with caplog.at_level(logging.WARNING):
    splits = folder_source.load(str(data), 64)
  assert splits.empty_classes == ("up",)
  assert (
      f"{data / 'train'} has 1 class directories that hold no image files: up"
      in warnings_of(caplog)
  )


def test_empty_training_class_directories_are_named_where_the_class_count_is_checked(
    tmp_path, caplog, tiny_demo_config
):
  from alexnet_jax.training import experiment
  from alexnet_jax.errors import TrainingError

  data = tmp_path / "data"
  write_tree(data)
  os.makedirs(data / "train" / "empty")
  # only a subdirectory and a hidden file
  os.makedirs(data / "train" / "hollow" / "sub")
  (data / "train" / "hollow" / ".DS_Store").write_bytes(b"x")
  with caplog.at_level(logging.WARNING):
    splits = folder_source.load(str(data), 64)
  assert splits.empty_classes == ("empty", "hollow")
  assert any(
      "2 class directories that hold no image files: empty, hollow" in m
      for m in warnings_of(caplog)
  )
  tiny_demo_config.data.source, tiny_demo_config.data.data_dir = "folder", str(
      data
  )
  # what the user counted: the classes with images
  tiny_demo_config.model.num_classes = splits.num_classes - 2
  with pytest.raises(TrainingError) as error:
    experiment.build(tiny_demo_config)
  assert str(error.value) == (
      f"the data has {splits.num_classes} classes but model.num_classes="
      f"{splits.num_classes - 2} (2 of its class directories hold no training image: "
      f"empty, hollow; remove them or add images)"
  )


def test_an_empty_class_directory_in_the_eval_split_is_fine(tmp_path):
  data = tmp_path / "data"
  write_tree(data)
  for f in (data / "val" / "dog").iterdir():
    f.unlink()
  splits = folder_source.load(str(data), 64)
  assert splits.num_classes == 2 and len(splits.eval) == 2
  np.testing.assert_array_equal(splits.eval.labels, [0, 0])


def test_a_file_that_vanishes_or_fails_to_read_is_masked_out_with_one_warning(
    tmp_path, monkeypatch, caplog
):
  data = tmp_path / "data"
  write_tree(data, train=("cat",), per_class=4)
  cat = data / "train" / "cat"
  source = folder_source.FolderSource(str(data / "train"), ("cat",), 32)
  (cat / "0.png").unlink()  # deleted after listing
  (cat / "1.png").unlink()
  os.mkdir(cat / "1.png")  # replaced by a directory
  real_open = open

  class FailingRead(io.RawIOBase):

    def read(self, size=-1):
      raise OSError(errno.EIO, os.strerror(errno.EIO))

  def flaky_open(path, *args, **kwargs):
    return (
        FailingRead()
        if str(path).endswith("2.png")
        else real_open(path, *args, **kwargs)
    )

  monkeypatch.setattr(folder_source, "open", flaky_open, raising=False)
  with caplog.at_level(logging.WARNING):
    for _ in range(2):  # a second epoch warns no more
      records = [source[i] for i in range(4)]
  assert [r["valid"] for r in records] == [False, False, False, True]
  for record in records[:3]:
    assert (
        record["image"].shape == (32, 32, 3)
        and not record["image"].any()
        and record["label"] == 0
    )
  messages = [
      m for m in warnings_of(caplog) if "skipping unreadable image" in m
  ]
  assert messages == [
      f"skipping unreadable image {cat / '0.png'}: {os.strerror(errno.ENOENT)}",
      f"skipping unreadable image {cat / '1.png'}: {os.strerror(errno.EISDIR)}",
      f"skipping unreadable image {cat / '2.png'}: {os.strerror(errno.EIO)}",
  ]
