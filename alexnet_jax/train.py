"""Training and evaluation: the paper's loop, on any mesh, resumable from any checkpoint.

Sections: Update step (the jitted train/eval steps) -> Setup (mesh, input pipeline, model & optimizer,
checkpoint) -> Train loop.
"""

from __future__ import annotations

import dataclasses
import errno
import functools
import json
import math
import os
import shutil
import signal
import sys
import time
from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from alexnet_jax import (checkpointing, compiler, input_pipeline, metrics, optim, preprocess, run_record, sharding,
                         sources, validation)
from alexnet_jax import model as model_lib
from alexnet_jax.errors import ConfigError, TrainingError, UserError, listed
from alexnet_jax.model import AlexNet, AlexNetSpec

State = dict  # {'step': int32 scalar, 'params': {...}, 'opt_state': optax state[, 'batch_stats': {...}]}


# ----------------------------------------------------------------------------- Update step

def make_train_step(spec: AlexNetSpec, mesh, tx: optax.GradientTransformation, pixel_scale: float) -> Callable:
  """``(state, batch, dropout_key, consts) -> (state, metrics)``, jitted; donates ``state``."""

  def train_step(state: State, batch: dict, dropout_key: jax.Array, consts: dict):
    # Dropout masks from (seed, step): a resumed run draws the same masks as an uninterrupted one.
    key = jax.random.fold_in(dropout_key, state["step"])
    images = preprocess.network_input(batch["image"], batch["offset"], consts, pixel_scale, batch["alpha"])
    valid = batch["valid"].astype(jnp.float32)  # unreadable images count for nothing
    count = jnp.maximum(valid.sum(), 1.0)

    def loss_fn(params):
      logits, batch_stats = model_lib.train_apply(spec, mesh, params, state.get("batch_stats", {}), images, key)
      return jnp.sum(metrics.cross_entropy(logits, batch["label"]) * valid) / count, (logits, batch_stats)

    (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    step_metrics = {
        "train_loss": loss,
        "train_top1_error": jnp.sum(metrics.top_k_wrong(logits, batch["label"], 1) * valid) / count,
        "learning_rate": optim.current_learning_rate(opt_state),
        "train_skipped_images": jnp.sum(1.0 - valid),
    }
    new_state = {"step": state["step"] + 1, "params": params, "opt_state": opt_state}
    if "batch_stats" in state:
      new_state["batch_stats"] = batch_stats
    return new_state, step_metrics

  return compiler.jit(train_step, donate_argnums=0)


@jax.jit
def parameter_health(params) -> dict:
  """The weights' norm and whether all are finite: read at log time and before every save, not every step
  (two passes over 61M weights cost ~6% of a CPU step). A non-finite weight makes the next loss non-finite,
  which every step's metrics do carry."""
  return {"param_norm": optax.tree.norm(params),
          # Not isfinite(param_norm): the norm of huge but finite weights overflows float32.
          "params_finite": jnp.all(jnp.array([jnp.all(jnp.isfinite(p)) for p in jax.tree.leaves(params)]))}


def make_eval_step(spec: AlexNetSpec, mesh, pixel_scale: float) -> Callable:
  """``(params, batch, consts, batch_stats=None) -> sums`` of loss and top-1/top-5 mistakes over the batch's real images.

  Each image comes as ``views`` crops (1: centre; 10: the paper's test); their softmax outputs are
  averaged before the error is counted (§4.1).
  """

  def eval_step(params, batch: dict, consts: dict, batch_stats: dict | None = None):
    batch_size, views = batch["offset"].shape[:2]
    images = preprocess.views_input(batch["image"], batch["offset"], consts, pixel_scale)
    logits = model_lib.apply(spec, mesh, params, images, batch_stats=batch_stats)
    # log of the views' mean softmax, computed stably; for one view it is just log_softmax(logits).
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32)).reshape(batch_size, views, -1)
    scores = jax.nn.logsumexp(log_probs, axis=1) - jnp.log(views)
    mask = batch["mask"].astype(jnp.float32)
    return {
        "loss": jnp.sum(metrics.cross_entropy(scores, batch["label"]) * mask),
        "top1": jnp.sum(metrics.top_k_wrong(scores, batch["label"], 1) * mask),
        "top5": jnp.sum(metrics.top_k_wrong(scores, batch["label"], 5) * mask),
        "count": jnp.sum(mask),
        "skipped": jnp.sum(1.0 - mask - batch["padding"].astype(jnp.float32)),
    }

  return compiler.jit(eval_step)


