"""The experiment configs, ``configs/NAME.py``, loaded by their path.

Not imported as modules: a ``configs/`` directory on ``sys.path`` would let ``configs/torchvision.py``
shadow the real torchvision package.
"""

from __future__ import annotations

import importlib.util
import os

# An installed package carries them as alexnet_jax/configs (setup.cfg); a checkout has configs/ beside the package.
_INSTALLED_CONFIGS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")
_CHECKOUT_CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
CONFIG_DIR = _INSTALLED_CONFIGS if os.path.isdir(_INSTALLED_CONFIGS) else _CHECKOUT_CONFIGS


def bundled(path: str) -> str | None:
  """``--config=configs/NAME.py`` given where no such file is (outside a checkout): the bundled copy, or None."""
  head, name = os.path.split(os.path.normpath(path))
  if os.path.exists(path) or os.path.basename(head) != "configs" or not name.endswith(".py"):
    return None
  candidate = os.path.join(CONFIG_DIR, name)
  return candidate if os.path.isfile(candidate) else None


def load(name: str):
  """``configs/NAME.py``'s ``get_config()`` (a fresh ConfigDict on every call)."""
  path = os.path.join(CONFIG_DIR, f"{name}.py")
  spec = importlib.util.spec_from_file_location(f"alexnet_jax_config_{name}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()
