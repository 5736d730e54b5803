"""ImageNet at the paper's 256x256 resolution, from the ILSVRC2012 tars or a built TFDS dataset
(``python -m alexnet_jax.prepare``).

Every image is rescaled as §2 says (short side to 256, central 256x256 patch) and written as JPEG into
ArrayRecord files under ``DATA_DIR/alexnet_jax/imagenet2012-256/`` (~22 GB instead of ~150 GB), with the
training-set statistics (mean image, RGB eigenvectors) in ``stats.npz`` beside them. Labels follow TFDS's
imagenet2012 (sorted synsets; validation labels from TFDS's file), so results compare with TFDS runs.
Re-running skips finished files; an interrupted run leaves only ``*.tmp`` files, which are redone. The
directory is usable once ``info.json`` exists: it is written last.
"""

from __future__ import annotations

import contextlib
import functools
import json
import multiprocessing
import os
import tarfile
import time

import numpy as np
from absl import logging
from array_record.python.array_record_module import ArrayRecordWriter
from tqdm import tqdm

from alexnet_jax.data import images, prepared_source, stats as stats_lib
from alexnet_jax.errors import UserError

TRAIN_TAR, VAL_TAR = "ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar"
VAL_SHARD = 1000  # validation images per file
TFDS_SHARD = 5000
# What the [imagenet] extra of setup.cfg installs: TFDS imports them only to build or read some datasets.
IMAGENET_EXTRA_MODULES = ("tensorflow", "importlib_resources")


def imagenet_label_files() -> tuple[list[str], list[str]]:
  """TFDS's synset order (its label ids) and the 50,000 validation labels, shipped inside the TFDS package."""
  import tensorflow_datasets as tfds  # here: ~1 s of imports (more beside TensorFlow) only TFDS users pay

  folder = os.path.join(os.path.dirname(tfds.__file__), "datasets", "imagenet2012")
  read = lambda name: [l.strip() for l in open(os.path.join(folder, name)) if l.strip()]
  return read("labels.txt"), read("validation_labels.txt")


# ----------------------------------------------------------------------------- writing one file

def _write_shard(path: str, records, size: int, quality: int) -> tuple[int, int]:
  """records: iterable of (label, image bytes, name). Writes ``path`` atomically; returns (written, skipped)."""
  tmp = path + ".tmp"
  writer = ArrayRecordWriter(tmp, "group_size:1")
  written = skipped = 0
  try:
    for label, data, name in records:
      try:
        image = data if isinstance(data, np.ndarray) else images.decode(data, size_hint=size)
        stored = images.resize_short_side_and_center_crop(image, size)
      except images.BadImage as error:
        logging.warning("skipping unreadable image %s: %s", name, error)
        skipped += 1
        continue
      writer.write(prepared_source.pack_record(label, images.encode_jpeg(stored, quality)))
      written += 1
  finally:
    writer.close()
  os.replace(tmp, path)
  return written, skipped


def _tar_members(tar: tarfile.TarFile):
  return sorted((m for m in tar.getmembers() if m.isfile()), key=lambda m: m.name)


def _tar_file_names(path: str) -> list[str]:
  """The sorted names of the files in the tar at ``path``; one line naming it if it is no readable tar."""
  try:
    if not tarfile.is_tarfile(path):  # tarfile.open's own error lists every compression it tried
      raise UserError(f"{path} is not a tar archive")
    with tarfile.open(path) as tar:
      return [m.name for m in _tar_members(tar)]
  except (tarfile.TarError, EOFError, OSError) as error:
    raise UserError(f"{path} is not a readable tar archive ({error})") from None


def _train_task(task, tars: str, out: str, size: int, quality: int, synset_ids: dict) -> tuple[int, int]:
  """One synset's inner tar -> one ArrayRecord file."""
  index, count, member_name = task
  path = os.path.join(out, f"train-{index:05d}-of-{count:05d}.array_record")
  if os.path.exists(path):
    return 0, 0
  synset = os.path.basename(member_name).split(".")[0]
  with tarfile.open(os.path.join(tars, TRAIN_TAR)) as outer:
    member = outer.extractfile(member_name)
    if not tarfile.is_tarfile(member):
      raise UserError(f"{os.path.join(tars, TRAIN_TAR)}: {member_name} is not a tar archive")
    with tarfile.open(fileobj=member) as inner:
      records = ((synset_ids[synset], inner.extractfile(m).read(), f"{member_name}/{m.name}")
                 for m in _tar_members(inner))
      return _write_shard(path, records, size, quality)