def evaluate(eval_step: Callable, params, batches: Iterator[dict], mesh, global_batch: int,
             consts: dict, batch_stats: dict | None = None) -> dict[str, float]:
  """Loss and top-1/top-5 error over every eval image (sums stay on the device until the end)."""
  totals = None
  for local in batches:
    sums = eval_step(params, sharding.global_batch(mesh, local, global_batch), consts, batch_stats)
    totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
  totals = jax.device_get(totals)
  count = max(float(totals["count"]), 1.0)
  return {"eval_loss": totals["loss"] / count, "eval_top1_error": totals["top1"] / count,
          "eval_top5_error": totals["top5"] / count, "eval_images": float(totals["count"]),
          "eval_skipped_images": float(totals["skipped"])}


def check_eval_finite(result: dict[str, float], step: int, what: str, then: str = "") -> None:
  """A network whose scores are not finite has no error rate: stop rather than report one."""
  if not math.isfinite(result["eval_loss"]):
    raise TrainingError(f"{what} at step {step} gives non-finite scores on the eval split (loss "
                        f"{result['eval_loss']}): the network diverged{then}")


def describe_eval(step: int, result: dict[str, float]) -> str:
  return (f"step {step}: eval top-1 error {result['eval_top1_error']:.2%}, top-5 {result['eval_top5_error']:.2%}, "
          f"loss {result['eval_loss']:.4f} ({int(result['eval_images'])} images)")


# ----------------------------------------------------------------------------- Setup

@dataclasses.dataclass
class Experiment:
  """Everything a run is built from, in the order the data flows."""
  config: Any
  mesh: Any
  splits: sources.Splits
  consts: dict  # the training-set statistics on the devices (mean image, RGB eigenvectors)
  spec: AlexNetSpec
  state: State
  tx: optax.GradientTransformation
  plateau: optim.PlateauSchedule | None
  steps_per_epoch: int
  num_steps: int
  data_shard: tuple[int, int]

  def eval_batches(self) -> Iterator[dict]:
    index, count = self.data_shard
    return input_pipeline.eval_batches(self.splits, self.spec.image_size, self.config.batch_size,
                                       self.config.data.eval_views, index, count)

  def evaluate(self, eval_step: Callable) -> dict[str, float]:
    return evaluate(eval_step, self.state["params"], self.eval_batches(), self.mesh, self.config.batch_size,
                    self.consts, self.state.get("batch_stats"))


def steps_from(every: int, steps_per_epoch: int) -> int:
  """A period in steps; -1 means once per epoch."""
  return steps_per_epoch if every == -1 else every


def build(config, workdir: str | None = None, resuming: bool = False) -> Experiment:
  """``resuming``: the work directory's checkpoints will be restored, so its cached dataset statistics
  must describe this config's data (they are recomputed otherwise)."""
  validation.validate(config, jax.device_count())  # before any data is read or anything compiled

  # Mesh
  mesh = sharding.make_mesh(config.mesh.data, config.mesh.model)
  data_shard = sharding.process_data_shard(mesh)

  # Input pipeline
  spec = AlexNetSpec.from_config(config.model)
  splits = sources.load(config.data, spec.image_size)
  if splits.num_classes != spec.num_classes:
    empty = splits.empty_classes
    why = (f" ({len(empty)} of its class directories hold no training image: {listed(empty)}; remove them or "
           f"add images)") if empty else ""
    raise TrainingError(f"the data has {splits.num_classes} classes but model.num_classes={spec.num_classes}{why}")
  cache = os.path.join(workdir, "data_stats.npz") if workdir and config.data.source != "digits" else None
  statistics = input_pipeline.training_stats(splits, cache, input_pipeline.data_identity(splits, config.data),
                                             keep=resuming)
  consts = preprocess.constants(statistics, mesh, config.data.mean_rgb, config.data.std_rgb)
  steps_per_epoch = len(splits.train) // config.batch_size
  if steps_per_epoch < 1:
    raise TrainingError(f"batch_size={config.batch_size} exceeds the {len(splits.train)} training images")
  num_steps = config.num_train_steps if config.num_train_steps > 0 else int(config.num_epochs * steps_per_epoch)

  # Model & optimizer
  model = AlexNet(spec, rngs=nnx.Rngs(params=config.seed), mesh=mesh)
  if config.init_from:
    _initialise_from(model, config.init_from)
  tx, plateau = optim.make_optimizer(config.optimizer, steps_per_epoch, num_steps)
  state = initial_state(model, tx)
  return Experiment(config, mesh, splits, consts, spec, state, tx, plateau, steps_per_epoch, num_steps, data_shard)


