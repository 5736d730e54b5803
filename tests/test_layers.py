"""Layer primitives against direct implementations of their definitions."""

import jax
import jax.test_util  # noqa: F401  (check_grads)
import jax.numpy as jnp
from jax.ad_checkpoint import print_saved_residuals
import numpy as np
import pytest
from jax import lax

from alexnet_jax import layers


def lrn_by_the_formula(a, n, k, alpha, beta):
  """Paper §3.3, term by term: b_i = a_i / (k + alpha * sum_{j=max(0,i-n/2)}^{min(N-1,i+n/2)} a_j^2)^beta."""
  a = np.asarray(a, np.float64)
  channels = a.shape[-1]
  b = np.empty_like(a)
  for i in range(channels):
    lo, hi = max(0, i - n // 2), min(channels - 1, i + n // 2)
    total = np.zeros(a.shape[:-1])
    for j in range(lo, hi + 1):
      total += a[..., j] ** 2
    b[..., i] = a[..., i] / (k + alpha * total) ** beta
  return b


@pytest.mark.parametrize("channels", [1, 3, 7, 48])
def test_lrn_matches_the_paper_formula(channels):
  a = (
      np.random.default_rng(channels)
      .normal(scale=30.0, size=(2, 3, 4, channels))
      .astype(np.float32)
  )
  got = layers.local_response_norm(
      jnp.asarray(a), size=5, k=2.0, alpha=1e-4, beta=0.75
  )
  np.testing.assert_allclose(
      np.asarray(got), lrn_by_the_formula(a, 5, 2.0, 1e-4, 0.75), rtol=1e-5
  )


def test_lrn_alpha_is_not_divided_by_n():
  # One channel of value 10: the window holds just it, so b = 10 / (2 + 1e-4 * 100) ** 0.75 by hand.
  got = layers.local_response_norm(
      jnp.full((1, 1, 1, 1), 10.0), size=5, k=2.0, alpha=1e-4, beta=0.75
  )
  assert float(got.squeeze()) == pytest.approx(10.0 / 2.01**0.75, rel=1e-6)


def test_lrn_gradient_matches_finite_differences():
  a = jnp.asarray(
      np.random.default_rng(0).normal(scale=20.0, size=(1, 2, 2, 6))
  )
  f = lambda x: jnp.sum(
      jnp.sin(
          layers.local_response_norm(x, size=5, k=2.0, alpha=1e-2, beta=0.75)
      )
  )
  jax.test_util.check_grads(
      f, (a,), order=1, modes=["rev"], eps=1e-3, atol=1e-2, rtol=1e-2
  )


def conv_by_loops(x, kernel, bias, stride, padding):
  """Cross-correlation as in the paper's nets, summed position by position (zeros beyond the padding)."""
  x = np.pad(np.asarray(x, np.float64), ((0, 0), padding, padding, (0, 0)))
  kh, kw, _, cout = kernel.shape
  out_h, out_w = (x.shape[1] - kh) // stride + 1, (
      x.shape[2] - kw
  ) // stride + 1
  y = np.zeros((x.shape[0], out_h, out_w, cout))
  for i in range(out_h):
    for j in range(out_w):
      patch = x[
          :, i * stride : i * stride + kh, j * stride : j * stride + kw, :
      ]
      y[:, i, j, :] = np.tensordot(patch, kernel, axes=([1, 2, 3], [0, 1, 2]))
  return y + bias


def test_conv_matches_a_loop_over_positions_with_uneven_padding():
  # conv1's geometry in miniature: stride 4, one more row/column of zeros before than after.
  rng = np.random.default_rng(2)
  x = rng.normal(size=(2, 13, 13, 3)).astype(np.float32)
  kernel = rng.normal(size=(5, 5, 3, 4)).astype(np.float32)
  bias = rng.normal(size=(4,)).astype(np.float32)
  got = layers.conv(
      jnp.asarray(x),
      jnp.asarray(kernel),
      jnp.asarray(bias),
      stride=4,
      padding=(2, 1),
  )
  want = conv_by_loops(x, kernel, bias, 4, (2, 1))
  assert got.shape == want.shape == (2, 3, 3, 4)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


