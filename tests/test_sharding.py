"""Every placement of the towers gives the same numbers; with model=2 each device holds one tower; the
compiled programs move data between devices only where the paper's GPUs did."""

import dataclasses
import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from alexnet_jax import config_files, model as model_lib, sharding
from alexnet_jax.data import preprocess, stats as stats_lib
from alexnet_jax.training import metrics, optim, steps
from alexnet_jax.training.state import initial_state
from alexnet_jax.model import AlexNet, AlexNetSpec
from conftest import TINY_MODEL as TINY_CHANGES, load_config

# a spec needs every key: the paper's, narrowed
TINY_MODEL = {**load_config("paper").model, **TINY_CHANGES}

# (data, model) on 1, 2 and 4 devices
MESHES = [(1, 1), (2, 1), (1, 2), (4, 1), (2, 2)]


def loss_and_grads(spec, mesh, params, images, labels, key):
  def loss(p):
    return metrics.cross_entropy(
        model_lib.apply(spec, mesh, p, images, key), labels
    ).mean()

  return jax.jit(jax.value_and_grad(loss))(params)


@functools.lru_cache
def reference_for(num_classes: int):
  # 7 classes on two towers: 4 fc8 units each, the last one padding.
  spec = AlexNetSpec.from_config({**TINY_MODEL, "num_classes": num_classes})
  model = AlexNet(
      spec, rngs=nnx.Rngs(7), mesh=sharding.make_mesh(1, 1, jax.devices()[:1])
  )
  # weights big enough that every layer matters
  params = jax.tree.map(lambda a: a * 20, model.params())
  model.load_params(params)
  rng = np.random.default_rng(0)
  images = rng.normal(scale=40, size=(8, 64, 64, 3)).astype(np.float32)
  labels = rng.integers(0, spec.num_classes, size=8).astype(np.int32)
  model.eval()
  logits = np.asarray(model(images))
  loss, grads = loss_and_grads(
      spec,
      model.mesh,
      model.params(),
      jnp.asarray(images),
      jnp.asarray(labels),
      jax.random.key(3),
  )
  return (
      spec,
      params,
      images,
      labels,
      logits,
      float(loss),
      jax.tree.map(np.asarray, grads),
  )


def _close(a, b):
  a, b = np.asarray(a), np.asarray(b)
  scale = max(np.abs(b).max(), 1e-30)
  assert np.abs(a - b).max() <= 1e-5 * scale, np.abs(a - b).max() / scale


# The odd class count on the placements that split or gather fc8's towers (data parallelism alone does not).
@pytest.mark.parametrize(
    "classes, data, model",
    [(10, *mesh) for mesh in MESHES] + [(7, 1, 1), (7, 1, 2), (7, 2, 2)],
    ids=lambda v: str(v),
)
def test_every_placement_gives_the_same_logits_and_gradients(
    classes, data, model
):
  spec, params, images, labels, logits, loss, grads = reference_for(classes)
  mesh = sharding.make_mesh(data=data, model=model)
  with jax.set_mesh(mesh):
    placed = AlexNet(spec, rngs=nnx.Rngs(0))
  placed.load_params(jax.device_put(params, sharding.tower_sharding(mesh)))
  placed.eval()
  assert logits.shape == (8, spec.num_classes)
  _close(placed(images), logits)

  batch = jax.device_put(
      (jnp.asarray(images), jnp.asarray(labels)), sharding.batch_sharding(mesh)
  )
  got_loss, got_grads = loss_and_grads(
      spec, mesh, placed.params(), *batch, jax.random.key(3)
  )
  # dropout masks do not depend on the placement
  assert float(got_loss) == pytest.approx(loss, rel=1e-5)
  jax.tree.map(_close, got_grads, grads)
  for leaf in jax.tree.leaves(got_grads):
    # Gradients stay where their tower lives.
    assert leaf.sharding.is_equivalent_to(
        sharding.tower_sharding(mesh), leaf.ndim
    )
  # No loss reaches fc8's padding units (7 classes: tower 2's last unit), under any placement.
  padding = ~spec.fc8_real_units()
  assert padding.sum() == (spec.num_classes == 7)
  kernel, bias = (np.asarray(got_grads["fc8"][k]) for k in ("kernel", "bias"))
  assert not np.any(
      kernel[np.broadcast_to(padding, kernel.shape)]
  ) and not np.any(bias[padding[:, 0]])