def _initialise_from(model: AlexNet, path: str) -> None:
  """Fine-tuning: every layer from ``path`` but a classifier head of another class count (used only
  when the work directory has no checkpoint yet: a resumed run restores its own state over this)."""
  from alexnet_jax import pretrained

  loaded, batch_stats, source, classes = pretrained.read_weights(path)
  params, taken, fresh = pretrained.merge_for_finetuning(jax.tree.map(np.asarray, model.params()), loaded,
                                                         model.spec.num_classes, classes)
  stats = batch_stats if batch_stats and model.spec.batch_norm else None
  model.load_params(jax.device_put(params, sharding.tower_sharding(model.mesh)),
                    stats and jax.device_put(stats, sharding.tower_sharding(model.mesh)))
  if jax.process_index() == 0:
    print(f"init_from {path} ({source}): loaded {', '.join(taken)}" + (f"; new {', '.join(fresh)}" if fresh else ""))


def initial_state(model: AlexNet, tx: optax.GradientTransformation) -> State:
  """Step 0, the model's parameters, the optimizer's state (and batch-norm statistics), on the model's mesh."""
  params = model.params()
  # The momentum lives where its parameter lives. Left to jit it comes out replicated, the first step
  # returns it sharded like the gradients, and the step compiles again (a compiled step refuses it).
  opt_state = optax.tree_utils.tree_map_params(tx, lambda s, p: jax.device_put(s, p.sharding),
                                               jax.jit(tx.init)(params), params)
  state = {"step": jnp.zeros((), jnp.int32), "params": params, "opt_state": opt_state}
  if model.spec.batch_norm:
    state["batch_stats"] = model.batch_stats()
  return sharding.on_mesh(model.mesh, state)


def restore_latest(exp: Experiment, ckpt: checkpointing.Checkpointer, train_iter=None) -> int:
  """Loads the newest readable checkpoint into ``exp`` (and moves ``train_iter``, if given); returns its step or 0.

  One saved from another network or batch size stops the run: a changed config, not damage. One that
  cannot be read (files lost) is renamed ``<step>.unreadable``, with a warning, once an older one restores.
  """
  unreadable = []  # (step, reason), newest first
  for step in reversed(ckpt.steps()):
    try:
      stored = ckpt.stored_shapes(step)
    except Exception as error:  # damage fails in orbax, tensorstore or grain, each its own way
      unreadable.append(_unreadable(ckpt, step, error))
      continue
    _check_same_state(exp, stored, ckpt.path(step))  # before restoring: orbax's shape error is a long traceback
    try:
      state, meta = ckpt.restore(step, checkpointing.abstract_like(exp.state), train_iter)
    except Exception as error:
      unreadable.append(_unreadable(ckpt, step, error))
      continue
    saved_batch = meta.get("batch_size")  # absent from older checkpoints and imported weights: accepted
    if saved_batch is not None and saved_batch != exp.config.batch_size:
      raise ConfigError(f"checkpoint {ckpt.path(step)} was trained with batch_size={saved_batch}, this config has "
                        f"batch_size={exp.config.batch_size}: resuming would move the data position and the "
                        f"schedule; use --config.batch_size={saved_batch} or another --workdir")
    _check_same_classes(exp.spec, meta, ckpt.path(step))
    for bad_step, reason in unreadable:
      moved = ckpt.move_aside(bad_step)
      print(f"alexnet_jax: warning: checkpoint {ckpt.path(bad_step)} cannot be read ({reason}); moved it to "
            f"{moved}, resuming from step {step}", file=sys.stderr, flush=True)
    exp.state = state
    if exp.plateau is not None and meta.get("plateau"):
      exp.plateau.load_state_dict(meta["plateau"])
    return step
  if unreadable:
    # Not a fresh start: that would rewrite metrics.jsonl from step 0, and when every checkpoint fails the
    # cause is more likely the storage or the orbax version than damage to each of them.
    reasons = "; ".join(f"step {step}: {reason}" for step, reason in unreadable)
    raise TrainingError(f"no checkpoint in {ckpt.directory} can be read ({reasons}); nothing was moved or deleted. "
                        f"Fix or move them aside to start afresh")
  return 0


