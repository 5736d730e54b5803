"""Data written by ``python -m alexnet_jax.prepare``: ArrayRecord files of (label, SxS JPEG) records,
``classes.txt``, ``stats.npz`` and, written last, ``info.json``."""

from __future__ import annotations

import json
import os

import grain

from alexnet_jax.data.dataset import DecodingSource, Splits
from alexnet_jax.errors import ConfigError


class PreparedSource(DecodingSource):
  """A split written by ``python -m alexnet_jax.prepare``: ArrayRecord files of (label, SxS JPEG)."""

  def __init__(self, paths: list[str], size: int):
    super().__init__(size)
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


PREPARE_HINT = "python -m alexnet_jax.prepare --tars=DIR_WITH_THE_TWO_ILSVRC2012_TARS --data_dir={data_dir}"
FOLDER_HINT = "python -m alexnet_jax.prepare --folder=DIR --name={name} --data_dir={data_dir} (DIR/train/CLASS/IMAGE, DIR/val/CLASS/IMAGE)"


def prepared_dir(data_dir: str, name: str, size: int) -> str:
  return os.path.join(
      os.path.expanduser(data_dir), "alexnet_jax", f"{name}-{size}"
  )


# The splits a prepared directory may hold, as its files are named: ``SPLIT-*.array_record``.
SPLITS = ("train", "validation", "test")
# Names that mean one of them (a folder tree's val/, TFDS's "validation").
SPLIT_NAMES = {"val": "validation"}


def split_paths(directory: str, split: str) -> list[str]:
  return sorted(
      os.path.join(directory, n)
      for n in os.listdir(directory)
      if n.startswith(split + "-") and n.endswith(".array_record")
  )


def load(
    directory: str, image_size: int, eval_split: str = "validation"
) -> Splits:
  """A directory written by ``alexnet_jax.prepare`` (its ``info.json`` is written last: present = complete);
  ``eval_split``: validation (val) or test, where the data has one (a folder tree's test/).
  """
  with open(os.path.join(directory, "info.json")) as f:
    info = json.load(f)
  size = info["size"]
  if size < image_size:
    raise ConfigError(
        f"{directory} holds {size}x{size} images, smaller than model.image_size={image_size}"
    )
  evaluated = SPLIT_NAMES.get(eval_split, eval_split)
  if evaluated == "train" or not split_paths(directory, evaluated):
    held = [s for s in SPLITS[1:] if split_paths(directory, s)]
    raise ConfigError(
        f"data.eval_split={eval_split!r}: {directory} holds no such split to evaluate on "
        f"(it has: {', '.join(held) or 'none'})"
    )
  splits = {
      split: PreparedSource(split_paths(directory, split), size)
      for split in ("train", evaluated)
  }
  with open(os.path.join(directory, "classes.txt")) as f:
    class_names = tuple(line.strip() for line in f if line.strip())
  return Splits(
      splits["train"],
      splits[evaluated],
      len(class_names),
      size,
      class_names,
      stats_path=os.path.join(directory, "stats.npz"),
  )
