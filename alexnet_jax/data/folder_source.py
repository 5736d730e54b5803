"""An ImageNet-style folder tree, ``SPLIT/CLASS/IMAGE``, as a dataset: any image format PIL reads."""

from __future__ import annotations

import errno
import os

import numpy as np
from absl import logging

from alexnet_jax.data.dataset import DecodingSource, Splits, stored_size_for
from alexnet_jax.errors import ConfigError, listed


class FolderSource(DecodingSource):
  """An ImageNet-style tree ``SPLIT/CLASS/IMAGE``: any image format PIL reads, rescaled when read.

  Symlinks are followed; entries that are not files (directories, dangling symlinks, loops, pipes) are left out
  and named in one warning, with ``skipped`` (``(path, why)``, found above the class directories) among them.
  """

  def __init__(
      self,
      directory: str,
      class_names: tuple[str, ...],
      size: int,
      skipped: tuple[tuple[str, str], ...] = (),
  ):
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
      shown = listed(
          f"{os.path.relpath(path, directory)} ({why})" for path, why in skipped
      )
      logging.warning(
          "skipping %d %s under %s that %s not image files or class directories: %s",
          len(skipped),
          "entry" if len(skipped) == 1 else "entries",
          directory,
          "is" if len(skipped) == 1 else "are",
          shown,
      )

  def __len__(self) -> int:
    return len(self.files)

  def __getitem__(self, index: int) -> dict:
    path = self.files[index]
    try:
      with open(path, "rb") as f:
        data = f.read()
    # deleted after listing, replaced, or a failing disk: masked out, not a dead worker
    except OSError as error:
      return self._unreadable(
          index, self.labels[index], path, error.strerror or str(error)
      )
    return self._decoded(index, data, self.labels[index], path)


def _entries(
    directory: str, skipped: list[tuple[str, str]], want_dirs: bool
) -> list[str]:
  """The sorted names in ``directory`` (hidden ones left out) that are files, or directories if ``want_dirs``,
  symlinks followed. The rest go into ``skipped`` with the reason, except plain files beside class directories.
  """
  try:
    with os.scandir(directory) as scan:
      entries = sorted(
          (e for e in scan if not e.name.startswith(".")), key=lambda e: e.name
      )
  # an unreadable class directory: named, and it holds nothing
  except OSError as error:
    skipped.append((directory, error.strerror or str(error)))
    return []
  names = []
  for entry in entries:
    try:
      if entry.is_dir() if want_dirs else entry.is_file():
        names.append(entry.name)
        continue
      if entry.is_symlink() and not os.path.exists(entry.path):
        why = "dangling symlink"
      elif want_dirs:
        # a loose file beside the class directories (a README, a label list)
        continue
      else:
        why = "a directory" if entry.is_dir() else "not a regular file"
    # ELOOP and the like: stat fails, where DirEntry only hides a missing target
    except OSError as error:
      why = (
          "symlink loop"
          if error.errno == errno.ELOOP
          else error.strerror or str(error)
      )
    skipped.append((entry.path, why))
  return names


def class_directories(
    split_dir: str, skipped: list[tuple[str, str]]
) -> tuple[str, ...]:
  """The class directories of a split (``SPLIT/CLASS/``), sorted by name: their order is the labels'."""
  return tuple(_entries(split_dir, skipped, want_dirs=True))


def eval_split_names(eval_split: str) -> tuple[str, ...]:
  """The directory names that hold ``eval_split``: a validation split is val/ or validation/, whichever
  the tree has; any other (test/) only its own name, never a validation set in its place.
  """
  aliases = ("validation", "val")
  return (
      tuple(dict.fromkeys((eval_split,) + aliases))
      if eval_split in aliases
      else (eval_split,)
  )


def load(
    directory: str,
    image_size: int,
    train_split: str = "train",
    eval_split: str = "val",
    stored_size: int = 0,
) -> Splits:
  directory = os.path.expanduser(directory)
  train_dir = os.path.join(directory, train_split)
  if not os.path.isdir(train_dir):
    raise ConfigError(
        f"no training images: {train_dir} is not a directory (expected {directory}/"
        f"{train_split}/CLASS/IMAGE; set --config.data.data_dir)"
    )
  eval_names = eval_split_names(eval_split)
  eval_dir = next(
      (
          os.path.join(directory, d)
          for d in eval_names
          if os.path.isdir(os.path.join(directory, d))
      ),
      None,
  )
  if eval_dir is None:
    raise ConfigError(
        f"no evaluation images: {directory} has no directory named {' or '.join(map(repr, eval_names))}"
    )
  train_skipped, eval_skipped = [], []
  class_names = class_directories(train_dir, train_skipped)
  if not class_names:
    raise ConfigError(f"{train_dir} has no class directories")
  unknown = sorted(
      set(class_directories(eval_dir, eval_skipped)) - set(class_names)
  )
  if unknown:  # their images would have no label the network knows
    raise ConfigError(
        f"{eval_dir} has class directories that {train_dir} lacks: {listed(unknown)}"
    )
  size = stored_size_for(image_size, stored_size)
  train = FolderSource(train_dir, class_names, size, tuple(train_skipped))
  # A class with no training image still takes its label (an ImageNet tree may hold only some classes, for
  # evaluating a 1000-class network), but is named: it is the likely cause of a class count that surprises.
  empty = tuple(
      name
      for name, count in zip(
          class_names, np.bincount(train.labels, minlength=len(class_names))
      )
      if not count
  )
  if empty:
    logging.warning(
        "%s has %d class directories that hold no image files: %s",
        train_dir,
        len(empty),
        listed(empty),
    )
  evaluation = FolderSource(eval_dir, class_names, size, tuple(eval_skipped))
  for split_dir, split in ((train_dir, train), (eval_dir, evaluation)):
    if not len(split):
      raise ConfigError(f"{split_dir} holds no files")
  return Splits(
      train,
      evaluation,
      len(class_names),
      size,
      class_names,
      empty_classes=empty,
  )