def _unreadable(ckpt: checkpointing.Checkpointer, step: int, error: Exception) -> tuple[int, str]:
  """``(step, reason)``. Several processes would each rename the same directory: they stop instead."""
  reason = checkpointing.first_line(error)
  if jax.process_count() > 1:
    raise TrainingError(f"checkpoint {ckpt.path(step)} cannot be read ({reason}); rename it to {step}.unreadable "
                        f"to resume from the one before")
  return step, reason


def _check_same_state(exp: Experiment, stored: dict, path: str) -> None:
  """Stops in one line when the checkpoint at ``path`` holds arrays of other shapes than this config's state."""
  wanted = checkpointing.tree_shapes(exp.state)
  differ = [p for p in sorted(set(wanted) | set(stored)) if wanted.get(p) != stored.get(p)]
  if not differ:
    return
  network = [p for p in differ if p[0] == "params"]
  what, hint = (("another network", "model.towers, num_classes, conv_features, fc_features, image_size") if network
                else ("another optimizer or batch-norm state", "optimizer.schedule, model.batch_norm"))
  details = ", ".join(f"{'/'.join(p)} {stored.get(p, 'absent')} there, {wanted.get(p, 'absent')} here"
                      for p in (network or differ)[:2])
  raise ConfigError(f"checkpoint {path} holds {what} than this config's ({details}): check {hint}, "
                    f"or use another --workdir")


def _check_same_classes(spec: AlexNetSpec, meta: dict, path: str) -> None:
  """Stops in one line when the checkpoint at ``path`` was trained for another class count than the config's,
  which its shapes do not show when fc8's towers are padded. Checkpoints without the record have none."""
  stored = meta.get("num_classes")
  if stored is not None and stored != spec.num_classes:
    raise ConfigError(f"checkpoint {path} was trained for {stored} classes, this config has model.num_classes="
                      f"{spec.num_classes}: use --config.model.num_classes={stored} or another --workdir")


# ----------------------------------------------------------------------------- Train loop

class _Preemption:
  """SIGTERM, or a first Ctrl-C (SIGINT) -> save at a step boundary, then exit cleanly; a second Ctrl-C
  aborts at once (``cli.run`` reports it in one line).

  One process: a signal handler sets a flag the loop checks. Several processes: JAX's preemption
  service (started by ``jax.distributed.initialize``) picks one step at which every process saves,
  since a checkpoint is written by all of them together.
  """

  def __init__(self):
    self.signal_name = None
    self._multiprocess = jax.process_count() > 1
    self._previous = {}
    if not self._multiprocess:
      for signum in (signal.SIGTERM, signal.SIGINT):
        self._previous[signum] = signal.signal(signum, self._handle)

  def _handle(self, signum, frame):
    if signum == signal.SIGINT and self.signal_name is not None:
      raise KeyboardInterrupt  # the second Ctrl-C
    self.signal_name = signal.Signals(signum).name
    if signum == signal.SIGINT:
      print("\nalexnet_jax: Ctrl-C: saving a checkpoint at the end of this step (Ctrl-C again to abort)",
            file=sys.stderr, flush=True)

  def requested(self, step: int) -> bool:
    if self._multiprocess:
      from jax.experimental import multihost_utils
      if multihost_utils.reached_preemption_sync_point(step):
        self.signal_name = "SIGTERM"
        return True
      return False
    return self.signal_name is not None

  def restore(self):
    for signum, previous in self._previous.items():
      signal.signal(signum, previous)


def _kept(latest: int | None) -> str:
  """What a run that stops without saving leaves behind."""
  return f"the latest checkpoint, step {latest}, is kept" if latest is not None else "no checkpoint yet"


