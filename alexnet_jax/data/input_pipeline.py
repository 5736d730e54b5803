"""The data path to the devices: source -> grain pipeline -> this process's slice of each global batch
-> placed, prefetched global batches (``device_batches``); the keys are ``batch``'s.

Training batches: shuffled anew every pass, augmented, ``batch_size / shards`` images per data shard;
the same global batches whatever the number of processes. The grain iterator's state goes into every
checkpoint so a resumed run sees exactly the next batch.
Eval batches: every image exactly once; the last batch is padded and carries a ``mask``.
"""

from __future__ import annotations

import collections
import copy
import functools
import gc
import hashlib
import math
import os
from typing import Iterator

import grain
import numpy as np

from alexnet_jax import sharding
from alexnet_jax.data import augment, batch as batch_lib, stats as stats_lib
from alexnet_jax.data.batch import LABEL, MASK, PADDING, VALID
from alexnet_jax.errors import ConfigError, UserError
from alexnet_jax.data.dataset import Splits


def data_identity(splits: Splits, data_config, sampled_files: int = 16) -> str:
  """A digest of the training data a statistics cache describes: the source and, for a folder, every
  file's path below it with its label plus the bytes of ``sampled_files`` files spread over the list (a
  moved copy of the same data matches; other data, even under the same file names, does not).
  """
  train = splits.train
  digest = hashlib.sha256(
      "\n".join(
          [
              data_config.source,
              data_config.name,
              data_config.train_split,
              str(splits.stored_size),
              type(train).__name__,
              str(len(train)),
          ]
      ).encode()
  )
  if hasattr(train, "files"):
    root = getattr(train, "directory", "")
    digest.update(
        "\n".join(
            f"{os.path.relpath(f, root)}\t{label}"
            for f, label in zip(train.files, train.labels)
        ).encode()
    )
    for index in sorted(
        set(
            np.linspace(0, len(train.files) - 1, sampled_files)
            .astype(int)
            .tolist()
        )
    ):
      try:
        with open(train.files[index], "rb") as f:
          digest.update(hashlib.sha256(f.read()).digest())
      except OSError:  # unreadable now: it is skipped in training too
        digest.update(b"unreadable")
  return digest.hexdigest()


def training_stats(
    splits: Splits,
    cache_path: str | None = None,
    identity: str | None = None,
    keep: bool = False,
) -> stats_lib.DatasetStats:
  """The training set's mean image and RGB eigenvectors: shipped with prepared data, else computed once
  (one pass over the training images) and cached at ``cache_path`` under the data's ``identity``.

  A cache of other data is recomputed, unless ``keep`` (a run resumes: its weights were trained with
  that cache's mean image), which refuses it.
  """
  if splits.stats_path and os.path.exists(splits.stats_path):
    return stats_lib.DatasetStats.load(splits.stats_path)
  if splits.stats_path:
    raise ConfigError(
        f"{splits.stats_path} is missing: re-run python -m alexnet_jax.prepare on this data"
    )
  if cache_path and os.path.exists(cache_path):
    cached, cached_identity = stats_lib.DatasetStats.load_with_identity(
        cache_path
    )
    # None: written by an older version, which kept no identity; trusted only for the run that wrote it.
    if cached_identity == identity or (cached_identity is None and keep):
      return cached
    if keep:
      raise ConfigError(
          f"{cache_path} was computed from other training data than this config's "
          f"(data.data_dir, data.train_split or the files changed): the checkpoints were trained "
          f"with that data's mean image; use the same data or another --workdir"
      )
    print(
        f"alexnet_jax: {cache_path} describes other training data; recomputing it",
        flush=True,
    )
  computed = stats_lib.compute(splits.train, progress=len(splits.train) > 5000)
  if cache_path:
    try:
      os.makedirs(os.path.dirname(cache_path), exist_ok=True)
      computed.save(cache_path, identity)
    except OSError as error:
      raise UserError(
          f"cannot write {cache_path}: {error.strerror or error}"
      ) from None
  return computed


def local_batch_size(global_batch: int, process_count: int) -> int:
  if global_batch % process_count:
    raise ConfigError(
        f"batch_size={global_batch} must divide evenly over {process_count} processes"
    )
  return global_batch // process_count


