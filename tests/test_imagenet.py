"""ImageNet preparation end to end from a tiny fake ILSVRC2012 tar pair, and the TFDS path on mock data."""

import io
import json
import os
import tarfile
from unittest import mock

import numpy as np
import pytest
from PIL import Image

from alexnet_jax import config_files
from alexnet_jax.data import imagenet, prepared_source, tfds_source
from alexnet_jax.errors import ConfigError
from alexnet_jax.data import images, input_pipeline, sources, stats as stats_lib
from alexnet_jax.training import train
from alexnet_jax.errors import UserError
from conftest import TINY_MODEL, load_config

SIZE = 73  # stored size for 64x64 crops (the paper's 256 for 224, scaled)


def jpeg(rng, height, width) -> bytes:
  """A smooth random picture (photo-like, so JPEG keeps it close)."""
  coarse = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8))
  buffer = io.BytesIO()
  coarse.resize((width, height), Image.Resampling.BICUBIC).save(
      buffer, format="JPEG", quality=95
  )
  return buffer.getvalue()


def add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
  info = tarfile.TarInfo(name)
  info.size = len(data)
  tar.addfile(info, io.BytesIO(data))


@pytest.fixture(scope="module")
def fake_ilsvrc(tmp_path_factory):
  """Three synsets of four photos each (one of them corrupt) and six validation photos, laid out like the
  real tars: a train tar of per-synset tars, and a flat validation tar."""
  directory = tmp_path_factory.mktemp("tars")
  synsets, _ = imagenet.imagenet_label_files()
  rng = np.random.default_rng(0)
  chosen = [synsets[5], synsets[1], synsets[900]]
  with tarfile.open(directory / imagenet.TRAIN_TAR, "w") as outer:
    for synset in chosen:
      inner_bytes = io.BytesIO()
      with tarfile.open(fileobj=inner_bytes, mode="w") as inner:
        for i in range(4):
          data = (
              b"\xff\xd8\xff not really a jpeg"
              if (synset, i) == (chosen[1], 2)
              else jpeg(rng, 90 + 7 * i, 120)
          )
          add(inner, f"{synset}_{i}.JPEG", data)
      add(outer, f"{synset}.tar", inner_bytes.getvalue())
  with tarfile.open(directory / imagenet.VAL_TAR, "w") as tar:
    for i in range(6):
      add(tar, f"ILSVRC2012_val_{i + 1:08d}.JPEG", jpeg(rng, 100, 80 + 10 * i))
  return directory, chosen


@pytest.fixture(scope="module")
def prepared(fake_ilsvrc, tmp_path_factory):
  tars, _ = fake_ilsvrc
  data_dir = tmp_path_factory.mktemp("tfds")
  out = imagenet.prepare_from_tars(
      str(tars), str(data_dir), size=SIZE, workers=0
  )
  return data_dir, out


def test_preparation_writes_labelled_paper_resolution_images(
    fake_ilsvrc, prepared
):
  tars, chosen = fake_ilsvrc
  data_dir, out = prepared
  synsets, val_labels = imagenet.imagenet_label_files()
  info = json.load(open(os.path.join(out, "info.json")))
  # the corrupt one skipped
  assert (
      info["num_train"],
      info["num_validation"],
      info["skipped_images"],
  ) == (11, 6, 1)
  splits = prepared_source.load(out, 64)
  assert splits.num_classes == 1000 and splits.class_names[5] == synsets[5]
  train_labels = sorted(
      int(splits.train[i]["label"]) for i in range(len(splits.train))
  )
  # TFDS ids of the chosen synsets; one of synset 1 corrupt
  assert train_labels == [1] * 3 + [5] * 4 + [900] * 4
  assert [int(splits.eval[i]["label"]) for i in range(6)] == [
      synsets.index(v) for v in val_labels[:6]
  ]
  # Each stored image is the original's short side rescaled to SIZE and centre-cropped (JPEG-close).
  with tarfile.open(tars / imagenet.VAL_TAR) as tar:
    original = images.decode(
        tar.extractfile("ILSVRC2012_val_00000006.JPEG").read()
    )
  # A second implementation (PIL's ImageOps.fit: crop to a square first, then resize), and the same with a corner.
  from PIL import Image, ImageOps

  fit = lambda centering: np.asarray(
      ImageOps.fit(
          Image.fromarray(original),
          (SIZE, SIZE),
          Image.Resampling.BILINEAR,
          centering=centering,
      ),
      np.float64,
  )
  got = splits.eval[5]["image"].astype(np.float64)
  # within JPEG error
  assert (
      got.shape == (SIZE, SIZE, 3) and np.abs(got - fit((0.5, 0.5))).mean() < 3
  )
  # not a corner crop
  assert (
      np.abs(got - fit((0.0, 0.0))).mean()
      > 3 * np.abs(got - fit((0.5, 0.5))).mean()
  )


