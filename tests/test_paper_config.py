"""configs/paper.py against the paper: every constant the paper states, typed here from the paper with its
section (Krizhevsky, Sutskever & Hinton, NIPS 2012), not read from the code."""

import pytest

from alexnet_jax.data import dataset
from alexnet_jax.model import AlexNetSpec
from conftest import load_config

# (config key, the paper's value, where the paper says it)
PAPER = [
    ("batch_size", 128, "§5: a batch size of 128 examples"),
    ("num_epochs", 90, "§5: roughly 90 cycles through the training set"),
    ("optimizer.momentum", 0.9, "§5: momentum of 0.9"),
    ("optimizer.weight_decay", 0.0005, "§5: weight decay of 0.0005"),
    (
        "optimizer.learning_rate",
        0.01,
        "§5: the learning rate was initialized at 0.01",
    ),
    (
        "optimizer.schedule",
        "plateau",
        "§5: divide by 10 when the validation error rate stopped improving",
    ),
    ("optimizer.factor", 0.1, "§5: divide the learning rate by 10"),
    (
        "optimizer.max_reductions",
        3,
        "§5: reduced three times prior to termination",
    ),
    (
        "model.init",
        "paper",
        "§5: weights from a zero-mean Gaussian, biases 1 in conv2, 4, 5 and the FC layers",
    ),
    ("model.init_std", 0.01, "§5: standard deviation 0.01"),
    ("model.dropout_rate", 0.5, "§4.2: set to zero with probability 0.5"),
    (
        "model.lrn",
        True,
        "§3.3: local response normalization after conv1 and conv2",
    ),
    ("model.lrn_size", 5, "§3.3: n = 5"),
    ("model.lrn_k", 2.0, "§3.3: k = 2"),
    ("model.lrn_alpha", 1e-4, "§3.3: alpha = 10^-4"),
    ("model.lrn_beta", 0.75, "§3.3: beta = 0.75"),
    (
        "model.lrn_scope",
        "tower",
        "§3.2/§3.3: each GPU normalizes its own kernel maps",
    ),
    ("model.overlap_pool", True, "§3.4: overlapping pooling, s = 2, z = 3"),
    ("model.activation", "relu", "§3.1: ReLU nonlinearity"),
    (
        "model.towers",
        2,
        "§3.2: the net is spread across two GPUs, half of the kernels on each",
    ),
    (
        "model.conv_features",
        (96, 256, 384, 384, 256),
        "§3.5: 96, 256, 384, 384 and 256 kernels",
    ),
    (
        "model.fc_features",
        (4096, 4096),
        "§3.5: the fully-connected layers have 4096 neurons each",
    ),
    ("model.num_classes", 1000, "§3.5: a 1000-way softmax"),
    ("model.image_size", 224, "§3.5: the 224x224x3 input image"),
    ("data.name", "imagenet2012", "§2/§6: ILSVRC-2012"),
    ("data.random_flip", True, "§4.1: horizontal reflections"),
    (
        "data.pca_lighting",
        True,
        "§4.1: altering the intensities of the RGB channels (PCA)",
    ),
    (
        "data.lighting_std",
        0.1,
        "§4.1: alpha from a Gaussian with mean zero and standard deviation 0.1",
    ),
    (
        "data.eval_views",
        10,
        "§4.1: five patches and their reflections, predictions averaged",
    ),
    ("data.pixel_scale", 1.0, "§2: the raw RGB values of the pixels (centred)"),
    (
        "data.mean_rgb",
        (),
        "§2: subtracting the mean activity over the training set from each pixel",
    ),
]


@pytest.mark.parametrize(
    "key, value, where", PAPER, ids=[k for k, _, _ in PAPER]
)
def test_the_paper_config_states_the_papers_value(key, value, where):
  config = load_config("paper")
  got = config
  for part in key.split("."):
    got = got[part]
  got = tuple(got) if isinstance(got, (list, tuple)) else got
  assert got == value, f"{key}={got!r}, the paper: {value!r} ({where})"


def test_stored_size_pooling_and_activation_sizes_follow_the_paper():
  config = load_config("paper")
  # §2: rescaled so that the shorter side is 256, then the central 256x256 patch.
  assert (
      dataset.stored_size_for(config.model.image_size, config.data.stored_size)
      == 256
  )
  spec = AlexNetSpec.from_config(config.model)
  assert (spec.pool_window, spec.pool_stride) == (3, 2)  # §3.4: z = 3, s = 2
  # §3.5 / Figure 2: 55x55 after conv1 (27 after its pooling), 27 -> 13, 13, 13, 13 -> 6.
  assert spec.feature_map_sizes() == {
      "conv1": 27,
      "conv2": 13,
      "conv3": 13,
      "conv4": 13,
      "conv5": 6,
  }


def test_paper_py_is_the_schema_every_config_key_comes_from():
  import dataclasses

  from alexnet_jax import config_files
  from alexnet_jax.errors import ConfigError

  known = config_files.known_keys()
  assert set(known) == {"", "mesh", "model", "optimizer", "data"}
  # The model section names every field AlexNetSpec has (the spec does not fill in what a config leaves out).
  assert known["model"] == {f.name for f in dataclasses.fields(AlexNetSpec)}
  # the bundled configs set no key paper.py lacks
  for name in ("paper", "demo", "torchvision", "caffe"):
    config_files._check_keys(load_config(name))
  config = load_config("demo")
  config.model.lrn_sise = 5
  with pytest.raises(
      ConfigError,
      match=r"^unknown config key\(s\) model.lrn_sise; known: model.activation, ",
  ):
    config_files._check_keys(config)
