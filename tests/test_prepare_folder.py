"""``prepare --folder``: any ImageNet-style tree (ILSVRC-2010, the Fall 2011 release) into the prepared layout,
checked against an independent resize and crop and against the sorted class names; reruns, unreadable
images and trees that are not ImageNet-style."""

import io
import json
import os

import numpy as np
import pytest
from PIL import Image, ImageOps

from alexnet_jax.data import folder_preparation, prepared_source, shards, sources
from alexnet_jax.errors import ConfigError, UserError
from conftest import last_line, load_config, run_cli

SIZE = 73  # stored size for 64x64 crops
# Made in this order; the labels must follow the sorted names: n0100 -> 0, n0200 -> 1, n0300 -> 2.
CLASSES = ("n0300", "n0100", "n0200")
# (height, width): landscape, portrait, square, and one smaller than SIZE (scaled up)
SHAPES = ((90, 120), (120, 84), (100, 100), (50, 64))


def smooth_picture(rng, height, width) -> np.ndarray:
  """A smooth random picture (photo-like, so JPEG keeps it close)."""
  coarse = Image.fromarray(rng.integers(0, 256, (5, 7, 3), dtype=np.uint8))
  resized = coarse.resize((width, height), Image.Resampling.BICUBIC)
  return np.asarray(resized)


def reference(picture: np.ndarray) -> np.ndarray:
  """§2's 256x256 rescale done another way: PIL crops the central square first, then resizes it."""
  fitted = ImageOps.fit(
      Image.fromarray(picture), (SIZE, SIZE), Image.Resampling.BILINEAR
  )
  return np.asarray(fitted, np.float64)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
  """train/: four pictures per class (JPEG and PNG) and one corrupt file; val/: one per class; test/: one
  for two of the classes. Returns the root and {relative path: picture}."""
  root = tmp_path_factory.mktemp("trees") / "ilsvrc2010"
  rng = np.random.default_rng(0)
  pictures = {}
  layout = {"train": CLASSES, "val": CLASSES, "test": ("n0300", "n0100")}
  for split, classes in layout.items():
    for name in classes:
      os.makedirs(root / split / name)
      count = 4 if split == "train" else 1
      for i, (height, width) in enumerate(SHAPES[:count]):
        ext = "JPEG" if i % 2 == 0 else "png"
        relative = f"{split}/{name}/{name}_{i}.{ext}"
        pictures[relative] = smooth_picture(rng, height, width)
        buffer = io.BytesIO()
        Image.fromarray(pictures[relative]).save(
            buffer, format="JPEG" if ext == "JPEG" else "PNG", quality=95
        )
        (root / relative).write_bytes(buffer.getvalue())
  (root / "train" / "n0200" / "n0200_9.JPEG").write_bytes(
      b"\xff\xd8\xff not really a jpeg"
  )
  (root / "train" / "README.txt").write_text("a loose file: not a class\n")
  return root, pictures


@pytest.fixture(scope="module")
def prepared(tree, tmp_path_factory):
  root, _ = tree
  data_dir = tmp_path_factory.mktemp("data")
  out = folder_preparation.prepare_from_folder(
      str(root), str(data_dir), "tiny2010", size=SIZE, workers=0
  )
  return data_dir, out


def test_every_image_is_stored_rescaled_under_its_sorted_class_label(
    tree, prepared
):
  root, pictures = tree
  _, out = prepared
  info = json.load(open(os.path.join(out, "info.json")))
  # 3 classes x 4 training pictures, the corrupt file skipped and named, not counted
  assert (
      info["num_train"],
      info["num_validation"],
      info["num_test"],
      info["skipped_images"],
  ) == (12, 3, 2, 1)
  assert [s.split(":")[0] for s in info["skipped"]] == [
      "train/n0200/n0200_9.JPEG"
  ]
  assert open(os.path.join(out, "classes.txt")).read().split() == [
      "n0100",
      "n0200",
      "n0300",
  ]
  checked = 0
  for split, folder in (
      ("train", "train"),
      ("validation", "val"),
      ("test", "test"),
  ):
    for path in prepared_source.split_paths(out, split):
      stored = prepared_source.PreparedSource([path], SIZE)
      labels = {int(stored[i]["label"]) for i in range(len(stored))}
      (label,) = labels  # one class per file
      name = sorted(CLASSES)[label]
      originals = sorted(
          p for p in pictures if p.startswith(f"{folder}/{name}/")
      )
      assert len(stored) == len(originals), path
      others = [reference(pictures[p]) for p in pictures if p not in originals]
      for i, relative in enumerate(originals):  # in file-name order
        got = stored[i]["image"].astype(np.float64)
        assert got.shape == (SIZE, SIZE, 3)
        error = np.abs(got - reference(pictures[relative])).mean()
        assert error < 3, (
            relative,
            error,
        )  # JPEG q90 and two resize methods apart
        # and no other picture is that close: it is this one
        assert min(np.abs(got - o).mean() for o in others) > 5 * error
        checked += 1
  assert checked == 12 + 3 + 2


