"""A run's training state: step, parameters, optimizer state (and batch-norm statistics), on the model's mesh."""

from __future__ import annotations


import jax
import jax.numpy as jnp
import optax

from alexnet_jax import sharding
from alexnet_jax.model import AlexNet

# {'step': int32 scalar, 'params': {...}, 'opt_state': optax state[, 'batch_stats': {...}]}
State = dict


def initial_state(model: AlexNet, tx: optax.GradientTransformation) -> State:
  """Step 0, the model's parameters, the optimizer's state (and batch-norm statistics), on the model's mesh."""
  params = model.params()
  # The momentum lives where its parameter lives. Left to jit it comes out replicated, the first step
  # returns it sharded like the gradients, and the step compiles again (a compiled step refuses it).
  opt_state = optax.tree_utils.tree_map_params(
      tx,
      lambda s, p: jax.device_put(s, p.sharding),
      jax.jit(tx.init)(params),
      params,
  )
  state = {
      "step": jnp.zeros((), jnp.int32),
      "params": params,
      "opt_state": opt_state,
  }
  if model.spec.batch_norm:
    state["batch_stats"] = model.batch_stats()
  return sharding.on_mesh(model.mesh, state)
