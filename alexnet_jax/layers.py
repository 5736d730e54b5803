"""The paper's layer primitives, channels last, written for one device's share of the towers.

Convolutions, LRN and pooling work on one tower's maps (the model keeps each local tower's maps an array
of its own, as each of the paper's GPUs did). The fully connected layers read all maps, so
``tower_dense`` takes the local towers' kernels ``[T, In, Out]`` at once and lays their outputs side by
side, tower by tower: ``[..., T * Out]``."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax


def local_response_norm(
    x: jax.Array, *, size: int, k: float, alpha: float, beta: float
) -> jax.Array:
  """Paper §3.3: ``b_i = a_i / (k + alpha * sum_j a_j^2) ** beta``, j over ``size`` adjacent channels.

  ``alpha`` is *not* divided by ``size`` (the paper's and TensorFlow's convention; Caffe and PyTorch
  divide it). Channels beyond either edge count as zero. Accumulates in float32 whatever ``x``'s dtype.
  """
  if size % 2 != 1:
    raise ValueError(
        f"local_response_norm needs an odd window size, got {size}"
    )
  return _lrn(x, size, float(k), float(alpha), float(beta))


def _window_sum(v: jax.Array, size: int) -> jax.Array:
  """Sum over ``size`` adjacent channels, zeros beyond the edges: shifted slices, which XLA fuses."""
  half, channels = size // 2, v.shape[-1]
  padded = jnp.pad(v, [(0, 0)] * (v.ndim - 1) + [(half, half)])
  return sum(padded[..., i : i + channels] for i in range(size))


def _inverse_power(s: jax.Array, beta: float) -> jax.Array:
  """``s ** -beta``; for the paper's beta = 0.75 as rsqrt(s) * sqrt(rsqrt(s)), cheaper than exp(log)."""
  if beta == 0.75:
    r = lax.rsqrt(s)
    return r * jnp.sqrt(r)
  return s**-beta


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3, 4))
def _lrn(x, size, k, alpha, beta):
  x32 = x.astype(jnp.float32)
  return (
      x32 * _inverse_power(k + alpha * _window_sum(jnp.square(x32), size), beta)
  ).astype(x.dtype)


def _lrn_forward(x, size, k, alpha, beta):
  # Only the input is kept for the backward pass, in its own dtype (bfloat16 where the network computes
  # in it); s and s^-beta are recomputed there from it, the same values in the same float32 arithmetic.
  return _lrn(x, size, k, alpha, beta), x


def _lrn_backward(size, k, alpha, beta, x, g):
  # b_i = x_i s_i^-beta, s_i = k + alpha sum_{j in W(i)} x_j^2, and j in W(i) <=> i in W(j), so
  # dL/dx_i = g_i s_i^-beta - 2 alpha beta x_i sum_{j in W(i)} g_j x_j s_j^(-beta-1).
  # Written out, the backward pass reuses s^-beta instead of differentiating a power (two passes fewer).
  x32 = x.astype(jnp.float32)
  s = k + alpha * _window_sum(jnp.square(x32), size)
  scale = _inverse_power(s, beta)
  g32 = g.astype(jnp.float32)
  spread = _window_sum(g32 * x32 * scale / s, size)
  return ((g32 * scale - 2.0 * alpha * beta * x32 * spread).astype(g.dtype),)


_lrn.defvjp(_lrn_forward, _lrn_backward)


def conv(
    x: jax.Array,
    kernel: jax.Array,
    bias: jax.Array,
    *,
    stride: int,
    padding: tuple[int, int],
) -> jax.Array:
  """One tower's convolution: NHWC ``x``, HWIO ``kernel``, bias ``[Cout]``; ``padding`` (before, after) in H and W."""
  y = lax.conv_general_dilated(
      x,
      kernel.astype(x.dtype),
      window_strides=(stride, stride),
      padding=(padding, padding),
      dimension_numbers=("NHWC", "HWIO", "NHWC"),
  )
  return y + bias.astype(x.dtype)


def shared_input_conv(
    x: jax.Array,
    kernels: jax.Array,
    biases: jax.Array,
    *,
    stride: int,
    padding: tuple[int, int],
) -> list[jax.Array]:
  """The local towers' convolutions of one input they all read (conv1 on the image, conv3) as one
  convolution: kernels ``[T, H, W, I, O]`` side by side on the output axis, then each tower's ``O``
  channels apart again. The same sums as ``conv`` per tower; one larger op may suit an accelerator.
  """
  towers, height, width, fan_in, out = kernels.shape
  side_by_side = jnp.moveaxis(kernels, 0, 3).reshape(
      height, width, fan_in, towers * out
  )
  y = conv(
      x,
      side_by_side,
      biases.reshape(towers * out),
      stride=stride,
      padding=padding,
  )
  return [y[..., t * out : (t + 1) * out] for t in range(towers)]


