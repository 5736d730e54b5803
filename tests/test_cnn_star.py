"""Table 2's "1 CNN*": the sixth conv layer over pool5 (``model.extra_conv``), its size counted by hand, its
tower wiring checked against a convolution written out in numpy, and fine-tuning from a CNN* checkpoint.
"""

import os

import jax
import numpy as np
import pytest
from flax import nnx
from PIL import Image

from alexnet_jax import config_files, model as model_lib, sharding, summary
from alexnet_jax.errors import ConfigError, UserError
from alexnet_jax.model import AlexNet, AlexNetSpec
from alexnet_jax.training import experiment
from alexnet_jax.weights import pretrained
from alexnet_jax.workdir import checkpointing, run_record
from conftest import TINY_MODEL as TINY_CHANGES, load_config

PAPER = load_config("paper").model
# 96x96 input: pool5 and conv6 are 2x2, so conv6's padding and its kernels' positions matter. Both towers
# on one device, where a wiring mistake could mix them (split over two devices, a tower cannot even see
# the other's maps: tests/test_sharding.py checks that placement gives the same numbers). Every test here
# builds this network on this mesh, so its programs compile once.
SIX = {**TINY_CHANGES, "image_size": 96, "extra_conv": True}
MESH = dict(data=1, model=1)


def test_the_sixth_layer_counted_by_hand():
  five = AlexNetSpec.from_config(PAPER)
  six = AlexNetSpec.from_config({**PAPER, "extra_conv": True})
  # conv6 reads its own tower's 128 of pool5's 6x6x256 maps with 3x3 kernels, 128 per tower:
  # 3*3*128*128 = 147,456 weights and 128 biases per tower, 295,168 in all.
  assert six.param_shapes()["conv6"] == ((2, 3, 3, 128, 128), (2, 128))
  assert six.num_params() == 60_965_224 + 295_168 == 61_260_392
  # Padding 1 keeps 6x6: fc6 reads 6*6*256 = 9,216 values as in the paper, so the FC layers are unchanged.
  assert six.feature_map_sizes()["conv6"] == 6
  assert six.param_shapes()["fc6"] == ((2, 9216, 2048), (2, 2048))
  for name in ("conv1", "conv5", "fc6", "fc7", "fc8"):
    assert six.param_shapes()[name] == five.param_shapes()[name]
  # 36 positions x 256 kernels x 3*3*128 multiply-adds, 2 FLOPs each.
  assert six.forward_flops() - five.forward_flops() == 21_233_664
  assert six.activation_names()[6:9] == ("conv5", "pool5", "conv6")
  assert "conv6" not in five.activation_names()

  rows, total = summary.layer_rows({**PAPER, "extra_conv": True}, 2)
  row = next(r for r in rows if r["layer"] == "conv6")
  assert (row["shape"], row["params"], row["traffic"]) == (
      "6x6x256",
      295_168,
      "own tower only",
  )
  assert total == 61_260_392
  assert [r["layer"] for r in rows].index("conv6") == [
      r["layer"] for r in rows
  ].index("pool5") + 1

  assert "extra_conv" in config_files.known_keys()["model"]
  assert PAPER.extra_conv is False
  with pytest.raises(ConfigError, match="extra_conv must be True or False"):
    AlexNetSpec.from_config({**PAPER, "extra_conv": "yes"})
  pretrain, finetune = (
      load_config(n) for n in ("cnn_star_pretrain", "cnn_star_finetune")
  )
  assert pretrain.model.extra_conv and finetune.model.extra_conv
  assert (pretrain.model.num_classes, finetune.model.num_classes) == (
      21841,
      1000,
  )
  assert finetune.init_from and finetune.data.name == "imagenet2012"


def numpy_conv3x3(x, kernel, bias):
  """A 3x3 convolution, stride 1, padding 1, then ReLU, written out: x [N, H, W, C], kernel [3, 3, C, K]."""
  padded = np.pad(x.astype(np.float64), [(0, 0), (1, 1), (1, 1), (0, 0)])
  windows = np.lib.stride_tricks.sliding_window_view(
      padded, (3, 3), axis=(1, 2)
  )  # n, i, j, c, a, b
  out = np.einsum("nijcab,abcd->nijd", windows, kernel.astype(np.float64))
  return np.maximum(out + bias, 0)


