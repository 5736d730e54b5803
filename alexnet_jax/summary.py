"""``python -m alexnet_jax.summary --config=configs/paper.py``: the network layer by layer.

For each layer: output shape, parameters, which device on the ``model`` axis holds which tower, and
where activations cross devices (the paper's GPU-to-GPU traffic). Shapes come from tracing the real
forward pass (no parameters are allocated, no devices needed).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags
from jax.sharding import AbstractMesh, AxisType
from ml_collections import config_flags

from alexnet_jax import cli, sharding
from alexnet_jax import model as model_lib
from alexnet_jax import spec as spec_lib


def layer_rows(model_config, model_devices: int) -> tuple[list[dict], int]:
  """One dict per activation of the forward pass, and the total parameter count."""
  spec = model_lib.AlexNetSpec.from_config(model_config)
  sharding.check_towers(spec.towers, model_devices)
  mesh = AbstractMesh(
      (1, model_devices),
      (sharding.DATA, sharding.MODEL),
      axis_types=(AxisType.Auto,) * 2,
  )
  params = {
      name: {
          "kernel": jax.ShapeDtypeStruct(k, jnp.float32),
          "bias": jax.ShapeDtypeStruct(b, jnp.float32),
      }
      for name, (k, b) in spec.param_shapes().items()
  }
  norms = {
      name: {
          k: jax.ShapeDtypeStruct(shape, jnp.float32)
          for k in ("scale", "offset")
      }
      for name, shape in spec.norm_shapes().items()
  }
  stats = {
      name: {"mean": n["scale"], "var": n["offset"]}
      for name, n in norms.items()
  }
  images = jax.ShapeDtypeStruct(
      (1, spec.image_size, spec.image_size, 3), jnp.float32
  )
  _, shapes = jax.eval_shape(
      lambda p, s, x: model_lib.apply(
          spec, mesh, p, x, capture=True, batch_stats=s
      ),
      params | norms,
      stats,
      images,
  )

  layers = {l.name: l for l in spec.conv_layers + model_lib.DENSE_LAYERS}
  per_device = spec.towers // model_devices
  rows, previous_channels = [], 3
  for name in spec.activation_names():
    shape = tuple(shapes[name].shape[1:])
    layer = layers.get(name)
    row = {
        "layer": name,
        "shape": "x".join(map(str, shape)),
        "params": 0,
        "placement": "",
        "traffic": "",
    }
    if layer is not None:
      kernel, bias = spec.param_shapes()[name]
      # A batch-norm layer's scale and offset count with the convolution they follow.
      norm = (
          2
          * int(np.prod(spec.norm_shapes().get(model_lib.norm_name(layer), 0)))
          if name.startswith("conv")
          else 0
      )
      padding = (
          spec.fc8_padding_params()
          if name == model_lib.DENSE_LAYERS[-1].name
          else 0
      )
      # the padding is no parameter
      row["params"] = int(np.prod(kernel) + np.prod(bias)) + norm - padding
      towers = ", ".join(
          f"t{t}->dev{t // per_device}" for t in range(spec.towers)
      )
      row["placement"] = (
          f"{spec.towers} x {int(np.prod(kernel[1:]) + np.prod(bias[1:])):,} ({towers})"
      )
      if padding:
        row[
            "placement"
        ] += f"; {_units(spec.fc8_padding)} of padding at the end"
      reads_all = getattr(layer, "reads", spec_lib.ALL) == spec_lib.ALL
      if reads_all and model_devices > 1:
        row["traffic"] = (
            f"gathers {previous_channels * (model_devices - 1) // model_devices:,} values/image"
        )
      elif reads_all or getattr(layer, "reads", None) == spec_lib.IMAGE:
        row["traffic"] = "reads all towers" if reads_all else "reads the image"
      else:
        row["traffic"] = "own tower only"
    previous_channels = int(np.prod(shape))
    rows.append(row)
  # the towers' fc8 units, padding too
  previous_channels = spec.towers * spec.fc8_units_per_tower
  softmax_traffic = (
      f"gathers {previous_channels * (model_devices - 1) // model_devices:,} values/image"
      if model_devices > 1
      else "reads all towers"
  )
  rows.append(
      {
          "layer": "softmax",
          "shape": rows[-1]["shape"],
          "params": 0,
          "placement": "",
          "traffic": softmax_traffic,
      }
  )
  return rows, spec.num_params()


def padding_note(spec) -> str:
  """A line on fc8's padding units (an ``AlexNetSpec``'s) when the towers do not divide the classes, else ''."""
  if not spec.fc8_padding:
    return ""
  return (
      f"fc8: {spec.num_classes} classes on {spec.towers} towers of {_units(spec.fc8_units_per_tower)}: "
      f"{_units(spec.fc8_padding)} of padding ({spec.fc8_padding_params():,} parameters, zeros, held and "
      f"computed, never read), not in the total"
  )


def _units(n: int) -> str:
  return f"{n} unit" + ("" if n == 1 else "s")


def format_table(rows: list[dict], total: int, title: str) -> str:
  headers = {
      "layer": "layer",
      "shape": "output",
      "params": "parameters",
      "placement": "towers -> devices",
      "traffic": "cross-device",
  }
  cells = [
      {
          k: (
              f"{r[k]:,}"
              if k == "params" and r[k]
              else ("" if k == "params" else str(r[k]))
          )
          for k in headers
      }
      for r in rows
  ]
  widths = {
      k: max(len(headers[k]), *(len(c[k]) for c in cells)) for k in headers
  }
  line = lambda c: "  ".join(
      c[k].rjust(widths[k]) if k == "params" else c[k].ljust(widths[k])
      for k in headers
  )
  rule = "-" * len(line(headers))
  return "\n".join(
      [
          title,
          rule,
          line(headers),
          rule,
          *(line(c) for c in cells),
          rule,
          f"total parameters: {total:,}",
      ]
  )


def main(argv):
  del argv
  config = FLAGS.config
  rows, total = layer_rows(config.model, config.mesh.model)
  spec = model_lib.AlexNetSpec.from_config(config.model)
  print(
      format_table(
          rows,
          total,
          f"AlexNet: {config.model.towers} tower(s) on mesh.model={config.mesh.model}, "
          f"{config.model.image_size}x{config.model.image_size} input",
      )
  )
  if spec.fc8_padding:
    print(padding_note(spec))
  if config.mesh.model > 1:
    held = total + spec.fc8_padding_params()  # the padding is held too
    print(
        f"each device on the model axis holds {held // config.mesh.model:,} parameters"
    )


if __name__ == "__main__":
  FLAGS = flags.FLAGS
  config_flags.DEFINE_config_file(
      "config", None, "Config file, e.g. configs/paper.py."
  )
  flags.mark_flags_as_required(["config"])
  cli.run(main)
