"""The data path's host half: source -> grain pipeline -> this process's slice of each global batch.

Training batches: shuffled anew every pass, augmented, ``batch_size / shards`` images per data shard;
the same global batches whatever the number of processes. The grain iterator's state goes into every
checkpoint so a resumed run sees exactly the next batch.
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


class _GlobalStreamElement(grain.transforms.Map):
  """Local position j -> the augmented element at that place in the *global* stream of examples.

  The global stream is the training set shuffled anew every pass; global batch b holds stream elements
  ``[b*B, (b+1)*B)``, and data shard p takes ``L = B / count`` of them. The order and the augmentation
  depend only on (seed, pass, record), never on how many processes share the batch.
  """

  def __init__(self, source, order, augment, seed: int, global_batch: int, local_batch: int, shard: int):
    self.source, self.order, self.augment, self.seed = source, order, augment, seed
    self.global_batch, self.local_batch, self.shard = global_batch, local_batch, shard

  def map(self, position: int) -> dict:
    batch, offset = divmod(position, self.local_batch)
    k = batch * self.global_batch + self.shard * self.local_batch + offset
    epoch, record = k // len(self.source), self.order[k]
    rng = np.random.default_rng((self.seed, epoch, record))
    return self.augment.random_map(self.source[record], rng)


def train_iterator(splits: Splits, mean: np.ndarray, config, shard_index: int = 0,
                   shard_count: int = 1) -> grain.DatasetIterator:
  """Endless augmented training batches, this data shard's slice of each global batch.

  ``get_state()``/``set_state()`` resume it at the exact next batch.
  """
  local = local_batch_size(config.batch_size, shard_count)
  order = grain.MapDataset.range(len(splits.train)).seed(config.seed).shuffle().repeat()  # reshuffled every pass
  augment_fn = augment.RandomCropFlip(mean, config.model.image_size, flip=config.data.random_flip,
                                      scale=config.data.pixel_scale)
  element = _GlobalStreamElement(splits.train, order, augment_fn, config.seed, config.batch_size, local, shard_index)
  ds = grain.MapDataset.range(2**62).map(element).batch(local, drop_remainder=True)
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
