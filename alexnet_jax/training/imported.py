"""Imported weights as a run: step 0 of a work directory's checkpoints, with a ``run.json`` that records the
config describing their network, so that ``--mode=eval``, ``predict`` and ``visualize`` read them like any
other run (``python -m alexnet_jax.pretrained``)."""

from __future__ import annotations

import os

from alexnet_jax import config_files
from alexnet_jax.errors import UserError
from alexnet_jax.training import optim
from alexnet_jax.training.state import initial_state
from alexnet_jax.weights import convert, pretrained
from alexnet_jax.workdir import checkpointing, run_record


def save_imported(weights: str, workdir: str) -> str:
  """Writes ``weights`` (torchvision .pth or Caffe .npy) as step 0 of ``workdir/checkpoints``, and
  ``workdir/run.json`` with the config that describes the network (its class count the weights'); returns
  that config's name."""
  source = pretrained.source_of(weights)
  if source not in pretrained.CONFIG_OF_SOURCE:
    raise UserError(f"{weights} is already a checkpoint directory")
  # another run's record would describe other weights
  if run_record.history_files(workdir):
    raise UserError(
        f"{workdir} already holds a run ({', '.join(run_record.history_files(workdir))}); "
        f"use an empty --workdir"
    )
  # Written from one device; a checkpoint restores onto any mesh.
  model = (
      convert.from_torchvision(weights)
      if source == "torchvision"
      else convert.from_caffe_npy(weights)
  )
  config = config_files.load(pretrained.CONFIG_OF_SOURCE[source])
  # a fine-tuned export may have other classes
  config.model.num_classes = model.spec.num_classes
  tx, _ = optim.make_optimizer(config.optimizer, 1, 1)
  ckpt = checkpointing.Checkpointer(os.path.join(workdir, "checkpoints"))
  try:
    if ckpt.latest_step() is not None:
      raise UserError(
          f"{ckpt.directory} already holds checkpoints; use an empty --workdir"
      )
    ckpt.save(
        0,
        initial_state(model, tx),
        None,
        {
            "step": 0,
            "plateau": None,
            "source": source,
            "num_classes": model.spec.num_classes,
        },
    )
  finally:
    ckpt.close()
  # After the checkpoint: a record never describes weights that are not there.
  run_record.record_config(
      workdir, config, {"source": source, "weights": os.path.abspath(weights)}
  )
  return pretrained.CONFIG_OF_SOURCE[source]
