"""AlexNet (Krizhevsky, Sutskever & Hinton, NIPS 2012) as a Flax NNX module on a two-tower mesh.

The paper trained on two GPUs, each holding half of every layer's kernels (its Figure 2)::

    image ─┬─ conv1 ─ LRN ─ pool ─ conv2 ─ LRN ─ pool ═╦═ conv3 ─ conv4 ─ conv5 ─ pool ═╦═ fc6 ═╦═ fc7 ═╦═ fc8 ═╦═ softmax
           └─ conv1 ─ LRN ─ pool ─ conv2 ─ LRN ─ pool ═╩═ conv3 ─ conv4 ─ conv5 ─ pool ═╩═ fc6 ═╩═ fc7 ═╩═ fc8 ═╩═
      (GPU 1 above, GPU 2 below;  ═╬═ : the GPUs exchange maps — conv3, fc6, fc7, fc8 read both towers)

Table 2's "1 CNN*" (``model.extra_conv``) adds a sixth conv layer over pool5 in each tower, reading its
own tower's maps, between pool5 and the exchange before fc6.

Here a tower is a slice of a leading parameter axis ``[towers, ...]`` that is sharded over the mesh axis
``model``. The forward pass is written for one device's share (``_device_forward``) and run under
``jax.shard_map``: each device computes its local towers on its slice of the batch and ``all_gather``s
the towers' maps over ``model`` exactly where the paper's GPUs talked (``gather_towers``). With
``model=1`` one device runs both towers. Every placement gives the same numbers. How the maps are laid
out for speed (each tower's maps an array of their own; no collectives over a one-device axis) is
named where it is done; the measurements are in docs/performance.md, "Layout choices in the network".
"""

from __future__ import annotations

import functools
from typing import Callable, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax import lax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from alexnet_jax import layers, sharding
from alexnet_jax.errors import ConfigError
from alexnet_jax.sharding import Exchange

# AlexNetSpec and the layer table, imported from here too.
from alexnet_jax.spec import ACTIVATIONS, CONV_LAYERS, DENSE_LAYERS
from alexnet_jax.spec import EXTRA_CONV, AlexNetSpec, norm_name

# Running statistics: short runs need a short memory (flax's default is 0.99).
BATCH_NORM_MOMENTUM = 0.9
BATCH_NORM_EPSILON = 1e-5
_CONV = {layer.name: layer for layer in CONV_LAYERS + (EXTRA_CONV,)}


def _device_forward(
    spec, towers, capture, train, exchange, params, stats, images, masks
):
  """One device's share, Figure 2 left to right: its ``towers`` local towers
  on its slice of the batch. Conv maps are lists, one array per local tower
  (layout "towers apart"); ``all_towers`` marks a cross-device point. Returns
  the logits, the captured activations and the batch-norm layers' statistics
  (the batch's in training, else the running ones)."""
  net = _Share(spec, towers, train, exchange, params, stats, masks or {}, {})
  image = images.astype(spec.dtype)
  conv1 = net.normalise("conv1", net.conv("conv1", image))  # the image
  pool1 = net.pool(conv1)
  conv2 = net.normalise("conv2", net.conv("conv2", pool1))  # own tower's
  pool2 = net.pool(conv2)
  conv3 = net.conv("conv3", net.all_towers(pool2))  # both towers' maps
  conv4 = net.conv("conv4", conv3)  # own tower's
  conv5 = net.conv("conv5", conv4)  # own tower's
  pool5 = net.pool(conv5)
  # Table 2's CNN*: a sixth conv layer over pool5, own tower's
  conv6 = net.conv("conv6", pool5) if spec.extra_conv else None
  top = pool5 if conv6 is None else conv6
  fc6 = net.dropout("fc6", net.dense("fc6", net.all_towers(top)))
  fc7 = net.dropout("fc7", net.dense("fc7", net.all_towers(fc6)))
  fc8 = net.dense("fc8", net.all_towers(fc7), activation=False)
  logits = net.all_towers(fc8).astype(jnp.float32)  # softmax reads all units
  if spec.fc8_padding:  # cut before anything reads them: padding is no class
    logits = logits[:, : spec.num_classes]
  activations = {}
  if capture:  # by spec.activation_names(), in its order
    maps = [conv1, pool1, conv2, pool2, conv3, conv4, conv5, pool5]
    maps += [] if conv6 is None else [conv6]
    outputs = [jnp.concatenate(m, axis=-1) for m in maps] + [fc6, fc7, fc8]
    activations = dict(zip(spec.activation_names(), outputs, strict=True))
  return logits, activations, net.stats


