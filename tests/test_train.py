"""The training loop end to end on the demo data: metrics, evaluation of every image, exact resume."""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from alexnet_jax.data import digits, input_pipeline
from alexnet_jax.training import experiment, metrics, steps, train
from alexnet_jax.errors import UserError
from conftest import ROOT, run_cli, tiny_flags


def train_losses(workdir):
  return {
      m["step"]: m["train_loss"]
      for m in metrics.read_metrics(workdir)
      if "train_loss" in m
  }


def test_stopped_and_restarted_run_matches_an_uninterrupted_one(
    tiny_demo_config, tmp_path
):
  whole = str(tmp_path / "whole")
  final = train.train_and_evaluate(tiny_demo_config, whole)

  parts = str(tmp_path / "parts")
  first = tiny_demo_config.copy_and_resolve_references()
  # stops right after the step-3 checkpoint (and its eval)
  first.num_train_steps = 3
  train.train_and_evaluate(first, parts)
  assert sorted(os.listdir(os.path.join(parts, "checkpoints")))[:1] == ["3"]
  resumed = train.train_and_evaluate(tiny_demo_config, parts)

  # Same losses at every step after the restart: params, momentum, learning rate, data order and
  # dropout masks all continued where they stopped.
  assert train_losses(parts) == train_losses(whole)
  assert resumed == final
  lines = metrics.read_metrics(parts)
  # no step logged twice
  assert [m["step"] for m in lines if "train_loss" in m] == [1, 2, 3, 4, 5, 6]


def test_metrics_file_and_tensorboard_events(tiny_demo_config, tmp_path):
  workdir = str(tmp_path)
  tiny_demo_config.num_train_steps = 3
  train.train_and_evaluate(tiny_demo_config, workdir)
  lines = metrics.read_metrics(workdir)
  assert all("step" in m for m in lines)
  assert {"train_loss", "learning_rate", "images_per_sec"} <= set(lines[0])
  evals = [m for m in lines if "eval_loss" in m]
  assert evals and {"eval_top1_error", "eval_top5_error"} <= set(evals[-1])
  # every held-out digit, the last partial batch included
  assert evals[-1]["eval_images"] == 360
  assert any(
      name.startswith("events.out.tfevents") for name in os.listdir(workdir)
  )


def test_eval_batches_cover_every_image_once_across_processes():
  splits = digits.load(64)
  seen = []
  for process in range(3):
    batches = list(input_pipeline.eval_batches(splits, 64, 48, 1, process, 3))
    # ceil(ceil(360 / 3) / 16): the same count on every process
    assert len(batches) == 8
    for batch in batches:
      seen.extend(batch["label"][batch["mask"]].tolist())
  assert sorted(seen) == sorted(splits.eval.labels.tolist())


@pytest.mark.parametrize("views", [1, 10])
def test_evaluation_counts_errors_like_numpy(tiny_demo_config, views):
  # The device-side sums against softmax averaging and top-k computed in numpy from the same logits.
  tiny_demo_config.data.eval_views = views
  exp = experiment.build(tiny_demo_config)
  # random class biases: no exact ties in the ranking
  bias = exp.state["params"]["fc8"]["bias"]
  exp.state["params"]["fc8"]["bias"] = jax.device_put(
      np.random.default_rng(0).normal(size=bias.shape).astype(np.float32),
      bias.sharding,
  )
  got = exp.evaluate(
      steps.make_eval_step(
          exp.spec, exp.mesh, tiny_demo_config.data.pixel_scale
      )
  )
  from alexnet_jax import model as model_lib
  from alexnet_jax.data import preprocess

  probabilities, labels = [], []
  for batch in exp.eval_batches():
    b = len(batch["label"])
    images = preprocess.views_input(
        batch["image"],
        batch["offset"],
        exp.consts,
        tiny_demo_config.data.pixel_scale,
    )
    logits = np.asarray(
        model_lib.apply(exp.spec, exp.mesh, exp.state["params"], images),
        np.float64,
    )
    softmax = np.exp(logits - logits.max(1, keepdims=True))
    softmax /= softmax.sum(1, keepdims=True)
    probabilities.append(softmax.reshape(b, views, -1).mean(1)[batch["mask"]])
    labels.append(batch["label"][batch["mask"]])
  probabilities, labels = np.concatenate(probabilities), np.concatenate(labels)
  order = np.argsort(-probabilities, axis=1)
  assert got["eval_images"] == 360
  assert got["eval_top1_error"] == pytest.approx(np.mean(order[:, 0] != labels))
  assert got["eval_top5_error"] == pytest.approx(
      np.mean([l not in o[:5] for l, o in zip(labels, order)])
  )
  assert got["eval_loss"] == pytest.approx(
      -np.mean(np.log(probabilities[np.arange(len(labels)), labels])), rel=1e-4
  )


