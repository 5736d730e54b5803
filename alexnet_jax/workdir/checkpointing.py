"""Orbax checkpoints in ``WORKDIR/checkpoints/<step>``: the train state, the grain iterator, and metadata.

A checkpoint is complete or absent: orbax writes into a temporary directory and renames it when done,
so a process killed mid-save leaves a ``*.orbax-checkpoint-tmp`` directory that is ignored and removed.
A checkpoint damaged afterwards (a lost file) is renamed ``<step>.unreadable`` by a resuming run, never deleted.
"""

from __future__ import annotations

import json
import os
import pathlib
import sys
from typing import Any

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp

from alexnet_jax.errors import UserError


class Checkpointer:

  def __init__(self, directory: str, max_to_keep: int = 3):
    self.directory = os.path.abspath(directory)
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, create=True, cleanup_tmp_directories=True
        ),
    )

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def path(self, step: int) -> str:
    return os.path.join(self.directory, str(step))

  def stored_shapes(self, step: int) -> dict[tuple[str, ...], tuple[int, ...]]:
    """The shape of each array of the train state saved at ``step``, by path, read from its metadata alone."""
    return tree_shapes(_stored_state_tree(self.path(step)))

  def move_aside(self, step: int) -> str:
    """Renames checkpoint ``step`` to ``<step>.unreadable`` and returns that path: orbax takes only digits
    for a step, so it is then neither restored nor removed by ``max_to_keep``, and a new save of ``step``
    cannot collide with it."""
    target = self.path(step) + ".unreadable"
    copies = 1
    while os.path.exists(target):
      copies += 1
      target = f"{self.path(step)}.unreadable-{copies}"
    os.rename(self.path(step), target)
    self._manager.reload()  # the manager caches its list of steps
    return target

  def save(
      self,
      step: int,
      state: Any,
      data_iterator: grain.DatasetIterator | None,
      meta: dict,
  ) -> bool:
    """Saves unless ``step`` is already saved. Arrays are copied off the device before this returns,
    so the caller may donate ``state`` to the next step right away. ``data_iterator=None``: no input
    position (imported weights), so a run started from the checkpoint begins its data afresh.
    """
    if self.latest_step() is not None and step <= self.latest_step():
      return False
    items = {
        "state": ocp.args.StandardSave(state),
        "meta": ocp.args.JsonSave(meta),
    }
    if data_iterator is not None:
      items["data"] = grain.checkpoint.CheckpointSave(data_iterator)
    return self._manager.save(step, args=ocp.args.Composite(**items))

  def restore(
      self,
      step: int,
      abstract_state: Any,
      data_iterator: grain.DatasetIterator | None = None,
  ) -> tuple[Any, dict]:
    """The state saved at ``step``, placed like ``abstract_state`` (a tree of ShapeDtypeStructs with
    shardings); ``data_iterator``, if given, is moved to the saved position in place.
    """
    items = {
        "state": ocp.args.StandardRestore(abstract_state),
        "meta": ocp.args.JsonRestore(),
    }
    if data_iterator is not None and os.path.isdir(
        os.path.join(self.directory, str(step), "data")
    ):
      items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
    _drop_late_tensorstore_callbacks()
    restored = self._manager.restore(step, args=ocp.args.Composite(**items))
    return restored["state"], dict(restored["meta"])

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()


def _checkpoint_dir(directory: str) -> str:
  """A work directory's ``checkpoints/``, or ``directory`` itself when it is one."""
  inner = os.path.join(directory, "checkpoints")
  return inner if os.path.isdir(inner) else directory


def saved_steps(directory: str) -> list[int]:
  """The complete checkpoints' steps in a work directory (or its ``checkpoints/``), oldest first."""
  directory = _checkpoint_dir(directory)
  return (
      sorted(int(name) for name in os.listdir(directory) if name.isdigit())
      if os.path.isdir(directory)
      else []
  )


def has_checkpoints(workdir: str) -> bool:
  return bool(saved_steps(workdir))


def step_path(directory: str, step: int) -> str:
  return os.path.join(os.path.abspath(_checkpoint_dir(directory)), str(step))


