"""What every command-line tool shares: absl flag parsing that ends a bad flag in one line."""

import os
import sys
import traceback

from absl import app, flags, logging
from ml_collections import config_flags

from alexnet_jax import config_files
from alexnet_jax.errors import UserError
from alexnet_jax.platform import host_memory


def parse_flags(argv):
  """absl's parser, but a bad flag or ``--config.KEY`` override, or an error in the config file itself, ends
  in one line instead of a traceback."""
  argv = _bundled_configs(argv)
  try:
    return flags.FLAGS(argv)
  # one that is not the user's is raised again as it was
  except Exception as error:
    message = _parse_error_message(error, argv)
    if message is None:
      raise
    raise SystemExit(f"alexnet_jax: {message}") from None


def _bundled_configs(argv: list[str]) -> list[str]:
  """``--config=configs/NAME.py[:arg]`` names the bundled copy when the working directory has none."""
  out = []
  for arg in argv:
    if arg.startswith("--config="):
      path, colon, rest = arg[len("--config=") :].partition(":")
      copy = config_files.bundled(path)
      if copy:
        arg = f"--config={copy}{colon}{rest}"
    out.append(arg)
  return out


def _parse_error_message(error: Exception, argv) -> str | None:
  """One line for an error of flag parsing, None for one that is not the user's."""
  path = _config_path(argv)
  found = _raised_in_file(error, path) if path else None
  if found:  # raised by the config file's own code: not an override's fault
    frame, cause = found
    return f"error in --config={path} line {frame.lineno} ({frame.name}): {_exception_line(cause)}"
  if isinstance(error, flags.Error):
    message = str(error)
    # ml_collections' traceback of its get_config call
    if path and "Error whilst parsing config file:" in message:
      return f"cannot load --config={path}: {message.strip().splitlines()[-1].strip()}"
    return message
  if isinstance(error, SyntaxError):  # a config file that does not parse
    return f"cannot load --config={error.filename}: {error.msg} (line {error.lineno})"
  if isinstance(error, (AttributeError, KeyError, TypeError, ValueError)):
    detail = " ".join(
        str(error).replace("\\n", " ").replace("\\'", "").strip("'\"").split()
    )
    return f"bad config override: {detail}"
  return None


def _config_path(argv) -> str | None:
  """The ``--config`` file named in ``argv`` (the last one, as absl takes), less a ``:argument``."""
  path = None
  for i, arg in enumerate(argv[1:], 1):
    if arg.startswith("--config="):
      path = arg[len("--config=") :]
    elif arg == "--config" and i + 1 < len(argv):
      path = argv[i + 1]
  return path.split(":", 1)[0] if path else None


def _raised_in_file(error: BaseException, path: str):
  """``(frame, exception)``: the deepest frame in file ``path`` among the tracebacks of ``error`` and the
  exceptions it wraps (ml_collections and absl raise a config file's TypeError or ValueError again as
  others), or None when that file's code is not in them (a bad override, a file that does not parse).
  """
  target, seen = os.path.realpath(path), set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    frames = [
        f
        for f in traceback.extract_tb(error.__traceback__)
        if os.path.realpath(f.filename) == target
    ]
    if frames:
      return frames[-1], error
    error = error.__cause__ or error.__context__
  return None


def _exception_line(error: BaseException) -> str:
  """``Type: message`` on one line. ConfigDict quotes a missing key itself (and wraps that KeyError in an
  AttributeError for ``config.key``): its message is shown once quoted, not as the repr of a quoted string.
  """
  inner = (
      error.args[0]
      if isinstance(error, AttributeError) and len(error.args) == 1
      else error
  )
  if (
      isinstance(inner, KeyError)
      and len(inner.args) == 1
      and str(inner.args[0])[:1] in ("'", '"')
  ):
    detail = str(inner.args[0])
  else:
    detail = str(error)
  detail = " ".join(detail.split())
  return f"{type(error).__name__}: {detail}" if detail else type(error).__name__


