"""The paper's comparisons as one sweep: each variant a separate training run, then one table and one plot.

    python experiments/ablations.py --config=configs/paper.py --workdir=runs/ablations [--config.KEY=VALUE ...]
        [--only=paper,no_lrn] [--report_only]

Each variant trains in ``WORKDIR/<variant>/`` (checkpoints, metrics.jsonl, like ``alexnet_jax.main``), then its
last checkpoint is evaluated with the centre crop and with the paper's 10 crops. A finished variant is not run
again and an interrupted one resumes from its last checkpoint, so the same command continues a stopped sweep.
The table goes to ``WORKDIR/results.md`` and ``results.csv``, the curves to ``WORKDIR/curves.png``.
Variants can run on several machines sharing ``WORKDIR`` (``--only`` on each), then ``--report_only`` anywhere:
it needs only ``--workdir`` (the variants' configs are in their ``config.json`` and ``run.json``); a given
``--config`` is checked against each reported variant's record.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import sys
import time
from typing import Callable

from absl import flags, logging
from ml_collections import config_flags

from alexnet_jax import cli

FLAGS = flags.FLAGS


@dataclasses.dataclass(frozen=True)
class Variant:
  name: str
  description: str
  changes: Callable  # base config -> {dotted key: value}
  # top-1 / top-5 error increase the paper reports for this change
  paper_delta: tuple[str, str] = ("", "")


def _one_tower(config) -> dict:
  # §3.2's one-GPU net: half the kernels in conv1-conv4; conv5 and the FC layers keep their size, so
  # both nets have about the same number of parameters.
  *first, last = config.model.conv_features
  return {
      "model.towers": 1,
      "mesh.model": 1,
      "model.conv_features": tuple(f // 2 for f in first) + (last,),
  }


VARIANTS = (
    Variant("paper", "the base config", lambda c: {}),
    Variant(
        "no_lrn",
        "no local response normalisation (§3.3)",
        lambda c: {"model.lrn": False},
        ("+1.4", "+1.2"),
    ),
    Variant(
        "no_overlap",
        "pooling z=2, s=2 instead of overlapping z=3, s=2 (§3.4)",
        lambda c: {"model.overlap_pool": False},
        ("+0.4", "+0.3"),
    ),
    Variant(
        "one_tower",
        "one tower (one GPU) with half the kernels in conv1-4 (§3.2)",
        _one_tower,
        ("+1.7", "+1.2"),
    ),
    Variant(
        "no_pca",
        "no PCA colour lighting (§4.1)",
        lambda c: {"data.pca_lighting": False},
        ("> +1", ""),
    ),
    Variant(
        "no_dropout",
        "no dropout in fc6, fc7 (§4.2)",
        lambda c: {"model.dropout_rate": 0.0},
    ),
    Variant(
        "batch_norm",
        "batch normalisation in place of LRN (not in the paper)",
        lambda c: {"model.lrn": False, "model.batch_norm": True},
    ),
    Variant(
        "tanh",
        "tanh units instead of ReLU (§3.1, Figure 1)",
        lambda c: {"model.activation": "tanh"},
    ),
)
VARIANT_NAMES = tuple(v.name for v in VARIANTS)


def variant_config(base, variant: Variant):
  config = base.copy_and_resolve_references()
  config.unlock()
  config.update_from_flattened_dict(variant.changes(base))
  return config


def _same(a, b) -> bool:
  return json.loads(a.to_json_best_effort()) == json.loads(
      b.to_json_best_effort()
  )


# ----------------------------------------------------------------------------- Running


def run_variant(config, workdir: str) -> dict:
  """Trains (or resumes) one variant, then evaluates its last checkpoint with 1 and 10 crops.
  Returns the variant's ``result.json``; raises SystemExit when a SIGTERM stopped the training.
  """
  from alexnet_jax.training import train

  result_path = os.path.join(workdir, "result.json")
  os.makedirs(workdir, exist_ok=True)
  config_path = os.path.join(workdir, "config.json")
  # checked for finished variants too: their results would be reused
  if os.path.exists(config_path):
    with open(config_path) as f:
      if json.load(f) != json.loads(config.to_json_best_effort()):
        raise SystemExit(
            f"ablations: {workdir} holds a run of a different config; use another --workdir"
        )
  else:
    with open(config_path, "w") as f:
      f.write(config.to_json_best_effort(indent=2))
  if os.path.exists(result_path):
    with open(result_path) as f:
      return json.load(f)

  start = time.perf_counter()
  try:
    outcome = train.train_and_evaluate(config, workdir)
  finally:
    _add_wall_time(workdir, time.perf_counter() - start)
  if not outcome["finished"]:
    raise SystemExit(
        f"ablations: stopped during {os.path.basename(workdir)}; run the same command to resume"
    )

  result = {}
  for views, label in ((1, "centre"), (10, "10crop")):
    eval_config = config.copy_and_resolve_references()
    eval_config.data.eval_views = views
    metrics = train.evaluate_checkpoint(eval_config, workdir)
    result[f"top1_{label}"], result[f"top5_{label}"] = float(
        metrics["eval_top1_error"]
    ), float(metrics["eval_top5_error"])
  from alexnet_jax.model import AlexNetSpec

  result["parameters"] = AlexNetSpec.from_config(config.model).num_params()
  with open(result_path + ".tmp", "w") as f:
    json.dump(result, f, indent=2)
  # written whole or not at all: it marks the variant done
  os.replace(result_path + ".tmp", result_path)
  return result


def _add_wall_time(workdir: str, seconds: float) -> None:
  path = os.path.join(workdir, "wall_seconds.txt")
  total = float(open(path).read()) if os.path.exists(path) else 0.0
  with open(path, "w") as f:
    f.write(f"{total + seconds:.1f}")


# ----------------------------------------------------------------------------- Report


def recorded_config(workdir: str):
  """A variant's config from its own files: the sweep's ``config.json``, else the run's ``run.json``."""
  import ml_collections

  from alexnet_jax.workdir import run_record

  path = os.path.join(workdir, "config.json")
  if os.path.exists(path):
    with open(path) as f:
      return ml_collections.ConfigDict(json.load(f))
  return run_record.recorded_config(workdir)


