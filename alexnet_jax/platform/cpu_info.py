"""Which CPU a figure was measured on: XLA:CPU's and PyTorch's speed differ by CPU kind (AVX2 against
AVX-512 with AMX), so every benchmark row and run record names it."""

from __future__ import annotations

import functools
import os
import platform

# The instruction sets that decide which kernels XLA, Eigen and oneDNN pick.
_FEATURES = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


@functools.cache
def describe(cpuinfo: str = "/proc/cpuinfo") -> dict:
  """``{"model": ..., "features": [...], "cores": N}`` from Linux's cpuinfo; elsewhere the model from
  ``platform.processor()`` and no feature list."""
  model, flags = None, set()
  if os.path.exists(cpuinfo):
    with open(cpuinfo) as f:
      for line in f:
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model is None:
          model = value.strip()
        elif key == "flags" and not flags:
          flags = set(value.split())
        if model is not None and flags:
          break
  return {
      "model": model or platform.processor() or platform.machine(),
      "features": [f for f in _FEATURES if f in flags],
      "cores": os.cpu_count(),
  }
