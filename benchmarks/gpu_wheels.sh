#!/usr/bin/env bash
# The Python packages benchmarks/gpu.sh needs that the lent GPU machine lacks, as wheels for its
# Python (3.12, x86-64), into .whl/ (ignored by .gitignore), to travel with the device tool's `carry`.
# Run it here, from anywhere, once; gpu.sh installs them there (the device tool's README, "Notes").
#
# The GPU machine's image already has jax 0.11.2 (CUDA 13), jaxlib, flax, optax, orbax-checkpoint,
# chex, etils, absl-py, numpy, pillow, protobuf, PyYAML, cloudpickle, tqdm, torch and torchvision
# (the device tool's notes on the machine). Missing there, and needed by `python -m alexnet_jax.benchmark`
# and `python -m alexnet_jax.main`: grain (with array-record and portpicker), ml_collections,
# simplejpeg (the JPEG decoder of the end-to-end row) and tensorboardX. tensorflow-datasets is not
# needed (imported only for data.source='tfds'). Versions: the ones this project's CI resolves
# (the project's stack notes). About 5 MB in all; the device tool carries at most 64 MiB.
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=(
  grain==0.2.18
  array-record==0.8.6
  portpicker==1.6.0
  ml_collections==1.1.0
  simplejpeg==1.9.0
  tensorboardX==2.6.5
)
mkdir -p .whl
for wheel in "${WHEELS[@]}"; do
  python3 -m pip download -q --no-deps --only-binary=:all: \
    --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
    -d .whl "$wheel"
done
ls -l .whl
du -sh .whl
