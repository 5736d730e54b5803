"""XLA compile options per platform for the jitted train and eval steps: the settings that measured fastest.

CPU: YNNPACK fusions off, so convolutions run as XLA:CPU's Eigen kernels. Their weight gradients are
3-6x faster than YNNPACK's on AlexNet's layers, and the whole train step 1.4x (README, Performance).
A setting the user already gives in ``XLA_FLAGS`` is left alone; one this jaxlib does not know is dropped
with a one-line warning.
"""

from __future__ import annotations

import functools
import os
import sys

import jax
import jax.numpy as jnp

PLATFORM_OPTIONS = {"cpu": {"xla_cpu_experimental_ynn_fusion_type": ""}}


@functools.cache
def options(platform: str | None = None) -> dict[str, str]:
  """The compile options for ``platform`` (default: JAX's default backend) that this jaxlib accepts."""
  platform = platform or jax.default_backend()
  user_flags = os.environ.get("XLA_FLAGS", "")
  wanted = {
      k: v
      for k, v in PLATFORM_OPTIONS.get(platform, {}).items()
      if k not in user_flags
  }
  if not wanted or platform != jax.default_backend():
    return wanted
  try:
    jax.jit(lambda x: x + 1, compiler_options=wanted)(jnp.zeros(()))
  # a jaxlib that renamed or dropped the option: run with its defaults
  except Exception as e:
    print(
        f"alexnet_jax: XLA options {sorted(wanted)} not accepted ({str(e).splitlines()[0]}); using XLA's defaults",
        file=sys.stderr,
    )
    return {}
  return wanted


def jit(fun, **kwargs):
  """``jax.jit`` with this platform's compile options."""
  return jax.jit(fun, compiler_options=options(), **kwargs)