def test_cli_trains_resumes_and_evaluates(tmp_path):
  workdir = str(tmp_path / "run")
  done = run_cli(
      "alexnet_jax.main",
      *tiny_flags(),
      f"--workdir={workdir}",
      "--config.num_train_steps=4",
      "--config.checkpoint_every_steps=2",
  )
  assert done.returncode == 0, done.stderr[-3000:]
  assert (
      sorted(os.listdir(os.path.join(workdir, "checkpoints")), key=int)[-1]
      == "4"
  )
  evaluated = run_cli(
      "alexnet_jax.main", *tiny_flags(), f"--workdir={workdir}", "--mode=eval"
  )
  assert evaluated.returncode == 0, evaluated.stderr[-3000:]
  assert (
      "step 4: eval top-1 error" in evaluated.stdout
      and "(360 images)" in evaluated.stdout
  )


def test_summary_prints_the_paper_total():
  done = run_cli("alexnet_jax.summary", "--config=configs/paper.py")
  assert done.returncode == 0, done.stderr[-3000:]
  assert "total parameters: 60,965,224" in done.stdout
  assert "55x55x96" in done.stdout and "6x6x256" in done.stdout


def test_summary_of_an_odd_class_count_counts_the_real_parameters_and_names_the_padding():
  done = run_cli(
      "alexnet_jax.summary",
      "--config=configs/demo.py",
      "--config.model.num_classes=3",
      "--config.mesh.model=2",
  )
  assert done.returncode == 0, done.stderr[-3000:]
  fc8 = next(
      line for line in done.stdout.splitlines() if line.startswith("fc8 ")
  )
  assert (
      fc8.split()[1:3] == ["3", f"{4096 * 3 + 3:,}"]
      and "1 unit of padding" in fc8
  )
  # the demo's 20,209,034 with 3 classes instead of 10
  assert "total parameters: 20,180,355" in done.stdout
  assert (
      "1 unit of padding (4,097 parameters, zeros, held and computed, never read), not in the total"
      in done.stdout
  )
  assert (
      f"each device on the model axis holds {(20_180_355 + 4_097) // 2:,} parameters"
      in done.stdout
  )


def test_summary_reports_an_impossible_config_in_one_line():
  done = run_cli(
      "alexnet_jax.summary",
      "--config=configs/demo.py",
      "--config.model.towers=3",
  )
  assert done.returncode == 1
  assert done.stderr.strip().splitlines() == [
      "alexnet_jax: conv2 has 256 kernels, not divisible into model.towers=3"
  ]


@pytest.mark.parametrize("signal_name", ["SIGTERM", "SIGINT"])
def test_sigterm_and_ctrl_c_save_a_checkpoint_and_exit_cleanly(
    tmp_path, signal_name
):
  import signal
  import time

  workdir = tmp_path / "run"
  process = subprocess.Popen(
      [
          sys.executable,
          "-m",
          "alexnet_jax.main",
          *tiny_flags(),
          f"--workdir={workdir}",
          "--config.num_train_steps=100000",
          "--config.checkpoint_every_steps=100000",
          "--config.eval_every_steps=100000",
      ],
      cwd=ROOT,
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
  )
  deadline = time.time() + 300
  while (
      not (workdir / "metrics.jsonl").exists()
      or not (workdir / "metrics.jsonl").read_text().strip()
  ):
    assert (
        process.poll() is None and time.time() < deadline
    ), process.communicate()[1][-3000:]
    time.sleep(0.2)
  process.send_signal(getattr(signal, signal_name))
  stdout, stderr = process.communicate(timeout=120)
  assert process.returncode == 0 and "Traceback" not in stderr, stderr[-3000:]
  saved = [
      int(name)
      for name in os.listdir(workdir / "checkpoints")
      if name.isdigit()
  ]
  assert len(saved) == 1 and 0 < saved[0] < 100000
  assert f"{signal_name}: saved a checkpoint at step {saved[0]}" in stdout


def test_a_workdir_that_cannot_be_made_stops_with_one_line(
    tiny_demo_config, tmp_path
):
  (tmp_path / "file").write_text("in the way")
  with pytest.raises(
      UserError, match=r"cannot write to --workdir=.*file/run: Not a directory"
  ):
    train.train_and_evaluate(tiny_demo_config, str(tmp_path / "file" / "run"))