# one tower takes a plain product, several a batched one
@pytest.mark.parametrize("towers", [1, 2])
def test_tower_dense_and_its_gradients_equal_one_matmul_per_tower(towers):
  rng = np.random.default_rng(3)
  x, kernel, bias = (
      rng.normal(size=(3, 5)),
      rng.normal(size=(towers, 5, 4)),
      rng.normal(size=(towers, 4)),
  )
  upstream = rng.normal(size=(3, towers * 4))
  got, pullback = jax.vjp(
      layers.tower_dense,
      *(jnp.asarray(a, jnp.float32) for a in (x, kernel, bias))
  )
  want = np.concatenate(
      [x @ kernel[t] + bias[t] for t in range(towers)], axis=-1
  )
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  # By hand: y_t = x K_t + b_t, so dK_t = x^T g_t, db_t = sum_rows g_t, dx = sum_t g_t K_t^T.
  g = upstream.reshape(3, towers, 4)
  got_x, got_kernel, got_bias = pullback(jnp.asarray(upstream, jnp.float32))
  np.testing.assert_allclose(
      got_kernel,
      np.stack([x.T @ g[:, t] for t in range(towers)]),
      rtol=1e-4,
      atol=1e-4,
  )
  np.testing.assert_allclose(got_bias, g.sum(axis=0), rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(
      got_x,
      sum(g[:, t] @ kernel[t].T for t in range(towers)),
      rtol=1e-4,
      atol=1e-4,
  )


def test_max_pool_overlapping_and_traditional():
  x = jnp.arange(49, dtype=jnp.float32).reshape(1, 7, 7, 1)
  # windows start at 0, 2, 4 and end at 2, 4, 6
  overlapping = layers.max_pool(x, window=3, stride=2)
  assert overlapping.shape == (1, 3, 3, 1)
  np.testing.assert_array_equal(
      overlapping[0, :, :, 0], [[16, 18, 20], [30, 32, 34], [44, 46, 48]]
  )
  traditional = layers.max_pool(x, window=2, stride=2)
  np.testing.assert_array_equal(
      traditional[0, :, :, 0], [[8, 10, 12], [22, 24, 26], [36, 38, 40]]
  )


def max_pool_gradient_by_loops(x, g, window, stride):
  """The textbook rule, one window at a time: its gradient goes to its first maximum (row-major)."""
  dx = np.zeros_like(x)
  for b, r, c, ch in np.ndindex(g.shape):
    patch = x[
        b,
        r * stride : r * stride + window,
        c * stride : c * stride + window,
        ch,
    ]
    # argmax: first maximum
    i, j = np.unravel_index(np.argmax(patch), patch.shape)
    dx[b, r * stride + i, c * stride + j, ch] += g[b, r, c, ch]
  return dx


@pytest.mark.parametrize(
    "window,stride,size", [(3, 2, 7), (3, 2, 8), (2, 2, 7), (3, 3, 9)]
)
def test_max_pool_gradient_goes_to_each_windows_first_maximum(
    window, stride, size
):
  rng = np.random.default_rng(window * 10 + size)
  # Small integers after a ReLU: many ties, zeros above all, which is where gradient rules differ.
  x = np.maximum(rng.integers(-3, 4, (2, size, size, 5)), 0).astype(np.float32)
  out = layers.pool_output_size(size, window, stride)
  g = rng.normal(size=(2, out, out, 5)).astype(np.float32)
  _, vjp = jax.vjp(
      lambda a: layers.max_pool(a, window=window, stride=stride), jnp.asarray(x)
  )
  np.testing.assert_allclose(
      vjp(jnp.asarray(g))[0],
      max_pool_gradient_by_loops(x, g, window, stride),
      atol=1e-6,
  )


def test_max_pool_gradient_equals_xlas_on_distinct_values():
  x = jnp.asarray(
      np.random.default_rng(0).normal(size=(2, 13, 13, 8)), jnp.float32
  )
  g = jnp.asarray(
      np.random.default_rng(1).normal(size=(2, 6, 6, 8)), jnp.float32
  )
  xla_pool = lambda a: lax.reduce_window(
      a, -jnp.inf, lax.max, (1, 3, 3, 1), (1, 2, 2, 1), "VALID"
  )
  want = jax.vjp(xla_pool, x)[1](g)[0]
  got = jax.jit(
      lambda a, g: jax.vjp(lambda a: layers.max_pool(a, window=3, stride=2), a)[
          1
      ](g)[0]
  )(x, g)
  np.testing.assert_allclose(got, want, atol=1e-6)


@pytest.mark.parametrize("beta", [0.75, 0.5])
def test_lrn_hand_written_gradient_equals_autodiff_of_the_formula(beta):
  # The same formula in plain jnp, differentiated by JAX: an independent derivation of the backward pass.
  def plain(x):
    squares = jnp.pad(jnp.square(x), [(0, 0)] * 3 + [(2, 2)])
    total = sum(squares[..., i : i + x.shape[-1]] for i in range(5))
    return x / (2.0 + 1e-3 * total) ** beta

  x = jnp.asarray(
      np.random.default_rng(1).normal(scale=20.0, size=(2, 3, 3, 9)),
      jnp.float32,
  )
  g = jnp.asarray(np.random.default_rng(2).normal(size=x.shape), jnp.float32)
  lrn = lambda x: layers.local_response_norm(
      x, size=5, k=2.0, alpha=1e-3, beta=beta
  )
  np.testing.assert_allclose(
      np.asarray(lrn(x)), np.asarray(plain(x)), rtol=1e-5
  )
  got = jax.vjp(lrn, x)[1](g)[0]
  want = jax.vjp(plain, x)[1](g)[0]
  np.testing.assert_allclose(
      np.asarray(got),
      np.asarray(want),
      rtol=1e-4,
      atol=1e-5 * np.abs(want).max(),
  )


def test_lrn_keeps_only_its_input_for_the_backward_pass(capsys):
  # Memory traffic, not numbers: the backward pass recomputes s and s^-beta from the input, so what a
  # training step stores per LRN layer is that input in the compute dtype (here bfloat16), not three
  # float32 arrays of its size.
  loss = lambda x: layers.local_response_norm(
      x, size=5, k=2.0, alpha=1e-4, beta=0.75
  ).sum()
  print_saved_residuals(loss, jnp.ones((2, 5, 5, 8), jnp.bfloat16))
  assert capsys.readouterr().out.splitlines() == [
      "bf16[2,5,5,8] from the argument x"
  ]


def test_shared_input_conv_equals_each_towers_own_convolution():
  # Two towers' kernels in one op against each tower's lax convolution, written here directly.
  rng = np.random.default_rng(3)
  x = jnp.asarray(rng.normal(size=(2, 19, 19, 3)), jnp.float32)
  kernels = jnp.asarray(rng.normal(size=(2, 5, 5, 3, 4)), jnp.float32)
  biases = jnp.asarray(rng.normal(size=(2, 4)), jnp.float32)
  got = layers.shared_input_conv(x, kernels, biases, stride=2, padding=(2, 1))
  for t in range(2):
    want = (
        lax.conv_general_dilated(
            x,
            kernels[t],
            (2, 2),
            ((2, 1), (2, 1)),
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )
        + biases[t]
    )
    np.testing.assert_allclose(got[t], want, rtol=1e-5, atol=1e-5)
