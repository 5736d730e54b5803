"""``python -m alexnet_jax.benchmark --input_only --config=...``: images/s of the input pipeline.

Measures the host pipeline (decode, crop, flip, lighting draws) with 0 worker processes (in-process),
1 worker (the per-worker rate) and ``--workers`` workers (the total), and the device-side half (mean
image and lighting) as a jitted step. With ``--synthetic=N`` it first writes N photo-like 256x256 JPEGs
(JPEG quality 90, about ImageNet's size per image at that resolution) so it runs without ImageNet.
The last line is one JSON object with the figures.
"""

from __future__ import annotations

import json
import os
import tempfile
import time

import numpy as np
from absl import app, flags
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/paper.py.", lock_config=False)
flags.DEFINE_bool("input_only", False, "Benchmark the input pipeline only.")
flags.DEFINE_integer("synthetic", 0, "Write this many synthetic 256x256 JPEGs and read those instead of the config's data.")
flags.DEFINE_integer("batches", 20, "Batches timed per setting (after one warm-up batch).")
flags.DEFINE_integer("workers", os.cpu_count() or 1, "Worker processes for the 'total' row.")


def synthetic_prepared(directory: str, count: int, size: int = 256) -> str:
  """A prepared-format dataset of ``count`` photo-like JPEGs: smooth structure plus fine detail."""
  from PIL import Image

  from alexnet_jax import images, sources, stats as stats_lib
  from array_record.python.array_record_module import ArrayRecordWriter

  out = os.path.join(directory, "synthetic-256")
  os.makedirs(out, exist_ok=True)
  rng = np.random.default_rng(0)
  for split, n in (("train", count), ("validation", max(1, count // 10))):
    writer = ArrayRecordWriter(os.path.join(out, f"{split}-00000-of-00001.array_record"), "group_size:1")
    for i in range(n):
      coarse = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).resize((size, size), Image.Resampling.BICUBIC)
      detail = rng.normal(0, 12, (size, size, 3))
      picture = np.clip(np.asarray(coarse, np.float64) + detail, 0, 255).astype(np.uint8)
      writer.write(sources.pack_record(i % 1000, images.encode_jpeg(picture, 90)))
    writer.close()
  open(os.path.join(out, "classes.txt"), "w").write("\n".join(f"class{i}" for i in range(1000)) + "\n")
  stats_lib.DatasetStats(np.full((size, size, 3), 120, np.float32), np.array([0.2, 0.02, 0.005], np.float32),
                         np.eye(3, dtype=np.float32), count).save(os.path.join(out, "stats.npz"))
  json.dump({"size": size}, open(os.path.join(out, "info.json"), "w"))
  return out


def time_host_pipeline(splits, config, workers: int, batches: int) -> float:
  from alexnet_jax import input_pipeline

  config = config.copy_and_resolve_references()
  config.data.num_workers = workers
  iterator = input_pipeline.train_iterator(splits, config)
  next(iterator)  # warm-up: worker start, first decodes
  start = time.perf_counter()
  for _ in range(batches):
    next(iterator)
  elapsed = time.perf_counter() - start
  if hasattr(iterator, "close"):
    iterator.close()
  return batches * config.batch_size / elapsed


def time_device_half(splits, config, batches: int) -> float:
  import jax
  import jax.numpy as jnp

  from alexnet_jax import input_pipeline, preprocess

  consts = preprocess.constants(input_pipeline.training_stats(splits))
  size, n = config.model.image_size, config.batch_size
  step = jax.jit(lambda img, off, alpha: preprocess.network_input(img, off, consts, config.data.pixel_scale, alpha))
  args = (jnp.zeros((n, size, size, 3), jnp.uint8), jnp.zeros((n, 3), jnp.int32), jnp.zeros((n, 3), jnp.float32))
  step(*args).block_until_ready()
  start = time.perf_counter()
  for _ in range(batches):
    out = step(*args)
  out.block_until_ready()
  return batches * n / (time.perf_counter() - start)


def input_benchmark(config, synthetic: int, batches: int, workers: int) -> dict:
  from alexnet_jax import sources

  with tempfile.TemporaryDirectory() as tmp:
    if synthetic:
      splits = sources.prepared(synthetic_prepared(tmp, synthetic), config.model.image_size)
      origin = f"{synthetic} synthetic 256x256 JPEGs"
    else:
      splits = sources.load(config.data, config.model.image_size)
      origin = f"{config.data.source}:{config.data.name}"
    sample = splits.train._records[0] if hasattr(splits.train, "_records") else None
    rows = {"in-process (0 workers)": time_host_pipeline(splits, config, 0, batches),
            "1 worker": time_host_pipeline(splits, config, 1, batches),
            f"{workers} workers": time_host_pipeline(splits, config, workers, batches)}
    device = time_device_half(splits, config, batches)
  print(f"input pipeline on {origin}: batch {config.batch_size}, {config.model.image_size}x{config.model.image_size} "
        f"crops, flips={config.data.random_flip}, lighting={config.data.pca_lighting}"
        + (f", {len(sample) / 1024:.1f} KiB per JPEG" if sample else ""))
  for name, rate in rows.items():
    print(f"  host: decode+crop+flip+lighting draws, {name:>24}: {rate:10,.0f} images/s")
  print(f"  device: mean image + lighting (jitted, {__import__('jax').devices()[0].platform}): {device:10,.0f} images/s")
  result = {"input_images_per_sec_per_worker": rows["1 worker"], "input_images_per_sec_total": rows[f"{workers} workers"],
            "input_images_per_sec_in_process": rows["in-process (0 workers)"], "workers": workers,
            "device_preprocess_images_per_sec": device, "batch_size": config.batch_size, "origin": origin}
  print(json.dumps(result))
  return result


def main(argv):
  del argv
  from absl import logging
  logging.set_verbosity(logging.WARNING)
  if not FLAGS.input_only:
    raise app.UsageError("only --input_only is implemented so far (the train-step benchmark is an open issue)")
  input_benchmark(FLAGS.config, FLAGS.synthetic, FLAGS.batches, FLAGS.workers)


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  app.run(main)
