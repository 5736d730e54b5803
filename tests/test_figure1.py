"""The Figure 1 command: cuda-convnet's four-layer net as its cfg gives it, the tanh variant computing tanh,
epochs to the threshold as read off a curve by hand, and one tiny run that writes the figure and its tables.
"""

import csv
import json
import os

import jax
import numpy as np
import pytest
from PIL import Image

from conftest import load_config
from alexnet_jax.errors import ConfigError
from experiments import figure1, figure1_net, figure1_report

# layers-18pct.cfg by hand: a 5x5 convolution with padding 2 keeps the size; a 3/2 pool with start=0,
# outputsX=0 gives ceil((size - 3) / 2) + 1 outputs: 32 -> 16 -> 8 -> 4.
CFG_SHAPES = {
    "conv1": (32, 32, 32),
    "pool1": (16, 16, 32),
    "rnorm1": (16, 16, 32),
    "conv2": (16, 16, 32),
    "pool2": (8, 8, 32),
    "rnorm2": (8, 8, 32),
    "conv3": (8, 8, 64),
    "pool3": (4, 4, 64),
    "fc10": (10,),
}
# conv1 5*5*3*32+32, conv2 5*5*32*32+32, conv3 5*5*32*64+64, fc10 4*4*64*10+10
CFG_PARAMS = 2432 + 25632 + 51264 + 10250


def _params(model):
  """{"conv1/kernel": array, ...}"""
  from flax import nnx

  pure = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  return {
      f"{layer}/{name}": np.asarray(v)
      for layer, named in pure.items()
      for name, v in named.items()
  }


def _set_params(model, params):
  from flax import nnx

  state = nnx.state(model, nnx.Param)
  pure = {}
  for key, value in params.items():
    layer, name = key.split("/")
    pure.setdefault(layer, {})[name] = value
  nnx.replace_by_pure_dict(state, pure)
  nnx.update(model, state)


def test_the_network_is_layers_18pct_cfg():
  config = load_config("figure1")
  assert figure1_report.PAPER_RATIO == 6 and config.threshold == 0.25
  model = figure1_net.Figure1Net(config.model, "relu", 10, 0)
  out = jax.eval_shape(model.layers, np.zeros((2, 32, 32, 3), np.float32))
  assert {k: v.shape[1:] for k, v in out.items()} == CFG_SHAPES
  params = _params(model)
  assert sum(v.size for v in params.values()) == 89_578 == CFG_PARAMS
  # initW: N(0, initW^2) weights, conv1 0.0001, the others 0.01; biases 0 (the 4096 fc10 weights: +-5%)
  assert np.std(params["conv1/kernel"]) == pytest.approx(1e-4, rel=0.1)
  assert np.std(params["fc10/kernel"]) == pytest.approx(1e-2, rel=0.05)
  assert all(not v.any() for k, v in params.items() if "bias" in k)


def test_cuda_convnet_pooling_and_rnorm_by_hand():
  x = np.arange(16, dtype=np.float32).reshape(1, 4, 4, 1)
  # windows rows/cols [0, 3) and [2, 4): the second clipped to 2 pixels, its average over those alone
  pool = jax.jit(figure1_net.clipped_pool, static_argnums=(1, 2, 3))
  avg = pool(x, "avg", 3, 2)[0, :, :, 0]
  np.testing.assert_allclose(
      avg, [[45 / 9, 39 / 6], [66 / 6, 50 / 4]], rtol=1e-6
  )
  np.testing.assert_array_equal(
      pool(x, "max", 3, 2)[0, :, :, 0], [[10, 11], [14, 15]]
  )
  # rnorm, size 3 on a 3x3 map: the corner sees the 2x2 block around it, the centre all nine pixels;
  # scale 0.9 is 0.1 a pixel (cuda-convnet divides it by size^2)
  a = np.array([[1, 2, 0], [3, 4, 0], [0, 0, 1]], np.float32).reshape(
      1, 3, 3, 1
  )
  for power in (0.5, 0.75):
    b = jax.jit(figure1_net.spatial_response_norm, static_argnums=(1, 2, 3))(
        a, 3, 0.9, power
    )[0, :, :, 0]
    corner = 1 * (1 + 0.1 * (1 + 4 + 9 + 16)) ** -power
    centre = 4 * (1 + 0.1 * 31) ** -power
    np.testing.assert_allclose([b[0, 0], b[1, 1]], [corner, centre], rtol=1e-5)


