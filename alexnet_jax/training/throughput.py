"""Throughput of the input pipeline and of the jitted steps: what ``python -m alexnet_jax.benchmark`` prints,
and what the platform settings beside this module were chosen by (docs/performance.md).
"""

from __future__ import annotations

import json
import os
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
from array_record.python.array_record_module import ArrayRecordWriter
from flax import nnx
from PIL import Image

from alexnet_jax import sharding
from alexnet_jax.data import batch as batch_lib
from alexnet_jax.data import dataset, images, input_pipeline, prepared_source, preprocess, sources
from alexnet_jax.data import stats as stats_lib
from alexnet_jax.data.batch import ALPHA, IMAGE, LABEL, MASK, OFFSET, VALID
from alexnet_jax.model import AlexNet, AlexNetSpec
from alexnet_jax.platform import cpu_info, host_memory
from alexnet_jax.training import optim

# `steps` is a step count here
from alexnet_jax.training import steps as steps_lib
from alexnet_jax.training.state import initial_state

# Dense bf16 peak FLOP/s by device kind, for model FLOP utilisation (MFU).
PEAK_BF16_FLOPS = {
    "H100": 989e12,
    "H200": 989e12,
    "A100": 312e12,
    "TPU v4": 275e12,
    "TPU v5p": 459e12,
    "TPU v5 lite": 197e12,
    "TPU v6 lite": 918e12,
}


