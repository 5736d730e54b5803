"""``python -m alexnet_jax.main --config=configs/paper.py --workdir=runs/paper [--config.KEY=VALUE ...]``

Trains with periodic evaluation and checkpoints in ``WORKDIR/checkpoints`` and resumes from the latest
one; ``--mode=eval`` evaluates the latest checkpoint.
"""

from absl import app, flags, logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/paper.py.", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics.jsonl and TensorBoard events.")
flags.DEFINE_enum("mode", "train", ["train", "eval"], "Train (resuming if possible) or evaluate the latest checkpoint.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # orbax and grain log every save at INFO
  from alexnet_jax import errors, train  # after flag parsing: imports JAX

  try:
    if FLAGS.mode == "eval":
      train.evaluate_checkpoint(FLAGS.config, FLAGS.workdir)
    else:
      train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
  except errors.UserError as error:
    raise SystemExit(f"alexnet_jax: {error}") from None


if __name__ == "__main__":
  app.run(main)
