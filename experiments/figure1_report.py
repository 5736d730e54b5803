"""Figure 1's results read off the runs' curves: each unit's crossing of the threshold and its chosen run,
the ratio beside the paper's, the tables (``figure1.md``, ``figure1.csv``, ``figure1_curves.csv``) and the
figure (``figure1.png``)."""

from __future__ import annotations

import csv
import os

from alexnet_jax.errors import ConfigError
from experiments.figure1_net import UNITS

PAPER_RATIO = 6  # the caption: "six times faster"


def first_crossing(points: list[dict], threshold: float) -> dict | None:
  """The first measurement at or below ``threshold`` (not interpolated), or None."""
  return next((p for p in points if p["train_error"] <= threshold), None)


def choose(runs: list[dict], threshold: float) -> dict:
  """A unit's run: the earliest crossing, then the lower error there, then the earlier rate; when none
  crosses, the lowest final error among those that did not diverge (else the first).
  """
  crossings = []
  for i, run in enumerate(runs):
    c = first_crossing(run["points"], threshold)
    if c is not None:
      crossings.append((c["epoch"], c["train_error"], i))
  if crossings:
    return runs[min(crossings)[2]]
  finite = [r for r in runs if r["status"] != "diverged"]
  return (
      min(finite, key=lambda r: r["points"][-1]["train_error"])
      if finite
      else runs[0]
  )


def summarise(runs: dict[str, list[dict]], threshold: float) -> dict:
  """Each unit's drawn run, its crossing and last measurement; the ratio of tanh's epochs to ReLU's."""
  rows = {}
  for unit, unit_runs in runs.items():
    run = choose(unit_runs, threshold)
    rows[unit] = {
        "run": run,
        "crossed": first_crossing(run["points"], threshold),
        "final": run["points"][-1],
    }
  ratio = None
  if all(u in rows and rows[u]["crossed"] for u in UNITS):
    ratio = rows["tanh"]["crossed"]["epoch"] / rows["relu"]["crossed"]["epoch"]
  return {"rows": rows, "ratio": ratio}


def epochs_text(point: dict | None) -> str:
  return "not reached" if point is None else f"{point['epoch']:.2f}"


def ratio_text(summary: dict) -> str:
  if summary["ratio"] is not None:
    return f"{summary['ratio']:.2f}"
  rows = summary["rows"]
  never = [u for u in UNITS if u in rows and rows[u]["crossed"] is None]
  if never:
    return f"none: {' and '.join(never)} never reached the threshold"
  return "none: needs both relu and tanh"


def _times(n: int) -> str:
  return {1: "once", 2: "twice"}.get(n, f"{n} times")


ENDED = {
    "finished": "trained to the end",
    "slower": "stopped: could no longer be the fastest",
    "diverged": "stopped: the loss was not finite",
}


