"""Every placement of the towers gives the same numbers; with model=2 each device holds one tower."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from alexnet_jax import metrics, model as model_lib, sharding
from alexnet_jax.model import AlexNet, AlexNetSpec
from conftest import TINY_MODEL

MESHES = [(1, 1), (2, 1), (1, 2), (4, 1), (2, 2)]  # (data, model) on 1, 2 and 4 devices


def loss_and_grads(spec, mesh, params, images, labels, key):
  def loss(p):
    return metrics.cross_entropy(model_lib.apply(spec, mesh, p, images, key), labels).mean()
  return jax.jit(jax.value_and_grad(loss))(params)


@pytest.fixture(scope="module")
def reference():
  spec = AlexNetSpec.from_config(TINY_MODEL)
  model = AlexNet(spec, rngs=nnx.Rngs(7), mesh=sharding.make_mesh(1, 1, jax.devices()[:1]))
  params = jax.tree.map(lambda a: a * 20, model.params())  # weights big enough that every layer matters
  model.load_params(params)
  rng = np.random.default_rng(0)
  images = rng.normal(scale=40, size=(8, 64, 64, 3)).astype(np.float32)
  labels = rng.integers(0, 10, size=8).astype(np.int32)
  model.eval()
  logits = np.asarray(model(images))
  loss, grads = loss_and_grads(spec, model.mesh, model.params(), jnp.asarray(images), jnp.asarray(labels),
                               jax.random.key(3))
  return spec, params, images, labels, logits, float(loss), jax.tree.map(np.asarray, grads)


def _close(a, b):
  a, b = np.asarray(a), np.asarray(b)
  scale = max(np.abs(b).max(), 1e-30)
  assert np.abs(a - b).max() <= 1e-5 * scale, np.abs(a - b).max() / scale


@pytest.mark.parametrize("data, model", MESHES)
def test_every_placement_gives_the_same_logits_and_gradients(reference, data, model):
  spec, params, images, labels, logits, loss, grads = reference
  mesh = sharding.make_mesh(data=data, model=model)
  with jax.set_mesh(mesh):
    placed = AlexNet(spec, rngs=nnx.Rngs(0))
  placed.load_params(jax.device_put(params, sharding.tower_sharding(mesh)))
  placed.eval()
  _close(placed(images), logits)

  batch = jax.device_put((jnp.asarray(images), jnp.asarray(labels)), sharding.batch_sharding(mesh))
  got_loss, got_grads = loss_and_grads(spec, mesh, placed.params(), *batch, jax.random.key(3))
  assert float(got_loss) == pytest.approx(loss, rel=1e-5)  # dropout masks do not depend on the placement
  jax.tree.map(_close, got_grads, grads)
  for leaf in jax.tree.leaves(got_grads):
    # Gradients stay where their tower lives.
    assert leaf.sharding.is_equivalent_to(sharding.tower_sharding(mesh), leaf.ndim)


@pytest.mark.parametrize("data", [1, 2])
def test_model_axis_of_two_puts_one_tower_on_each_device(data):
  mesh = sharding.make_mesh(data=data, model=2)
  model = AlexNet(TINY_MODEL, rngs=nnx.Rngs(0), mesh=mesh)
  total = sum(x.size for x in jax.tree.leaves(model.params()))
  for name, layer in model.params().items():
    for array in layer.values():
      for shard in array.addressable_shards:
        tower = int(np.argwhere(mesh.devices == shard.device)[0][1])  # the device's place on `model`
        assert shard.data.shape == (1, *array.shape[1:]), name
        np.testing.assert_array_equal(shard.data, array[tower:tower + 1])
  held = {}
  for array in jax.tree.leaves(model.params()):
    for shard in array.addressable_shards:
      held[shard.device] = held.get(shard.device, 0) + shard.data.size
  assert set(held.values()) == {total // 2}  # every device holds exactly half of the parameters


def test_one_tower_cannot_be_split_over_two_devices():
  with pytest.raises(ValueError, match="cannot be split"):
    AlexNet({**TINY_MODEL, "towers": 1}, rngs=nnx.Rngs(0), mesh=sharding.make_mesh(data=1, model=2))


def test_uneven_batches_are_padded_and_cut_back():
  model = AlexNet(TINY_MODEL, rngs=nnx.Rngs(0), mesh=sharding.make_mesh(data=4, model=1))
  model.eval()
  images = np.random.default_rng(0).normal(size=(5, 64, 64, 3)).astype(np.float32)
  logits = model(images)
  assert logits.shape == (5, 10)
  _close(logits[:3], model(images[:3]))


def test_make_mesh_refuses_impossible_shapes():
  with pytest.raises(ValueError, match="needs 8 devices"):
    sharding.make_mesh(data=4, model=2)
  with pytest.raises(ValueError, match="must divide"):
    sharding.make_mesh(data=-1, model=3)
