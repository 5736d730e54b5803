"""The paper's network: its size, shapes, initialisation and tower wiring."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax import lax

from alexnet_jax import layers, model as model_lib
from alexnet_jax.errors import ConfigError
from alexnet_jax.model import AlexNet, AlexNetSpec
from conftest import TINY_MODEL as TINY_CHANGES, load_config

# a spec needs every key: the paper's, narrowed
TINY_MODEL = {**load_config("paper").model, **TINY_CHANGES}


@pytest.fixture(scope="module")
def paper_model():
  return AlexNet(load_config("paper").model, rngs=nnx.Rngs(0))


def test_paper_parameter_count(paper_model):
  leaves = jax.tree.leaves(paper_model.params())
  # the paper's total (DESIGN.md; §3.5's layer sizes)
  assert sum(x.size for x in leaves) == 60_965_224
  assert (
      AlexNetSpec.from_config(load_config("paper").model).num_params()
      == 60_965_224
  )


def test_one_tower_parameter_count_by_hand():
  # towers=1: conv2, conv4 and conv5 see all maps of the layer below, so they are twice as large.
  spec = AlexNetSpec.from_config({**load_config("paper").model, "towers": 1})
  by_hand = (
      (11 * 11 * 3 * 96 + 96)
      + (5 * 5 * 96 * 256 + 256)
      + (3 * 3 * 256 * 384 + 384)
      + (3 * 3 * 384 * 384 + 384)
      + (3 * 3 * 384 * 256 + 256)
      + (6 * 6 * 256 * 4096 + 4096)
      + (4096 * 4096 + 4096)
      + (4096 * 1000 + 1000)
  )
  assert spec.num_params() == by_hand == 62_378_344


def test_paper_activation_sizes(paper_model):
  paper_model.eval()
  acts = paper_model.activations(np.zeros((1, 224, 224, 3), np.float32))
  shapes = {name: tuple(a.shape[1:]) for name, a in acts.items()}
  # The paper's sizes (§3.5 and Figure 2; DESIGN.md): 55x55x96 -> 27x27x96 -> 27x27x256 -> 13x13x256 ...
  assert shapes == {
      "conv1": (55, 55, 96),
      "pool1": (27, 27, 96),
      "conv2": (27, 27, 256),
      "pool2": (13, 13, 256),
      "conv3": (13, 13, 384),
      "conv4": (13, 13, 384),
      "conv5": (13, 13, 256),
      "pool5": (6, 6, 256),
      "fc6": (4096,),
      "fc7": (4096,),
      "fc8": (1000,),
  }


def test_paper_initialisation(paper_model):
  params = paper_model.params()
  # §5
  paper_bias = {
      "conv1": 0,
      "conv2": 1,
      "conv3": 0,
      "conv4": 1,
      "conv5": 1,
      "fc6": 1,
      "fc7": 1,
      "fc8": 0,
  }
  for name, value in paper_bias.items():
    kernel, bias = np.asarray(params[name]["kernel"]), np.asarray(
        params[name]["bias"]
    )
    assert np.all(bias == value), name
    # N(0, 0.01): with >= 34,848 draws, the sample std is within 2% and the mean within 5 standard errors.
    assert kernel.std() == pytest.approx(0.01, rel=0.02), name
    assert abs(kernel.mean()) < 5 * 0.01 / np.sqrt(kernel.size), name
  # Every split layer has its leading tower axis, fc8 included.
  assert {name: p["kernel"].shape[0] for name, p in params.items()} == {
      name: 2 for name in paper_bias
  }


def _conv(x, kernel, stride, padding):
  return lax.conv_general_dilated(
      x,
      kernel,
      (stride, stride),
      (padding, padding),
      dimension_numbers=("NHWC", "HWIO", "NHWC"),
  )


def lrn_by_autodiff(a, size=5, k=2.0, alpha=1e-4, beta=0.75):
  """Paper §3.3 with plain jnp ops, so its gradient is JAX's own (not the hand-written one)."""
  squares = jnp.pad(jnp.square(a), [(0, 0)] * 3 + [(size // 2, size // 2)])
  return (
      a
      / (
          k
          + alpha * sum(squares[..., i : i + a.shape[-1]] for i in range(size))
      )
      ** beta
  )


def two_gpu_reference(params, x, spec, lrn=None, pool=None):
  """The paper's Figure 2 written out GPU by GPU, as lists of per-GPU tensors (no tower axis tricks)."""
  p = params
  lrn = lrn or (
      lambda a: layers.local_response_norm(
          a, size=5, k=2.0, alpha=1e-4, beta=0.75
      )
  )
  pool = pool or (lambda a: layers.max_pool(a, window=3, stride=2))
  gpus = range(2)
  h = [
      pool(
          lrn(
              jax.nn.relu(
                  _conv(x, p["conv1"]["kernel"][g], 4, (2, 1))
                  + p["conv1"]["bias"][g]
              )
          )
      )
      for g in gpus
  ]
  h = [
      pool(
          lrn(
              jax.nn.relu(
                  _conv(h[g], p["conv2"]["kernel"][g], 1, (2, 2))
                  + p["conv2"]["bias"][g]
              )
          )
      )
      for g in gpus
  ]
  both = jnp.concatenate(h, axis=-1)  # conv3 reads both GPUs
  h = [
      jax.nn.relu(
          _conv(both, p["conv3"]["kernel"][g], 1, (1, 1))
          + p["conv3"]["bias"][g]
      )
      for g in gpus
  ]
  h = [
      jax.nn.relu(
          _conv(h[g], p["conv4"]["kernel"][g], 1, (1, 1))
          + p["conv4"]["bias"][g]
      )
      for g in gpus
  ]
  h = [
      pool(
          jax.nn.relu(
              _conv(h[g], p["conv5"]["kernel"][g], 1, (1, 1))
              + p["conv5"]["bias"][g]
          )
      )
      for g in gpus
  ]
  flat = jnp.concatenate(h, axis=-1).reshape(x.shape[0], -1)
  for name in ("fc6", "fc7"):
    flat = jnp.concatenate(
        [
            jax.nn.relu(flat @ p[name]["kernel"][g] + p[name]["bias"][g])
            for g in gpus
        ],
        axis=-1,
    )
  # fc8: the classes are the first num_classes units of GPU 1's then GPU 2's (any units after them are padding).
  classes = jnp.concatenate(
      [flat @ p["fc8"]["kernel"][g] + p["fc8"]["bias"][g] for g in gpus],
      axis=-1,
  )
  return classes[:, : spec.num_classes]


def test_forward_equals_the_two_gpu_wiring_written_out():
  spec = AlexNetSpec.from_config(TINY_MODEL)
  model = AlexNet(spec, rngs=nnx.Rngs(3))
  # larger weights: LRN and ReLUs matter
  model.load_params(jax.tree.map(lambda a: a * 30, model.params()))
  model.eval()
  x = (
      np.random.default_rng(0)
      .normal(scale=50, size=(3, 64, 64, 3))
      .astype(np.float32)
  )
  np.testing.assert_allclose(
      model(x), two_gpu_reference(model.params(), x, spec), rtol=1e-4, atol=1e-4
  )


def test_an_odd_class_count_pads_the_last_tower_and_its_logits_never_count():
  # 3 classes on two towers: 2 fc8 units each, the second tower's last one padding (zeros from the start).
  spec = AlexNetSpec.from_config({**TINY_MODEL, "num_classes": 3})
  assert (
      spec.param_shapes()["fc8"] == ((2, 32, 2), (2, 2))
      and spec.fc8_padding == 1
  )
  model = AlexNet(spec, rngs=nnx.Rngs(3))
  fc8 = model.params()["fc8"]
  assert (
      np.all(np.asarray(fc8["kernel"][1, :, 1]) == 0)
      and float(fc8["bias"][1, 1]) == 0
  )
  assert np.all(np.asarray(fc8["kernel"][:, :, 0]) != 0) and np.all(
      np.asarray(fc8["kernel"][0, :, 1]) != 0
  )
  # Even a padding unit that is not zero must not show: give it the largest logit there is.
  params = jax.tree.map(lambda a: a * 30, model.params())
  params["fc8"]["kernel"] = params["fc8"]["kernel"].at[1, :, 1].set(5.0)
  params["fc8"]["bias"] = params["fc8"]["bias"].at[1, 1].set(1e6)
  model.load_params(params)
  model.eval()
  x = (
      np.random.default_rng(0)
      .normal(scale=50, size=(3, 64, 64, 3))
      .astype(np.float32)
  )
  logits = model(x)
  assert logits.shape == (3, 3) and model.activations(x)["fc8"].shape == (3, 3)
  np.testing.assert_allclose(
      logits, two_gpu_reference(model.params(), x, spec), rtol=1e-4, atol=1e-4
  )
  np.testing.assert_allclose(
      model.activations(x)["fc8"], logits, rtol=1e-5, atol=1e-5
  )


def test_parameter_counts_leave_out_the_padding_and_even_splits_are_unchanged():
  paper = load_config("paper").model
  # e.g. 37 pet breeds: 19 + 18 classes
  pets = AlexNetSpec.from_config({**paper, "num_classes": 37})
  assert pets.param_shapes()["fc8"] == ((2, 4096, 19), (2, 19))
  assert pets.fc8_padding_params() == 4096 + 1
  # the real parameters
  assert pets.num_params() == 60_965_224 - (4096 * 1000 + 1000) + (
      4096 * 37 + 37
  )
  held = sum(
      int(np.prod(k)) + int(np.prod(b)) for k, b in pets.param_shapes().values()
  )
  assert held == pets.num_params() + pets.fc8_padding_params()
  even = AlexNetSpec.from_config({**paper, "num_classes": 38})
  assert (
      even.param_shapes()["fc8"] == ((2, 4096, 19), (2, 19))
      and even.fc8_padding == 0
  )
  assert AlexNetSpec.from_config(
      {**paper, "num_classes": 3, "towers": 1}
  ).param_shapes()["fc8"] == ((1, 4096, 3), (1, 3))


@pytest.mark.parametrize("num_classes", [10, 3])
def test_gradients_equal_autodiff_of_the_two_gpu_wiring_with_plain_ops(
    num_classes,
):
  # Reference: JAX's own gradients of the wiring written out, with XLA's max pooling and LRN from jnp ops
  # (the model has hand-written gradients for both and keeps each tower's maps apart).
  spec = AlexNetSpec.from_config({**TINY_MODEL, "num_classes": num_classes})
  model = AlexNet(spec, rngs=nnx.Rngs(4))
  params = jax.tree.map(lambda a: a * 30, model.params())
  x = jnp.asarray(
      np.random.default_rng(1).normal(scale=50, size=(3, 64, 64, 3)),
      jnp.float32,
  )
  weights = jnp.asarray(
      np.random.default_rng(2).normal(size=(3, spec.num_classes)), jnp.float32
  )
  xla_pool = lambda a: lax.reduce_window(
      a, -jnp.inf, lax.max, (1, 3, 3, 1), (1, 2, 2, 1), "VALID"
  )
  got = jax.grad(
      lambda p: jnp.sum(model_lib.apply(spec, model.mesh, p, x) * weights)
  )(params)
  want = jax.grad(
      lambda p: jnp.sum(
          two_gpu_reference(p, x, spec, lrn_by_autodiff, xla_pool) * weights
      )
  )(params)
  for name in got:
    for kind in ("kernel", "bias"):
      scale = float(jnp.abs(want[name][kind]).max())
      assert scale > 0, f"{name} {kind}: no gradient reaches it in this test"
      np.testing.assert_allclose(
          got[name][kind],
          want[name][kind],
          rtol=1e-3,
          atol=1e-4 * scale,
          err_msg=f"{name} {kind}",
      )
  # 3 classes: the padding unit (tower 2's last) gets no gradient at all
  if spec.fc8_padding:
    assert (
        not np.any(np.asarray(got["fc8"]["kernel"][1, :, 1]))
        and float(got["fc8"]["bias"][1, 1]) == 0
    )


def test_training_mode_needs_a_dropout_key_and_drops_units():
  model = AlexNet(TINY_MODEL, rngs=nnx.Rngs(0))
  x = np.random.default_rng(0).normal(size=(4, 64, 64, 3)).astype(np.float32)
  with pytest.raises(ValueError, match="dropout_key"):
    model(x)
  a, b = model(x, dropout_key=jax.random.key(1)), model(
      x, dropout_key=jax.random.key(2)
  )
  assert not np.allclose(a, b)
  model.eval()
  np.testing.assert_array_equal(model(x), model(x))


def test_fc6_input_follows_the_image_size():
  spec = AlexNetSpec.from_config({**TINY_MODEL, "image_size": 96})
  # 96 -> conv1 23 -> pool 11 -> conv2 11 -> pool 5 -> conv3-5 5 -> pool 2: fc6 reads 2*2*16 values.
  assert spec.param_shapes()["fc6"][0] == (2, 2 * 2 * 16, 16)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"towers": 3}, "not divisible into model.towers=3"),
        ({"num_classes": 0}, "at least 1"),
        ({"image_size": 32}, "too small"),
        ({"lrn_scope": "everywhere"}, "lrn_scope"),
        ({"colour": True}, "unknown model config keys"),
    ],
)
def test_impossible_model_configs_are_refused(change, message):
  with pytest.raises(ConfigError, match=message):
    AlexNetSpec.from_config({**TINY_MODEL, **change})


