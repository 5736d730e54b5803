"""ImageNet at the paper's 256x256 resolution, from the ILSVRC2012 tars or a built TFDS dataset
(``python -m alexnet_jax.prepare``; any ImageNet-style folder tree: ``data/folder_preparation.py``).

Every image is rescaled as §2 says (short side to 256, central 256x256 patch) and written as JPEG into
ArrayRecord files under ``DATA_DIR/alexnet_jax/imagenet2012-256/`` (~22 GB instead of ~150 GB), with the
training-set statistics (mean image, RGB eigenvectors) in ``stats.npz`` beside them. Labels follow TFDS's
imagenet2012 (sorted synsets; validation labels from TFDS's file), so results compare with TFDS runs.
Re-running skips finished files; an interrupted run leaves only ``*.tmp`` files, which are redone. The
directory is usable once ``info.json`` exists: it is written last.
"""

from __future__ import annotations

import contextlib
import functools
import os
import tarfile
import time

import numpy as np

from alexnet_jax.data import prepared_source, shards
from alexnet_jax.errors import UserError

TRAIN_TAR, VAL_TAR = "ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar"
VAL_SHARD = 1000  # validation images per file
TFDS_SHARD = 5000
# What the [imagenet] extra of setup.cfg installs: TFDS imports them only to build or read some datasets.
IMAGENET_EXTRA_MODULES = ("tensorflow", "importlib_resources")


def imagenet_label_files() -> tuple[list[str], list[str]]:
  """TFDS's synset order (its label ids) and the 50,000 validation labels, shipped inside the TFDS package."""
  # here: ~1 s of imports (more beside TensorFlow) only TFDS users pay
  import tensorflow_datasets as tfds

  folder = os.path.join(
      os.path.dirname(tfds.__file__), "datasets", "imagenet2012"
  )
  read = lambda name: [
      l.strip() for l in open(os.path.join(folder, name)) if l.strip()
  ]
  return read("labels.txt"), read("validation_labels.txt")


def _tar_members(tar: tarfile.TarFile):
  return sorted(
      (m for m in tar.getmembers() if m.isfile()), key=lambda m: m.name
  )


def _tar_file_names(path: str) -> list[str]:
  """The sorted names of the files in the tar at ``path``; one line naming it if it is no readable tar."""
  try:
    # tarfile.open's own error lists every compression it tried
    if not tarfile.is_tarfile(path):
      raise UserError(f"{path} is not a tar archive")
    with tarfile.open(path) as tar:
      return [m.name for m in _tar_members(tar)]
  except (tarfile.TarError, EOFError, OSError) as error:
    raise UserError(f"{path} is not a readable tar archive ({error})") from None


def _train_task(
    task, tars: str, out: str, size: int, quality: int, synset_ids: dict
) -> tuple[int, int]:
  """One synset's inner tar -> one ArrayRecord file."""
  index, count, member_name = task
  path = os.path.join(out, f"train-{index:05d}-of-{count:05d}.array_record")
  if os.path.exists(path):
    return 0, 0
  synset = os.path.basename(member_name).split(".")[0]
  with tarfile.open(os.path.join(tars, TRAIN_TAR)) as outer:
    member = outer.extractfile(member_name)
    if not tarfile.is_tarfile(member):
      raise UserError(
          f"{os.path.join(tars, TRAIN_TAR)}: {member_name} is not a tar archive"
      )
    with tarfile.open(fileobj=member) as inner:
      records = (
          (
              synset_ids[synset],
              inner.extractfile(m).read(),
              f"{member_name}/{m.name}",
          )
          for m in _tar_members(inner)
      )
      return shards.write_shard(path, records, size, quality)


def _val_task(
    task, tars: str, out: str, size: int, quality: int
) -> tuple[int, int]:
  index, count, names_and_labels = task
  path = os.path.join(
      out, f"validation-{index:05d}-of-{count:05d}.array_record"
  )
  if os.path.exists(path):
    return 0, 0
  with tarfile.open(os.path.join(tars, VAL_TAR)) as tar:
    records = (
        (label, tar.extractfile(name).read(), name)
        for name, label in names_and_labels
    )
    return shards.write_shard(path, records, size, quality)


def _tfds_task(
    task, name: str, data_dir: str | None, out: str, size: int, quality: int
) -> tuple[int, int]:
  split, index, count, start, stop = task
  path = os.path.join(out, f"{split}-{index:05d}-of-{count:05d}.array_record")
  if os.path.exists(path):
    return 0, 0
  # here: ~1 s of imports (more beside TensorFlow) only TFDS users pay
  import tensorflow_datasets as tfds

  data = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
  records = (
      (
          int(data[i]["label"]),
          _rgb(np.asarray(data[i]["image"])),
          f"{split}[{i}]",
      )
      for i in range(start, stop)
  )
  return shards.write_shard(path, records, size, quality)


def _rgb(image: np.ndarray) -> np.ndarray:
  return (
      np.repeat(image.reshape(*image.shape[:2], 1), 3, -1)
      if image.ndim == 2 or image.shape[-1] == 1
      else image
  )


