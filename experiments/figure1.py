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

import csv
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

from alexnet_jax import cli, layers
from alexnet_jax.errors import ConfigError, UserError
from alexnet_jax.workdir import run_record

FLAGS = flags.FLAGS
UNITS = ("relu", "tanh")
PAPER_RATIO = 6  # the caption: "six times faster"
OUTPUTS = ("figure1.png", "figure1.md", "figure1.csv", "figure1_curves.csv")


# ----------------------------------------------------------------------------- The network


def pool_outputs(size: int, window: int, stride: int) -> int:
  """cuda-convnet's pool size with start=0, outputsX=0 (layer.py): ceil((size - window) / stride) + 1."""
  return math.ceil((size - window) / stride) + 1


def clipped_pool(
    x: jax.Array, kind: str, window: int, stride: int
) -> jax.Array:
  """cuda-convnet's pooling (start 0, outputsX 0): the windows that overhang the far edge are clipped; ``avg``
  divides by the pixels inside the window (conv_util.cuh's AvgPooler: regionSize).
  """
  size = x.shape[1]
  outputs = pool_outputs(size, window, stride)
  overhang = (outputs - 1) * stride + window - size
  padding = ((0, 0), (0, overhang), (0, overhang), (0, 0))
  if kind == "max":
    # the project's max pool (its backward pass is fast on CPUs) over the edge padded with -inf
    return layers.max_pool(
        jnp.pad(x, padding, constant_values=-jnp.inf),
        window=window,
        stride=stride,
    )
  if kind != "avg":
    raise ConfigError(f"model.pools: max or avg, got {kind!r}")
  total = lax.reduce_window(
      x, 0.0, lax.add, (1, window, window, 1), (1, stride, stride, 1), padding
  )
  starts = np.arange(outputs) * stride
  inside = np.minimum(starts + window, size) - starts
  return total / (inside[:, None] * inside[None, :])[None, :, :, None].astype(
      x.dtype
  )


def spatial_response_norm(
    x: jax.Array, size: int, scale: float, power: float
) -> jax.Array:
  """cuda-convnet's ``rnorm`` (conv_util.cu, convResponseNorm): each map on its own,
  b = a (1 + scale / size^2 * sum a^2)^-power, the sum over the size x size pixels from -size//2 around
  each, clipped at the edges (layer.py divides the cfg's scale by size^2)."""
  before, after = size // 2, size - size // 2 - 1
  rows, cols = x.shape[1], x.shape[2]
  padded = jnp.pad(x * x, ((0, 0), (before, after), (before, after), (0, 0)))
  # shifted slices, which XLA fuses (faster on CPUs than a reduce_window)
  total = sum(padded[:, i : i + rows] for i in range(size))
  total = sum(total[:, :, j : j + cols] for j in range(size))
  s = 1.0 + scale / size**2 * total
  if (
      power == 0.75
  ):  # s^-0.75 as rsqrt(s) * sqrt(rsqrt(s)), cheaper than exp(log)
    r = lax.rsqrt(s)
    return x * (r * jnp.sqrt(r))
  return x * s**-power


class Weights(nnx.Module):
  """One layer's kernel and bias."""

  def __init__(self, kernel: np.ndarray, bias: np.ndarray):
    self.kernel = nnx.Param(jnp.asarray(kernel))
    self.bias = nnx.Param(jnp.asarray(bias))