def read_params(
    directory: str, step: int | None = None
) -> tuple[dict, dict, dict]:
  """``(params, batch_stats, meta)`` of the latest checkpoint in ``directory`` (a work directory or its
  ``checkpoints/``), or of ``step``, as numpy arrays, whatever the mesh it was saved from: for evaluation,
  prediction, figures and fine-tuning, which need the weights but not the optimizer.
  """
  steps = saved_steps(directory)
  directory = _checkpoint_dir(directory)
  if not steps:
    raise UserError(f"no checkpoint in {directory}")
  if step is not None and step not in steps:
    raise UserError(
        f"no checkpoint of step {step} in {directory} (there: step {', '.join(map(str, steps))})"
    )
  if step is not None:
    steps = [s for s in steps if s <= step]
  path = os.path.join(os.path.abspath(directory), str(steps[-1]))
  try:
    tree = _stored_state_tree(path)
    wanted = {
        key: tree[key] for key in ("params", "batch_stats") if key in tree
    }
    restore_args = jax.tree.map(
        lambda _: ocp.RestoreArgs(restore_type=np.ndarray), wanted
    )
    with ocp.PyTreeCheckpointer() as checkpointer:
      state = checkpointer.restore(
          os.path.join(path, "state"),
          args=ocp.args.PyTreeRestore(
              item=wanted, restore_args=restore_args, partial_restore=True
          ),
      )
    with open(os.path.join(path, "meta", "metadata")) as f:
      meta = json.load(f)
  # a damaged checkpoint fails in orbax, tensorstore or json, each its own way
  except Exception as error:
    older = (
        f"older checkpoints there: step {', '.join(map(str, steps[:-1]))} (move {path} aside to use them)"
        if len(steps) > 1
        else "no older checkpoint there"
    )
    raise UserError(
        f"checkpoint {path} cannot be read ({first_line(error)}); {older}"
    ) from None
  return state["params"], state.get("batch_stats", {}), meta


def _stored_state_tree(path: str) -> dict:
  """The metadata tree (shapes, dtypes) of the train state saved in checkpoint directory ``path``. Asks the
  handler itself: orbax's Checkpointer.metadata turns a damaged checkpoint's error into None.
  """
  _drop_late_tensorstore_callbacks()
  handler = ocp.PyTreeCheckpointHandler()
  try:
    return handler.metadata(pathlib.Path(path, "state")).tree
  finally:
    handler.close()


def _drop_late_tensorstore_callbacks() -> None:
  """After a failed read, tensorstore still completes the read's other futures, and each one's callback
  finds orbax's event loop closed, or orbax's reading coroutines are dropped with the error still in
  them: Python would print a traceback per array. Only those are dropped (set before reading: some
  arrive before the read's error does); the read's own error is reported by its caller.
  """
  previous = sys.unraisablehook
  if getattr(previous, "drops_late_tensorstore_callbacks", False):
    return

  def from_orbax_read(unraisable) -> bool:
    # a coroutine's code object
    code = getattr(unraisable.object, "cr_code", None)
    return (
        code is not None
        and "orbax" in code.co_filename
        and code.co_name.startswith("_read")
    )

  def hook(unraisable):
    closed_loop = (
        isinstance(unraisable.exc_value, RuntimeError)
        and str(unraisable.exc_value) == "Event loop is closed"
    )
    if not (closed_loop or from_orbax_read(unraisable)):
      previous(unraisable)

  hook.drops_late_tensorstore_callbacks = True
  sys.unraisablehook = hook


def tree_shapes(tree: Any) -> dict[tuple[str, ...], tuple[int, ...]]:
  """``{path: shape}`` of a tree's arrays, the path as plain names: comparable between a live state (whose
  optimizer states are named tuples) and orbax's metadata of it (where they became dicts).
  """

  def name(key) -> str:
    return str(
        getattr(key, "key", getattr(key, "idx", getattr(key, "name", key)))
    )

  return {
      tuple(map(name, path)): tuple(leaf.shape)
      for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
  }


def first_line(error: BaseException) -> str:
  """Why a read failed, in a few words: the first line of the innermost cause (orbax wraps tensorstore's
  error, e.g. a failed decompression, in one that names only the array index), cut before the long spec
  that tensorstore appends."""
  while error.__cause__ is not None:
    error = error.__cause__
  lines = str(error).strip().splitlines()
  line = (
      lines[0]
      .split(" [tensorstore_spec")[0]
      .split(" See full TensorStore details")[0]
      if lines
      else type(error).__name__
  )
  return line if len(line) <= 300 else line[:297] + "..."


def abstract_like(tree: Any) -> Any:
  """ShapeDtypeStructs carrying each array's sharding: the target a restore fills in."""
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
      tree,
  )