def _check_finite(host_metrics: list[dict], first_step: int, params_finite: bool, latest: int | None) -> None:
  """Stops the run on the first non-finite loss, or non-finite weights after the last step, before
  anything is saved."""
  kept = _kept(latest)
  for i, m in enumerate(host_metrics):
    if not math.isfinite(m["train_loss"]):
      raise TrainingError(f"training diverged at step {first_step + i} (loss {m['train_loss']}); stopped without "
                          f"saving, {kept}")
  if not params_finite:
    raise TrainingError(f"training diverged by step {first_step + len(host_metrics) - 1} (non-finite parameters); "
                        f"stopped without saving, {kept}")


class DeadNetworkWatch:
  """Stops a network that cannot learn: one layer whose outputs are zero for every image of a fixed probe
  batch (the first eval batch, inference mode). Nothing below such a layer gets a gradient, and what
  follows it no longer depends on the image: a net with the paper's N(0, 0.01) on unsuited data collapses
  so and would train at chance to the end. Dead at every probe for ``limit`` steps stops the run (0: never).
  """

  def __init__(self, exp: Experiment, limit: int):
    self.exp, self.limit = exp, limit
    self.first_dead = None  # the first probe of the current dead streak
    self.dead = []
    self._probe = None
    self._seen = 0

  def observe(self, step: int) -> bool:
    """Probes the network at ``step`` (once per step); True when it has been dead for ``limit`` steps."""
    if not self.limit or step <= self._seen:
      return self._stop(step)
    self._seen = step
    self.dead = self._dead_layers()
    self.first_dead = (self.first_dead or step) if self.dead else None
    return self._stop(step)

  def _stop(self, step: int) -> bool:
    return bool(self.limit) and self.first_dead is not None and step - self.first_dead >= self.limit

  def _dead_layers(self) -> list[str]:
    exp = self.exp
    if self._probe is None:
      index, count = exp.data_shard
      local = next(iter(input_pipeline.eval_batches(exp.splits, exp.spec.image_size, exp.config.batch_size, 1,
                                                    index, count)))
      batch = sharding.global_batch(exp.mesh, local, exp.config.batch_size)
      images = preprocess.views_input(batch["image"], batch["offset"], exp.consts, exp.config.data.pixel_scale)
      self._probe = (images, batch["mask"])
    zero = jax.device_get(_all_zero_layers(exp.spec, exp.mesh, exp.state["params"], exp.state.get("batch_stats"),
                                           *self._probe))
    return [name for name in model_lib.ACTIVATION_NAMES[:-1] if zero[name]]

  def error(self, step: int, loss: float, latest: int | None) -> TrainingError:
    exp = self.exp
    chance = math.log(exp.spec.num_classes)
    kept = _kept(latest)
    return TrainingError(
        f"the network stopped learning: {self.dead[0]}'s units are zero for every image from step {self.first_dead} "
        f"to {step}, so no gradient reaches {self.dead[0]} or below (train loss {loss:.4f}; chance is "
        f"ln {exp.spec.num_classes} = {chance:.4f}); stopped, {kept}. Try model.init='he', a smaller "
        f"optimizer.learning_rate or another data.pixel_scale; --config.dead_network_steps=0 trains on regardless")


@functools.partial(jax.jit, static_argnames=("spec", "mesh"))
def _all_zero_layers(spec: AlexNetSpec, mesh, params, batch_stats, images, mask) -> dict:
  """Per layer: are its outputs exactly zero for every real image of the batch (inference mode)?"""
  _, acts = model_lib.apply(spec, mesh, params, images, capture=True, batch_stats=batch_stats)
  return {name: jnp.all(jnp.where(mask.reshape((-1,) + (1,) * (a.ndim - 1)), a, 0) == 0) for name, a in acts.items()}


def _progress(total: int, initial: int, enabled: bool):
  from tqdm import tqdm
  interactive = sys.stderr.isatty()
  return tqdm(total=total, initial=initial, disable=not enabled, unit="step", dynamic_ncols=True,
              mininterval=0.5 if interactive else 30.0)


def _open_workdir(workdir: str) -> None:
  if not workdir or not workdir.strip():
    raise UserError("--workdir is empty: give the directory for this run's checkpoints and metrics")
  try:
    os.makedirs(os.path.join(workdir, "checkpoints"), exist_ok=True)
    probe = os.path.join(workdir, f".write-test-{os.getpid()}")
    with open(probe, "w"):
      pass
    os.remove(probe)
  except OSError as error:  # a file in the way, no permission, read-only: before anything else says it
    raise UserError(f"cannot write to --workdir={workdir}: {error.strerror or error}") from None


