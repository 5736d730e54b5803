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


def write_shard(path: str, records, size: int, quality: int) -> tuple[int, int]:
  """records: iterable of (label, image bytes, name). Writes ``path`` atomically; returns (written, skipped)."""
  tmp = path + ".tmp"
  writer = ArrayRecordWriter(tmp, "group_size:1")
  written = skipped = 0
  try:
    for label, data, name in records:
      try:
        image = (
            data
            if isinstance(data, np.ndarray)
            else images.decode(data, size_hint=size)
        )
        stored = images.resize_short_side_and_center_crop(image, size)
      except images.BadImage as error:
        logging.warning("skipping unreadable image %s: %s", name, error)
        skipped += 1
        continue
      writer.write(
          prepared_source.pack_record(
              label, images.encode_jpeg(stored, quality)
          )
      )
      written += 1
  finally:
    writer.close()
  os.replace(tmp, path)
  return written, skipped


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
    out, class_names, size, quality, workers, origin, skipped, started
) -> None:
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
      "num_train": count_records(out, "train"),
      "num_validation": count_records(out, "validation"),
      "skipped_images": skipped,
  }
  with open(os.path.join(out, "info.json.tmp"), "w") as f:
    json.dump(info, f, indent=1)
  os.replace(os.path.join(out, "info.json.tmp"), os.path.join(out, "info.json"))
  print(
      f"prepared {info['num_train']:,} training and {info['num_validation']:,} validation images in {out} "
      f"({time.time() - started:.0f} s; {skipped} unreadable skipped)"
  )
