"""The paper's optimiser (§5) and learning-rate schedules.

    v <- 0.9 v - 0.0005 * eps * w - eps * dL/dw ;   w <- w + v

The learning rate sits *inside* the velocity: after eps is divided by 10 the velocity still carries the
steps taken with the old eps. (optax.sgd applies the current rate to the whole momentum trace instead,
which differs right after every reduction.) The rate lives in the optimiser state, so the plateau
schedule can change it between steps and checkpoints keep it.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import jax
import numpy as np
import optax

from alexnet_jax.errors import ConfigError


def kernels_only(params) -> Any:
  """Weight decay mask: the paper's w are the weights; biases are not decayed (cuda-convnet did the same)."""
  return jax.tree_util.tree_map_with_path(
      lambda path, _: getattr(path[-1], "key", None) == "kernel", params
  )


def convolutions(params) -> Any:
  """Fine-tuning's frozen part: the conv layers (and batch norms between them); the FC layers train."""
  return {
      name: jax.tree.map(lambda _: not name.startswith("fc"), layer)
      for name, layer in params.items()
  }


def _paper_sgd(
    learning_rate, momentum: float, weight_decay: float, decay_mask, frozen
) -> optax.GradientTransformation:
  steps = [
      # dL/dw + wd * w
      optax.add_decayed_weights(weight_decay, mask=decay_mask),
      # * -eps, with the eps of this step
      optax.scale_by_learning_rate(learning_rate),
      # v <- momentum * v + (that)
      optax.trace(decay=momentum),
  ]
  # last, so that neither gradient nor weight decay moves a frozen layer
  if frozen is not None:
    steps.append(optax.masked(optax.set_to_zero(), frozen))
  return optax.chain(*steps)


def paper_sgd(
    learning_rate: float | optax.Schedule,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    decay_mask: Any = kernels_only,
    frozen: Any = None,
) -> optax.GradientTransformation:
  """Momentum SGD with weight decay inside the update, exactly as the paper's equation (§5).
  ``frozen``: a mask (or function of the params giving one) of parameters that never change.
  """
  return optax.inject_hyperparams(
      _paper_sgd,
      static_args=("momentum", "weight_decay", "decay_mask", "frozen"),
  )(
      learning_rate=learning_rate,
      momentum=momentum,
      weight_decay=weight_decay,
      decay_mask=decay_mask,
      frozen=frozen,
  )


def current_learning_rate(opt_state) -> jax.Array:
  return opt_state.hyperparams["learning_rate"]


def with_learning_rate(opt_state, learning_rate: float):
  """The same optimiser state with a new learning rate (same dtype and placement, so no recompile)."""
  old = opt_state.hyperparams["learning_rate"]
  # from the host: valid on pods
  new = jax.device_put(np.asarray(learning_rate, old.dtype), old.sharding)
  return opt_state._replace(
      hyperparams={**opt_state.hyperparams, "learning_rate": new}
  )


@dataclasses.dataclass
class PlateauSchedule:
  """Divide the rate by 10 when the validation error stops improving, at most three times (paper §5).

  ``update(error)`` is called after every evaluation: after ``patience`` evaluations without an
  improvement of more than ``min_improvement`` over the best so far, the rate is multiplied by
  ``factor``; the patience count then starts again.
  """

  learning_rate: float
  factor: float = 0.1
  patience: int = 1
  max_reductions: int = 3
  min_improvement: float = 0.0
  best_error: float = math.inf
  evals_since_best: int = 0
  reductions: int = 0

  def update(self, error: float) -> float:
    if error < self.best_error - self.min_improvement:
      self.best_error, self.evals_since_best = float(error), 0
    else:
      self.evals_since_best += 1
      if (
          self.evals_since_best >= self.patience
          and self.reductions < self.max_reductions
      ):
        self.learning_rate *= self.factor
        self.reductions += 1
        self.evals_since_best = 0
    return self.learning_rate

  def state_dict(self) -> dict:
    return dataclasses.asdict(self)

  def load_state_dict(self, state: dict) -> None:
    """Where the schedule stands; its rules (factor, patience, ...) stay the config's, so a resume that
    changes them applies them."""
    for key in (
        "learning_rate",
        "best_error",
        "evals_since_best",
        "reductions",
    ):
      if key in state:
        setattr(self, key, state[key])


SCHEDULES = ("plateau", "constant", "step", "cosine")


def make_optimizer(
    config, steps_per_epoch: int, total_steps: int
) -> tuple[optax.GradientTransformation, PlateauSchedule | None]:
  """The optimiser of ``config.optimizer`` and, for the paper's plateau schedule, its controller."""
  lr, schedule = config.learning_rate, config.schedule
  plateau = None
  if schedule == "plateau":
    plateau = PlateauSchedule(
        lr,
        factor=config.factor,
        patience=config.patience,
        max_reductions=config.max_reductions,
        min_improvement=config.min_improvement,
    )
    rate: float | Callable = lr
  elif schedule == "constant":
    rate = lr
  # divide by 1/factor at the given epochs (a fixed version of the paper's schedule)
  elif schedule == "step":
    rate = optax.piecewise_constant_schedule(
        lr,
        {int(e * steps_per_epoch): config.factor for e in config.step_epochs},
    )
  elif schedule == "cosine":
    rate = optax.cosine_decay_schedule(lr, max(total_steps, 1))
  else:
    raise ConfigError(
        f"optimizer.schedule must be one of {SCHEDULES}, got {schedule!r}"
    )
  decay_mask = None if config.decay_biases else kernels_only
  frozen = convolutions if config.get("freeze_convs", False) else None
  return (
      paper_sgd(rate, config.momentum, config.weight_decay, decay_mask, frozen),
      plateau,
  )