def write_tables(
    config, runs: dict, summary: dict, workdir: str, command: str, note: str
) -> None:
  threshold, rows = config.threshold, summary["rows"]
  with open(os.path.join(workdir, "figure1.csv"), "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(
        [
            "network",
            "learning_rate",
            "epochs_to_threshold",
            "steps_to_threshold",
            "threshold",
            "final_epoch",
            "final_train_error",
            "paper",
        ]
    )
    for unit, row in rows.items():
      c = row["crossed"]
      writer.writerow(
          [
              unit,
              row["run"]["learning_rate"],
              "" if c is None else c["epoch"],
              "" if c is None else c["step"],
              threshold,
              row["final"]["epoch"],
              row["final"]["train_error"],
              "",
          ]
      )
    ratio = summary["ratio"]
    writer.writerow(
        [
            "tanh / relu",
            "",
            "" if ratio is None else ratio,
            "",
            threshold,
            "",
            "",
            PAPER_RATIO,
        ]
    )
  with open(os.path.join(workdir, "figure1_curves.csv"), "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(
        [
            "network",
            "learning_rate",
            "drawn",
            "status",
            "step",
            "epoch",
            "train_error",
            "train_loss",
        ]
    )
    for unit, unit_runs in runs.items():
      for run in unit_runs:
        for p in run["points"]:
          writer.writerow(
              [
                  unit,
                  run["learning_rate"],
                  run is rows[unit]["run"],
                  run["status"],
                  p["step"],
                  p["epoch"],
                  p["train_error"],
                  p["train_loss"],
              ]
          )

  steps_per_epoch = next(iter(runs.values()))[0]["steps_per_epoch"]
  table = [
      f"| network | learning rate | epochs to {threshold:.0%} training error | steps | last measured |",
      "|---|---|---|---|---|",
  ]
  for unit, row in rows.items():
    c, final = row["crossed"], row["final"]
    table.append(
        f"| {unit} | {row['run']['learning_rate']:g} | {epochs_text(c)} | {'' if c is None else c['step']} | "
        f"{100 * final['train_error']:.1f}% at epoch {final['epoch']:.2f} |"
    )
  table.append(
      f"| **tanh / relu** | | **{ratio_text(summary)}** (paper: {PAPER_RATIO}) | | |"
  )
  grid = [
      f"| network | learning rate | epochs to {threshold:.0%} | ended | wall time |",
      "|---|---|---|---|---|",
  ]
  for unit, unit_runs in runs.items():
    for run in unit_runs:
      drawn = " (drawn)" if run is rows[unit]["run"] else ""
      crossing = first_crossing(run["points"], threshold)
      reached = (
          "not reached before it stopped"
          if crossing is None and run["status"] != "finished"
          else epochs_text(crossing)
      )
      grid.append(
          f"| {unit} | {run['learning_rate']:g}{drawn} | {reached} | "
          f"{ENDED[run['status']]} at epoch {run['points'][-1]['epoch']:.2f} | {run['wall_seconds']:.0f} s |"
      )
  every = (
      "after every step"
      if config.eval_every_steps == 1
      else f"every {config.eval_every_steps} steps"
  )
  text = [
      "# Figure 1: ReLU against tanh",
      "",
      note,
      "",
      f"Command: `{command}`",
      "",
      *table,
      "",
      f"Epochs to {threshold:.0%}: the first measurement of the training error at or below {threshold:.0%}, "
      f"not interpolated. The training error is the error on the whole training set in a separate pass with "
      f"the weights of that moment (not the running mean over the batches), measured {every} "
      f"({config.eval_every_steps / steps_per_epoch:.3g} epochs; an epoch is {steps_per_epoch} steps of "
      f"{config.batch_size} images) until a run reaches {threshold:.0%}, so the epochs are exact to that, and "
      f"{_times(config.evals_per_epoch)} an epoch after. The ratio is tanh's epochs over ReLU's: "
      f"{PAPER_RATIO} in the paper (its ReLU net six times faster); below 1, tanh was faster.",
      "",
      "Learning rates: each network tried every rate of its grid, from the same initial weights and batch "
      'order, and kept the one that reached the threshold first (the paper: "chosen independently to make '
      'training as fast as possible"); a run stopped once it could no longer be the fastest.',
      "",
      *grid,
      "",
      f"Training and measuring took {sum(r['wall_seconds'] for rs in runs.values() for r in rs):.0f} s in all.",
      "",
      "![Figure 1](figure1.png)",
      "",
  ]
  with open(os.path.join(workdir, "figure1.md"), "w") as f:
    f.write("\n".join(text))


def plot(config, summary: dict, workdir: str, title: str) -> None:
  try:  # an extra: only the figure needs it
    import matplotlib
  except ImportError:
    raise ConfigError(
        'figure1.png needs matplotlib: pip install "alexnet_jax[plots]" (figure1.md and the csv files '
        "are written)"
    ) from None
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(6, 4.5))
  for unit, row in summary["rows"].items():
    points = row["run"]["points"]
    ax.plot(
        [p["epoch"] for p in points],
        [p["train_error"] for p in points],
        "-"
        if unit == "relu"
        else "--",  # as the paper: ReLU solid, tanh dashed
        color="black",
        linewidth=1.5,
        label=f"{'ReLU' if unit == 'relu' else 'tanh'} (learning rate {row['run']['learning_rate']:g})",
    )
  ax.axhline(config.threshold, color="grey", linewidth=1, linestyle=":")
  ax.set_xlabel("Epochs")
  ax.set_ylabel("Training error rate")
  ax.set_xlim(0, config.num_epochs)
  ax.set_ylim(0, 1)
  ax.set_title(title, fontsize=9)
  ax.legend(fontsize=8)
  ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(os.path.join(workdir, "figure1.png"), dpi=110)
  plt.close(fig)


def data_note(config, description: str) -> str:
  if config.data.name == "cifar10":
    return f"Data: {description}, as in the paper."
  return (
      f"**Not CIFAR-10**: {description} (`data.source={config.data.source}`); the paper's measurement on "
      "other data, not its numbers."
  )