def tower_dense(x: jax.Array, kernel: jax.Array, bias: jax.Array) -> jax.Array:
  """Fully connected layer of the local towers, all reading the whole ``x``. kernel ``[T, In, Out]``."""
  towers, fan_in, out = kernel.shape
  kernel = kernel.astype(x.dtype)
  # Layout "FC layers as plain products for one tower" (docs/performance.md); more towers: a product
  # batched over the tower axis, which reads the kernels where they lie.
  if towers == 1:
    y = x @ kernel.reshape(fan_in, out)
  else:
    y = lax.dot_general(
        jnp.broadcast_to(x, (towers, *x.shape)),
        kernel,
        (((2,), (1,)), ((0,), (0,))),
    )
    y = jnp.moveaxis(y, 0, 1).reshape(x.shape[0], towers * out)
  return y + bias.reshape(towers * out).astype(x.dtype)


def max_pool(x: jax.Array, *, window: int, stride: int) -> jax.Array:
  """Max pooling, no padding (paper §3.4: z=3, s=2 overlapping; z=s=2 traditional).

  The gradient goes to the first maximum of each window (row-major), as XLA's own; on the CPU it is
  computed by ``_max_pool_backward_by_slices``, without XLA's select-and-scatter (faster there:
  docs/performance.md).
  """
  return _max_pool(x, window, stride)


def _reduce_window_max(x: jax.Array, window: int, stride: int) -> jax.Array:
  # A Python scalar init lets JAX pick reduce_window_max, which (unlike the generic form) differentiates.
  return lax.reduce_window(
      x,
      -jnp.inf,
      lax.max,
      (1, window, window, 1),
      (1, stride, stride, 1),
      "VALID",
  )


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def _max_pool(x, window, stride):
  return _reduce_window_max(x, window, stride)


def _max_pool_forward(x, window, stride):
  y = _reduce_window_max(x, window, stride)
  return y, (x, y)


def _max_pool_backward(window, stride, saved, g):
  x, y = saved
  xla = lambda x, y, g: jax.vjp(
      lambda x: _reduce_window_max(x, window, stride), x
  )[1](g)[0]
  by_slices = functools.partial(
      _max_pool_backward_by_slices, window=window, stride=stride
  )
  return (lax.platform_dependent(x, y, g, cpu=by_slices, default=xla),)


def _max_pool_backward_by_slices(x, y, g, *, window: int, stride: int):
  """Elementwise work and one interleave, no scatter: which offset of its window each maximum sits at
  (the first, row-major), then each input position collects the gradients of the windows whose maximum
  it is, one stride phase of the input grid at a time."""
  n, height, width, channels = x.shape
  out_h, out_w = y.shape[1:3]
  # Offset index (i * window + j) of each window's first maximum.
  first = jnp.full(y.shape, window * window, jnp.int32)
  for k in reversed(range(window * window)):
    i, j = divmod(k, window)
    seen = lax.slice(
        x,
        (0, i, j, 0),
        (
            n,
            i + stride * (out_h - 1) + 1,
            j + stride * (out_w - 1) + 1,
            channels,
        ),
        (1, stride, stride, 1),
    )
    first = jnp.where(seen == y, k, first)
  # Input row r = stride * (output row) + i: phase i % stride, one row further down per stride in i.
  reach = (window - 1) // stride
  rows, cols = max(-(-height // stride), out_h + reach), max(
      -(-width // stride), out_w + reach
  )
  zero = jnp.zeros((), g.dtype)
  phases = []
  for pi in range(stride):
    row = []
    for pj in range(stride):
      total = jnp.zeros((n, rows, cols, channels), g.dtype)
      for i in range(pi, window, stride):
        for j in range(pj, window, stride):
          mine = jnp.where(first == i * window + j, g, zero)
          shift = (
              (0, 0, 0),
              (i // stride, rows - out_h - i // stride, 0),
              (j // stride, cols - out_w - j // stride, 0),
              (0, 0, 0),
          )
          total = total + lax.pad(mine, zero, shift)
      row.append(total)
    phases.append(jnp.stack(row, axis=3))  # [n, rows, cols, pj, channels]
  interleaved = jnp.stack(phases, axis=2).reshape(
      n, rows * stride, cols * stride, channels
  )
  return interleaved[:, :height, :width]


_max_pool.defvjp(_max_pool_forward, _max_pool_backward)


def pool_output_size(size: int, window: int, stride: int) -> int:
  return (size - window) // stride + 1


def conv_output_size(
    size: int, kernel: int, stride: int, padding: tuple[int, int]
) -> int:
  return (size + sum(padding) - kernel) // stride + 1
