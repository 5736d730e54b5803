"""What shapes the network: its layers as the paper lists them, and ``AlexNetSpec``, the model config
checked and made static (shapes, parameter counts, FLOPs). The values live in the configs
(``configs/paper.py``); every spec comes from ``AlexNetSpec.from_config``."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from alexnet_jax import layers
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
  # paper §5: biases 1 in conv2, conv4, conv5 and the hidden FC layers, 0 elsewhere
  bias: float


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
# Table 2's "1 CNN*": "an extra sixth convolutional layer over the last pooling layer" (``model.extra_conv``).
# The paper gives no size: conv5's kernels, 3x3 over its own tower's maps like conv4 and conv5, no pooling,
# so fc6 still reads 6x6x256 and the FC layers transfer unchanged (README, departures table).
EXTRA_CONV = ConvLayer(
    "conv6", 3, 1, (1, 1), OWN, lrn=False, pool=False, bias=1.0
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


def activation_names(conv_layers: tuple[ConvLayer, ...]) -> tuple[str, ...]:
  """Each layer's output, then its pooling's, in the order of the forward pass."""
  return tuple(
      n
      for l in conv_layers
      for n in ((l.name, pool_name(l)) if l.pool else (l.name,))
  ) + tuple(l.name for l in DENSE_LAYERS)


# What the paper's ``AlexNet.activations`` returns, in order: conv1, pool1, conv2, pool2, conv3, conv4, conv5,
# pool5, fc6...; with ``extra_conv``, conv6 after pool5 (``AlexNetSpec.activation_names``).
ACTIVATION_NAMES = activation_names(CONV_LAYERS)

ACTIVATIONS = {"relu": jax.nn.relu, "tanh": jnp.tanh}


@dataclasses.dataclass(frozen=True)
class AlexNetSpec:
  """Everything that shapes the network; hashable, so jit can treat it as static. The fields are
  ``config.model``'s keys, all required: the configs hold the values."""

  num_classes: int
  image_size: int
  towers: int
  conv_features: tuple[int, ...]
  fc_features: tuple[int, ...]
  conv1_padding: tuple[int, int]
  lrn: bool
  lrn_size: int
  lrn_k: float
  lrn_alpha: float
  lrn_beta: float
  # "tower": each tower its own maps (paper); "layer": all maps of the layer (Caffe)
  lrn_scope: str
  # ablation: batch normalisation where the paper has LRN (after conv1, conv2)
  batch_norm: bool
  # "relu" (paper §3.1) or "tanh" (the saturating unit of its Figure 1)
  activation: str
  overlap_pool: bool
  # Table 2's CNN*: a sixth conv layer over pool5 (EXTRA_CONV)
  extra_conv: bool
  dropout_rate: float
  # "paper": N(0, init_std) and the paper's biases; "he": N(0, 2/fan_in), zero biases
  init: str
  init_std: float
  # compute dtype; "auto" in a config: bfloat16 on GPUs and TPUs, float32 on CPUs
  dtype: str
  # how the towers of one device run the convolutions they all read (conv1, conv3): "per_tower",
  # one convolution each (faster on XLA:CPU), or "one_op", their kernels side by side in one
  # (for accelerators: docs/performance.md); the same network either way
  shared_input_convs: str

  @classmethod
  def from_config(cls, config: Mapping[str, Any]) -> "AlexNetSpec":
    values = dict(config.items()) if hasattr(config, "items") else dict(config)
    known = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(known))
    if unknown:
      raise ConfigError(
          f"unknown model config keys {unknown}; known keys: {sorted(known)}"
      )
    missing = [key for key in known if key not in values]
    if missing:
      raise ConfigError(
          f"the model config lacks {missing}: start from a config, e.g. configs/paper.py"
      )
    for key in ("conv_features", "fc_features", "conv1_padding"):
      values[key] = tuple(int(v) for v in values[key])
    # bfloat16 where the hardware has bfloat16 matrix units
    if values["dtype"] == "auto":
      values["dtype"] = (
          "float32" if jax.default_backend() == "cpu" else "bfloat16"
      )
    spec = cls(**values)
    spec.validate()
    return spec

  def validate(self) -> None:
    if (
        len(self.conv_features) != len(CONV_LAYERS)
        or len(self.fc_features) != len(DENSE_LAYERS) - 1
    ):
      raise ConfigError(
          f"model.conv_features needs {len(CONV_LAYERS)} entries and model.fc_features "
          f"{len(DENSE_LAYERS) - 1}"
      )
    if self.num_classes < 1:
      raise ConfigError(
          f"model.num_classes must be at least 1, got {self.num_classes}"
      )
    # fc8 need not divide: its towers are padded (fc8_padding). The hidden layers' towers must be equal.
    for name, features in zip(
        LAYER_NAMES, self.conv_features + self.fc_features
    ):
      if features % self.towers:
        raise ConfigError(
            f"{name} has {features} kernels, not divisible into model.towers={self.towers}"
        )
    if self.lrn_scope not in ("tower", "layer"):
      raise ConfigError(
          f"model.lrn_scope must be 'tower' or 'layer', got {self.lrn_scope!r}"
      )
    if self.activation not in ACTIVATIONS:
      raise ConfigError(
          f"model.activation must be one of {sorted(ACTIVATIONS)}, got {self.activation!r}"
      )
    if self.lrn and self.batch_norm:
      raise ConfigError(
          "model.lrn and model.batch_norm are alternatives at the same place: set one to False"
      )
    if self.init not in ("paper", "he"):
      raise ConfigError(
          f"model.init must be 'paper' or 'he', got {self.init!r}"
      )
    if self.dtype not in ("float32", "bfloat16", "float16"):
      raise ConfigError(
          f"model.dtype must be float32, bfloat16 or float16, got {self.dtype!r}"
      )
    if self.shared_input_convs not in ("per_tower", "one_op"):
      raise ConfigError(
          "model.shared_input_convs must be 'per_tower' or 'one_op', got "
          f"{self.shared_input_convs!r}"
      )
    if not isinstance(self.extra_conv, (bool, np.bool_)):
      raise ConfigError(
          f"model.extra_conv must be True or False, got {self.extra_conv!r}"
      )
    if not 0.0 <= self.dropout_rate < 1.0:
      raise ConfigError(
          f"model.dropout_rate must be in [0, 1), got {self.dropout_rate}"
      )
    self.feature_map_sizes()  # raises if the image is too small

  @property
  def pool_window(self) -> int:
    # paper §3.4: z=3, s=2 overlapping; z=s=2 traditional
    return 3 if self.overlap_pool else 2

  pool_stride = 2

  @property
  def conv_layers(self) -> tuple[ConvLayer, ...]:
    """The convolutional layers in order: the paper's five, and conv6 with ``extra_conv``."""
    return CONV_LAYERS + ((EXTRA_CONV,) if self.extra_conv else ())

  @property
  def conv_kernels(self) -> tuple[int, ...]:
    """Kernels of each of ``conv_layers``: ``conv_features``, and conv6 as many as conv5."""
    return self.conv_features + (
        self.conv_features[-1:] if self.extra_conv else ()
    )

  def activation_names(self) -> tuple[str, ...]:
    """What ``AlexNet.activations`` returns, in order (``ACTIVATION_NAMES``, conv6 after pool5)."""
    return activation_names(self.conv_layers)

  @property
  def fc8_units_per_tower(self) -> int:
    return -(-self.num_classes // self.towers)

  @property
  def fc8_padding(self) -> int:
    """fc8 units beyond ``num_classes`` (0 when the towers divide the classes). They are the last units of
    the gathered towers (the end of the last tower): zeros from the start, their logits cut off before
    anything reads them, so no loss reaches them and weight decay keeps them at zero.
    """
    return self.towers * self.fc8_units_per_tower - self.num_classes

  def fc8_padding_params(self) -> int:
    """Parameters of fc8's padding units: held and computed, never read; not in ``num_params``."""
    return self.fc8_padding * (self.fc_features[-1] + 1)

  def feature_map_sizes(self) -> dict[str, int]:
    """Spatial size of each conv layer's output (after its pooling), e.g. conv1: 27 for the paper."""
    size, sizes = self.image_size, {}
    for layer in self.conv_layers:
      padding = self.conv1_padding if layer.padding is None else layer.padding
      size = layers.conv_output_size(size, layer.kernel, layer.stride, padding)
      if layer.pool:
        size = layers.pool_output_size(size, self.pool_window, self.pool_stride)
      if size < 1:
        raise ConfigError(
            f"model.image_size={self.image_size} is too small: {layer.name}'s output "
            f"would be empty (the network needs at least 63x63 input)"
        )
      sizes[layer.name] = size
    return sizes

  def param_shapes(self) -> dict[str, tuple[tuple[int, ...], tuple[int, ...]]]:
    """name -> (kernel shape, bias shape), each with the leading tower axis."""
    t, shapes = self.towers, {}
    fan_in = 3
    for layer, features in zip(self.conv_layers, self.conv_kernels):
      cin = fan_in // t if layer.reads == OWN else fan_in
      shapes[layer.name] = (
          (t, layer.kernel, layer.kernel, cin, features // t),
          (t, features // t),
      )
      fan_in = features
    fan_in *= self.feature_map_sizes()[self.conv_layers[-1].name] ** 2
    for layer, per_tower in zip(
        DENSE_LAYERS,
        tuple(f // t for f in self.fc_features) + (self.fc8_units_per_tower,),
    ):
      shapes[layer.name] = ((t, fan_in, per_tower), (t, per_tower))
      fan_in = t * per_tower
    return shapes

  def norm_shapes(self) -> dict[str, tuple[int, int]]:
    """Batch-norm layer name (``bn1``...) -> shape ``[towers, channels per tower]`` of its scale, offset and
    statistics; empty unless ``batch_norm``."""
    if not self.batch_norm:
      return {}
    return {
        norm_name(l): (self.towers, f // self.towers)
        for l, f in zip(CONV_LAYERS, self.conv_features)
        if l.lrn
    }

  def forward_flops(self) -> int:
    """FLOPs (2 x multiply-adds) of one image's forward pass through the convolutions and FC layers;
    ReLU, LRN and pooling are left out, as is usual for model FLOP utilisation. fc8's padding units count:
    they are computed."""
    shapes, size, flops = self.param_shapes(), self.image_size, 0
    for layer in self.conv_layers:
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
    weights = sum(
        int(np.prod(k)) + int(np.prod(b))
        for k, b in self.param_shapes().values()
    )
    # scale, offset
    norms = sum(
        2 * int(np.prod(shape)) for shape in self.norm_shapes().values()
    )
    return weights + norms - self.fc8_padding_params()

  def fc8_real_units(self) -> np.ndarray:
    """``[towers, 1, units per tower]``: True for fc8's class units, False for its padding."""
    per = self.fc8_units_per_tower
    return (np.arange(self.towers * per) < self.num_classes).reshape(
        self.towers, 1, per
    )
