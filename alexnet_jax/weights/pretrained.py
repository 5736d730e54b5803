"""Weights from anywhere -> this project's parameters: checkpoints, torchvision ``.pth``, Caffe ``.npy``.

Used by fine-tuning (``--config.init_from=PATH``), prediction, the figures and importing weights as a
checkpoint (``training.imported``).
"""

from __future__ import annotations

import os

import numpy as np

from alexnet_jax.errors import UserError
from alexnet_jax.workdir import checkpointing
from alexnet_jax.weights import convert

# Where each kind of weights comes from, and the config that describes its network and preprocessing.
CONFIG_OF_SOURCE = {"torchvision": "torchvision", "caffe": "caffe"}
HEAD = "fc8"


def source_of(path: str) -> str:
  """'checkpoint' (a directory), 'torchvision' (.pth/.pt) or 'caffe' (.npy)."""
  if os.path.isdir(path):
    return "checkpoint"
  if not os.path.exists(path):
    raise UserError(f"{path} does not exist")
  extension = os.path.splitext(path)[1].lower()
  if extension in (".pth", ".pt"):
    return "torchvision"
  if extension == ".npy":
    return "caffe"
  raise UserError(
      f"{path}: expected a checkpoint directory, torchvision's .pth or Caffe's bvlc_alexnet.npy"
  )


def num_classes_of(params: dict, meta: dict | None = None) -> int:
  """The class count of stored weights: the checkpoint's record of it, else fc8's units. fc8's towers may
  be padded (``AlexNetSpec.fc8_padding``), so its shape alone can hold more units than classes; weights
  without the record (imported ones, checkpoints from before padding) have no padding.
  """
  recorded = (meta or {}).get("num_classes")
  return (
      int(recorded)
      if recorded is not None
      else int(np.prod(np.shape(params[HEAD]["bias"])))
  )


def read_weights(path: str) -> tuple[dict, dict, str, int]:
  """``(params, batch_stats, source, num_classes)``, the arrays numpy. ``source`` says whose preprocessing
  the weights expect: 'torchvision', 'caffe', or 'checkpoint' (trained here, with its config's preprocessing).
  """
  source = source_of(path)
  if source == "torchvision":
    params = convert.torchvision_params(path)
    return params, {}, source, num_classes_of(params)
  if source == "caffe":
    params = convert.caffe_params(path)
    return params, {}, source, num_classes_of(params)
  params, batch_stats, meta = checkpointing.read_params(path)
  # An imported checkpoint keeps its source.
  return (
      params,
      batch_stats,
      meta.get("source", "checkpoint"),
      num_classes_of(params, meta),
  )


def merge_for_finetuning(
    fresh: dict,
    loaded: dict,
    fresh_classes: int | None = None,
    loaded_classes: int | None = None,
) -> tuple[dict, list[str], list[str]]:
  """Every layer of ``fresh`` taken from ``loaded``, except a classifier head (fc8) whose class count
  differs, which stays fresh. Returns ``(params, loaded names, fresh names)``; a layer of another shape
  anywhere else, or one on either side only, means another architecture: refused. With padded fc8 towers
  two class counts can share one shape (3 and 4 classes on two towers), so pass both counts to compare the
  heads by them.
  """
  # e.g. CNN*'s conv6 into a five-conv net: its fc6 was trained on conv6's maps
  extra = sorted(set(loaded) - set(fresh))
  if extra:
    raise UserError(
        f"init_from: the weights have layer(s) {', '.join(extra)} that this config lacks: another "
        f"architecture (check model.extra_conv, batch_norm)"
    )
  merged, taken, kept = {}, [], []
  for name, layer in fresh.items():
    source = loaded.get(name)
    shapes = {k: tuple(np.shape(v)) for k, v in layer.items()}
    got = {k: tuple(np.shape(v)) for k, v in (source or {}).items()}
    other_classes = (
        name == HEAD
        and None not in (fresh_classes, loaded_classes)
        and fresh_classes != loaded_classes
    )
    if got == shapes and not other_classes:
      merged[name] = {k: np.asarray(v, np.float32) for k, v in source.items()}
      taken.append(name)
    elif (
        name == HEAD
        and source is not None
        and got["kernel"][1:-1] == shapes["kernel"][1:-1]
    ):
      merged[name] = layer  # a new task's classes: the head starts fresh
      kept.append(name)
    else:
      raise UserError(
          f"init_from: layer {name} is {got or 'missing'} there but {shapes} in this config: "
          f"another architecture (check model.towers, conv_features, extra_conv, image_size, batch_norm)"
      )
  return merged, taken, kept
