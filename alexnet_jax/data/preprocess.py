"""The device half of the input pipeline, inside the jitted steps: uint8 crops -> network input.

``x = (mirror?(crop - mean_image[same window]) + lighting) / std_rgb * pixel_scale``: the paper's mean
image subtraction (§2), horizontal reflection and PCA lighting (§4.1) as one fused pass
(``std_rgb``, in 0..255 units, only for imported weights that expect it; the paper divides by nothing).
The arrays are a placed batch's (``batch.TRAIN`` and ``batch.EVAL`` give their keys, shapes and dtypes).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from alexnet_jax import sharding
from alexnet_jax.data.stats import DatasetStats


def constants(stats: DatasetStats, mesh=None, mean_rgb=(), std_rgb=()) -> dict:
  """The statistics as device arrays (replicated on ``mesh``), passed to the steps as arguments.

  ``mean_rgb`` (0..255) replaces the mean image by one colour and ``std_rgb`` divides each channel: the
  normalisation pretrained weights from elsewhere expect (torchvision: ImageNet's mean and std).
  """
  mean_image = stats.mean_image
  if len(mean_rgb):
    mean_image = np.broadcast_to(
        np.asarray(mean_rgb, np.float32), mean_image.shape
    )
  values = {
      "mean_image": mean_image,
      "eigenvalues": stats.eigenvalues,
      "eigenvectors": stats.eigenvectors,
  }
  if len(std_rgb):
    values["channel_scale"] = 1.0 / np.asarray(std_rgb, np.float32)
  if mesh is None:
    return {k: jnp.asarray(v) for k, v in values.items()}
  return sharding.on_mesh(mesh, values)


def network_input(
    images: jax.Array,
    offsets: jax.Array,
    consts: dict,
    pixel_scale: float,
    alpha: jax.Array | None = None,
) -> jax.Array:
  """images uint8 [B, s, s, 3], crops as cut (unmirrored); offsets int32 [B, 3] (top, left, flipped);
  alpha float32 [B, 3] or None."""
  size = images.shape[1]
  mean = consts["mean_image"]

  def mean_window(offset):
    return lax.dynamic_slice(mean, (offset[0], offset[1], 0), (size, size, 3))

  x = images.astype(jnp.float32) - jax.vmap(mean_window)(offsets)
  x = jnp.where(offsets[:, 2, None, None, None] > 0, x[:, :, ::-1], x)
  if alpha is not None:
    # §4.1: [p1 p2 p3][a1 l1, a2 l2, a3 l3]^T, the statistics' [0, 1] units scaled to 0..255
    shift = 255.0 * (alpha * consts["eigenvalues"]) @ consts["eigenvectors"].T
    x = x + shift[:, None, None, :]
  if "channel_scale" in consts:
    x = x * consts["channel_scale"]
  return x * pixel_scale if pixel_scale != 1.0 else x


def views_input(
    images: jax.Array, offsets: jax.Array, consts: dict, pixel_scale: float
) -> jax.Array:
  """Evaluation: images uint8 [B, windows, s, s, 3], each window once; offsets int32 [B, views, 3], the
  windows then (for 10 views) the same windows mirrored (``augment.eval_views``) -> [B * views, s, s, 3].
  """
  batch, views = offsets.shape[:2]
  images = jnp.tile(images, (1, views // images.shape[1], 1, 1, 1))
  flat = lambda x: x.reshape(batch * views, *x.shape[2:])
  return network_input(flat(images), flat(offsets), consts, pixel_scale)
