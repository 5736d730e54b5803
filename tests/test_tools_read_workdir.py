"""Tools that read a run need only its work directory: predict, visualize, the ablation report, and imported
weights (``pretrained`` records the source's config); a given --config is checked against the run's record,
and a network whose scores are not numbers is refused, never shown as probabilities.
"""

import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from conftest import ONE_DEVICE, copy_of, last_line, load_config, run_cli, tiny_flags


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """Three steps of the tiny demo through the command line, checkpoint and eval at 3."""
  workdir = tmp_path_factory.mktemp("trained")
  done = run_cli(
      "alexnet_jax.main",
      *tiny_flags(),
      f"--workdir={workdir}",
      "--config.num_train_steps=3",
      "--config.eval_every_steps=3",
      "--config.checkpoint_every_steps=3",
      "--config.log_every_steps=1",
      env=ONE_DEVICE,
  )
  assert done.returncode == 0, done.stderr[-3000:]
  return workdir


@pytest.fixture(scope="module")
def pictures(tmp_path_factory):
  folder = tmp_path_factory.mktemp("pictures")
  rng = np.random.default_rng(0)
  paths = []
  for i in range(2):
    paths.append(str(folder / f"p{i}.png"))
    Image.fromarray(rng.integers(0, 256, (80, 90, 3), dtype=np.uint8)).save(
        paths[-1]
    )
  return paths


def test_predict_without_config_reads_the_run_and_a_given_one_must_match(
    trained, pictures
):
  own = run_cli(
      "alexnet_jax.predict",
      f"--checkpoint={trained}",
      *pictures,
      env=ONE_DEVICE,
  )
  assert own.returncode == 0, own.stderr[-3000:]
  given = run_cli(
      "alexnet_jax.predict",
      *tiny_flags(),
      f"--checkpoint={trained / 'checkpoints'}",
      *pictures,
      env=ONE_DEVICE,
  )
  assert given.returncode == 0, given.stderr[-3000:]
  assert own.stdout == given.stdout and own.stdout.count("%") == 2 * 5
  # LRN has no weights: without the record this network would load and print another network's classes.
  other = run_cli(
      "alexnet_jax.predict",
      *tiny_flags(),
      "--config.model.lrn=False",
      f"--checkpoint={trained}",
      *pictures,
      env=ONE_DEVICE,
  )
  line = last_line(other)
  assert (
      line.startswith("alexnet_jax: ")
      and "holds another network than this config's (model.lrn=" in line
  ), line
  assert "%" not in other.stdout


def test_predict_refuses_a_checkpoint_whose_network_outputs_nan(
    trained, pictures, tmp_path
):
  from alexnet_jax.training import experiment
  from alexnet_jax.workdir import checkpointing, run_record

  workdir = copy_of(trained, tmp_path)
  config = run_record.recorded_config(str(workdir))
  exp = experiment.build(config, str(workdir), resuming=True)
  ckpt = checkpointing.Checkpointer(str(workdir / "checkpoints"))
  experiment.restore_latest(exp, ckpt)
  # Finite but huge weights: the logits overflow to inf (and softmax's inf - inf to NaN), though every weight is a
  # number. fc7 too: these pictures' fc7 outputs are small enough for fc8 alone to stay finite.
  params = exp.state["params"]
  params["fc7"]["kernel"], params["fc8"]["kernel"] = (
      params["fc7"]["kernel"] * 1e3,
      params["fc8"]["kernel"] * 1e38,
  )
  ckpt.save(
      4,
      exp.state,
      None,
      {"step": 4, "plateau": None, "batch_size": config.batch_size},
  )
  ckpt.close()
  done = run_cli(
      "alexnet_jax.predict",
      f"--checkpoint={workdir}",
      *pictures,
      env=ONE_DEVICE,
  )
  line = last_line(done)
  assert line == (
      f"alexnet_jax: checkpoint {workdir / 'checkpoints' / '4'}: the network outputs non-finite scores "
      f"(NaN or inf) for 2 of 2 images: these weights diverged; no probabilities to show"
  ), line
  assert "%" not in done.stdout and "nan" not in done.stdout


def test_a_workdir_without_a_record_needs_config(trained, pictures, tmp_path):
  workdir = copy_of(trained, tmp_path)
  os.remove(workdir / "run.json")
  done = run_cli(
      "alexnet_jax.predict",
      f"--checkpoint={workdir}",
      *pictures,
      env=ONE_DEVICE,
  )
  assert last_line(done) == (
      f"alexnet_jax: give --config: {workdir} holds no run.json to take it from (no run of "
      "this version started there)"
  )


