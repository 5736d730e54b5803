"""Preemption and failures: SIGKILL and SIGTERM followed by a restart continue bit for bit; a diverging
run stops without touching its last good checkpoint; a damaged checkpoint is moved aside, never deleted;
impossible configs, and a resume with another network or batch size, stop with one line.
"""

import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from alexnet_jax.training import metrics
from conftest import ONE_DEVICE, ROOT, copy_of, last_line, run_cli, tiny_flags

STEPS = 300
RUN = [
    *tiny_flags(),
    f"--config.num_train_steps={STEPS}",
    "--config.checkpoint_every_steps=20",
    "--config.eval_every_steps=100",
    "--config.log_every_steps=1",
]


def train_losses(workdir):
  return {
      m["step"]: m["train_loss"]
      for m in metrics.read_metrics(str(workdir))
      if "train_loss" in m
  }


def complete_checkpoints(workdir):
  directory = os.path.join(workdir, "checkpoints")
  return (
      sorted(int(n) for n in os.listdir(directory) if n.isdigit())
      if os.path.isdir(directory)
      else []
  )


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("uninterrupted")
  done = run_cli(
      "alexnet_jax.main", *RUN, f"--workdir={workdir}", env=ONE_DEVICE
  )
  assert done.returncode == 0, done.stderr[-3000:]
  return train_losses(workdir)


def start(workdir):
  return subprocess.Popen(
      [sys.executable, "-m", "alexnet_jax.main", *RUN, f"--workdir={workdir}"],
      cwd=ROOT,
      env={**os.environ, **ONE_DEVICE},
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
  )


def wait_for(condition, process, timeout=300):
  deadline = time.time() + timeout
  while not condition():
    if process.poll() is not None:
      raise AssertionError(
          f"the run ended early: {process.communicate()[1][-3000:]}"
      )
    assert time.time() < deadline, "timed out"
    time.sleep(0.02)


@pytest.mark.parametrize(
    "signum", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT]
)
def test_interrupted_and_restarted_run_equals_the_uninterrupted_one(
    uninterrupted, tmp_path, signum
):
  process = start(tmp_path)
  wait_for(lambda: complete_checkpoints(tmp_path), process)
  process.send_signal(signum)
  process.communicate(timeout=120)
  stopped_at = max(train_losses(tmp_path))
  assert stopped_at < STEPS, "the run finished before it could be interrupted"
  # Ctrl-C is a SIGTERM: save where it stopped, exit cleanly
  if signum != signal.SIGKILL:
    # saved where it stopped
    assert (
        process.returncode == 0
        and complete_checkpoints(tmp_path)[-1] == stopped_at
    )

  restarted = run_cli(
      "alexnet_jax.main", *RUN, f"--workdir={tmp_path}", env=ONE_DEVICE
  )
  assert restarted.returncode == 0, restarted.stderr[-3000:]
  assert "resuming at step" in restarted.stdout
  # half-written ones cleaned up
  assert not [n for n in os.listdir(tmp_path / "checkpoints") if "tmp" in n]
  # every step's loss, bit for bit
  assert train_losses(tmp_path) == uninterrupted


def test_divergence_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
  # A learning rate of 1e30 drives the loss to inf/NaN within a few steps.
  done = run_cli(
      "alexnet_jax.main",
      *tiny_flags(),
      f"--workdir={tmp_path}",
      "--config.num_train_steps=50",
      "--config.checkpoint_every_steps=1",
      "--config.log_every_steps=5",
      "--config.optimizer.learning_rate=1e30",
      env=ONE_DEVICE,
  )
  assert done.returncode != 0 and "Traceback" not in done.stderr
  assert "training diverged at step" in done.stderr
  saved = complete_checkpoints(tmp_path)
  assert saved, done.stderr[-2000:]

  import orbax.checkpoint as ocp

  restored = ocp.CheckpointManager(
      os.path.join(tmp_path, "checkpoints")
  ).restore(
      saved[-1], args=ocp.args.Composite(state=ocp.args.StandardRestore())
  )
  leaves = [
      np.asarray(x)
      for x in __import__("jax").tree.leaves(restored["state"]["params"])
  ]
  assert all(np.all(np.isfinite(x)) for x in leaves)


SHORT = [
    *tiny_flags(),
    "--config.checkpoint_every_steps=2",
    "--config.eval_every_steps=100",
]


