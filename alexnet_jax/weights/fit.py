"""Do these weights fit this network? The one check of every path that loads weights (fine-tuning's
start aside, which keeps a head of another class count: ``pretrained.merge_for_finetuning``), and their
placement on the network's towers."""

from __future__ import annotations

import jax
import numpy as np

from alexnet_jax import sharding
from alexnet_jax.model import AlexNetSpec


def _layer_shapes(params: dict) -> dict:
  return {
      name: (tuple(np.shape(p["kernel"])), tuple(np.shape(p["bias"])))
      for name, p in params.items()
      if "kernel" in p
  }


def mismatch(spec: AlexNetSpec, params: dict) -> str | None:
  """None when ``params`` holds exactly ``spec``'s layers, kernels and biases of its shapes (each with the
  leading tower axis) and its batch-norm layers; else the differences, in a few words.
  """
  want, got = spec.param_shapes(), _layer_shapes(params)
  differ = [
      f"{name} {got.get(name, 'absent')} there, {want.get(name, 'absent')} here"
      for name in sorted(set(want) | set(got))
      if want.get(name) != got.get(name)
  ]
  norms_want, norms_got = set(spec.norm_shapes()), {
      name for name, p in params.items() if "scale" in p
  }
  if norms_want != norms_got:
    differ.append(
        f"batch-norm layers {sorted(norms_got) or 'none'} there, {sorted(norms_want) or 'none'} here"
    )
  return "; ".join(differ[:2]) if differ else None


def fits(spec: AlexNetSpec, params: dict) -> bool:
  return mismatch(spec, params) is None


def on_towers(mesh, tree):
  """Weights (or batch-norm statistics) placed as the network holds them: the tower axis over ``model``."""
  return jax.device_put(tree, sharding.tower_sharding(mesh))
