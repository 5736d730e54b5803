"""The data path's host half: source -> grain pipeline -> this process's slice of each global batch.

Training batches: shuffled anew every pass, augmented, ``batch_size / process_count`` images per process;
the grain iterator's state goes into every checkpoint so a resumed run sees exactly the next batch.
Eval batches: every image exactly once; the last batch is padded and carries a ``mask``.
"""

from __future__ import annotations

import math
from typing import Iterator

import grain
import numpy as np

from alexnet_jax import augment
from alexnet_jax.errors import ConfigError
from alexnet_jax.sources import Splits


def mean_image(source, chunk: int = 512) -> np.ndarray:
  """The training set's mean image (paper §2), accumulated in float64 one chunk at a time."""
  total, count = None, 0
  for start in range(0, len(source), chunk):
    images = np.stack([source[i]["image"] for i in range(start, min(start + chunk, len(source)))])
    part = images.astype(np.float64).sum(axis=0)
    total = part if total is None else total + part
    count += len(images)
  if not count:
    raise ValueError("cannot compute the mean image of an empty training set")
  return (total / count).astype(np.float32)


def local_batch_size(global_batch: int, process_count: int) -> int:
  if global_batch % process_count:
    raise ConfigError(f"batch_size={global_batch} must divide evenly over {process_count} processes")
  return global_batch // process_count


def train_iterator(splits: Splits, mean: np.ndarray, config, process_index: int = 0,
                   process_count: int = 1) -> grain.DatasetIterator:
  """Endless augmented training batches for this process; ``get_state()``/``set_state()`` resume it."""
  ds = grain.MapDataset.source(splits.train)
  if process_count > 1:
    ds = ds[process_index::process_count]
  ds = (ds.seed(config.seed).shuffle().repeat()  # repeat() reshuffles every pass
        .random_map(augment.RandomCropFlip(mean, config.model.image_size, flip=config.data.random_flip,
                                           scale=config.data.pixel_scale))
        .batch(local_batch_size(config.batch_size, process_count), drop_remainder=True))
  it = ds.to_iter_dataset()
  if config.data.num_workers > 0:
    it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=config.data.num_workers))
  return iter(it)


def pad_batch(batch: dict, size: int) -> dict:
  """Pads a batch to ``size`` examples with zeros; ``mask`` marks the real ones."""
  n = len(batch["label"])
  padded = {k: np.concatenate([v, np.zeros((size - n, *v.shape[1:]), v.dtype)]) for k, v in batch.items()}
  padded["mask"] = np.arange(size) < n
  return padded


def eval_batches(splits: Splits, mean: np.ndarray, image_size: int, global_batch: int,
                 process_index: int = 0, process_count: int = 1, pixel_scale: float = 1.0) -> Iterator[dict]:
  """Centre-crop eval batches; every eval image exactly once over all processes, none dropped.

  Every process yields the same number of batches (padded ones at the end where its shard is shorter),
  because each batch is one step of a program that runs on all processes together.
  """
  local = local_batch_size(global_batch, process_count)
  ds = grain.MapDataset.source(splits.eval)
  if process_count > 1:
    ds = ds[process_index::process_count]
  num_batches = math.ceil(math.ceil(len(splits.eval) / process_count) / local)
  batches = iter(ds.map(augment.CenterCrop(mean, image_size, pixel_scale)).batch(local, drop_remainder=False))
  empty = {"image": np.zeros((0, image_size, image_size, 3), np.float32), "label": np.zeros((0,), np.int32)}
  for _ in range(num_batches):
    yield pad_batch(next(batches, empty), local)
