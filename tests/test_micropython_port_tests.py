"""MicroPython's own esp32 port tests on the simulated ESP32, from the MicroPython source tree
named by $MICROPY_DIR (only its tests/ports/esp32 files are read; nothing of it is kept here):
partition_ota.py through a board's life (`mpota sim run --fs`), and the OTA half of
check_err_str.py, up to `exc: OSError()` under a locked heap (the rest needs
micropython.alloc_emergency_exception_buf(), which the unix port lacks)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from conftest import image
from mpota import simdev

TREE = os.environ.get("MICROPY_DIR")
TESTS = Path(TREE or ".") / "tests" / "ports" / "esp32"
pytestmark = pytest.mark.skipif(
    not TREE or not (TESTS / "partition_ota.py").exists(),
    reason="set MICROPY_DIR to a MicroPython source tree to run its tests/ports/esp32 tests",
)


def matches_exp(out: str, exp: str) -> bool:
    """out matches a run-tests .exp file: its lines in order, "########" standing for any
    lines (tests/run-tests.py); the raw REPL's end-of-output marks (\\x04) are not output."""
    parts = []
    for line in exp.rstrip("\n").split("\n"):
        parts.append(r"(?:.*\n)*?" if line == "########" else re.escape(line) + r"\n")
    return re.fullmatch("".join(parts) + r"(?:\n)*", out.replace("\x04", "")) is not None


def board(tmp_path):
    path = tmp_path / "flash.bin"
    simdev.create(path, image("v1.22.0", 300_000))
    fs = tmp_path / "fs"
    simdev.seed_fs(fs)
    return path, fs


@pytest.mark.parametrize("runtime", ["micropython", "cpython"])
def test_partition_ota(tmp_path, runtime):
    path, fs = board(tmp_path)
    with open(tmp_path / "out.txt", "w") as f:
        rc = simdev.play(path, fs, script=TESTS / "partition_ota.py", runtime=runtime, stdout=f)
    text = (tmp_path / "out.txt").read_text()
    assert rc == 0, text
    assert "SUCCESS!" in text and "FAILED" not in text, text
    assert matches_exp(text, (TESTS / "partition_ota.py.exp").read_text()), text
    steps = [line.split(" STEP=")[1] for line in text.splitlines() if " STEP=" in line]
    assert steps == [
        "0 EXPECT=ota_1",
        "1 EXPECT=ota_0",
        "2 EXPECT=ota_1",
        "3 EXPECT=ota_1",
        "4 EXPECT=ota_0",
    ], text
    # The test puts the board's boot.py back as it found it.
    assert (fs / "boot.py").read_text() == simdev.STOCK_BOOT_PY
    assert not (fs / "step.py").exists()


def test_check_err_str_ota_part(tmp_path):
    path, fs = board(tmp_path)
    with open(tmp_path / "out.txt", "w") as f:
        simdev.play(path, fs, script=TESTS / "check_err_str.py", stdout=f)
    got = (tmp_path / "out.txt").read_text().splitlines()
    want = (TESTS / "check_err_str.py.exp").read_text().splitlines()
    # The heap-locked OSError: "exc: OSError()" (the script prints its repr since 2025), or
    # "exc: " in v1.28.0 and before (its str).
    end = [i for i, line in enumerate(want) if line.startswith("exc:")][0] + 1
    assert got[:end] == want[:end], "\n".join(got)