def synthetic_prepared(directory: str, count: int, size: int = 256) -> str:
  """A prepared-format dataset of ``count`` photo-like JPEGs: smooth structure plus fine detail."""

  out = os.path.join(directory, f"synthetic-{size}")
  os.makedirs(out, exist_ok=True)
  rng = np.random.default_rng(0)
  for split, n in (("train", count), ("validation", max(1, count // 10))):
    writer = ArrayRecordWriter(
        os.path.join(out, f"{split}-00000-of-00001.array_record"),
        "group_size:1",
    )
    for i in range(n):
      coarse = Image.fromarray(
          rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
      ).resize((size, size), Image.Resampling.BICUBIC)
      detail = rng.normal(0, 12, (size, size, 3))
      picture = np.clip(np.asarray(coarse, np.float64) + detail, 0, 255).astype(
          np.uint8
      )
      writer.write(
          prepared_source.pack_record(i % 1000, images.encode_jpeg(picture, 90))
      )
    writer.close()
  open(os.path.join(out, "classes.txt"), "w").write(
      "\n".join(f"class{i}" for i in range(1000)) + "\n"
  )
  stats_lib.DatasetStats(
      np.full((size, size, 3), 120, np.float32),
      np.array([0.2, 0.02, 0.005], np.float32),
      np.eye(3, dtype=np.float32),
      count,
  ).save(os.path.join(out, "stats.npz"))
  json.dump({"size": size}, open(os.path.join(out, "info.json"), "w"))
  return out


def time_host_pipeline(splits, config, workers: int, batches: int) -> float:

  config = config.copy_and_resolve_references()
  config.data.num_workers = workers
  iterator = input_pipeline.train_iterator(splits, config)
  # Warm-up: worker start, then every batch built ahead while waiting (else the timing counts them as free).
  threads = input_pipeline.read_options(workers).num_threads
  for _ in range(max(workers, 1) * (2 * threads + 1) + 1):
    next(iterator)
  start = time.perf_counter()
  for _ in range(batches):
    next(iterator)
  elapsed = time.perf_counter() - start
  input_pipeline.close(iterator)
  return batches * config.batch_size / elapsed


def time_device_half(splits, config, batches: int) -> float:

  consts = preprocess.constants(input_pipeline.training_stats(splits))
  size, n = config.model.image_size, config.batch_size
  step = jax.jit(
      lambda img, off, alpha: preprocess.network_input(
          img, off, consts, config.data.pixel_scale, alpha
      )
  )
  args = (
      jnp.zeros((n, size, size, 3), jnp.uint8),
      jnp.zeros((n, 3), jnp.int32),
      jnp.zeros((n, 3), jnp.float32),
  )
  step(*args).block_until_ready()
  start = time.perf_counter()
  for _ in range(batches):
    out = step(*args)
  out.block_until_ready()
  return batches * n / (time.perf_counter() - start)


def input_benchmark(config, synthetic: int, batches: int, workers: int) -> dict:

  with tempfile.TemporaryDirectory() as tmp:
    if synthetic:
      splits = prepared_source.load(
          synthetic_prepared(tmp, synthetic), config.model.image_size
      )
      origin = f"{synthetic} synthetic 256x256 JPEGs"
    else:
      splits = sources.load(config.data, config.model.image_size)
      origin = f"{config.data.source}:{config.data.name}"
    sample = (
        splits.train._records[0] if hasattr(splits.train, "_records") else None
    )
    rows = {
        "in-process (0 workers)": time_host_pipeline(
            splits, config, 0, batches
        ),
        "1 worker": time_host_pipeline(splits, config, 1, batches),
        f"{workers} workers": time_host_pipeline(
            splits, config, workers, batches
        ),
    }
    device = time_device_half(splits, config, batches)
  print(
      f"input pipeline on {origin}: batch {config.batch_size}, {config.model.image_size}x{config.model.image_size} "
      f"crops, flips={config.data.random_flip}, lighting={config.data.pca_lighting}"
      + (f", {len(sample) / 1024:.1f} KiB per JPEG" if sample else "")
  )
  for name, rate in rows.items():
    print(
        f"  host: decode+crop+flip+lighting draws, {name:>24}: {rate:10,.0f} images/s"
    )
  print(
      f"  device: mirror + mean image + lighting (jitted, {__import__('jax').devices()[0].platform}): {device:10,.0f} images/s"
  )
  result = {
      "input_images_per_sec_per_worker": rows["1 worker"],
      "input_images_per_sec_total": rows[f"{workers} workers"],
      "input_images_per_sec_in_process": rows["in-process (0 workers)"],
      "workers": workers,
      "device_preprocess_images_per_sec": device,
      "batch_size": config.batch_size,
      "origin": origin,
      "cpu": cpu_info.describe(),
  }
  print(json.dumps(result))
  return result


def _median_rate(run, batch_size: int, steps: int, repeats: int) -> float:
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    run(steps)
    times.append(time.perf_counter() - start)
  return steps * batch_size / float(np.median(times))


def peak_flops(device, dtype: str) -> float | None:
  if dtype != "bfloat16":
    return None
  return next(
      (
          peak
          for name, peak in PEAK_BF16_FLOPS.items()
          if name in device.device_kind
      ),
      None,
  )


def step_benchmark(config, steps: int, repeats: int, synthetic: int) -> dict:

  mesh = sharding.make_mesh(config.mesh.data, config.mesh.model)
  spec = AlexNetSpec.from_config(config.model)
  n, size = config.batch_size, spec.image_size
  stored = dataset.stored_size_for(size, config.data.stored_size)
  stats = stats_lib.DatasetStats(
      np.full((stored, stored, 3), 120, np.float32),
      np.array([0.2, 0.02, 0.005], np.float32),
      np.eye(3, dtype=np.float32),
      1,
  )
  consts = preprocess.constants(stats, mesh)
  model = AlexNet(spec, rngs=nnx.Rngs(0), mesh=mesh)
  tx = optim.paper_sgd(
      config.optimizer.learning_rate,
      config.optimizer.momentum,
      config.optimizer.weight_decay,
  )
  state = initial_state(model, tx)
  rng = np.random.default_rng(0)
  host = batch_lib.blank(batch_lib.TRAIN, n, size=size)
  host[IMAGE][:] = rng.integers(0, 256, host[IMAGE].shape, dtype=np.uint8)
  # the centre crop, unmirrored
  host[OFFSET][:] = ((stored - size) // 2, (stored - size) // 2, 0)
  host[ALPHA][:] = rng.normal(0, 0.1, host[ALPHA].shape)
  host[LABEL][:] = rng.integers(0, spec.num_classes, n)
  host[VALID][:] = True
  batch = sharding.global_batch(mesh, host, n)
  eval_host = batch_lib.blank(
      batch_lib.EVAL, n, size=size, **batch_lib.eval_dims(1)
  )
  eval_host[IMAGE][:], eval_host[OFFSET][:] = (
      host[IMAGE][:, None],
      host[OFFSET][:, None],
  )
  eval_host[LABEL][:], eval_host[MASK][:] = host[LABEL], True
  eval_batch = sharding.global_batch(mesh, eval_host, n)
  key = jax.random.key(0)

  train_step = steps_lib.make_train_step(
      spec, mesh, tx, config.data.pixel_scale
  )
  start = time.perf_counter()
  compiled = train_step.lower(state, batch, key, consts).compile()
  compile_seconds = time.perf_counter() - start
  # Counted from the layer shapes: XLA's cost analysis misses convolutions that run as library calls.
  # forward + backward (twice the forward)
  flops_per_step = 3.0 * spec.forward_flops() * n

  holder = {"state": state}

  def run_train(k):
    for _ in range(k):
      holder["state"], metrics = compiled(holder["state"], batch, key, consts)
    jax.block_until_ready(metrics)

  run_train(2)  # warm-up
  train_rate = _median_rate(run_train, n, steps, repeats)
  eval_step = steps_lib.make_eval_step(spec, mesh, config.data.pixel_scale)
  params_now, stats_now = holder["state"]["params"], holder["state"].get(
      "batch_stats"
  )

  def run_eval(k):
    for _ in range(k):
      out = eval_step(params_now, eval_batch, consts, stats_now)
    jax.block_until_ready(out)

  run_eval(2)
  eval_rate = _median_rate(run_eval, n, steps, repeats)

  end_to_end, prefetch = None, input_pipeline.prefetch(config.data)
  if synthetic:
    with tempfile.TemporaryDirectory() as tmp:
      splits = prepared_source.load(
          synthetic_prepared(tmp, synthetic, stored), size
      )
      # As the training loop gets them: placed on the mesh, data.prefetch batches ahead.
      iterator = input_pipeline.device_batches(
          input_pipeline.train_iterator(splits, config), mesh, n, prefetch
      )

      def run_real(k):
        for _ in range(k):
          holder["state"], metrics = compiled(
              holder["state"], next(iterator), key, consts
          )
        jax.block_until_ready(metrics)

      run_real(2)
      end_to_end = _median_rate(run_real, n, steps, repeats)
      input_pipeline.close(iterator)

  device = jax.devices()[0]
  peak = peak_flops(device, spec.dtype)
  mfu = (
      flops_per_step * train_rate / n / (peak * mesh.size)
      if peak and flops_per_step
      else None
  )
  result = {
      "train_images_per_sec": train_rate,
      "eval_images_per_sec": eval_rate,
      "end_to_end_images_per_sec": end_to_end,
      "prefetch": prefetch,
      "compile_seconds": compile_seconds,
      "device_kind": device.device_kind,
      "devices": mesh.size,
      "mesh": dict(mesh.shape),
      "batch_size": n,
      "dtype": spec.dtype,
      "towers": spec.towers,
      "lrn": spec.lrn,
      "train_gflop_per_image": flops_per_step / n / 1e9,
      "mfu": mfu,
      "huge_page_malloc": host_memory.huge_page_malloc_enabled(),
      "cpu": cpu_info.describe(),
  }
  cpu = result["cpu"]
  on_cpu = (
      f" ({cpu['model']}, {' '.join(cpu['features']) or 'no AVX2'})"
      if device.platform == "cpu"
      else ""
  )
  print(
      f"AlexNet benchmark: {device.device_kind}{on_cpu} x{mesh.size}, mesh {dict(mesh.shape)}, batch {n}, {spec.dtype}, "
      f"{spec.towers} tower(s), LRN {'on' if spec.lrn else 'off'}"
  )
  print(f"  compile (train step)   {compile_seconds:10.1f} s")
  print(
      f"  train step             {train_rate:10,.0f} images/s   ({flops_per_step / n / 1e9:.2f} GFLOP/image)"
      + (f", MFU {mfu:.1%}" if mfu else "")
  )
  print(f"  eval step (1 crop)     {eval_rate:10,.0f} images/s")
  if end_to_end:
    print(
        f"  end to end (grain, {config.data.num_workers} workers, prefetch {prefetch}) {end_to_end:10,.0f} images/s"
    )
  print(json.dumps(result))
  return result
