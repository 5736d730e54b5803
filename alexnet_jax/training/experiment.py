"""A run's setup: mesh, data, statistics, model and optimizer from a config, and the checkpoint restored into it."""

from __future__ import annotations

import dataclasses
import os
import sys
from typing import Any, Callable

import jax
import numpy as np
import optax
from flax import nnx

from alexnet_jax import config_files, sharding
from alexnet_jax.data import dataset, input_pipeline, preprocess, sources
from alexnet_jax.errors import ConfigError, TrainingError, listed
from alexnet_jax.model import AlexNet, AlexNetSpec
from alexnet_jax.training import optim, steps
from alexnet_jax.workdir import checkpointing
from alexnet_jax.training.state import State, initial_state
from alexnet_jax.weights import fit, pretrained


@dataclasses.dataclass
class Experiment:
  """Everything a run is built from, in the order the data flows."""

  config: Any
  mesh: Any
  splits: dataset.Splits
  # the training-set statistics on the devices (mean image, RGB eigenvectors)
  consts: dict
  spec: AlexNetSpec
  state: State
  tx: optax.GradientTransformation
  plateau: optim.PlateauSchedule | None
  steps_per_epoch: int
  num_steps: int
  data_shard: tuple[int, int]

  def eval_batches(
      self, views: int | None = None, prefetch: int | None = None
  ) -> input_pipeline.DeviceBatches:
    """The eval split as placed global batches of ``views`` crops per image (default: the config's),
    ``prefetch`` placed ahead (default: the config's)."""
    index, count = self.data_shard
    views = self.config.data.eval_views if views is None else views
    host = input_pipeline.eval_batches(
        self.splits,
        self.spec.image_size,
        self.config.batch_size,
        views,
        index,
        count,
    )
    size = (
        input_pipeline.prefetch(self.config.data)
        if prefetch is None
        else prefetch
    )
    return input_pipeline.device_batches(
        host, self.mesh, self.config.batch_size, size
    )

  def evaluate(self, eval_step: Callable) -> dict[str, float]:
    batches = self.eval_batches()
    try:
      return steps.evaluate(
          eval_step,
          self.state["params"],
          batches,
          self.consts,
          self.state.get("batch_stats"),
      )
    finally:
      batches.close()


def steps_from(every: int, steps_per_epoch: int) -> int:
  """A period in steps; -1 means once per epoch."""
  return steps_per_epoch if every == -1 else every


def build(
    config, workdir: str | None = None, resuming: bool = False
) -> Experiment:
  """``resuming``: the work directory's checkpoints will be restored, so its cached dataset statistics
  must describe this config's data (they are recomputed otherwise)."""
  # before any data is read or anything compiled
  config_files.validate(config, jax.device_count())

  # Mesh
  mesh = sharding.make_mesh(config.mesh.data, config.mesh.model)
  data_shard = sharding.process_data_shard(mesh)

  # Input pipeline
  spec = AlexNetSpec.from_config(config.model)
  splits = sources.load(config.data, spec.image_size)
  if splits.num_classes != spec.num_classes:
    empty = splits.empty_classes
    why = (
        (
            f" ({len(empty)} of its class directories hold no training image: {listed(empty)}; remove them or "
            f"add images)"
        )
        if empty
        else ""
    )
    raise TrainingError(
        f"the data has {splits.num_classes} classes but model.num_classes={spec.num_classes}{why}"
    )
  cache = (
      os.path.join(workdir, "data_stats.npz")
      if workdir and config.data.source != "digits"
      else None
  )
  statistics = input_pipeline.training_stats(
      splits,
      cache,
      input_pipeline.data_identity(splits, config.data),
      keep=resuming,
  )
  consts = preprocess.constants(
      statistics, mesh, config.data.mean_rgb, config.data.std_rgb
  )
  steps_per_epoch = len(splits.train) // config.batch_size
  if steps_per_epoch < 1:
    raise TrainingError(
        f"batch_size={config.batch_size} exceeds the {len(splits.train)} training images"
    )
  num_steps = (
      config.num_train_steps
      if config.num_train_steps > 0
      else int(config.num_epochs * steps_per_epoch)
  )

  # Model & optimizer
  model = AlexNet(spec, rngs=nnx.Rngs(params=config.seed), mesh=mesh)
  if config.init_from:
    _initialise_from(model, config.init_from)
  tx, plateau = optim.make_optimizer(
      config.optimizer, steps_per_epoch, num_steps
  )
  state = initial_state(model, tx)
  return Experiment(
      config,
      mesh,
      splits,
      consts,
      spec,
      state,
      tx,
      plateau,
      steps_per_epoch,
      num_steps,
      data_shard,
  )


def _initialise_from(model: AlexNet, path: str) -> None:
  """Fine-tuning: every layer from ``path`` but a classifier head of another class count (used only
  when the work directory has no checkpoint yet: a resumed run restores its own state over this).
  """
  loaded, batch_stats, source, classes = pretrained.read_weights(path)
  params, taken, fresh = pretrained.merge_for_finetuning(
      jax.tree.map(np.asarray, model.params()),
      loaded,
      model.spec.num_classes,
      classes,
  )
  stats = batch_stats if batch_stats and model.spec.batch_norm else None
  model.load_params(
      fit.on_towers(model.mesh, params),
      stats and fit.on_towers(model.mesh, stats),
  )
  if jax.process_index() == 0:
    print(
        f"init_from {path} ({source}): loaded {', '.join(taken)}"
        + (f"; new {', '.join(fresh)}" if fresh else "")
    )


