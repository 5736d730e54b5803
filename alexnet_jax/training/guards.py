"""What stops a run before it reports or saves garbage: divergence, a dead network, a full disk, a signal."""

from __future__ import annotations

import errno
import functools
import math
import os
import shutil
import signal
import sys

import jax
import jax.numpy as jnp
from jax.experimental import multihost_utils

from alexnet_jax import model as model_lib
from alexnet_jax.data import preprocess
from alexnet_jax.data.batch import IMAGE, MASK, OFFSET
from alexnet_jax.errors import TrainingError, UserError
from alexnet_jax.model import AlexNetSpec
from alexnet_jax.workdir import checkpointing
from alexnet_jax.training.experiment import Experiment


class Preemption:
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
      print(
          "\nalexnet_jax: Ctrl-C: saving a checkpoint at the end of this step (Ctrl-C again to abort)",
          file=sys.stderr,
          flush=True,
      )

  def requested(self, step: int) -> bool:
    if self._multiprocess:
      if multihost_utils.reached_preemption_sync_point(step):
        self.signal_name = "SIGTERM"
        return True
      return False
    return self.signal_name is not None

  def restore(self):
    for signum, previous in self._previous.items():
      signal.signal(signum, previous)


def what_is_kept(latest: int | None) -> str:
  """What a run that stops without saving leaves behind."""
  return (
      f"the latest checkpoint, step {latest}, is kept"
      if latest is not None
      else "no checkpoint yet"
  )


def check_finite(
    host_metrics: list[dict],
    first_step: int,
    params_finite: bool,
    latest: int | None,
) -> None:
  """Stops the run on the first non-finite loss, or non-finite weights after the last step, before
  anything is saved."""
  kept = what_is_kept(latest)
  for i, m in enumerate(host_metrics):
    if not math.isfinite(m["train_loss"]):
      raise TrainingError(
          f"training diverged at step {first_step + i} (loss {m['train_loss']}); stopped without "
          f"saving, {kept}"
      )
  if not params_finite:
    raise TrainingError(
        f"training diverged by step {first_step + len(host_metrics) - 1} (non-finite parameters); "
        f"stopped without saving, {kept}"
    )


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
    return (
        bool(self.limit)
        and self.first_dead is not None
        and step - self.first_dead >= self.limit
    )

  def _dead_layers(self) -> list[str]:
    exp = self.exp
    if self._probe is None:
      # one batch wanted: none placed ahead
      batches = exp.eval_batches(views=1, prefetch=0)
      batch = next(batches)
      batches.close()
      images = preprocess.views_input(
          batch[IMAGE], batch[OFFSET], exp.consts, exp.config.data.pixel_scale
      )
      self._probe = (images, batch[MASK])
    zero = jax.device_get(
        _all_zero_layers(
            exp.spec,
            exp.mesh,
            exp.state["params"],
            exp.state.get("batch_stats"),
            *self._probe,
        )
    )
    names = exp.spec.activation_names()[:-1]  # fc8: the logits
    return [name for name in names if zero[name]]

  def error(self, step: int, loss: float, latest: int | None) -> TrainingError:
    exp = self.exp
    chance = math.log(exp.spec.num_classes)
    kept = what_is_kept(latest)
    return TrainingError(
        f"the network stopped learning: {self.dead[0]}'s units are zero for every image from step {self.first_dead} "
        f"to {step}, so no gradient reaches {self.dead[0]} or below (train loss {loss:.4f}; chance is "
        f"ln {exp.spec.num_classes} = {chance:.4f}); stopped, {kept}. Try model.init='he', a smaller "
        f"optimizer.learning_rate or another data.pixel_scale; --config.dead_network_steps=0 trains on regardless"
    )


@functools.partial(jax.jit, static_argnames=("spec", "mesh"))
def _all_zero_layers(
    spec: AlexNetSpec, mesh, params, batch_stats, images, mask
) -> dict:
  """Per layer: are its outputs exactly zero for every real image of the batch (inference mode)?"""
  _, acts = model_lib.apply(
      spec, mesh, params, images, capture=True, batch_stats=batch_stats
  )
  return {
      name: jnp.all(
          jnp.where(mask.reshape((-1,) + (1,) * (a.ndim - 1)), a, 0) == 0
      )
      for name, a in acts.items()
  }


def open_workdir(workdir: str) -> None:
  if not workdir or not workdir.strip():
    raise UserError(
        "--workdir is empty: give the directory for this run's checkpoints and metrics"
    )
  try:
    os.makedirs(os.path.join(workdir, "checkpoints"), exist_ok=True)
    probe = os.path.join(workdir, f".write-test-{os.getpid()}")
    with open(probe, "w"):
      pass
    os.remove(probe)
  # a file in the way, no permission, read-only: before anything else says it
  except OSError as error:
    raise UserError(
        f"cannot write to --workdir={workdir}: {error.strerror or error}"
    ) from None


def free_bytes(path: str) -> int:
  return shutil.disk_usage(path).free


def checkpoint_bytes(state) -> int:
  return sum(leaf.nbytes for leaf in jax.tree.leaves(state))


def no_space(
    ckpt: checkpointing.Checkpointer, step: int, needed: int
) -> TrainingError:
  latest = ckpt.latest_step()
  kept = (
      f"the latest complete checkpoint, step {latest}, is kept"
      if latest is not None
      else "no checkpoint yet"
  )
  return TrainingError(
      f"no space for checkpoint {ckpt.path(step)}: it needs about {needed / 2**20:,.0f} MiB, "
      f"{free_bytes(ckpt.directory) / 2**20:,.0f} MiB are free; stopped, {kept}"
  )


def save_failed(
    ckpt: checkpointing.Checkpointer, step, error: OSError, needed: int
) -> TrainingError:
  kept = [s for s in ckpt.steps() if s != step]
  latest = (
      f"the latest complete checkpoint, step {kept[-1]}, is kept"
      if kept
      else "no complete checkpoint"
  )
  space = (
      f" (it needs about {needed / 2**20:,.0f} MiB)"
      if error.errno == errno.ENOSPC
      else ""
  )
  return TrainingError(
      f"saving checkpoint {ckpt.path(step)} failed: {error.strerror or error}{space}; "
      f"stopped, {latest}"
  )
