"""ImageNet at the paper's 256x256 resolution, from the ILSVRC2012 tars, a built TFDS dataset or any
ImageNet-style folder tree (``python -m alexnet_jax.prepare``).

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

from absl import logging

from alexnet_jax.data import folder_source, images, prepared_source, shards
from alexnet_jax.errors import UserError, listed

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


# ----------------------------------------------------------------------------- any ImageNet-style tree


def _folder_splits(folder: str, size: int):
  """``({prepared split: FolderSource}, class names)`` of the tree ``folder/{train,val,test}/CLASS/IMAGE``;
  one line for a tree that is not one."""
  layout = (
      f"expected {folder}/train/CLASS/IMAGE, {folder}/val/CLASS/IMAGE and, if it has one, "
      f"{folder}/test/CLASS/IMAGE"
  )
  if not os.path.isdir(folder):
    raise UserError(f"--folder={folder} is not a directory ({layout})")
  found = {
      split: next(
          (
              os.path.join(folder, d)
              for d in names
              if os.path.isdir(os.path.join(folder, d))
          ),
          None,
      )
      for split, names in (
          ("train", ("train",)),
          ("validation", folder_source.eval_split_names("val")),
          ("test", ("test",)),
      )
  }
  for split, name in (("train", "train/"), ("validation", "val/")):
    if found[split] is None:
      raise UserError(f"{folder} has no {name} directory ({layout})")
  dirs = {split: d for split, d in found.items() if d is not None}
  skipped = {split: [] for split in dirs}
  # Labels: the sorted names of train/'s class directories.
  class_names = folder_source.class_directories(dirs["train"], skipped["train"])
  if not class_names:
    raise UserError(f"{dirs['train']} has no class directories ({layout})")
  for split in set(dirs) - {"train"}:
    unknown = sorted(
        set(folder_source.class_directories(dirs[split], skipped[split]))
        - set(class_names)
    )
    if unknown:  # their images would have no label
      raise UserError(
          f"{dirs[split]} has class directories that {dirs['train']} lacks: {listed(unknown)}"
      )
  sources = {
      split: folder_source.FolderSource(
          dirs[split], class_names, size, tuple(skipped[split])
      )
      for split in dirs
  }
  for split, source in sources.items():
    if not len(source):
      raise UserError(f"{dirs[split]} holds no image files ({layout})")
  counts = np.bincount(sources["train"].labels, minlength=len(class_names))
  empty = [name for name, count in zip(class_names, counts) if not count]
  if empty:  # they keep their labels: a class count that surprises
    logging.warning(
        "%s has %d class directories without an image file: %s",
        dirs["train"],
        len(empty),
        listed(empty),
    )
  return sources, class_names


def _read_files(root: str, files: list[str], label: int):
  for path in files:
    try:
      with open(path, "rb") as f:
        data = f.read()
    # gone since it was listed, unreadable, a failing disk: skipped and named
    except OSError as error:
      data = images.BadImage(error.strerror or str(error))
    yield label, data, os.path.relpath(path, root)


def _folder_task(task, root: str, out: str, size: int, quality: int):
  """One class of one split -> one ArrayRecord file, with the list of images it skipped."""
  split, label, count, files = task
  path = os.path.join(out, f"{split}-{label:05d}-of-{count:05d}.array_record")
  if os.path.exists(path):
    return 0, 0
  records = _read_files(root, files, label)
  return shards.write_shard(path, records, size, quality, log_skipped=True)


def prepare_from_folder(
    folder: str,
    data_dir: str,
    name: str | None = None,
    size: int = 256,
    quality: int = 90,
    workers: int = 0,
) -> str:
  """An ImageNet-style tree ``folder/train/CLASS/IMAGE``, ``folder/val/CLASS/IMAGE`` (or validation/) and,
  if present, ``folder/test/CLASS/IMAGE`` -> ``DATA_DIR/alexnet_jax/NAME-SIZE/`` (NAME: the folder's own
  name unless given), read back by ``data.source='tfds'``, ``data.name=NAME``. Labels: the sorted names
  of train/'s class directories. Each class of each split is one file, so a rerun keeps finished classes;
  unreadable images are skipped, named in a warning and listed in ``info.json``.
  """
  folder = os.path.abspath(os.path.expanduser(folder))
  name = name or os.path.basename(folder)
  started = time.time()
  sources, class_names = _folder_splits(folder, size)
  out = prepared_source.prepared_dir(data_dir, name, size)
  classes_file = os.path.join(out, "classes.txt")
  # a rerun: the files' labels are positions in the class list
  if os.path.exists(classes_file):
    with open(classes_file) as f:
      before = tuple(line.strip() for line in f if line.strip())
    if before != class_names:
      raise UserError(
          f"{out} was prepared from other classes ({len(before)}, not these {len(class_names)}): "
          f"remove it or give another --name"
      )
  os.makedirs(out, exist_ok=True)
  with open(classes_file, "w") as f:
    f.write("\n".join(class_names) + "\n")
  tasks = []
  for split, source in sources.items():
    by_class = {}
    for path, label in zip(source.files, source.labels):
      by_class.setdefault(int(label), []).append(path)
    tasks += [
        (split, label, len(class_names), files)
        for label, files in sorted(by_class.items())
    ]
  fn = functools.partial(
      _folder_task, root=folder, out=out, size=size, quality=quality
  )
  shards.run_tasks(tasks, fn, workers, name)
  skipped = shards.skipped_images(out)
  listed_files = sum(len(source) for source in sources.values())
  prepared = sum(shards.count_records(out, split) for split in sources)
  if prepared + len(skipped) != listed_files:
    logging.warning(
        "%s lists %d image files now, but %s holds %d images and %d skipped ones: the tree changed "
        "after some of its classes were prepared; remove %s to prepare it afresh",
        folder,
        listed_files,
        out,
        prepared,
        len(skipped),
        out,
    )
  shards.finish(
      out,
      class_names,
      size,
      quality,
      workers,
      f"folder {folder}",
      len(skipped),
      started,
      splits=tuple(sources),
      skipped_names=skipped,
  )
  if skipped:
    print(
        f"skipped {len(skipped)} unreadable image(s), listed in {os.path.join(out, 'info.json')}: "
        f"{listed(skipped, 3)}"
    )
  return out
