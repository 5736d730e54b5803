"""Pretrained AlexNets from other frameworks, as ready ``AlexNet`` modules.

- ``from_torchvision(state_dict_or_path)``: torchvision's layout (``configs/torchvision.py``). torch's
  OIHW kernels become HWIO; fc6's rows are reordered from torch's (C, H, W) flattening to our (H, W, C).
- ``from_caffe_npy(path)``: BVLC Caffe's two-group net (``configs/caffe.py``) from the widely shared
  ``bvlc_alexnet.npy`` (a Python-2 pickle of ``{layer: [weights, biases]}`` in TensorFlow's HWIO layout).
  Caffe's groups are the paper's towers, so the result also runs with its towers on two devices.

Both return the model in training mode, like a fresh one: call ``model.eval()`` before inference.
"""

from __future__ import annotations

import os
from typing import Mapping

import numpy as np
from flax import nnx

from alexnet_jax import config_files
from alexnet_jax.errors import ConfigError
from alexnet_jax.model import AlexNet

TORCHVISION_KEYS = {"conv1": "features.0", "conv2": "features.3", "conv3": "features.6", "conv4": "features.8",
                    "conv5": "features.10", "fc6": "classifier.1", "fc7": "classifier.4", "fc8": "classifier.6"}


def _split_towers(array: np.ndarray, towers: int) -> np.ndarray:
  """[..., out] -> [towers, ..., out / towers]: tower t takes outputs [t*out/T, (t+1)*out/T)."""
  parts = np.split(array, towers, axis=-1)
  return np.stack(parts).astype(np.float32)


def _build(config_name: str, params: dict, mesh=None, **model_overrides) -> AlexNet:
  config = config_files.load(config_name)
  config.model.update(model_overrides)
  model = AlexNet(config.model, rngs=nnx.Rngs(0), mesh=mesh)
  expected = {name: (tuple(p["kernel"].shape), tuple(p["bias"].shape)) for name, p in model.params().items()}
  got = {name: (p["kernel"].shape, p["bias"].shape) for name, p in params.items()}
  if got != expected:
    raise ConfigError(f"the weights do not fit {config_name}'s AlexNet: got {got}, expected {expected}")
  import jax
  from alexnet_jax import sharding
  model.load_params(jax.device_put(params, sharding.tower_sharding(model.mesh)))
  return model


def from_torchvision(state_dict: Mapping[str, np.ndarray] | str, mesh=None) -> AlexNet:
  """torchvision's AlexNet (``features.0.weight`` ... ``classifier.6.bias``) as a one-tower model."""
  params = torchvision_params(state_dict)
  return _build("torchvision", params, mesh, num_classes=params["fc8"]["bias"].shape[-1])


def torchvision_params(state_dict: Mapping[str, np.ndarray] | str) -> dict:
  """torchvision's state dict (or ``.pth`` path) -> our parameters ``{layer: {kernel, bias}}``, one tower."""
  if isinstance(state_dict, (str, os.PathLike)):
    try:
      import torch
    except ImportError:
      raise ConfigError("reading a .pth file needs PyTorch (pip install torch); or pass a dict of numpy arrays") from None
    state_dict = torch.load(state_dict, map_location="cpu", weights_only=True)
  weights = {k: np.asarray(v.detach().cpu().numpy() if hasattr(v, "detach") else v, np.float32)
             for k, v in state_dict.items()}
  missing = [f"{key}.{part}" for key in TORCHVISION_KEYS.values() for part in ("weight", "bias")
             if f"{key}.{part}" not in weights]
  if missing:
    raise ConfigError(f"not a torchvision AlexNet state dict: missing {missing}")
  params = {}
  for name, key in TORCHVISION_KEYS.items():
    weight, bias = weights[key + ".weight"], weights[key + ".bias"]
    if name.startswith("conv"):
      kernel = weight.transpose(2, 3, 1, 0)  # OIHW -> HWIO
    elif name == "fc6":
      out, fan_in = weight.shape
      channels = fan_in // 36
      kernel = weight.reshape(out, channels, 6, 6).transpose(2, 3, 1, 0).reshape(fan_in, out)  # (C,H,W) -> (H,W,C)
    else:
      kernel = weight.T
    params[name] = {"kernel": kernel[None], "bias": bias[None]}
  return params


def from_caffe_npy(path: str, mesh=None) -> AlexNet:
  """BVLC Caffe's AlexNet from ``bvlc_alexnet.npy``; the returned model takes RGB input (see configs/caffe.py)."""
  params = caffe_params(path)
  return _build("caffe", params, mesh, num_classes=params["fc8"]["bias"].size)


def caffe_params(path: str) -> dict:
  """``bvlc_alexnet.npy`` -> our parameters, two towers (Caffe's groups), conv1 reading RGB."""
  try:
    layers = np.load(path, allow_pickle=True, encoding="latin1").item()
  except (OSError, ValueError) as error:
    raise ConfigError(f"cannot read {path} as bvlc_alexnet.npy: {error}") from None
  params = {}
  for name in ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"):
    if name not in layers:
      raise ConfigError(f"{path} has no '{name}' layer; layers: {sorted(layers)}")
    weight, bias = (np.asarray(a, np.float32) for a in layers[name])
    if name == "conv1":
      weight = weight[:, :, ::-1, :]  # Caffe's conv1 reads BGR; the model takes RGB
    params[name] = {"kernel": _split_towers(weight, 2), "bias": _split_towers(bias, 2)}
  return params
