"""The ablation sweep: variants as the paper describes them, resumable runs, and a table true to the runs."""

import csv
import json
import os

import pytest
from PIL import Image

from alexnet_jax.training import train
from conftest import load_config
from experiments import ablations

# The tiny model (conftest.TINY_MODEL) counted by hand: conv1 11*11*3*8+8, conv2 two towers of 5*5*4*8+8,
# conv3 3*3*16*16+16, conv4 and conv5 two towers of 3*3*8*8+8, fc6 16*32+32 (a 1x1x16 map at 64x64 input),
# fc7 32*32+32, fc8 32*10+10.
TINY_PARAMS = 2912 + 1616 + 2320 + 1168 + 1168 + 544 + 1056 + 330
# scale and offset per map of conv1 and conv2
TINY_BN_PARAMS = TINY_PARAMS + 2 * (8 + 16)


def _variant(name):
  return next(v for v in ablations.VARIANTS if v.name == name)


def test_variants_change_what_the_paper_changed():
  paper = load_config("paper")
  one = ablations.variant_config(paper, _variant("one_tower"))
  # §3.2: the one-GPU net halves conv1-conv4 but keeps conv5 and the FC layers.
  assert tuple(one.model.conv_features) == (48, 128, 192, 192, 256)
  assert (
      one.model.towers == 1
      and one.mesh.model == 1
      and tuple(one.model.fc_features) == (4096, 4096)
  )
  assert (
      ablations.variant_config(paper, _variant("no_overlap")).model.overlap_pool
      is False
  )
  bn = ablations.variant_config(paper, _variant("batch_norm")).model
  assert (bn.lrn, bn.batch_norm) == (False, True)
  assert paper.model.lrn is True  # the base config is left alone


def _metrics(path):
  with open(os.path.join(path, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def test_sweep_resumes_and_its_table_matches_the_runs(
    tiny_demo_config, tmp_path, monkeypatch
):
  base = tiny_demo_config
  base.num_train_steps, base.eval_every_steps, base.checkpoint_every_steps = (
      4,
      2,
      2,
  )
  workdir = str(tmp_path)

  # An interrupted variant: two of its four steps done, checkpointed, no result yet.
  partial = ablations.variant_config(base, _variant("batch_norm"))
  partial.num_train_steps = 2
  bn_dir = os.path.join(workdir, "batch_norm")
  train.train_and_evaluate(partial, bn_dir)
  lines = _metrics(bn_dir)
  # survives only if the sweep resumes instead of starting this variant again
  lines[0]["marker"] = 1
  with open(os.path.join(bn_dir, "metrics.jsonl"), "w") as f:
    f.writelines(json.dumps(line) + "\n" for line in lines)

  rows = ablations.sweep(
      base,
      workdir,
      only=["paper", "batch_norm", "no_pca"],
      threshold=0.95,
      command="test",
  )
  bn_lines = _metrics(bn_dir)
  assert bn_lines[0].get("marker") == 1
  assert [m["step"] for m in bn_lines if "train_loss" in m] == [1, 2, 3, 4]

  with open(os.path.join(workdir, "results.csv")) as f:
    table = {row["variant"]: row for row in csv.DictReader(f)}
  # no_pca: the demo has no lighting to turn off
  assert sorted(table) == ["batch_norm", "paper"]
  assert [r["variant"] for r in rows] == ["paper", "batch_norm"]
  for name, params in (("paper", TINY_PARAMS), ("batch_norm", TINY_BN_PARAMS)):
    lines = _metrics(os.path.join(workdir, name))
    evals = [m for m in lines if "eval_top1_error" in m]
    row = table[name]
    assert int(row["parameters"]) == params
    assert float(row["top1_error"]) == pytest.approx(
        evals[-1]["eval_top1_error"]
    )
    assert float(row["top5_error"]) == pytest.approx(
        evals[-1]["eval_top5_error"]
    )
    # The demo evaluates the centre crop, so the separate centre-crop evaluation must agree with training's.
    assert float(row["top1_centre"]) == pytest.approx(
        evals[-1]["eval_top1_error"]
    )
    best = min(evals, key=lambda m: m["eval_top1_error"])
    # 1,437 training digits / 16 per batch
    assert float(row["best_epoch"]) == pytest.approx(best["step"] / 89)
    first = next(
        (
            m["step"]
            for m in lines
            if "train_loss" in m and m["train_top1_error"] <= 0.95
        ),
        None,
    )
    assert row["steps_to_train_error"] == ("" if first is None else str(first))
  assert float(table["batch_norm"]["delta_top1"]) == pytest.approx(
      float(table["batch_norm"]["top1_error"])
      - float(table["paper"]["top1_error"])
  )

  report = open(os.path.join(workdir, "results.md")).read()
  assert "Not ImageNet" in report and "`batch_norm`" in report
  with Image.open(os.path.join(workdir, "curves.png")) as image:
    assert image.format == "PNG" and image.width > 600

  # Finished variants are read back, never trained again.
  monkeypatch.setattr(
      train,
      "train_and_evaluate",
      lambda *a: pytest.fail("a finished variant was rerun"),
  )
  again = ablations.sweep(
      base, workdir, only=["paper", "batch_norm"], command="test"
  )
  assert [r["top1_error"] for r in again] == [r["top1_error"] for r in rows]


def test_a_variant_of_another_config_is_refused(tiny_demo_config, tmp_path):
  os.makedirs(tmp_path / "paper")
  (tmp_path / "paper" / "config.json").write_text(json.dumps({"seed": 123}))
  with pytest.raises(SystemExit, match="different config"):
    ablations.sweep(tiny_demo_config, str(tmp_path), only=["paper"])
  # finished, another config
  (tmp_path / "paper" / "result.json").write_text(
      json.dumps({"top1_centre": 0.5})
  )
  with pytest.raises(SystemExit, match="different config"):
    ablations.sweep(tiny_demo_config, str(tmp_path), only=["paper"])
  with pytest.raises(SystemExit, match="unknown variant"):
    ablations.sweep(tiny_demo_config, str(tmp_path), only=["lrn_off"])
