"""The batches that travel from the grain workers to the jitted steps: their keys, shapes and dtypes.

The host fills every key: ``augment`` per image in the grain workers (the uint8 crop, where it came from,
the lighting draw), ``input_pipeline`` stacks them and pads the last eval batch. The device half
(``preprocess``, inside the steps) only reads them: it mirrors each crop by ``offset``'s flag, subtracts
the mean image's window at ``offset`` and adds the lighting that ``alpha`` weights (paper §2, §4.1).
A batch on its way is this process's slice ``[local, ...]``; placed, it is the global batch. A source's
record (``sources``), what ``augment`` reads, has the keys IMAGE (the stored uint8 [S, S, 3]), LABEL, VALID.

The keys are also the names in every checkpointed grain state and in the tests: change none of them.
"""

from __future__ import annotations

import dataclasses

import numpy as np

IMAGE = "image"
OFFSET = "offset"
ALPHA = "alpha"
LABEL = "label"
VALID = "valid"
MASK = "mask"
PADDING = "padding"


@dataclasses.dataclass(frozen=True)
class Field:
  # after the batch axis: ints, or the names "size", "windows", "views" given to blank/check
  shape: tuple
  dtype: type
  filled_by: str
  meaning: str


# Training: one random crop per image (augment.random_crop_flip).
TRAIN = {
    IMAGE: Field(
        ("size", "size", 3),
        np.uint8,
        "host: augment.random_crop_flip",
        "the crop (model.image_size of the stored size), as cut: unmirrored",
    ),
    OFFSET: Field(
        (3,),
        np.int32,
        "host: augment.random_crop_flip",
        "(top, left, flipped): the crop's window in the stored image; flipped 1 = mirror on the device",
    ),
    ALPHA: Field(
        (3,),
        np.float32,
        "host: augment.random_crop_flip",
        "PCA-lighting coefficients alpha ~ N(0, data.lighting_std), once per image per pass; zeros when off",
    ),
    LABEL: Field((), np.int32, "host: the source's record", "the class index"),
    VALID: Field(
        (),
        np.bool_,
        "host: the source's record",
        "False: an unreadable image, a zero crop that counts for nothing",
    ),
}

# Evaluation: every view of each image (augment.eval_views), the last batch padded (input_pipeline.pad_batch).
EVAL = {
    IMAGE: Field(
        ("windows", "size", "size", 3),
        np.uint8,
        "host: augment.eval_views",
        "each window once (1 centre crop, or the paper's 5); the device mirrors them for the other 5 views",
    ),
    OFFSET: Field(
        ("views", 3),
        np.int32,
        "host: augment.eval_views",
        "(top, left, flipped) of every view: the windows, then (10 views) the same windows mirrored",
    ),
    LABEL: Field((), np.int32, "host: the source's record", "the class index"),
    MASK: Field(
        (),
        np.bool_,
        "host: input_pipeline.pad_batch",
        "a real, readable image: what the metrics count",
    ),
    PADDING: Field(
        (),
        np.bool_,
        "host: input_pipeline.pad_batch",
        "a zero example filling the last batch",
    ),
}


def eval_dims(views: int) -> dict[str, int]:
  """The eval schema's sizes for ``views`` (1 or 10): the host sends each window once."""
  return {"views": views, "windows": views // 2 if views == 10 else views}


def _shape(field: Field, dims: dict[str, int]) -> tuple[int, ...]:
  return tuple(dims[d] if isinstance(d, str) else d for d in field.shape)


def blank(
    schema: dict[str, Field], batch_size: int, **dims: int
) -> dict[str, np.ndarray]:
  """A batch of zeros (uint8 black crops, label 0, offset 0, invalid or masked) of the schema's shapes."""
  return {
      key: np.zeros((batch_size, *_shape(f, dims)), f.dtype)
      for key, f in schema.items()
  }


def check(batch: dict, schema: dict[str, Field], **dims: int) -> None:
  """Raises ValueError unless ``batch`` holds exactly the schema's keys, each of its shape and dtype
  after a common batch axis."""
  if set(batch) != set(schema):
    raise ValueError(
        f"batch keys {sorted(batch)}, the schema's are {sorted(schema)}"
    )
  sizes = {
      np.shape(batch[key])[0] if np.ndim(batch[key]) else None for key in schema
  }
  if len(sizes) != 1 or None in sizes:
    raise ValueError(
        f"batch arrays of different leading sizes: { {k: np.shape(v) for k, v in batch.items()} }"
    )
  for key, f in schema.items():
    want = _shape(f, dims)
    got = tuple(np.shape(batch[key])[1:])
    if got != want or np.dtype(batch[key].dtype) != np.dtype(f.dtype):
      raise ValueError(
          f"batch[{key!r}] is {batch[key].dtype}{list(got)} per example, the schema's "
          f"{np.dtype(f.dtype)}{list(want)}"
      )
