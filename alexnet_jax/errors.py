"""Errors that mean "the user asked for something impossible": the CLI prints them as one line."""


class UserError(Exception):
  """Base: reported as ``alexnet_jax: <message>`` without a traceback."""


class ConfigError(UserError, ValueError):
  """A config value that cannot work (sizes, divisibility, unknown keys)."""


class TrainingError(UserError, RuntimeError):
  """A run that must stop (non-finite loss, data that does not fit the config, nothing to evaluate)."""


def listed(items, shown: int = 5) -> str:
  """The first ``shown`` items, comma-separated, and ", ..." when there are more: a long list stays one line."""
  items = [str(item) for item in items]
  return ", ".join(items[:shown]) + (", ..." if len(items) > shown else "")
