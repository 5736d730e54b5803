"""Writing prepared data (``python -m alexnet_jax.prepare``): JPEG shards in ArrayRecord files, written in
parallel with a progress bar, each atomically; then the training-set statistics, ``classes.txt`` and, last,
``info.json``, whose presence marks the directory complete (``prepared_source`` reads it).
"""

from __future__ import annotations

import contextlib
import functools
import json
import multiprocessing
import os
import time

import numpy as np
from absl import logging
from array_record.python.array_record_module import ArrayRecordWriter
from tqdm import tqdm

from alexnet_jax.data import images, prepared_source, stats as stats_lib

SKIPPED = ".skipped"  # beside a shard: the images it left out, one "name: reason" a line


def write_shard(
    path: str, records, size: int, quality: int, log_skipped: bool = False
) -> tuple[int, int]:
  """records: iterable of (label, image bytes or array, name); a ``BadImage`` in place of the bytes is a
  file that could not be read, skipped like one that does not decode. Writes ``path`` atomically; returns
  (written, skipped). ``log_skipped``: the skipped images' names and reasons go into ``path + SKIPPED``
  (``skipped_images`` reads them), put in place before the shard, so that a finished shard's list
  survives a rerun that keeps the shard.
  """
  tmp = path + ".tmp"
  writer = ArrayRecordWriter(tmp, "group_size:1")
  written, skipped = 0, []
  try:
    for label, data, name in records:
      try:
        # the file itself could not be read
        if isinstance(data, images.BadImage):
          raise data
        image = (
            data
            if isinstance(data, np.ndarray)
            else images.decode(data, size_hint=size)
        )
        stored = images.resize_short_side_and_center_crop(image, size)
      except images.BadImage as error:
        logging.warning("skipping unreadable image %s: %s", name, error)
        skipped.append(f"{name}: {error}")
        continue
      writer.write(
          prepared_source.pack_record(
              label, images.encode_jpeg(stored, quality)
          )
      )
      written += 1
  finally:
    writer.close()
  if log_skipped:
    if skipped:
      with open(path + SKIPPED + ".tmp", "w") as f:
        f.write("".join(line.replace("\n", " ") + "\n" for line in skipped))
      os.replace(path + SKIPPED + ".tmp", path + SKIPPED)
    # one left by a run stopped before its shard was in place
    elif os.path.exists(path + SKIPPED):
      os.remove(path + SKIPPED)
  os.replace(tmp, path)
  return written, len(skipped)


def skipped_images(out: str) -> list[str]:
  """The "name: reason" lines of every shard's skipped images (``write_shard(log_skipped=True)``)."""
  return [
      line.rstrip("\n")
      for n in sorted(os.listdir(out))
      if n.endswith(".array_record" + SKIPPED)
      for line in open(os.path.join(out, n))
      if line.strip()
  ]


def shard_stats(path: str, size: int) -> stats_lib.StatsAccumulator:
  accumulator = stats_lib.StatsAccumulator()
  source = prepared_source.PreparedSource([path], size)
  for i in range(len(source)):
    accumulator.add(source[i]["image"])
  return accumulator


@contextlib.contextmanager
def parallel_map(fn, items: list, workers: int):
  """``fn`` over ``items``, results in completion order; in worker processes unless ``workers == 0``."""
  if workers == 0:
    yield map(fn, items)
    return
  with multiprocessing.get_context("spawn").Pool(workers) as pool:
    yield pool.imap_unordered(fn, items)


def run_tasks(tasks: list, fn, workers: int, desc: str) -> tuple[int, int]:
  """Runs ``fn`` over ``tasks`` with a progress bar and ETA; returns (images written, skipped)."""
  written = skipped = 0
  with parallel_map(fn, tasks, workers) as results, tqdm(
      total=len(tasks), desc=desc, unit="file", mininterval=1.0
  ) as bar:
    for w, s in results:
      written, skipped = written + w, skipped + s
      bar.update(1)
      bar.set_postfix(images=written, skipped=skipped)
  return written, skipped


def count_records(out: str, split: str) -> int:
  paths = sorted(
      os.path.join(out, n)
      for n in os.listdir(out)
      if n.startswith(split + "-") and n.endswith(".array_record")
  )
  return len(prepared_source.PreparedSource(paths, 0)) if paths else 0


def finish(
    out,
    class_names,
    size,
    quality,
    workers,
    origin,
    skipped,
    started,
    splits=("train", "validation"),
    skipped_names=None,
) -> None:
  """Statistics, ``classes.txt`` and, last, ``info.json`` (``num_SPLIT`` for each of ``splits``;
  ``skipped_names``, when given, listed in it as ``skipped``)."""
  stats_path = os.path.join(out, "stats.npz")
  if not os.path.exists(stats_path):
    shards = sorted(
        os.path.join(out, n)
        for n in os.listdir(out)
        if n.startswith("train-") and n.endswith(".array_record")
    )
    accumulator = stats_lib.StatsAccumulator()
    with parallel_map(
        functools.partial(shard_stats, size=size), shards, workers
    ) as parts:
      for part in tqdm(
          parts, total=len(shards), desc="statistics", unit="file"
      ):
        accumulator.merge(part)
    accumulator.result().save(stats_path)
  with open(os.path.join(out, "classes.txt"), "w") as f:
    f.write("\n".join(class_names) + "\n")
  info = {
      "size": size,
      "quality": quality,
      "origin": origin,
      **{f"num_{split}": count_records(out, split) for split in splits},
      "skipped_images": skipped,
  }
  if skipped_names is not None:
    info["skipped"] = list(skipped_names)
  with open(os.path.join(out, "info.json.tmp"), "w") as f:
    json.dump(info, f, indent=1)
  os.replace(os.path.join(out, "info.json.tmp"), os.path.join(out, "info.json"))
  *others, last = [
      f"{info[f'num_{split}']:,} {'training' if split == 'train' else split}"
      for split in splits
  ]
  counts = f"{', '.join(others)} and {last}" if others else last
  print(
      f"prepared {counts} images in {out} "
      f"({time.time() - started:.0f} s; {skipped} unreadable skipped)"
  )