def test_a_spec_takes_every_value_from_the_config():
  with pytest.raises(ConfigError, match="lacks"):
    AlexNetSpec.from_config(TINY_CHANGES)


def test_auto_dtype_computes_in_bfloat16_on_accelerators_and_float32_on_cpus(
    monkeypatch,
):
  for backend, dtype in (
      ("cpu", "float32"),
      ("gpu", "bfloat16"),
      ("tpu", "bfloat16"),
  ):
    monkeypatch.setattr(jax, "default_backend", lambda: backend)
    assert (
        AlexNetSpec.from_config({**TINY_MODEL, "dtype": "auto"}).dtype == dtype
    )


def test_bfloat16_compute_keeps_float32_parameters_and_logits():
  spec = AlexNetSpec.from_config(TINY_MODEL)
  full = AlexNet(spec, rngs=nnx.Rngs(0))
  half = AlexNet(
      AlexNetSpec.from_config({**TINY_MODEL, "dtype": "bfloat16"}),
      rngs=nnx.Rngs(0),
  )
  assert {x.dtype for x in jax.tree.leaves(half.params())} == {
      jnp.dtype("float32")
  }
  full.eval(), half.eval()
  x = np.random.default_rng(0).normal(size=(4, 64, 64, 3)).astype(np.float32)
  a, b = full(x), half(x)
  assert b.dtype == jnp.float32
  # bfloat16 keeps 8 bits of mantissa: agreement to a few percent of the logits' scale.
  assert (
      np.abs(np.asarray(a) - np.asarray(b)).max()
      < 0.05 * np.abs(np.asarray(a)).max()
  )