def _reference_forward(p, x, unit):
  """The cfg's net in plain numpy, written from cuda-convnet's semantics: the reference for both units."""
  f = np.tanh if unit == "tanh" else (lambda v: np.maximum(v, 0))

  def conv(x, k, b):  # 5x5, padding 2, stride 1
    xp = np.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)))
    h, w = x.shape[1:3]
    return b + sum(
        xp[:, i : i + h, j : j + w] @ k[i, j]
        for i in range(5)
        for j in range(5)
    )

  def pool(x, reduce):  # sizeX=3, stride=2, windows clipped at the far edge
    n = int(np.ceil((x.shape[1] - 3) / 2)) + 1
    out = np.empty((x.shape[0], n, n, x.shape[3]))
    for i in range(n):
      for j in range(n):
        out[:, i, j] = reduce(
            x[:, 2 * i : 2 * i + 3, 2 * j : 2 * j + 3], axis=(1, 2)
        )
    return out

  def rnorm(
      x,
  ):  # size 3, scale 5e-5 / 9, pow 0.75, over pixels -1..+1 of each map
    out = np.empty_like(x)
    for i in range(x.shape[1]):
      for j in range(x.shape[2]):
        window = x[:, max(i - 1, 0) : i + 2, max(j - 1, 0) : j + 2]
        out[:, i, j] = (
            x[:, i, j] * (1 + 5e-5 / 9 * (window**2).sum(axis=(1, 2))) ** -0.75
        )
    return out

  h = rnorm(pool(f(conv(x, p["conv1/kernel"], p["conv1/bias"])), np.max))
  h = rnorm(pool(f(conv(h, p["conv2/kernel"], p["conv2/bias"])), np.mean))
  h = pool(f(conv(h, p["conv3/kernel"], p["conv3/bias"])), np.mean)
  return h.reshape(len(x), -1) @ p["fc10/kernel"] + p["fc10/bias"]


def test_tanh_and_relu_nets_match_a_numpy_forward_written_from_the_cfg():
  config = load_config("figure1")
  # an 8x8 input: 8 -> 4 -> 2 -> 1 (the last pool's one window clipped to 2x2); weights large enough
  # for tanh to bend and ReLUs to cut
  config.model.image_size = 8
  config.model.init_std = (0.3, 0.2, 0.2, 0.2)
  rng = np.random.default_rng(0)
  x = rng.normal(0, 1, (2, 8, 8, 3)).astype(np.float32)
  logits = {}
  for unit in ("relu", "tanh"):
    model = figure1_net.Figure1Net(config.model, unit, 10, 1)
    params = _params(model)
    for k in params:  # nonzero biases, so that each one's place is checked too
      if "bias" in k:
        params[k] = rng.normal(0, 0.5, params[k].shape).astype(np.float32)
    _set_params(model, params)
    logits[unit] = np.asarray(jax.jit(model)(x))
    np.testing.assert_allclose(
        logits[unit], _reference_forward(params, x, unit), rtol=2e-4, atol=2e-5
    )
  assert np.abs(logits["relu"] - logits["tanh"]).max() > 0.1


def _run(unit, rate, errors, status="finished", steps_per_epoch=10):
  points = [
      {
          "step": s,
          "epoch": s / steps_per_epoch,
          "train_error": e,
          "train_loss": 1.0,
      }
      for s, e in errors
  ]
  return {
      "unit": unit,
      "learning_rate": rate,
      "status": status,
      "steps_per_epoch": steps_per_epoch,
      "points": points,
      "wall_seconds": 1.0,
  }


