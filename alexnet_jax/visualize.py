"""The paper's figures from any checkpoint or imported weights.

    python -m alexnet_jax.visualize filters --checkpoint=DIR --out=filters.png
    python -m alexnet_jax.visualize neighbours --checkpoint=DIR --out=neighbours.png [IMAGE...]
    python -m alexnet_jax.visualize predictions --checkpoint=DIR --out=predictions.png [IMAGE...]

``filters``: conv1's kernels, one block per tower (Figure 3: the paper's GPU 1 learned mostly
colour-agnostic kernels, GPU 2 mostly colour-specific ones). ``neighbours``: for each query image, the
training images whose last hidden layer (fc7, 4096 units) is nearest in Euclidean distance (Figure 4,
right). ``predictions``: each image with its five most probable classes as bars, the correct one red
(Figure 4, left).
Queries are the given image files, or ``--queries`` images of the eval split. ``--config`` is optional as
for ``alexnet_jax.predict``: a work directory's ``run.json`` or imported weights' source says it.
"""

from __future__ import annotations

import os

import numpy as np
from absl import flags
from PIL import Image, ImageDraw
from tqdm import tqdm

from alexnet_jax import cli
from alexnet_jax.data import sources
from alexnet_jax.errors import UserError
from alexnet_jax.weights import inference

FLAGS = flags.FLAGS
GAP, TOWER_GAP, BACKGROUND = 2, 12, (255, 255, 255)


# ----------------------------------------------------------------------------- Figure 3


