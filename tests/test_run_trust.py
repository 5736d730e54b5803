"""Runs you can trust: no number computed from garbage, one run per work directory, the work directory as
the run's record, a dead network caught, history never cut."""

import json
import math
import os
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from alexnet_jax.data import folder_source, input_pipeline
from alexnet_jax.training import experiment, guards, metrics, steps, train
from alexnet_jax.workdir import checkpointing, run_record
from alexnet_jax.errors import ConfigError, TrainingError
from conftest import ONE_DEVICE, ROOT, copy_of, last_line, run_cli, tiny_flags


def records(workdir):
  return metrics.read_metrics(str(workdir))


def saved_steps(workdir):
  return checkpointing.saved_steps(str(workdir))


# ----------------------------------------------------------------------------- non-finite scores


def test_non_finite_scores_count_as_wrong():
  # label 0 is first: right at top-1
  logits = jnp.array(
      [
          [3.0, 1.0, 2.0],
          # NaN everywhere: wrong (a NaN comparison is never true)
          [np.nan, np.nan, np.nan],
          # one NaN score: the example has no ranking, wrong
          [1.0, np.nan, 0.0],
          # +inf: not a probability either, wrong
          [np.inf, 0.0, 0.0],
      ]
  )
  labels = jnp.array([0, 1, 0, 0])
  assert metrics.top_k_wrong(logits, labels, 1).tolist() == [0.0, 1.0, 1.0, 1.0]
  assert metrics.top_k_wrong(logits, labels, 2).tolist() == [0.0, 1.0, 1.0, 1.0]


def test_a_non_finite_evaluation_stops_the_run_before_its_checkpoint(
    tiny_demo_config, tmp_path, monkeypatch
):
  real = steps.evaluate

  # the network's scores blow up between the step-3 and step-6 evals
  def nan_at_step_6(*args, **kwargs):
    result = real(*args, **kwargs)
    return (
        result
        if len(saved_steps(tmp_path)) < 1
        else {**result, "eval_loss": math.nan}
    )

  monkeypatch.setattr(steps, "evaluate", nan_at_step_6)
  with pytest.raises(
      TrainingError,
      match=r"at step 6 gives non-finite scores .* latest checkpoint, step 3, is kept",
  ):
    train.train_and_evaluate(tiny_demo_config, str(tmp_path))
  assert saved_steps(tmp_path) == [3]
  # no NaN line recorded
  assert [m["step"] for m in records(tmp_path) if "eval_loss" in m] == [3]


def test_eval_refuses_a_checkpoint_whose_network_outputs_nan(
    tiny_demo_config, tmp_path
):
  tiny_demo_config.num_train_steps = 3
  train.train_and_evaluate(tiny_demo_config, str(tmp_path))
  exp = experiment.build(tiny_demo_config, str(tmp_path), resuming=True)
  ckpt = checkpointing.Checkpointer(str(tmp_path / "checkpoints"))
  experiment.restore_latest(exp, ckpt)
  # Finite but huge weights: the logits overflow to inf - inf = NaN, though every weight is a number.
  exp.state["params"]["fc8"]["kernel"] = (
      exp.state["params"]["fc8"]["kernel"] * 1e38
  )
  ckpt.save(
      4,
      exp.state,
      None,
      {"step": 4, "plateau": None, "batch_size": tiny_demo_config.batch_size},
  )
  ckpt.close()
  with pytest.raises(
      TrainingError,
      match=r"checkpoint .*checkpoints/4 at step 4 gives non-finite scores",
  ):
    train.evaluate_checkpoint(tiny_demo_config, str(tmp_path))
  assert not (tmp_path / "eval" / "step-4-views-1.json").exists()


# ----------------------------------------------------------------------------- one run per work directory


