"""Figure 1's network: cuda-convnet's CIFAR-10 net of example-layers/layers-18pct.cfg (configs/figure1.py),
three convolutions and fc10, with ReLU or tanh units, its pooling and spatial response normalisation as
cuda-convnet computes them."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax import lax

from alexnet_jax import layers
from alexnet_jax.errors import ConfigError

UNITS = ("relu", "tanh")


def pool_outputs(size: int, window: int, stride: int) -> int:
  """cuda-convnet's pool size with start=0, outputsX=0 (layer.py): ceil((size - window) / stride) + 1."""
  return math.ceil((size - window) / stride) + 1


def clipped_pool(
    x: jax.Array, kind: str, window: int, stride: int
) -> jax.Array:
  """cuda-convnet's pooling (start 0, outputsX 0): the windows that overhang the far edge are clipped; ``avg``
  divides by the pixels inside the window (conv_util.cuh's AvgPooler: regionSize).
  """
  size = x.shape[1]
  outputs = pool_outputs(size, window, stride)
  overhang = (outputs - 1) * stride + window - size
  padding = ((0, 0), (0, overhang), (0, overhang), (0, 0))
  if kind == "max":
    # the project's max pool (its backward pass is fast on CPUs) over the edge padded with -inf
    return layers.max_pool(
        jnp.pad(x, padding, constant_values=-jnp.inf),
        window=window,
        stride=stride,
    )
  if kind != "avg":
    raise ConfigError(f"model.pools: max or avg, got {kind!r}")
  total = lax.reduce_window(
      x, 0.0, lax.add, (1, window, window, 1), (1, stride, stride, 1), padding
  )
  starts = np.arange(outputs) * stride
  inside = np.minimum(starts + window, size) - starts
  return total / (inside[:, None] * inside[None, :])[None, :, :, None].astype(
      x.dtype
  )


def spatial_response_norm(
    x: jax.Array, size: int, scale: float, power: float
) -> jax.Array:
  """cuda-convnet's ``rnorm`` (conv_util.cu, convResponseNorm): each map on its own,
  b = a (1 + scale / size^2 * sum a^2)^-power, the sum over the size x size pixels from -size//2 around
  each, clipped at the edges (layer.py divides the cfg's scale by size^2)."""
  before, after = size // 2, size - size // 2 - 1
  rows, cols = x.shape[1], x.shape[2]
  padded = jnp.pad(x * x, ((0, 0), (before, after), (before, after), (0, 0)))
  # shifted slices, which XLA fuses (faster on CPUs than a reduce_window)
  total = sum(padded[:, i : i + rows] for i in range(size))
  total = sum(total[:, :, j : j + cols] for j in range(size))
  s = 1.0 + scale / size**2 * total
  if (
      power == 0.75
  ):  # s^-0.75 as rsqrt(s) * sqrt(rsqrt(s)), cheaper than exp(log)
    r = lax.rsqrt(s)
    return x * (r * jnp.sqrt(r))
  return x * s**-power


class Weights(nnx.Module):
  """One layer's kernel and bias."""

  def __init__(self, kernel: np.ndarray, bias: np.ndarray):
    self.kernel = nnx.Param(jnp.asarray(kernel))
    self.bias = nnx.Param(jnp.asarray(bias))


class Figure1Net(nnx.Module):
  """cuda-convnet's layers-18pct.cfg (configs/figure1.py): three 5x5 convolutions and one fully connected
  layer, ``unit`` (relu | tanh) as every hidden nonlinearity. Weights N(0, init_std^2) drawn with numpy
  from ``seed`` (the same on every platform, and no compilation), biases 0."""

  def __init__(self, config, unit: str, num_classes: int, seed: int):
    if unit not in UNITS:
      raise ConfigError(f"units: relu or tanh, got {unit!r}")
    self.unit = unit
    self.config = config
    rng = np.random.default_rng(seed)
    normal = lambda std, *shape: rng.normal(0, std, shape).astype(np.float32)
    channels, size, k = 3, config.image_size, config.kernel_size
    stds = tuple(config.init_std)
    convs = []
    for features, std in zip(config.conv_features, stds):
      convs.append(
          Weights(
              normal(std, k, k, channels, features),
              np.zeros(features, np.float32),
          )
      )
      channels = features
      size = pool_outputs(
          size + 2 * config.padding - k + 1,
          config.pool_window,
          config.pool_stride,
      )
    self.conv1, self.conv2, self.conv3 = convs
    self.fc10 = Weights(
        normal(stds[3], size * size * channels, num_classes),
        np.zeros(num_classes, np.float32),
    )

  def layers(self, x: jax.Array) -> dict[str, jax.Array]:
    """Every layer's output by its cfg name, in the cfg's order; ``fc10`` holds the logits. The cfg applies
    conv1's neuron after pool1 (the same for a rising f: max(f(a)) = f(max(a))).
    """
    c = self.config
    f = jax.nn.relu if self.unit == "relu" else jnp.tanh
    pool = lambda x, kind: clipped_pool(x, kind, c.pool_window, c.pool_stride)
    norm = lambda x: (
        spatial_response_norm(x, c.rnorm_size, c.rnorm_scale, c.rnorm_power)
        if c.response_norm
        else x
    )
    conv = lambda w, x: layers.conv(
        x, w.kernel, w.bias, stride=1, padding=(c.padding, c.padding)
    )
    out = {}
    out["conv1"] = f(conv(self.conv1, x))
    out["pool1"] = pool(out["conv1"], c.pools[0])
    out["rnorm1"] = norm(out["pool1"])
    out["conv2"] = f(conv(self.conv2, out["rnorm1"]))
    out["pool2"] = pool(out["conv2"], c.pools[1])
    out["rnorm2"] = norm(out["pool2"])
    out["conv3"] = f(conv(self.conv3, out["rnorm2"]))
    out["pool3"] = pool(out["conv3"], c.pools[2])
    flat = out["pool3"].reshape(x.shape[0], -1)
    out["fc10"] = flat @ self.fc10.kernel + self.fc10.bias
    return out

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.layers(x)["fc10"]
