"""The paper's Figure 1: training error against epochs for a four-layer convolutional net with ReLUs and
for the same net with tanh units, and how many times sooner the ReLUs reach 25% training error.

    python experiments/figure1.py --workdir=DIR [--config=configs/figure1.py[:cifar10]] [--config.KEY=VALUE ...]

The network, the data and the learning-rate grids are in configs/figure1.py (cuda-convnet's layers-18pct.cfg,
no regularisation). Each unit trains once per rate of its grid, from the same initial weights and batch order.
The training error is the error on the whole training set, measured in a separate pass with the weights of the
moment (not the running mean over the batches): every ``eval_every_steps`` steps until a run reaches
``threshold``, then ``evals_per_epoch`` times an epoch. A unit's rate is the one whose run first measures at
most ``threshold`` (ties: the lower error there, then the earlier rate in the grid); a run stops once it can
no longer be the fastest (past the best crossing so far without crossing) or when its loss is not finite. The
fastest run of each unit trains on to ``num_epochs`` for the figure. A unit none of whose runs crosses is
reported as not reached (its drawn curve: the run of the lowest final error).

Writes into WORKDIR: ``figure1.png`` (the figure), ``figure1.md`` and ``figure1.csv`` (each unit's epochs to
the threshold, their ratio beside the paper's 6), ``figure1_curves.csv`` (every measurement of every run),
``config.json`` and ``runs/`` (one file per finished run). The same command again reuses the finished runs
(an interrupted sweep continues); a WORKDIR that holds a run of another config is refused.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags
from flax import nnx
from jax import lax
from ml_collections import config_flags

from alexnet_jax import cli
from alexnet_jax.errors import ConfigError, UserError
from alexnet_jax.workdir import run_record

if __package__ in (None, ""):  # run as a script: python experiments/figure1.py
  sys.path.insert(
      0, os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  )
from experiments.figure1_net import UNITS, Figure1Net  # noqa: E402
from experiments.figure1_report import (  # noqa: E402
    PAPER_RATIO,
    choose,
    data_note,
    epochs_text,
    first_crossing,
    plot,
    ratio_text,
    summarise,
    write_tables,
)

FLAGS = flags.FLAGS
OUTPUTS = ("figure1.png", "figure1.md", "figure1.csv", "figure1_curves.csv")


# ----------------------------------------------------------------------------- Data


@dataclasses.dataclass
class TrainingSet:
  images: np.ndarray  # uint8 [N, S, S, 3]
  labels: np.ndarray  # int32 [N]
  num_classes: int
  description: str


def load_training_set(config) -> TrainingSet:
  """The training split that ``config.data`` names, whole, in memory: the bundled digits, or a TFDS or
  folder dataset prepared beforehand (nothing downloads)."""
  from alexnet_jax.data import sources

  size = config.model.image_size
  splits = sources.load(config.data, size)
  train = splits.train
  if hasattr(train, "images"):  # in memory already (the digits)
    images, labels = np.asarray(train.images), np.asarray(train.labels)
  else:
    s = splits.stored_size
    images = np.empty((len(train), s, s, 3), np.uint8)
    labels = np.empty(len(train), np.int32)
    for i in range(len(train)):
      record = train[i]
      images[i], labels[i] = record["image"], record["label"]
      if (i + 1) % 10000 == 0 or i + 1 == len(train):
        print(
            f"figure1: read {i + 1:,} of {len(train):,} training images",
            flush=True,
        )
  if images.shape[1:3] != (size, size):
    raise ConfigError(
        f"the data is stored at {images.shape[1]}x{images.shape[2]} but the net reads whole "
        f"{size}x{size} images: set --config.data.stored_size={size}"
    )
  name = "CIFAR-10" if config.data.name == "cifar10" else config.data.name
  return TrainingSet(
      images,
      labels.astype(np.int32),
      splits.num_classes,
      f"{name}, {len(images):,} training images of {size}x{size}, {splits.num_classes} classes",
  )


# ----------------------------------------------------------------------------- Training


def measured_steps(config, steps_per_epoch: int) -> tuple[list[int], set[int]]:
  """The steps after which the training error may be measured, and those of them measured after the run has
  reached the threshold: step 0, every ``eval_every_steps`` steps until then (where the crossing is read),
  and ``evals_per_epoch`` evenly spaced steps an epoch (each epoch's last among them) throughout.
  """
  total = config.num_epochs * steps_per_epoch
  per_epoch = {
      round(steps_per_epoch * (j + 1) / config.evals_per_epoch)
      for j in range(config.evals_per_epoch)
  } - {0}
  sparse = {0} | {
      e * steps_per_epoch + s
      for e in range(config.num_epochs)
      for s in per_epoch
  }
  dense = set(range(0, total + 1, config.eval_every_steps))
  return sorted(sparse | dense), sparse


class Steps:
  """One unit's compiled steps on one training set, shared by the runs of its grid: the initial weights
  (the same for every rate), the training step and the training-error pass. The images travel as arguments
  (a closed-over array would be compiled into the program as a constant)."""

  def __init__(self, config, unit: str, data: TrainingSet, chunk: int = 500):
    self.unit = unit
    model = Figure1Net(config.model, unit, data.num_classes, config.seed)
    graphdef, self.initial = nnx.split(model, nnx.Param)
    momentum, scale = config.optimizer.momentum, config.data.pixel_scale
    count = len(data.labels)
    self.count = count
    # cuda-convnet's CIFAR provider: the training set's mean image subtracted
    mean = data.images.mean(axis=0, dtype=np.float64).astype(np.float32)
    padding = (
        -count % chunk
    )  # the training-error pass reads chunks of `chunk` images
    self.data = jax.device_put(
        (
            mean,
            np.concatenate(
                [
                    data.images,
                    np.zeros((padding, *data.images.shape[1:]), np.uint8),
                ]
            ),
            np.concatenate([data.labels, np.zeros(padding, np.int32)]),
        )
    )

    def losses(params, mean, x, y):
      """Per-image cross-entropy, and the logits."""
      logits = nnx.merge(graphdef, params)(
          (x.astype(jnp.float32) - mean) * scale
      )
      log_p = jax.nn.log_softmax(logits)
      return -jnp.take_along_axis(log_p, y[:, None], 1)[:, 0], logits

    @jax.jit
    def train_step(params, velocity, rates, data, index):
      mean, images, labels = data
      grads = jax.grad(
          lambda p: losses(p, mean, images[index], labels[index])[0].mean()
      )(params)
      # cuda-convnet's update: inc = mom * inc - eps * (the batch's mean gradient); w += inc
      velocity = jax.tree.map(
          lambda v, g, r: momentum * v - r * g, velocity, grads, rates
      )
      return jax.tree.map(lambda p, v: p + v, params, velocity), velocity

    @jax.jit
    def training_error(params, data):
      """(error, mean loss) over the whole training set, every image once, the weights as they are."""
      mean, images, labels = data

      def one(batch):
        loss, logits = losses(params, mean, *batch)
        # scores that are not finite count as wrong (argmax could pick a NaN)
        wrong = (jnp.argmax(logits, -1) != batch[1]) | ~jnp.isfinite(
            logits
        ).all(-1)
        return wrong, loss

      wrong, loss = lax.map(
          one,
          (
              images.reshape(-1, chunk, *images.shape[1:]),
              labels.reshape(-1, chunk),
          ),
      )
      valid = jnp.arange(images.shape[0]) < count
      return (
          jnp.where(valid, wrong.reshape(-1), False).sum() / count,
          jnp.where(valid, loss.reshape(-1), 0.0).sum() / count,
      )

    self.train_step, self.training_error = train_step, training_error


def train_run(
    config, steps: Steps, learning_rate: float, beat: dict | None = None
) -> dict:
  """Trains ``steps.unit`` at one rate; returns the run: its measurements and how it ended, ``finished``,
  ``slower`` (it could no longer beat ``beat``, the best crossing so far: a measurement) or ``diverged``.
  """
  params = steps.initial
  # layer-params-18pct.cfg: epsB is bias_lr_factor times epsW
  rates = jax.tree.map_with_path(
      lambda path, _: learning_rate
      * (
          config.optimizer.bias_lr_factor
          if any(getattr(k, "key", None) == "bias" for k in path)
          else 1.0
      ),
      params,
  )
  velocity = jax.tree.map(jnp.zeros_like, params)
  count, unit = steps.count, steps.unit
  # the last partial batch of each epoch is dropped
  steps_per_epoch = count // config.batch_size
  if steps_per_epoch == 0:
    raise ConfigError(
        f"{count} training images make no batch of {config.batch_size}; lower --config.batch_size"
    )
  schedule, after_crossing = measured_steps(config, steps_per_epoch)
  label = f"{unit} lr={learning_rate:g}"
  points, status, start = [], "finished", time.perf_counter()
  step, order, crossed = 0, None, None
  for target in schedule:
    if crossed is not None and target not in after_crossing:
      continue
    while step < target:
      epoch, within = divmod(step, steps_per_epoch)
      if (
          within == 0
      ):  # a new order every epoch, the same for every unit and rate
        order = np.random.default_rng([config.seed, epoch]).permutation(count)
      batch = order[
          within * config.batch_size : (within + 1) * config.batch_size
      ]
      params, velocity = steps.train_step(
          params, velocity, rates, steps.data, batch
      )
      step += 1
    error, loss = (float(v) for v in steps.training_error(params, steps.data))
    point = {
        "step": step,
        "epoch": step / steps_per_epoch,
        "train_error": error,
        "train_loss": loss,
    }
    points.append(point)
    newly = crossed is None and error <= config.threshold
    crossed = point if newly else crossed
    if step % steps_per_epoch == 0 or newly:
      print(
          f"figure1: {label}: epoch {point['epoch']:.2f} (step {step}): training error "
          f"{100 * error:.1f}%, loss {loss:.3f} [{time.perf_counter() - start:.0f} s]"
          + (f"  <- at or below {config.threshold:.0%}" if newly else ""),
          flush=True,
      )
    if not math.isfinite(loss):
      status = "diverged"
    elif beat is not None and (
        (crossed is None and point["epoch"] >= beat["epoch"])
        or (
            newly
            and (point["epoch"], error) >= (beat["epoch"], beat["train_error"])
        )
    ):
      status = "slower"
    if status != "finished":
      print(
          f"figure1: {label}: stopped at epoch {point['epoch']:.2f} ({status})",
          flush=True,
      )
      break
  return {
      "unit": unit,
      "learning_rate": learning_rate,
      "status": status,
      "steps_per_epoch": steps_per_epoch,
      "points": points,
      "wall_seconds": round(time.perf_counter() - start, 1),
  }


def rates_of(config, unit: str) -> tuple[float, ...]:
  rates = config.optimizer.learning_rates[unit]
  if isinstance(rates, (int, float)):
    return (float(rates),)
  return tuple(float(r) for r in rates)


def check(config) -> None:
  """The config's values that cannot work, in one line, before anything is read or compiled."""
  units = tuple(config.units)
  if not units or set(units) - set(UNITS) or len(set(units)) != len(units):
    raise ConfigError(f"units: relu and/or tanh, each once; got {units}")
  for unit in units:
    if unit not in config.optimizer.learning_rates:
      raise ConfigError(f"optimizer.learning_rates.{unit} is missing")
    rates = rates_of(config, unit)
    if (
        not rates
        or any(not r > 0 for r in rates)
        or len(set(rates)) != len(rates)
    ):
      raise ConfigError(
          f"optimizer.learning_rates.{unit}: one or more different positive rates; got {rates}"
      )
  if not 0 < config.threshold < 1:
    raise ConfigError(f"threshold must be in (0, 1); got {config.threshold}")
  for key in (
      "num_epochs",
      "eval_every_steps",
      "evals_per_epoch",
      "batch_size",
  ):
    if config[key] < 1:
      raise ConfigError(f"{key} must be at least 1; got {config[key]}")
  if len(config.model.pools) != 3 or len(config.model.init_std) != 4:
    raise ConfigError(
        "model.pools needs 3 entries and model.init_std 4 (conv1-3, fc10)"
    )
  if set(config.model.pools) - {"max", "avg"}:
    raise ConfigError(
        f"model.pools: max or avg each; got {tuple(config.model.pools)}"
    )


# ----------------------------------------------------------------------------- The work directory


def claim_workdir(config, workdir: str) -> None:
  """A new WORKDIR gets the config; one that holds this config's run is continued; another's is refused."""
  path = os.path.join(workdir, "config.json")
  if os.path.exists(path):
    with open(path) as f:
      if json.load(f) != json.loads(config.to_json_best_effort()):
        raise ConfigError(
            f"{workdir} holds a Figure 1 run of another config (its config.json); use another --workdir "
            f"or delete that one"
        )
    return
  stray = [
      n for n in (*OUTPUTS, "runs") if os.path.exists(os.path.join(workdir, n))
  ]
  if stray:
    raise ConfigError(
        f"{workdir} holds {', '.join(stray)} without a config.json; use another --workdir or delete them"
    )
  with open(path, "w") as f:
    f.write(config.to_json_best_effort(indent=2))


def _run_path(workdir: str, unit: str, learning_rate: float) -> str:
  return os.path.join(workdir, "runs", f"{unit}-lr{learning_rate:g}.json")


def _save_run(workdir: str, run: dict) -> None:
  path = _run_path(workdir, run["unit"], run["learning_rate"])
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path + ".tmp", "w") as f:
    json.dump(run, f, indent=1)
  os.replace(path + ".tmp", path)  # whole or not at all: it marks the run done