def test_a_second_run_in_the_same_workdir_is_refused_and_a_killed_run_leaves_no_lock(
    tmp_path,
):
  first = subprocess.Popen(
      [
          sys.executable,
          "-m",
          "alexnet_jax.main",
          *tiny_flags(),
          f"--workdir={tmp_path}",
          "--config.num_train_steps=100000",
          "--config.log_every_steps=1",
      ],
      cwd=ROOT,
      env={**os.environ, **ONE_DEVICE},
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
  )
  try:
    deadline = time.time() + 300
    while (
        not (tmp_path / "metrics.jsonl").exists()
        or not (tmp_path / "metrics.jsonl").read_text().strip()
    ):
      assert (
          first.poll() is None and time.time() < deadline
      ), first.communicate()[1][-3000:]
      time.sleep(0.2)
    second = run_cli(
        "alexnet_jax.main",
        *tiny_flags(),
        f"--workdir={tmp_path}",
        "--config.num_train_steps=5",
        "--config.model.lrn=False",
        env=ONE_DEVICE,
    )
    assert last_line(second).startswith(
        f"alexnet_jax: {tmp_path} is in use by another run (pid {first.pid} on"
    )
    assert first.poll() is None  # the first run goes on
  finally:
    first.kill()
    first.communicate()
  lines_before = len(records(tmp_path))
  third = run_cli(
      "alexnet_jax.main",
      *tiny_flags(),
      f"--workdir={tmp_path}",
      "--config.num_train_steps=2",
      # SIGKILL left the lock file, but not the lock
      env=ONE_DEVICE,
  )
  assert third.returncode == 0, third.stderr[-3000:]
  assert lines_before >= 1


# ----------------------------------------------------------------------------- the run's record


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """Six steps of the tiny demo, checkpoints and evals at 3 and 6, through the command line."""
  workdir = tmp_path_factory.mktemp("trained")
  done = run_cli(
      "alexnet_jax.main",
      *tiny_flags(),
      f"--workdir={workdir}",
      "--config.num_train_steps=6",
      "--config.eval_every_steps=3",
      "--config.checkpoint_every_steps=3",
      "--config.optimizer.schedule=constant",
      env=ONE_DEVICE,
  )
  assert done.returncode == 0, done.stderr[-3000:]
  return workdir


def test_the_first_start_records_config_versions_devices_and_mesh(trained):
  record = json.loads((trained / "run.json").read_text())
  assert (
      record["config"]["model"]["dtype"] == "auto"
      and record["resolved"]["model"]["dtype"] == "float32"
  )
  assert (
      record["config"]["num_train_steps"] == 6
      and record["config"]["batch_size"] == 16
  )
  assert record["config"]["model"]["conv_features"] == [8, 16, 16, 16, 16]
  assert (
      record["resolved"]["mesh"] == {"data": 1, "model": 1}
      and record["resolved"]["steps_per_epoch"] == 1437 // 16
  )
  (start,) = record["starts"]
  assert start["step"] == 0 and start["devices"] == {
      "platform": "cpu",
      "kind": "cpu",
      "count": 1,
      "processes": 1,
  }
  assert start["mesh"] == {"data": 1, "model": 1}
  assert (
      start["versions"]["jax"] == jax.__version__
      and start["versions"]["flax"]
      and start["versions"]["grain"]
  )
  assert start["versions"]["orbax-checkpoint"] and start["versions"]["optax"]
  assert record["changes"] == []


@pytest.mark.parametrize(
    "key, value",
    [
        ("model.lrn", False),
        ("model.activation", "tanh"),
        ("model.dropout_rate", 0.3),
        ("model.overlap_pool", False),
        ("model.init", "paper"),
        ("data.pixel_scale", 1.0),
    ],
)
def test_a_config_that_changes_the_network_is_refused_against_the_record(
    trained, key, value
):
  config = run_record.recorded_config(str(trained))
  config.update_from_flattened_dict({key: value})
  with pytest.raises(
      ConfigError,
      match=rf"holds another network than this config's \({key}=.* there, "
      rf"{json.dumps(value)} here\): resume it with --config.{key}=",
  ):
    run_record.check_config(str(trained), config, "resume it")
  for training_value in (
      {"optimizer.learning_rate": 0.5},
      {"num_train_steps": 60},
      {"model.dtype": "bfloat16"},
      {"data.eval_views": 10},
      {"mesh.data": 1},
  ):
    allowed = run_record.recorded_config(str(trained))
    allowed.update_from_flattened_dict(training_value)
    # training values may change
    run_record.check_config(str(trained), allowed, "resume it")


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_a_resume_or_eval_under_another_network_stops_in_one_line(
    trained, tmp_path, mode
):
  workdir = copy_of(trained, tmp_path)
  before = (workdir / "run.json").read_text()
  done = run_cli(
      "alexnet_jax.main",
      *tiny_flags(),
      f"--workdir={workdir}",
      "--config.num_train_steps=8",
      "--config.model.lrn=False",
      f"--mode={mode}",
      env=ONE_DEVICE,
  )
  line = last_line(done)
  assert (
      "holds another network than this config's (model.lrn=true there, false here)"
      in line
  ), line
  assert (workdir / "run.json").read_text() == before and saved_steps(
      workdir
  ) == [3, 6]


