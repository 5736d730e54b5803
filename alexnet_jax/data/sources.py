"""The train and eval splits that ``config.data`` names: the bundled digits, a folder tree, or TFDS."""

from __future__ import annotations

from alexnet_jax.data import digits, folder_source, tfds_source
from alexnet_jax.data.dataset import Splits
from alexnet_jax.errors import ConfigError


def load(data_config, image_size: int) -> Splits:
  """The train and eval splits named by ``config.data``."""
  stored = data_config.stored_size
  if data_config.source == "digits":
    return digits.load(image_size, stored_size=stored)
  if data_config.source == "folder":
    if not data_config.data_dir:
      raise ConfigError(
          "data.source='folder' needs --config.data.data_dir=DIR (DIR/train/CLASS/IMAGE, DIR/val/...)"
      )
    return folder_source.load(
        data_config.data_dir,
        image_size,
        data_config.train_split,
        data_config.eval_split,
        stored,
    )
  if data_config.source == "tfds":
    return tfds_source.load(
        data_config.name,
        data_config.data_dir,
        image_size,
        data_config.train_split,
        data_config.eval_split,
        stored,
    )
  raise ConfigError(
      f"data.source must be 'tfds', 'folder' or 'digits', got {data_config.source!r}"
  )
