"""Any ImageNet-style folder tree (``train/CLASS/*``, ``val/CLASS/*``, optionally ``test/CLASS/*``) at the
paper's 256x256 resolution (``python -m alexnet_jax.prepare --folder=DIR``), in the layout the ILSVRC-2012
tars are prepared into (``data/imagenet.py``): ArrayRecord files of JPEGs, ``stats.npz``, ``info.json``
written last, resumable. Classes: the sorted names of ``train/``'s folders."""

from __future__ import annotations

import functools
import os
import time

import numpy as np
from absl import logging

from alexnet_jax.data import folder_source, images, prepared_source, shards
from alexnet_jax.errors import UserError, listed


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
