"""adept.gpu_driver: the start-up check names the driver the image needs when the node's is older."""

from __future__ import annotations

import pytest

from adept.gpu_driver import DriverTooOld, check_driver, main, node_driver, required_driver

R570 = (
    "NVRM version: NVIDIA UNIX x86_64 Kernel Module  570.86.15  Fri Jan 24 00:00:00 UTC 2025\n"
    "GCC version:  gcc version 12.2.0 (Debian 12.2.0-14)\n"
)
R580 = (
    "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.65.06  Release Build  (dvs-builder@U16)\n"
)


@pytest.fixture
def proc(tmp_path):
    def write(text: str):
        p = tmp_path / "version"
        p.write_text(text)
        return p

    return write


def test_required_driver_per_cuda():
    assert (
        required_driver("13.0") == 580 and required_driver("12.8") == 570 and required_driver("13.4") == 580
    )
    with pytest.raises(ValueError):
        required_driver("11.8")


def test_reads_proprietary_and_open_module_versions(proc):
    assert node_driver(proc(R570)) == "570.86.15" and node_driver(proc(R580)) == "580.65.06"


def test_an_older_driver_is_named_with_the_one_needed(proc):
    with pytest.raises(
        DriverTooOld,
        match=r"570\.86\.15 is too old: torch 2\.13\.0\+cu130 \(CUDA 13\.0\) needs driver >= 580",
    ):
        check_driver("13.0", torch_version="torch 2.13.0+cu130", path=proc(R570))
    assert check_driver("13.0", path=proc(R580)) == "580.65.06"


def test_no_driver_is_said_plainly(tmp_path):
    with pytest.raises(DriverTooOld, match="no NVIDIA driver found"):
        check_driver("13.0", path=tmp_path / "absent")


def test_the_cli_exits_non_zero_with_one_line(proc, capsys):
    assert main(["--cuda", "13.0", "--version-file", str(proc(R570))]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: this node's NVIDIA driver 570.86.15 is too old") and err.count("\n") == 1
    assert main(["--cuda", "13.0", "--version-file", str(proc(R580))]) == 0


def test_a_cpu_torch_build_has_nothing_to_check(capsys):
    assert main([]) == 0  # the CPU venv's torch
    assert "CPU build" in capsys.readouterr().out
