"""python -m alexnet_jax.ensemble: members' softmax outputs averaged per image (§6, Table 2's "5 CNNs")."""

import json
import shutil

import numpy as np
import pytest

from alexnet_jax.data import sources
from alexnet_jax.errors import ConfigError, UserError
from alexnet_jax.training import ensemble, train
from alexnet_jax.weights import inference
from alexnet_jax.workdir import run_record


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
  """Two tiny demo networks of different seeds, two steps each."""
  from conftest import TINY_MODEL, load_config

  runs = []
  for seed in (0, 1):
    config = load_config("demo")
    config.model.update(TINY_MODEL)
    config.seed = seed
    config.batch_size, config.num_train_steps, config.log_every_steps = 16, 2, 2
    config.eval_every_steps = config.checkpoint_every_steps = 2
    workdir = str(tmp_path_factory.mktemp(f"seed{seed}"))
    train.train_and_evaluate(config, workdir)
    runs.append((workdir, config))
  return runs


def test_an_ensemble_of_one_is_that_runs_evaluation(two_runs):
  workdir, config = two_runs[1]
  alone = train.evaluate_checkpoint(config, workdir)
  result = ensemble.evaluate_ensemble([workdir])
  assert result["images"] == alone["eval_images"]
  (member,) = result["members"]
  assert member["top1_error"] == alone["eval_top1_error"]
  assert member["top5_error"] == alone["eval_top5_error"]
  assert result["ensemble_top1_error"] == alone["eval_top1_error"]
  assert result["ensemble_top5_error"] == alone["eval_top5_error"]


def test_the_ensemble_averages_the_members_probabilities(two_runs, capsys):
  (a, config), (b, _) = two_runs
  result = ensemble.evaluate_ensemble([a, b])
  lines = capsys.readouterr().out.strip().splitlines()
  assert lines[-1] == json.dumps(result)
  assert lines[-3].startswith("ensemble")
  # Independently: each run's own predictor on the stored eval images (its centre crop, minus its
  # mean image), the two softmax outputs averaged, the argmax against the labels.
  splits = sources.load(config.data, config.model.image_size)
  stored = np.stack([splits.eval[i]["image"] for i in range(len(splits.eval))])
  labels = np.array([splits.eval[i]["label"] for i in range(len(splits.eval))])
  probabilities = [
      inference.load(None, w).probabilities(stored).astype(np.float64)
      for w in (a, b)
  ]
  mean = (probabilities[0] + probabilities[1]) / 2
  assert result["images"] == len(labels)
  wrong = np.sum(mean.argmax(1) != labels)
  assert round(result["ensemble_top1_error"] * len(labels)) == wrong
  for member, p in zip(result["members"], probabilities):
    assert round(member["top1_error"] * len(labels)) == np.sum(
        p.argmax(1) != labels
    )
    loss = -np.mean(np.log(p[np.arange(len(labels)), labels]))
    assert member["loss"] == pytest.approx(loss, rel=1e-5)
  # The arithmetic mean of the probabilities, not of their logs: near-uniform members, as these are,
  # have nearly the same argmax either way, but not the same loss.
  loss = -np.mean(np.log(mean[np.arange(len(labels)), labels]))
  assert result["ensemble_loss"] == pytest.approx(loss, rel=1e-5)


def _with_config(workdir, tmp_path, name, key, value):
  target = tmp_path / name
  shutil.copytree(workdir, target)
  record = run_record.read(str(target))
  section, leaf = key.split(".")
  record["config"][section][leaf] = value
  (target / run_record.RECORD).write_text(json.dumps(record))
  return str(target)


def test_members_on_other_data_are_refused(two_runs, tmp_path):
  (a, _), _ = two_runs
  with pytest.raises(UserError, match="holds no run.json"):
    ensemble.evaluate_ensemble([a, str(tmp_path)])
  # A ConfigError: commands end it in one line (tests/test_cli_errors.py).
  other = _with_config(a, tmp_path, "split", "data.eval_split", "train")
  with pytest.raises(ConfigError, match="data.eval_split"):
    ensemble.evaluate_ensemble([a, other])
  three = _with_config(a, tmp_path, "classes", "model.num_classes", 3)
  with pytest.raises(
      ConfigError,
      match=f"{three}.*model.num_classes|model.num_classes.*{three}",
  ):
    ensemble.evaluate_ensemble([a, three])
