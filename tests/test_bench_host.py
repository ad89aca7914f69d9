"""The host record every benchmark writes names the CPU, which the figures depend on."""

from __future__ import annotations

import sys

from conftest import ROOT

sys.path.insert(0, str(ROOT / "bench"))

import report_io  # noqa: E402

CPUINFO = """processor\t: 0
vendor_id\t: {vendor}
cpu family\t: {family}
model\t\t: {model}
model name\t: {name}
flags\t\t: {flags}

processor\t: 1
model name\t: another block, never read
"""


def _cpuinfo(tmp_path, **fields) -> str:
    path = tmp_path / "cpuinfo"
    path.write_text(CPUINFO.format(**fields))
    return str(path)


def test_cpu_model_names_the_processor_its_family_and_model_and_best_vector_extension(tmp_path):
    zen3 = _cpuinfo(tmp_path, vendor="AuthenticAMD", family=25, model=1, name="AMD EPYC", flags="fpu sse2 avx avx2")
    assert report_io.cpu_model(zen3) == "AMD EPYC (family 25 model 1), best vector extension avx2"
    spr = _cpuinfo(
        tmp_path,
        vendor="GenuineIntel",
        family=6,
        model=143,
        name="Intel(R) Xeon(R) Platinum 8480+",
        flags="avx2 avx512f avx512_vnni avx512_bf16 amx_tile",
    )
    assert report_io.cpu_model(spr).endswith("(family 6 model 143), best vector extension amx_tile")
    zen4 = _cpuinfo(
        tmp_path,
        vendor="AuthenticAMD",
        family=25,
        model=17,
        name="AMD EPYC",
        flags="avx2 avx512f avx512_vnni avx512_bf16",
    )
    assert report_io.cpu_model(zen4).endswith("best vector extension avx512_bf16")


def test_host_records_the_cpu_cores_and_load(tmp_path):
    record = report_io.host_record()
    assert record["cpu"] == report_io.cpu_model()
    assert record["usable_cores"] >= 1 and len(record["load_average_after"]) == 3
    assert report_io.cpu_model(tmp_path / "missing")  # no /proc/cpuinfo: the platform's name, never an error