def test_visualize_filters_without_config(trained, tmp_path):
  out = tmp_path / "filters.png"
  done = run_cli(
      "alexnet_jax.visualize",
      "filters",
      f"--checkpoint={trained}",
      f"--out={out}",
      env=ONE_DEVICE,
  )
  assert done.returncode == 0, done.stderr[-3000:]
  with Image.open(out) as image:
    assert image.format == "PNG"


def test_the_ablation_report_needs_only_the_workdir(trained, tmp_path):
  # A finished `paper` variant: its run, and the result the sweep writes after its two evaluations.
  shutil.copytree(trained, tmp_path / "paper")
  result = {
      "top1_centre": 0.5,
      "top5_centre": 0.1,
      "top1_10crop": 0.4,
      "top5_10crop": 0.1,
      "parameters": 11114,
  }
  (tmp_path / "paper" / "result.json").write_text(json.dumps(result))
  done = run_cli(
      "experiments.ablations", f"--workdir={tmp_path}", "--report_only"
  )
  assert done.returncode == 0, done.stderr[-3000:]
  report = (tmp_path / "results.md").read_text()
  assert (
      "`paper`" in report
      and "**Not ImageNet**: data `digits`, 64x64 input" in report
  ), report
  assert (tmp_path / "curves.png").exists()
  other = run_cli(
      "experiments.ablations",
      *tiny_flags(),
      "--config.model.lrn=False",
      f"--workdir={tmp_path}",
      "--report_only",
  )
  assert (
      other.returncode != 0
      and "holds another network than this config's (model.lrn=" in other.stderr
  )


@pytest.fixture(scope="module")
def caffe_npy(tmp_path_factory):
  """bvlc_alexnet.npy's layout with random weights (the real file is 233 MB and not bundled)."""
  rng = np.random.default_rng(1)
  shapes = {
      "conv1": (11, 11, 3, 96),
      "conv2": (5, 5, 48, 256),
      "conv3": (3, 3, 256, 384),
      "conv4": (3, 3, 192, 384),
      "conv5": (3, 3, 192, 256),
      "fc6": (9216, 4096),
      "fc7": (4096, 4096),
      "fc8": (4096, 1000),
  }
  layers = {
      name: [
          (
              rng.standard_normal(shape, np.float32)
              * np.sqrt(2 / np.prod(shape[:-1]))
          ).astype(np.float32),
          np.zeros(shape[-1], np.float32),
      ]
      for name, shape in shapes.items()
  }
  path = tmp_path_factory.mktemp("caffe") / "bvlc_alexnet.npy"
  np.save(path, layers, allow_pickle=True)
  return str(path)


def test_imported_weights_record_their_config(caffe_npy, pictures, tmp_path):
  workdir = tmp_path / "run"
  done = run_cli(
      "alexnet_jax.pretrained",
      f"--weights={caffe_npy}",
      f"--workdir={workdir}",
      env=ONE_DEVICE,
  )
  assert done.returncode == 0, done.stderr[-3000:]
  assert (
      f"python -m alexnet_jax.main --workdir={workdir} --mode=eval"
      in done.stdout
  )
  record = json.loads((workdir / "run.json").read_text())
  assert record["config"] == json.loads(
      load_config("caffe").to_json_best_effort()
  )
  assert (
      set(record) >= {"config", "resolved", "starts", "changes"}
      and record["starts"] == []
  )
  # Read back without --config: the checkpoint by its record, the file by its source's bundled config.
  from_checkpoint = run_cli(
      "alexnet_jax.predict",
      f"--checkpoint={workdir}",
      *pictures,
      env=ONE_DEVICE,
  )
  from_file = run_cli(
      "alexnet_jax.predict", f"--weights={caffe_npy}", *pictures, env=ONE_DEVICE
  )
  assert (
      from_checkpoint.returncode == 0 and from_file.returncode == 0
  ), from_checkpoint.stderr[-3000:]
  assert (
      from_checkpoint.stdout == from_file.stdout
      and from_checkpoint.stdout.count("%") == 10
  )
  # --mode=eval takes the record's config too (two towers on two of the four devices): it gets as far as the
  # data, which is not on this machine.
  evaluated = run_cli("alexnet_jax.main", f"--workdir={workdir}", "--mode=eval")
  assert (
      "give --config" not in evaluated.stderr
      and "imagenet2012" in evaluated.stderr
  ), evaluated.stderr[-3000:]