class _Share(NamedTuple):
  """The layers of one device's share of the towers. Conv maps are lists,
  one array per local tower; fully connected units are one array, the local
  towers' side by side."""

  spec: AlexNetSpec
  towers: int  # local towers
  train: bool
  exchange: Exchange
  params: dict
  batch_stats: dict
  keep_masks: dict  # dropout's, by layer; empty at inference
  stats: dict  # filled in: the batch-norm layers' statistics

  def act(self, x: jax.Array) -> jax.Array:
    return ACTIVATIONS[self.spec.activation](x)

  def all_towers(self, x: list[jax.Array] | jax.Array) -> jax.Array:
    """A cross-device point: all towers' maps, channels tower by tower."""
    if isinstance(x, list):
      x = jnp.concatenate(x, axis=-1)
    return self.exchange.gather_towers(x)

  def conv(self, name: str, inputs) -> list[jax.Array]:
    """Each local tower's convolution and activation, on its own maps (a
    list) or on maps that every tower reads (one array)."""
    layer, p = _CONV[name], self.params[name]
    padding = layer.padding or self.spec.conv1_padding
    k, b = p["kernel"], p["bias"]
    shared = not isinstance(inputs, list)
    if shared and self.towers > 1 and self.spec.shared_input_convs == "one_op":
      maps = layers.shared_input_conv(
          inputs, k, b, stride=layer.stride, padding=padding
      )
      return [self.act(m) for m in maps]
    if shared:
      inputs = [inputs] * self.towers
    conv = functools.partial(layers.conv, stride=layer.stride, padding=padding)
    return [self.act(conv(x, k[t], b[t])) for t, x in enumerate(inputs)]

  def normalise(self, name: str, maps: list[jax.Array]) -> list[jax.Array]:
    """LRN (paper §3.3), batch normalisation in its place, or neither."""
    if self.spec.lrn:
      return self._lrn(maps)
    if self.spec.batch_norm:
      bn = norm_name(_CONV[name])
      p, running = self.params[bn], self.batch_stats.get(bn)
      x = jnp.concatenate(maps, axis=-1)
      x, self.stats[bn] = _batch_norm(x, p, running, self.train, self.exchange)
      return _split(x, self.towers)
    return maps

  def _lrn(self, maps: list[jax.Array]) -> list[jax.Array]:
    s = self.spec
    constants = dict(k=s.lrn_k, alpha=s.lrn_alpha, beta=s.lrn_beta)
    lrn = functools.partial(layers.local_response_norm, size=s.lrn_size)
    lrn = functools.partial(lrn, **constants)
    if s.lrn_scope == "tower":
      return [lrn(m) for m in maps]
    # Across all maps of the layer (Caffe): neighbours may sit on the other
    # device, so gather first.
    everything = lrn(self.all_towers(maps))
    width = len(maps) * maps[0].shape[-1]
    start = self.exchange.model_index() * width
    mine = lax.dynamic_slice_in_dim(everything, start, width, axis=-1)
    return _split(mine, len(maps))

  def pool(self, maps: list[jax.Array]) -> list[jax.Array]:
    window, stride = self.spec.pool_window, self.spec.pool_stride
    return [layers.max_pool(m, window=window, stride=stride) for m in maps]

  def dense(self, name: str, x: jax.Array, activation=True) -> jax.Array:
    p = self.params[name]
    x = x.reshape(x.shape[0], -1)
    y = layers.tower_dense(x, p["kernel"], p["bias"])
    return self.act(y) if activation else y

  def dropout(self, name: str, x: jax.Array) -> jax.Array:
    """Paper §4.2, inverted: scaled at training time, so evaluation needs no
    paper-style x0.5."""
    if name not in self.keep_masks:  # inference
      return x
    kept = x / (1.0 - self.spec.dropout_rate)
    return jnp.where(self.keep_masks[name], kept, 0).astype(x.dtype)


def _split(x: jax.Array, towers: int) -> list[jax.Array]:
  """The local towers' maps, one array each, from their channels laid side
  by side (tower by tower)."""
  width = x.shape[-1] // towers
  return [x[..., t * width : (t + 1) * width] for t in range(towers)]


