"""Any TFDS image-classification dataset: the prepared SxS copy if there is one, else its ArrayRecord files
through ``tfds.data_source`` (no TensorFlow)."""

from __future__ import annotations

import os

import numpy as np

from alexnet_jax.data import images, prepared_source
from alexnet_jax.data.dataset import DecodingSource, Splits, stored_size_for
from alexnet_jax.errors import ConfigError


class TfdsSource(DecodingSource):
  """Any TFDS image-classification split through ``tfds.data_source`` (ArrayRecord, no TensorFlow)."""

  def __init__(self, data_source, size: int):
    super().__init__(size)
    self._data = data_source

  def __len__(self) -> int:
    return len(self._data)

  def __getitem__(self, index: int) -> dict:
    record = self._data[index]
    image = np.asarray(record["image"])
    if image.ndim == 2 or image.shape[-1] == 1:
      image = np.repeat(image.reshape(*image.shape[:2], 1), 3, axis=-1)
    return {
        "image": images.resize_short_side_and_center_crop(image, self.size),
        "label": np.int32(record["label"]),
        "valid": True,
    }


def load(
    name: str,
    data_dir: str,
    image_size: int,
    train_split: str,
    eval_split: str,
    stored_size: int = 0,
) -> Splits:
  """A TFDS dataset: the prepared SxS copy if there is one, else the TFDS ArrayRecord files as they are."""
  # here: ~1 s of imports (more beside TensorFlow) only TFDS users pay
  import tensorflow_datasets as tfds

  size = stored_size_for(image_size, stored_size)
  root = (
      os.path.expanduser(data_dir)
      if data_dir
      else os.path.expanduser(tfds.core.constants.DATA_DIR)
  )
  ready = prepared_source.prepared_dir(root, name, size)
  if os.path.exists(os.path.join(ready, "info.json")):
    return prepared_source.load(ready, image_size, eval_split)
  try:
    builder = tfds.builder(name, data_dir=root)
    if not builder.is_prepared():
      raise FileNotFoundError
    train = tfds.data_source(name, split=train_split, data_dir=root)
    evaluation = tfds.data_source(name, split=eval_split, data_dir=root)
  except tfds.core.registered.DatasetNotFoundError:
    # not TFDS's: an ImageNet-style tree (ILSVRC-2010, the Fall 2011 release) prepared under this name
    hint = prepared_source.FOLDER_HINT.format(name=name, data_dir=root) + (
        "" if size == 256 else f" --size={size}"
    )
    raise ConfigError(
        f"'{name}' is prepared neither in {ready} nor as a TFDS dataset in {root}; prepare it with: {hint}"
    ) from None
  except (FileNotFoundError, AssertionError):
    if name == "imagenet2012":  # prepare's --size defaults to the paper's 256
      hint = prepared_source.PREPARE_HINT.format(data_dir=root) + (
          "" if size == 256 else f" --size={size}"
      )
    else:
      hint = f"python -c \"import tensorflow_datasets as tfds; tfds.builder('{name}', data_dir='{root}').download_and_prepare()\""
    raise ConfigError(
        f"TFDS dataset '{name}' is not prepared in {root} (nor {ready}); prepare it with: {hint}"
    ) from None
  class_names = tuple(builder.info.features["label"].names)
  return Splits(
      TfdsSource(train, size),
      TfdsSource(evaluation, size),
      len(class_names),
      size,
      class_names,
  )