def test_forward_flops_match_torchvision_documented_count():
  # torchvision documents AlexNet at 0.71 GFLOPS, counting multiply-adds, at 224x224.
  spec = AlexNetSpec.from_config(load_config("torchvision").model)
  assert spec.forward_flops() / 2 / 1e9 == pytest.approx(0.71, abs=0.005)
  # torchvision's documented parameter count for AlexNet
  assert spec.num_params() == 61_100_840


def test_dropout_drops_at_its_rate_scales_the_kept_units_and_is_off_at_evaluation():
  # §4.2: each hidden unit of fc6/fc7 is set to zero with probability 0.5 in training; at test time all are
  # used. Inverted dropout: the kept units are scaled by 1/(1-p) in training instead of x(1-p) at test.
  spec = AlexNetSpec.from_config({**TINY_MODEL, "dropout_rate": 0.5})
  model = AlexNet(spec, rngs=nnx.Rngs(0))
  images = (
      np.random.default_rng(0)
      .normal(scale=40, size=(64, 64, 64, 3))
      .astype(np.float32)
  )
  params = model.params()
  _, evaluated = model_lib.apply(spec, model.mesh, params, images, capture=True)
  _, trained = model_lib.apply(
      spec,
      model.mesh,
      params,
      images,
      dropout_key=jax.random.key(5),
      capture=True,
  )
  _, again = model_lib.apply(spec, model.mesh, params, images, capture=True)
  # fc6 sees no dropout before it
  plain, dropped = np.asarray(evaluated["fc6"]), np.asarray(trained["fc6"])
  # evaluation is deterministic: nothing dropped
  np.testing.assert_array_equal(plain, np.asarray(again["fc6"]))
  active = plain > 0
  kept = dropped[active] != 0
  # 64 x 32 units, about all active (fc6's bias is 1): the drop fraction's standard error is ~0.011; 0.05 is 4.5 of it.
  assert active.sum() > 1500 and abs((1 - kept.mean()) - 0.5) < 0.05
  np.testing.assert_allclose(
      dropped[active][kept], plain[active][kept] / (1 - 0.5), rtol=1e-5
  )
  assert not np.any(dropped[~active])  # a unit that is off stays off