def _load_run(workdir: str, unit: str, learning_rate: float) -> dict | None:
  path = _run_path(workdir, unit, learning_rate)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


# ----------------------------------------------------------------------------- The command


def figure1(config, workdir: str, command: str = "") -> dict:
  """Trains every unit at the rates it needs, writes the tables and the figure; returns the summary."""
  check(config)
  began = time.perf_counter()
  os.makedirs(workdir, exist_ok=True)
  lock = run_record.Lock(workdir)  # one run at a time in a work directory
  lock.acquire()
  try:
    claim_workdir(config, workdir)
    data = load_training_set(config)
    print(f"figure1: {data.description}", flush=True)
    runs = {}
    for unit in config.units:
      runs[unit], best, steps = [], None, None
      for rate in rates_of(config, unit):
        run = _load_run(workdir, unit, rate)
        if run is None:
          steps = steps or Steps(config, unit, data)
          run = train_run(config, steps, rate, best)
          _save_run(workdir, run)
        else:
          print(
              f"figure1: {unit} lr={rate:g}: finished before ({run['status']}), reused",
              flush=True,
          )
        runs[unit].append(run)
        best = first_crossing(
            choose(runs[unit], config.threshold)["points"], config.threshold
        )
    summary = summarise(runs, config.threshold)
    write_tables(
        config,
        runs,
        summary,
        workdir,
        command,
        data_note(config, data.description),
    )
    for unit, row in summary["rows"].items():
      print(
          f"figure1: {unit}: learning rate {row['run']['learning_rate']:g}, epochs to "
          f"{config.threshold:.0%} training error: {epochs_text(row['crossed'])}",
          flush=True,
      )
    print(
        f"figure1: tanh / relu = {ratio_text(summary)} (paper: {PAPER_RATIO}); "
        f"{time.perf_counter() - began:.0f} s; {os.path.join(workdir, 'figure1.md')}",
        flush=True,
    )
    title = (
        data.description
        if config.data.name == "cifar10"
        else f"Not CIFAR-10: {data.description}"
    )
    plot(config, summary, workdir, title)
    print(f"figure1: {os.path.join(workdir, 'figure1.png')}", flush=True)
  finally:
    lock.release()
  return summary


