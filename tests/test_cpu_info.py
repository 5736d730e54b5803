"""platform.cpu_info reads the CPU's model and instruction sets from a cpuinfo file."""

from alexnet_jax.platform import cpu_info

INTEL = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz
flags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8

processor\t: 1
model name\t: Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz
flags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8
"""

AMD = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B13
flags\t\t: fpu sse2 avx avx2 fma
"""


def test_an_intel_sapphire_rapids_reads_as_avx512_with_amx(tmp_path):
  path = tmp_path / "cpuinfo"
  path.write_text(INTEL)
  info = cpu_info.describe.__wrapped__(str(path))
  assert info["model"] == "Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz"
  assert info["features"] == [
      "avx2",
      "avx512f",
      "avx512_bf16",
      "amx_bf16",
      "amx_tile",
  ]


def test_an_amd_epyc_reads_as_avx2_only(tmp_path):
  path = tmp_path / "cpuinfo"
  path.write_text(AMD)
  info = cpu_info.describe.__wrapped__(str(path))
  assert info["model"] == "AMD EPYC 7B13"
  assert info["features"] == ["avx2"]
