"""Orbax checkpoints in ``WORKDIR/checkpoints/<step>``: the train state, the grain iterator, and metadata.

A checkpoint is complete or absent: orbax writes into a temporary directory and renames it when done,
so a process killed mid-save leaves a ``*.orbax-checkpoint-tmp`` directory that is ignored and removed.
"""

from __future__ import annotations

import json
import os
from typing import Any

import grain
from absl import logging
import jax
import orbax.checkpoint as ocp


class Checkpointer:

  def __init__(self, directory: str, max_to_keep: int = 3):
    self.directory = os.path.abspath(directory)
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                             cleanup_tmp_directories=True))

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, state: Any, data_iterator: grain.DatasetIterator | None, meta: dict) -> bool:
    """Saves unless ``step`` is already saved. Arrays are copied off the device before this returns,
    so the caller may donate ``state`` to the next step right away. ``data_iterator=None``: no input
    position (imported weights), so a run started from the checkpoint begins its data afresh."""
    if self.latest_step() is not None and step <= self.latest_step():
      return False
    items = {"state": ocp.args.StandardSave(state), "meta": ocp.args.JsonSave(meta)}
    if data_iterator is not None:
      items["data"] = grain.checkpoint.CheckpointSave(data_iterator)
    return self._manager.save(step, args=ocp.args.Composite(**items))

  def restore(self, step: int, abstract_state: Any, data_iterator: grain.DatasetIterator | None = None
              ) -> tuple[Any, dict]:
    """The state saved at ``step``, placed like ``abstract_state`` (a tree of ShapeDtypeStructs with
    shardings); ``data_iterator``, if given, is moved to the saved position in place."""
    items = {"state": ocp.args.StandardRestore(abstract_state), "meta": ocp.args.JsonRestore()}
    if data_iterator is not None and os.path.isdir(os.path.join(self.directory, str(step), "data")):
      items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
    restored = self._manager.restore(step, args=ocp.args.Composite(**items))
    return restored["state"], dict(restored["meta"])

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()


def read_params(directory: str) -> tuple[dict, dict, dict]:
  """``(params, batch_stats, meta)`` of the latest checkpoint in ``directory`` (a work directory or its
  ``checkpoints/``) as numpy arrays, whatever the mesh it was saved from: for prediction, figures and
  fine-tuning, which need the weights but not the optimizer."""
  import numpy as np

  from alexnet_jax.errors import UserError

  if os.path.isdir(os.path.join(directory, "checkpoints")):
    directory = os.path.join(directory, "checkpoints")
  steps = [int(name) for name in os.listdir(directory) if name.isdigit()] if os.path.isdir(directory) else []
  if not steps:
    raise UserError(f"no checkpoint in {directory}")
  path = os.path.join(os.path.abspath(directory), str(max(steps)))
  verbosity = logging.get_verbosity()
  logging.set_verbosity(logging.ERROR)  # orbax warns that a sub-item lacks step metadata: it is the item's
  try:
    with ocp.PyTreeCheckpointer() as checkpointer:
      tree = checkpointer.metadata(os.path.join(path, "state")).item_metadata.tree
  finally:
    logging.set_verbosity(verbosity)
  wanted = {key: tree[key] for key in ("params", "batch_stats") if key in tree}
  restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), wanted)
  with ocp.PyTreeCheckpointer() as checkpointer:
    state = checkpointer.restore(os.path.join(path, "state"), args=ocp.args.PyTreeRestore(
        item=wanted, restore_args=restore_args, partial_restore=True))
  with open(os.path.join(path, "meta", "metadata")) as f:
    meta = json.load(f)
  return state["params"], state.get("batch_stats", {}), meta


def abstract_like(tree: Any) -> Any:
  """ShapeDtypeStructs carrying each array's sharding: the target a restore fills in."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)