def test_statistics_equal_numpy_over_the_stored_images(prepared):
  _, out = prepared
  splits = prepared_source.load(out, 64)
  stored = np.stack(
      [splits.train[i]["image"] for i in range(len(splits.train))]
  ).astype(np.float64)
  saved = stats_lib.DatasetStats.load(os.path.join(out, "stats.npz"))
  np.testing.assert_allclose(saved.mean_image, stored.mean(axis=0), rtol=1e-5)
  covariance = np.cov((stored / 255).reshape(-1, 3), rowvar=False, bias=True)
  eigenvalues, eigenvectors = np.linalg.eigh(covariance)
  np.testing.assert_allclose(saved.eigenvalues, eigenvalues[::-1], rtol=1e-4)
  for i in range(3):  # eigenvectors up to sign
    assert (
        abs(abs(saved.eigenvectors[:, i] @ eigenvectors[:, 2 - i]) - 1) < 1e-4
    )


def test_rerun_skips_finished_files_and_redoes_interrupted_ones(
    fake_ilsvrc, prepared
):
  tars, _ = fake_ilsvrc
  data_dir, out = prepared
  shard = os.path.join(out, "train-00000-of-00003.array_record")
  before = os.stat(shard).st_mtime_ns
  os.remove(os.path.join(out, "validation-00000-of-00001.array_record"))
  # a killed run
  open(
      os.path.join(out, "validation-00000-of-00001.array_record.tmp"), "wb"
  ).write(b"half")
  imagenet.prepare_from_tars(str(tars), str(data_dir), size=SIZE, workers=0)
  assert os.stat(shard).st_mtime_ns == before
  assert len(prepared_source.load(out, 64).eval) == 6
  assert not [n for n in os.listdir(out) if n.endswith(".tmp")]


def test_a_few_training_steps_on_prepared_imagenet(prepared, tmp_path):
  data_dir, _ = prepared
  config = load_config("paper")
  config.model.update(TINY_MODEL, num_classes=1000)
  config.update(
      batch_size=4,
      num_train_steps=3,
      log_every_steps=1,
      eval_every_steps=3,
      checkpoint_every_steps=3,
  )
  config.mesh.update(data=1, model=2)
  config.data.update(data_dir=str(data_dir), num_workers=0)
  result = train.train_and_evaluate(config, str(tmp_path))
  # 10-crop test over all six, each counted once
  assert result["eval_images"] == 6
  wrong = result["eval_top1_error"] * 6
  # whole images, no padding counted
  assert abs(wrong - round(wrong)) < 1e-6 and np.isfinite(result["eval_loss"])


def test_data_stored_size_finds_data_stored_at_another_ratio_than_the_papers(
    prepared,
):
  # Caffe's net crops 227 from the same 256x256 images (configs/caffe.py); here 60 from the 73 prepared.
  data_dir, _ = prepared
  config = load_config("paper")
  config.data.data_dir = str(data_dir)
  # round(60 * 256 / 224): the paper's ratio
  with pytest.raises(ConfigError, match=r"--size=69$"):
    sources.load(config.data, 60)
  config.data.stored_size = SIZE
  splits = sources.load(config.data, 60)
  assert splits.stored_size == SIZE and splits.train[0]["image"].shape == (
      SIZE,
      SIZE,
      3,
  )
  config.model.image_size, config.data.stored_size = 64, 60
  with pytest.raises(ConfigError, match="data.stored_size=60 must be 0"):
    config_files.validate(config, 2)


def test_missing_imagenet_gives_one_line_with_the_fix(tmp_path):
  with pytest.raises(
      ConfigError,
      match=r"not prepared in .*python -m alexnet_jax.prepare --tars=",
  ):
    tfds_source.load("imagenet2012", str(tmp_path), 224, "train", "validation")


