"""Training and evaluation: the paper's loop, on any mesh, resumable from any checkpoint."""

from __future__ import annotations

import json
import os
import sys
import time

import jax
import numpy as np
from tqdm import tqdm

from alexnet_jax import config_files
from alexnet_jax.data import input_pipeline
from alexnet_jax.training import experiment, guards, metrics, optim, profiling, steps
from alexnet_jax.workdir import checkpointing, run_record
from alexnet_jax.training.experiment import Experiment


def _progress(total: int, initial: int, enabled: bool):
  interactive = sys.stderr.isatty()
  return tqdm(
      total=total,
      initial=initial,
      disable=not enabled,
      unit="step",
      dynamic_ncols=True,
      mininterval=0.5 if interactive else 30.0,
  )


def _resolved(exp: Experiment) -> dict:
  """The config as this start runs it: 'auto' and -1 values replaced, and the data it found."""
  resolved = json.loads(exp.config.to_json_best_effort())
  resolved["model"]["dtype"] = exp.spec.dtype
  resolved["mesh"] = dict(exp.mesh.shape)
  resolved["num_train_steps"] = exp.num_steps
  for key in ("log_every_steps", "eval_every_steps", "checkpoint_every_steps"):
    resolved[key] = experiment.steps_from(exp.config[key], exp.steps_per_epoch)
  resolved["data"]["train_images"], resolved["data"]["eval_images"] = len(
      exp.splits.train
  ), len(exp.splits.eval)
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
    rate = exp.plateau.learning_rate = (
        optimizer.learning_rate * optimizer.factor**exp.plateau.reductions
    )
  else:
    return
  exp.state["opt_state"] = optim.with_learning_rate(
      exp.state["opt_state"], rate
  )


def train_and_evaluate(config, workdir: str) -> dict[str, float]:
  """Trains with periodic evaluation and checkpoints; resumes from ``workdir/checkpoints`` if present.

  Returns the last evaluation's metrics, and ``finished``: False when a signal stopped the run early.
  """
  config_files.validate(config, jax.device_count())
  is_main = jax.process_index() == 0
  guards.open_workdir(workdir)
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
    # before the data is read
    run_record.check_config(workdir, config, "resume it")
  elif is_main:
    moved = run_record.move_history_aside(workdir)
    if moved:
      print(
          f"alexnet_jax: {workdir} holds an earlier start's record but no checkpoint; moved it to {moved}",
          flush=True,
      )
  exp = experiment.build(config, workdir, resuming)
  index, count = exp.data_shard
  # The loop gets placed batches, prefetched: the step's input is already on the devices when it starts.
  train_iter = input_pipeline.device_batches(
      input_pipeline.train_iterator(exp.splits, config, index, count),
      exp.mesh,
      config.batch_size,
      input_pipeline.prefetch(config.data),
  )
  ckpt = checkpointing.Checkpointer(
      os.path.join(workdir, "checkpoints"), config.checkpoints_to_keep
  )

  # Load checkpoint
  try:
    start_step = experiment.restore_latest(exp, ckpt, train_iter)
  except BaseException:
    ckpt.close()
    input_pipeline.close(train_iter)
    raise
  changes = run_record.start(
      workdir,
      config,
      _resolved(exp),
      exp.mesh,
      start_step,
      resuming,
      write=is_main,
  )
  _apply_changed_learning_rate(exp, changes)
  writer = metrics.MetricWriter(
      workdir, enabled=is_main, resume_step=start_step
  )
  if is_main:
    for change in changes:
      print(
          f"alexnet_jax: config change at step {start_step}: {change['key']} {json.dumps(change['from'])} -> "
          f"{json.dumps(change['to'])}",
          flush=True,
      )
    if start_step >= exp.num_steps:
      print(
          f"alexnet_jax: nothing to train: the latest checkpoint is step {start_step} and this config trains "
          f"{exp.num_steps} steps (raise num_train_steps or num_epochs to go on; --mode=eval evaluates it)",
          flush=True,
      )
    else:
      print(
          f"alexnet_jax: {exp.spec.num_params():,} parameters; mesh {dict(exp.mesh.shape)}; "
          f"{len(exp.splits.train):,} training images ({exp.steps_per_epoch} steps/epoch); "
          f"{'resuming at step ' + str(start_step) if start_step else 'starting'}; {exp.num_steps} steps",
          flush=True,
      )

  train_step = steps.make_train_step(
      exp.spec, exp.mesh, exp.tx, config.data.pixel_scale
  )
  eval_step = steps.make_eval_step(exp.spec, exp.mesh, config.data.pixel_scale)
  dropout_key = jax.random.fold_in(jax.random.key(config.seed), 1)
  log_every = experiment.steps_from(config.log_every_steps, exp.steps_per_epoch)
  eval_every = experiment.steps_from(
      config.eval_every_steps, exp.steps_per_epoch
  )
  checkpoint_every = experiment.steps_from(
      config.checkpoint_every_steps, exp.steps_per_epoch
  )

  preemption = guards.Preemption()
  watch = guards.DeadNetworkWatch(exp, config.get("dead_network_steps", 100))
  progress = _progress(
      exp.num_steps, start_step, is_main and start_step < exp.num_steps
  )
  say = progress.write if is_main else (lambda message: None)
  trace = profiling.StepTrace(
      workdir, start_step + log_every, config.get("profile_steps", 0), say
  )
  pending, last_eval, tick, tick_step = [], {}, time.perf_counter(), start_step
  finished = start_step >= exp.num_steps
  eval_at = {}  # step -> its evaluation, recorded in that step's checkpoint

  def checked_health(step: int, host_metrics: list[dict]) -> dict:
    """Stops on a non-finite loss among ``host_metrics`` (the steps up to ``step``), non-finite weights, or
    a dead network, before anything is logged or saved; returns the weights' health.
    """
    health = jax.device_get(steps.parameter_health(exp.state["params"]))
    first = step - len(host_metrics) + 1
    guards.check_finite(
        host_metrics, first, health["params_finite"], ckpt.latest_step()
    )
    if host_metrics and watch.observe(step):
      raise watch.error(
          step, float(host_metrics[-1]["train_loss"]), ckpt.latest_step()
      )
    return health

  def save(step: int) -> None:
    checked_health(step, jax.device_get(pending))
    # A resumed run with another batch size refuses it (restore_latest); the class count is not in fc8's
    # shape alone when its towers are padded (3 and 4 classes on two towers hold the same arrays).
    meta = {
        "plateau": exp.plateau.state_dict() if exp.plateau else None,
        "step": step,
        "batch_size": config.batch_size,
        "num_classes": exp.spec.num_classes,
    }
    if step in eval_at:
      meta["eval"] = eval_at[step]
    needed = guards.checkpoint_bytes(exp.state)
    if is_main and guards.free_bytes(ckpt.directory) < needed:
      raise guards.no_space(ckpt, step, needed)
    try:
      ckpt.save(step, exp.state, train_iter, meta)
    except OSError as error:
      raise guards.save_failed(ckpt, step, error, needed) from None

  try:
    for step in range(start_step + 1, exp.num_steps + 1):
      trace.before(step)
      exp.state, step_metrics = train_step(
          exp.state, next(train_iter), dropout_key, exp.consts
      )
      trace.after(step, exp.state)
      pending.append(step_metrics)
      progress.update(1)

      if step % log_every == 0 or step == exp.num_steps:
        # the steps' only host sync, besides checkpoints
        host = jax.device_get(pending)
        health = checked_health(step, host)
        pending = []
        summary = {k: float(np.mean([m[k] for m in host])) for k in host[0]}
        summary["param_norm"] = float(health["param_norm"])
        summary["train_skipped_images"] = float(
            sum(m["train_skipped_images"] for m in host)
        )
        now = time.perf_counter()
        summary["images_per_sec"] = (
            (step - tick_step) * config.batch_size / (now - tick)
        )
        tick, tick_step = now, step
        writer.write(step, summary)
        progress.set_postfix(
            loss=f"{summary['train_loss']:.3f}",
            lr=f"{summary['learning_rate']:.2g}",
            img_s=f"{summary['images_per_sec']:.0f}",
        )

      if step % eval_every == 0 or step == exp.num_steps:
        last_eval = exp.evaluate(eval_step) | {
            "epoch": step / exp.steps_per_epoch
        }
        steps.check_eval_finite(
            last_eval,
            step,
            "the network",
            f"; stopped without saving, {guards.what_is_kept(ckpt.latest_step())}",
        )
        eval_at = {
            step: {
                k: float(last_eval[k])
                for k in ("eval_top1_error", "eval_top5_error", "eval_loss")
            }
        }
        if exp.plateau is not None:
          learning_rate = exp.plateau.update(last_eval["eval_top1_error"])
          exp.state["opt_state"] = optim.with_learning_rate(
              exp.state["opt_state"], learning_rate
          )
        writer.write(step, last_eval)
        say(steps.describe_eval(step, last_eval))
        tick = time.perf_counter()  # evaluation time is not training throughput

      if step % checkpoint_every == 0 or step == exp.num_steps:
        save(step)
      finished = step == exp.num_steps
      if preemption.requested(step):
        save(step)
        say(
            f"{preemption.signal_name}: saved a checkpoint at step {step}; exiting"
        )
        break
  finally:
    trace.stop(exp.state)
    progress.close()
    preemption.restore()
    try:
      # waits for the last save: a failure there is a failed save too
      ckpt.close()
    except OSError as error:
      raise guards.save_failed(
          ckpt, ckpt.latest_step(), error, guards.checkpoint_bytes(exp.state)
      ) from None
    finally:
      writer.close()
      input_pipeline.close(train_iter)
  return {**last_eval, "finished": finished}


