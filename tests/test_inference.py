"""Using trained weights: class names, prediction, the paper's two figures, and fine-tuning."""

import os

import jax
import numpy as np
import pytest
from PIL import Image

from alexnet_jax import model as model_lib, predict
from alexnet_jax.data import classes, sources
from alexnet_jax.training import experiment, train
from alexnet_jax.workdir import checkpointing
from alexnet_jax.weights import inference, pretrained
from alexnet_jax import visualize
from alexnet_jax.errors import ConfigError, UserError


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
  """A tiny demo network trained for a few steps: its work directory and config."""
  from conftest import TINY_MODEL, load_config

  config = load_config("demo")
  config.model.update(TINY_MODEL)
  config.batch_size, config.num_train_steps, config.log_every_steps = 16, 3, 3
  config.eval_every_steps = config.checkpoint_every_steps = 3
  workdir = str(tmp_path_factory.mktemp("tiny"))
  train.train_and_evaluate(config, workdir)
  return workdir, config


def test_imagenet_names_are_bundled_in_class_order():
  table = classes.imagenet()
  assert len(table) == 1000 and len({name for _, name in table}) == 1000
  # Spot checks against the ILSVRC-2012 index every framework uses.
  assert [table[i][1] for i in (0, 1, 207, 999)] == [
      "tench",
      "goldfish",
      "golden retriever",
      "toilet tissue",
  ]
  # TFDS ships the WordNet ids in label order: an independent list
  import tensorflow_datasets as tfds

  labels = os.path.join(
      os.path.dirname(tfds.__file__), "datasets", "imagenet2012", "labels.txt"
  )
  assert [wnid for wnid, _ in table] == [
      line.strip() for line in open(labels) if line.strip()
  ]
  assert classes.readable(["n01440764", "cat"]) == ["tench", "cat"]


def test_predict_uses_the_training_preprocessing(tiny_run, tmp_path):
  workdir, config = tiny_run
  splits = sources.load(config.data, 64)
  # The project's preprocessing written out: centre 64x64 of the stored 73x73, minus the training set's
  # mean image (computed here in float64), times 1/255.
  mean = np.mean(
      [
          splits.train[i]["image"].astype(np.float64)
          for i in range(len(splits.train))
      ],
      axis=0,
  )
  stored = [splits.eval[i]["image"] for i in range(3)]
  paths = []
  for i, image in enumerate(stored):
    paths.append(str(tmp_path / f"digit{i}.png"))
    # lossless and already 73x73: read back unchanged
    Image.fromarray(image).save(paths[-1])
  x = (np.stack(stored)[:, 4:68, 4:68] - mean[4:68, 4:68]) / 255
  params, _, _ = checkpointing.read_params(workdir)
  spec = model_lib.AlexNetSpec.from_config(config.model)
  mesh = model_lib.sharding.make_mesh(1, 1, jax.devices()[:1])
  logits = np.asarray(
      model_lib.apply(spec, mesh, params, x.astype(np.float32)), np.float64
  )
  want = np.exp(logits - logits.max(1, keepdims=True))
  want /= want.sum(1, keepdims=True)

  predictor = inference.load(config, workdir)
  results, failed = predict.predict(
      predictor, paths + [str(tmp_path / "nothing.png")], top=3, batch_size=2
  )
  assert failed == [str(tmp_path / "nothing.png")]
  for path, p in zip(paths, want):
    best = np.argsort(-p)[:3]
    # the digits' classes are "0".."9"
    assert [name for name, _ in results[path]] == [str(i) for i in best]
    np.testing.assert_allclose(
        [q for _, q in results[path]], p[best], rtol=1e-4, atol=1e-6
    )


def test_colour_share_of_grey_single_channel_and_opponent_kernels():
  # Hand-computed: a grey kernel (R = G = B) has no colour; red alone, w = (x, 0, 0), leaves
  # (2x/3, -x/3, -x/3) after the grey mean: (4 + 1 + 1) / 9 = 2/3 of its energy; red against green,
  # (x, -x, 0), has mean 0 and is all colour.
  rng = np.random.default_rng(0)
  x = rng.normal(size=(11, 11))
  grey = np.stack([x, x, x], axis=-1)
  red = np.stack([x, 0 * x, 0 * x], axis=-1)
  opponent = np.stack([x, -x, 0 * x], axis=-1)
  kernel = np.stack(
      [np.stack([grey, grey, red], -1), np.stack([red, opponent, opponent], -1)]
  )  # [towers=2, 11, 11, 3, 3 kernels]
  np.testing.assert_allclose(
      visualize.colour_fractions(kernel),
      [[0, 0, 2 / 3], [2 / 3, 1, 1]],
      atol=1e-12,
  )
  lines = visualize.describe_colour(visualize.colour_fractions(kernel))
  assert lines == [
      "tower 1: median colour share 0.00 (random kernels: 0.67); 2 of 3 kernels mostly grey (share < 1/3)",
      "tower 2: median colour share 1.00 (random kernels: 0.67); 0 of 3 kernels mostly grey (share < 1/3)",
  ]