class _GlobalStreamElement(grain.transforms.Map):
  """Local position j -> the augmented element at that place in the *global* stream of examples.

  The global stream is the training set shuffled anew every pass; global batch b holds stream elements
  ``[b*B, (b+1)*B)``, and data shard p takes ``L = B / count`` of them. The order and the augmentation
  depend only on (seed, pass, record), never on how many processes share the batch.
  """

  def __init__(
      self,
      source,
      order,
      augment_fn,
      seed: int,
      global_batch: int,
      local_batch: int,
      shard: int,
  ):
    self.source, self.order, self.augment_fn, self.seed = (
        source,
        order,
        augment_fn,
        seed,
    )
    self.global_batch, self.local_batch, self.shard = (
        global_batch,
        local_batch,
        shard,
    )

  def map(self, position: int) -> dict:
    batch, offset = divmod(position, self.local_batch)
    k = batch * self.global_batch + self.shard * self.local_batch + offset
    epoch, record = k // len(self.source), self.order[k]
    rng = np.random.default_rng((self.seed, epoch, record))
    return self.augment_fn(self.source[record], rng)


def read_options(num_workers: int) -> grain.ReadOptions:
  """Threads per process that build whole batches, and as many finished ones kept ahead.

  grain's default (16 threads, a buffer of 500 elements) reads up to 500 *batches* ahead of a consumer
  that pauses, e.g. while evaluating: host memory grew ~1 GB every 10 s per process (batch 64), and 16
  threads per worker ran 2.4x slower than one (2 workers, 2 cores). With worker processes, one thread
  each (the worker's own loop hands a batch over while its thread builds the next); in-process, threads
  decode in parallel (decoding releases the GIL).
  """
  threads = 1 if num_workers > 0 else min(16, os.cpu_count() or 1)
  return grain.ReadOptions(num_threads=threads, prefetch_buffer_size=threads)


def train_iterator(
    splits: Splits, config, shard_index: int = 0, shard_count: int = 1
) -> grain.DatasetIterator:
  """Endless augmented training batches, this data shard's slice of each global batch.

  ``get_state()``/``set_state()`` resume it at the exact next batch.
  """
  local = local_batch_size(config.batch_size, shard_count)
  # reshuffled every pass
  order = (
      grain.MapDataset.range(len(splits.train))
      .seed(config.seed)
      .shuffle()
      .repeat()
  )
  lighting = config.data.lighting_std if config.data.pca_lighting else 0.0
  augment_fn = functools.partial(
      augment.random_crop_flip,
      size=config.model.image_size,
      flip=config.data.random_flip,
      lighting_std=lighting,
  )
  element = _GlobalStreamElement(
      splits.train,
      order,
      augment_fn,
      config.seed,
      config.batch_size,
      local,
      shard_index,
  )
  ds = (
      grain.MapDataset.range(2**62)
      .map(element)
      .batch(local, drop_remainder=True)
  )
  it = ds.to_iter_dataset(read_options(config.data.num_workers))
  if config.data.num_workers > 0:
    it = it.mp_prefetch(
        grain.MultiprocessingOptions(num_workers=config.data.num_workers)
    )
  return iter(it)