def define_flags() -> None:
  """The command's flags, defined when it runs (not on import: tests import this module beside
  experiments/ablations.py, which defines flags of the same names)."""
  flags.DEFINE_string("workdir", None, "Directory for the runs and the figure.")
  config_flags.DEFINE_config_file(
      "config",
      None,
      "The Figure 1 config: configs/figure1.py (the default: the digits) or configs/figure1.py:cifar10.",
      lock_config=True,
  )
  flags.mark_flags_as_required(["workdir"])


# What was typed, for the table (sys.argv gets the default --config below).
TYPED = sys.argv[1:]


def main(argv):
  if len(argv) > 1:
    raise SystemExit(f"figure1: unexpected arguments {argv[1:]}")
  # minus the machine's paths: the table records how to make it again
  args = [a for a in TYPED if not a.startswith("--workdir")]
  command = " ".join(["python experiments/figure1.py", *args, "--workdir=DIR"])
  try:
    figure1(FLAGS.config, FLAGS.workdir, command)
  except UserError as error:
    raise SystemExit(f"figure1: {error}") from None


if __name__ == "__main__":
  define_flags()
  if not any(a == "--config" or a.startswith("--config=") for a in TYPED):
    # as a flag, not a default: cli's parser then ends a bad --config.KEY in one line
    sys.argv.insert(1, "--config=configs/figure1.py")
  cli.run(main)