@pytest.fixture(scope="module")
def checkpointed(tmp_path_factory):
  """A work directory with checkpoints 2, 4 and 6; each test damages or resumes its own copy."""
  workdir = tmp_path_factory.mktemp("checkpointed")
  done = run_cli(
      "alexnet_jax.main",
      *SHORT,
      "--config.num_train_steps=6",
      f"--workdir={workdir}",
      env=ONE_DEVICE,
  )
  assert done.returncode == 0, done.stderr[-3000:]
  assert complete_checkpoints(workdir) == [2, 4, 6]
  return workdir


def flip_bytes(path):
  """Garbles the middle of the file: compressed array data that no longer decompresses."""
  data = bytearray(path.read_bytes())
  middle = slice(len(data) // 3, 2 * len(data) // 3)
  data[middle] = bytes(b ^ 0x5A for b in data[middle])
  path.write_bytes(bytes(data))


# Lost files (the arrays' metadata, the arrays themselves, the input position) and garbled array data.
@pytest.mark.parametrize(
    "lost",
    ["state/manifest.ocdbt", "state/d", "data/process_0-of-1.json", "garbled"],
)
def test_an_unreadable_checkpoint_is_moved_aside_and_training_resumes_before_it(
    checkpointed, tmp_path, lost
):
  workdir = copy_of(checkpointed, tmp_path)
  damaged = workdir / "checkpoints" / "6" / lost
  if lost == "garbled":
    flip_bytes(
        max(
            (workdir / "checkpoints" / "6" / "state").rglob("d/*"),
            key=lambda p: p.stat().st_size,
        )
    )
  elif damaged.is_dir():
    shutil.rmtree(damaged)
  else:
    damaged.unlink()
  done = run_cli(
      "alexnet_jax.main",
      *SHORT,
      "--config.num_train_steps=8",
      f"--workdir={workdir}",
      env=ONE_DEVICE,
  )
  assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr[
      -3000:
  ]
  warning = [line for line in done.stderr.splitlines() if "warning" in line]
  assert (
      len(warning) == 1
      and f"{os.path.join('checkpoints', '6')} cannot be read" in warning[0]
  ), done.stderr
  assert "6.unreadable" in warning[0] and "resuming from step 4" in warning[0]
  assert "resuming at step 4" in done.stdout
  # kept, for a person to look at
  assert (workdir / "checkpoints" / "6.unreadable" / "state").is_dir()
  # step 6 trained again and saved beside it
  assert complete_checkpoints(workdir)[-2:] == [6, 8]


def test_eval_names_an_unreadable_checkpoint_and_the_older_ones_and_moves_nothing(
    checkpointed, tmp_path
):
  workdir = copy_of(checkpointed, tmp_path)
  os.remove(workdir / "checkpoints" / "6" / "state" / "manifest.ocdbt")
  line = last_line(
      run_cli(
          "alexnet_jax.main",
          *SHORT,
          f"--workdir={workdir}",
          "--mode=eval",
          env=ONE_DEVICE,
      )
  )
  assert line.startswith(
      f"alexnet_jax: checkpoint {workdir / 'checkpoints' / '6'} cannot be read"
  ), line
  assert "older checkpoints there: step 2, 4" in line
  assert sorted(os.listdir(workdir / "checkpoints")) == ["2", "4", "6"]


def test_when_no_checkpoint_can_be_read_training_stops_and_moves_nothing(
    checkpointed, tmp_path
):
  workdir = copy_of(checkpointed, tmp_path)
  for step in ("2", "4", "6"):
    os.remove(workdir / "checkpoints" / step / "state" / "manifest.ocdbt")
  line = last_line(
      run_cli(
          "alexnet_jax.main",
          *SHORT,
          "--config.num_train_steps=8",
          f"--workdir={workdir}",
          env=ONE_DEVICE,
      )
  )
  assert (
      line.startswith("alexnet_jax: no checkpoint in")
      and "nothing was moved or deleted" in line
  ), line
  assert sorted(os.listdir(workdir / "checkpoints")) == ["2", "4", "6"]
  # the metrics of the run so far are kept too
  assert max(train_losses(workdir)) == 6


@pytest.mark.parametrize(
    "flags, message",
    [
        (
            ["--config.model.towers=1"],
            "holds another network than this config's (params/conv1/bias (2, 4) there, "
            "(1, 8) here",
        ),
        (
            ["--config.optimizer.schedule=plateau"],
            "holds another optimizer or batch-norm state",
        ),
        (
            ["--config.batch_size=8"],
            "was trained with batch_size=16, this config has batch_size=8",
        ),
    ],
    ids=["towers", "schedule", "batch_size"],
)
def test_resuming_with_another_network_or_batch_size_stops_with_one_line(
    checkpointed, tmp_path, flags, message
):
  workdir = copy_of(checkpointed, tmp_path)
  # a run of an older version: only its checkpoints tell (the record refuses first)
  os.remove(workdir / "run.json")
  line = last_line(
      run_cli(
          "alexnet_jax.main",
          *SHORT,
          "--config.num_train_steps=8",
          *flags,
          f"--workdir={workdir}",
          env=ONE_DEVICE,
      )
  )
  assert (
      line.startswith(
          f"alexnet_jax: checkpoint {workdir / 'checkpoints' / '6'} "
      )
      and message in line
  ), line
  # a changed config is not damage
  assert sorted(os.listdir(workdir / "checkpoints")) == ["2", "4", "6"]


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--config.model.towers=3"], "not divisible into model.towers=3"),
        (
            ["--config.mesh.model=3"],
            "mesh.model=3 must be a positive divisor of the 4 available devices",
        ),
        (
            ["--config.mesh.data=4", "--config.mesh.model=2"],
            "needs 8 devices, only 4 available",
        ),
        (
            ["--config.model.towers=1", "--config.mesh.model=2"],
            "model.towers=1 cannot be split over mesh.model=2",
        ),
        (
            ["--config.batch_size=18"],
            "batch_size=18 is not divisible by the data axis (mesh.data=4)",
        ),
        (["--config.batch_size=-8"], "batch_size=-8 must be positive"),
        (
            ["--config.checkpoints_to_keep=0"],
            "checkpoints_to_keep=0 must be at least 1",
        ),
        (
            ["--config.optimizer.momentum=-1"],
            "optimizer.momentum=-1.0 must not be negative",
        ),
        (
            ["--config.model.num_classes=12"],
            "the data has 10 classes but model.num_classes=12",
        ),
        (
            ["--config.eval_every_steps=0"],
            "eval_every_steps=0 must be positive",
        ),
        (
            ["--config.optimizer.weight_decey=0.1"],
            'Did you mean "weight_decay"',
        ),
        (
            ["--config.batch_size=abc"],
            "--config.batch_size=abc: invalid literal",
        ),
    ],
)
def test_impossible_configs_give_one_line(tmp_path, flags, message):
  done = run_cli(
      "alexnet_jax.main", *tiny_flags(), f"--workdir={tmp_path}", *flags
  )
  assert done.returncode != 0
  assert "Traceback" not in done.stderr
  last = done.stderr.strip().splitlines()[-1]
  assert last.startswith("alexnet_jax: ") and message in last