def prepare_from_tars(
    tars: str,
    data_dir: str,
    size: int = 256,
    quality: int = 90,
    workers: int = 0,
) -> str:
  for name in (TRAIN_TAR, VAL_TAR):
    if not os.path.exists(os.path.join(tars, name)):
      raise UserError(
          f"{os.path.join(tars, name)} not found (download the ILSVRC2012 tars from "
          f"image-net.org into {tars})"
      )
  synsets, val_labels = imagenet_label_files()
  synset_ids = {s: i for i, s in enumerate(synsets)}
  started = time.time()
  # Both tars listed before anything is written: a bad one ends the run at once, not after the other.
  members = _tar_file_names(os.path.join(tars, TRAIN_TAR))
  names = _tar_file_names(os.path.join(tars, VAL_TAR))
  if len(names) > len(val_labels):
    raise UserError(
        f"{VAL_TAR} holds {len(names)} images, TFDS knows labels for {len(val_labels)}"
    )
  out = prepared_source.prepared_dir(data_dir, "imagenet2012", size)
  os.makedirs(out, exist_ok=True)

  train_tasks = [(i, len(members), m) for i, m in enumerate(members)]
  fn = functools.partial(
      _train_task,
      tars=tars,
      out=out,
      size=size,
      quality=quality,
      synset_ids=synset_ids,
  )
  train_counts = shards.run_tasks(train_tasks, fn, workers, "train")

  # by position in sorted order
  labelled = [(n, synset_ids[val_labels[i]]) for i, n in enumerate(names)]
  chunks = [
      labelled[i : i + VAL_SHARD] for i in range(0, len(labelled), VAL_SHARD)
  ]
  fn = functools.partial(
      _val_task, tars=tars, out=out, size=size, quality=quality
  )
  val_counts = shards.run_tasks(
      [(i, len(chunks), c) for i, c in enumerate(chunks)],
      fn,
      workers,
      "validation",
  )

  shards.finish(
      out,
      synsets,
      size,
      quality,
      workers,
      f"ILSVRC2012 tars in {tars}",
      train_counts[1] + val_counts[1],
      started,
  )
  return out


@contextlib.contextmanager
def _imagenet_extra_named():
  """A module of the [imagenet] extra that TFDS misses ends in one line saying how to install it; any
  other missing module is a bug, left to its traceback."""
  try:
    yield
  except ModuleNotFoundError as error:
    if (error.name or "").split(".")[0] not in IMAGENET_EXTRA_MODULES:
      raise
    raise UserError(
        f'TFDS needs the module {error.name} for this: pip install -e ".[imagenet]"'
    ) from None


def _built_tfds_builder(name: str, data_dir: str):
  """TFDS's builder of ``name``, which must be built in ``data_dir`` already: nothing downloads unasked."""
  # here: ~1 s of imports (more beside TensorFlow) only TFDS users pay
  import tensorflow_datasets as tfds

  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError:
    raise UserError(
        f"TFDS has no dataset '{name}' (tfds.list_builders() lists them)"
    ) from None
  if not builder.is_prepared():
    how = (
        f"--tars=DIR_WITH_THE_TWO_ILSVRC2012_TARS instead (no TensorFlow needed), or tfds build {name} "
        f'--data_dir={data_dir} after pip install -e ".[imagenet]"'
        if name == "imagenet2012"
        else f"python -c \"import tensorflow_datasets as tfds; tfds.builder('{name}', data_dir='{data_dir}')"
        f'.download_and_prepare()"'
    )
    raise UserError(
        f"TFDS dataset '{name}' is not built in {data_dir}; build it first with: {how}"
    )
  return builder


def prepare_from_tfds(
    name: str,
    data_dir: str,
    size: int = 256,
    quality: int = 90,
    workers: int = 0,
    splits: tuple[str, str] = ("train", "validation"),
) -> str:
  with _imagenet_extra_named():
    return _prepare_from_tfds(
        name, os.path.expanduser(data_dir), size, quality, workers, splits
    )


def _prepare_from_tfds(name, data_dir, size, quality, workers, splits) -> str:
  # here: ~1 s of imports (more beside TensorFlow) only TFDS users pay
  import tensorflow_datasets as tfds

  builder = _built_tfds_builder(name, data_dir)
  out = prepared_source.prepared_dir(data_dir, name, size)
  os.makedirs(out, exist_ok=True)
  started, tasks = time.time(), []
  for split, written_as in zip(splits, ("train", "validation")):
    total = len(
        tfds.data_source(name, split=split, data_dir=data_dir, download=False)
    )
    count = max(1, -(-total // TFDS_SHARD))
    tasks += [
        (split, i, count, i * TFDS_SHARD, min(total, (i + 1) * TFDS_SHARD))
        for i in range(count)
    ]
  fn = functools.partial(
      _tfds_task,
      name=name,
      data_dir=data_dir,
      out=out,
      size=size,
      quality=quality,
  )
  written, skipped = shards.run_tasks(tasks, fn, workers, name)
  shards.finish(
      out,
      tuple(builder.info.features["label"].names),
      size,
      quality,
      workers,
      f"TFDS {name}",
      skipped,
      started,
  )
  return out