def test_prediction_panels_draw_the_top_five_as_bars_with_the_correct_one_red():
  # Figure 4 (left). Probabilities 0.5, 0.25, 0.125, ...: bars of 60, 30, 15, 8 and 4 pixels
  # (x BAR_WIDTH = 120, rounded); the label is the second most probable class, so its bar is red.
  p = np.array([0.0, 0.25, 0.5, 0.0625, 0.125, 0.03125, 0.03125])
  picture = np.zeros((20, 20, 3), np.uint8)
  names = [f"c{i}" for i in range(7)]
  image = np.asarray(
      visualize.prediction_panels([picture], p[None], names, [1])
  )
  red = np.all(image == visualize.CORRECT, axis=-1)
  blue = np.all(image == visualize.OTHER, axis=-1)
  bar_rows = [
      20 + 2 * visualize.GAP + rank * (visualize.BAR_HEIGHT + visualize.GAP)
      for rank in range(5)
  ]
  lengths = [int(red[y].sum() + blue[y].sum()) for y in bar_rows]
  assert lengths == [60, 30, 15, 8, 4]
  assert [int(red[y].sum()) for y in bar_rows] == [0, 30, 0, 0, 0]
  assert red.sum() == 30 * visualize.BAR_HEIGHT
  # Eight panels: the paper's two rows of four.
  eight = visualize.prediction_panels(
      [picture] * 8, np.tile(p, (8, 1)), names, [1] * 8
  )
  one_height = image.shape[0]
  assert eight.size == (4 * image.shape[1], 2 * one_height)


def test_filter_grid_puts_each_tower_in_its_own_block():
  kernel = (
      np.random.default_rng(0)
      .normal(size=(2, 11, 11, 3, 20))
      .astype(np.float32)
  )
  image = np.asarray(visualize.filter_grid(kernel, columns=16, scale=2))
  gap, tower_gap, cell = (
      visualize.GAP,
      visualize.TOWER_GAP,
      11 * 2 + visualize.GAP,
  )
  block = 2 * cell  # 20 kernels in rows of 16: two rows per tower
  assert image.shape == (2 * block + tower_gap + gap, 16 * cell + gap, 3)
  k = kernel[1, :, :, :, 17]  # tower 2, second row, second column
  top, left = block + tower_gap + cell + gap, cell + gap
  expected = ((k - k.min()) / (k.max() - k.min()) * 255).astype(np.uint8)
  np.testing.assert_array_equal(
      image[top : top + 22 : 2, left : left + 22 : 2], expected
  )


def test_nearest_neighbours_by_hand_and_a_training_image_finds_itself(
    tiny_run, tmp_path
):
  order, distance = visualize.nearest(
      np.array([[0.0, 0.0], [3.0, 4.0]]),
      np.array([[3.0, 4.0], [1.0, 0.0], [0.0, 0.0]]),
      2,
  )
  np.testing.assert_array_equal(order, [[2, 1], [0, 1]])
  np.testing.assert_allclose(distance, [[0, 1], [0, np.sqrt(20)]], atol=1e-6)

  workdir, config = tiny_run
  splits = sources.load(config.data, 64)
  Image.fromarray(splits.train[5]["image"]).save(tmp_path / "train5.png")
  predictor = inference.load(config, workdir)
  figure, order = visualize.neighbours_figure(
      predictor,
      config,
      [str(tmp_path / "train5.png")],
      k=3,
      queries=0,
      max_train=64,
  )
  assert order[0][0] == 5
  assert figure.size == (
      4 * (64 + visualize.GAP) + visualize.TOWER_GAP + visualize.GAP,
      64 + 2 * visualize.GAP,
  )


def _class_folder(root, num_classes=4):
  """``num_classes`` classes, a few 73x73 images each."""
  rng = np.random.default_rng(0)
  for split, count in (("train", 8), ("val", 2)):
    for c in range(num_classes):
      os.makedirs(root / split / f"class{c}")
      for i in range(count):
        image = np.full((73, 73, 3), 50 * c, np.uint8) + rng.integers(
            0, 40, (73, 73, 3), dtype=np.uint8
        )
        Image.fromarray(image).save(root / split / f"class{c}" / f"{i}.png")