class DeviceBatches(grain.DatasetIterator):
  """Global batches placed on ``mesh`` from a host iterator of local ones, ``size`` batches ahead: the next
  batches travel to the devices (``device_put`` is asynchronous) while a step runs; ``size=0`` places each
  batch when asked for it.

  Its state (``get_state``/``set_state``, what checkpoints save) is the host iterator's as of the last
  batch handed out, not as of the last one pulled: a run resumed from it gets exactly the batch after the
  one its last step consumed. The host iterator is grain's as the parent, so grain's checkpoint handler
  saves and restores this iterator like the host one, in the same format.
  """

  def __init__(self, host, mesh, global_size: int, size: int = 2):
    stateful = isinstance(host, grain.DatasetIterator)
    super().__init__(host if stateful else ())
    self._host, self._stateful, self._size = host, stateful, size
    self._place = functools.partial(
        sharding.global_batch, mesh, global_size=global_size
    )
    # (placed batch, host state after pulling it)
    self._ahead = collections.deque()
    # host state after the last batch handed out; None: the host's own
    self._state = None

  def __next__(self) -> dict:
    while len(self._ahead) <= self._size:
      if self._stateful and self._state is None:
        self._state = copy.deepcopy(self._host.get_state())
      try:
        local = next(self._host)
      except StopIteration:
        break
      # A copy: the host may update its state object in place as it runs ahead.
      state = copy.deepcopy(self._host.get_state()) if self._stateful else None
      self._ahead.append((self._place(local), state))
    if not self._ahead:
      raise StopIteration
    batch, self._state = self._ahead.popleft()
    return batch

  def get_state(self) -> dict:
    return (
        copy.deepcopy(self._state)
        if self._state is not None
        else self._host.get_state()
    )

  def set_state(self, state: dict) -> None:
    self._ahead.clear()  # placed from the old position
    self._host.set_state(state)
    self._state = copy.deepcopy(state)

  def close(self) -> None:
    self._ahead.clear()
    if hasattr(self._host, "close"):  # a generator of eval batches, too
      self._host.close()
    super().close()


def prefetch(data_config) -> int:
  """``data.prefetch``: batches placed ahead (2 where a config recorded before the key has none)."""
  return data_config.get("prefetch", 2)


def device_batches(
    host, mesh, global_size: int, size: int = 2
) -> DeviceBatches:
  """``host``'s local batches (a grain iterator or any iterator of dicts) as global batches on ``mesh``,
  ``size`` placed ahead; ``close`` frees them and closes ``host``."""
  if size < 0:
    raise ConfigError(
        f"data.prefetch={size}: the batches placed ahead are 0 or more"
    )
  return DeviceBatches(host, mesh, global_size, size)


def close(iterator) -> None:
  """Stops the worker processes and lets grain free the batches' shared memory.

  On the CPU, jax arrays alias the host batches they were made from, and only the cycle collector
  frees them; collecting here lets grain unlink the last batches' shared memory itself, rather than
  the interpreter warning at exit of "leaked shared_memory objects".
  """
  if hasattr(iterator, "close"):
    iterator.close()
  gc.collect()


def pad_batch(batch: dict, size: int) -> dict:
  """Pads a batch to ``size`` examples with zeros; ``mask`` marks the real, readable ones."""
  n = len(batch[LABEL])
  padded = {
      k: np.concatenate([v, np.zeros((size - n, *v.shape[1:]), v.dtype)])
      for k, v in batch.items()
  }
  padded[MASK] = (np.arange(size) < n) & padded.pop(VALID).astype(bool)
  padded[PADDING] = np.arange(size) >= n
  return padded


def eval_batches(
    splits: Splits,
    image_size: int,
    global_batch: int,
    views: int = 1,
    process_index: int = 0,
    process_count: int = 1,
    num_threads: int = 8,
) -> Iterator[dict]:
  """Eval batches of ``views`` crops per image (1: centre; 10: the paper's test); every eval image exactly
  once over all processes, none dropped.

  Every process yields the same number of batches (padded ones at the end where its shard is shorter),
  because each batch is one step of a program that runs on all processes together.
  """
  local = local_batch_size(global_batch, process_count)
  ds = grain.MapDataset.source(splits.eval)
  if process_count > 1:
    ds = ds[process_index::process_count]
  num_batches = math.ceil(math.ceil(len(splits.eval) / process_count) / local)
  ds = ds.map(
      functools.partial(augment.eval_views, size=image_size, views=views)
  )
  # Threads decode up to two batches' images ahead (decoding releases the GIL); order is kept.
  ds = ds.to_iter_dataset(
      grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=2 * local)
  )
  batches = iter(ds.batch(local, drop_remainder=False))
  for _ in range(num_batches):
    host = next(batches, None)
    yield pad_batch(host, local) if host is not None else _padding_only(
        local, image_size, views
    )


def _padding_only(size: int, image_size: int, views: int) -> dict:
  """A batch of padding alone: where this process's shard runs out before the others'."""
  padding = batch_lib.blank(
      batch_lib.EVAL, size, size=image_size, **batch_lib.eval_dims(views)
  )
  padding[PADDING][:] = True
  return padding