def _resolved(exp: Experiment) -> dict:
  """The config as this start runs it: 'auto' and -1 values replaced, and the data it found."""
  resolved = json.loads(exp.config.to_json_best_effort())
  resolved["model"]["dtype"] = exp.spec.dtype
  resolved["mesh"] = dict(exp.mesh.shape)
  resolved["num_train_steps"] = exp.num_steps
  for key in ("log_every_steps", "eval_every_steps", "checkpoint_every_steps"):
    resolved[key] = steps_from(exp.config[key], exp.steps_per_epoch)
  resolved["data"]["train_images"], resolved["data"]["eval_images"] = len(exp.splits.train), len(exp.splits.eval)
  resolved["data"]["stored_size"] = exp.splits.stored_size
  resolved["steps_per_epoch"] = exp.steps_per_epoch
  return resolved


def _apply_changed_learning_rate(exp: Experiment, changes: list[dict]) -> None:
  """A resumed run's new optimizer.learning_rate takes effect now. Schedules that are functions of the step
  read it from the config already; the constant and plateau rates live in the restored state (the plateau
  rate keeps the reductions made so far)."""
  if not any(c["key"] == "optimizer.learning_rate" for c in changes):
    return
  optimizer = exp.config.optimizer
  if optimizer.schedule == "constant":
    rate = optimizer.learning_rate
  elif exp.plateau is not None:
    rate = exp.plateau.learning_rate = optimizer.learning_rate * optimizer.factor ** exp.plateau.reductions
  else:
    return
  exp.state["opt_state"] = optim.with_learning_rate(exp.state["opt_state"], rate)


def _free_bytes(path: str) -> int:
  return shutil.disk_usage(path).free


def _checkpoint_bytes(state) -> int:
  return sum(leaf.nbytes for leaf in jax.tree.leaves(state))


def train_and_evaluate(config, workdir: str) -> dict[str, float]:
  """Trains with periodic evaluation and checkpoints; resumes from ``workdir/checkpoints`` if present.

  Returns the last evaluation's metrics, and ``finished``: False when a signal stopped the run early.
  """
  validation.validate(config, jax.device_count())
  is_main = jax.process_index() == 0
  _open_workdir(workdir)
  lock = run_record.Lock(workdir)
  if is_main:
    lock.acquire()  # before anything in the work directory is read or written
  try:
    return _train_locked(config, workdir, is_main)
  finally:
    lock.release()


