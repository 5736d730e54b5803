"""The ablation variants of the network: batch normalisation in LRN's place and tanh units (paper Figure 1)."""

import jax
import numpy as np
import pytest
from flax import nnx

from alexnet_jax import model as model_lib, sharding
from alexnet_jax.training import metrics
from alexnet_jax.errors import ConfigError
from alexnet_jax.model import AlexNet, AlexNetSpec
from conftest import TINY_MODEL as TINY_CHANGES, load_config

# a spec needs every key: the paper's, narrowed
TINY_MODEL = {**load_config("paper").model, **TINY_CHANGES}

BN_MODEL = {**TINY_MODEL, "lrn": False, "batch_norm": True}
EPS = model_lib.BATCH_NORM_EPSILON


def numpy_conv1(images, kernel, bias, padding):
  """conv1 written out in numpy: stride 4, kernels [T, kh, kw, 3, C], output channels tower by tower."""
  top, bottom = padding
  x = np.pad(
      images.astype(np.float64), [(0, 0), (top, bottom), (top, bottom), (0, 0)]
  )
  towers, kh, kw, cin, cout = kernel.shape
  # n,i,j,c,kh,kw
  windows = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(1, 2))[
      :, ::4, ::4
  ]
  out = [
      np.einsum("nijcab,abcd->nijd", windows, kernel[t].astype(np.float64))
      + bias[t]
      for t in range(towers)
  ]
  return np.concatenate(out, axis=-1)


def numpy_batch_norm(x, mean, var, scale, offset):
  return (x - mean) / np.sqrt(var + EPS) * scale + offset


@pytest.fixture(scope="module")
def bn_setup():
  spec = AlexNetSpec.from_config(BN_MODEL)
  model = AlexNet(
      spec, rngs=nnx.Rngs(1), mesh=sharding.make_mesh(1, 1, jax.devices()[:1])
  )
  rng = np.random.default_rng(0)
  params = jax.tree.map(np.asarray, model.params())
  # Scale and offset away from 1 and 0, so a wrong axis or a missing affine step shows.
  params["bn1"] = {
      "scale": rng.uniform(0.5, 2, (2, 4)).astype(np.float32),
      "offset": rng.normal(size=(2, 4)).astype(np.float32),
  }
  images = rng.normal(scale=50, size=(8, 64, 64, 3)).astype(np.float32)
  relu = np.maximum(
      numpy_conv1(
          images,
          params["conv1"]["kernel"],
          params["conv1"]["bias"],
          spec.conv1_padding,
      ),
      0,
  )
  return spec, params, images, relu


@pytest.mark.parametrize("data, model", [(1, 1), (2, 2), (4, 1)])
def test_training_batch_norm_uses_the_whole_batch_on_every_placement(
    bn_setup, data, model
):
  spec, params, images, relu = bn_setup
  mesh = sharding.make_mesh(data, model)
  placed = jax.device_put(params, sharding.tower_sharding(mesh))
  batch = jax.device_put(images, sharding.batch_sharding(mesh))
  _, acts = model_lib.apply(
      spec, mesh, placed, batch, jax.random.key(0), capture=True
  )
  # Statistics over the global batch and all positions, even where each device sees a quarter of it.
  mean, var = relu.mean(axis=(0, 1, 2)), relu.var(axis=(0, 1, 2))
  expected = numpy_batch_norm(
      relu,
      mean,
      var,
      params["bn1"]["scale"].reshape(-1),
      params["bn1"]["offset"].reshape(-1),
  )
  np.testing.assert_allclose(
      np.asarray(acts["conv1"]), expected, rtol=1e-4, atol=1e-4
  )

  stats = {
      name: {
          "mean": np.full(s, 0.5, np.float32),
          "var": np.full(s, 2.0, np.float32),
      }
      for name, s in spec.norm_shapes().items()
  }
  _, new = model_lib.train_apply(
      spec,
      mesh,
      placed,
      jax.device_put(stats, sharding.tower_sharding(mesh)),
      batch,
      jax.random.key(0),
  )
  m = model_lib.BATCH_NORM_MOMENTUM
  np.testing.assert_allclose(
      np.asarray(new["bn1"]["mean"]).reshape(-1),
      m * 0.5 + (1 - m) * mean,
      rtol=1e-4,
  )
  np.testing.assert_allclose(
      np.asarray(new["bn1"]["var"]).reshape(-1),
      m * 2.0 + (1 - m) * var,
      rtol=1e-4,
  )