@pytest.mark.parametrize("schedule", ["constant", "plateau"])
def test_a_changed_learning_rate_is_printed_recorded_and_applied(
    tiny_demo_config, tmp_path, schedule
):
  tiny_demo_config.optimizer.schedule = schedule
  # no reduction: the rate stays the configured one
  tiny_demo_config.optimizer.patience = 100
  tiny_demo_config.num_train_steps = 3
  train.train_and_evaluate(tiny_demo_config, str(tmp_path))
  resumed = tiny_demo_config.copy_and_resolve_references()
  resumed.num_train_steps = 5
  resumed.optimizer.learning_rate = 0.004
  train.train_and_evaluate(resumed, str(tmp_path))
  rates = {
      m["step"]: m["learning_rate"]
      for m in records(tmp_path)
      if "learning_rate" in m
  }
  assert (
      rates[3] == pytest.approx(0.01)
      and rates[4] == pytest.approx(0.004)
      and rates[5] == pytest.approx(0.004)
  )
  changes = json.loads((tmp_path / "run.json").read_text())["changes"]
  assert [(c["step"], c["key"], c["from"], c["to"]) for c in changes] == [
      (3, "num_train_steps", 3, 5),
      (3, "optimizer.learning_rate", 0.01, 0.004),
  ]


def test_tools_need_only_the_workdir_and_eval_writes_its_result(
    trained, tmp_path
):
  workdir = copy_of(trained, tmp_path)
  logged = {m["step"]: m for m in records(workdir) if "eval_loss" in m}
  for step in (3, None):
    flags = [] if step is None else [f"--step={step}"]
    done = run_cli(
        "alexnet_jax.main",
        f"--workdir={workdir}",
        "--mode=eval",
        *flags,
        env=ONE_DEVICE,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    saved = json.loads(
        (workdir / "eval" / f"step-{step or 6}-views-1.json").read_text()
    )
    assert set(saved) >= {
        "step",
        "views",
        "top1_error",
        "top5_error",
        "loss",
        "images",
    }
    assert (
        saved["step"] == (step or 6)
        and saved["views"] == 1
        and saved["images"] == 360
    )
    # The same weights as the run's own evaluation at that step: the same numbers.
    assert saved["top1_error"] == pytest.approx(
        logged[step or 6]["eval_top1_error"]
    )
    assert saved["loss"] == pytest.approx(
        logged[step or 6]["eval_loss"], rel=1e-5
    )
  missing = run_cli(
      "alexnet_jax.main",
      f"--workdir={workdir}",
      "--mode=eval",
      "--step=4",
      env=ONE_DEVICE,
  )
  assert "no checkpoint of step 4" in last_line(
      missing
  ) and "step 3, 6" in last_line(missing)


def test_a_finished_run_says_there_is_nothing_to_train(trained, tmp_path):
  workdir = copy_of(trained, tmp_path)
  done = run_cli("alexnet_jax.main", f"--workdir={workdir}", env=ONE_DEVICE)
  assert done.returncode == 0, done.stderr[-3000:]
  assert (
      "nothing to train: the latest checkpoint is step 6 and this config trains 6 steps"
      in done.stdout
  )
  assert "resuming at step" not in done.stdout


# ----------------------------------------------------------------------------- history and statistics


def test_a_fresh_start_moves_an_earlier_history_aside_instead_of_cutting_it(
    trained, tmp_path
):
  workdir = copy_of(trained, tmp_path)
  old = (workdir / "metrics.jsonl").read_text()
  events = [n for n in os.listdir(workdir) if n.startswith("events.out")]
  import shutil

  shutil.rmtree(workdir / "checkpoints")
  done = run_cli(
      "alexnet_jax.main",
      *tiny_flags(),
      f"--workdir={workdir}",
      "--config.num_train_steps=2",
      env=ONE_DEVICE,
  )
  assert done.returncode == 0, done.stderr[-3000:]
  assert f"moved it to {workdir}/previous/1" in done.stdout
  # all of it, not cut
  assert (workdir / "previous" / "1" / "metrics.jsonl").read_text() == old
  assert (
      sorted(
          n
          for n in os.listdir(workdir / "previous" / "1")
          if n.startswith("events.out")
      )
      == events
  )
  assert (workdir / "previous" / "1" / "run.json").exists()
  # the new run's only log step
  assert [m["step"] for m in records(workdir) if "train_loss" in m] == [2]
  # the new run's events stand alone
  assert not set(events) & set(os.listdir(workdir))


def test_a_half_written_metrics_line_does_not_block_a_resume(trained, tmp_path):
  workdir = copy_of(trained, tmp_path)
  with open(workdir / "metrics.jsonl", "a") as f:
    f.write('{"step": 7, "train_lo')  # killed mid-write
  done = run_cli(
      "alexnet_jax.main",
      *tiny_flags(),
      f"--workdir={workdir}",
      "--config.num_train_steps=7",
      "--config.eval_every_steps=3",
      "--config.checkpoint_every_steps=3",
      "--config.optimizer.schedule=constant",
      env=ONE_DEVICE,
  )
  assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr[
      -3000:
  ]
  assert "dropped 1 unreadable line(s)" in done.stderr
  lines = (workdir / "metrics.jsonl").read_text().splitlines()
  # every line parses again
  assert all(json.loads(line)["step"] <= 7 for line in lines)
  # the old run's log, then the new
  assert [m["step"] for m in records(workdir) if "train_loss" in m] == [6, 7]


def write_folder(root, colours):
  """``root/{train,val}/CLASS/i.png``: solid-colour images, a colour per class."""
  for split in ("train", "val"):
    for name, colour in colours.items():
      os.makedirs(root / split / name, exist_ok=True)
      for i in range(3):
        Image.new("RGB", (80, 80), tuple(int(c) + i for c in colour)).save(
            root / split / name / f"{i}.png"
        )


def test_dataset_statistics_are_keyed_on_the_data_they_describe(tmp_path):
  class Data:  # the fields of config.data the identity reads
    source, name, train_split = "folder", "", "train"

  write_folder(tmp_path / "a", {"x": (10, 20, 30), "y": (40, 50, 60)})
  write_folder(tmp_path / "b", {"x": (200, 100, 0), "y": (100, 200, 250)})
  a, b = folder_source.load(str(tmp_path / "a"), 64), folder_source.load(
      str(tmp_path / "b"), 64
  )
  cache = str(tmp_path / "work" / "data_stats.npz")
  mean_a = input_pipeline.training_stats(
      a, cache, input_pipeline.data_identity(a, Data)
  ).mean_image
  # Six solid images per set: the mean image is the mean of their colours, pixel for pixel.
  expected_b = np.mean(
      [
          np.array(c) + i
          for c in ((200, 100, 0), (100, 200, 250))
          for i in range(3)
      ],
      axis=0,
  )
  assert np.allclose(
      mean_a[0, 0],
      np.mean(
          [
              np.array(c) + i
              for c in ((10, 20, 30), (40, 50, 60))
              for i in range(3)
          ],
          axis=0,
      ),
  )
  with pytest.raises(ConfigError, match="computed from other training data"):
    # a resume
    input_pipeline.training_stats(
        b, cache, input_pipeline.data_identity(b, Data), keep=True
    )
  # a new run
  mean_b = input_pipeline.training_stats(
      b, cache, input_pipeline.data_identity(b, Data)
  ).mean_image
  assert np.allclose(mean_b, expected_b[None, None, :])
  # A moved copy of the same files is the same data.
  identity_b = input_pipeline.data_identity(b, Data)
  os.rename(tmp_path / "b", tmp_path / "b-moved")
  moved = folder_source.load(str(tmp_path / "b-moved"), 64)
  assert input_pipeline.data_identity(moved, Data) == identity_b


def test_a_workdir_in_the_way_of_the_statistics_cache_stops_in_one_line(
    tmp_path,
):
  write_folder(tmp_path / "data", {"x": (10, 20, 30), "y": (40, 50, 60)})
  workdir = tmp_path / "run"
  # something in the way of the cache's write
  (workdir / "data_stats.npz.tmp.npz").mkdir(parents=True)
  done = run_cli(
      "alexnet_jax.main",
      *tiny_flags(),
      f"--workdir={workdir}",
      "--config.data.source=folder",
      f"--config.data.data_dir={tmp_path / 'data'}",
      "--config.model.num_classes=2",
      "--config.num_train_steps=1",
      "--config.batch_size=2",
      env=ONE_DEVICE,
  )
  assert last_line(done).startswith(
      f"alexnet_jax: cannot write {workdir}/data_stats.npz"
  )


def test_an_empty_workdir_flag_stops_in_one_line_and_leaves_nothing_behind():
  existed = os.path.exists(os.path.join(ROOT, "checkpoints"))
  done = run_cli(
      "alexnet_jax.main", *tiny_flags(), "--workdir=", env=ONE_DEVICE
  )
  assert "--workdir is empty" in last_line(done)
  assert os.path.exists(os.path.join(ROOT, "checkpoints")) == existed


# ----------------------------------------------------------------------------- full disk


def test_a_full_disk_at_a_checkpoint_stops_with_one_line_and_keeps_the_last_one(
    tiny_demo_config, tmp_path, monkeypatch
):
  free = {"bytes": 10**12}
  monkeypatch.setattr(guards, "free_bytes", lambda path: free["bytes"])
  real_save = checkpointing.Checkpointer.save

  def save_then_fill(self, step, *args):
    done = real_save(self, step, *args)
    free["bytes"] = 1000  # the disk is full after the first checkpoint
    return done

  monkeypatch.setattr(checkpointing.Checkpointer, "save", save_then_fill)
  with pytest.raises(
      TrainingError,
      match=r"no space for checkpoint .*checkpoints/6: it needs about \d+ MiB, 0 MiB "
      r"are free; stopped, the latest complete checkpoint, step 3, is kept",
  ):
    train.train_and_evaluate(tiny_demo_config, str(tmp_path))
  assert saved_steps(tmp_path) == [3]


def test_a_failing_save_stops_with_one_line(
    tiny_demo_config, tmp_path, monkeypatch
):
  import errno

  def no_space(self, step, *args):
    raise OSError(errno.ENOSPC, "No space left on device")

  monkeypatch.setattr(checkpointing.Checkpointer, "save", no_space)
  with pytest.raises(
      TrainingError,
      match=r"saving checkpoint .*checkpoints/3 failed: No space left on device "
      r"\(it needs about \d+ MiB\); stopped, no complete checkpoint",
  ):
    train.train_and_evaluate(tiny_demo_config, str(tmp_path))


# ----------------------------------------------------------------------------- a network that cannot learn


def test_a_dead_network_is_stopped_early_with_what_is_dead():
  # The paper's N(0, 0.01) on raw 0..255 digits: fc7's units die (at step ~50 for the tiny net at this rate;
  # ~13 for the demo's) and the loss stays at ln 10.
  flags = [
      *tiny_flags(),
      "--config.model.init=paper",
      "--config.data.pixel_scale=1.0",
      "--config.optimizer.learning_rate=0.05",
      "--config.num_train_steps=300",
      "--config.optimizer.schedule=constant",
      "--config.log_every_steps=5",
      "--config.dead_network_steps=30",
  ]
  import tempfile

  with tempfile.TemporaryDirectory() as workdir:
    done = run_cli(
        "alexnet_jax.main", *flags, f"--workdir={workdir}", env=ONE_DEVICE
    )
    line = last_line(done)
    assert (
        "the network stopped learning: fc7's units are zero for every image from step"
        in line
    ), line
    assert (
        "no gradient reaches fc7 or below" in line
        and "chance is ln 10 = 2.3026" in line
    )
    assert "--config.dead_network_steps=0 trains on regardless" in line
    stopped = max(m["step"] for m in records(workdir))
    # 30 dead steps after the collapse, then the next log
    assert stopped <= 120 and not saved_steps(workdir)
    regardless = run_cli(
        "alexnet_jax.main",
        *flags,
        "--config.dead_network_steps=0",
        "--config.num_train_steps=90",
        f"--workdir={workdir}x",
        env=ONE_DEVICE,
    )
    assert regardless.returncode == 0, regardless.stderr[-3000:]
    final = [m for m in records(f"{workdir}x") if "eval_top1_error" in m][-1]
    # what the check stops: a run that ends at chance
    assert final["eval_top1_error"] >= 0.85