@pytest.fixture(scope="module")
def six_on_two_devices():
  model = AlexNet(
      {**PAPER, **SIX}, rngs=nnx.Rngs(0), mesh=sharding.make_mesh(**MESH)
  )
  model.eval()
  rng = np.random.default_rng(0)
  images = rng.normal(scale=50, size=(4, 96, 96, 3)).astype(np.float32)
  # He-scaled kernels and varied biases (the paper's N(0, 0.01) leaves the maps near their biases).
  params = {
      name: {
          "kernel": rng.normal(
              scale=np.sqrt(2 / np.prod(p["kernel"].shape[1:-1])),
              size=p["kernel"].shape,
          ).astype(np.float32),
          "bias": rng.uniform(-0.5, 1, p["bias"].shape).astype(np.float32),
      }
      for name, p in model.params().items()
  }
  return model, params, images


def _with(model, params, layer, **arrays):
  changed = {n: dict(p) for n, p in params.items()}
  changed[layer].update(arrays)
  model.load_params(
      jax.device_put(changed, sharding.tower_sharding(model.mesh))
  )


def test_conv6_convolves_each_towers_own_pool5_maps(six_on_two_devices):
  model, params, images = six_on_two_devices
  _with(model, params, "conv6")
  acts = {
      k: np.asarray(v, np.float64) for k, v in model.activations(images).items()
  }
  pool5, conv6 = acts["pool5"], acts["conv6"]
  assert pool5.shape == conv6.shape == (4, 2, 2, 16)
  k, b = params["conv6"]["kernel"], params["conv6"]["bias"]
  # Tower t's 8 output maps from tower t's 8 input maps only (channels tower by tower).
  for t in range(2):
    own = slice(8 * t, 8 * t + 8)
    want = numpy_conv3x3(pool5[..., own], k[t], b[t])
    np.testing.assert_allclose(conv6[..., own], want, rtol=1e-4, atol=1e-4)
  assert (
      np.mean(conv6 > 0) > 0.2
  )  # not all switched off: the check above has values to compare

  # Zero tower 2's conv5 (kernel and bias): its pool5 maps become 0, so its conv6 maps are ReLU(bias) at
  # every position, and tower 1's conv6 maps, which never read them, stay exactly as they were.
  zero = params["conv5"]["kernel"].copy(), params["conv5"]["bias"].copy()
  zero[0][1], zero[1][1] = 0, 0
  _with(model, params, "conv5", kernel=zero[0], bias=zero[1])
  cut = {k: np.asarray(v) for k, v in model.activations(images).items()}
  assert not np.any(cut["pool5"][..., 8:])
  np.testing.assert_array_equal(cut["conv6"][..., :8], acts["conv6"][..., :8])
  np.testing.assert_allclose(
      cut["conv6"][..., 8:],
      np.broadcast_to(np.maximum(b[1], 0), (4, 2, 2, 8)),
      atol=1e-6,
  )
  assert np.abs(acts["conv6"][..., 8:] - np.maximum(b[1], 0)).max() > 1e-2


def test_fc6_reads_conv6_not_pool5(six_on_two_devices):
  model, params, images = six_on_two_devices
  _with(model, params, "conv6")
  logits = np.asarray(model(images))
  # With conv6's kernels at zero its output is ReLU(bias) for every image, and so are the logits: nothing
  # of the image reaches fc6 but through conv6.
  k = params["conv6"]["kernel"]
  _with(model, params, "conv6", kernel=np.zeros_like(k))
  blind = np.asarray(model(images))
  np.testing.assert_allclose(
      blind, np.broadcast_to(blind[0], blind.shape), atol=1e-6
  )
  assert np.abs(logits - logits[0]).max() > 1e-3
  # and other conv6 kernels give other logits
  _with(model, params, "conv6", kernel=1.5 * k)
  assert np.abs(np.asarray(model(images)) - logits).max() > 1e-3


