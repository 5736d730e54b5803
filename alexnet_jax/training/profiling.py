"""``profile_steps``: a JAX profiler trace of a few training steps, in TensorBoard's profile-plugin layout."""

from __future__ import annotations

import glob
import os

import jax


class StepTrace:
  """Traces steps ``first + 1 .. first + count``, after the first log interval (compiled and warm), into
  ``WORKDIR/plugins/profile/<time>/`` beside the run's event files, where TensorBoard's Profile tab finds
  it (``tensorboard --logdir WORKDIR`` with ``tensorboard-plugin-profile``). ``count=0`` traces nothing.
  """

  def __init__(self, workdir: str, first: int, count: int, say):
    self.workdir, self.first, self.last = workdir, first, first + count
    self.count, self.say, self.active = count, say, False
    self.step = (
        first  # the last step run (a step that raised leaves the one before)
    )

  def before(self, step: int) -> None:
    if self.count and step == self.first + 1:
      jax.profiler.start_trace(self.workdir)
      self.active, self.started = True, step

  def after(self, step: int, state) -> None:
    self.step = step
    if self.active and step == self.last:
      self.stop(state)

  def stop(self, state) -> None:
    """Ends the trace once the steps it covers have run (a run may end inside the window, or train
    no step at all)."""
    if not self.active:
      return
    step = self.step
    jax.block_until_ready(state)
    jax.profiler.stop_trace()
    self.active = False
    traces = sorted(
        glob.glob(os.path.join(self.workdir, "plugins", "profile", "*"))
    )
    where = traces[-1] if traces else self.workdir
    self.say(
        f"profiled steps {self.started}-{step} into {where}; view it with tensorboard --logdir"
        f" {self.workdir} (pip install tensorboard tensorboard-plugin-profile), Profile tab"
    )
