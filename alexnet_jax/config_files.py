"""The experiment configs, ``configs/NAME.py``: loaded by their path, and checked against the devices before
anything is read or compiled (one clear line per problem).

Not imported as modules: a ``configs/`` directory on ``sys.path`` would let ``configs/torchvision.py``
shadow the real torchvision package.
"""

from __future__ import annotations

import functools
import importlib.util
import os

from alexnet_jax.errors import ConfigError

# An installed package carries them as alexnet_jax/configs (setup.cfg); a checkout has configs/ beside the package.
_INSTALLED_CONFIGS = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "configs"
)
_CHECKOUT_CONFIGS = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs"
)
CONFIG_DIR = (
    _INSTALLED_CONFIGS
    if os.path.isdir(_INSTALLED_CONFIGS)
    else _CHECKOUT_CONFIGS
)


def bundled(path: str) -> str | None:
  """``--config=configs/NAME.py`` given where no such file is (outside a checkout): the bundled copy, or None."""
  head, name = os.path.split(os.path.normpath(path))
  if (
      os.path.exists(path)
      or os.path.basename(head) != "configs"
      or not name.endswith(".py")
  ):
    return None
  candidate = os.path.join(CONFIG_DIR, name)
  return candidate if os.path.isfile(candidate) else None


def load(name: str):
  """``configs/NAME.py``'s ``get_config()`` (a fresh ConfigDict on every call)."""
  path = os.path.join(CONFIG_DIR, f"{name}.py")
  spec = importlib.util.spec_from_file_location(
      f"alexnet_jax_config_{name}", path
  )
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


@functools.cache
def known_keys() -> dict[str, frozenset[str]]:
  """Every key a config may hold, by section ("" for the top level): configs/paper.py's, so that file is
  the one place that names them. A key it lacks is a typo or a stale name."""
  paper = load("paper")
  sections = [k for k, v in paper.items() if hasattr(v, "keys")]
  return {
      "": frozenset(paper.keys()),
      **{k: frozenset(paper[k].keys()) for k in sections},
  }


def _check_keys(config) -> None:
  for section, keys in known_keys().items():
    node = config if not section else config.get(section)
    if node is None:
      raise ConfigError(f"the config has no '{section}' section")
    unknown = sorted(set(node.keys()) - keys)
    if unknown:
      where = f"{section}." if section else ""
      raise ConfigError(
          f"unknown config key(s) {', '.join(where + k for k in unknown)}; "
          f"known: {', '.join(sorted(where + k for k in keys))}"
      )


def validate(config, num_devices: int) -> None:
  """Raises ConfigError for the first impossible setting: unknown keys, mesh against ``num_devices``,
  batch against the data axis, towers against the model axis, and the model's own constraints.
  """
  # Here, not at the top: config files and every command's flag parsing import this module, before the
  # huge-page restart (cli.run) and without needing JAX, which these two import.
  from alexnet_jax import sharding
  from alexnet_jax.spec import AlexNetSpec

  _check_keys(config)
  data, model = config.mesh.data, config.mesh.model
  if model < 1 or num_devices % model:
    hint = (
        "; --config.mesh.model=1 puts both towers on each device"
        if model > 1
        else ""
    )
    raise ConfigError(
        f"mesh.model={model} must be a positive divisor of the {num_devices} available devices{hint}"
    )
  if data == -1:
    data = num_devices // model
  if data < 1 or data * model > num_devices:
    raise ConfigError(
        f"mesh data={data} x model={model} needs {data * model} devices, "
        f"only {num_devices} available"
    )
  sharding.check_towers(config.model.towers, model)
  if config.batch_size < 1:
    raise ConfigError(f"batch_size={config.batch_size} must be positive")
  if config.batch_size % data:
    raise ConfigError(
        f"batch_size={config.batch_size} is not divisible by the data axis (mesh.data={data})"
    )
  if config.get("dead_network_steps", 0) < 0:
    raise ConfigError(
        f"dead_network_steps={config.dead_network_steps} must be >= 0 (0: never stop a dead network)"
    )
  # orbax would keep none: every save deleted at once
  if config.get("profile_steps", 0) < 0:
    raise ConfigError(
        f"profile_steps={config.profile_steps} must be >= 0 (0: no profile)"
    )
  if config.checkpoints_to_keep < 1:
    raise ConfigError(
        f"checkpoints_to_keep={config.checkpoints_to_keep} must be at least 1"
    )
  if config.num_train_steps <= 0 and config.num_epochs <= 0:
    raise ConfigError("set num_train_steps > 0 or num_epochs > 0")
  for key in ("log_every_steps", "eval_every_steps", "checkpoint_every_steps"):
    if config[key] == 0 or config[key] < -1:
      raise ConfigError(
          f"{key}={config[key]} must be positive, or -1 for once per epoch"
      )
  if config.optimizer.learning_rate <= 0:
    raise ConfigError(
        f"optimizer.learning_rate={config.optimizer.learning_rate} must be positive"
    )
  for key in ("momentum", "weight_decay"):
    if config.optimizer[key] < 0:
      raise ConfigError(
          f"optimizer.{key}={config.optimizer[key]} must not be negative"
      )
  if config.data.eval_views not in (1, 10):
    raise ConfigError(
        f"data.eval_views must be 1 (centre crop) or 10 (the paper's 10 crops), got {config.data.eval_views}"
    )
  for key in ("mean_rgb", "std_rgb"):
    if len(config.data[key]) not in (0, 3):
      raise ConfigError(
          f"data.{key} must be empty or three values (R, G, B), got {tuple(config.data[key])}"
      )
  if len(config.data.std_rgb) and min(config.data.std_rgb) <= 0:
    raise ConfigError(
        f"data.std_rgb values must be positive, got {tuple(config.data.std_rgb)}"
    )
  if config.init_from and not os.path.exists(config.init_from):
    raise ConfigError(f"init_from: {config.init_from} does not exist")
  stored = config.data.stored_size
  if stored < 0 or 0 < stored < config.model.image_size:
    raise ConfigError(
        f"data.stored_size={stored} must be 0 (from model.image_size) or at least "
        f"model.image_size={config.model.image_size}"
    )
  if config.data.num_workers < 0:
    raise ConfigError(
        f"data.num_workers={config.data.num_workers} must be >= 0"
    )
  AlexNetSpec.from_config(config.model)
