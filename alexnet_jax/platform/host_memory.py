"""Transparent huge pages for large host allocations (Linux with glibc 2.35 or later).

XLA:CPU allocates a train step's temporaries afresh on every step (one ~560 MB buffer for AlexNet at
batch 32), and glibc serves allocations that large with fresh ``mmap``s: every step page-faults its whole
working set in, 4 KiB at a time (~140,000 faults and ~0.4 s of kernel time per step on a 2-core CPU).
glibc's ``glibc.malloc.hugetlb=1`` tunable marks those mappings for transparent huge pages (2 MiB): about
1,000 faults a step. glibc reads tunables only when a process starts, so the command-line tools start
themselves again, once, with it set (same process id, same arguments). A ``glibc.malloc.hugetlb`` setting
of the user's own (``=0`` to opt out) is left as it is.
"""

from __future__ import annotations

import os
import sys

TUNABLE = "glibc.malloc.hugetlb"
THP_MODE_FILE = "/sys/kernel/mm/transparent_hugepage/enabled"
# set in the restarted process: never restart twice
RESTARTED = "ALEXNET_JAX_RESTARTED_FOR_HUGE_PAGES"


def _glibc_version() -> tuple[int, ...] | None:
  try:
    name, version = os.confstr("CS_GNU_LIBC_VERSION").split()  # "glibc 2.36"
  except (AttributeError, ValueError, OSError):
    return None  # not glibc (macOS, musl)
  return (
      tuple(int(part) for part in version.split(".")[:2])
      if name == "glibc"
      else None
  )


def _transparent_huge_pages_mode() -> str | None:
  """The kernel's THP mode: 'always', 'madvise' or 'never' (the bracketed word), None if unknown."""
  try:
    with open(THP_MODE_FILE) as f:
      text = f.read()
  except OSError:
    return None
  return text[text.index("[") + 1 : text.index("]")] if "[" in text else None


def huge_page_malloc_possible() -> bool:
  """glibc knows the tunable and the kernel honours madvise(MADV_HUGEPAGE)."""
  version = _glibc_version()
  return (
      version is not None
      and version >= (2, 35)
      and _transparent_huge_pages_mode() in ("always", "madvise")
  )


def _settings(tunables: str) -> list[str]:
  """``GLIBC_TUNABLES``' entries: ``name=value`` separated by colons."""
  return [entry for entry in tunables.split(":") if entry]


def _value(tunables: str, name: str) -> str | None:
  return next(
      (
          entry.partition("=")[2]
          for entry in _settings(tunables)
          if entry.partition("=")[0] == name
      ),
      None,
  )


def tunables_with_huge_pages(current: str) -> str | None:
  """``GLIBC_TUNABLES`` with ``glibc.malloc.hugetlb=1`` added; None if it already sets that tunable."""
  if _value(current, TUNABLE) is not None:
    return None
  return ":".join(_settings(current) + [f"{TUNABLE}=1"])


def huge_page_malloc_enabled() -> bool:
  """Whether this process started with glibc's huge-page malloc on (reported by the benchmark)."""
  return huge_page_malloc_possible() and _value(
      os.environ.get("GLIBC_TUNABLES", ""), TUNABLE
  ) not in (None, "", "0")


def restart_with_huge_page_malloc() -> None:
  """Replaces this process by itself with the tunable set, when that is possible and not yet done.
  Call it first thing in a command-line entry point: nothing before it runs twice.
  """
  tunables = tunables_with_huge_pages(os.environ.get("GLIBC_TUNABLES", ""))
  if (
      tunables is None
      or os.environ.get(RESTARTED)
      or not huge_page_malloc_possible()
      or not sys.executable
      or not getattr(sys, "orig_argv", None)
  ):
    return
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(
      sys.executable,
      sys.orig_argv,
      {**os.environ, "GLIBC_TUNABLES": tunables, RESTARTED: "1"},
  )
