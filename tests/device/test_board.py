"""The device suite: on an ESP32 running MicroPython with the ota package (with or without the
native module), given OTA_DEVICE_PORT (its serial port) and OTA_DEVICE_FIRMWARE (a
micropython.bin for it); and always on the simulated ESP32, so that its code runs here too.

  OTA_DEVICE_PORT=/dev/ttyUSB0 OTA_DEVICE_FIRMWARE=micropython.bin pytest tests/device -k serial

Under pytest-embedded (`-p pytest_embedded --embedded-services serial --port PORT`), the board
on --port is its `dut` fixture's, driven through dut.write() and dut.expect():

  OTA_DEVICE_FIRMWARE=micropython.bin pytest tests/device -k serial \\
      -p pytest_embedded --embedded-services serial --port /dev/ttyUSB0
"""

import os
from pathlib import Path

import pytest
from conftest import RUNTIMES, image
from mpota import simdev

import device.scenarios as sc
from device.board import EmbeddedBoard, SerialBoard, SimBoard

PORT = os.environ.get("OTA_DEVICE_PORT")
FIRMWARE = os.environ.get("OTA_DEVICE_FIRMWARE")
# The simulated ESP32 under every runtime; an ESP32-S3 (Xtensa) and an ESP32-C3 (RISC-V) under
# one runtime each.
BOARDS = [f"sim-{r}" for r in RUNTIMES]
BOARDS += ["sim-micropython@esp32s3", "sim-cpython-native@esp32c3", "serial"]


def embedded_port(config) -> str | None:
    """pytest-embedded's --port, when its plugin is loaded with the serial service."""
    if not config.pluginmanager.has_plugin("pytest_embedded"):
        return None
    if "serial" not in (config.getoption("embedded_services") or "").split(","):
        return None
    return config.getoption("port")


@pytest.fixture(params=BOARDS)
def board(request, tmp_path):
    if request.param == "serial":
        embedded = embedded_port(request.config)
        if not (PORT or embedded) or not FIRMWARE:
            pytest.skip(
                "no board: set OTA_DEVICE_PORT (or pytest-embedded's --port) to an ESP32's "
                "serial port and OTA_DEVICE_FIRMWARE to a micropython.bin (app image) for it"
            )
        if embedded:
            yield (
                EmbeddedBoard(request.getfixturevalue("dut"), embedded),
                Path(FIRMWARE).read_bytes(),
            )
            return
        b = SerialBoard(PORT)
        yield b, Path(FIRMWARE).read_bytes()
        b.close()
        return
    runtime, _, chip = request.param[4:].partition("@")
    chip = chip or "esp32"
    if runtime == "cpython-native":
        request.getfixturevalue("native_lib")
    flash = tmp_path / "flash.bin"
    simdev.create(flash, image("v1.22.0", 600_032, chip=chip), chip=chip)
    yield SimBoard(flash, runtime, tmp_path, chip), image("v1.23.0", 500_016, chip=chip)


def test_two_updates_in_a_row(board):
    b, img = board
    sc.two_updates_in_a_row(b, img)


def test_rollback_across_resets(board):
    b, img = board
    sc.rollback_across_resets(b, img)


def test_bad_inputs_leave_the_boot_slot(board):
    b, img = board
    messages = sc.bad_inputs_leave_the_boot_slot(b, img)
    assert set(messages) == set(sc.bad_inputs(img))


def test_backends_agree(board):
    b, img = board
    if not sc.has_native(b):
        pytest.skip(f"{b.name} has no native _ota module")
    sc.backends_agree(b, img)