def test_tfds_mock_data_feeds_the_pipeline(tmp_path):
  import tensorflow_datasets as tfds

  with tfds.testing.mock_data(num_examples=8), mock.patch.object(
      tfds.core.DatasetBuilder, "is_prepared", return_value=True
  ):
    splits = tfds_source.load(
        "imagenet2012", str(tmp_path), 64, "train", "validation"
    )
    assert splits.num_classes == 1000 and len(splits.train) == 8
    element = splits.train[3]
    assert (
        element["image"].shape == (SIZE, SIZE, 3)
        and element["image"].dtype == np.uint8
    )
    config = load_config("paper")
    config.model.update(TINY_MODEL, num_classes=1000)
    config.batch_size = 4
    config.data.num_workers = 0
    batch = next(input_pipeline.train_iterator(splits, config))
    assert batch["image"].shape == (4, 64, 64, 3) and batch["alpha"].shape == (
        4,
        3,
    )


# ----------------------------------------------------------------------------- bad input, in one line


def _write_tar(path, members: dict) -> None:
  with tarfile.open(path, "w") as tar:
    for name, data in members.items():
      add(tar, name, data)


def test_a_file_that_is_not_a_tar_is_named_before_anything_is_written(tmp_path):
  _write_tar(tmp_path / imagenet.TRAIN_TAR, {})
  (tmp_path / imagenet.VAL_TAR).write_text("not a tar\n")
  with pytest.raises(
      UserError, match=f"^{tmp_path / imagenet.VAL_TAR} is not a tar archive$"
  ):
    imagenet.prepare_from_tars(str(tmp_path), str(tmp_path / "data"), size=SIZE)
  assert not (tmp_path / "data").exists()


def test_a_synset_file_that_is_not_a_tar_is_named(tmp_path):
  _write_tar(
      tmp_path / imagenet.TRAIN_TAR, {"n01440764.tar": b"not a tar" * 100}
  )
  _write_tar(tmp_path / imagenet.VAL_TAR, {})
  with pytest.raises(
      UserError,
      match=r"ILSVRC2012_img_train.tar: n01440764.tar is not a tar archive$",
  ):
    imagenet.prepare_from_tars(str(tmp_path), str(tmp_path / "data"), size=SIZE)


def test_a_tfds_dataset_that_is_not_built_is_neither_downloaded_nor_given_a_folder(
    tmp_path,
):
  import tensorflow_datasets as tfds

  with mock.patch.object(
      tfds.core.DatasetBuilder,
      "download_and_prepare",
      side_effect=AssertionError("downloads"),
  ):
    with pytest.raises(
        UserError, match=r"'mnist' is not built in .*download_and_prepare\(\)"
    ):
      imagenet.prepare_from_tfds("mnist", str(tmp_path))
  assert os.listdir(tmp_path) == []


def test_a_built_tfds_dataset_is_converted(tmp_path):
  import tensorflow_datasets as tfds

  with tfds.testing.mock_data(num_examples=5), mock.patch.object(
      tfds.core.DatasetBuilder, "is_prepared", return_value=True
  ):
    out = imagenet.prepare_from_tfds("mnist", str(tmp_path), size=32)
  info = json.load(open(os.path.join(out, "info.json")))
  assert (info["num_train"], info["num_validation"]) == (5, 5)
  assert prepared_source.load(out, 28).train[0]["image"].shape == (32, 32, 3)


@pytest.mark.parametrize("module", ["importlib_resources", "tensorflow.compat"])
def test_a_missing_module_of_the_imagenet_extra_names_the_pip_command(
    tmp_path, module
):
  import tensorflow_datasets as tfds

  missing = ModuleNotFoundError(f"No module named '{module}'", name=module)
  with mock.patch.object(tfds, "builder", side_effect=missing):
    with pytest.raises(
        UserError,
        match=rf"needs the module {module} .*pip install -e \"\.\[imagenet\]\"",
    ):
      imagenet.prepare_from_tfds("imagenet2012", str(tmp_path))


def test_another_missing_module_keeps_its_traceback(tmp_path):
  import tensorflow_datasets as tfds

  with mock.patch.object(
      tfds,
      "builder",
      side_effect=ModuleNotFoundError("No module named 'typo'", name="typo"),
  ):
    with pytest.raises(ModuleNotFoundError, match="typo"):
      imagenet.prepare_from_tfds("imagenet2012", str(tmp_path))
