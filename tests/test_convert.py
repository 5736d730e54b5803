"""Imported weights give the source framework's logits: checked against numpy forward passes written
from each framework's documented semantics (torch: NCHW/OIHW, flatten (C,H,W); Caffe: HWIO, groups in
order, LRN with alpha/n and k=1 across the layer), with random weights."""

import numpy as np
import pytest

from alexnet_jax import sharding
from alexnet_jax.weights import convert
from alexnet_jax.errors import ConfigError


def conv_nchw(x, w, b, stride, pad, groups=1):
  """Cross-correlation as torch and Caffe define it; x [N, C, H, W], w [O, C/groups, kh, kw]."""
  x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
  kh, kw = w.shape[2:]
  windows = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(2, 3))[
      :, :, ::stride, ::stride
  ]
  cin, cout = w.shape[1], w.shape[0] // groups
  out = [
      np.einsum(
          "nchwij,ocij->nohw",
          windows[:, g * cin : (g + 1) * cin],
          w[g * cout : (g + 1) * cout],
          optimize=True,
      )
      for g in range(groups)
  ]
  return np.concatenate(out, axis=1) + b[None, :, None, None]


def max_pool_nchw(x, size=3, stride=2):
  return np.lib.stride_tricks.sliding_window_view(x, (size, size), axis=(2, 3))[
      :, :, ::stride, ::stride
  ].max(axis=(-1, -2))


