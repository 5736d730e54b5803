"""Crops, flips, the 10-crop test and PCA lighting against hand-computed positions and the paper's formulas."""

import jax.numpy as jnp
import numpy as np

from alexnet_jax.data import augment, preprocess, stats as stats_lib


def coordinate_image(size):
  """Pixel (r, c) holds (r, c, 7): every crop tells where it came from."""
  r, c = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
  return np.stack([r, c, np.full_like(r, 7)], axis=-1).astype(np.uint8)


def zero_mean_constants(size):
  return preprocess.constants(
      stats_lib.DatasetStats(
          np.zeros((size, size, 3), np.float32),
          np.ones(3, np.float32),
          np.eye(3, dtype=np.float32),
          1,
      )
  )


def test_random_crop_is_a_window_and_its_mirror():
  # The host cuts the window; the device half mirrors it where the offset says so.
  image = coordinate_image(12)
  flips = set()
  for seed in range(20):
    out = augment.random_crop_flip(
        {"image": image, "label": 0}, np.random.default_rng(seed), 8, True, 0.0
    )
    top, left, flipped = out["offset"]
    assert 0 <= top <= 4 and 0 <= left <= 4
    np.testing.assert_array_equal(
        out["image"], image[top : top + 8, left : left + 8]
    )
    network = np.asarray(
        preprocess.network_input(
            jnp.asarray(out["image"][None]),
            jnp.asarray(out["offset"][None]),
            zero_mean_constants(12),
            1.0,
        )
    )[0]
    rows, cols = network[..., 0], network[..., 1]
    assert np.all(rows == np.arange(top, top + 8)[:, None])
    expected_cols = (
        np.arange(left, left + 8)[::-1]
        if flipped
        else np.arange(left, left + 8)
    )
    assert np.all(cols == expected_cols[None, :])
    flips.add(int(flipped))
  assert flips == {0, 1}


def test_crop_positions_and_flips_are_uniform():
  image = coordinate_image(10)
  draws = [
      augment.random_crop_flip(
          {"image": image, "label": 0}, np.random.default_rng(s), 8, True, 0.0
      )["offset"]
      for s in range(3000)
  ]
  tops, lefts, flips = np.array(draws).T
  # all 256 - 224 + 1 positions, scaled down
  assert set(tops) == {0, 1, 2} and set(lefts) == {0, 1, 2}
  assert abs(flips.mean() - 0.5) < 0.04 and all(
      abs(np.mean(tops == t) - 1 / 3) < 0.04 for t in range(3)
  )


def test_ten_crops_are_the_corners_the_centre_and_their_mirrors():
  image = coordinate_image(10)
  out = augment.eval_views({"image": image, "label": 0}, 6, 10)
  # each window once: the device mirrors them for the other five
  assert out["image"].shape == (5, 6, 6, 3)
  # Top-left pixel of each window, by hand for a 10x10 image and 6x6 crops (centre at 2).
  corners = [(0, 0), (0, 4), (4, 0), (4, 4), (2, 2)]
  assert [tuple(v[0, 0, :2]) for v in out["image"]] == corners
  assert [tuple(o) for o in out["offset"]] == [
      (t, l, f) for f in (0, 1) for t, l in corners
  ]
  # Together the five windows cover every pixel of the image.
  covered = np.zeros((10, 10), bool)
  for top, left in corners:
    covered[top : top + 6, left : left + 6] = True
  assert covered.all()
  centre = augment.eval_views({"image": image, "label": 0}, 6, 1)
  assert centre["image"].shape == (1, 6, 6, 3) and tuple(
      centre["image"][0, 0, 0, :2]
  ) == (2, 2)


def test_device_side_mean_subtraction_uses_the_same_window_and_mirroring():
  rng = np.random.default_rng(0)
  stored = rng.integers(0, 256, (10, 10, 3), dtype=np.uint8)
  mean = rng.normal(100, 20, (10, 10, 3)).astype(np.float32)
  stats = stats_lib.DatasetStats(
      mean, np.ones(3, np.float32), np.eye(3, dtype=np.float32), 1
  )
  # the paper: subtract the mean image, then crop
  centred = stored.astype(np.float32) - mean
  for views in (1, 10):
    out = augment.eval_views({"image": stored, "label": 0}, 6, views)
    got = np.asarray(
        preprocess.views_input(
            jnp.asarray(out["image"][None]),
            jnp.asarray(out["offset"][None]),
            preprocess.constants(stats),
            1.0,
        )
    )
    assert got.shape == (views, 6, 6, 3)
    for view, (top, left, flipped) in zip(got, out["offset"]):
      window = centred[top : top + 6, left : left + 6]
      np.testing.assert_allclose(
          view, window[:, ::-1] if flipped else window, atol=1e-4
      )
    assert sum(out["offset"][:, 2]) == (5 if views == 10 else 0)