def test_epochs_to_threshold_read_off_hand_made_curves(tmp_path):
  config = load_config("figure1")
  # ReLU first at or below 25% at step 5 (exactly 0.25: "at or below"); tanh at step 30; ratio 30 / 5 = 6
  relu = _run(
      "relu", 0.01, [(0, 0.9), (4, 0.26), (5, 0.25), (6, 0.1), (40, 0.3)]
  )
  slower = _run("relu", 0.02, [(0, 0.9), (5, 0.26)], status="slower")
  tanh = _run(
      "tanh", 0.1, [(0, 0.9), (10, 0.5), (29, 0.251), (30, 0.2), (40, 0.1)]
  )
  assert figure1_report.first_crossing(relu["points"], 0.25)["step"] == 5
  assert figure1_report.first_crossing(slower["points"], 0.25) is None
  runs = {"relu": [slower, relu], "tanh": [tanh]}
  summary = figure1_report.summarise(runs, 0.25)
  assert summary["rows"]["relu"]["run"] is relu and summary["ratio"] == 6.0
  figure1_report.write_tables(
      config, runs, summary, str(tmp_path), "cmd", "note"
  )
  with open(tmp_path / "figure1.csv") as f:
    rows = {r["network"]: r for r in csv.DictReader(f)}
  assert float(rows["relu"]["epochs_to_threshold"]) == 0.5
  assert float(rows["tanh"]["epochs_to_threshold"]) == 3.0
  assert float(rows["tanh / relu"]["epochs_to_threshold"]) == 6.0
  assert rows["tanh / relu"]["paper"] == "6"
  # a unit that never reaches it: no number, anywhere
  never = _run("tanh", 0.1, [(0, 0.9), (40, 0.26)])
  runs = {"relu": [relu], "tanh": [never]}
  summary = figure1_report.summarise(runs, 0.25)
  assert summary["ratio"] is None
  figure1_report.write_tables(
      config, runs, summary, str(tmp_path), "cmd", "note"
  )
  with open(tmp_path / "figure1.csv") as f:
    rows = {r["network"]: r for r in csv.DictReader(f)}
  assert rows["tanh"]["epochs_to_threshold"] == ""
  assert rows["tanh / relu"]["epochs_to_threshold"] == ""
  text = (tmp_path / "figure1.md").read_text()
  assert "| tanh | 0.1 | not reached |" in text
  assert "none: tanh never reached the threshold" in text


def test_measured_steps():
  config = load_config("figure1")
  config.num_epochs, config.evals_per_epoch, config.eval_every_steps = 2, 2, 4
  steps, after = figure1.measured_steps(config, 11)
  # twice an epoch (round(5.5) = 6, then the epoch's end), and every 4 steps until the crossing
  assert after == {0, 6, 11, 17, 22}
  assert steps == [0, 4, 6, 8, 11, 12, 16, 17, 20, 22]


def _tiny_config():
  config = load_config("figure1")
  # 16x16 digits, a narrower net, 5 steps of 256 an epoch, one epoch; a threshold the first steps reach
  config.model.image_size = config.data.stored_size = 16
  config.model.conv_features = (8, 8, 16)
  config.batch_size, config.num_epochs = 256, 1
  config.eval_every_steps, config.evals_per_epoch = 1, 1
  config.threshold = 0.8
  config.optimizer.learning_rates.relu = (0.005, 0.01)
  config.optimizer.learning_rates.tanh = (0.2,)
  return config


