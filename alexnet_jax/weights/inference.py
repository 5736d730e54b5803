"""A trained or imported AlexNet with the preprocessing its weights expect: for prediction and the figures.

The preprocessing is the config's, as in evaluation: the image's short side to the stored size, the
centre crop, minus the mean (the training set's mean image, or ``data.mean_rgb``), over ``data.std_rgb``,
times ``data.pixel_scale``. ``configs/torchvision.py`` and ``configs/caffe.py`` state their frameworks' values.

The config may be left out (``config_for``): a work directory's is in its ``run.json``, imported weights'
is their source's bundled config; a given one is checked against the run's record.
"""

from __future__ import annotations

import dataclasses
import os

import jax
import numpy as np
from flax import nnx

from alexnet_jax import config_files
from alexnet_jax.data import augment, classes, dataset, images, input_pipeline, preprocess, sources, stats
from alexnet_jax.errors import UserError
from alexnet_jax.model import AlexNet, AlexNetSpec
from alexnet_jax.workdir import checkpointing, run_record
from alexnet_jax.weights import fit, pretrained

# Imported weights were trained on 256-pixel images cropped to 224 (torchvision) or 227 (Caffe).
IMPORTED_STORED_SIZE = 256


@dataclasses.dataclass
class Predictor:
  model: AlexNet
  consts: dict
  pixel_scale: float
  stored_size: int
  class_names: list[str]
  source: str
  # the config it was loaded with (given, recorded or bundled)
  config: object = None
  # what the weights were read from, for messages: a checkpoint's step directory or a file
  weights: str = ""

  def read_image(self, path: str) -> np.ndarray:
    """An image file -> uint8 [S, S, 3] at the stored size; a clear UserError for anything unreadable."""
    try:
      with open(path, "rb") as f:
        data = f.read()
      return images.load_stored(data, self.stored_size)
    except (OSError, images.BadImage) as error:
      reason = (
          error.strerror
          if isinstance(error, OSError) and error.strerror
          else str(error)
      )
      raise UserError(f"cannot read {path}: {reason}") from None

  def network_input(self, stored: np.ndarray) -> jax.Array:
    """uint8 [N, S, S, 3] -> the network's float32 input: the centre crop, normalised."""
    size = self.model.spec.image_size
    offsets = augment.view_offsets(self.stored_size, size, 1)
    ((top, left, _),) = offsets
    crops = stored[:, top : top + size, left : left + size]
    return preprocess.network_input(
        crops, np.repeat(offsets, len(stored), 0), self.consts, self.pixel_scale
    )

  def probabilities(self, stored: np.ndarray) -> np.ndarray:
    logits = np.asarray(self.model(self.network_input(stored)))
    self._refuse_non_finite(logits, "scores", "probabilities")
    return np.asarray(jax.nn.softmax(logits))

  def features(self, stored: np.ndarray, layer: str = "fc7") -> np.ndarray:
    """A layer's outputs (fc7: the last hidden layer, 4096 units, as in the paper's Figure 4)."""
    features = np.asarray(
        self.model.activations(self.network_input(stored))[layer]
    )
    self._refuse_non_finite(features, f"{layer} outputs", "neighbours")
    return features

  def _refuse_non_finite(
      self, outputs: np.ndarray, what: str, shown: str
  ) -> None:
    # NaN or inf has no ranking and no distance: shown, it would read as a (meaningless) answer.
    bad = int(
        np.sum(~np.isfinite(outputs.reshape(len(outputs), -1)).all(axis=1))
    )
    if bad:
      raise UserError(
          f"{self.weights}: the network outputs non-finite {what} (NaN or inf) for {bad} of "
          f"{len(outputs)} images: these weights diverged; no {shown} to show"
      )


