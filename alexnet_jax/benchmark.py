"""``python -m alexnet_jax.benchmark --config=... [--steps N] [--input_only] [--synthetic N]``

Without ``--input_only``: compiles the jitted train step once (its compile time reported apart), then
times it and the eval step on device-resident synthetic batches (uint8 crops, so the device-side
preprocessing is included), as the median over ``--repeats`` runs of ``--steps`` steps each; with
``--synthetic=N`` also end to end through the real grain pipeline, its batches placed ``data.prefetch``
ahead as in training. Model FLOP utilisation is reported where the peak is known.

``--input_only``: images/s of the input pipeline. Measures the host pipeline (decode, crop, flip and
lighting draws) with 0 worker processes (in-process), 1 worker (the per-worker rate) and ``--workers``
workers (the total), and the device-side half (mirroring, mean image and lighting) as a jitted step.
With ``--synthetic=N`` it first writes N photo-like 256x256 JPEGs (JPEG quality 90, about ImageNet's
size per image at that resolution) so it runs without ImageNet.
The last line is one JSON object with the figures.
"""

from __future__ import annotations

import os

from absl import flags, logging
from ml_collections import config_flags

from alexnet_jax import cli, config_files

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    "config", None, "Config file, e.g. configs/paper.py.", lock_config=False
)
flags.DEFINE_bool("input_only", False, "Benchmark the input pipeline only.")
flags.DEFINE_integer(
    "synthetic",
    0,
    "Write this many synthetic 256x256 JPEGs and read those instead of the config's data.",
    lower_bound=0,
)
flags.DEFINE_integer(
    "batches",
    20,
    "Batches timed per setting (after the batches the pipeline reads ahead).",
    lower_bound=1,
)
flags.DEFINE_integer(
    "workers",
    os.cpu_count() or 1,
    "Worker processes for the 'total' row.",
    lower_bound=0,
)
flags.DEFINE_integer(
    "steps", 10, "Steps per timed run (train-step benchmark).", lower_bound=1
)
flags.DEFINE_integer(
    "repeats", 5, "Timed runs; the median is reported.", lower_bound=1
)


def main(argv):
  del argv
  # After the huge-page restart (cli.run): JAX and the library are imported once.
  import jax

  from alexnet_jax.training import throughput

  logging.set_verbosity(logging.WARNING)
  # A batch of 0 or a mesh that cannot be ends in one line, not in a ZeroDivisionError after compiling.
  checked = FLAGS.config.copy_and_resolve_references()
  # makes no mesh: the config's need not fit this machine's devices
  if FLAGS.input_only:
    checked.mesh.data = checked.mesh.model = 1
  config_files.validate(checked, 1 if FLAGS.input_only else jax.device_count())
  if FLAGS.input_only:
    throughput.input_benchmark(
        FLAGS.config, FLAGS.synthetic, FLAGS.batches, FLAGS.workers
    )
  else:
    throughput.step_benchmark(
        FLAGS.config, FLAGS.steps, FLAGS.repeats, FLAGS.synthetic
    )


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  cli.run(main, huge_pages=True)
