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
import pickle
from typing import Mapping

import numpy as np
from flax import nnx

from alexnet_jax import config_files
from alexnet_jax.errors import ConfigError
from alexnet_jax.model import AlexNet
from alexnet_jax.weights import fit

# What loading a file that is not what it claims raises: pickle's documented errors (torch's weights-only
# unpickler raises the same), numpy's ValueError, torch's RuntimeError for a damaged zip archive.
NOT_WEIGHTS = (
    pickle.UnpicklingError,
    EOFError,
    AttributeError,
    ImportError,
    IndexError,
    KeyError,
    ValueError,
    RuntimeError,
)

TORCHVISION_KEYS = {
    "conv1": "features.0",
    "conv2": "features.3",
    "conv3": "features.6",
    "conv4": "features.8",
    "conv5": "features.10",
    "fc6": "classifier.1",
    "fc7": "classifier.4",
    "fc8": "classifier.6",
}


def _split_towers(array: np.ndarray, towers: int) -> np.ndarray:
  """[..., out] -> [towers, ..., out / towers]: tower t takes outputs [t*out/T, (t+1)*out/T)."""
  parts = np.split(array, towers, axis=-1)
  return np.stack(parts).astype(np.float32)


def _load_file(load, path: str, expected: str):
  """``load(path)``, where a missing, damaged or foreign file ends in one line naming it."""
  try:
    return load(path)
  except OSError as error:
    raise ConfigError(
        f"cannot read {path}: {error.strerror or error}"
    ) from None
  except NOT_WEIGHTS as error:
    first_sentence = str(error).strip().split("\n")[0].split(". ")[0]
    raise ConfigError(
        f"{path} is not {expected} ({type(error).__name__}: {first_sentence})"
    ) from None


def _layer_arrays(
    path: str, name: str, weight, bias
) -> tuple[np.ndarray, np.ndarray]:
  """A layer's weights and biases as float32 arrays of the ranks the conversion indexes them by."""
  try:
    weight, bias = (
        np.asarray(
            a.detach().cpu().numpy() if hasattr(a, "detach") else a, np.float32
        )
        for a in (weight, bias)
    )
  except (TypeError, ValueError) as error:
    raise ConfigError(
        f"{path}: {name} does not hold numeric weights and biases ({error})"
    ) from None
  dims = 4 if name.startswith("conv") else 2
  if weight.ndim != dims:
    raise ConfigError(
        f"{path}: {name} weights have shape {weight.shape}, expected {dims}-D"
    )
  if bias.ndim != 1:
    raise ConfigError(
        f"{path}: {name} biases have shape {bias.shape}, expected 1-D"
    )
  return weight, bias


def _build(
    config_name: str, params: dict, mesh=None, **model_overrides
) -> AlexNet:
  config = config_files.load(config_name)
  config.model.update(model_overrides)
  model = AlexNet(config.model, rngs=nnx.Rngs(0), mesh=mesh)
  different = fit.mismatch(model.spec, params)
  if different:
    raise ConfigError(
        f"the weights do not fit {config_name}'s AlexNet ({different})"
    )
  model.load_params(fit.on_towers(model.mesh, params))
  return model


def from_torchvision(
    state_dict: Mapping[str, np.ndarray] | str, mesh=None
) -> AlexNet:
  """torchvision's AlexNet (``features.0.weight`` ... ``classifier.6.bias``) as a one-tower model."""
  params = torchvision_params(state_dict)
  return _build(
      "torchvision", params, mesh, num_classes=params["fc8"]["bias"].shape[-1]
  )


def torchvision_params(state_dict: Mapping[str, np.ndarray] | str) -> dict:
  """torchvision's state dict (or ``.pth`` path) -> our parameters ``{layer: {kernel, bias}}``, one tower."""
  if isinstance(state_dict, (str, os.PathLike)):
    try:
      import torch  # optional and heavy: only reading a .pth file needs it
    except ImportError:
      raise ConfigError(
          "reading a .pth file needs PyTorch (pip install torch); or pass a dict of numpy arrays"
      ) from None
    path = state_dict
    load = lambda p: torch.load(p, map_location="cpu", weights_only=True)
    state_dict = _load_file(
        load, path, "a torchvision AlexNet .pth weights file"
    )
  else:
    path = "the state dict"
  if not isinstance(state_dict, Mapping):
    raise ConfigError(
        f"{path} holds a {type(state_dict).__name__}, not a torchvision AlexNet state dict"
    )
  missing = [
      f"{key}.{part}"
      for key in TORCHVISION_KEYS.values()
      for part in ("weight", "bias")
      if f"{key}.{part}" not in state_dict
  ]
  if missing:
    raise ConfigError(
        f"{path}: not a torchvision AlexNet state dict, missing {missing}"
    )
  params = {}
  for name, key in TORCHVISION_KEYS.items():
    weight, bias = _layer_arrays(
        path, name, state_dict[key + ".weight"], state_dict[key + ".bias"]
    )
    if name.startswith("conv"):
      kernel = weight.transpose(2, 3, 1, 0)  # OIHW -> HWIO
    elif name == "fc6":
      out, fan_in = weight.shape
      if fan_in % 36:
        raise ConfigError(
            f"{path}: fc6 weights have shape {weight.shape}, expected (outputs, channels * 6 * 6)"
        )
      channels = fan_in // 36
      # (C,H,W) -> (H,W,C)
      kernel = (
          weight.reshape(out, channels, 6, 6)
          .transpose(2, 3, 1, 0)
          .reshape(fan_in, out)
      )
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
  expected = "a Caffe bvlc_alexnet .npy weights file"
  layers = _load_file(
      lambda p: np.load(p, allow_pickle=True, encoding="latin1").item(),
      path,
      expected,
  )
  if not isinstance(layers, dict):
    raise ConfigError(
        f"{path} is not {expected} (it holds a {type(layers).__name__}, not a dict of layers)"
    )
  params = {}
  for name in (
      "conv1",
      "conv2",
      "conv3",
      "conv4",
      "conv5",
      "fc6",
      "fc7",
      "fc8",
  ):
    if name not in layers:
      raise ConfigError(
          f"{path} has no '{name}' layer; layers: {sorted(map(str, layers))}"
      )
    try:
      weight, bias = layers[name]
    except (TypeError, ValueError):
      raise ConfigError(
          f"{path}: {name} is not a [weights, biases] pair"
      ) from None
    weight, bias = _layer_arrays(path, name, weight, bias)
    if weight.shape[-1] % 2 or bias.shape != weight.shape[-1:]:
      raise ConfigError(
          f"{path}: {name} has weights {weight.shape} and biases {bias.shape}: expected an even "
          f"number of outputs (Caffe's two groups), one bias each"
      )
    if name == "conv1":
      # Caffe's conv1 reads BGR; the model takes RGB
      weight = weight[:, :, ::-1, :]
    params[name] = {
        "kernel": _split_towers(weight, 2),
        "bias": _split_towers(bias, 2),
    }
  return params
