#!/usr/bin/env bash
# One prepared run of every GPU figure in the README's Performance section (docs/performance.md,
# "The GPU script"): alexnet_jax and PyTorch side by side on one GPU, end to end through grain, and a
# profiler trace. Each row prints one JSON object and appends it to $OUT/gpu_results.jsonl; each
# command's whole output goes to $OUT/gpu_log.txt. A row that fails or runs past its time limit
# prints a row with an "error" field, and the script goes on. Made to finish within 8 minutes on one
# H100/H200 (BUDGET seconds for all rows; a row that would start too late is written as skipped).
#
# On a lent GPU machine (the device tool sends the working tree; see its README), after
# `bash benchmarks/gpu_wheels.sh` here put the missing wheels in .whl/:
#
#   run(command="bash benchmarks/gpu.sh", carry=[".whl"], timeout_s=600)
#
# Its files come back from $OUT: gpu_results.jsonl, gpu_log.txt, profile.tar.gz. To rerun some rows
# only (the device time left after a first run allows about 5 more minutes):
#
#   run(command="ROWS=jax-paper-b128,torch-paper-compile-b128 bash benchmarks/gpu.sh", carry=[".whl"], timeout_s=600)
#
# Here, on the CPU, before any GPU minute is spent (tiny batches, one step, the same commands):
#
#   SMOKE=1 bash benchmarks/gpu.sh      # results in ./gpu_results/ unless OUT is set
#
# Settings (environment): OUT (default ./gpu_results), PYTHON (default python3), BUDGET (seconds for
# all rows; 450 on the GPU, 3600 with SMOKE=1), ROWS (comma-separated row names to run; default all),
# SYNTHETIC (JPEGs for the end-to-end row; 4000), WORKERS (grain workers there; 15).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT_DIR=${OUT:-$ROOT/gpu_results}
mkdir -p "$OUT_DIR"
RESULTS=$OUT_DIR/gpu_results.jsonl
LOG=$OUT_DIR/gpu_log.txt
PY=${PYTHON:-python3}
SMOKE=${SMOKE:-0}
ROWS=${ROWS:-}
START=$SECONDS
export PYTHONUNBUFFERED=1
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

# The wheels the GPU machine lacks (benchmarks/gpu_wheels.sh), installed once per fresh machine.
if [[ -d .whl ]] && ! "$PY" -c "import grain, ml_collections, array_record, simplejpeg, tensorboardX, portpicker" 2>/dev/null; then
  site=${TMPDIR:-/tmp}/alexnet_jax_site
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" .whl/*.whl >>"$LOG" 2>&1 ||
    echo "wheel install failed: see $LOG" >&2
  export PYTHONPATH="$PYTHONPATH:$site"
fi

if [[ $SMOKE == 1 ]]; then
  # The CPU: the same rows, tiny.
  BUDGET=${BUDGET:-3600} SLOWER=4 # each row's time limit x4 on 2 CPU cores
  export JAX_PLATFORMS=cpu
  DEVICE=cpu SMALL=2 LARGE=4 STEPS="--steps=1 --repeats=1"
  SYNTHETIC=${SYNTHETIC:-16} WORKERS=${WORKERS:-2}
  PROFILE="--config.batch_size=2 --config.num_train_steps=4 --config.log_every_steps=1 --config.profile_steps=2 --config.eval_every_steps=4 --config.checkpoint_every_steps=4"
  INPUT="--batches=1 --config.batch_size=4"
else
  BUDGET=${BUDGET:-450} SLOWER=1
  DEVICE=cuda SMALL=128 LARGE=1024 STEPS=""
  SYNTHETIC=${SYNTHETIC:-4000} WORKERS=${WORKERS:-15}
  PROFILE="--config.batch_size=128 --config.num_train_steps=12 --config.log_every_steps=4 --config.profile_steps=3 --config.eval_every_steps=12 --config.checkpoint_every_steps=12"
  INPUT="--batches=20 --config.batch_size=256"
fi
# One XLA compilation cache for the run: the end-to-end row reuses the program of the train-step row
# before it (so its compile_seconds is a cache load).
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-${TMPDIR:-/tmp}/alexnet_jax_gpu_xla_cache}