def _network_of(params: dict, config, num_classes: int) -> AlexNetSpec:
  """The config's network, with the class count the weights have (``pretrained.num_classes_of``)."""
  values = dict(config.model)
  values["num_classes"] = num_classes
  spec = AlexNetSpec.from_config(values)
  different = fit.mismatch(spec, params)
  if different:
    raise UserError(
        f"the weights do not fit this config's network ({different}; imported weights: use "
        f"configs/torchvision.py or configs/caffe.py; a checkpoint: the config it was trained with, "
        f"with the same overrides)"
    )
  return spec


def _statistics(
    config, checkpoint: str | None, stored: int, splits
) -> stats.DatasetStats:
  if len(config.data.mean_rgb):  # a fixed colour: no dataset needed
    return stats.DatasetStats(
        np.zeros((stored, stored, 3), np.float32),
        np.zeros(3, np.float32),
        np.eye(3, dtype=np.float32),
        0,
    )
  cached = os.path.join(checkpoint, "data_stats.npz") if checkpoint else None
  if cached and os.path.exists(cached):
    return stats.DatasetStats.load(cached)
  return input_pipeline.training_stats(splits())


def run_dir(path: str) -> str:
  """The work directory of ``path``, a work directory or its ``checkpoints/``: where its ``run.json`` is."""
  full = os.path.abspath(path)
  if os.path.basename(full) == "checkpoints" and not os.path.exists(
      os.path.join(full, run_record.RECORD)
  ):
    return os.path.dirname(full)
  return path


def config_for(path: str, config, source: str):
  """The config to read the weights at ``path`` with. A checkpoint: ``config`` when given, checked against
  its run's record, else the recorded one (none recorded: refused, give --config). Imported weights (a file,
  or an old imported checkpoint without a record): ``config``, else their source's bundled config.
  """
  workdir = run_dir(path) if os.path.isdir(path) else None
  if workdir is not None and run_record.read(workdir) is not None:
    if config is None:
      return run_record.recorded_config(workdir)
    run_record.check_config(
        workdir,
        config,
        "leave out --config to use its run.json's, or read it",
        "--checkpoint",
    )
    return config
  if config is not None:
    return config
  if source in pretrained.CONFIG_OF_SOURCE:
    return config_files.load(pretrained.CONFIG_OF_SOURCE[source])
  # no record: its error says to give --config
  return run_record.recorded_config(workdir)


def load(config, path: str, mesh=None) -> Predictor:
  """The network of ``config`` with the weights at ``path`` (a checkpoint directory, .pth or .npy);
  ``config=None``: the run's recorded config, or the imported weights' bundled one (``config_for``).
  """
  params, batch_stats, source, num_classes = pretrained.read_weights(path)
  config = config_for(path, config, source)
  spec = _network_of(params, config, num_classes)
  imported = source in pretrained.CONFIG_OF_SOURCE
  stored = (
      IMPORTED_STORED_SIZE
      if imported
      else dataset.stored_size_for(spec.image_size, config.data.stored_size)
  )
  splits = lambda: sources.load(config.data, spec.image_size)
  statistics = _statistics(config, None if imported else path, stored, splits)
  model = AlexNet(spec, rngs=nnx.Rngs(0), mesh=mesh)
  model.load_params(
      fit.on_towers(model.mesh, params),
      fit.on_towers(model.mesh, batch_stats) if spec.batch_norm else None,
  )
  model.eval()
  if spec.num_classes == len(classes.imagenet()):
    names = [name for _, name in classes.imagenet()]
  else:
    names = classes.readable(splits().class_names)
  consts = preprocess.constants(
      statistics, None, config.data.mean_rgb, config.data.std_rgb
  )
  if os.path.isdir(path):
    steps = checkpointing.saved_steps(path)
    weights = f"checkpoint {checkpointing.step_path(path, steps[-1])}"
  else:
    weights = f"weights {path}"
  return Predictor(
      model,
      consts,
      config.data.pixel_scale,
      stored,
      names,
      source,
      config,
      weights,
  )
