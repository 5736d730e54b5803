"""Several trained runs as one classifier: their softmax outputs averaged per image (§6, Table 2's "5 CNNs")."""

from __future__ import annotations

import dataclasses
import json
import sys
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from alexnet_jax.data.batch import LABEL, MASK
from alexnet_jax.errors import ConfigError, TrainingError, UserError
from alexnet_jax.training import experiment, metrics, steps
from alexnet_jax.workdir import checkpointing, run_record

# What the members must share to be scored on the same images with the same labels.
SAME_DATA = (
    "data.source",
    "data.name",
    "data.data_dir",
    "data.eval_split",
    "model.num_classes",
    # lockstep batches: the same images in each batch, the same padding
    "batch_size",
)


@dataclasses.dataclass
class Member:
  path: str
  exp: Any
  step: int
  log_probs: Callable


def _value(config, key: str):
  node = config
  for part in key.split("."):
    node = node[part]
  return node


def member_config(workdir: str):
  if run_record.read(workdir) is None:
    raise UserError(
        f"ensemble member {workdir} holds no {run_record.RECORD}: not the work directory of a run"
    )
  config = run_record.recorded_config(workdir).copy_and_resolve_references()
  config.init_from = ""  # the checkpoint's weights replace any starting point
  return config


def check_same_data(workdirs: list[str], configs: list) -> None:
  """Refuses, in one line, a member that is evaluated on other images or classes than the first."""
  for workdir, config in zip(workdirs[1:], configs[1:]):
    for key in SAME_DATA:
      want, got = _value(configs[0], key), _value(config, key)
      if want != got:
        raise ConfigError(
            f"ensemble member {workdir} has {key}={got!r}, {workdirs[0]} has {want!r}: members must "
            f"be evaluated on the same data"
        )


def load_member(workdir: str, config, step: int | None = None) -> Member:
  """A run's network with its checkpoint's weights, as ``--mode=eval`` loads it."""
  exp = experiment.build(config, workdir, resuming=True)
  saved_step = experiment.load_checkpoint_weights(
      exp, workdir, step, "its run.json"
  )
  return Member(
      workdir,
      exp,
      saved_step,
      steps.make_log_probs_step(exp.spec, exp.mesh, config.data.pixel_scale),
  )


@jax.jit
def batch_sums(member_log_probs: list, labels, mask, member_labels: list):
  """Mistakes over the batch's real images: each member's, then the ensemble's (the log of the members'
  mean probability; its argmax is the mean probability's)."""
  mask = mask.astype(jnp.float32)

  def sums(scores):
    return {
        "loss": jnp.sum(metrics.cross_entropy(scores, labels) * mask),
        "top1": jnp.sum(metrics.top_k_wrong(scores, labels, 1) * mask),
        "top5": jnp.sum(metrics.top_k_wrong(scores, labels, 5) * mask),
    }

  stacked = jnp.stack(member_log_probs)
  averaged = jax.nn.logsumexp(stacked, axis=0) - jnp.log(len(member_log_probs))
  disagree = sum(jnp.sum(other != labels) for other in member_labels)
  return {
      "members": [sums(scores) for scores in member_log_probs],
      "ensemble": sums(averaged),
      "count": jnp.sum(mask),
      "disagree": disagree,
  }


def _batch_sums(members: list[Member], batches: tuple[dict, ...]) -> dict:
  """One batch's sums (:func:`batch_sums`) from each member's scores on its own copy of the batch."""
  target = batches[0][LABEL].sharding
  log_probs = []
  for member, batch in zip(members, batches):
    scores = member.log_probs(
        member.exp.state["params"],
        batch,
        member.exp.consts,
        member.exp.state.get("batch_stats"),
    )
    # One member's program at a time, each finished before the next starts or a copy moves.
    scores.block_until_ready()
    # onto the first member's placement: members may split their towers differently
    log_probs.append(
        scores if scores.sharding == target else jax.device_put(scores, target)
    )
  labels = [
      b[LABEL]
      if b[LABEL].sharding == target
      else jax.device_put(b[LABEL], target)
      for b in batches[1:]
  ]
  return batch_sums(log_probs, batches[0][LABEL], batches[0][MASK], labels)


def evaluate_ensemble(
    workdirs: list[str], step: int | None = None, out=None
) -> dict:
  """Each member's top-1/top-5 error on the shared eval split and their average's; prints a table and one
  JSON line (process 0). ``step``: every member's checkpoint of that step (default: each one's latest).
  """
  if not workdirs:
    raise UserError("give one or more work directories of trained runs")
  configs = [member_config(w) for w in workdirs]
  check_same_data(workdirs, configs)
  members = [load_member(w, c, step) for w, c in zip(workdirs, configs)]
  first = members[0].exp
  # Placed when asked for (no prefetch): members' batches are not placed while another's step runs.
  iterators = [m.exp.eval_batches(prefetch=0) for m in members]
  totals = None
  try:
    # Every member enumerates the same split in the same order: batch i holds the same images for all.
    for batches in zip(*iterators, strict=True):
      sums = jax.device_get(_batch_sums(members, batches))
      totals = sums if totals is None else jax.tree.map(np.add, totals, sums)
  except ValueError as error:
    if "zip()" not in str(error):
      raise
    raise TrainingError(
        "the ensemble's members enumerate eval splits of different lengths"
    ) from None
  finally:
    for it in iterators:
      it.close()
  if totals is None:
    raise TrainingError(f"the eval split of {workdirs[0]} holds no image")
  if totals["disagree"]:
    raise TrainingError(
        "the ensemble's members see the eval images with different labels"
    )
  count = max(float(totals["count"]), 1.0)
  rows = []
  for member, sums in zip(members, totals["members"]):
    steps.check_eval_finite(
        {"eval_loss": float(sums["loss"]) / count},
        member.step,
        f"checkpoint {checkpointing.step_path(member.path, member.step)}",
    )
    rows.append(
        {
            "path": member.path,
            "step": member.step,
            "views": member.exp.config.data.eval_views,
            "top1_error": float(sums["top1"]) / count,
            "top5_error": float(sums["top5"]) / count,
            "loss": float(sums["loss"]) / count,
        }
    )
  result = {
      "ensemble_top1_error": float(totals["ensemble"]["top1"]) / count,
      "ensemble_top5_error": float(totals["ensemble"]["top5"]) / count,
      # cross-entropy of the members' mean probability
      "ensemble_loss": float(totals["ensemble"]["loss"]) / count,
      "members": rows,
      "images": int(totals["count"]),
  }
  if jax.process_index() == 0:
    _print_table(result, first.config.data.eval_split, out or sys.stdout)
  return result


def _print_table(result: dict, split: str, out) -> None:
  width = max(len("ensemble"), *(len(r["path"]) for r in result["members"]))
  print(
      f"{'member':<{width}}  {'step':<6} {'views':<6} {'top-1':>7}  {'top-5':>7}",
      file=out,
  )
  for r in result["members"]:
    print(
        f"{r['path']:<{width}}  {r['step']:<6} {r['views']:<6} {r['top1_error']:7.2%}  "
        f"{r['top5_error']:7.2%}",
        file=out,
    )
  print(
      f"{'ensemble':<{width}}  {'':<6} {'':<6} {result['ensemble_top1_error']:7.2%}  "
      f"{result['ensemble_top5_error']:7.2%}",
      file=out,
  )
  print(f"({result['images']} images of the {split} split)", file=out)
  print(json.dumps(result), file=out)
