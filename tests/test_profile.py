"""``profile_steps``: a trace of exactly those training steps, where TensorBoard's profile plugin looks."""

import glob
import gzip
import json
import os

from alexnet_jax.training import profiling, train


def _step_calls(trace_file: str) -> int:
  """Calls of the jitted train step in a trace: each call is recorded as nested events (the Python
  dispatch and the runtime's) on one thread, so a call is an event that starts after the last call ended.
  """
  with gzip.open(trace_file) as f:
    events = json.load(f)["traceEvents"]
  calls = sorted(
      (e["ts"], e["dur"])
      for e in events
      if e.get("name") == "PjitFunction(train_step)" and e.get("ph") == "X"
  )
  count, end = 0, float("-inf")
  for start, duration in calls:
    if start >= end:
      count, end = count + 1, start + duration
  return count


def test_profile_steps_traces_those_steps_after_the_first_log_interval(
    tiny_demo_config, tmp_path, capsys
):
  config = tiny_demo_config
  config.num_train_steps, config.log_every_steps = 7, 2
  config.eval_every_steps = config.checkpoint_every_steps = 7
  config.profile_steps = 3
  workdir = str(tmp_path / "run")
  train.train_and_evaluate(config, workdir)
  runs = glob.glob(os.path.join(workdir, "plugins", "profile", "*"))
  assert len(runs) == 1, runs
  assert glob.glob(os.path.join(runs[0], "*.xplane.pb"))
  # Steps 3, 4 and 5: after the first log interval (steps 1-2: compiling), and no more.
  (trace_file,) = glob.glob(os.path.join(runs[0], "*.trace.json.gz"))
  assert _step_calls(trace_file) == 3
  assert f"profiled steps 3-5 into {runs[0]}" in capsys.readouterr().out


def test_profile_steps_0_traces_nothing(tmp_path):
  said = []
  trace = profiling.StepTrace(str(tmp_path), first=2, count=0, say=said.append)
  for step in range(1, 6):
    trace.before(step)
    trace.after(step, None)
  trace.stop(None)
  assert not os.listdir(tmp_path) and not said