def test_pca_lighting_adds_each_principal_component_with_its_own_variance():
  # Paper §4.1: to each pixel add [p1 p2 p3][a1 l1, a2 l2, a3 l3]^T, a_i ~ N(0, s), drawn once per image;
  # the statistics are of pixels in [0, 1], so the shift is x255 in 0..255 units. Along p_i the shift is
  # 255 a_i l_i: variance (255 s l_i)^2 for each of the three components, none correlated with another.
  rng = np.random.default_rng(0)
  q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
  eigenvalues = np.array([0.2, 0.02, 0.004])
  stats = stats_lib.DatasetStats(
      np.zeros((4, 4, 3), np.float32),
      eigenvalues.astype(np.float32),
      q.astype(np.float32),
      1,
  )
  sigma, n = 0.1, 20000
  alphas = np.stack(
      [
          augment.random_crop_flip(
              {"image": np.zeros((4, 4, 3), np.uint8), "label": 0},
              np.random.default_rng(s),
              4,
              False,
              sigma,
          )["alpha"]
          for s in range(n)
      ]
  )
  shifts = np.asarray(
      preprocess.network_input(
          jnp.zeros((n, 4, 4, 3), jnp.uint8),
          jnp.zeros((n, 3), jnp.int32),
          preprocess.constants(stats),
          1.0,
          jnp.asarray(alphas),
      )
  )[:, 0, 0, :]
  # Each image's shift is exactly the paper's sum for its own draws.
  for i in (0, 1, n - 1):
    paper = 255.0 * sum(
        alphas[i, k] * eigenvalues[k] * q[:, k] for k in range(3)
    )
    np.testing.assert_allclose(shifts[i], paper, rtol=1e-4, atol=1e-4)
  # The draws' statistics, component by component: a sample variance of n normal values has a relative
  # standard error sqrt(2 / (n - 1)) (1% here), a sample correlation one of 1 / sqrt(n) (0.7%); 5 of
  # them is the tolerance. Dropping or rescaling any one component moves its variance by far more.
  components = shifts @ q / 255.0  # column k: a_k l_k
  variances = components.var(axis=0, ddof=1)
  np.testing.assert_allclose(
      variances, (sigma * eigenvalues) ** 2, rtol=5 * np.sqrt(2 / (n - 1))
  )
  correlation = np.corrcoef(components, rowvar=False)
  off_diagonal = correlation[~np.eye(3, dtype=bool)]
  assert np.all(np.abs(off_diagonal) < 5 / np.sqrt(n)), correlation
  # Every pixel of an image moves by the same colour: one draw per image, not per pixel.
  one = np.asarray(
      preprocess.network_input(
          jnp.zeros((1, 4, 4, 3), jnp.uint8),
          jnp.zeros((1, 3), jnp.int32),
          preprocess.constants(stats),
          1.0,
          jnp.asarray(alphas[:1]),
      )
  )[0]
  assert np.all(one == one[0, 0])
  np.testing.assert_allclose(one[0, 0], shifts[0], rtol=1e-5)


def test_streamed_statistics_equal_the_batch_ones():
  rng = np.random.default_rng(1)
  pictures = rng.integers(0, 256, (37, 5, 5, 3), dtype=np.uint8)
  whole = stats_lib.StatsAccumulator()
  whole.add(pictures)
  streamed = stats_lib.StatsAccumulator()
  for chunk in np.array_split(pictures, 5):
    part = stats_lib.StatsAccumulator()
    for picture in chunk:
      part.add(picture)
    streamed.merge(part)
  a, b = whole.result(), streamed.result()
  np.testing.assert_allclose(
      a.mean_image, pictures.astype(np.float64).mean(axis=0), rtol=1e-6
  )
  np.testing.assert_allclose(b.mean_image, a.mean_image, rtol=1e-6)
  np.testing.assert_allclose(b.eigenvalues, a.eigenvalues, rtol=1e-5)
  numpy_cov = np.cov((pictures / 255.0).reshape(-1, 3), rowvar=False, bias=True)
  np.testing.assert_allclose(
      a.eigenvalues, np.sort(np.linalg.eigvalsh(numpy_cov))[::-1], rtol=1e-5
  )