def filter_grid(
    kernel: np.ndarray, columns: int = 16, scale: int = 4
) -> Image.Image:
  """conv1 kernels ``[T, kh, kw, 3, C]`` -> an image: one block of rows per tower, each kernel min-max
  scaled on its own (as the paper shows them), towers apart by a wider gap."""
  towers, kh, kw, _, per_tower = kernel.shape
  rows = -(-per_tower // columns)
  cell_h, cell_w = kh * scale + GAP, kw * scale + GAP
  width = columns * cell_w + GAP
  block = rows * cell_h
  canvas = np.full(
      (towers * block + (towers - 1) * TOWER_GAP + GAP, width, 3), 255, np.uint8
  )
  for t in range(towers):
    for c in range(per_tower):
      k = kernel[t, :, :, :, c]
      k = (k - k.min()) / max(k.max() - k.min(), 1e-12)
      tile = np.kron(
          (255 * k).astype(np.uint8), np.ones((scale, scale, 1), np.uint8)
      )
      top = t * (block + TOWER_GAP) + (c // columns) * cell_h + GAP
      left = (c % columns) * cell_w + GAP
      canvas[top : top + kh * scale, left : left + kw * scale] = tile
  return Image.fromarray(canvas)


def colour_fractions(kernel: np.ndarray) -> np.ndarray:
  """conv1 kernels ``[T, kh, kw, 3, C]`` -> ``[T, C]``: the share of each kernel's energy that is colour,
  ``||w - grey(w)||^2 / ||w||^2`` with ``grey(w)`` each pixel's mean over R, G, B. 0: a grey (colour-
  agnostic) kernel; 2/3: one channel alone; 1: colours opposed (red against green) with no grey at all.
  Figure 3's reading, measured: the paper's GPU 1 kernels "largely colour-agnostic", GPU 2's "largely
  colour-specific"."""
  w = kernel.astype(np.float64)
  chroma = w - w.mean(axis=3, keepdims=True)
  energy = np.square(w).sum(axis=(1, 2, 3))
  return np.square(chroma).sum(axis=(1, 2, 3)) / np.maximum(energy, 1e-30)


def describe_colour(fractions: np.ndarray) -> list[str]:
  """One line per tower: the median colour share, and how many kernels are mostly grey (share under 1/3).
  Unstructured kernels (R, G, B drawn apart, as at initialisation) sit near 2/3.
  """
  return [
      f"tower {t + 1}: median colour share {np.median(f):.2f} (random kernels: 0.67); "
      f"{int(np.sum(f < 1 / 3))} of {len(f)} kernels mostly grey (share < 1/3)"
      for t, f in enumerate(fractions)
  ]


# ----------------------------------------------------------------------------- Figure 4


def nearest(
    queries: np.ndarray, pool: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
  """Indices and Euclidean distances of each query's ``k`` nearest rows of ``pool``, nearest first."""
  squared = (
      np.square(queries).sum(1)[:, None]
      - 2 * queries @ pool.T
      + np.square(pool).sum(1)[None, :]
  )
  order = np.argsort(squared, axis=1, kind="stable")[:, :k]
  return order, np.sqrt(np.maximum(np.take_along_axis(squared, order, 1), 0))


def neighbour_grid(
    query_images: list[np.ndarray], neighbour_images: list[list[np.ndarray]]
) -> Image.Image:
  """A row per query: the query, a gap, then its neighbours (all uint8 [s, s, 3] of one size)."""
  size = query_images[0].shape[0]
  cell = size + GAP
  columns = 1 + max(len(n) for n in neighbour_images)
  canvas = Image.new(
      "RGB",
      (columns * cell + TOWER_GAP + GAP, len(query_images) * cell + GAP),
      BACKGROUND,
  )
  draw = ImageDraw.Draw(canvas)
  for row, (query, neighbours) in enumerate(
      zip(query_images, neighbour_images)
  ):
    top = row * cell + GAP
    canvas.paste(Image.fromarray(query), (GAP, top))
    draw.rectangle(
        [GAP - 1, top - 1, GAP + size, top + size], outline=(200, 0, 0)
    )
    for j, image in enumerate(neighbours):
      canvas.paste(
          Image.fromarray(image), (GAP + (j + 1) * cell + TOWER_GAP, top)
      )
  return canvas


def _centre(stored: np.ndarray, size: int) -> np.ndarray:
  top = (stored.shape[0] - size) // 2
  return stored[top : top + size, top : top + size]


def neighbours_figure(
    predictor,
    config,
    query_paths: list[str],
    k: int,
    queries: int,
    max_train: int,
) -> tuple[Image.Image, np.ndarray]:
  """The figure and each query's neighbours' training indices."""
  splits = sources.load(config.data, predictor.model.spec.image_size)
  if splits.stored_size != predictor.stored_size:
    raise UserError(
        f"the data is stored at {splits.stored_size} px, the network reads {predictor.stored_size}"
    )
  if query_paths:
    query_stored = [predictor.read_image(p) for p in query_paths]
  else:
    query_stored = [
        splits.eval[i]["image"] for i in range(min(queries, len(splits.eval)))
    ]
  count = (
      len(splits.train) if max_train < 0 else min(max_train, len(splits.train))
  )
  batch, features, pool = 64, [], []
  for start in tqdm(
      range(0, count, batch), desc="fc7 of training images", unit="batch"
  ):
    images = np.stack(
        [
            splits.train[i]["image"]
            for i in range(start, min(start + batch, count))
        ]
    )
    features.append(predictor.features(images))
    pool.extend(images)
  order, _ = nearest(
      predictor.features(np.stack(query_stored)), np.concatenate(features), k
  )
  size = predictor.model.spec.image_size
  figure = neighbour_grid(
      [_centre(q, size) for q in query_stored],
      [[_centre(pool[j], size) for j in row] for row in order],
  )
  return figure, order


# ----------------------------------------------------------------------------- Figure 4, left

BAR_WIDTH, BAR_HEIGHT, LABEL_WIDTH = 120, 12, 110
CORRECT, OTHER = (200, 0, 0), (70, 110, 200)


def prediction_panels(
    pictures: list[np.ndarray],
    probabilities: np.ndarray,
    class_names: list[str],
    labels: list[int | None],
    top: int = 5,
    columns: int = 4,
) -> Image.Image:
  """Figure 4 (left): each picture with its ``top`` most probable classes as bars below it, the length of
  a bar its probability, the correct class's bar red (when it is among them and the label is known);
  ``columns`` panels a row, as the paper's two rows of four.
  """
  size = pictures[0].shape[0]
  width = max(size, LABEL_WIDTH + BAR_WIDTH) + 2 * GAP
  height = size + GAP + top * (BAR_HEIGHT + GAP) + GAP
  across = min(columns, len(pictures))
  rows = -(-len(pictures) // across)
  canvas = Image.new(
      "RGB",
      (across * (width + TOWER_GAP), rows * (height + TOWER_GAP)),
      BACKGROUND,
  )
  draw = ImageDraw.Draw(canvas)
  for i, (picture, p, label) in enumerate(zip(pictures, probabilities, labels)):
    left = (i % across) * (width + TOWER_GAP)
    base = (i // across) * (height + TOWER_GAP)
    canvas.paste(
        Image.fromarray(picture), (left + (width - size) // 2, base + GAP)
    )
    for rank, c in enumerate(np.argsort(-p, kind="stable")[:top]):
      y = base + size + 2 * GAP + rank * (BAR_HEIGHT + GAP)
      draw.text((left + GAP, y), class_names[c][:18], fill=(0, 0, 0))
      length = int(round(float(p[c]) * BAR_WIDTH))
      x = left + GAP + LABEL_WIDTH
      if length:
        colour = CORRECT if c == label else OTHER
        draw.rectangle([x, y, x + length - 1, y + BAR_HEIGHT - 1], fill=colour)
  return canvas


def predictions_figure(predictor, config, paths: list[str], queries: int):
  """The given image files (no label), or the first ``queries`` eval images (their labels)."""
  if paths:
    stored = [predictor.read_image(p) for p in paths]
    labels = [None] * len(stored)
  else:
    splits = sources.load(config.data, predictor.model.spec.image_size)
    records = [splits.eval[i] for i in range(min(queries, len(splits.eval)))]
    stored, labels = [r["image"] for r in records], [
        int(r["label"]) for r in records
    ]
  probabilities = predictor.probabilities(np.stack(stored))
  size = predictor.model.spec.image_size
  return prediction_panels(
      [_centre(s, size) for s in stored],
      probabilities,
      predictor.class_names,
      labels,
  )


def output_path(out: str) -> str:
  """``--out`` as the file to write: ``.png`` added when it has no extension; one PIL cannot write is
  refused here, before the checkpoint is loaded, rather than by PIL's traceback at the end.
  """
  if not os.path.basename(out):
    raise UserError(
        f"--out={out}: give a file name, e.g. {os.path.join(out, 'figure.png')}"
    )
  extension = os.path.splitext(out)[1]
  if not extension:
    return out + ".png"
  if Image.registered_extensions().get(extension.lower()) not in Image.SAVE:
    raise UserError(
        f"--out={out}: PIL cannot write the extension {extension}; use .png (or .jpg, .pdf, ...)"
    )
  return out


def main(argv):
  if len(argv) < 2 or argv[1] not in ("filters", "neighbours", "predictions"):
    raise SystemExit(
        "alexnet_jax: usage: python -m alexnet_jax.visualize filters|neighbours|predictions "
        "--checkpoint=DIR|--weights=FILE [--config=...] --out=FILE.png [IMAGE...]"
    )
  if (FLAGS.checkpoint is None) == (FLAGS.weights is None):
    raise SystemExit(
        "alexnet_jax: give exactly one of --checkpoint=DIR or --weights=FILE"
    )
  out = output_path(FLAGS.out)
  predictor = inference.load(FLAGS.config, FLAGS.checkpoint or FLAGS.weights)
  if argv[1] == "filters":
    if len(argv) > 2:
      raise UserError(f"filters takes no image files, got {argv[2:]}")
    kernel = np.asarray(predictor.model.params()["conv1"]["kernel"])
    figure = filter_grid(kernel, scale=FLAGS.scale)
    for line in describe_colour(colour_fractions(kernel)):
      print(line)
  elif argv[1] == "predictions":
    figure = predictions_figure(
        predictor,
        predictor.config,
        argv[2:],
        FLAGS.queries if FLAGS["queries"].present else 8,
    )
  else:
    figure, _ = neighbours_figure(
        predictor,
        predictor.config,
        argv[2:],
        FLAGS.k,
        FLAGS.queries,
        FLAGS.max_train,
    )
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  figure.save(out)
  print(f"wrote {out} ({figure.width}x{figure.height})")


if __name__ == "__main__":
  # Defined here, not on import: predict and visualize are also imported side by side (tests).
  cli.define_weights_flags()
  flags.DEFINE_string(
      "out", None, "Image file to write (.png added when it has no extension)."
  )
  flags.DEFINE_integer(
      "k", 6, "neighbours: training images shown per query.", lower_bound=1
  )
  flags.DEFINE_integer(
      "queries",
      5,
      "neighbours, predictions: eval images shown when no IMAGE is given (default 5; predictions: 8).",
      lower_bound=1,
  )
  flags.DEFINE_integer(
      "max_train",
      2000,
      "neighbours: training images searched (the first N; -1: all).",
  )
  flags.DEFINE_integer(
      "scale", 4, "filters: pixels per kernel pixel.", lower_bound=1
  )
  flags.mark_flags_as_required(["out"])
  cli.run(main)
