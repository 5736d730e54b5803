"""The work directory as the run's record: who may write it (a lock), what the run is (``run.json``), and
what a fresh start does with the history of an earlier one.

``run.json`` holds the config as given and as resolved, the versions, commit, devices and mesh of every
start, and each config change made on a resume with the step at which it took effect. A resume that
changes what the network computes is refused; a change of training values is printed and recorded.
Weights imported as a checkpoint (``alexnet_jax.pretrained``) get a record without starts, its ``imported``
saying where they came from.
"""

from __future__ import annotations

import datetime
import fcntl
import json
import os
import shutil
import socket
import subprocess
from importlib import metadata
from typing import Any

import jax
import ml_collections

from alexnet_jax.errors import ConfigError, UserError
from alexnet_jax.platform import cpu_info

RECORD = "run.json"
LOCK = ".lock"
# earlier starts' history, moved aside by a fresh start: previous/1, previous/2, ...
PREVIOUS = "previous"

# Keys whose value shapes the function the network computes (or the pixels it sees): a resume that
# changes one would continue another network from these weights.
NETWORK_KEYS = (
    "model.",
    "data.source",
    "data.name",
    "data.pixel_scale",
    "data.mean_rgb",
    "data.std_rgb",
    "data.stored_size",
)
# Changes that cannot alter the network's function although they sit under model.
NOT_NETWORK_KEYS = ("model.dtype", "model.shared_input_convs")
# Keys added to the configs after runs were recorded, with the value that gives what those runs computed: a
# record without one holds that value.
ADDED_KEYS = {
    "model.extra_conv": False,
    "model.shared_input_convs": "per_tower",
}
# Imported weights were trained elsewhere on ImageNet's classes: any copy of that data (TFDS, a folder) evaluates them.
IMPORTED_FREE_KEYS = ("data.source", "data.name")
PACKAGES = (
    "alexnet_jax",
    "jax",
    "jaxlib",
    "flax",
    "optax",
    "grain",
    "orbax-checkpoint",
    "tensorflow-datasets",
    "ml_collections",
    "numpy",
)


def flat(config) -> dict[str, Any]:
  """A config (ConfigDict or nested dict) as ``{dotted key: JSON value}``; tuples become lists."""
  tree = (
      json.loads(config.to_json_best_effort())
      if hasattr(config, "to_json_best_effort")
      else config
  )
  out = {}

  def walk(node, prefix):
    for key, value in node.items():
      if isinstance(value, dict):
        walk(value, f"{prefix}{key}.")
      else:
        out[prefix + key] = value

  walk(tree, "")
  return out


def _recorded(record: dict) -> dict[str, Any]:
  """The record's config, flat, with the keys added since it was written."""
  return {**ADDED_KEYS, **flat(record["config"])}


def is_network_key(key: str) -> bool:
  return key.startswith(NETWORK_KEYS) and key not in NOT_NETWORK_KEYS


def read(workdir: str) -> dict | None:
  path = os.path.join(workdir, RECORD)
  if not os.path.exists(path):
    return None
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError) as error:
    raise UserError(
        f"{path} cannot be read ({error}); move it aside to start a new record"
    ) from None


def recorded_config(workdir: str):
  """The config a run in ``workdir`` was started with, as a ConfigDict (for tools that read a run)."""
  record = read(workdir)
  if record is None:
    raise UserError(
        f"give --config: {workdir} holds no {RECORD} to take it from (no run of this version "
        f"started there)"
    )
  config = ml_collections.ConfigDict(record["config"])
  for key, value in ADDED_KEYS.items():
    section, name = key.split(".")
    if section in config and name not in config[section]:
      config[section][name] = value
  return config


def check_config(
    workdir: str, config, purpose: str, flag: str = "--workdir"
) -> None:
  """Refuses a config whose network differs from the one recorded in ``workdir`` (for eval and the tools);
  ``flag`` names the directory in the message as the tool's command line does.
  """
  record = read(workdir)
  if record is not None:
    _refuse_network_changes(workdir, record, flat(config), purpose, flag)


def record_config(workdir: str, config, imported: dict) -> None:
  """Records ``config`` as the run's in a work directory without a record, with no training start: weights
  imported as a checkpoint, so that eval and the tools read them without --config.
  """
  if read(workdir) is not None:
    raise UserError(
        f"{os.path.join(workdir, RECORD)} already exists; use an empty --workdir"
    )
  _write(
      workdir,
      {
          "config": json.loads(config.to_json_best_effort()),
          "resolved": {},
          "starts": [],
          "changes": [],
          "imported": imported,
      },
  )


def _refuse_network_changes(
    workdir: str, record: dict, now: dict, purpose: str, flag: str = "--workdir"
) -> None:
  before = _recorded(record)
  free = IMPORTED_FREE_KEYS if record.get("imported") else ()
  changed = [
      k
      for k in sorted(set(before) | set(now))
      if is_network_key(k) and k not in free and before.get(k) != now.get(k)
  ]
  if changed:
    details = ", ".join(
        f"{k}={_show(before.get(k))} there, {_show(now.get(k))} here"
        for k in changed[:4]
    )
    fix = " ".join(
        f"--config.{k}={_flag(before[k])}" for k in changed if k in before
    )
    raise ConfigError(
        f"{flag}={workdir} holds another network than this config's ({details}): "
        f"{purpose} with {fix or 'its config'}, or use another {flag}"
    )


def _show(value) -> str:
  return "absent" if value is None else json.dumps(value)


def _flag(value) -> str:
  return ",".join(map(str, value)) if isinstance(value, list) else str(value)