def restore_latest(
    exp: Experiment, ckpt: checkpointing.Checkpointer, train_iter=None
) -> int:
  """Loads the newest readable checkpoint into ``exp`` (and moves ``train_iter``, if given); returns its step or 0.

  One saved from another network or batch size stops the run: a changed config, not damage. One that
  cannot be read (files lost) is renamed ``<step>.unreadable``, with a warning, once an older one restores.
  """
  unreadable = []  # (step, reason), newest first
  for step in reversed(ckpt.steps()):
    try:
      stored = ckpt.stored_shapes(step)
    # damage fails in orbax, tensorstore or grain, each its own way
    except Exception as error:
      unreadable.append(_unreadable(ckpt, step, error))
      continue
    # before restoring: orbax's shape error is a long traceback
    _check_same_state(exp, stored, ckpt.path(step))
    try:
      state, meta = ckpt.restore(
          step, checkpointing.abstract_like(exp.state), train_iter
      )
    except Exception as error:
      unreadable.append(_unreadable(ckpt, step, error))
      continue
    # absent from older checkpoints and imported weights: accepted
    saved_batch = meta.get("batch_size")
    if saved_batch is not None and saved_batch != exp.config.batch_size:
      raise ConfigError(
          f"checkpoint {ckpt.path(step)} was trained with batch_size={saved_batch}, this config has "
          f"batch_size={exp.config.batch_size}: resuming would move the data position and the "
          f"schedule; use --config.batch_size={saved_batch} or another --workdir"
      )
    check_same_classes(exp.spec, meta, ckpt.path(step))
    for bad_step, reason in unreadable:
      moved = ckpt.move_aside(bad_step)
      print(
          f"alexnet_jax: warning: checkpoint {ckpt.path(bad_step)} cannot be read ({reason}); moved it to "
          f"{moved}, resuming from step {step}",
          file=sys.stderr,
          flush=True,
      )
    exp.state = state
    if exp.plateau is not None and meta.get("plateau"):
      exp.plateau.load_state_dict(meta["plateau"])
    return step
  if unreadable:
    # Not a fresh start: that would rewrite metrics.jsonl from step 0, and when every checkpoint fails the
    # cause is more likely the storage or the orbax version than damage to each of them.
    reasons = "; ".join(f"step {step}: {reason}" for step, reason in unreadable)
    raise TrainingError(
        f"no checkpoint in {ckpt.directory} can be read ({reasons}); nothing was moved or deleted. "
        f"Fix or move them aside to start afresh"
    )
  return 0


def _unreadable(
    ckpt: checkpointing.Checkpointer, step: int, error: Exception
) -> tuple[int, str]:
  """``(step, reason)``. Several processes would each rename the same directory: they stop instead."""
  reason = checkpointing.first_line(error)
  if jax.process_count() > 1:
    raise TrainingError(
        f"checkpoint {ckpt.path(step)} cannot be read ({reason}); rename it to {step}.unreadable "
        f"to resume from the one before"
    )
  return step, reason


def _check_same_state(exp: Experiment, stored: dict, path: str) -> None:
  """Stops in one line when the checkpoint at ``path`` holds arrays of other shapes than this config's state."""
  wanted = checkpointing.tree_shapes(exp.state)
  differ = [
      p
      for p in sorted(set(wanted) | set(stored))
      if wanted.get(p) != stored.get(p)
  ]
  if not differ:
    return
  network = [p for p in differ if p[0] == "params"]
  what, hint = (
      (
          "another network",
          "model.towers, num_classes, conv_features, fc_features, extra_conv, image_size",
      )
      if network
      else (
          "another optimizer or batch-norm state",
          "optimizer.schedule, model.batch_norm",
      )
  )
  details = ", ".join(
      f"{'/'.join(p)} {stored.get(p, 'absent')} there, {wanted.get(p, 'absent')} here"
      for p in (network or differ)[:2]
  )
  raise ConfigError(
      f"checkpoint {path} holds {what} than this config's ({details}): check {hint}, "
      f"or use another --workdir"
  )


def check_same_classes(spec: AlexNetSpec, meta: dict, path: str) -> None:
  """Stops in one line when the checkpoint at ``path`` was trained for another class count than the config's,
  which its shapes do not show when fc8's towers are padded. Checkpoints without the record have none.
  """
  stored = meta.get("num_classes")
  if stored is not None and stored != spec.num_classes:
    raise ConfigError(
        f"checkpoint {path} was trained for {stored} classes, this config has model.num_classes="
        f"{spec.num_classes}: use --config.model.num_classes={stored} or another --workdir"
    )


def load_checkpoint_weights(
    exp: Experiment, workdir: str, step: int | None, network_of: str
) -> int:
  """A checkpoint's weights (the latest, or ``step``) placed into ``exp``'s state, as evaluation reads
  them (any mesh it was saved from); refuses another network than ``network_of`` describes, or another
  class count. Returns the checkpoint's step."""
  params, batch_stats, meta = checkpointing.read_params(workdir, step)
  different = fit.mismatch(exp.spec, params)
  if different:
    raise TrainingError(
        f"the checkpoint in {workdir} holds another network than {network_of} ({different})"
    )
  check_same_classes(exp.spec, meta, workdir)
  exp.state["params"] = fit.on_towers(exp.mesh, params)
  if exp.spec.batch_norm:
    exp.state["batch_stats"] = fit.on_towers(exp.mesh, batch_stats)
  return meta.get("step", 0)