def test_a_rerun_keeps_finished_files_and_redoes_interrupted_ones(
    tree, prepared
):
  root, _ = tree
  data_dir, out = prepared
  kept = prepared_source.split_paths(out, "train")
  before = [os.stat(p).st_mtime_ns for p in kept]
  redo = prepared_source.split_paths(out, "validation")[1]
  os.remove(redo)
  open(redo + ".tmp", "wb").write(b"half")  # a killed run
  folder_preparation.prepare_from_folder(
      str(root), str(data_dir), "tiny2010", size=SIZE, workers=0
  )
  assert [os.stat(p).st_mtime_ns for p in kept] == before
  assert os.path.exists(redo) and not os.path.exists(redo + ".tmp")
  # the skipped image's shard was not redone: its list of skipped images still names it
  info = json.load(open(os.path.join(out, "info.json")))
  assert info["num_validation"] == 3 and info["skipped_images"] == 1


def test_the_ilsvrc2010_config_evaluates_on_the_test_split(prepared):
  data_dir, _ = prepared
  config = load_config("ilsvrc2010")
  assert (config.model.num_classes, config.data.eval_views) == (1000, 10)
  assert (config.data.source, config.data.name) == ("tfds", "ilsvrc2010")
  config.data.update(data_dir=str(data_dir), name="tiny2010")
  assert (
      len(sources.load(config.data, 64).eval) == 3
  )  # validation: training's evals
  config.data.eval_split = "test"  # Table 1's
  splits = sources.load(config.data, 64)
  assert (len(splits.train), len(splits.eval)) == (12, 2)
  assert splits.class_names == ("n0100", "n0200", "n0300")
  config.data.eval_split = "holdout"
  with pytest.raises(ConfigError, match="it has: validation, test"):
    sources.load(config.data, 64)


def test_the_tree_read_as_it_is_evaluates_on_its_test_folder(tree, tmp_path):
  root, _ = tree
  config = load_config("ilsvrc2010")
  config.data.update(source="folder", data_dir=str(root), eval_split="test")
  splits = sources.load(config.data, 64)
  assert (len(splits.train), len(splits.eval)) == (
      13,
      2,
  )  # the corrupt file is listed, skipped when read
  # a tree without test/ is refused, never evaluated on val/ in its place
  for split in ("train", "val"):
    os.makedirs(tmp_path / split / "cat")
    Image.new("RGB", (8, 8)).save(tmp_path / split / "cat" / "1.png")
  config.data.data_dir = str(tmp_path)
  with pytest.raises(ConfigError, match="no directory named 'test'$"):
    sources.load(config.data, 64)


def test_an_unreadable_file_is_skipped_and_named(tmp_path):
  (tmp_path / "ok.png").write_bytes(b"")  # empty: not an image
  records = folder_preparation._read_files(
      str(tmp_path), [str(tmp_path / "gone.JPEG"), str(tmp_path / "ok.png")], 0
  )
  shard = str(tmp_path / "train-00000-of-00001.array_record")
  assert shards.write_shard(shard, records, SIZE, 90, log_skipped=True) == (
      0,
      2,
  )
  lines = shards.skipped_images(str(tmp_path))
  assert lines[0].startswith("gone.JPEG: No such file") and lines[1].startswith(
      "ok.png: "
  )


def test_a_tree_that_is_not_imagenet_style_is_refused_in_one_line(tmp_path):
  def refused(root, match):
    with pytest.raises(UserError, match=match) as error:
      folder_preparation.prepare_from_folder(str(root), str(tmp_path / "data"))
    assert "\n" not in str(error.value)

  refused(tmp_path / "none", "is not a directory")
  os.makedirs(tmp_path / "empty")
  refused(tmp_path / "empty", "has no train/ directory")
  os.makedirs(tmp_path / "empty" / "train")
  refused(tmp_path / "empty", "has no val/ directory")
  os.makedirs(tmp_path / "empty" / "val")
  (tmp_path / "empty" / "train" / "a.jpg").write_bytes(b"x")
  refused(tmp_path / "empty", "train has no class directories")
  os.makedirs(tmp_path / "empty" / "train" / "cat")
  refused(tmp_path / "empty", "train holds no image files")
  (tmp_path / "empty" / "train" / "cat" / "1.jpg").write_bytes(b"x")
  os.makedirs(tmp_path / "empty" / "val" / "zebra")
  refused(tmp_path / "empty", "val has class directories that .* lacks: zebra")
  assert not (tmp_path / "data").exists()  # nothing written for a bad tree

  done = run_cli(
      "alexnet_jax.prepare",
      f"--folder={tmp_path / 'empty' / 'train'}",
      f"--data_dir={tmp_path / 'data'}",
  )
  assert last_line(done) == (
      f"alexnet_jax: {tmp_path / 'empty' / 'train'} has no train/ directory (expected "
      f"{tmp_path / 'empty' / 'train'}/train/CLASS/IMAGE, {tmp_path / 'empty' / 'train'}/val/CLASS/IMAGE "
      f"and, if it has one, {tmp_path / 'empty' / 'train'}/test/CLASS/IMAGE)"
  )
