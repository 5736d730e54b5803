"""The jitted steps: one training update (the paper's loss and SGD) and one evaluation (§4.1's averaged views)."""

from __future__ import annotations

import math
from typing import Callable, Iterator

import jax
import jax.numpy as jnp
import optax

from alexnet_jax import model as model_lib
from alexnet_jax.data import preprocess
from alexnet_jax.data.batch import ALPHA, IMAGE, LABEL, MASK, OFFSET, PADDING, VALID
from alexnet_jax.errors import TrainingError
from alexnet_jax.model import AlexNetSpec
from alexnet_jax.platform import compiler
from alexnet_jax.training import metrics, optim
from alexnet_jax.training.state import State


def make_train_step(
    spec: AlexNetSpec,
    mesh,
    tx: optax.GradientTransformation,
    pixel_scale: float,
) -> Callable:
  """``(state, batch, dropout_key, consts) -> (state, metrics)``, jitted; donates ``state``."""

  def train_step(
      state: State, batch: dict, dropout_key: jax.Array, consts: dict
  ):
    # Dropout masks from (seed, step): a resumed run draws the same masks as an uninterrupted one.
    key = jax.random.fold_in(dropout_key, state["step"])
    images = preprocess.network_input(
        batch[IMAGE], batch[OFFSET], consts, pixel_scale, batch[ALPHA]
    )
    # unreadable images count for nothing
    valid = batch[VALID].astype(jnp.float32)
    count = jnp.maximum(valid.sum(), 1.0)

    def loss_fn(params):
      logits, batch_stats = model_lib.train_apply(
          spec, mesh, params, state.get("batch_stats", {}), images, key
      )
      return jnp.sum(
          metrics.cross_entropy(logits, batch[LABEL]) * valid
      ) / count, (logits, batch_stats)

    (loss, (logits, batch_stats)), grads = jax.value_and_grad(
        loss_fn, has_aux=True
    )(state["params"])
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    step_metrics = {
        "train_loss": loss,
        "train_top1_error": jnp.sum(
            metrics.top_k_wrong(logits, batch[LABEL], 1) * valid
        )
        / count,
        "learning_rate": optim.current_learning_rate(opt_state),
        "train_skipped_images": jnp.sum(1.0 - valid),
    }
    new_state = {
        "step": state["step"] + 1,
        "params": params,
        "opt_state": opt_state,
    }
    if "batch_stats" in state:
      new_state["batch_stats"] = batch_stats
    return new_state, step_metrics

  return compiler.jit(train_step, donate_argnums=0)


@jax.jit
def parameter_health(params) -> dict:
  """The weights' norm and whether all are finite: read at log time and before every save, not every step
  (two passes over 61M weights cost ~6% of a CPU step). A non-finite weight makes the next loss non-finite,
  which every step's metrics do carry."""
  return {
      "param_norm": optax.tree.norm(params),
      # Not isfinite(param_norm): the norm of huge but finite weights overflows float32.
      "params_finite": jnp.all(
          jnp.array([jnp.all(jnp.isfinite(p)) for p in jax.tree.leaves(params)])
      ),
  }


def view_log_probs(
    spec: AlexNetSpec,
    mesh,
    pixel_scale: float,
    params,
    batch: dict,
    consts: dict,
    batch_stats: dict | None = None,
) -> jax.Array:
  """[B, C]: the log of each image's mean softmax over its ``views`` crops (§4.1); traced inside a jit."""
  batch_size, views = batch[OFFSET].shape[:2]
  images = preprocess.views_input(
      batch[IMAGE], batch[OFFSET], consts, pixel_scale
  )
  logits = model_lib.apply(spec, mesh, params, images, batch_stats=batch_stats)
  # log of the views' mean softmax, computed stably; for one view it is just log_softmax(logits).
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32)).reshape(
      batch_size, views, -1
  )
  return jax.nn.logsumexp(log_probs, axis=1) - jnp.log(views)


def make_log_probs_step(
    spec: AlexNetSpec, mesh, pixel_scale: float
) -> Callable:
  """``(params, batch, consts, batch_stats=None) -> [B, C]`` per-image log mean softmax, jitted."""

  def log_probs_step(
      params, batch: dict, consts: dict, batch_stats: dict | None = None
  ):
    return view_log_probs(
        spec, mesh, pixel_scale, params, batch, consts, batch_stats
    )

  return compiler.jit(log_probs_step)


def make_eval_step(spec: AlexNetSpec, mesh, pixel_scale: float) -> Callable:
  """``(params, batch, consts, batch_stats=None) -> sums`` of loss and top-1/top-5 mistakes over the batch's real images.

  Each image comes as ``views`` crops (1: centre; 10: the paper's test); their softmax outputs are
  averaged before the error is counted (§4.1).
  """

  def eval_step(
      params, batch: dict, consts: dict, batch_stats: dict | None = None
  ):
    scores = view_log_probs(
        spec, mesh, pixel_scale, params, batch, consts, batch_stats
    )
    mask = batch[MASK].astype(jnp.float32)
    return {
        "loss": jnp.sum(metrics.cross_entropy(scores, batch[LABEL]) * mask),
        "top1": jnp.sum(metrics.top_k_wrong(scores, batch[LABEL], 1) * mask),
        "top5": jnp.sum(metrics.top_k_wrong(scores, batch[LABEL], 5) * mask),
        "count": jnp.sum(mask),
        "skipped": jnp.sum(1.0 - mask - batch[PADDING].astype(jnp.float32)),
    }

  return compiler.jit(eval_step)


def evaluate(
    eval_step: Callable,
    params,
    batches: Iterator[dict],
    consts: dict,
    batch_stats: dict | None = None,
) -> dict[str, float]:
  """Loss and top-1/top-5 error over every eval image of ``batches`` (placed global batches,
  ``input_pipeline.device_batches``); the sums stay on the device until the end.
  """
  totals = None
  for batch in batches:
    sums = eval_step(params, batch, consts, batch_stats)
    totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
  totals = jax.device_get(totals)
  count = max(float(totals["count"]), 1.0)
  return {
      "eval_loss": totals["loss"] / count,
      "eval_top1_error": totals["top1"] / count,
      "eval_top5_error": totals["top5"] / count,
      "eval_images": float(totals["count"]),
      "eval_skipped_images": float(totals["skipped"]),
  }


def check_eval_finite(
    result: dict[str, float], step: int, what: str, then: str = ""
) -> None:
  """A network whose scores are not finite has no error rate: stop rather than report one."""
  if not math.isfinite(result["eval_loss"]):
    raise TrainingError(
        f"{what} at step {step} gives non-finite scores on the eval split (loss "
        f"{result['eval_loss']}): the network diverged{then}"
    )


def describe_eval(step: int, result: dict[str, float]) -> str:
  return (
      f"step {step}: eval top-1 error {result['eval_top1_error']:.2%}, top-5 {result['eval_top5_error']:.2%}, "
      f"loss {result['eval_loss']:.4f} ({int(result['eval_images'])} images)"
  )
