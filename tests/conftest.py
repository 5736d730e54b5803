"""Four simulated CPU devices for every test (set before JAX starts), and shared small configs."""

import os
import sys

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "")
    + " --xla_force_host_platform_device_count=4"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# One XLA compilation cache for the session, inherited by the CLI runs the tests start: the same tiny
# model is compiled once instead of once per process.
import tempfile  # noqa: E402

os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR",
    tempfile.mkdtemp(prefix="alexnet_jax_xla_cache_"),
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import subprocess  # noqa: E402

import pytest  # noqa: E402

from alexnet_jax.config_files import load as load_config  # noqa: E402  (configs by path, for the tests)

# A narrow AlexNet with every structural feature of the paper's (towers, LRN, overlapping pooling,
# dropout, the cross-tower layers) that compiles and runs in seconds on a CPU.
TINY_MODEL = dict(
    num_classes=10,
    image_size=64,
    conv_features=(8, 16, 16, 16, 16),
    fc_features=(32, 32),
)


@pytest.fixture
def tiny_demo_config():

  config = load_config("demo")
  config.model.update(TINY_MODEL)
  config.batch_size = 16
  config.num_train_steps = 6
  config.log_every_steps = 1
  config.eval_every_steps = 3
  config.checkpoint_every_steps = 3
  config.optimizer.schedule = "plateau"
  config.optimizer.patience = 1
  return config


def run_cli(*args, env=None):
  """``python -m <args>`` from the repository root; returns the CompletedProcess."""
  return subprocess.run(
      [sys.executable, "-m", *args],
      cwd=ROOT,
      capture_output=True,
      text=True,
      timeout=600,
      env={**os.environ, **(env or {})},
  )


def tiny_flags():
  """Command-line flags for the demo config with the tiny model."""
  flags = [
      f"--config.model.conv_features={','.join(map(str, TINY_MODEL['conv_features']))}",
      f"--config.model.fc_features={','.join(map(str, TINY_MODEL['fc_features']))}",
  ]
  return ["--config=configs/demo.py", "--config.batch_size=16", *flags]


# One simulated device for command-line runs: a run's mesh is then the same whatever the test process has.
ONE_DEVICE = {"XLA_FLAGS": "--xla_force_host_platform_device_count=1"}


def last_line(done):
  """The one line a command that was refused printed last (after checking it failed without a traceback)."""
  assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr[
      -3000:
  ]
  return done.stderr.strip().splitlines()[-1]


def copy_of(workdir, tmp_path):
  """A copy of a shared work directory for one test to change."""
  import shutil

  target = tmp_path / "run"
  shutil.copytree(workdir, target)
  return target