def _batch_norm(
    x: jax.Array, p: dict, stats: dict | None, train: bool, exchange
):
  """Batch normalisation of each channel over the *global* batch (and
  positions): the means are averaged over the ``data`` axis, so every
  placement gives the same numbers. Returns (y, batch statistics)."""
  x32 = x.astype(jnp.float32)
  if train:
    mean = exchange.mean_over_data(jnp.mean(x32, axis=(0, 1, 2)))
    var = jnp.mean(jnp.square(x32 - mean), axis=(0, 1, 2))
    var = exchange.mean_over_data(var)
  else:
    mean, var = stats["mean"].reshape(-1), stats["var"].reshape(-1)
  scale = p["scale"].reshape(-1) * lax.rsqrt(var + BATCH_NORM_EPSILON)
  y = (x32 - mean) * scale + p["offset"].reshape(-1)
  shape = p["scale"].shape  # [local towers, channels per tower]
  new = {"mean": mean.reshape(shape), "var": var.reshape(shape)}
  return y.astype(x.dtype), new


def _keep_masks(spec: AlexNetSpec, mesh: Mesh, params, batch: int, key):
  """Dropout masks, drawn for the *global* batch: the same in every
  placement."""
  if key is None or spec.dropout_rate == 0:
    return None
  masks, placed = {}, NamedSharding(mesh, P(sharding.DATA, sharding.MODEL))
  keys = jax.random.split(key, len(DENSE_LAYERS))
  for layer, key in zip(DENSE_LAYERS, keys):
    if layer.dropout:
      shape = (batch, params[layer.name]["bias"].size)
      mask = jax.random.bernoulli(key, 1.0 - spec.dropout_rate, shape)
      masks[layer.name] = lax.with_sharding_constraint(mask, placed)
  return masks


def _forward(
    spec, mesh, params, batch_stats, images, dropout_key, capture, train
):
  towers_here = spec.towers // mesh.shape[sharding.MODEL]
  keep_masks = _keep_masks(spec, mesh, params, images.shape[0], dropout_key)
  exchange = Exchange.of(mesh)
  towers, batch = exchange.spec(sharding.MODEL), exchange.spec(sharding.DATA)
  units = exchange.spec(sharding.DATA, sharding.MODEL)
  acts_spec = {}
  if capture:
    maps = exchange.spec(sharding.DATA, None, None, sharding.MODEL)
    acts_spec = {name: maps for name in spec.activation_names()}
    acts_spec |= {layer.name: units for layer in DENSE_LAYERS}
  share = functools.partial(
      _device_forward, spec, towers_here, capture, train, exchange
  )
  specs = dict(
      in_specs=(towers, towers, batch, units),
      out_specs=(batch, acts_spec, towers),
  )
  forward = jax.shard_map(share, mesh=mesh, **specs)
  logits, activations, stats = forward(params, batch_stats, images, keep_masks)
  if capture and spec.fc8_padding:  # the logits, as from apply
    activations["fc8"] = activations["fc8"][:, : spec.num_classes]
  return logits, activations, stats


@functools.partial(jax.jit, static_argnames=("spec", "mesh", "capture"))
def apply(
    spec,
    mesh,
    params,
    images,
    dropout_key=None,
    capture=False,
    batch_stats=None,
):
  """Logits for ``images`` (NHWC, batch divisible by ``mesh.shape['data']``). Pure function of ``params``.

  ``dropout_key=None`` is inference (no dropout). Masks are drawn for the *global* batch, so a given key
  gives the same masks under every placement. ``capture=True`` also returns each layer's output.
  A ``batch_norm`` network normalises with ``batch_stats`` (running statistics) at inference and with the
  batch's own statistics in training (``train_apply`` also returns them).
  """
  train = dropout_key is not None
  if spec.batch_norm and not train and batch_stats is None:
    raise ConfigError(
        "a batch-normalised AlexNet needs batch_stats= "
        "(its running statistics) for inference"
    )
  stats = batch_stats or {}
  logits, activations, _ = _forward(
      spec, mesh, params, stats, images, dropout_key, capture, train
  )
  return (logits, activations) if capture else logits