def _check_config_loaded() -> None:
  """ml_collections defers a config file's load error until the config is first read, deep inside the
  run; end here instead, in one line (a missing file, or the file's own exception).
  """
  if "config" not in flags.FLAGS or flags.FLAGS["config"].value is None:
    return
  try:
    flags.FLAGS.config.keys()
  except OSError as error:
    cause = str(error.__cause__ or error).strip().splitlines()[-1].strip()
    raise SystemExit(
        f"alexnet_jax: cannot load --config={flags.FLAGS['config'].config_filename}: {cause}"
    ) from None


def define_weights_flags() -> None:
  """``--config``, ``--checkpoint`` and ``--weights``: the flags of the tools that read a network's weights
  (predict, visualize)."""
  config_flags.DEFINE_config_file(
      "config",
      None,
      "Config of the network (default: the work directory's run.json, or configs/torchvision.py or "
      "configs/caffe.py for --weights); checked against the run.",
  )
  flags.DEFINE_string(
      "checkpoint",
      None,
      "A work directory (or its checkpoints/) of this project.",
  )
  flags.DEFINE_string(
      "weights",
      None,
      "Imported weights: torchvision's .pth or Caffe's bvlc_alexnet.npy.",
  )


def define_distributed_flags() -> None:
  """``--coordinator_address``, ``--num_processes``, ``--process_id``: several processes (a GPU cluster),
  for :func:`initialize_distributed`."""
  flags.DEFINE_string(
      "coordinator_address",
      None,
      "HOST:PORT of process 0, for multi-process runs.",
  )
  flags.DEFINE_integer(
      "num_processes", None, "Number of processes in a multi-process run."
  )
  flags.DEFINE_integer(
      "process_id", None, "This process's index in a multi-process run."
  )


def _cluster_detected() -> bool:
  """A multi-host TPU slice or a SLURM job of several tasks: jax.distributed finds the peers itself."""
  slurm_tasks = int(os.environ.get("SLURM_NTASKS", "1") or 1)
  tpu_hosts = os.environ.get("TPU_WORKER_HOSTNAMES", "")
  return slurm_tasks > 1 or "," in tpu_hosts


def initialize_distributed() -> None:
  import jax  # after the huge-page restart (cli.run)

  explicit = [
      flags.FLAGS.coordinator_address,
      flags.FLAGS.num_processes,
      flags.FLAGS.process_id,
  ]
  if any(v is not None for v in explicit):
    if any(v is None for v in explicit):
      raise app.UsageError(
          "--coordinator_address, --num_processes and --process_id go together"
      )
    jax.distributed.initialize(
        coordinator_address=flags.FLAGS.coordinator_address,
        num_processes=flags.FLAGS.num_processes,
        process_id=flags.FLAGS.process_id,
    )
  elif _cluster_detected():
    jax.distributed.initialize()


def run(main, huge_pages: bool = False) -> None:
  """``app.run(main)``, where a ``UserError`` from ``main`` ends in one line, and Ctrl-C anywhere in
  ``alexnet_jax: interrupted`` with the shell's status for SIGINT (130). ``huge_pages``: for tools that
  train or time the network, first restart with glibc's huge-page malloc (``platform.host_memory``).
  Those tools (main, benchmark) import JAX and the library in ``main``, after this restart, so that the
  process that restarts itself has not imported them first."""

  def quiet_main(argv):
    if not flags.FLAGS["verbosity"].present:
      # orbax and grain log every step of their work at INFO
      logging.set_verbosity(logging.WARNING)
    _check_config_loaded()
    try:
      return main(argv)
    except UserError as error:
      raise SystemExit(f"alexnet_jax: {error}") from None

  try:
    if huge_pages:
      host_memory.restart_with_huge_page_malloc()
    app.run(quiet_main, flags_parser=parse_flags)
  except KeyboardInterrupt:
    print("alexnet_jax: interrupted", file=sys.stderr)
    raise SystemExit(130) from None