def data_note(config) -> str:
  data = (
      config.data.name
      if config.data.name == config.data.source
      else f"{config.data.source}: {config.data.name}"
  )
  return (
      "Data: ImageNet (ILSVRC-2012)."
      if config.data.name == "imagenet2012"
      else f"**Not ImageNet**: data `{data}`, {config.model.image_size}x{config.model.image_size} input; a "
      f"reduced-scale check of the paper's comparisons, not its numbers."
  )


def summarise(name: str, workdir: str, threshold: float) -> dict | None:
  """One row of the table from a finished variant's files; None if it has not finished."""
  from alexnet_jax.training.metrics import read_metrics

  result_path = os.path.join(workdir, "result.json")
  if not os.path.exists(result_path):
    return None
  with open(result_path) as f:
    result = json.load(f)
  lines = read_metrics(workdir)
  evals = [m for m in lines if "eval_top1_error" in m]
  trains = [m for m in lines if "train_loss" in m]
  best = min(evals, key=lambda m: m["eval_top1_error"])
  rates = sorted(m["images_per_sec"] for m in trains)
  reached = next(
      (m["step"] for m in trains if m["train_top1_error"] <= threshold), None
  )
  wall_path = os.path.join(workdir, "wall_seconds.txt")
  return {
      "variant": name,
      "parameters": result["parameters"],
      "top1_error": evals[-1]["eval_top1_error"],
      "top5_error": evals[-1]["eval_top5_error"],
      "top1_centre": result["top1_centre"],
      "top5_centre": result["top5_centre"],
      "top1_10crop": result["top1_10crop"],
      "top5_10crop": result["top5_10crop"],
      "best_epoch": best["epoch"],
      "best_top1_error": best["eval_top1_error"],
      "eval_images": int(evals[-1]["eval_images"]),
      "steps_to_train_error": reached,
      "images_per_sec": rates[len(rates) // 2],
      "wall_seconds": float(open(wall_path).read())
      if os.path.exists(wall_path)
      else None,
  }


def _pct(x) -> str:
  return "" if x is None else f"{100 * x:.2f}"


def write_report(
    rows: list[dict], workdir: str, command: str, threshold: float, note: str
) -> None:
  base = next((r for r in rows if r["variant"] == "paper"), None)
  by_name = {v.name: v for v in VARIANTS}
  for row in rows:
    row["delta_top1"] = row["top1_error"] - base["top1_error"] if base else None
    row["delta_top5"] = row["top5_error"] - base["top5_error"] if base else None
    row["paper_delta_top1"], row["paper_delta_top5"] = by_name[
        row["variant"]
    ].paper_delta

  with open(os.path.join(workdir, "results.csv"), "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)

  threshold_label = f"steps to {threshold:.0%} train error"
  header = [
      "variant",
      "parameters",
      "top-1 / top-5 error %",
      "Δ top-1 / top-5 (paper's)",
      "centre crop",
      "10 crops",
      "best epoch",
      threshold_label,
      "images/s",
      "wall time",
  ]
  table = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for r in rows:
    delta = (
        ""
        if r["variant"] == "paper" or base is None
        else f"{100 * r['delta_top1']:+.2f} / {100 * r['delta_top5']:+.2f}"
    )
    paper = " / ".join(
        p for p in (r["paper_delta_top1"], r["paper_delta_top5"]) if p
    )
    if paper:
      delta += f" ({paper})"
    cells = [
        f"`{r['variant']}`",
        f"{r['parameters']:,}",
        f"{_pct(r['top1_error'])} / {_pct(r['top5_error'])}",
        delta,
        f"{_pct(r['top1_centre'])} / {_pct(r['top5_centre'])}",
        f"{_pct(r['top1_10crop'])} / {_pct(r['top5_10crop'])}",
        f"{r['best_epoch']:.1f}",
        "not reached"
        if r["steps_to_train_error"] is None
        else str(r["steps_to_train_error"]),
        f"{r['images_per_sec']:,.0f}",
        ""
        if r["wall_seconds"] is None
        else f"{r['wall_seconds'] / 60:.1f} min",
    ]
    table.append("| " + " | ".join(cells) + " |")
  noise = ""
  if base:
    p, n = base["top1_error"], base["eval_images"]
    noise = (
        f"With {n:,} evaluation images, one standard error of `paper`'s top-1 error is "
        f"±{100 * (p * (1 - p) / n) ** 0.5:.2f} points: smaller differences are within noise."
    )
  descriptions = [
      f"- `{v.name}`: {v.description}"
      for v in VARIANTS
      if any(r["variant"] == v.name for r in rows)
  ]
  text = [
      "# Ablations",
      "",
      note,
      "",
      f"Command: `{command}`",
      "",
      *table,
      "",
      "Errors are the last evaluation of each run (the config's crops); Δ is against `paper` in percentage points,",
      "with the paper's reported change beside it. Centre crop and 10 crops: the last checkpoint evaluated both ways.",
      f"'{threshold_label}': the first logged step whose mean training top-1 error is at most {threshold:.0%}",
      "(the paper's Figure 1 measure).",
      noise,
      "",
      *descriptions,
      "",
      "![curves](curves.png)",
      "",
  ]
  with open(os.path.join(workdir, "results.md"), "w") as f:
    f.write("\n".join(text))


def plot_curves(names: list[str], workdir: str, threshold: float) -> None:
  try:  # an extra: only this plot needs it
    import matplotlib
  except ImportError:
    raise SystemExit(
        'ablations: the curves plot needs matplotlib: pip install "alexnet_jax[plots]"'
    ) from None
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  from alexnet_jax.training.metrics import read_metrics

  fig, (val_ax, train_ax) = plt.subplots(1, 2, figsize=(12, 4.5))
  for name in names:
    lines = read_metrics(os.path.join(workdir, name))
    evals = [m for m in lines if "eval_top1_error" in m]
    val_ax.plot(
        [m["epoch"] for m in evals],
        [100 * m["eval_top1_error"] for m in evals],
        marker=".",
        label=name,
    )
    trains = [m for m in lines if "train_loss" in m]
    steps_per_epoch = evals[-1]["step"] / evals[-1]["epoch"]
    train_ax.plot(
        [m["step"] / steps_per_epoch for m in trains],
        [100 * m["train_top1_error"] for m in trains],
        label=name,
        linewidth=1,
        marker="." if len(trains) < 30 else None,
    )
  train_ax.axhline(100 * threshold, color="grey", linestyle=":", linewidth=1)
  for ax, title in (
      (val_ax, "validation top-1 error"),
      (train_ax, "training top-1 error"),
  ):
    ax.set_xlabel("epoch")
    ax.set_ylabel("%")
    ax.set_title(title)
    ax.grid(alpha=0.3)
  val_ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(os.path.join(workdir, "curves.png"), dpi=110)
  plt.close(fig)


def report(
    workdir: str, names: list[str], command: str, threshold: float, note: str
) -> list[dict]:
  rows = [
      row
      for name in names
      if (row := summarise(name, os.path.join(workdir, name), threshold))
  ]
  if not rows:
    raise SystemExit(f"ablations: no finished variant in {workdir} to report")
  write_report(rows, workdir, command, threshold, note)
  plot_curves([r["variant"] for r in rows], workdir, threshold)
  print(
      f"ablations: {len(rows)} variant(s) in {os.path.join(workdir, 'results.md')}, results.csv, curves.png"
  )
  return rows


# ----------------------------------------------------------------------------- Sweep


def sweep(
    base,
    workdir: str,
    only: list[str] | None = None,
    report_only: bool = False,
    threshold: float = 0.25,
    command: str = "",
) -> list[dict]:
  """Runs the chosen variants of ``base`` and reports them; ``base=None`` (report only): the finished
  variants, each described by its own recorded config."""
  unknown = sorted(set(only or []) - set(VARIANT_NAMES))
  if unknown:
    raise SystemExit(
        f"ablations: unknown variant(s) {', '.join(unknown)}; known: {', '.join(VARIANT_NAMES)}"
    )
  chosen = [v for v in VARIANTS if not only or v.name in only]
  if base is None:
    if not report_only:
      raise SystemExit(
          "ablations: give --config to train the variants (--report_only needs only --workdir)"
      )
    return _report_recorded(workdir, chosen, threshold, command)
  ran = []
  for variant in chosen:
    config = variant_config(base, variant)
    if variant.name != "paper" and _same(config, base):
      print(
          f"ablations: {variant.name} is the base config itself here (already {variant.changes(base)}); skipped"
      )
      continue
    ran.append(variant.name)
    if not report_only:
      from alexnet_jax import errors, config_files
      import jax

      try:
        config_files.validate(config, jax.device_count())
      except errors.UserError as error:
        print(f"ablations: {variant.name} skipped: {error}")
        continue
      print(f"ablations: {variant.name}: {variant.description}", flush=True)
      run_variant(config, os.path.join(workdir, variant.name))
  names = [
      v.name
      for v in VARIANTS
      if v.name in ran
      or os.path.exists(os.path.join(workdir, v.name, "result.json"))
  ]
  # the table must describe the network this config says it does
  if report_only:
    from alexnet_jax.workdir import run_record

    for variant in VARIANTS:
      if variant.name in names:
        run_record.check_config(
            os.path.join(workdir, variant.name),
            variant_config(base, variant),
            "leave out --config to report it from its run.json, or report it",
        )
  return report(workdir, names, command, threshold, data_note(base))


def _report_recorded(
    workdir: str, chosen: list[Variant], threshold: float, command: str
) -> list[dict]:
  names = [
      v.name
      for v in chosen
      if os.path.exists(os.path.join(workdir, v.name, "result.json"))
  ]
  if not names:
    raise SystemExit(f"ablations: no finished variant in {workdir} to report")
  # The variants share their data: the first one's config says it.
  return report(
      workdir,
      names,
      command,
      threshold,
      data_note(recorded_config(os.path.join(workdir, names[0]))),
  )


flags.DEFINE_string(
    "workdir", None, "Directory for the variants' runs and the results."
)
flags.DEFINE_list(
    "only", [], f"Variants to run (default all): {', '.join(VARIANT_NAMES)}."
)
flags.DEFINE_bool(
    "report_only",
    False,
    "Do not train: write the table and plot from the finished variants.",
)
flags.DEFINE_float(
    "train_error_threshold",
    0.25,
    "Report the step at which training error first reaches this.",
)
config_flags.DEFINE_config_file(
    "config",
    None,
    "Base config, e.g. configs/paper.py (--report_only: optional, "
    "checked against the variants' runs).",
    lock_config=True,
)


def main(argv):
  if len(argv) > 1:
    raise SystemExit(f"ablations: unexpected arguments {argv[1:]}")
  if not FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  from alexnet_jax import errors
  # As typed, minus the machine's paths: the table records how to make it again.
  args = [a for a in sys.argv[1:] if not a.startswith("--workdir")]
  command = " ".join(
      ["python experiments/ablations.py", *args, "--workdir=DIR"]
  )
  try:
    sweep(
        FLAGS.config,
        FLAGS.workdir,
        FLAGS.only,
        FLAGS.report_only,
        FLAGS.train_error_threshold,
        command,
    )
  except errors.UserError as error:
    raise SystemExit(f"ablations: {error}") from None


if __name__ == "__main__":
  flags.mark_flags_as_required(["workdir"])
  cli.run(main, huge_pages=True)
