"""What every command-line tool shares: absl flag parsing that ends a bad flag in one line."""

from absl import app, flags, logging


def parse_flags(argv):
  """absl's parser, but a bad flag or ``--config.KEY`` override ends in one line instead of a traceback."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as error:
    raise SystemExit(f"alexnet_jax: {error}") from None
  except (AttributeError, KeyError, TypeError, ValueError) as error:
    detail = " ".join(str(error).replace("\\n", " ").replace("\\'", "").strip("'\"").split())
    raise SystemExit(f"alexnet_jax: bad config override: {detail}") from None


def run(main) -> None:
  def quiet_main(argv):
    if not flags.FLAGS["verbosity"].present:
      logging.set_verbosity(logging.WARNING)  # orbax and grain log every step of their work at INFO
    return main(argv)
  app.run(quiet_main, flags_parser=parse_flags)
