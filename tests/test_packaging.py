"""A plain (non-editable) install works outside the checkout: the configs ship inside the package, and
``--config=configs/NAME.py`` finds the bundled copy where the working directory has none; the demo's digits
ship too, and load without scikit-learn."""

import os
import shutil
import subprocess
import sys
import zipfile

from conftest import ROOT


def test_a_wheel_installed_elsewhere_runs_the_commands_with_the_bundled_configs(
    tmp_path,
):
  wheels, site, elsewhere, source = (
      tmp_path / name for name in ("wheels", "site", "elsewhere", "source")
  )
  elsewhere.mkdir()
  # A copy without build outputs: setuptools reuses a build/ directory, which may hold another version's files.
  shutil.copytree(
      ROOT,
      source,
      ignore=shutil.ignore_patterns(
          ".venv",
          "build",
          ".git",
          "*.egg-info",
          "runs",
          "__pycache__",
          ".pytest_cache",
      ),
  )
  build = subprocess.run(
      [
          sys.executable,
          "-m",
          "pip",
          "wheel",
          "-q",
          "--no-deps",
          str(source),
          "-w",
          str(wheels),
      ],
      capture_output=True,
      text=True,
      timeout=600,
      cwd=tmp_path,
  )
  assert build.returncode == 0, build.stderr[-3000:]
  (wheel,) = wheels.glob("alexnet_jax-*.whl")
  with zipfile.ZipFile(wheel) as archive:
    names = set(archive.namelist())
    metadata = archive.read(
        next(n for n in names if n.endswith(".dist-info/METADATA"))
    ).decode()
  assert {
      "alexnet_jax/data/digits.csv.gz",
      "alexnet_jax/data/DIGITS-LICENSE.txt",
  } <= names
  hard = [
      line
      for line in metadata.splitlines()
      if line.startswith("Requires-Dist:") and "extra ==" not in line
  ]
  # extras only
  assert not [
      line for line in hard if "scikit-learn" in line or "matplotlib" in line
  ], hard
  install = subprocess.run(
      [
          sys.executable,
          "-m",
          "pip",
          "install",
          "-q",
          "--no-deps",
          "--target",
          str(site),
          str(wheel),
      ],
      capture_output=True,
      text=True,
      timeout=600,
  )
  assert install.returncode == 0, install.stderr[-3000:]
  assert {p.name for p in (site / "alexnet_jax" / "configs").glob("*.py")} >= {
      "paper.py",
      "demo.py",
      "torchvision.py",
      "caffe.py",
  }
  env = {**os.environ, "PYTHONPATH": str(site)}
  summary = subprocess.run(
      [
          sys.executable,
          "-m",
          "alexnet_jax.summary",
          "--config=configs/paper.py",
      ],
      cwd=elsewhere,
      capture_output=True,
      text=True,
      timeout=600,
      env=env,
  )
  assert summary.returncode == 0, summary.stderr[-3000:]
  assert "60,965,224" in summary.stdout
  loaded = subprocess.run(
      [
          sys.executable,
          "-c",
          "import alexnet_jax.config_files as c; "
          "print(c.CONFIG_DIR); print(c.load('demo').model.image_size)",
      ],
      cwd=elsewhere,
      capture_output=True,
      text=True,
      timeout=600,
      env=env,
  )
  assert loaded.returncode == 0, loaded.stderr[-3000:]
  config_dir, image_size = loaded.stdout.split()
  # the installed copy
  assert (
      config_dir == str(site / "alexnet_jax" / "configs") and image_size == "64"
  )
  missing = subprocess.run(
      [
          sys.executable,
          "-m",
          "alexnet_jax.summary",
          "--config=configs/nosuch.py",
      ],
      cwd=elsewhere,
      capture_output=True,
      text=True,
      timeout=600,
      env=env,
  )
  assert (
      missing.returncode != 0 and "Traceback" not in missing.stderr
  ), missing.stderr[-3000:]
  # The demo's data from the installed copy, with sklearn unimportable (None in sys.modules: ImportError).
  demo = subprocess.run(
      [
          sys.executable,
          "-c",
          "import sys; sys.modules['sklearn'] = None; "
          "from alexnet_jax.data import digits; s = digits.load(64); "
          "print(digits.__file__, len(s.train), len(s.eval), s.eval.labels[:5].tolist())",
      ],
      cwd=elsewhere,
      capture_output=True,
      text=True,
      timeout=600,
      env=env,
  )
  assert demo.returncode == 0, demo.stderr[-3000:]
  module, *counts = demo.stdout.strip().split(maxsplit=3)
  assert module == str(site / "alexnet_jax" / "data" / "digits.py")
  assert counts == ["1437", "360", "[7, 6, 3, 7, 7]"], counts
