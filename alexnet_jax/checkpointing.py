"""Orbax checkpoints in ``WORKDIR/checkpoints/<step>``: the train state, the grain iterator, and metadata.

A checkpoint is complete or absent: orbax writes into a temporary directory and renames it when done,
so a process killed mid-save leaves a ``*.orbax-checkpoint-tmp`` directory that is ignored and removed.
"""

from __future__ import annotations

import os
from typing import Any

import grain
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

  def save(self, step: int, state: Any, data_iterator: grain.DatasetIterator, meta: dict) -> bool:
    """Saves unless ``step`` is already saved. Arrays are copied off the device before this returns,
    so the caller may donate ``state`` to the next step right away."""
    if self.latest_step() is not None and step <= self.latest_step():
      return False
    return self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        data=grain.checkpoint.CheckpointSave(data_iterator),
        meta=ocp.args.JsonSave(meta)))

  def restore(self, step: int, abstract_state: Any, data_iterator: grain.DatasetIterator | None = None
              ) -> tuple[Any, dict]:
    """The state saved at ``step``, placed like ``abstract_state`` (a tree of ShapeDtypeStructs with
    shardings); ``data_iterator``, if given, is moved to the saved position in place."""
    items = {"state": ocp.args.StandardRestore(abstract_state), "meta": ocp.args.JsonRestore()}
    if data_iterator is not None:
      items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
    restored = self._manager.restore(step, args=ocp.args.Composite(**items))
    return restored["state"], dict(restored["meta"])

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()


def abstract_like(tree: Any) -> Any:
  """ShapeDtypeStructs carrying each array's sharding: the target a restore fills in."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)