# row NAME TIME_LIMIT_S COMMAND...: runs COMMAND under a time limit, then prints and appends one JSON
# object: the command's last JSON line under "result", or an "error".
row() {
  local name=$1 limit=$2
  shift 2
  if [[ -n $ROWS && ",$ROWS," != *",$name,"* ]]; then
    return 0
  fi
  local left=$((BUDGET - (SECONDS - START))) rc began=$SECONDS
  limit=$((limit * SLOWER))
  local output
  output=$(mktemp)
  if ((left < 30)); then
    echo "${left}s of the ${BUDGET}s budget left" >"$output"
    rc=skipped
  else
    ((limit > left)) && limit=$left
    echo "=== $name (limit ${limit}s): $*" >>"$LOG"
    timeout -k 10 "$limit" "$@" >"$output" 2>&1
    rc=$?
    ((rc == 124 || rc == 137)) && rc="timeout after ${limit}s"
    cat "$output" >>"$LOG"
    echo "=== $name: status $rc, $((SECONDS - began)) s" >>"$LOG"
  fi
  "$PY" - "$name" "$rc" "$output" "$*" "$((SECONDS - began))" <<'EOF' | tee -a "$RESULTS"
import json, sys, time

name, rc, path, command, seconds = sys.argv[1:6]
lines = open(path, errors="replace").read().splitlines()
result = None
for line in reversed(lines):
  if line.startswith("{"):
    try:
      result = json.loads(line)
      break
    except ValueError:
      pass
if "\n" in command:  # the environment row's script, the profile row's: in the log
  command = command.split("\n")[0] + " ... (gpu_log.txt)"
row = {"row": name, "command": command, "status": rc, "seconds": int(seconds),
       "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
tail = " | ".join(l.strip() for l in lines if l.strip())[-600:]
if rc != "0":
  row["error"] = f"{rc}: {tail}" if not rc.isdigit() else f"exit status {rc}: {tail}"
elif result is None:
  row["error"] = f"no JSON line in the output: {tail}"
if result is not None:
  row["result"] = result
print(json.dumps(row))
EOF
  rm -f "$output"
}

# --- what ran where: date, GPU, driver, versions, the commit
ENVIRONMENT='
import importlib.metadata, json, os, platform, subprocess, time
def version(name):
  try:
    return importlib.metadata.version(name)
  except Exception as error:
    return f"unavailable ({type(error).__name__})"
def run(*command):
  try:
    return subprocess.run(command, capture_output=True, text=True, timeout=30).stdout.strip()
  except Exception as error:
    return f"unavailable ({type(error).__name__})"
info = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "smoke": os.environ.get("SMOKE") == "1",
        "gpu": run("nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit", "--format=csv,noheader"),
        "cpu_count": os.cpu_count(), "python": platform.python_version(),
        "commit": run("git", "rev-parse", "HEAD") or "unknown (no git here)",
        "uncommitted_files": len(run("git", "status", "--porcelain").splitlines())}
for name in ("jax", "jaxlib", "jax-cuda13-plugin", "flax", "optax", "orbax-checkpoint", "grain", "numpy", "torch", "triton", "simplejpeg"):
  info[name] = version(name)
try:
  import jax
  info["jax_devices"] = [d.device_kind for d in jax.devices()]
except Exception as error:
  info["jax_devices"] = f"unavailable ({type(error).__name__}: {error})"
try:
  import torch
  info["torch_cuda"] = torch.version.cuda
  info["torch_device"] = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
  info["cudnn"] = torch.backends.cudnn.version()
except Exception as error:
  info["torch_device"] = f"unavailable ({type(error).__name__})"
print(json.dumps(info))
'
{ echo "=== $(date -u +%FT%TZ) gpu.sh (SMOKE=$SMOKE, budget ${BUDGET}s)"; nvidia-smi 2>&1; } >>"$LOG"
row env 60 "$PY" -c "$ENVIRONMENT"

# --- the rows, most wanted first: the budget cuts from the end
JAX=("$PY" -m alexnet_jax.benchmark)
BF16=--config.model.dtype=bfloat16 # after --config (ml_collections reads the file first)
TORCHVISION=(--config=configs/torchvision.py $BF16)
PAPER=(--config=configs/paper.py $BF16 --config.mesh.model=1) # both towers on the one GPU
TORCH=("$PY" benchmarks/torch_alexnet.py --device=$DEVICE --bf16 --channels_last $STEPS)

