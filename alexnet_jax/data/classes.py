"""Readable class names: ImageNet's 1,000 (bundled, no download) and any dataset's own."""

from __future__ import annotations

import functools
import os

IMAGENET_FILE = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "imagenet_classes.tsv"
)


@functools.cache
def imagenet() -> tuple[tuple[str, str], ...]:
  """``(WordNet id, name)`` for ILSVRC-2012's classes in index order (sorted ids: TFDS, torchvision, Caffe)."""
  with open(IMAGENET_FILE) as f:
    rows = [
        line.rstrip("\n").split("\t")
        for line in f
        if line.strip() and not line.startswith("#")
    ]
  return tuple((wnid, name) for wnid, name in rows)


def readable(class_names) -> list[str]:
  """A dataset's class names with ImageNet's WordNet ids (n01440764...) replaced by their names."""
  names = dict(imagenet())
  return [names.get(name, name) for name in class_names]
