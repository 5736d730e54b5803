"""AlexNet (Krizhevsky, Sutskever & Hinton, NIPS 2012) as a Flax NNX module on a two-tower mesh.

The paper trained on two GPUs, each holding half of every layer's kernels (its Figure 2)::

    image ─┬─ conv1 ─ LRN ─ pool ─ conv2 ─ LRN ─ pool ═╦═ conv3 ─ conv4 ─ conv5 ─ pool ═╦═ fc6 ═╦═ fc7 ═╦═ fc8 ═╦═ softmax
           └─ conv1 ─ LRN ─ pool ─ conv2 ─ LRN ─ pool ═╩═ conv3 ─ conv4 ─ conv5 ─ pool ═╩═ fc6 ═╩═ fc7 ═╩═ fc8 ═╩═
      (GPU 1 above, GPU 2 below;  ═╬═ : the GPUs exchange maps — conv3, fc6, fc7, fc8 read both towers)

Here a tower is a slice of a leading parameter axis ``[towers, ...]`` that is sharded over the mesh axis
``model``. The forward pass is written for one device's share (``_device_forward``) and run under
``jax.shard_map``: each device computes its local towers on its slice of the batch and ``all_gather``s
the towers' maps over ``model`` exactly where the paper's GPUs talked (``gather_towers``). With
``model=1`` one device runs both towers, each tower's maps an array of their own. A mesh axis of one
device gets no collectives at all (``Exchange``). Every placement gives the same numbers.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax import lax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from alexnet_jax import layers, sharding
from alexnet_jax.errors import ConfigError

# Which maps a split layer reads: the image, its own tower's, or all towers' (a cross-device point).
IMAGE, OWN, ALL = "image", "own tower", "all towers"


class ConvLayer(NamedTuple):
  name: str
  kernel: int
  stride: int
  padding: tuple[int, int] | None  # None: conv1, padding from the config
  reads: str
  lrn: bool
  pool: bool
  bias: float  # paper §5: biases 1 in conv2, conv4, conv5 and the hidden FC layers, 0 elsewhere


class DenseLayer(NamedTuple):
  name: str
  dropout: bool  # paper §4.2: dropout on the first two fully connected layers
  bias: float


CONV_LAYERS = (
    ConvLayer("conv1", 11, 4, None, IMAGE, lrn=True, pool=True, bias=0.0),
    ConvLayer("conv2", 5, 1, (2, 2), OWN, lrn=True, pool=True, bias=1.0),
    ConvLayer("conv3", 3, 1, (1, 1), ALL, lrn=False, pool=False, bias=0.0),
    ConvLayer("conv4", 3, 1, (1, 1), OWN, lrn=False, pool=False, bias=1.0),
    ConvLayer("conv5", 3, 1, (1, 1), OWN, lrn=False, pool=True, bias=1.0),
)
DENSE_LAYERS = (
    DenseLayer("fc6", dropout=True, bias=1.0),
    DenseLayer("fc7", dropout=True, bias=1.0),
    DenseLayer("fc8", dropout=False, bias=0.0),
)
LAYER_NAMES = tuple(l.name for l in CONV_LAYERS + DENSE_LAYERS)


def pool_name(layer: ConvLayer) -> str:
  return "pool" + layer.name.removeprefix("conv")


def norm_name(layer: ConvLayer) -> str:
  return "bn" + layer.name.removeprefix("conv")


ACTIVATIONS = {"relu": jax.nn.relu, "tanh": jnp.tanh}
BATCH_NORM_MOMENTUM = 0.9  # running statistics: short runs need a short memory (flax's default is 0.99)
BATCH_NORM_EPSILON = 1e-5


# What ``AlexNet.activations`` returns, in order: conv1, pool1, conv2, pool2, conv3, conv4, conv5, pool5, fc6...
ACTIVATION_NAMES = tuple(n for l in CONV_LAYERS for n in ((l.name, pool_name(l)) if l.pool else (l.name,))) + tuple(
    l.name for l in DENSE_LAYERS)


@dataclasses.dataclass(frozen=True)
class AlexNetSpec:
  """Everything that shapes the network; hashable, so jit can treat it as static. Mirrors ``config.model``."""
  num_classes: int = 1000
  image_size: int = 224
  towers: int = 2
  conv_features: tuple[int, ...] = (96, 256, 384, 384, 256)
  fc_features: tuple[int, ...] = (4096, 4096)
  conv1_padding: tuple[int, int] = (2, 1)
  lrn: bool = True
  lrn_size: int = 5
  lrn_k: float = 2.0
  lrn_alpha: float = 1e-4
  lrn_beta: float = 0.75
  lrn_scope: str = "tower"  # "tower": each tower its own maps (paper); "layer": all maps of the layer (Caffe)
  batch_norm: bool = False  # ablation: batch normalisation where the paper has LRN (after conv1, conv2)
  activation: str = "relu"  # "relu" (paper §3.1) or "tanh" (the saturating unit of its Figure 1)
  overlap_pool: bool = True
  dropout_rate: float = 0.5
  init: str = "paper"  # "paper": N(0, init_std) and the paper's biases; "he": N(0, 2/fan_in), zero biases
  init_std: float = 0.01
  dtype: str = "float32"  # compute dtype; "auto" in a config: bfloat16 on GPUs and TPUs, float32 on CPUs

  @classmethod
  def from_config(cls, config: Mapping[str, Any]) -> "AlexNetSpec":
    values = dict(config.items()) if hasattr(config, "items") else dict(config)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
      raise ConfigError(f"unknown model config keys {unknown}; known keys: {sorted(known)}")
    for key in ("conv_features", "fc_features", "conv1_padding"):
      if key in values:
        values[key] = tuple(int(v) for v in values[key])
    if values.get("dtype") == "auto":  # bfloat16 where the hardware has bfloat16 matrix units
      values["dtype"] = "float32" if jax.default_backend() == "cpu" else "bfloat16"
    spec = cls(**values)
    spec.validate()
    return spec

  def validate(self) -> None:
    if len(self.conv_features) != len(CONV_LAYERS) or len(self.fc_features) != len(DENSE_LAYERS) - 1:
      raise ConfigError(f"model.conv_features needs {len(CONV_LAYERS)} entries and model.fc_features "
                       f"{len(DENSE_LAYERS) - 1}")
    if self.num_classes < 1:
      raise ConfigError(f"model.num_classes must be at least 1, got {self.num_classes}")
    # fc8 need not divide: its towers are padded (fc8_padding). The hidden layers' towers must be equal.
    for name, features in zip(LAYER_NAMES, self.conv_features + self.fc_features):
      if features % self.towers:
        raise ConfigError(f"{name} has {features} kernels, not divisible into model.towers={self.towers}")
    if self.lrn_scope not in ("tower", "layer"):
      raise ConfigError(f"model.lrn_scope must be 'tower' or 'layer', got {self.lrn_scope!r}")
    if self.activation not in ACTIVATIONS:
      raise ConfigError(f"model.activation must be one of {sorted(ACTIVATIONS)}, got {self.activation!r}")
    if self.lrn and self.batch_norm:
      raise ConfigError("model.lrn and model.batch_norm are alternatives at the same place: set one to False")
    if self.init not in ("paper", "he"):
      raise ConfigError(f"model.init must be 'paper' or 'he', got {self.init!r}")
    if self.dtype not in ("float32", "bfloat16", "float16"):
      raise ConfigError(f"model.dtype must be float32, bfloat16 or float16, got {self.dtype!r}")
    if not 0.0 <= self.dropout_rate < 1.0:
      raise ConfigError(f"model.dropout_rate must be in [0, 1), got {self.dropout_rate}")
    self.feature_map_sizes()  # raises if the image is too small

  @property
  def pool_window(self) -> int:
    return 3 if self.overlap_pool else 2  # paper §3.4: z=3, s=2 overlapping; z=s=2 traditional

  pool_stride = 2

  @property
  def fc8_units_per_tower(self) -> int:
    return -(-self.num_classes // self.towers)

  @property
  def fc8_padding(self) -> int:
    """fc8 units beyond ``num_classes`` (0 when the towers divide the classes). They are the last units of
    the gathered towers (the end of the last tower): zeros from the start, their logits cut off before
    anything reads them, so no loss reaches them and weight decay keeps them at zero."""
    return self.towers * self.fc8_units_per_tower - self.num_classes

  def fc8_padding_params(self) -> int:
    """Parameters of fc8's padding units: held and computed, never read; not in ``num_params``."""
    return self.fc8_padding * (self.fc_features[-1] + 1)

  def feature_map_sizes(self) -> dict[str, int]:
    """Spatial size of each conv layer's output (after its pooling), e.g. conv1: 27 for the paper."""
    size, sizes = self.image_size, {}
    for layer in CONV_LAYERS:
      padding = self.conv1_padding if layer.padding is None else layer.padding
      size = layers.conv_output_size(size, layer.kernel, layer.stride, padding)
      if layer.pool:
        size = layers.pool_output_size(size, self.pool_window, self.pool_stride)
      if size < 1:
        raise ConfigError(f"model.image_size={self.image_size} is too small: {layer.name}'s output "
                         f"would be empty (the network needs at least 63x63 input)")
      sizes[layer.name] = size
    return sizes

  def param_shapes(self) -> dict[str, tuple[tuple[int, ...], tuple[int, ...]]]:
    """name -> (kernel shape, bias shape), each with the leading tower axis."""
    t, shapes = self.towers, {}
    fan_in = 3
    for layer, features in zip(CONV_LAYERS, self.conv_features):
      cin = fan_in // t if layer.reads == OWN else fan_in
      shapes[layer.name] = ((t, layer.kernel, layer.kernel, cin, features // t), (t, features // t))
      fan_in = features
    fan_in *= self.feature_map_sizes()[CONV_LAYERS[-1].name] ** 2
    for layer, per_tower in zip(DENSE_LAYERS, tuple(f // t for f in self.fc_features) + (self.fc8_units_per_tower,)):
      shapes[layer.name] = ((t, fan_in, per_tower), (t, per_tower))
      fan_in = t * per_tower
    return shapes

  def norm_shapes(self) -> dict[str, tuple[int, int]]:
    """Batch-norm layer name (``bn1``...) -> shape ``[towers, channels per tower]`` of its scale, offset and
    statistics; empty unless ``batch_norm``."""
    if not self.batch_norm:
      return {}
    return {norm_name(l): (self.towers, f // self.towers) for l, f in zip(CONV_LAYERS, self.conv_features) if l.lrn}

  def forward_flops(self) -> int:
    """FLOPs (2 x multiply-adds) of one image's forward pass through the convolutions and FC layers;
    ReLU, LRN and pooling are left out, as is usual for model FLOP utilisation. fc8's padding units count:
    they are computed."""
    shapes, size, flops = self.param_shapes(), self.image_size, 0
    for layer in CONV_LAYERS:
      padding = self.conv1_padding if layer.padding is None else layer.padding
      size = layers.conv_output_size(size, layer.kernel, layer.stride, padding)
      towers, kh, kw, cin, cout = shapes[layer.name][0]
      flops += 2 * size * size * towers * cout * kh * kw * cin
      if layer.pool:
        size = layers.pool_output_size(size, self.pool_window, self.pool_stride)
    for layer in DENSE_LAYERS:
      towers, fan_in, out = shapes[layer.name][0]
      flops += 2 * towers * fan_in * out
    return flops

  def num_params(self) -> int:
    """The network's parameters; fc8's padding units (``fc8_padding_params``) are held but not counted."""
    weights = sum(int(np.prod(k)) + int(np.prod(b)) for k, b in self.param_shapes().values())
    norms = sum(2 * int(np.prod(shape)) for shape in self.norm_shapes().values())  # scale, offset
    return weights + norms - self.fc8_padding_params()

  def fc8_real_units(self) -> np.ndarray:
    """``[towers, 1, units per tower]``: True for fc8's class units, False for its padding."""
    per = self.fc8_units_per_tower
    return (np.arange(self.towers * per) < self.num_classes).reshape(self.towers, 1, per)


def gather_towers(x: jax.Array) -> jax.Array:
  """The paper's GPU-to-GPU transfer: every device gets all towers' maps (channels, tower by tower)."""
  return lax.all_gather(x, sharding.MODEL, axis=x.ndim - 1, tiled=True, to="invarying")


@dataclasses.dataclass(frozen=True)
class Exchange:
  """What one device's share of the forward pass exchanges with the other devices. Over a mesh axis of
  one device every exchange is the identity and the ``shard_map`` specs leave that axis out: XLA keeps
  one-participant collectives in the compiled step (on one device XLA:CPU copied every gradient through
  one, 1.1x slower), and a data-parallel mesh would all-gather each tower boundary with itself."""
  towers_apart: bool  # the `model` axis has more than one device
  data_parallel: bool  # the `data` axis has more than one device

  @classmethod
  def of(cls, mesh: Mesh) -> Exchange:
    return cls(towers_apart=mesh.shape[sharding.MODEL] > 1, data_parallel=mesh.shape[sharding.DATA] > 1)

  def spec(self, *axes: str | None) -> P:
    """A PartitionSpec naming only the axes that have more than one device."""
    apart = {sharding.MODEL: self.towers_apart, sharding.DATA: self.data_parallel}
    return P(*(axis if apart.get(axis) else None for axis in axes))

  def gather_towers(self, x: jax.Array) -> jax.Array:
    return gather_towers(x) if self.towers_apart else x

  def model_index(self) -> jax.Array | int:
    return lax.axis_index(sharding.MODEL) if self.towers_apart else 0

  def mean_over_data(self, x: jax.Array) -> jax.Array:
    return lax.pmean(x, sharding.DATA) if self.data_parallel else x


def _split(x: jax.Array, towers: int) -> list[jax.Array]:
  """The local towers' maps, one array each, from their channels laid side by side (tower by tower)."""
  width = x.shape[-1] // towers
  return [x[..., t * width:(t + 1) * width] for t in range(towers)]


def _lrn(spec: AlexNetSpec, maps: list[jax.Array], exchange: Exchange) -> list[jax.Array]:
  constants = dict(size=spec.lrn_size, k=spec.lrn_k, alpha=spec.lrn_alpha, beta=spec.lrn_beta)
  if spec.lrn_scope == "tower":
    return [layers.local_response_norm(m, **constants) for m in maps]
  # Across all maps of the layer (Caffe): neighbours may sit on the other device, so gather first.
  everything = layers.local_response_norm(exchange.gather_towers(jnp.concatenate(maps, axis=-1)), **constants)
  width = len(maps) * maps[0].shape[-1]
  mine = lax.dynamic_slice_in_dim(everything, exchange.model_index() * width, width, axis=-1)
  return _split(mine, len(maps))


def _batch_norm(x: jax.Array, p: dict, stats: dict | None, train: bool, exchange: Exchange):
  """Batch normalisation of each channel over the *global* batch (and positions): the means are
  averaged over the ``data`` axis, so every placement gives the same numbers. Returns (y, batch stats)."""
  x32 = x.astype(jnp.float32)
  if train:
    mean = exchange.mean_over_data(jnp.mean(x32, axis=(0, 1, 2)))
    var = exchange.mean_over_data(jnp.mean(jnp.square(x32 - mean), axis=(0, 1, 2)))
  else:
    mean, var = stats["mean"].reshape(-1), stats["var"].reshape(-1)
  scale = p["scale"].reshape(-1) * lax.rsqrt(var + BATCH_NORM_EPSILON)
  y = (x32 - mean) * scale + p["offset"].reshape(-1)
  shape = p["scale"].shape  # [local towers, channels per tower]
  return y.astype(x.dtype), {"mean": mean.reshape(shape), "var": var.reshape(shape)}


def _device_forward(spec: AlexNetSpec, towers_here: int, capture: bool, train: bool, exchange: Exchange, params,
                    batch_stats, images, keep_masks):
  """One device's share: its local towers (``towers_here``) on its slice of the batch. Returns the logits,
  the captured activations and the batch-norm layers' batch statistics (training) or running ones."""
  act = ACTIVATIONS[spec.activation]
  # Each local tower's maps stay an array of their own until the next cross-device point, as on the
  # paper's GPUs; one array with the towers' channels side by side made XLA:CPU concatenate and slice
  # them around every layer and repeat the LRN gradient in each consumer (paper config 1.1x on the CPU).
  maps: list[jax.Array] = []
  activations, new_stats = {}, {}
  for layer in CONV_LAYERS:
    p = params[layer.name]
    if layer.reads == IMAGE:
      inputs = [images.astype(spec.dtype)] * towers_here
    elif layer.reads == ALL:  # cross-device: conv3 reads both GPUs' maps
      inputs = [exchange.gather_towers(jnp.concatenate(maps, axis=-1))] * towers_here
    else:
      inputs = maps
    padding = spec.conv1_padding if layer.padding is None else layer.padding
    maps = [act(layers.conv(x, p["kernel"][t], p["bias"][t], stride=layer.stride, padding=padding))
            for t, x in enumerate(inputs)]
    if layer.lrn and spec.lrn:
      maps = _lrn(spec, maps, exchange)
    if layer.lrn and spec.batch_norm:
      name = norm_name(layer)
      both = jnp.concatenate(maps, axis=-1)
      normed, new_stats[name] = _batch_norm(both, params[name], batch_stats.get(name), train, exchange)
      maps = _split(normed, towers_here)
    if capture:
      activations[layer.name] = jnp.concatenate(maps, axis=-1)
    if layer.pool:
      maps = [layers.max_pool(m, window=spec.pool_window, stride=spec.pool_stride) for m in maps]
      if capture:
        activations[pool_name(layer)] = jnp.concatenate(maps, axis=-1)
  x = jnp.concatenate(maps, axis=-1)
  for layer in DENSE_LAYERS:
    p = params[layer.name]
    x = exchange.gather_towers(x)  # cross-device: fc6, fc7 and fc8 read both GPUs' units
    x = layers.tower_dense(x.reshape(x.shape[0], -1), p["kernel"], p["bias"])
    if layer is not DENSE_LAYERS[-1]:
      x = act(x)
      if layer.dropout and keep_masks is not None:
        # Inverted dropout: scale at training time, so evaluation needs no paper-style x0.5.
        x = jnp.where(keep_masks[layer.name], x / (1.0 - spec.dropout_rate), 0).astype(x.dtype)
    activations[layer.name] = x
  logits = exchange.gather_towers(x).astype(jnp.float32)  # softmax over both towers' fc8 units
  if spec.fc8_padding:  # before the loss, softmax or predictions see them: padding units are no classes
    logits = logits[:, :spec.num_classes]
  return logits, (activations if capture else {}), new_stats


def _forward(spec: AlexNetSpec, mesh: Mesh, params, batch_stats, images, dropout_key, capture: bool, train: bool):
  towers_here = spec.towers // mesh.shape[sharding.MODEL]
  keep_masks = None
  if dropout_key is not None and spec.dropout_rate > 0:
    keep_masks = {}
    for layer, key in zip(DENSE_LAYERS, jax.random.split(dropout_key, len(DENSE_LAYERS))):
      if layer.dropout:
        shape = (images.shape[0], params[layer.name]["bias"].size)
        mask = jax.random.bernoulli(key, 1.0 - spec.dropout_rate, shape)
        keep_masks[layer.name] = lax.with_sharding_constraint(mask, NamedSharding(mesh, P(sharding.DATA, sharding.MODEL)))
  exchange = Exchange.of(mesh)
  towers, batch = exchange.spec(sharding.MODEL), exchange.spec(sharding.DATA)
  acts_spec = {}
  if capture:
    conv_spec = exchange.spec(sharding.DATA, None, None, sharding.MODEL)
    dense_spec = exchange.spec(sharding.DATA, sharding.MODEL)
    acts_spec = {name: conv_spec for name in ACTIVATION_NAMES[:-len(DENSE_LAYERS)]} | {
        l.name: dense_spec for l in DENSE_LAYERS}
  forward = jax.shard_map(
      functools.partial(_device_forward, spec, towers_here, capture, train, exchange), mesh=mesh,
      in_specs=(towers, towers, batch, exchange.spec(sharding.DATA, sharding.MODEL)),
      out_specs=(batch, acts_spec, towers))
  logits, activations, stats = forward(params, batch_stats, images, keep_masks)
  if capture and spec.fc8_padding:
    activations["fc8"] = activations["fc8"][:, :spec.num_classes]  # the logits, as from apply
  return logits, activations, stats


@functools.partial(jax.jit, static_argnames=("spec", "mesh", "capture"))
def apply(spec: AlexNetSpec, mesh: Mesh, params, images: jax.Array, dropout_key: jax.Array | None = None,
          capture: bool = False, batch_stats: dict | None = None):
  """Logits for ``images`` (NHWC, batch divisible by ``mesh.shape['data']``). Pure function of ``params``.

  ``dropout_key=None`` is inference (no dropout). Masks are drawn for the *global* batch, so a given key
  gives the same masks under every placement. ``capture=True`` also returns each layer's output.
  A ``batch_norm`` network normalises with ``batch_stats`` (running statistics) at inference and with the
  batch's own statistics in training (``train_apply`` also returns them).
  """
  train = dropout_key is not None
  if spec.batch_norm and not train and batch_stats is None:
    raise ConfigError("a batch-normalised AlexNet needs batch_stats= (its running statistics) for inference")
  logits, activations, _ = _forward(spec, mesh, params, batch_stats or {}, images, dropout_key, capture, train)
  return (logits, activations) if capture else logits


@functools.partial(jax.jit, static_argnames=("spec", "mesh"))
def train_apply(spec: AlexNetSpec, mesh: Mesh, params, batch_stats: dict, images: jax.Array,
                dropout_key: jax.Array) -> tuple[jax.Array, dict]:
  """Training-mode logits and the updated running statistics of the batch-norm layers (``{}`` without)."""
  logits, _, stats = _forward(spec, mesh, params, batch_stats, images, dropout_key, False, True)
  updated = jax.tree.map(lambda old, new: BATCH_NORM_MOMENTUM * old + (1 - BATCH_NORM_MOMENTUM) * new,
                         batch_stats, lax.stop_gradient(stats))
  return logits, updated


class TowerLayer(nnx.Module):
  """One split layer: kernel and bias with a leading tower axis, placed on the mesh's ``model`` axis."""

  def __init__(self, kernel: jax.Array, bias: jax.Array):
    self.kernel = nnx.Param(kernel)
    self.bias = nnx.Param(bias)


class TowerNorm(nnx.Module):
  """Batch normalisation of one layer's towers: affine parameters and running statistics ``[T, C]``."""

  def __init__(self, fill: Callable[[float], jax.Array]):
    # Four separate buffers: the train step donates its state, and a buffer may be donated only once.
    self.scale, self.offset = nnx.Param(fill(1.0)), nnx.Param(fill(0.0))
    self.mean, self.var = nnx.BatchStat(fill(0.0)), nnx.BatchStat(fill(1.0))


class AlexNet(nnx.Module):
  """The paper's network. ``AlexNet(config.model, rngs=nnx.Rngs(seed))``; ``model.eval(); model(images)``.

  Built under ``jax.set_mesh(make_mesh(data=D, model=M))`` (or with ``mesh=``) its towers are placed on
  that mesh; otherwise both towers sit on the first device.
  """

  def __init__(self, config: Mapping[str, Any] | AlexNetSpec, *, rngs: nnx.Rngs, mesh: Mesh | None = None):
    self.spec = config if isinstance(config, AlexNetSpec) else AlexNetSpec.from_config(config)
    self.mesh = mesh or sharding.context_mesh() or sharding.default_mesh()
    model_axis = self.mesh.shape[sharding.MODEL]
    if self.spec.towers % model_axis:
      raise ConfigError(f"model.towers={self.spec.towers} cannot be split over mesh.model={model_axis} devices")
    self.deterministic = False
    biases = {l.name: l.bias for l in CONV_LAYERS + DENSE_LAYERS}
    # Drawn straight into their shards (every process, every device makes only its own part); with
    # JAX's partitionable threefry the values do not depend on the placement.
    draw = jax.jit(lambda key, std, shape: std * jax.random.normal(key, shape, jnp.float32),
                   static_argnums=2, out_shardings=sharding.tower_sharding(self.mesh))
    fill = jax.jit(lambda value, shape: jnp.full(shape, value, jnp.float32),
                   static_argnums=1, out_shardings=sharding.tower_sharding(self.mesh))
    zero_padding = jax.jit(lambda a, real: jnp.where(real, a, 0.0), out_shardings=sharding.tower_sharding(self.mesh))
    for name, (kernel_shape, bias_shape) in self.spec.param_shapes().items():
      # Paper §5: weights from N(0, 0.01), biases 1 in conv2, conv4, conv5, fc6, fc7 and 0 elsewhere.
      std = self.spec.init_std if self.spec.init == "paper" else np.sqrt(2.0 / np.prod(kernel_shape[1:-1]))
      bias = biases[name] if self.spec.init == "paper" else 0.0
      kernel, bias = draw(rngs.params(), std, kernel_shape), fill(bias, bias_shape)
      if name == DENSE_LAYERS[-1].name and self.spec.fc8_padding:
        # fc8's padding units start at zero: no gradient reaches them and decaying zero leaves zero, so they stay.
        real = self.spec.fc8_real_units()
        kernel, bias = zero_padding(kernel, real), zero_padding(bias, real[:, 0])
      setattr(self, name, TowerLayer(kernel, bias))
    for name, shape in self.spec.norm_shapes().items():
      setattr(self, name, TowerNorm(functools.partial(fill, shape=shape)))

  def params(self) -> dict:
    """The parameters as a plain nested dict ``{layer: {'kernel', 'bias'}}`` (what training works on)."""
    return nnx.to_pure_dict(nnx.state(self, nnx.Param))

  def batch_stats(self) -> dict:
    """Running statistics of the batch-norm layers ``{bn1: {'mean', 'var'}, ...}``; ``{}`` without them."""
    return nnx.to_pure_dict(nnx.state(self, nnx.BatchStat))

  def load_params(self, params: Mapping, batch_stats: Mapping | None = None) -> None:
    for kind, values in ((nnx.Param, params), (nnx.BatchStat, batch_stats)):
      if values:
        state = nnx.state(self, kind)
        nnx.replace_by_pure_dict(state, values)
        nnx.update(self, state)

  def __call__(self, images, *, dropout_key: jax.Array | None = None) -> jax.Array:
    """Logits ``[batch, num_classes]`` (float32) for float32 NHWC ``images`` (numpy or jax)."""
    if not self.deterministic and dropout_key is None:
      raise ConfigError("a training-mode AlexNet needs dropout_key=...; call model.eval() for inference")
    placed, n = self._place(images)
    return apply(self.spec, self.mesh, self.params(), placed, None if self.deterministic else dropout_key,
                 batch_stats=self.batch_stats())[:n]

  def activations(self, images) -> dict[str, jax.Array]:
    """Inference-mode outputs by ``ACTIVATION_NAMES``: each conv after its ReLU (and LRN), each pooling,
    fc6/fc7 after ReLU, fc8 the logits. Conv maps keep the towers' channels tower by tower."""
    placed, n = self._place(images)
    _, acts = apply(self.spec, self.mesh, self.params(), placed, None, capture=True, batch_stats=self.batch_stats())
    return {name: a[:n] for name, a in acts.items()}

  def _place(self, images) -> tuple[jax.Array, int]:
    """Pads the batch to a multiple of the data axis and shards it over ``data``."""
    if isinstance(images, jax.core.Tracer):
      return images, images.shape[0]
    images = jnp.asarray(images, jnp.float32) if isinstance(images, jax.Array) else np.asarray(images, np.float32)
    if images.ndim != 4 or images.shape[-1] != 3:
      raise ConfigError(f"expected NHWC RGB images [batch, H, W, 3], got shape {images.shape}")
    n, pad = images.shape[0], (-images.shape[0]) % self.mesh.shape[sharding.DATA]
    if pad:
      images = (jnp if isinstance(images, jax.Array) else np).concatenate(
          [images, (jnp if isinstance(images, jax.Array) else np).zeros((pad, *images.shape[1:]), images.dtype)])
    return jax.device_put(images, sharding.batch_sharding(self.mesh)), n