# shellcheck disable=SC2086  # $STEPS: flags, split on purpose
torch_rows() { # torch_rows BATCH MODE(eager|compile) TIME_LIMIT NAME_SUFFIX
  local batch=$1 mode=$2 limit=$3 flag=""
  [[ $mode == compile ]] && flag=--compile
  row "torch-torchvision-$mode-b$4" "$limit" "${TORCH[@]}" --net=torchvision --batch_size=$batch $flag
  row "torch-paper-$mode-b$4" "$limit" "${TORCH[@]}" --net=paper --batch_size=$batch $flag
}

# shellcheck disable=SC2086
{
  # Batch 1024: the README table's rows. The JAX step (its JSON: train/eval images/s, compile, MFU),
  # then PyTorch's same step, channels_last + bf16 autocast, eager and torch.compile.
  row jax-torchvision-b1024 120 "${JAX[@]}" "${TORCHVISION[@]}" --config.batch_size=$LARGE $STEPS
  row jax-paper-b1024 120 "${JAX[@]}" "${PAPER[@]}" --config.batch_size=$LARGE $STEPS
  # The same with conv1 and conv3 as one op for both towers (model.shared_input_convs): the layout
  # to pick per platform once this row is measured against the one above.
  row jax-paper-one-op-b1024 120 "${JAX[@]}" "${PAPER[@]}" --config.batch_size=$LARGE $STEPS \
    --config.model.shared_input_convs=one_op
  torch_rows $LARGE eager 60 1024
  torch_rows $LARGE compile 150 1024
  # End to end: the same torchvision-layout step fed by grain (WORKERS processes) from SYNTHETIC
  # photo-like 256x256 JPEGs (decode, random crop, flip, lighting draws), placed 2 batches ahead.
  row jax-end-to-end-b1024 180 "${JAX[@]}" "${TORCHVISION[@]}" --config.batch_size=$LARGE \
    --synthetic=$SYNTHETIC --config.data.num_workers=$WORKERS $STEPS
  # A profiler trace of 3 training steps of the paper's net (main's --config.profile_steps) on the
  # bundled digits at 224x224 (10 classes; one eval view, as only the training steps are traced),
  # copied to $OUT/profile.tar.gz.
  row jax-profile-paper-b128 150 bash -c '
    set -euo pipefail
    workdir=$(mktemp -d)
    '"$PY"' -m alexnet_jax.main --config=configs/paper.py --workdir="$workdir" --config.mesh.model=1 \
      --config.model.dtype=bfloat16 --config.data.source=digits --config.model.num_classes=10 \
      --config.dead_network_steps=0 --config.data.eval_views=1 '"$PROFILE"'
    trace=$(ls -d "$workdir"/plugins/profile/*/ | tail -1)
    tar -czf '"$OUT_DIR"'/profile.tar.gz -C "$trace" .
    '"$PY"' -c "import json, os, sys; n = os.path.getsize(sys.argv[1]); print(json.dumps({\"profile\": \"profile.tar.gz\", \"bytes\": n, \"comes_back\": n <= 16 * 2**20, \"files\": sorted(os.listdir(sys.argv[2]))}))" '"$OUT_DIR"'/profile.tar.gz "$trace"
    rm -rf "$workdir"'
  # Batch 128 (the paper's): the same comparisons.
  row jax-torchvision-b128 120 "${JAX[@]}" "${TORCHVISION[@]}" --config.batch_size=$SMALL $STEPS
  row jax-paper-b128 120 "${JAX[@]}" "${PAPER[@]}" --config.batch_size=$SMALL $STEPS
  torch_rows $SMALL eager 60 128
  torch_rows $SMALL compile 150 128
  # The host pipeline alone (0 workers, 1 worker, WORKERS workers): what limits the end-to-end row.
  row jax-input-pipeline 120 "${JAX[@]}" --config=configs/torchvision.py --input_only \
    --synthetic=$SYNTHETIC --workers=$WORKERS $INPUT
}
echo "gpu.sh: $(wc -l <"$RESULTS") rows in $RESULTS (this run: $((SECONDS - START)) s)" | tee -a "$LOG"
