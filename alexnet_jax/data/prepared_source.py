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


def prepared_dir(data_dir: str, name: str, size: int) -> str:
  return os.path.join(
      os.path.expanduser(data_dir), "alexnet_jax", f"{name}-{size}"
  )


def load(directory: str, image_size: int) -> Splits:
  """A directory written by ``alexnet_jax.prepare`` (its ``info.json`` is written last: present = complete)."""
  with open(os.path.join(directory, "info.json")) as f:
    info = json.load(f)
  size = info["size"]
  if size < image_size:
    raise ConfigError(
        f"{directory} holds {size}x{size} images, smaller than model.image_size={image_size}"
    )
  splits = {}
  for split in ("train", "validation"):
    paths = sorted(
        os.path.join(directory, n)
        for n in os.listdir(directory)
        if n.startswith(split + "-") and n.endswith(".array_record")
    )
    splits[split] = PreparedSource(paths, size)
  with open(os.path.join(directory, "classes.txt")) as f:
    class_names = tuple(line.strip() for line in f if line.strip())
  return Splits(
      splits["train"],
      splits["validation"],
      len(class_names),
      size,
      class_names,
      stats_path=os.path.join(directory, "stats.npz"),
  )