def _val_task(task, tars: str, out: str, size: int, quality: int) -> tuple[int, int]:
  index, count, names_and_labels = task
  path = os.path.join(out, f"validation-{index:05d}-of-{count:05d}.array_record")
  if os.path.exists(path):
    return 0, 0
  with tarfile.open(os.path.join(tars, VAL_TAR)) as tar:
    records = ((label, tar.extractfile(name).read(), name) for name, label in names_and_labels)
    return _write_shard(path, records, size, quality)


def _tfds_task(task, name: str, data_dir: str | None, out: str, size: int, quality: int) -> tuple[int, int]:
  split, index, count, start, stop = task
  path = os.path.join(out, f"{split}-{index:05d}-of-{count:05d}.array_record")
  if os.path.exists(path):
    return 0, 0
  import tensorflow_datasets as tfds  # here: ~1 s of imports (more beside TensorFlow) only TFDS users pay
  data = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
  records = ((int(data[i]["label"]), _rgb(np.asarray(data[i]["image"])), f"{split}[{i}]") for i in range(start, stop))
  return _write_shard(path, records, size, quality)


def _rgb(image: np.ndarray) -> np.ndarray:
  return np.repeat(image.reshape(*image.shape[:2], 1), 3, -1) if image.ndim == 2 or image.shape[-1] == 1 else image


# ----------------------------------------------------------------------------- statistics

def _shard_stats(path: str, size: int) -> stats_lib.StatsAccumulator:
  accumulator = stats_lib.StatsAccumulator()
  source = prepared_source.PreparedSource([path], size)
  for i in range(len(source)):
    accumulator.add(source[i]["image"])
  return accumulator


# ----------------------------------------------------------------------------- driver

@contextlib.contextmanager
def _parallel_map(fn, items: list, workers: int):
  """``fn`` over ``items``, results in completion order; in worker processes unless ``workers == 0``."""
  if workers == 0:
    yield map(fn, items)
    return
  with multiprocessing.get_context("spawn").Pool(workers) as pool:
    yield pool.imap_unordered(fn, items)


def _run(tasks: list, fn, workers: int, desc: str) -> tuple[int, int]:
  """Runs ``fn`` over ``tasks`` with a progress bar and ETA; returns (images written, skipped)."""
  written = skipped = 0
  with _parallel_map(fn, tasks, workers) as results, tqdm(total=len(tasks), desc=desc, unit="file",
                                                           mininterval=1.0) as bar:
    for w, s in results:
      written, skipped = written + w, skipped + s
      bar.update(1)
      bar.set_postfix(images=written, skipped=skipped)
  return written, skipped


def _count_records(out: str, split: str) -> int:
  paths = sorted(os.path.join(out, n) for n in os.listdir(out) if n.startswith(split + "-") and n.endswith(".array_record"))
  return len(prepared_source.PreparedSource(paths, 0)) if paths else 0


def prepare_from_tars(tars: str, data_dir: str, size: int = 256, quality: int = 90, workers: int = 0) -> str:
  for name in (TRAIN_TAR, VAL_TAR):
    if not os.path.exists(os.path.join(tars, name)):
      raise UserError(f"{os.path.join(tars, name)} not found (download the ILSVRC2012 tars from "
                      f"image-net.org into {tars})")
  synsets, val_labels = imagenet_label_files()
  synset_ids = {s: i for i, s in enumerate(synsets)}
  started = time.time()
  # Both tars listed before anything is written: a bad one ends the run at once, not after the other.
  members = _tar_file_names(os.path.join(tars, TRAIN_TAR))
  names = _tar_file_names(os.path.join(tars, VAL_TAR))
  if len(names) > len(val_labels):
    raise UserError(f"{VAL_TAR} holds {len(names)} images, TFDS knows labels for {len(val_labels)}")
  out = prepared_source.prepared_dir(data_dir, "imagenet2012", size)
  os.makedirs(out, exist_ok=True)

  train_tasks = [(i, len(members), m) for i, m in enumerate(members)]
  fn = functools.partial(_train_task, tars=tars, out=out, size=size, quality=quality, synset_ids=synset_ids)
  train_counts = _run(train_tasks, fn, workers, "train")

  labelled = [(n, synset_ids[val_labels[i]]) for i, n in enumerate(names)]  # by position in sorted order
  chunks = [labelled[i:i + VAL_SHARD] for i in range(0, len(labelled), VAL_SHARD)]
  fn = functools.partial(_val_task, tars=tars, out=out, size=size, quality=quality)
  val_counts = _run([(i, len(chunks), c) for i, c in enumerate(chunks)], fn, workers, "validation")

  _finish(out, synsets, size, quality, workers, f"ILSVRC2012 tars in {tars}", train_counts[1] + val_counts[1], started)
  return out


