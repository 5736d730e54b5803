"""``python -m alexnet_jax.ensemble WORKDIR [WORKDIR ...] [--step=N] [--output=FILE]``

Evaluates each run (its latest checkpoint, or ``--step``; its own recorded network and eval views) and the
average of their softmax outputs on the eval split they share (the paper's "5 CNNs", Table 2). Prints a
table, then one JSON line: ``ensemble_top1_error``, ``ensemble_top5_error``, ``ensemble_loss``, ``members`` (``path``,
``top1_error``, ``top5_error``, ``loss``), ``images``; ``--output`` also writes that JSON to FILE. Runs on other
data or another class count are refused in one line. Several processes: the flags of ``main``
(``--coordinator_address`` ...), or nothing on TPU pods and under SLURM.
"""

from absl import app, flags

from alexnet_jax import cli

FLAGS = flags.FLAGS
flags.DEFINE_integer(
    "step",
    None,
    "Every member's checkpoint of this step (default: each one's latest).",
)
flags.DEFINE_string(
    "output", None, "Also write the result's JSON to this file (process 0)."
)
cli.define_distributed_flags()


def main(argv):
  workdirs = argv[1:]
  if not workdirs:
    raise app.UsageError("give one or more work directories of trained runs")
  # after the huge-page restart (cli.run)
  import jax

  from alexnet_jax.training import ensemble
  from alexnet_jax.workdir import run_record

  cli.initialize_distributed()
  result = ensemble.evaluate_ensemble(workdirs, FLAGS.step)
  if FLAGS.output and jax.process_index() == 0:
    run_record.write_json(FLAGS.output, result)


if __name__ == "__main__":
  cli.run(main, huge_pages=True)
