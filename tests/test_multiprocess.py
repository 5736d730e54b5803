"""Two local processes (one CPU device each) train like one process with two devices.

Covers towers on different processes (data=1, model=2: each process holds one tower and both load the
whole batch) and plain data parallelism (data=2, model=1: each process loads half of every batch).
"""

import os
import socket
import subprocess
import sys

import pytest

from alexnet_jax.training import metrics
from conftest import ROOT, run_cli, tiny_flags

STEPS = [
    "--config.num_train_steps=6",
    "--config.log_every_steps=1",
    "--config.eval_every_steps=3",
    "--config.checkpoint_every_steps=3",
]


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def losses(workdir):
  return {
      m["step"]: m["train_loss"]
      for m in metrics.read_metrics(str(workdir))
      if "train_loss" in m
  }


def evals(workdir):
  return {
      m["step"]: m["eval_loss"]
      for m in metrics.read_metrics(str(workdir))
      if "eval_loss" in m
  }


def eval_images(workdir):
  return [
      m["eval_images"]
      for m in metrics.read_metrics(str(workdir))
      if "eval_loss" in m
  ]


@pytest.mark.parametrize("data, model", [(1, 2), (2, 1)])
def test_two_processes_match_one_process_with_two_devices(
    tmp_path, data, model
):
  mesh = [f"--config.mesh.data={data}", f"--config.mesh.model={model}"]
  single = run_cli(
      "alexnet_jax.main",
      *tiny_flags(),
      *STEPS,
      *mesh,
      f"--workdir={tmp_path / 'single'}",
      env={"XLA_FLAGS": "--xla_force_host_platform_device_count=2"},
  )
  assert single.returncode == 0, single.stderr[-3000:]

  workdir, port = tmp_path / "multi", free_port()
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
  processes = [
      subprocess.Popen(
          [
              sys.executable,
              "-m",
              "alexnet_jax.main",
              *tiny_flags(),
              *STEPS,
              *mesh,
              f"--workdir={workdir}",
              f"--coordinator_address=127.0.0.1:{port}",
              "--num_processes=2",
              f"--process_id={i}",
          ],
          cwd=ROOT,
          env=env,
          stdout=subprocess.PIPE,
          stderr=subprocess.PIPE,
          text=True,
      )
      for i in range(2)
  ]
  outputs = [p.communicate(timeout=600) for p in processes]
  for p, (_, err) in zip(processes, outputs):
    assert p.returncode == 0, err[-3000:]

  assert list(losses(workdir)) == [1, 2, 3, 4, 5, 6]
  assert losses(workdir) == losses(tmp_path / "single")  # bit for bit
  assert evals(workdir) == pytest.approx(evals(tmp_path / "single"), rel=1e-6)
  # every eval image once, across both processes
  assert eval_images(workdir) == [360, 360]
  # only process 0 reports
  assert "eval top-1" in outputs[0][0] and "eval top-1" not in outputs[1][0]
  # one shared checkpoint
  assert sorted(
      int(n) for n in os.listdir(workdir / "checkpoints") if n.isdigit()
  ) == [3, 6]