@functools.partial(jax.jit, static_argnames=("spec", "mesh"))
def train_apply(spec, mesh, params, batch_stats, images, dropout_key):
  """Training-mode logits and the updated running statistics of the
  batch-norm layers (``{}`` without)."""
  logits, _, stats = _forward(
      spec, mesh, params, batch_stats, images, dropout_key, False, True
  )
  m, stats = BATCH_NORM_MOMENTUM, lax.stop_gradient(stats)
  average = lambda old, new: m * old + (1 - m) * new
  return logits, jax.tree.map(average, batch_stats, stats)


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

  def __init__(self, config, *, rngs: nnx.Rngs, mesh: Mesh | None = None):
    """``config``: ``config.model`` (a mapping) or an ``AlexNetSpec``."""
    spec = config
    if not isinstance(config, AlexNetSpec):
      spec = AlexNetSpec.from_config(config)
    self.spec = spec
    self.mesh = mesh or sharding.context_mesh() or sharding.default_mesh()
    sharding.check_towers(spec.towers, self.mesh.shape[sharding.MODEL])
    self.deterministic = False
    biases = {l.name: l.bias for l in spec.conv_layers + DENSE_LAYERS}
    # Drawn straight into their shards (every process, every device makes
    # only its own part); with JAX's partitionable threefry the values do not
    # depend on the placement.
    towers = sharding.tower_sharding(self.mesh)
    placed = functools.partial(jax.jit, out_shardings=towers)

    def normal(key, std, shape):
      return std * jax.random.normal(key, shape, jnp.float32)

    draw = placed(normal, static_argnums=2)
    full = lambda value, shape: jnp.full(shape, value, jnp.float32)
    fill = placed(full, static_argnums=1)
    zero_padding = placed(lambda a, real: jnp.where(real, a, 0.0))
    for name, (kernel_shape, bias_shape) in spec.param_shapes().items():
      # Paper §5: weights from N(0, 0.01), biases 1 in conv2, conv4, conv5,
      # fc6, fc7 and 0 elsewhere (CNN*'s conv6: 1, as its kin conv4, conv5).
      std, bias = spec.init_std, biases[name]
      if spec.init != "paper":
        std, bias = np.sqrt(2.0 / np.prod(kernel_shape[1:-1])), 0.0
      kernel = draw(rngs.params(), std, kernel_shape)
      bias = fill(bias, bias_shape)
      if name == DENSE_LAYERS[-1].name and spec.fc8_padding:
        # fc8's padding units start at zero: no gradient reaches them and
        # decaying zero leaves zero, so they stay.
        real = spec.fc8_real_units()
        kernel = zero_padding(kernel, real)
        bias = zero_padding(bias, real[:, 0])
      setattr(self, name, TowerLayer(kernel, bias))
    for name, shape in spec.norm_shapes().items():
      setattr(self, name, TowerNorm(functools.partial(fill, shape=shape)))

  def params(self) -> dict:
    """The parameters as a plain nested dict ``{layer: {'kernel', 'bias'}}`` (what training works on)."""
    return nnx.to_pure_dict(nnx.state(self, nnx.Param))

  def batch_stats(self) -> dict:
    """Running statistics of the batch-norm layers ``{bn1: {'mean', 'var'}, ...}``; ``{}`` without them."""
    return nnx.to_pure_dict(nnx.state(self, nnx.BatchStat))

  def load_params(self, params: Mapping, batch_stats: Mapping | None = None):
    for kind, values in ((nnx.Param, params), (nnx.BatchStat, batch_stats)):
      if values:
        state = nnx.state(self, kind)
        nnx.replace_by_pure_dict(state, values)
        nnx.update(self, state)

  def __call__(self, images, *, dropout_key: jax.Array | None = None):
    """Logits ``[batch, num_classes]`` (float32) for float32 NHWC ``images`` (numpy or jax)."""
    if not self.deterministic and dropout_key is None:
      raise ConfigError(
          "a training-mode AlexNet needs dropout_key=...; "
          "call model.eval() for inference"
      )
    placed, n = self._place(images)
    key = None if self.deterministic else dropout_key
    stats = self.batch_stats()
    return apply(
        self.spec, self.mesh, self.params(), placed, key, batch_stats=stats
    )[:n]

  def activations(self, images) -> dict[str, jax.Array]:
    """Inference-mode outputs by ``spec.activation_names()``: each conv after its ReLU (and LRN), each pooling,
    fc6/fc7 after ReLU, fc8 the logits. Conv maps keep the towers' channels tower by tower.
    """
    placed, n = self._place(images)
    stats = self.batch_stats()
    _, acts = apply(
        self.spec,
        self.mesh,
        self.params(),
        placed,
        capture=True,
        batch_stats=stats,
    )
    return {name: a[:n] for name, a in acts.items()}

  def _place(self, images) -> tuple[jax.Array, int]:
    """Pads the batch to a multiple of the data axis and shards it over ``data``."""
    if isinstance(images, jax.core.Tracer):
      return images, images.shape[0]
    xp = jnp if isinstance(images, jax.Array) else np
    images = xp.asarray(images, xp.float32)
    if images.ndim != 4 or images.shape[-1] != 3:
      raise ConfigError(
          f"expected NHWC RGB images [batch, H, W, 3], got "
          f"shape {images.shape}"
      )
    n = images.shape[0]
    pad = -n % self.mesh.shape[sharding.DATA]
    if pad:
      zeros = xp.zeros((pad, *images.shape[1:]), images.dtype)
      images = xp.concatenate([images, zeros])
    return jax.device_put(images, sharding.batch_sharding(self.mesh)), n
