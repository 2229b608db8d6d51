"""pytest-embedded runs the device suite against the simulated board on the wire (issue 17): a
board made with `mpota sim create`, served by `mpota sim serial` as rfc2217://127.0.0.1:N, and
tests/device run as a subprocess with pytest-embedded's serial service on that URL
(`-p pytest_embedded --embedded-services serial --port URL`), OTA_DEVICE_PORT set to the same
URL and OTA_DEVICE_FIRMWARE to an image made with `mpota image`. Its tests must pass on that
board (the board's name says pytest-embedded held the port), not be skipped."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import MICROPYTHON_NATIVE
from espsim import device
from test_wire import Served

ROOT = Path(__file__).resolve().parent.parent
pytest.importorskip("pytest_embedded_serial")


def mpota(*args: str, cwd: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "mpota", *args], cwd=cwd, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stdout + r.stderr


def counts(summary: str) -> dict[str, int]:
    # pytest's last line: "3 passed, 1 skipped, 20 deselected, 12 warnings in 15.12s"
    return {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|error)", summary)}


def test_pytest_embedded_runs_the_device_suite_on_the_simulated_board(tmp_path):
    mpota("sim", "create", "board.bin", "--version", "v1.22.0", cwd=tmp_path)
    mpota("image", "-o", "fw.bin", "--version", "v1.23.0", "--size", "200000", "--seed", "2",
          cwd=tmp_path)  # fmt: skip
    flash = tmp_path / "board.bin"
    boots = device.read_state(str(flash))["boots"]
    native = bool(MICROPYTHON_NATIVE)  # a unix port with usermod/ota_native: _ota on board
    srv = Served(flash, "--runtime", "micropython-native" if native else "micropython")
    try:
        assert srv.url.startswith("rfc2217://127.0.0.1:"), srv.url
        env = dict(
            os.environ, OTA_DEVICE_PORT=srv.url, OTA_DEVICE_FIRMWARE=str(tmp_path / "fw.bin")
        )
        r = subprocess.run(
            [
                sys.executable, "-m", "pytest", "tests/device", "-k", "serial", "-rs", "-q",
                "-p", "pytest_embedded", "--embedded-services", "serial", "--port", srv.url,
                "--root-logdir", str(tmp_path / "logs"),
            ],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=240,
        )  # fmt: skip
    finally:
        srv.stop()
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    summary = [line for line in r.stdout.splitlines() if " passed" in line][-1]
    n = counts(summary)
    assert n.get("failed", 0) == 0 and n.get("error", 0) == 0, out
    # every scenario on the board; without the native module in the firmware, backends_agree is
    # the one skip, and it names the board pytest-embedded held
    if native:
        assert n == {"passed": 4}, summary
    else:
        assert n == {"passed": 3, "skipped": 1}, summary
        skips = [line for line in r.stdout.splitlines() if line.startswith("SKIPPED")]
        assert len(skips) == 1 and "test_board.py" in skips[0], out
        assert f"ESP32 on {srv.url} (pytest-embedded) has no native _ota module" in skips[0]
    # the updates happened on that board: it was reset into new firmware, more than once
    assert device.read_state(str(flash))["boots"] - boots >= 4
    # and pytest-embedded logged what the board said (its dut log: the REPL's banner)
    logs = "".join(p.read_text(errors="replace") for p in (tmp_path / "logs").rglob("*.log"))
    assert 'Type "help()" for more information.' in logs
