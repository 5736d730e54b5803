"""Random-access image-classification sources: ``len(source)`` and ``source[i] -> {'image', 'label'}``.

Images are uint8 ``[S, S, 3]`` at the *stored* resolution (the paper's 256x256 rescale, §2), from
which training crops and evaluation crops are cut.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os

import numpy as np
from absl import logging

from alexnet_jax.data import images

from alexnet_jax.errors import ConfigError, listed


class ArraySource:
  """A source over in-memory arrays (grain's RandomAccessDataSource protocol)."""

  def __init__(self, images: np.ndarray, labels: np.ndarray):
    if len(images) != len(labels):
      raise ValueError(f"{len(images)} images but {len(labels)} labels")
    self.images, self.labels = images, labels

  def __len__(self) -> int:
    return len(self.images)

  def __getitem__(self, index: int) -> dict:
    return {"image": self.images[index], "label": np.int32(self.labels[index]), "valid": True}


class _DecodingSource:
  """Base for sources of encoded images: a record that cannot be decoded comes back ``valid=False``
  (zeros), is named in a warning once per worker, and is masked out of the loss and the metrics."""

  size: int

  def __init__(self, size: int):
    self.size = size
    self._warned: set[int] = set()

  def _decoded(self, index: int, data: bytes, label: int, name: str) -> dict:
    try:
      return {"image": images.load_stored(data, self.size), "label": np.int32(label), "valid": True}
    except images.BadImage as error:
      return self._unreadable(index, label, name, str(error))

  def _unreadable(self, index: int, label: int, name: str, reason: str) -> dict:
    if index not in self._warned:
      self._warned.add(index)
      logging.warning("skipping unreadable image %s: %s", name, reason)
    return {"image": np.zeros((self.size, self.size, 3), np.uint8), "label": np.int32(label), "valid": False}


class FolderSource(_DecodingSource):
  """An ImageNet-style tree ``SPLIT/CLASS/IMAGE``: any image format PIL reads, rescaled when read.

  Symlinks are followed; entries that are not files (directories, dangling symlinks, loops, pipes) are left out
  and named in one warning, with ``skipped`` (``(path, why)``, found above the class directories) among them.
  """

  def __init__(self, directory: str, class_names: tuple[str, ...], size: int,
               skipped: tuple[tuple[str, str], ...] = ()):
    super().__init__(size)
    self.directory = directory
    self.files, labels, skipped = [], [], list(skipped)
    for label, name in enumerate(class_names):
      class_dir = os.path.join(directory, name)
      if os.path.isdir(class_dir):
        entries = _entries(class_dir, skipped, want_dirs=False)
        self.files += [os.path.join(class_dir, e) for e in entries]
        labels += [label] * len(entries)
    self.labels = np.asarray(labels, np.int32)
    if skipped:
      shown = listed(f"{os.path.relpath(path, directory)} ({why})" for path, why in skipped)
      logging.warning("skipping %d %s under %s that %s not image files or class directories: %s", len(skipped),
                      "entry" if len(skipped) == 1 else "entries", directory, "is" if len(skipped) == 1 else "are",
                      shown)

  def __len__(self) -> int:
    return len(self.files)

  def __getitem__(self, index: int) -> dict:
    path = self.files[index]
    try:
      with open(path, "rb") as f:
        data = f.read()
    except OSError as error:  # deleted after listing, replaced, or a failing disk: masked out, not a dead worker
      return self._unreadable(index, self.labels[index], path, error.strerror or str(error))
    return self._decoded(index, data, self.labels[index], path)


def _entries(directory: str, skipped: list[tuple[str, str]], want_dirs: bool) -> list[str]:
  """The sorted names in ``directory`` (hidden ones left out) that are files, or directories if ``want_dirs``,
  symlinks followed. The rest go into ``skipped`` with the reason, except plain files beside class directories."""
  try:
    with os.scandir(directory) as scan:
      entries = sorted((e for e in scan if not e.name.startswith(".")), key=lambda e: e.name)
  except OSError as error:  # an unreadable class directory: named, and it holds nothing
    skipped.append((directory, error.strerror or str(error)))
    return []
  names = []
  for entry in entries:
    try:
      if (entry.is_dir() if want_dirs else entry.is_file()):
        names.append(entry.name)
        continue
      if entry.is_symlink() and not os.path.exists(entry.path):
        why = "dangling symlink"
      elif want_dirs:
        continue  # a loose file beside the class directories (a README, a label list)
      else:
        why = "a directory" if entry.is_dir() else "not a regular file"
    except OSError as error:  # ELOOP and the like: stat fails, where DirEntry only hides a missing target
      why = "symlink loop" if error.errno == errno.ELOOP else error.strerror or str(error)
    skipped.append((entry.path, why))
  return names


class PreparedSource(_DecodingSource):
  """A split written by ``python -m alexnet_jax.prepare``: ArrayRecord files of (label, SxS JPEG)."""

  def __init__(self, paths: list[str], size: int):
    super().__init__(size)
    import grain
    self._records = grain.sources.ArrayRecordDataSource(paths)

  def __len__(self) -> int:
    return len(self._records)

  def __getitem__(self, index: int) -> dict:
    label, jpeg = unpack_record(self._records[index])
    return self._decoded(index, jpeg, label, f"record {index}")


def pack_record(label: int, jpeg: bytes) -> bytes:
  return int(label).to_bytes(4, "little") + jpeg


def unpack_record(record: bytes) -> tuple[int, bytes]:
  return int.from_bytes(record[:4], "little"), record[4:]


class TfdsSource(_DecodingSource):
  """Any TFDS image-classification split through ``tfds.data_source`` (ArrayRecord, no TensorFlow)."""

  def __init__(self, data_source, size: int):
    super().__init__(size)
    self._data = data_source

  def __len__(self) -> int:
    return len(self._data)

  def __getitem__(self, index: int) -> dict:
    record = self._data[index]
    image = np.asarray(record["image"])
    if image.ndim == 2 or image.shape[-1] == 1:
      image = np.repeat(image.reshape(*image.shape[:2], 1), 3, axis=-1)
    return {"image": images.resize_short_side_and_center_crop(image, self.size),
            "label": np.int32(record["label"]), "valid": True}


@dataclasses.dataclass(frozen=True)
class Splits:
  train: object  # random-access sources: len() and [i] -> {'image': uint8 [S, S, 3], 'label', 'valid'}
  eval: object
  num_classes: int
  stored_size: int
  class_names: tuple[str, ...]
  stats_path: str | None = None  # precomputed training-set statistics, if the data came with them
  empty_classes: tuple[str, ...] = ()  # class directories without a training image (folder data)


def stored_size_for(image_size: int, stored_size: int = 0) -> int:
  """``stored_size`` where set (``data.stored_size``); else the paper's ratio, 224 crops from 256, kept
  for other input sizes (64 -> 73)."""
  return stored_size or int(round(image_size * 256 / 224))


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


def digits(image_size: int, eval_fraction: float = 0.2, stored_size: int = 0) -> Splits:
  """The demo's 1,797 handwritten digits, shipped in the package: see ``alexnet_jax.data.digits``."""
  from alexnet_jax.data import digits as digits_data  # it imports this module

  return digits_data.load(image_size, eval_fraction, stored_size)


PREPARE_HINT = "python -m alexnet_jax.prepare --tars=DIR_WITH_THE_TWO_ILSVRC2012_TARS --data_dir={data_dir}"


def prepared_dir(data_dir: str, name: str, size: int) -> str:
  return os.path.join(os.path.expanduser(data_dir), "alexnet_jax", f"{name}-{size}")


def folder(directory: str, image_size: int, train_split: str = "train", eval_split: str = "val",
           stored_size: int = 0) -> Splits:
  directory = os.path.expanduser(directory)
  train_dir = os.path.join(directory, train_split)
  if not os.path.isdir(train_dir):
    raise ConfigError(f"no training images: {train_dir} is not a directory (expected {directory}/"
                      f"{train_split}/CLASS/IMAGE; set --config.data.data_dir)")
  eval_names = tuple(dict.fromkeys((eval_split, "validation", "val")))
  eval_dir = next((os.path.join(directory, d) for d in eval_names if os.path.isdir(os.path.join(directory, d))), None)
  if eval_dir is None:
    raise ConfigError(f"no evaluation images: {directory} has no directory named {' or '.join(map(repr, eval_names))}")
  train_skipped, eval_skipped = [], []
  class_names = tuple(_entries(train_dir, train_skipped, want_dirs=True))
  if not class_names:
    raise ConfigError(f"{train_dir} has no class directories")
  unknown = sorted(set(_entries(eval_dir, eval_skipped, want_dirs=True)) - set(class_names))
  if unknown:  # their images would have no label the network knows
    raise ConfigError(f"{eval_dir} has class directories that {train_dir} lacks: {listed(unknown)}")
  size = stored_size_for(image_size, stored_size)
  train = FolderSource(train_dir, class_names, size, tuple(train_skipped))
  # A class with no training image still takes its label (an ImageNet tree may hold only some classes, for
  # evaluating a 1000-class network), but is named: it is the likely cause of a class count that surprises.
  empty = tuple(name for name, count in zip(class_names, np.bincount(train.labels, minlength=len(class_names)))
                if not count)
  if empty:
    logging.warning("%s has %d class directories that hold no image files: %s", train_dir, len(empty),
                    listed(empty))
  evaluation = FolderSource(eval_dir, class_names, size, tuple(eval_skipped))
  for split_dir, split in ((train_dir, train), (eval_dir, evaluation)):
    if not len(split):
      raise ConfigError(f"{split_dir} holds no files")
  return Splits(train, evaluation, len(class_names), size, class_names, empty_classes=empty)


def prepared(directory: str, image_size: int) -> Splits:
  """A directory written by ``alexnet_jax.prepare`` (its ``info.json`` is written last: present = complete)."""
  with open(os.path.join(directory, "info.json")) as f:
    info = json.load(f)
  size = info["size"]
  if size < image_size:
    raise ConfigError(f"{directory} holds {size}x{size} images, smaller than model.image_size={image_size}")
  splits = {}
  for split in ("train", "validation"):
    paths = sorted(os.path.join(directory, n) for n in os.listdir(directory)
                   if n.startswith(split + "-") and n.endswith(".array_record"))
    splits[split] = PreparedSource(paths, size)
  with open(os.path.join(directory, "classes.txt")) as f:
    class_names = tuple(line.strip() for line in f if line.strip())
  return Splits(splits["train"], splits["validation"], len(class_names), size, class_names,
                stats_path=os.path.join(directory, "stats.npz"))


def tfds_splits(name: str, data_dir: str, image_size: int, train_split: str, eval_split: str,
                stored_size: int = 0) -> Splits:
  """A TFDS dataset: the prepared SxS copy if there is one, else the TFDS ArrayRecord files as they are."""
  import tensorflow_datasets as tfds

  size = stored_size_for(image_size, stored_size)
  root = os.path.expanduser(data_dir) if data_dir else os.path.expanduser(tfds.core.constants.DATA_DIR)
  ready = prepared_dir(root, name, size)
  if os.path.exists(os.path.join(ready, "info.json")):
    return prepared(ready, image_size)
  try:
    builder = tfds.builder(name, data_dir=root)
    if not builder.is_prepared():
      raise FileNotFoundError
    train = tfds.data_source(name, split=train_split, data_dir=root)
    evaluation = tfds.data_source(name, split=eval_split, data_dir=root)
  except (FileNotFoundError, tfds.core.registered.DatasetNotFoundError, AssertionError):
    if name == "imagenet2012":  # prepare's --size defaults to the paper's 256
      hint = PREPARE_HINT.format(data_dir=root) + ("" if size == 256 else f" --size={size}")
    else:
      hint = f"python -c \"import tensorflow_datasets as tfds; tfds.builder('{name}', data_dir='{root}').download_and_prepare()\""
    raise ConfigError(f"TFDS dataset '{name}' is not prepared in {root} (nor {ready}); prepare it with: {hint}") from None
  class_names = tuple(builder.info.features["label"].names)
  return Splits(TfdsSource(train, size), TfdsSource(evaluation, size), len(class_names), size, class_names)


def load(data_config, image_size: int) -> Splits:
  """The train and eval splits named by ``config.data``."""
  stored = data_config.stored_size
  if data_config.source == "digits":
    return digits(image_size, stored_size=stored)
  if data_config.source == "folder":
    if not data_config.data_dir:
      raise ConfigError("data.source='folder' needs --config.data.data_dir=DIR (DIR/train/CLASS/IMAGE, DIR/val/...)")
    return folder(data_config.data_dir, image_size, data_config.train_split, data_config.eval_split, stored)
  if data_config.source == "tfds":
    return tfds_splits(data_config.name, data_config.data_dir, image_size, data_config.train_split,
                       data_config.eval_split, stored)
  raise ConfigError(f"data.source must be 'tfds', 'folder' or 'digits', got {data_config.source!r}")
