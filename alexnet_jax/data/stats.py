"""Training-set statistics the paper's preprocessing needs (§2 and §4.1), computed in one streaming pass.

- the mean image (subtracted from every input);
- the 3x3 covariance of RGB pixel values and its eigenvalues/eigenvectors (PCA lighting). The covariance
  is taken on pixel values scaled to [0, 1]; the lighting (``preprocess``) turns it back into 0..255 units.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
from tqdm import tqdm

from alexnet_jax.errors import TrainingError


@dataclasses.dataclass
class DatasetStats:
  mean_image: np.ndarray  # float32 [S, S, 3], 0..255 units
  # float32 [3], descending, of the RGB covariance on [0, 1] pixels
  eigenvalues: np.ndarray
  eigenvectors: np.ndarray  # float32 [3, 3], column i belongs to eigenvalue i
  num_images: int

  def save(self, path: str, identity: str | None = None) -> None:
    """``identity``: what data these describe (``input_pipeline.data_identity``), checked when reused."""
    # written whole, then renamed: never half a file under the real name
    tmp = path + ".tmp.npz"
    extra = {} if identity is None else {"identity": np.asarray(identity)}
    np.savez(
        tmp,
        mean_image=self.mean_image,
        eigenvalues=self.eigenvalues,
        eigenvectors=self.eigenvectors,
        num_images=self.num_images,
        **extra,
    )
    os.replace(tmp, path)

  @classmethod
  def load(cls, path: str) -> "DatasetStats":
    return cls.load_with_identity(path)[0]

  @classmethod
  def load_with_identity(cls, path: str) -> tuple["DatasetStats", str | None]:
    with np.load(path) as f:
      identity = str(f["identity"]) if "identity" in f.files else None
      return (
          cls(
              f["mean_image"],
              f["eigenvalues"],
              f["eigenvectors"],
              int(f["num_images"]),
          ),
          identity,
      )


class StatsAccumulator:
  """Sums in float64, one image (or batch of images) at a time; equal to the batch formulas."""

  def __init__(self):
    self.count = 0
    self.pixel_count = 0
    self.image_sum = None
    self.rgb_sum = np.zeros(3)
    self.rgb_outer = np.zeros((3, 3))

  def add(self, images: np.ndarray) -> None:
    """``images``: uint8 [N, S, S, 3] or [S, S, 3]."""
    images = np.asarray(images)
    if images.ndim == 3:
      images = images[None]
    as_float = images.astype(np.float64)
    total = as_float.sum(axis=0)
    self.image_sum = total if self.image_sum is None else self.image_sum + total
    pixels = as_float.reshape(-1, 3) / 255.0
    self.rgb_sum += pixels.sum(axis=0)
    self.rgb_outer += pixels.T @ pixels
    self.count += len(images)
    self.pixel_count += len(pixels)

  def merge(self, other: "StatsAccumulator") -> "StatsAccumulator":
    """Adds another accumulator's sums (parallel workers each accumulate a part)."""
    if other.count:
      self.image_sum = (
          other.image_sum
          if self.image_sum is None
          else self.image_sum + other.image_sum
      )
      self.rgb_sum += other.rgb_sum
      self.rgb_outer += other.rgb_outer
      self.count += other.count
      self.pixel_count += other.pixel_count
    return self

  def result(self) -> DatasetStats:
    if not self.count:
      raise ValueError("no images to compute statistics from")
    mean_rgb = self.rgb_sum / self.pixel_count
    covariance = self.rgb_outer / self.pixel_count - np.outer(
        mean_rgb, mean_rgb
    )
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    order = np.argsort(eigenvalues)[::-1]
    return DatasetStats(
        (self.image_sum / self.count).astype(np.float32),
        eigenvalues[order].astype(np.float32),
        eigenvectors[:, order].astype(np.float32),
        self.count,
    )


def compute(source, progress: bool = False) -> DatasetStats:
  """Statistics of every valid image of a source (``source[i]['image']``, uint8 at the stored size)."""
  accumulator = StatsAccumulator()
  indices = range(len(source))
  if progress:
    indices = tqdm(
        indices, desc="training-set statistics", unit="img", mininterval=2.0
    )
  for i in indices:
    record = source[i]
    if record.get("valid", True):
      accumulator.add(record["image"])
  if not accumulator.count:
    raise TrainingError(
        f"none of the {len(source):,} training images could be read (see the warnings above)"
    )
  return accumulator.result()