def test_a_tiny_run_writes_the_figure_and_its_tables(tmp_path, monkeypatch):
  workdir = str(tmp_path / "fig")
  summary = figure1.figure1(_tiny_config(), workdir, "cmd")
  for name in (
      "figure1.png",
      "figure1.md",
      "figure1.csv",
      "figure1_curves.csv",
  ):
    assert os.path.getsize(os.path.join(workdir, name)) > 0
  assert Image.open(os.path.join(workdir, "figure1.png")).size[0] > 300
  with open(os.path.join(workdir, "figure1.csv")) as f:
    table = {r["network"]: r for r in csv.DictReader(f)}
  assert set(table) == {"relu", "tanh", "tanh / relu"}
  with open(os.path.join(workdir, "figure1_curves.csv")) as f:
    curves = list(csv.DictReader(f))
  runs = {
      name: json.load(open(os.path.join(workdir, "runs", name)))
      for name in os.listdir(os.path.join(workdir, "runs"))
  }
  assert set(runs) == {
      "relu-lr0.005.json",
      "relu-lr0.01.json",
      "tanh-lr0.2.json",
  }
  assert len(curves) == sum(len(r["points"]) for r in runs.values())
  for unit in ("relu", "tanh"):
    crossed = summary["rows"][unit]["crossed"]
    if crossed is None:
      assert table[unit]["epochs_to_threshold"] == ""
    else:  # the table's number is the drawn curve's first measurement at or below the threshold
      drawn = [
          r for r in curves if r["network"] == unit and r["drawn"] == "True"
      ]
      first = next(r for r in drawn if float(r["train_error"]) <= 0.8)
      assert float(table[unit]["epochs_to_threshold"]) == float(first["epoch"])
      assert float(first["epoch"]) == int(first["step"]) / 5
  md = open(os.path.join(workdir, "figure1.md")).read()
  assert "**Not CIFAR-10**" in md and "1,437 training images" in md

  # The same config again: the finished runs are reused, nothing trains.
  monkeypatch.setattr(figure1, "train_run", lambda *a: pytest.fail("retrained"))
  again = figure1.figure1(_tiny_config(), workdir, "cmd")
  assert again["ratio"] == summary["ratio"]
  # Another config in the same directory: refused, nothing written.
  other = _tiny_config()
  other.threshold = 0.7
  before = open(os.path.join(workdir, "figure1.csv")).read()
  with pytest.raises(
      ConfigError, match="holds a Figure 1 run of another config"
  ):
    figure1.figure1(other, workdir, "cmd")
  assert open(os.path.join(workdir, "figure1.csv")).read() == before


def test_the_command_refuses_a_bad_value_in_one_line(tmp_path):
  import subprocess
  import sys

  from conftest import ROOT, last_line

  done = subprocess.run(
      [
          sys.executable,
          "experiments/figure1.py",
          f"--workdir={tmp_path / 'fig'}",
          "--config.threshold=1.5",
      ],
      cwd=ROOT,
      capture_output=True,
      text=True,
      timeout=120,
      env={**os.environ, "PYTHONPATH": ROOT},
  )
  # the default config (configs/figure1.py) took the override; nothing was read or written
  assert last_line(done) == "figure1: threshold must be in (0, 1); got 1.5"
  assert not (tmp_path / "fig").exists()


def test_the_cifar10_config_reads_cifar10_through_tfds(tmp_path):
  # TFDS's mock data stands in for a built cifar10 (32x32 RGB, 10 classes): the whole training split,
  # uint8 images at the net's 32x32, labels among the 10 classes.
  import tensorflow_datasets as tfds
  from unittest import mock

  config = figure1_config_for("cifar10")
  config.data.data_dir = str(tmp_path)
  with tfds.testing.mock_data(num_examples=6), mock.patch.object(
      tfds.core.DatasetBuilder, "is_prepared", return_value=True
  ):
    data = figure1.load_training_set(config)
  assert data.images.shape == (6, 32, 32, 3) and data.images.dtype == np.uint8
  assert data.num_classes == 10
  assert data.labels.dtype == np.int32 and set(data.labels) <= set(range(10))
  assert data.description.startswith("CIFAR-10, 6 training images of 32x32")


def figure1_config_for(data: str):
  import importlib.util

  from alexnet_jax import config_files

  path = os.path.join(config_files.CONFIG_DIR, "figure1.py")
  spec = importlib.util.spec_from_file_location("figure1_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(data)