def evaluate_checkpoint(
    config, workdir: str, step: int | None = None
) -> dict[str, float]:
  """``--mode=eval``: a checkpoint's metrics on the eval split (the latest, or ``step``), also written to
  ``WORKDIR/eval/step-N-views-V.json``. Reads only the weights, so any checkpoint of this network
  evaluates: trained here, imported (``alexnet_jax.pretrained``), any mesh."""
  config = config.copy_and_resolve_references()
  config.init_from = ""  # the checkpoint's weights replace any starting point
  run_record.check_config(workdir, config, "evaluate it")
  exp = experiment.build(config, workdir, resuming=True)
  saved_step = experiment.load_checkpoint_weights(
      exp, workdir, step, "this config's"
  )
  result = exp.evaluate(
      steps.make_eval_step(exp.spec, exp.mesh, config.data.pixel_scale)
  )
  steps.check_eval_finite(
      result,
      saved_step,
      f"checkpoint {checkpointing.step_path(workdir, saved_step)}",
  )
  if jax.process_index() == 0:
    print(steps.describe_eval(saved_step, result))
    path = os.path.join(
        workdir,
        "eval",
        f"step-{saved_step}-views-{config.data.eval_views}.json",
    )
    os.makedirs(os.path.dirname(path), exist_ok=True)
    record = {
        "step": saved_step,
        "views": config.data.eval_views,
        "top1_error": float(result["eval_top1_error"]),
        "top5_error": float(result["eval_top5_error"]),
        "loss": float(result["eval_loss"]),
        "images": int(result["eval_images"]),
        "skipped_images": int(result["eval_skipped_images"]),
        "split": config.data.eval_split,
    }
    run_record.write_json(path, record)
    print(f"wrote {path}")
  return result
