"""What every command-line tool shares: absl flag parsing that ends a bad flag in one line."""

from absl import app, flags


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
  app.run(main, flags_parser=parse_flags)