@contextlib.contextmanager
def _imagenet_extra_named():
  """A module of the [imagenet] extra that TFDS misses ends in one line saying how to install it; any
  other missing module is a bug, left to its traceback."""
  try:
    yield
  except ModuleNotFoundError as error:
    if (error.name or "").split(".")[0] not in IMAGENET_EXTRA_MODULES:
      raise
    raise UserError(f"TFDS needs the module {error.name} for this: pip install -e \".[imagenet]\"") from None


def _built_tfds_builder(name: str, data_dir: str):
  """TFDS's builder of ``name``, which must be built in ``data_dir`` already: nothing downloads unasked."""
  import tensorflow_datasets as tfds  # here: ~1 s of imports (more beside TensorFlow) only TFDS users pay

  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError:
    raise UserError(f"TFDS has no dataset '{name}' (tfds.list_builders() lists them)") from None
  if not builder.is_prepared():
    how = (f"--tars=DIR_WITH_THE_TWO_ILSVRC2012_TARS instead (no TensorFlow needed), or tfds build {name} "
           f"--data_dir={data_dir} after pip install -e \".[imagenet]\"" if name == "imagenet2012" else
           f"python -c \"import tensorflow_datasets as tfds; tfds.builder('{name}', data_dir='{data_dir}')"
           f".download_and_prepare()\"")
    raise UserError(f"TFDS dataset '{name}' is not built in {data_dir}; build it first with: {how}")
  return builder


def prepare_from_tfds(name: str, data_dir: str, size: int = 256, quality: int = 90, workers: int = 0,
                      splits: tuple[str, str] = ("train", "validation")) -> str:
  with _imagenet_extra_named():
    return _prepare_from_tfds(name, os.path.expanduser(data_dir), size, quality, workers, splits)


def _prepare_from_tfds(name, data_dir, size, quality, workers, splits) -> str:
  import tensorflow_datasets as tfds  # here: ~1 s of imports (more beside TensorFlow) only TFDS users pay

  builder = _built_tfds_builder(name, data_dir)
  out = prepared_source.prepared_dir(data_dir, name, size)
  os.makedirs(out, exist_ok=True)
  started, tasks = time.time(), []
  for split, written_as in zip(splits, ("train", "validation")):
    total = len(tfds.data_source(name, split=split, data_dir=data_dir, download=False))
    count = max(1, -(-total // TFDS_SHARD))
    tasks += [(split, i, count, i * TFDS_SHARD, min(total, (i + 1) * TFDS_SHARD)) for i in range(count)]
  fn = functools.partial(_tfds_task, name=name, data_dir=data_dir, out=out, size=size, quality=quality)
  written, skipped = _run(tasks, fn, workers, name)
  _finish(out, tuple(builder.info.features["label"].names), size, quality, workers, f"TFDS {name}", skipped, started)
  return out


def _finish(out, class_names, size, quality, workers, origin, skipped, started) -> None:
  stats_path = os.path.join(out, "stats.npz")
  if not os.path.exists(stats_path):
    shards = sorted(os.path.join(out, n) for n in os.listdir(out) if n.startswith("train-") and n.endswith(".array_record"))
    accumulator = stats_lib.StatsAccumulator()
    with _parallel_map(functools.partial(_shard_stats, size=size), shards, workers) as parts:
      for part in tqdm(parts, total=len(shards), desc="statistics", unit="file"):
        accumulator.merge(part)
    accumulator.result().save(stats_path)
  with open(os.path.join(out, "classes.txt"), "w") as f:
    f.write("\n".join(class_names) + "\n")
  info = {"size": size, "quality": quality, "origin": origin, "num_train": _count_records(out, "train"),
          "num_validation": _count_records(out, "validation"), "skipped_images": skipped}
  with open(os.path.join(out, "info.json.tmp"), "w") as f:
    json.dump(info, f, indent=1)
  os.replace(os.path.join(out, "info.json.tmp"), os.path.join(out, "info.json"))
  print(f"prepared {info['num_train']:,} training and {info['num_validation']:,} validation images in {out} "
        f"({time.time() - started:.0f} s; {skipped} unreadable skipped)")