def _train_locked(config, workdir: str, is_main: bool) -> dict[str, float]:
  resuming = checkpointing.has_checkpoints(workdir)
  if resuming:
    run_record.check_config(workdir, config, "resume it")  # before the data is read
  elif is_main:
    moved = run_record.move_history_aside(workdir)
    if moved:
      print(f"alexnet_jax: {workdir} holds an earlier start's record but no checkpoint; moved it to {moved}",
            flush=True)
  exp = build(config, workdir, resuming)
  index, count = exp.data_shard
  train_iter = input_pipeline.train_iterator(exp.splits, config, index, count)
  ckpt = checkpointing.Checkpointer(os.path.join(workdir, "checkpoints"), config.checkpoints_to_keep)

  # Load checkpoint
  try:
    start_step = restore_latest(exp, ckpt, train_iter)
  except BaseException:
    ckpt.close()
    input_pipeline.close(train_iter)
    raise
  changes = run_record.start(workdir, config, _resolved(exp), exp.mesh, start_step, resuming, write=is_main)
  _apply_changed_learning_rate(exp, changes)
  writer = metrics.MetricWriter(workdir, enabled=is_main, resume_step=start_step)
  if is_main:
    for change in changes:
      print(f"alexnet_jax: config change at step {start_step}: {change['key']} {json.dumps(change['from'])} -> "
            f"{json.dumps(change['to'])}", flush=True)
    if start_step >= exp.num_steps:
      print(f"alexnet_jax: nothing to train: the latest checkpoint is step {start_step} and this config trains "
            f"{exp.num_steps} steps (raise num_train_steps or num_epochs to go on; --mode=eval evaluates it)",
            flush=True)
    else:
      print(f"alexnet_jax: {exp.spec.num_params():,} parameters; mesh {dict(exp.mesh.shape)}; "
            f"{len(exp.splits.train):,} training images ({exp.steps_per_epoch} steps/epoch); "
            f"{'resuming at step ' + str(start_step) if start_step else 'starting'}; {exp.num_steps} steps",
            flush=True)

  train_step = make_train_step(exp.spec, exp.mesh, exp.tx, config.data.pixel_scale)
  eval_step = make_eval_step(exp.spec, exp.mesh, config.data.pixel_scale)
  dropout_key = jax.random.fold_in(jax.random.key(config.seed), 1)
  log_every = steps_from(config.log_every_steps, exp.steps_per_epoch)
  eval_every = steps_from(config.eval_every_steps, exp.steps_per_epoch)
  checkpoint_every = steps_from(config.checkpoint_every_steps, exp.steps_per_epoch)

  preemption = _Preemption()
  watch = DeadNetworkWatch(exp, config.get("dead_network_steps", 100))
  progress = _progress(exp.num_steps, start_step, is_main and start_step < exp.num_steps)
  say = progress.write if is_main else (lambda message: None)
  pending, last_eval, tick, tick_step = [], {}, time.perf_counter(), start_step
  finished = start_step >= exp.num_steps
  eval_at = {}  # step -> its evaluation, recorded in that step's checkpoint

  def checked_health(step: int, host_metrics: list[dict]) -> dict:
    """Stops on a non-finite loss among ``host_metrics`` (the steps up to ``step``), non-finite weights, or
    a dead network, before anything is logged or saved; returns the weights' health."""
    health = jax.device_get(parameter_health(exp.state["params"]))
    first = step - len(host_metrics) + 1
    _check_finite(host_metrics, first, health["params_finite"], ckpt.latest_step())
    if host_metrics and watch.observe(step):
      raise watch.error(step, float(host_metrics[-1]["train_loss"]), ckpt.latest_step())
    return health

  def save(step: int) -> None:
    checked_health(step, jax.device_get(pending))
    # A resumed run with another batch size refuses it (restore_latest); the class count is not in fc8's
    # shape alone when its towers are padded (3 and 4 classes on two towers hold the same arrays).
    meta = {"plateau": exp.plateau.state_dict() if exp.plateau else None, "step": step,
            "batch_size": config.batch_size, "num_classes": exp.spec.num_classes}
    if step in eval_at:
      meta["eval"] = eval_at[step]
    needed = _checkpoint_bytes(exp.state)
    if is_main and _free_bytes(ckpt.directory) < needed:
      raise _no_space(ckpt, step, needed)
    try:
      ckpt.save(step, exp.state, train_iter, meta)
    except OSError as error:
      raise _save_failed(ckpt, step, error, needed) from None

  try:
    for step in range(start_step + 1, exp.num_steps + 1):
      batch = sharding.global_batch(exp.mesh, next(train_iter), config.batch_size)
      exp.state, step_metrics = train_step(exp.state, batch, dropout_key, exp.consts)
      del batch  # no host batch outlives its step (input_pipeline.close frees the last ones)
      pending.append(step_metrics)
      progress.update(1)

      if step % log_every == 0 or step == exp.num_steps:
        host = jax.device_get(pending)  # the steps' only host sync, besides checkpoints
        health = checked_health(step, host)
        pending = []
        summary = {k: float(np.mean([m[k] for m in host])) for k in host[0]}
        summary["param_norm"] = float(health["param_norm"])
        summary["train_skipped_images"] = float(sum(m["train_skipped_images"] for m in host))
        now = time.perf_counter()
        summary["images_per_sec"] = (step - tick_step) * config.batch_size / (now - tick)
        tick, tick_step = now, step
        writer.write(step, summary)
        progress.set_postfix(loss=f"{summary['train_loss']:.3f}", lr=f"{summary['learning_rate']:.2g}",
                             img_s=f"{summary['images_per_sec']:.0f}")

      if step % eval_every == 0 or step == exp.num_steps:
        last_eval = exp.evaluate(eval_step) | {"epoch": step / exp.steps_per_epoch}
        check_eval_finite(last_eval, step, "the network", f"; stopped without saving, {_kept(ckpt.latest_step())}")
        eval_at = {step: {k: float(last_eval[k]) for k in ("eval_top1_error", "eval_top5_error", "eval_loss")}}
        if exp.plateau is not None:
          learning_rate = exp.plateau.update(last_eval["eval_top1_error"])
          exp.state["opt_state"] = optim.with_learning_rate(exp.state["opt_state"], learning_rate)
        writer.write(step, last_eval)
        say(describe_eval(step, last_eval))
        tick = time.perf_counter()  # evaluation time is not training throughput

      if step % checkpoint_every == 0 or step == exp.num_steps:
        save(step)
      finished = step == exp.num_steps
      if preemption.requested(step):
        save(step)
        say(f"{preemption.signal_name}: saved a checkpoint at step {step}; exiting")
        break
  finally:
    progress.close()
    preemption.restore()
    try:
      ckpt.close()  # waits for the last save: a failure there is a failed save too
    except OSError as error:
      raise _save_failed(ckpt, ckpt.latest_step(), error, _checkpoint_bytes(exp.state)) from None
    finally:
      writer.close()
      input_pipeline.close(train_iter)
  return {**last_eval, "finished": finished}


