"""The host record every benchmark writes names the CPU, which the figures depend on."""

from __future__ import annotations

import sys

import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "bench"))

import report_io  # noqa: E402

CPUINFO = """processor\t: 0
cpu family\t: {family}
model\t\t: {model}
model name\t: {name}
flags\t\t: {flags}

processor\t: 1
model name\t: another block, never read
"""


@pytest.mark.parametrize(
    "name, family, model, flags, expected",
    [
        ("AMD EPYC", 25, 1, "fpu sse2 avx avx2", "AMD EPYC (family 25 model 1), best vector extension avx2"),
        (
            "AMD EPYC",
            25,
            17,
            "avx2 avx512f avx512_vnni avx512_bf16",
            "AMD EPYC (family 25 model 17), best vector extension avx512_bf16",
        ),
        (
            "Intel(R) Xeon(R) Platinum 8480+",
            6,
            143,
            "avx2 avx512f avx512_vnni avx512_bf16 amx_tile",
            "Intel(R) Xeon(R) Platinum 8480+ (family 6 model 143), best vector extension amx_tile",
        ),
        ("QEMU Virtual CPU", 6, 6, "fpu sse2", "QEMU Virtual CPU (family 6 model 6), best vector extension no AVX2"),
    ],
)
def test_cpu_model_names_the_processor_its_family_and_model_and_best_vector_extension(
    tmp_path, name, family, model, flags, expected
):
    path = tmp_path / "cpuinfo"
    path.write_text(CPUINFO.format(name=name, family=family, model=model, flags=flags))
    assert report_io.cpu_model(path) == expected


def test_host_records_the_cpu_cores_and_load(tmp_path):
    record = report_io.host_record()
    assert record["cpu"] == report_io.cpu_model()
    assert record["usable_cores"] >= 1 and len(record["load_average_after"]) == 3
    assert report_io.cpu_model(tmp_path / "missing")  # no /proc/cpuinfo: the platform's name, never an error