def _git_commit() -> str | None:
  """The commit of the checkout the package runs from, with ``-dirty`` for uncommitted changes; None when
  it is an installed copy."""
  here = os.path.dirname(os.path.abspath(__file__))
  try:
    # This file tracked, not merely inside some repository (a virtual environment within a checkout).
    tracked = subprocess.run(
        [
            "git",
            "-C",
            here,
            "ls-files",
            "--error-unmatch",
            os.path.basename(__file__),
        ],
        capture_output=True,
        text=True,
        timeout=5,
    )
    commit = subprocess.run(
        ["git", "-C", here, "rev-parse", "HEAD"],
        capture_output=True,
        text=True,
        timeout=5,
    )
    if tracked.returncode or commit.returncode:
      return None
    dirty = subprocess.run(
        ["git", "-C", here, "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
        timeout=5,
    ).stdout.strip()
    return commit.stdout.strip() + ("-dirty" if dirty else "")
  except (OSError, subprocess.SubprocessError):
    return None


def _versions() -> dict[str, str | None]:
  versions = {}
  for package in PACKAGES:
    try:
      versions[package] = metadata.version(package)
    except metadata.PackageNotFoundError:
      versions[package] = None
  return versions


def environment(mesh) -> dict:
  """Where and with what this start runs: versions, commit, host, devices and mesh."""
  devices = jax.devices()
  return {
      "time": datetime.datetime.now(datetime.timezone.utc).isoformat(
          timespec="seconds"
      ),
      "host": socket.gethostname(),
      "cpu": cpu_info.describe(),
      "versions": _versions(),
      "git_commit": _git_commit(),
      "devices": {
          "platform": devices[0].platform,
          "kind": devices[0].device_kind,
          "count": len(devices),
          "processes": jax.process_count(),
      },
      "mesh": dict(mesh.shape),
  }


def write_json(path: str, value) -> None:
  """Writes ``value`` whole, then renames: never half a file under the real name."""
  with open(path + ".tmp", "w") as f:
    json.dump(value, f, indent=2)
  os.replace(path + ".tmp", path)


def _write(workdir: str, record: dict) -> None:
  write_json(os.path.join(workdir, RECORD), record)


def start(
    workdir: str,
    config,
    resolved: dict,
    mesh,
    step: int,
    resuming: bool,
    write: bool,
) -> list[dict]:
  """Records this start in ``workdir/run.json``. A fresh start writes the config; a resume at ``step``
  (whose network ``check_config`` has already compared) returns each changed training value as ``{step, key,
  from, to, time}``, which it appends to the record's ``changes``. ``write=False`` (processes other than 0)
  writes nothing. A fresh start never reads an earlier record: process 0 moves it aside, perhaps after
  another process got here."""
  now = flat(config)
  record = read(workdir) if resuming else None
  changes = []
  if record is None:
    record = {
        "config": json.loads(config.to_json_best_effort()),
        "resolved": resolved,
        "starts": [],
        "changes": [],
    }
    if step:  # a run of an older version of this code, which kept no record
      record["recorded_from_step"] = step
  else:
    before = _recorded(record)
    time = datetime.datetime.now(datetime.timezone.utc).isoformat(
        timespec="seconds"
    )
    changes = [
        {
            "step": step,
            "key": key,
            "from": before.get(key),
            "to": now.get(key),
            "time": time,
        }
        for key in sorted(set(before) | set(now))
        if before.get(key) != now.get(key)
    ]
    record["changes"] += changes
    # the config in force from here on
    record["config"] = json.loads(config.to_json_best_effort())
    record["resolved"] = resolved
  if write:
    record["starts"].append({"step": step, **environment(mesh)})
    _write(workdir, record)
  return changes


def history_files(workdir: str) -> list[str]:
  """What an earlier start left in ``workdir`` besides its checkpoints: record, metrics, events, evaluations."""
  if not os.path.isdir(workdir):
    return []
  names = [
      n
      for n in os.listdir(workdir)
      if n in (RECORD, "metrics.jsonl", "eval")
      or n.startswith("events.out.tfevents")
  ]
  return sorted(names)


def move_history_aside(workdir: str) -> str | None:
  """A fresh start in a work directory that holds an earlier start's history but no checkpoint (deleted,
  or the earlier start stopped before its first one): moves that history to ``previous/N`` so the new run
  neither cuts it nor mixes with it. Returns the folder, or None when there was nothing to move.
  """
  names = history_files(workdir)
  if not names:
    return None
  number = 1
  while os.path.exists(os.path.join(workdir, PREVIOUS, str(number))):
    number += 1
  target = os.path.join(workdir, PREVIOUS, str(number))
  os.makedirs(target)
  for name in names:
    shutil.move(os.path.join(workdir, name), os.path.join(target, name))
  return target


class Lock:
  """One training run per work directory. An flock on ``WORKDIR/.lock``: the kernel releases it when the
  process ends, however it ends (a crash or SIGKILL leaves nothing stuck)."""

  def __init__(self, workdir: str):
    self.path = os.path.join(workdir, LOCK)
    self._file = None

  def acquire(self) -> None:
    self._file = open(self.path, "a+")
    try:
      fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
      self._file.seek(0)
      holder = self._file.read().strip() or "another process"
      self._file.close()
      self._file = None
      raise UserError(
          f"{os.path.dirname(self.path)} is in use by another run ({holder}); wait for it to end or "
          f"use another --workdir"
      ) from None
    self._file.seek(0)
    self._file.truncate()
    self._file.write(
        f"pid {os.getpid()} on {socket.gethostname()}, since "
        f"{datetime.datetime.now().isoformat(timespec='seconds')}"
    )
    self._file.flush()

  def release(self) -> None:
    if self._file is not None:
      self._file.close()  # closing releases the flock
      self._file = None