def test_the_towers_split_over_devices_and_data_parallel_give_the_same_logits(
    six_on_two_devices,
):
  # Each device holds one tower (conv6's too) and half of the batch: the numbers of one device.
  model, params, images = six_on_two_devices
  _with(model, params, "conv6")
  mesh = sharding.make_mesh(data=2, model=2)
  placed = jax.device_put(params, sharding.tower_sharding(mesh))
  shards = placed["conv6"]["kernel"].addressable_shards
  assert {s.data.shape for s in shards} == {(1, 3, 3, 8, 8)}
  batch = jax.device_put(images, sharding.batch_sharding(mesh))
  want = np.asarray(model(images))
  np.testing.assert_allclose(
      np.asarray(model_lib.apply(model.spec, mesh, placed, batch)),
      want,
      rtol=1e-5,
      atol=1e-5 * np.abs(want).max(),
  )


def test_fine_tuning_a_cnn_star_run_carries_conv6_and_starts_fc8_afresh(
    tmp_path, capsys
):
  # A pretraining run's checkpoint (12 classes standing in for 21,841): what init_from reads of it, the
  # parameters, saved as a run saves them.
  pre = load_config("cnn_star_pretrain")
  pre.model.update(SIX, num_classes=12)
  mesh = sharding.make_mesh(**MESH)
  source_model = AlexNet(pre.model, rngs=nnx.Rngs(5), mesh=mesh)
  ckpt = checkpointing.Checkpointer(str(tmp_path / "pre" / "checkpoints"))
  meta = {"step": 0, "plateau": None, "num_classes": 12}
  ckpt.save(0, {"step": 0, "params": source_model.params()}, None, meta)
  ckpt.close()
  source, _, _ = checkpointing.read_params(str(tmp_path / "pre"))

  # Fine-tuned on a tree of 10 classes standing in for ILSVRC-2012's 1000 (110x110: 96 crops).
  rng = np.random.default_rng(0)
  for split, count in (("train", 2), ("val", 1)):
    for c in range(10):
      os.makedirs(tmp_path / "data" / split / f"c{c}")
      for i in range(count):
        picture = rng.integers(0, 256, (110, 110, 3), dtype=np.uint8)
        Image.fromarray(picture).save(
            tmp_path / "data" / split / f"c{c}" / f"{i}.png"
        )
  tuned = load_config("cnn_star_finetune")
  tuned.model.update(SIX)
  tuned.data.update(
      source="folder", data_dir=str(tmp_path / "data"), num_workers=0
  )
  tuned.update(batch_size=4, init_from=str(tmp_path / "pre"))
  tuned.mesh.update(MESH)
  exp = experiment.build(tuned, None)
  assert (
      "loaded conv1, conv2, conv3, conv4, conv5, conv6, fc6, fc7; new fc8"
      in capsys.readouterr().out
  )
  start = jax.tree.map(np.asarray, exp.state["params"])
  for name in ("conv1", "conv5", "conv6", "fc6", "fc7"):
    for part in ("kernel", "bias"):
      np.testing.assert_array_equal(start[name][part], source[name][part])
  # fc8: 10 classes, 5 per tower (not the source's 6), drawn as a fresh network of this config draws it
  fresh = AlexNet(exp.spec, rngs=nnx.Rngs(params=tuned.seed), mesh=mesh)
  assert start["fc8"]["kernel"].shape == (2, 32, 5)
  np.testing.assert_array_equal(
      start["fc8"]["kernel"], np.asarray(fresh.params()["fc8"]["kernel"])
  )

  # Either side without conv6 is another network: refused, not silently dropped or left fresh.
  five = {n: p for n, p in source.items() if n != "conv6"}
  with pytest.raises(UserError, match="conv6 that this config lacks"):
    pretrained.merge_for_finetuning(five, source)
  with pytest.raises(UserError, match="layer conv6 is missing there"):
    pretrained.merge_for_finetuning(source, five)


def test_a_run_recorded_before_extra_conv_existed_is_the_five_layer_net(
    tmp_path,
):
  old = load_config("paper")
  del old.model["extra_conv"]  # what run.json held before the key was added
  run_record.record_config(str(tmp_path), old, {})
  assert run_record.recorded_config(str(tmp_path)).model.extra_conv is False
  run_record.check_config(str(tmp_path), load_config("paper"), "evaluate it")
  with pytest.raises(
      ConfigError, match="model.extra_conv=false there, true here"
  ):
    run_record.check_config(
        str(tmp_path), load_config("cnn_star_finetune"), "evaluate it"
    )