def caffe_lrn_nchw(x, n=5, alpha=1e-4, beta=0.75, k=1.0):
  """Caffe's LRN across channels: x / (k + alpha/n * sum of squares over n channels) ** beta."""
  squares = np.pad(x**2, ((0, 0), (n // 2, n // 2), (0, 0), (0, 0)))
  window = sum(squares[:, i : i + x.shape[1]] for i in range(n))
  return x / (k + alpha / n * window) ** beta


relu = lambda x: np.maximum(x, 0)


def random_weights(rng, shapes):
  """He-scaled random weights (fan-in from all but the output axis) and small random biases."""
  out = {}
  for name, (shape, fan_in) in shapes.items():
    out[name] = (
        rng.normal(0, np.sqrt(2 / fan_in), shape).astype(np.float32),
        rng.normal(0, 0.1, shape[0] if "weight" in name else shape[-1]).astype(
            np.float32
        ),
    )
  return out


def torchvision_reference(sd, images_nhwc):
  x = images_nhwc.transpose(0, 3, 1, 2).astype(np.float64)
  g = lambda k: (
      sd[k + ".weight"].astype(np.float64),
      sd[k + ".bias"].astype(np.float64),
  )
  x = max_pool_nchw(relu(conv_nchw(x, *g("features.0"), 4, 2)))
  x = max_pool_nchw(relu(conv_nchw(x, *g("features.3"), 1, 2)))
  x = relu(conv_nchw(x, *g("features.6"), 1, 1))
  x = relu(conv_nchw(x, *g("features.8"), 1, 1))
  # 6x6: adaptive avg pool is the identity
  x = max_pool_nchw(relu(conv_nchw(x, *g("features.10"), 1, 1)))
  x = x.reshape(len(x), -1)  # torch.flatten of NCHW: (C, H, W) order
  for key in ("classifier.1", "classifier.4"):
    w, b = g(key)
    x = relu(x @ w.T + b)
  w, b = g("classifier.6")
  return x @ w.T + b


def test_torchvision_weights_give_torchvision_logits():
  rng = np.random.default_rng(0)
  shapes = {
      "features.0": (64, 3, 11, 11),
      "features.3": (192, 64, 5, 5),
      "features.6": (384, 192, 3, 3),
      "features.8": (256, 384, 3, 3),
      "features.10": (256, 256, 3, 3),
      "classifier.1": (4096, 9216),
      "classifier.4": (4096, 4096),
      "classifier.6": (1000, 4096),
  }
  sd = {}
  for key, shape in shapes.items():
    sd[key + ".weight"] = rng.normal(
        0, np.sqrt(2 / np.prod(shape[1:])), shape
    ).astype(np.float32)
    sd[key + ".bias"] = rng.normal(0, 0.1, shape[0]).astype(np.float32)
  images = rng.normal(0, 1, (2, 224, 224, 3)).astype(np.float32)
  model = convert.from_torchvision(sd)
  model.eval()
  got, want = np.asarray(model(images)), torchvision_reference(sd, images)
  assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()


def caffe_reference(layers, images_rgb):
  """bvlc_alexnet in Caffe's semantics: BGR input, conv1 -> relu -> norm -> pool, groups of 2 in conv2/4/5."""
  # BGR, NCHW
  x = images_rgb[..., ::-1].transpose(0, 3, 1, 2).astype(np.float64)
  conv = lambda x, name, stride, pad, groups: conv_nchw(
      x,
      layers[name][0].astype(np.float64).transpose(3, 2, 0, 1),
      layers[name][1].astype(np.float64),
      stride,
      pad,
      groups,
  )
  x = max_pool_nchw(caffe_lrn_nchw(relu(conv(x, "conv1", 4, 0, 1))))
  x = max_pool_nchw(caffe_lrn_nchw(relu(conv(x, "conv2", 1, 2, 2))))
  x = relu(conv(x, "conv3", 1, 1, 1))
  x = relu(conv(x, "conv4", 1, 1, 2))
  x = max_pool_nchw(relu(conv(x, "conv5", 1, 1, 2)))
  x = x.transpose(0, 2, 3, 1).reshape(len(x), -1)  # fc6 rows in (h, w, c) order
  for name in ("fc6", "fc7"):
    x = relu(x @ layers[name][0] + layers[name][1])
  return x @ layers["fc8"][0] + layers["fc8"][1]


@pytest.fixture(scope="module")
def caffe_npy(tmp_path_factory):
  rng = np.random.default_rng(1)
  shapes = {
      "conv1": (11, 11, 3, 96),
      "conv2": (5, 5, 48, 256),
      "conv3": (3, 3, 256, 384),
      "conv4": (3, 3, 192, 384),
      "conv5": (3, 3, 192, 256),
      "fc6": (9216, 4096),
      "fc7": (4096, 4096),
      "fc8": (4096, 1000),
  }
  layers = {}
  for name, shape in shapes.items():
    # Large first-layer weights so that LRN (k=1) actually normalises.
    scale = (
        40 * np.sqrt(2 / np.prod(shape[:-1]))
        if name == "conv1"
        else np.sqrt(2 / np.prod(shape[:-1]))
    )
    layers[name] = [
        rng.normal(0, scale, shape).astype(np.float32),
        rng.normal(0, 0.1, shape[-1]).astype(np.float32),
    ]
  path = tmp_path_factory.mktemp("caffe") / "bvlc_alexnet.npy"
  np.save(path, layers, allow_pickle=True)
  return str(path), layers


@pytest.mark.parametrize("model_devices", [1, 2])
def test_caffe_weights_give_caffe_logits_on_one_or_two_devices(
    caffe_npy, model_devices
):
  path, layers = caffe_npy
  images = (
      np.random.default_rng(2)
      .normal(0, 30, (2, 227, 227, 3))
      .astype(np.float32)
  )
  model = convert.from_caffe_npy(
      path, mesh=sharding.make_mesh(data=1, model=model_devices)
  )
  model.eval()
  assert (
      sum(x.size for x in __import__("jax").tree.leaves(model.params()))
      == 60_965_224
  )
  got, want = np.asarray(model(images)), caffe_reference(layers, images)
  assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()


def test_wrong_files_are_refused(tmp_path):
  with pytest.raises(ConfigError, match="missing"):
    convert.from_torchvision({"features.0.weight": np.zeros((64, 3, 11, 11))})
  with pytest.raises(ConfigError, match="cannot read"):
    convert.from_caffe_npy(str(tmp_path / "nothing.npy"))


def _text_file(path):
  path.write_text("not weights\n")
  return str(path)


@pytest.mark.parametrize(
    "name, expected",
    [
        (
            "bad.npy",
            r"bad.npy is not a Caffe bvlc_alexnet .npy weights file \(UnpicklingError",
        ),
        (
            "bad.pth",
            r"bad.pth is not a torchvision AlexNet .pth weights file \(",
        ),
    ],
)
def test_a_damaged_weights_file_is_refused_in_one_line_naming_it(
    tmp_path, name, expected
):
  from alexnet_jax.weights import pretrained

  if name.endswith(".pth"):
    pytest.importorskip("torch")
  with pytest.raises(ConfigError, match=expected) as refused:
    # what init_from, predict and pretrained read with
    pretrained.read_weights(_text_file(tmp_path / name))
  assert "\n" not in str(refused.value)


def test_weights_of_the_wrong_rank_are_refused_naming_the_layer(tmp_path):
  path = tmp_path / "flat.npy"
  np.save(path, {"conv1": [np.zeros((3, 4)), np.zeros(4)]}, allow_pickle=True)
  with pytest.raises(
      ConfigError,
      match=r"flat.npy: conv1 weights have shape \(3, 4\), expected 4-D",
  ):
    convert.caffe_params(str(path))
  torch_layout = {
      f"{key}.{part}": np.zeros(3)
      for key in convert.TORCHVISION_KEYS.values()
      for part in ("weight", "bias")
  }
  with pytest.raises(
      ConfigError, match=r"conv1 weights have shape \(3,\), expected 4-D"
  ):
    convert.torchvision_params(torch_layout)


def test_pretrained_cli_reports_a_damaged_file_in_one_line(tmp_path):
  from conftest import run_cli

  bad = _text_file(tmp_path / "bad.npy")
  done = run_cli(
      "alexnet_jax.pretrained",
      f"--weights={bad}",
      f"--workdir={tmp_path / 'run'}",
  )
  assert done.returncode == 1
  assert done.stderr.strip().splitlines() == [
      f"alexnet_jax: {bad} is not a Caffe bvlc_alexnet .npy weights file "
      f"(UnpicklingError: Failed to interpret file {bad!r} as a pickle)"
  ]


# ----------------------------------------------------------------------------- imported weights in use

CAFFE_MEAN_RGB = np.array([122.68, 116.67, 104.01])  # configs/caffe.py


def _softmax(logits):
  z = np.exp(logits - logits.max(-1, keepdims=True))
  return z / z.sum(-1, keepdims=True)


def test_predict_with_caffe_weights_matches_caffe_reference(
    caffe_npy, tmp_path, capsys
):
  from PIL import Image

  from alexnet_jax import predict
  from alexnet_jax.data import classes
  from alexnet_jax.weights import inference
  from conftest import load_config

  path, layers = caffe_npy
  rng = np.random.default_rng(3)
  # smooth-ish
  photo = Image.fromarray(
      rng.integers(0, 256, (200, 300, 3), dtype=np.uint8)
  ).resize((600, 400))
  photo.save(tmp_path / "photo.png")
  # Caffe's preprocessing written out: short side to 256 (PIL bilinear), centre 227x227, minus the mean.
  resized = np.asarray(
      photo.resize((384, 256), Image.Resampling.BILINEAR, reducing_gap=2.0),
      np.float64,
  )
  top, left = (256 - 227) // 2, (384 - 227) // 2
  x = resized[top : top + 227, left : left + 227] - CAFFE_MEAN_RGB
  want = _softmax(caffe_reference(layers, x[None]))[0]

  predictor = inference.load(load_config("caffe"), path)
  results, failed = predict.predict(
      predictor,
      [str(tmp_path / "photo.png"), str(tmp_path / "missing.jpg")],
      5,
      8,
  )
  assert failed == [str(tmp_path / "missing.jpg")]
  assert "cannot read" in capsys.readouterr().err
  top5 = np.argsort(-want)[:5]
  names = [name for _, name in classes.imagenet()]
  got = results[str(tmp_path / "photo.png")]
  assert [name for name, _ in got] == [names[i] for i in top5]
  np.testing.assert_allclose(
      [p for _, p in got], want[top5], rtol=1e-3, atol=1e-6
  )


def test_imported_caffe_checkpoint_evaluates_like_the_reference(
    caffe_npy, tmp_path
):
  """``pretrained`` writes a checkpoint that ``--mode=eval`` reads; its top-1 error over a folder of images
  equals the one counted from Caffe's reference logits."""
  from PIL import Image

  from alexnet_jax.training import imported, train
  from alexnet_jax.workdir import checkpointing
  from conftest import load_config

  path, layers = caffe_npy
  workdir = str(tmp_path / "run")
  assert imported.save_imported(path, workdir) == "caffe"
  saved, _, meta = checkpointing.read_params(workdir)
  assert meta["source"] == "caffe"
  np.testing.assert_array_equal(
      saved["conv2"]["kernel"], convert.caffe_params(path)["conv2"]["kernel"]
  )

  # 1,000 class folders (the class count comes from the training folder), 4 images to train-stat, 4 to test.
  rng = np.random.default_rng(4)
  # dataset.stored_size_for(227): the images are stored at that size, so no resizing happens
  stored = 259
  pictures = rng.integers(0, 256, (8, stored, stored, 3), dtype=np.uint8)
  for c in range(1000):
    (tmp_path / "data" / "train" / f"c{c:04d}").mkdir(parents=True)
  crops = (
      pictures[4:, 16 : 16 + 227, 16 : 16 + 227].astype(np.float64)
      - CAFFE_MEAN_RGB
  )
  predicted = caffe_reference(layers, crops).argmax(-1)
  # 2 right, 2 wrong
  labels = [
      predicted[0],
      predicted[1],
      (predicted[2] + 1) % 1000,
      (predicted[3] + 7) % 1000,
  ]
  for i, picture in enumerate(pictures):
    split, label = ("train", i) if i < 4 else ("validation", labels[i - 4])
    folder = tmp_path / "data" / split / f"c{label:04d}"
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(picture).save(folder / f"{i}.png")

  config = load_config("caffe")
  config.data.update(
      source="folder",
      data_dir=str(tmp_path / "data"),
      eval_views=1,
      num_workers=0,
  )
  config.batch_size, config.mesh.model = 4, 2
  result = train.evaluate_checkpoint(config, workdir)
  assert result["eval_images"] == 4
  assert result["eval_top1_error"] == pytest.approx(0.5)