def test_inference_batch_norm_uses_the_running_statistics(bn_setup):
  spec, params, images, relu = bn_setup
  model = AlexNet(spec, rngs=nnx.Rngs(0), mesh=sharding.make_mesh(2, 2))
  rng = np.random.default_rng(1)
  stats = {
      name: {
          "mean": rng.normal(size=s).astype(np.float32),
          "var": rng.uniform(1, 3, s).astype(np.float32),
      }
      for name, s in spec.norm_shapes().items()
  }
  model.load_params(params, stats)
  model.eval()
  got = np.asarray(model.activations(images)["conv1"])
  expected = numpy_batch_norm(
      relu,
      stats["bn1"]["mean"].reshape(-1),
      stats["bn1"]["var"].reshape(-1),
      params["bn1"]["scale"].reshape(-1),
      params["bn1"]["offset"].reshape(-1),
  )
  np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
  with pytest.raises(ConfigError, match="batch_stats"):
    model_lib.apply(spec, model.mesh, model.params(), images)


def test_tanh_units_everywhere():
  spec = AlexNetSpec.from_config(
      {**TINY_MODEL, "activation": "tanh", "lrn": False, "init": "he"}
  )
  model = AlexNet(spec, rngs=nnx.Rngs(2), mesh=sharding.make_mesh(1, 2))
  params = jax.tree.map(np.asarray, model.params())
  model.load_params(params)
  model.eval()
  images = (
      np.random.default_rng(0)
      .normal(scale=5, size=(4, 64, 64, 3))
      .astype(np.float32)
  )
  acts = model.activations(images)
  expected = np.tanh(
      numpy_conv1(
          images,
          params["conv1"]["kernel"],
          params["conv1"]["bias"],
          spec.conv1_padding,
      )
  )
  # neither saturated nor linear: the unit's shape shows
  assert 0.05 < np.mean(np.abs(expected) < 0.9) < 0.95
  np.testing.assert_allclose(np.asarray(acts["conv1"]), expected, atol=1e-5)
  assert np.asarray(acts["fc7"]).min() < 0  # ReLU would leave no negative unit


def test_batch_norm_parameter_count_and_config_checks():
  paper = load_config("paper").model
  # Scale and offset per map of conv1 (96) and conv2 (256), on top of the paper's 60,965,224.
  assert AlexNetSpec.from_config(
      {**paper, "lrn": False, "batch_norm": True}
  ).num_params() == 60_965_224 + 2 * (96 + 256)
  with pytest.raises(ConfigError, match="alternatives"):
    AlexNetSpec.from_config({**paper, "batch_norm": True})
  with pytest.raises(ConfigError, match="activation"):
    AlexNetSpec.from_config({**paper, "activation": "sigmoid"})


def test_batch_norm_gradients_do_not_depend_on_the_placement(bn_setup):
  spec, params, images, _ = bn_setup
  labels = np.arange(8, dtype=np.int32) % 10
  stats = {
      name: {"mean": np.zeros(s, np.float32), "var": np.ones(s, np.float32)}
      for name, s in spec.norm_shapes().items()
  }

  def grads_on(data, model):
    mesh = sharding.make_mesh(data, model)
    placed = jax.device_put((params, stats), sharding.tower_sharding(mesh))
    batch = jax.device_put((images / 50, labels), sharding.batch_sharding(mesh))

    def loss(p):
      logits, _ = model_lib.train_apply(
          spec, mesh, p, placed[1], batch[0], jax.random.key(0)
      )
      return metrics.cross_entropy(logits, batch[1]).mean()

    return jax.tree.map(np.asarray, jax.jit(jax.grad(loss))(placed[0]))

  # the batch statistics span both data shards
  one, split = grads_on(1, 1), grads_on(2, 2)
  # conv biases before a BN get ~0: compare globally
  scale = max(np.abs(a).max() for a in jax.tree.leaves(one))
  for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(split)):
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5 * scale)
  # the normalisation's own parameters learn
  assert np.abs(one["bn1"]["scale"]).max() > 0