def _no_space(ckpt: checkpointing.Checkpointer, step: int, needed: int) -> TrainingError:
  latest = ckpt.latest_step()
  kept = f"the latest complete checkpoint, step {latest}, is kept" if latest is not None else "no checkpoint yet"
  return TrainingError(f"no space for checkpoint {ckpt.path(step)}: it needs about {needed / 2**20:,.0f} MiB, "
                       f"{_free_bytes(ckpt.directory) / 2**20:,.0f} MiB are free; stopped, {kept}")


def _save_failed(ckpt: checkpointing.Checkpointer, step, error: OSError, needed: int) -> TrainingError:
  kept = [s for s in ckpt.steps() if s != step]
  latest = f"the latest complete checkpoint, step {kept[-1]}, is kept" if kept else "no complete checkpoint"
  space = f" (it needs about {needed / 2**20:,.0f} MiB)" if error.errno == errno.ENOSPC else ""
  return TrainingError(f"saving checkpoint {ckpt.path(step)} failed: {error.strerror or error}{space}; "
                       f"stopped, {latest}")


def evaluate_checkpoint(config, workdir: str, step: int | None = None) -> dict[str, float]:
  """``--mode=eval``: a checkpoint's metrics on the eval split (the latest, or ``step``), also written to
  ``WORKDIR/eval/step-N-views-V.json``. Reads only the weights, so any checkpoint of this network
  evaluates: trained here, imported (``alexnet_jax.pretrained``), any mesh."""
  config = config.copy_and_resolve_references()
  config.init_from = ""  # the checkpoint's weights replace any starting point
  run_record.check_config(workdir, config, "evaluate it")
  exp = build(config, workdir, resuming=True)
  params, batch_stats, meta = checkpointing.read_params(workdir, step)
  want = exp.spec.param_shapes()
  got = {name: (p["kernel"].shape, p["bias"].shape) for name, p in params.items() if "kernel" in p}
  if got != want:
    raise TrainingError(f"the checkpoint in {workdir} holds another network than this config's: layers {got}, "
                        f"expected {want}")
  _check_same_classes(exp.spec, meta, workdir)
  placed = lambda tree: jax.device_put(tree, sharding.tower_sharding(exp.mesh))
  exp.state["params"] = placed(params)
  if exp.spec.batch_norm:
    exp.state["batch_stats"] = placed(batch_stats)
  result = exp.evaluate(make_eval_step(exp.spec, exp.mesh, config.data.pixel_scale))
  saved_step = meta.get("step", 0)
  check_eval_finite(result, saved_step, f"checkpoint {checkpointing.step_path(workdir, saved_step)}")
  if jax.process_index() == 0:
    print(describe_eval(saved_step, result))
    path = os.path.join(workdir, "eval", f"step-{saved_step}-views-{config.data.eval_views}.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    record = {"step": saved_step, "views": config.data.eval_views, "top1_error": float(result["eval_top1_error"]),
              "top5_error": float(result["eval_top5_error"]), "loss": float(result["eval_loss"]),
              "images": int(result["eval_images"]), "skipped_images": int(result["eval_skipped_images"]),
              "split": config.data.eval_split}
    run_record.write_json(path, record)
    print(f"wrote {path}")
  return result
