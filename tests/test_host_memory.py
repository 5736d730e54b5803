"""Huge-page malloc: the tunable's effect on page faults, and the command-line restart that sets it."""

import os
import subprocess
import sys
import textwrap

import pytest

from alexnet_jax.platform import host_memory

needs_huge_pages = pytest.mark.skipif(
    not host_memory.huge_page_malloc_possible(),
    reason="needs glibc >= 2.35 and transparent huge pages not 'never'",
)

# Page faults of writing a freshly malloc'd 64 MiB buffer (glibc mmaps one that large), median of 5.
FAULT_PROBE = textwrap.dedent("""
    import ctypes, resource
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    size, counts = 64 << 20, []
    for _ in range(5):
      before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
      buffer = libc.malloc(size)
      ctypes.memset(buffer, 1, size)
      counts.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
      libc.free(buffer)
    print(sorted(counts)[2])
""")

# A command-line tool that reports the tunables it runs with and its process id, once.
TOOL = textwrap.dedent("""
    import os
    from alexnet_jax import cli
    def main(argv):
      print("tunables", os.environ.get("GLIBC_TUNABLES"), "pid", os.getpid(), flush=True)
    cli.run(main, huge_pages=True)
""")


def _run(code, **env):
  child_env = {
      k: v
      for k, v in os.environ.items()
      if k not in ("GLIBC_TUNABLES", host_memory.RESTARTED)
  }
  done = subprocess.run(
      [sys.executable, "-c", code],
      env={**child_env, **env},
      capture_output=True,
      text=True,
      timeout=120,
  )
  assert done.returncode == 0, done.stderr
  return done.stdout


def test_tunables_are_added_to_the_users_own_and_never_override_them():
  assert host_memory.tunables_with_huge_pages("") == "glibc.malloc.hugetlb=1"
  assert (
      host_memory.tunables_with_huge_pages("glibc.malloc.arena_max=2")
      == "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"
  )
  assert host_memory.tunables_with_huge_pages("glibc.malloc.hugetlb=0") is None
  assert (
      host_memory.tunables_with_huge_pages(
          "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=2"
      )
      is None
  )


@needs_huge_pages
def test_the_tunable_cuts_page_faults_of_large_allocations():
  four_kib_pages = (64 << 20) // 4096
  without = int(_run(FAULT_PROBE, GLIBC_TUNABLES="glibc.malloc.hugetlb=0"))
  with_huge_pages = int(
      _run(FAULT_PROBE, GLIBC_TUNABLES="glibc.malloc.hugetlb=1")
  )
  assert without >= four_kib_pages  # one fault per 4 KiB page
  assert with_huge_pages * 8 < without, (with_huge_pages, without)


@needs_huge_pages
def test_a_training_tool_restarts_itself_once_with_the_tunable():
  lines = _run(TOOL, GLIBC_TUNABLES="glibc.malloc.arena_max=4").splitlines()
  # the restarted process runs main; the first one never gets there
  assert len(lines) == 1, lines
  assert lines[0].startswith(
      "tunables glibc.malloc.arena_max=4:glibc.malloc.hugetlb=1 pid"
  )


def test_a_users_own_setting_is_kept():
  assert _run(TOOL, GLIBC_TUNABLES="glibc.malloc.hugetlb=0").startswith(
      "tunables glibc.malloc.hugetlb=0 pid"
  )