def test_fine_tuning_loads_all_but_a_new_head_and_freezes_the_convolutions(
    tiny_run, tmp_path, capsys
):
  source_dir, config = tiny_run
  source, _, _ = checkpointing.read_params(source_dir)
  _class_folder(tmp_path / "data")
  tuned = config.copy_and_resolve_references()
  tuned.data.update(source="folder", data_dir=str(tmp_path / "data"))
  tuned.model.num_classes = 4
  tuned.init_from = source_dir
  tuned.optimizer.freeze_convs = True
  tuned.batch_size, tuned.num_train_steps = 8, 3

  exp = experiment.build(tuned, None)  # the state a run starts from
  start = jax.tree.map(np.asarray, exp.state["params"])
  assert (
      "loaded conv1, conv2, conv3, conv4, conv5, fc6, fc7; new fc8"
      in capsys.readouterr().out
  )
  for name in ("conv1", "conv5", "fc6", "fc7"):
    np.testing.assert_array_equal(start[name]["kernel"], source[name]["kernel"])
  assert start["fc8"]["kernel"].shape == (2, 32, 2) and source["fc8"][
      "kernel"
  ].shape == (2, 32, 5)

  workdir = str(tmp_path / "tuned")
  train.train_and_evaluate(tuned, workdir)
  after, _, _ = checkpointing.read_params(workdir)
  # frozen: not even weight decay moves them
  for name in ("conv1", "conv2", "conv3", "conv4", "conv5"):
    np.testing.assert_array_equal(after[name]["kernel"], source[name]["kernel"])
    np.testing.assert_array_equal(after[name]["bias"], source[name]["bias"])
  for name in ("fc6", "fc7", "fc8"):
    assert np.abs(after[name]["kernel"] - start[name]["kernel"]).max() > 0


def test_fine_tuning_refuses_another_architecture(tiny_run):
  source_dir, _ = tiny_run
  source, _, _ = checkpointing.read_params(source_dir)
  fresh = {name: dict(layer) for name, layer in source.items()}
  fresh["conv2"] = {
      "kernel": np.zeros((2, 5, 5, 4, 12)),
      "bias": np.zeros((2, 12)),
  }
  with pytest.raises(UserError, match="conv2"):
    pretrained.merge_for_finetuning(fresh, source)
  with pytest.raises(UserError, match="does not exist"):
    pretrained.read_weights("/nonexistent/alexnet.pth")


def test_three_classes_on_two_towers_fine_tune_train_and_predict_three_classes(
    tiny_run, tmp_path, capsys
):
  # fc8's towers hold 2 units each; the last is padding. Trained with one tower per device, data-parallel.
  source_dir, config = tiny_run
  _class_folder(tmp_path / "data", 3)
  tuned = config.copy_and_resolve_references()
  tuned.data.update(source="folder", data_dir=str(tmp_path / "data"))
  tuned.model.num_classes = 3
  tuned.init_from = source_dir
  tuned.mesh.model = 2
  tuned.batch_size, tuned.num_train_steps = 8, 3
  workdir = str(tmp_path / "tuned")
  result = train.train_and_evaluate(tuned, workdir)
  assert "; new fc8" in capsys.readouterr().out
  # Counted over the 6 eval images of 3 classes: a whole number of mistakes among them.
  wrong = result["eval_top1_error"] * 6
  assert result["eval_images"] == 6 and abs(wrong - round(wrong)) < 1e-6, result
  after, _, meta = checkpointing.read_params(workdir)
  assert meta["num_classes"] == 3 and after["fc8"]["kernel"].shape == (2, 32, 2)
  # Three steps of gradients, momentum and weight decay left the padding unit at zero; the real units moved.
  assert (
      not np.any(after["fc8"]["kernel"][1, :, 1])
      and after["fc8"]["bias"][1, 1] == 0
  )
  assert np.all(after["fc8"]["kernel"][:, :, 0] != 0) and np.all(
      after["fc8"]["kernel"][0, :, 1] != 0
  )

  # 3 and 4 classes share fc8's shape on two towers: the checkpoint's record tells them apart.
  assert pretrained.read_weights(workdir)[3] == 3
  # another task: a fresh head
  assert pretrained.merge_for_finetuning(after, after, 4, 3)[2] == ["fc8"]
  assert pretrained.merge_for_finetuning(after, after, 3, 3)[2] == []
  four = tuned.copy_and_resolve_references()
  four.model.num_classes = 4
  # the run's record says 3
  with pytest.raises(
      ConfigError, match=r"\(model.num_classes=3 there, 4 here\)"
  ):
    inference.load(four, workdir)
  predictor = inference.load(None, workdir)
  assert predictor.model.spec.num_classes == 3 and predictor.class_names == [
      "class0",
      "class1",
      "class2",
  ]
  stored = np.stack(
      [
          predictor.read_image(
              str(tmp_path / "data" / "val" / f"class{c}" / "0.png")
          )
          for c in (0, 2)
      ]
  )
  probabilities = predictor.probabilities(stored)
  assert probabilities.shape == (2, 3)
  np.testing.assert_allclose(probabilities.sum(1), 1, rtol=1e-5)
  _class_folder(tmp_path / "four", 4)
  four.data.data_dir = str(tmp_path / "four")
  with pytest.raises(
      ConfigError, match=r"\(model.num_classes=3 there, 4 here\)"
  ):
    train.evaluate_checkpoint(four, workdir)
  # Without its record and stats cache (written by this version: the cache refuses other data first), the
  # checkpoint's own class count still refuses it.
  os.remove(os.path.join(workdir, "run.json"))
  os.remove(os.path.join(workdir, "data_stats.npz"))
  with pytest.raises(
      ConfigError,
      match="trained for 3 classes, this config has model.num_classes=4",
  ):
    train.evaluate_checkpoint(four, workdir)
