"""Loss, top-k error and where metrics go: ``metrics.jsonl`` plus TensorBoard events in the workdir."""

from __future__ import annotations

import json
import os
import sys
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from tensorboardX import SummaryWriter

from alexnet_jax.errors import listed


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Per-example softmax cross-entropy (the paper's multinomial logistic regression objective)."""
  return -jnp.take_along_axis(
      jax.nn.log_softmax(logits.astype(jnp.float32)), labels[:, None], axis=-1
  )[:, 0]


def top_k_wrong(logits: jax.Array, labels: jax.Array, k: int) -> jax.Array:
  """1.0 where the label is not among the k highest logits (ties count against the label), and wherever
  an example's scores are not all finite: a comparison with NaN is always false, which would count it right.
  """
  label_logit = jnp.take_along_axis(logits, labels[:, None], axis=-1)
  outranked = jnp.sum(logits >= label_logit, axis=-1) > k
  return (outranked | ~jnp.all(jnp.isfinite(logits), axis=-1)).astype(
      jnp.float32
  )


class MetricWriter:
  """Appends ``{"step": ..., name: value}`` lines to ``metrics.jsonl`` and TensorBoard scalars beside it.

  Only process 0 writes; the others hold a writer that does nothing.
  """

  def __init__(self, workdir: str, enabled: bool = True, resume_step: int = 0):
    self.enabled = enabled
    if not enabled:
      return
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, "metrics.jsonl")
    _drop_lines_after(path, resume_step)
    self._jsonl = open(path, "a")
    self._tb = SummaryWriter(workdir, flush_secs=30)

  def write(self, step: int, metrics: Mapping[str, float]) -> None:
    if not self.enabled:
      return
    values = {k: float(np.asarray(v)) for k, v in metrics.items()}
    self._jsonl.write(json.dumps({"step": int(step), **values}) + "\n")
    self._jsonl.flush()
    for name, value in values.items():
      self._tb.add_scalar(name, value, int(step))

  def close(self) -> None:
    if self.enabled:
      self._jsonl.close()
      self._tb.close()


def _parse(line: str) -> dict | None:
  """One line's record, or None for a line that is not one (half written when the process was killed)."""
  try:
    record = json.loads(line)
  except ValueError:
    return None
  return (
      record
      if isinstance(record, dict) and isinstance(record.get("step"), int)
      else None
  )


def _drop_lines_after(path: str, step: int) -> None:
  """A run resumed at ``step`` redoes the steps after it: drop their old lines so none appear twice, and
  lines that are not records (a kill mid-write leaves half a line), which are named in a warning.
  """
  if not os.path.exists(path):
    return
  with open(path) as f:
    raw = f.readlines()
  lines = [
      line if line.endswith("\n") else line + "\n"
      for line in raw
      if line.strip()
  ]
  parsed = [_parse(line) for line in lines]
  garbled = [i + 1 for i, record in enumerate(parsed) if record is None]
  kept = [
      line
      for line, record in zip(lines, parsed)
      if record is not None and record["step"] <= step
  ]
  if garbled:
    print(
        f"alexnet_jax: warning: dropped {len(garbled)} unreadable line(s) of {path} (line "
        f"{listed(garbled, 3)})",
        file=sys.stderr,
        flush=True,
    )
  # also ends a last line that lacks its newline before anything is appended to it
  if kept != raw:
    with open(path + ".tmp", "w") as f:
      f.writelines(kept)
    os.replace(path + ".tmp", path)


def read_metrics(workdir: str) -> list[dict]:
  """Every record of ``workdir/metrics.jsonl``; a line that is not one (half written) is left out."""
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [record for record in map(_parse, f) if record is not None]