def test_shared_input_convs_in_one_op_give_the_same_logits_and_gradients():
  # Two towers on each of two data devices, conv1 and conv3 each as one convolution of both towers'
  # kernels, against the reference's one convolution per tower on one device.
  spec, params, images, labels, logits, loss, grads = reference_for(10)
  one_op = dataclasses.replace(spec, shared_input_convs="one_op")
  mesh = sharding.make_mesh(data=2, model=1)
  with jax.set_mesh(mesh):
    placed = AlexNet(one_op, rngs=nnx.Rngs(0))
  placed.load_params(jax.device_put(params, sharding.tower_sharding(mesh)))
  placed.eval()
  _close(placed(images), logits)
  batch = jax.device_put(
      (jnp.asarray(images), jnp.asarray(labels)), sharding.batch_sharding(mesh)
  )
  got_loss, got_grads = loss_and_grads(
      one_op, mesh, placed.params(), *batch, jax.random.key(3)
  )
  assert float(got_loss) == pytest.approx(loss, rel=1e-5)
  jax.tree.map(_close, got_grads, grads)


@pytest.mark.parametrize("data", [1, 2])
def test_model_axis_of_two_puts_one_tower_on_each_device(data):
  mesh = sharding.make_mesh(data=data, model=2)
  model = AlexNet(TINY_MODEL, rngs=nnx.Rngs(0), mesh=mesh)
  total = sum(x.size for x in jax.tree.leaves(model.params()))
  for name, layer in model.params().items():
    for array in layer.values():
      for shard in array.addressable_shards:
        # the device's place on `model`
        tower = int(np.argwhere(mesh.devices == shard.device)[0][1])
        assert shard.data.shape == (1, *array.shape[1:]), name
        np.testing.assert_array_equal(shard.data, array[tower : tower + 1])
  held = {}
  for array in jax.tree.leaves(model.params()):
    for shard in array.addressable_shards:
      held[shard.device] = held.get(shard.device, 0) + shard.data.size
  # every device holds exactly half of the parameters
  assert set(held.values()) == {total // 2}


def test_one_tower_cannot_be_split_over_two_devices():
  with pytest.raises(ValueError, match="cannot be split"):
    AlexNet(
        {**TINY_MODEL, "towers": 1},
        rngs=nnx.Rngs(0),
        mesh=sharding.make_mesh(data=1, model=2),
    )


def test_uneven_batches_are_padded_and_cut_back():
  model = AlexNet(
      TINY_MODEL, rngs=nnx.Rngs(0), mesh=sharding.make_mesh(data=4, model=1)
  )
  model.eval()
  images = (
      np.random.default_rng(0).normal(size=(5, 64, 64, 3)).astype(np.float32)
  )
  logits = model(images)
  assert logits.shape == (5, 10)
  _close(logits[:3], model(images[:3]))


def test_make_mesh_refuses_impossible_shapes():
  with pytest.raises(ValueError, match="needs 8 devices"):
    sharding.make_mesh(data=4, model=2)
  with pytest.raises(ValueError, match="must divide"):
    sharding.make_mesh(data=-1, model=3)


COLLECTIVE = re.compile(
    r"= (.+?) (all-gather|all-reduce|reduce-scatter|all-to-all|collective-permute)(?:-start)?\("
)


def collectives(compiled) -> list[tuple[str, tuple[int, ...]]]:
  """(kind, shape) of every array every collective op of a compiled program moves."""
  found = []
  for line in compiled.as_text().splitlines():
    if match := COLLECTIVE.search(line):
      for dims in re.findall(r"[a-z]+\d*\[([\d,]*)\]", match.group(1)):
        found.append(
            (match.group(2), tuple(int(d) for d in dims.split(",") if d))
        )
  return found


@pytest.fixture(scope="module")
def paper_spec():
  return AlexNetSpec.from_config(config_files.load("paper").model)


def compiled_forward_and_gradient(spec, mesh, batch):
  model = AlexNet(spec, rngs=nnx.Rngs(0), mesh=mesh)
  images = jax.ShapeDtypeStruct(
      (batch, 224, 224, 3), jnp.float32, sharding=sharding.batch_sharding(mesh)
  )
  labels = jax.ShapeDtypeStruct(
      (batch,), jnp.int32, sharding=sharding.batch_sharding(mesh)
  )
  forward = model_lib.apply.lower(spec, mesh, model.params(), images).compile()

  def loss(params, images, labels):
    return metrics.cross_entropy(
        model_lib.apply(spec, mesh, params, images, jax.random.key(0)), labels
    ).mean()

  gradient = (
      jax.jit(jax.grad(loss)).lower(model.params(), images, labels).compile()
  )
  return collectives(forward), collectives(gradient)


def test_the_towers_exchange_maps_exactly_where_the_papers_gpus_did(paper_spec):
  # Figure 2: conv3 reads both towers' pooled conv2 maps (13x13x2x128), fc6 both towers' pooled conv5 maps
  # (6x6x2x128), fc7 and fc8 both halves of fc6/fc7 (2x2048), the softmax both halves of fc8 (2x500).
  # Nothing else crosses, in particular no weights or weight gradients: each GPU keeps its own half.
  batch = 3
  forward, gradient = compiled_forward_and_gradient(
      paper_spec, sharding.make_mesh(data=1, model=2), batch
  )
  exchanged = [
      (batch, 13, 13, 256),
      (batch, 6, 6, 256),
      (batch, 4096),
      (batch, 4096),
      (batch, 1000),
  ]
  assert sorted(forward) == sorted(("all-gather", shape) for shape in exchanged)
  # the same gathers, then their transposes:
  assert [c for c in gradient if c[0] == "all-gather"] == forward
  backward = {shape for kind, shape in gradient if kind != "all-gather"}
  flat = {(batch, int(np.prod(shape[1:]))) for shape in exchanged}
  assert backward and all(
      shape in set(exchanged) | flat for shape in backward
  ), backward


def test_data_parallel_devices_exchange_nothing_but_gradients(paper_spec):
  # With the towers on one device (model=1) a forward pass needs no communication at all; training
  # all-reduces the weight gradients (and the loss) over `data`, and gathers nothing.
  forward, gradient = compiled_forward_and_gradient(
      paper_spec, sharding.make_mesh(data=2, model=1), 4
  )
  assert forward == []
  assert {kind for kind, _ in gradient} == {"all-reduce"}
  parameters = 60_965_224  # the paper's net, counted by hand in test_model
  moved = sum(int(np.prod(shape)) for _, shape in gradient)
  # every weight gradient once, plus the loss
  assert parameters <= moved < parameters + 100, moved


def test_the_train_state_keeps_its_placement_from_step_to_step():
  # The momentum must start where the step leaves it (with its parameter's tower): a compiled step
  # refuses a state placed otherwise, and a jitted one would compile a second time.
  mesh = sharding.make_mesh(data=1, model=2)
  spec = AlexNetSpec.from_config(TINY_MODEL)
  tx = optim.paper_sgd(0.01, 0.9, 5e-4)
  state = initial_state(AlexNet(spec, rngs=nnx.Rngs(0), mesh=mesh), tx)
  stats = stats_lib.DatasetStats(
      np.zeros((73, 73, 3), np.float32),
      np.ones(3, np.float32),
      np.eye(3, dtype=np.float32),
      1,
  )
  consts = preprocess.constants(stats, mesh)
  n, rng = 4, np.random.default_rng(0)
  batch = sharding.global_batch(
      mesh,
      {
          "image": rng.integers(0, 256, (n, 64, 64, 3), dtype=np.uint8),
          "offset": np.zeros((n, 3), np.int32),
          "alpha": np.zeros((n, 3), np.float32),
          "label": np.arange(n, dtype=np.int32),
          "valid": np.ones(n, bool),
      },
      n,
  )
  step = (
      steps.make_train_step(spec, mesh, tx, 1.0)
      .lower(state, batch, jax.random.key(0), consts)
      .compile()
  )
  placed = [x.sharding for x in jax.tree.leaves(state)]
  for _ in range(2):
    state, _ = step(state, batch, jax.random.key(0), consts)
    assert all(
        x.sharding.is_equivalent_to(p, x.ndim)
        for x, p in zip(jax.tree.leaves(state), placed)
    )