@pytest.mark.parametrize(
    "contents, message",
    [
        (None, "No such file or directory"),
        ("def get_config(:\n", "invalid syntax"),
    ],
)
def test_a_config_file_that_does_not_load_gives_one_line(
    tmp_path, contents, message
):
  config = tmp_path / "broken.py"
  if contents is not None:
    config.write_text(contents)
  done = run_cli(
      "alexnet_jax.main", f"--config={config}", f"--workdir={tmp_path / 'run'}"
  )
  assert done.returncode != 0 and "Traceback" not in done.stderr
  last = done.stderr.strip().splitlines()[-1]
  assert (
      last.startswith(f"alexnet_jax: cannot load --config={config}")
      and message in last
  ), last


def test_unknown_config_keys_are_named(tmp_path):
  config = tmp_path / "typo.py"
  config.write_text(
      "import importlib.util\n"
      f"spec = importlib.util.spec_from_file_location('demo', {os.path.join(ROOT, 'configs', 'demo.py')!r})\n"
      "demo = importlib.util.module_from_spec(spec)\nspec.loader.exec_module(demo)\n\n"
      "def get_config():\n  c = demo.get_config()\n  c.optimizer.weight_decey = 0.1\n  return c\n"
  )
  done = run_cli(
      "alexnet_jax.main", f"--config={config}", f"--workdir={tmp_path / 'run'}"
  )
  assert done.returncode != 0 and "Traceback" not in done.stderr
  assert (
      "unknown config key(s) optimizer.weight_decey"
      in done.stderr.strip().splitlines()[-1]
  )