class Figure1Net(nnx.Module):
  """cuda-convnet's layers-18pct.cfg (configs/figure1.py): three 5x5 convolutions and one fully connected
  layer, ``unit`` (relu | tanh) as every hidden nonlinearity. Weights N(0, init_std^2) drawn with numpy
  from ``seed`` (the same on every platform, and no compilation), biases 0."""

  def __init__(self, config, unit: str, num_classes: int, seed: int):
    if unit not in UNITS:
      raise ConfigError(f"units: relu or tanh, got {unit!r}")
    self.unit = unit
    self.config = config
    rng = np.random.default_rng(seed)
    normal = lambda std, *shape: rng.normal(0, std, shape).astype(np.float32)
    channels, size, k = 3, config.image_size, config.kernel_size
    stds = tuple(config.init_std)
    convs = []
    for features, std in zip(config.conv_features, stds):
      convs.append(
          Weights(
              normal(std, k, k, channels, features),
              np.zeros(features, np.float32),
          )
      )
      channels = features
      size = pool_outputs(
          size + 2 * config.padding - k + 1,
          config.pool_window,
          config.pool_stride,
      )
    self.conv1, self.conv2, self.conv3 = convs
    self.fc10 = Weights(
        normal(stds[3], size * size * channels, num_classes),
        np.zeros(num_classes, np.float32),
    )

  def layers(self, x: jax.Array) -> dict[str, jax.Array]:
    """Every layer's output by its cfg name, in the cfg's order; ``fc10`` holds the logits. The cfg applies
    conv1's neuron after pool1 (the same for a rising f: max(f(a)) = f(max(a))).
    """
    c = self.config
    f = jax.nn.relu if self.unit == "relu" else jnp.tanh
    pool = lambda x, kind: clipped_pool(x, kind, c.pool_window, c.pool_stride)
    norm = lambda x: (
        spatial_response_norm(x, c.rnorm_size, c.rnorm_scale, c.rnorm_power)
        if c.response_norm
        else x
    )
    conv = lambda w, x: layers.conv(
        x, w.kernel, w.bias, stride=1, padding=(c.padding, c.padding)
    )
    out = {}
    out["conv1"] = f(conv(self.conv1, x))
    out["pool1"] = pool(out["conv1"], c.pools[0])
    out["rnorm1"] = norm(out["pool1"])
    out["conv2"] = f(conv(self.conv2, out["rnorm1"]))
    out["pool2"] = pool(out["conv2"], c.pools[1])
    out["rnorm2"] = norm(out["pool2"])
    out["conv3"] = f(conv(self.conv3, out["rnorm2"]))
    out["pool3"] = pool(out["conv3"], c.pools[2])
    flat = out["pool3"].reshape(x.shape[0], -1)
    out["fc10"] = flat @ self.fc10.kernel + self.fc10.bias
    return out

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.layers(x)["fc10"]


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


def first_crossing(points: list[dict], threshold: float) -> dict | None:
  """The first measurement at or below ``threshold`` (not interpolated), or None."""
  return next((p for p in points if p["train_error"] <= threshold), None)


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


def choose(runs: list[dict], threshold: float) -> dict:
  """A unit's run: the earliest crossing, then the lower error there, then the earlier rate; when none
  crosses, the lowest final error among those that did not diverge (else the first).
  """
  crossings = []
  for i, run in enumerate(runs):
    c = first_crossing(run["points"], threshold)
    if c is not None:
      crossings.append((c["epoch"], c["train_error"], i))
  if crossings:
    return runs[min(crossings)[2]]
  finite = [r for r in runs if r["status"] != "diverged"]
  return (
      min(finite, key=lambda r: r["points"][-1]["train_error"])
      if finite
      else runs[0]
  )


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


# ----------------------------------------------------------------------------- Report


def summarise(runs: dict[str, list[dict]], threshold: float) -> dict:
  """Each unit's drawn run, its crossing and last measurement; the ratio of tanh's epochs to ReLU's."""
  rows = {}
  for unit, unit_runs in runs.items():
    run = choose(unit_runs, threshold)
    rows[unit] = {
        "run": run,
        "crossed": first_crossing(run["points"], threshold),
        "final": run["points"][-1],
    }
  ratio = None
  if all(u in rows and rows[u]["crossed"] for u in UNITS):
    ratio = rows["tanh"]["crossed"]["epoch"] / rows["relu"]["crossed"]["epoch"]
  return {"rows": rows, "ratio": ratio}


