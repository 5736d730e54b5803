"""``python -m alexnet_jax.predict (--checkpoint=DIR | --weights=FILE) [--config=CONFIG] IMAGE...``

Prints each image's top-5 classes with readable names and probabilities. The config says the network and
its preprocessing; without ``--config`` it is a work directory's own (its ``run.json``), or for imported
weights their source's (``configs/torchvision.py`` for torchvision's ``.pth``, ``configs/caffe.py`` for
``bvlc_alexnet.npy``). A given ``--config`` must describe the run's network. An unreadable image is reported
on one line and skipped; the exit status is then 1. A network whose scores are not finite (NaN or inf: it
diverged) is refused in one line, with no probabilities printed.
"""

from __future__ import annotations

import sys

import numpy as np
from absl import flags

from alexnet_jax import cli
from alexnet_jax.errors import UserError
from alexnet_jax.weights import inference, pretrained

FLAGS = flags.FLAGS


def predict(
    predictor, paths: list[str], top: int, batch_size: int, out=sys.stdout
) -> tuple[dict, list[str]]:
  """``({path: [(name, probability), ...]}, unreadable paths)``; prints as it goes."""
  results, failed = {}, []
  for start in range(0, len(paths), batch_size):
    readable, stored = [], []
    for path in paths[start : start + batch_size]:
      try:
        stored.append(predictor.read_image(path))
        readable.append(path)
      except UserError as error:
        print(f"alexnet_jax: {error}", file=sys.stderr)
        failed.append(path)
    if not stored:
      continue
    probabilities = predictor.probabilities(np.stack(stored))
    for path, p in zip(readable, probabilities):
      best = np.argsort(-p)[:top]
      results[path] = [(predictor.class_names[i], float(p[i])) for i in best]
      print(path, file=out)
      for name, probability in results[path]:
        print(f"  {probability:7.2%}  {name}", file=out)
  return results, failed


def main(argv):
  paths = argv[1:]
  if not paths:
    raise SystemExit("alexnet_jax: give one or more image files to classify")
  if (FLAGS.checkpoint is None) == (FLAGS.weights is None):
    raise SystemExit(
        "alexnet_jax: give exactly one of --checkpoint=DIR or --weights=FILE"
    )
  if (
      FLAGS.weights
      and FLAGS.source
      and pretrained.source_of(FLAGS.weights) != FLAGS.source
  ):
    raise UserError(
        f"{FLAGS.weights} does not look like {FLAGS.source} weights (.pth: torchvision, .npy: caffe)"
    )
  predictor = inference.load(FLAGS.config, FLAGS.checkpoint or FLAGS.weights)
  _, failed = predict(predictor, paths, FLAGS.top, FLAGS.batch_size)
  if failed:
    raise SystemExit(1)


if __name__ == "__main__":
  # Defined here, not on import: predict and visualize are also imported side by side (tests).
  cli.define_weights_flags()
  flags.DEFINE_enum(
      "source",
      None,
      ["torchvision", "caffe"],
      "Where --weights come from (default: by extension).",
  )
  flags.DEFINE_integer("top", 5, "How many classes to print per image.")
  flags.DEFINE_integer("batch_size", 32, "Images per forward pass.")
  cli.run(main)
