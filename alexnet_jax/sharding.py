"""The device mesh ``('data', 'model')`` and where arrays live on it.

The paper's two GPUs become the mesh axis ``model``: split-layer parameters carry a leading tower axis
sharded over it. The batch is sharded over ``data`` (and across processes on pods). This module makes
the mesh and places arrays on it; ``Exchange`` is what the forward pass moves between its devices.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
from alexnet_jax.errors import ConfigError
from jax import lax
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

DATA = "data"
MODEL = "model"

TOWER_SPEC = P(MODEL)  # parameters: leading tower axis over `model`
BATCH_SPEC = P(DATA)  # batches: leading batch axis over `data`
REPLICATED = P()


def make_mesh(data: int = -1, model: int = 1, devices=None) -> Mesh:
  """A ``data x model`` mesh over ``devices`` (default: all devices of all processes).

  ``data=-1`` takes all devices that ``model`` leaves. Axis types are Auto so ordinary jnp code
  (loss, optimiser) may run on sharded arrays outside ``shard_map``.
  """
  devices = list(jax.devices() if devices is None else devices)
  if model < 1 or len(devices) % model:
    raise ConfigError(
        f"mesh.model={model} must divide the {len(devices)} available devices"
    )
  if data == -1:
    data = len(devices) // model
  if data < 1 or data * model > len(devices):
    raise ConfigError(
        f"mesh data={data} x model={model} needs {data * model} devices, "
        f"only {len(devices)} available"
    )
  devices = devices[: data * model]
  axis_types = (AxisType.Auto, AxisType.Auto)
  if len(devices) == len(jax.devices()):
    # jax.make_mesh orders devices by the physical topology (ICI/NVLink neighbours share `model`).
    return jax.make_mesh(
        (data, model), (DATA, MODEL), axis_types=axis_types, devices=devices
    )
  return Mesh(
      np.asarray(devices).reshape(data, model),
      (DATA, MODEL),
      axis_types=axis_types,
  )


def check_towers(towers: int, model_devices: int) -> None:
  """Each device on the ``model`` axis holds whole towers."""
  if towers % model_devices:
    raise ConfigError(
        f"model.towers={towers} cannot be split over mesh.model={model_devices} devices "
        f"(each device on the model axis must hold whole towers)"
    )


def context_mesh() -> Mesh | None:
  """The concrete mesh set by ``jax.set_mesh``, or None outside one (or while tracing)."""
  try:
    mesh = jax.sharding.get_mesh()
  # get_mesh raises inside traces; callers capture the mesh at build time.
  except Exception:
    return None
  return None if mesh is None or mesh.empty else mesh


def default_mesh() -> Mesh:
  """One device: both towers on it."""
  return make_mesh(data=1, model=1, devices=jax.devices()[:1])


def tower_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, TOWER_SPEC)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, BATCH_SPEC)


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, REPLICATED)


def on_mesh(mesh: Mesh, tree):
  """Leaves already placed on ``mesh`` stay; all others (step counters, scalars) are replicated on it,
  so that every leaf of a train state, and of its restored checkpoint, lives on the same devices.
  """

  def place(x):
    if (
        isinstance(getattr(x, "sharding", None), NamedSharding)
        and x.sharding.mesh == mesh
    ):
      return x
    # Through the host: a device_put of a one-device array onto devices of other processes is not allowed.
    return jax.device_put(np.asarray(jax.device_get(x)), replicated(mesh))

  return jax.tree.map(place, tree)


def process_data_shard(mesh: Mesh) -> tuple[int, int]:
  """(index, count) of the distinct slices of the global batch that processes must load.

  Processes whose devices sit on the same rows of the ``data`` axis need the same examples (with
  ``data=1, model=2`` over two processes both load the whole batch), so the count is the number of
  distinct row sets, not the number of processes.
  """
  rows: dict[int, set[int]] = {}
  for (row, _), device in np.ndenumerate(mesh.devices):
    rows.setdefault(device.process_index, set()).add(row)
  groups = sorted({frozenset(r) for r in rows.values()}, key=min)
  return groups.index(frozenset(rows[jax.process_index()])), len(groups)


def global_batch(mesh: Mesh, local: dict, global_size: int) -> dict:
  """This process's slice of a batch (a dict of numpy arrays) -> global arrays sharded over ``data``."""
  placement = batch_sharding(mesh)
  return {
      k: jax.make_array_from_process_local_data(
          placement, v, (global_size, *v.shape[1:])
      )
      for k, v in local.items()
  }


def gather_towers(x: jax.Array) -> jax.Array:
  """The paper's GPU-to-GPU transfer: every device gets all towers' maps (channels, tower by tower)."""
  return lax.all_gather(x, MODEL, axis=x.ndim - 1, tiled=True, to="invarying")


@dataclasses.dataclass(frozen=True)
class Exchange:
  """What one device's share of the forward pass exchanges with the other devices. Over a mesh axis of
  one device every exchange is the identity and the ``shard_map`` specs leave that axis out (layout
  choice "no one-participant collectives", docs/performance.md)."""

  towers_apart: bool  # the `model` axis has more than one device
  data_parallel: bool  # the `data` axis has more than one device

  @classmethod
  def of(cls, mesh: Mesh) -> Exchange:
    return cls(
        towers_apart=mesh.shape[MODEL] > 1, data_parallel=mesh.shape[DATA] > 1
    )

  def spec(self, *axes: str | None) -> P:
    """A PartitionSpec naming only the axes that have more than one device."""
    apart = {MODEL: self.towers_apart, DATA: self.data_parallel}
    return P(*(axis if apart.get(axis) else None for axis in axes))

  def gather_towers(self, x: jax.Array) -> jax.Array:
    return gather_towers(x) if self.towers_apart else x

  def model_index(self) -> jax.Array | int:
    return lax.axis_index(MODEL) if self.towers_apart else 0

  def mean_over_data(self, x: jax.Array) -> jax.Array:
    return lax.pmean(x, DATA) if self.data_parallel else x
