"""``python -m alexnet_jax.ensemble WORKDIR [WORKDIR ...] [--step=N]``

Evaluates each run (its latest checkpoint, or ``--step``; its own recorded network and eval views) and the
average of their softmax outputs on the eval split they share (the paper's "5 CNNs", Table 2). Prints a
table, then one JSON line: ``ensemble_top1_error``, ``ensemble_top5_error``, ``members`` (``path``,
``top1_error``, ``top5_error``), ``images``. Runs on other data or another class count are refused in one
line.
"""

from absl import app, flags

from alexnet_jax import cli

FLAGS = flags.FLAGS
flags.DEFINE_integer(
    "step",
    None,
    "Every member's checkpoint of this step (default: each one's latest).",
)


def main(argv):
  workdirs = argv[1:]
  if not workdirs:
    raise app.UsageError("give one or more work directories of trained runs")
  from alexnet_jax.training import ensemble  # after the huge-page restart

  ensemble.evaluate_ensemble(workdirs, FLAGS.step)


if __name__ == "__main__":
  cli.run(main, huge_pages=True)
