"""Command-line mistakes end in one line: a config file that raises, a bad override, an impossible
benchmark config, a figure name PIL cannot write, and Ctrl-C."""

import subprocess
import sys

import pytest

from alexnet_jax.errors import UserError
from conftest import ROOT, run_cli, tiny_flags

# get_config() that raises on its line 6.
RAISING_CONFIG = (
    "from alexnet_jax import config_files\n\n\n"
    "def get_config():\n  config = config_files.load('demo')\n  return {}\n"
)


@pytest.mark.parametrize(
    "expression, error",
    [
        ("config['missing_key']", "KeyError: 'missing_key'"),
        ("config.model.nonexistent", "AttributeError: "),
        (
            "int('abc')",
            "ValueError: invalid literal for int() with base 10: 'abc'",
        ),
    ],
)
def test_an_error_in_get_config_names_the_file_line_and_exception(
    tmp_path, expression, error
):
  config = tmp_path / "my.py"
  config.write_text(RAISING_CONFIG.format(expression))
  done = run_cli("alexnet_jax.summary", f"--config={config}")
  assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[
      -3000:
  ]
  last = done.stderr.strip().splitlines()[-1]
  assert last.startswith(
      f"alexnet_jax: error in --config={config} line 6 (get_config): {error}"
  ), last


def test_an_error_at_a_config_files_top_level_names_its_line(tmp_path):
  config = tmp_path / "my.py"
  config.write_text("import os\nimport no_such_module_here\n")
  done = run_cli("alexnet_jax.summary", f"--config={config}")
  assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[
      -3000:
  ]
  assert done.stderr.strip().splitlines()[-1] == (
      f"alexnet_jax: error in --config={config} line 2 (<module>): "
      "ModuleNotFoundError: No module named 'no_such_module_here'"
  )


def test_a_config_argument_get_config_does_not_take_gives_one_line():
  done = run_cli("alexnet_jax.summary", "--config=configs/demo.py:extra")
  assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[
      -3000:
  ]
  assert done.stderr.strip().splitlines()[-1] == (
      "alexnet_jax: cannot load --config=configs/demo.py: "
      "TypeError: get_config() takes 0 positional arguments but 1 was given"
  )


@pytest.mark.parametrize(
    "override, message",
    [
        (
            "--config.model.nosuchkey=1",
            "alexnet_jax: bad config override: nosuchkey",
        ),
        (
            "--config.batch_size=abc",
            "alexnet_jax: flag --config.batch_size=abc: invalid literal for int() with base 10: 'abc'",
        ),
    ],
)
def test_a_bad_override_keeps_its_message(override, message):
  done = run_cli("alexnet_jax.summary", "--config=configs/demo.py", override)
  assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[
      -3000:
  ]
  assert done.stderr.strip().splitlines()[-1] == message


@pytest.mark.parametrize(
    "mode",
    [
        ["--steps=1", "--repeats=1"],
        # makes no mesh: one that cannot be is no error
        ["--input_only", "--batches=1", "--config.mesh.model=3"],
    ],
)
def test_benchmark_validates_its_config_first(mode):
  done = run_cli(
      "alexnet_jax.benchmark", *tiny_flags(), "--config.batch_size=0", *mode
  )
  assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[
      -3000:
  ]
  assert (
      done.stderr.strip().splitlines()[-1]
      == "alexnet_jax: batch_size=0 must be positive"
  )


def test_figure_names_without_an_extension_get_png():
  from alexnet_jax import visualize

  assert visualize.output_path("figures/filters") == "figures/filters.png"
  assert visualize.output_path("filters.JPG") == "filters.JPG"
  with pytest.raises(UserError, match=r"--out=filters\.xyz: .*\.png"):
    visualize.output_path("filters.xyz")


def test_visualize_checks_out_before_loading_the_checkpoint(tmp_path):
  out = tmp_path / "filters.xyz"
  done = run_cli(
      "alexnet_jax.visualize",
      "filters",
      "--config=configs/demo.py",
      f"--checkpoint={tmp_path / 'none'}",
      f"--out={out}",
  )
  assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[
      -3000:
  ]
  last = done.stderr.strip().splitlines()[-1]
  assert (
      last.startswith(f"alexnet_jax: --out={out}: ") and "extension" in last
  ), last


@pytest.mark.parametrize("where", ["main", "config"])
def test_ctrl_c_ends_in_one_line_with_status_130(tmp_path, where):
  config = tmp_path / "interrupted.py"
  config.write_text("def get_config():\n  raise KeyboardInterrupt\n")
  script = (
      "from absl import flags\nfrom ml_collections import config_flags\nfrom alexnet_jax import cli\n"
      "config_flags.DEFINE_config_file('config', None, 'config')\n\n"
      "def main(argv):\n  raise KeyboardInterrupt\n\ncli.run(main)\n"
  )
  argv = [f"--config={config}"] if where == "config" else []
  done = subprocess.run(
      [sys.executable, "-c", script, *argv],
      cwd=ROOT,
      capture_output=True,
      text=True,
      timeout=120,
  )
  assert done.returncode == 130, done.stderr[-3000:]
  assert done.stderr.strip().splitlines() == ["alexnet_jax: interrupted"]
