"""The experiment configs, ``configs/NAME.py``, loaded by their path.

Not imported as modules: a ``configs/`` directory on ``sys.path`` would let ``configs/torchvision.py``
shadow the real torchvision package.
"""

from __future__ import annotations

import importlib.util
import os

CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


def load(name: str):
  """``configs/NAME.py``'s ``get_config()`` (a fresh ConfigDict on every call)."""
  path = os.path.join(CONFIG_DIR, f"{name}.py")
  spec = importlib.util.spec_from_file_location(f"alexnet_jax_config_{name}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()