def _epochs(point: dict | None) -> str:
  return "not reached" if point is None else f"{point['epoch']:.2f}"


def ratio_text(summary: dict) -> str:
  if summary["ratio"] is not None:
    return f"{summary['ratio']:.2f}"
  rows = summary["rows"]
  never = [u for u in UNITS if u in rows and rows[u]["crossed"] is None]
  if never:
    return f"none: {' and '.join(never)} never reached the threshold"
  return "none: needs both relu and tanh"


def _times(n: int) -> str:
  return {1: "once", 2: "twice"}.get(n, f"{n} times")


ENDED = {
    "finished": "trained to the end",
    "slower": "stopped: could no longer be the fastest",
    "diverged": "stopped: the loss was not finite",
}


def write_tables(
    config, runs: dict, summary: dict, workdir: str, command: str, note: str
) -> None:
  threshold, rows = config.threshold, summary["rows"]
  with open(os.path.join(workdir, "figure1.csv"), "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(
        [
            "network",
            "learning_rate",
            "epochs_to_threshold",
            "steps_to_threshold",
            "threshold",
            "final_epoch",
            "final_train_error",
            "paper",
        ]
    )
    for unit, row in rows.items():
      c = row["crossed"]
      writer.writerow(
          [
              unit,
              row["run"]["learning_rate"],
              "" if c is None else c["epoch"],
              "" if c is None else c["step"],
              threshold,
              row["final"]["epoch"],
              row["final"]["train_error"],
              "",
          ]
      )
    ratio = summary["ratio"]
    writer.writerow(
        [
            "tanh / relu",
            "",
            "" if ratio is None else ratio,
            "",
            threshold,
            "",
            "",
            PAPER_RATIO,
        ]
    )
  with open(os.path.join(workdir, "figure1_curves.csv"), "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(
        [
            "network",
            "learning_rate",
            "drawn",
            "status",
            "step",
            "epoch",
            "train_error",
            "train_loss",
        ]
    )
    for unit, unit_runs in runs.items():
      for run in unit_runs:
        for p in run["points"]:
          writer.writerow(
              [
                  unit,
                  run["learning_rate"],
                  run is rows[unit]["run"],
                  run["status"],
                  p["step"],
                  p["epoch"],
                  p["train_error"],
                  p["train_loss"],
              ]
          )

  steps_per_epoch = next(iter(runs.values()))[0]["steps_per_epoch"]
  table = [
      f"| network | learning rate | epochs to {threshold:.0%} training error | steps | last measured |",
      "|---|---|---|---|---|",
  ]
  for unit, row in rows.items():
    c, final = row["crossed"], row["final"]
    table.append(
        f"| {unit} | {row['run']['learning_rate']:g} | {_epochs(c)} | {'' if c is None else c['step']} | "
        f"{100 * final['train_error']:.1f}% at epoch {final['epoch']:.2f} |"
    )
  table.append(
      f"| **tanh / relu** | | **{ratio_text(summary)}** (paper: {PAPER_RATIO}) | | |"
  )
  grid = [
      f"| network | learning rate | epochs to {threshold:.0%} | ended | wall time |",
      "|---|---|---|---|---|",
  ]
  for unit, unit_runs in runs.items():
    for run in unit_runs:
      drawn = " (drawn)" if run is rows[unit]["run"] else ""
      crossing = first_crossing(run["points"], threshold)
      reached = (
          "not reached before it stopped"
          if crossing is None and run["status"] != "finished"
          else _epochs(crossing)
      )
      grid.append(
          f"| {unit} | {run['learning_rate']:g}{drawn} | {reached} | "
          f"{ENDED[run['status']]} at epoch {run['points'][-1]['epoch']:.2f} | {run['wall_seconds']:.0f} s |"
      )
  every = (
      "after every step"
      if config.eval_every_steps == 1
      else f"every {config.eval_every_steps} steps"
  )
  text = [
      "# Figure 1: ReLU against tanh",
      "",
      note,
      "",
      f"Command: `{command}`",
      "",
      *table,
      "",
      f"Epochs to {threshold:.0%}: the first measurement of the training error at or below {threshold:.0%}, "
      f"not interpolated. The training error is the error on the whole training set in a separate pass with "
      f"the weights of that moment (not the running mean over the batches), measured {every} "
      f"({config.eval_every_steps / steps_per_epoch:.3g} epochs; an epoch is {steps_per_epoch} steps of "
      f"{config.batch_size} images) until a run reaches {threshold:.0%}, so the epochs are exact to that, and "
      f"{_times(config.evals_per_epoch)} an epoch after. The ratio is tanh's epochs over ReLU's: "
      f"{PAPER_RATIO} in the paper (its ReLU net six times faster); below 1, tanh was faster.",
      "",
      "Learning rates: each network tried every rate of its grid, from the same initial weights and batch "
      'order, and kept the one that reached the threshold first (the paper: "chosen independently to make '
      'training as fast as possible"); a run stopped once it could no longer be the fastest.',
      "",
      *grid,
      "",
      f"Training and measuring took {sum(r['wall_seconds'] for rs in runs.values() for r in rs):.0f} s in all.",
      "",
      "![Figure 1](figure1.png)",
      "",
  ]
  with open(os.path.join(workdir, "figure1.md"), "w") as f:
    f.write("\n".join(text))


