"""``python -m alexnet_jax.main --config=configs/paper.py --workdir=runs/paper [--config.KEY=VALUE ...]``

Trains with periodic evaluation and checkpoints in ``WORKDIR/checkpoints`` and resumes from the latest
one; ``--mode=eval`` evaluates the latest checkpoint. Several processes (a GPU cluster, a TPU pod slice):
``--coordinator_address=HOST:PORT --num_processes=N --process_id=I`` on each, or nothing on TPU pods and
under SLURM, where JAX finds them itself.
"""

from absl import app, flags
from ml_collections import config_flags

from alexnet_jax import cli

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    "config",
    None,
    "Config file, e.g. configs/paper.py; optional for a work directory "
    "that holds a run (its run.json), which it is then checked against.",
    lock_config=True,
)
flags.DEFINE_string(
    "workdir",
    None,
    "Directory for checkpoints, metrics.jsonl, run.json and TensorBoard events.",
)
flags.DEFINE_enum(
    "mode",
    "train",
    ["train", "eval"],
    "Train (resuming if possible) or evaluate a checkpoint.",
)
flags.DEFINE_integer(
    "step",
    None,
    "--mode=eval: the checkpoint of this step (default: the latest).",
)
cli.define_distributed_flags()
flags.mark_flags_as_required(["workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not FLAGS.workdir.strip():
    raise app.UsageError(
        "--workdir is empty: give the directory for this run's checkpoints and metrics"
    )
  if FLAGS.step is not None and FLAGS.mode != "eval":
    raise app.UsageError("--step goes with --mode=eval")
  # after the huge-page restart (cli.run)
  from alexnet_jax.training import train
  from alexnet_jax.workdir import run_record

  # A run's own config when none is given (a given one is checked against it).
  config = (
      FLAGS.config
      if FLAGS.config is not None
      else run_record.recorded_config(FLAGS.workdir)
  )
  cli.initialize_distributed()
  if FLAGS.mode == "eval":
    train.evaluate_checkpoint(config, FLAGS.workdir, FLAGS.step)
  else:
    train.train_and_evaluate(config, FLAGS.workdir)


if __name__ == "__main__":
  cli.run(main, huge_pages=True)