def plot(config, summary: dict, workdir: str, title: str) -> None:
  try:  # an extra: only the figure needs it
    import matplotlib
  except ImportError:
    raise ConfigError(
        'figure1.png needs matplotlib: pip install "alexnet_jax[plots]" (figure1.md and the csv files '
        "are written)"
    ) from None
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(6, 4.5))
  for unit, row in summary["rows"].items():
    points = row["run"]["points"]
    ax.plot(
        [p["epoch"] for p in points],
        [p["train_error"] for p in points],
        "-"
        if unit == "relu"
        else "--",  # as the paper: ReLU solid, tanh dashed
        color="black",
        linewidth=1.5,
        label=f"{'ReLU' if unit == 'relu' else 'tanh'} (learning rate {row['run']['learning_rate']:g})",
    )
  ax.axhline(config.threshold, color="grey", linewidth=1, linestyle=":")
  ax.set_xlabel("Epochs")
  ax.set_ylabel("Training error rate")
  ax.set_xlim(0, config.num_epochs)
  ax.set_ylim(0, 1)
  ax.set_title(title, fontsize=9)
  ax.legend(fontsize=8)
  ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(os.path.join(workdir, "figure1.png"), dpi=110)
  plt.close(fig)


def data_note(config, data: TrainingSet) -> str:
  if config.data.name == "cifar10":
    return f"Data: {data.description}, as in the paper."
  return (
      f"**Not CIFAR-10**: {data.description} (`data.source={config.data.source}`); the paper's measurement on "
      "other data, not its numbers."
  )


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
        config, runs, summary, workdir, command, data_note(config, data)
    )
    for unit, row in summary["rows"].items():
      print(
          f"figure1: {unit}: learning rate {row['run']['learning_rate']:g}, epochs to "
          f"{config.threshold:.0%} training error: {_epochs(row['crossed'])}",
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


flags.DEFINE_string("workdir", None, "Directory for the runs and the figure.")
config_flags.DEFINE_config_file(
    "config",
    None,
    "The Figure 1 config: configs/figure1.py (the default: the digits) or configs/figure1.py:cifar10.",
    lock_config=True,
)
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
  flags.mark_flags_as_required(["workdir"])
  if not any(a == "--config" or a.startswith("--config=") for a in TYPED):
    # as a flag, not a default: cli's parser then ends a bad --config.KEY in one line
    sys.argv.insert(1, "--config=configs/figure1.py")
  cli.run(main)
