"""README 'I have a stock board' (issue 17, item 5) for every chip of its table: the README's own
block, as a user pastes it (convert the stock .bin, esptool write-flash to a blank simulated
board over RFC 2217, mpremote mip install of ota, the first update, reset, confirm, status),
run with the first line of each row (the block's own is the ESP32's; tests/test_readme.py does
not run it: its marker names this file).
The chips run in parallel: each spends its ~45 s waiting on pyserial's RFC 2217 client (about
0.2 s per esptool command), not on the CPU.

Also: mpota image --merged (the stock layouts) and mpota sim create --blank."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import Sim, free_port
from esp_idf_defs import PartitionTable
from espsim import chips, device, otadata
from mpota import images
from test_convert import STOCK_4MIB, STOCK_4MIBPLUS, STOCK_8MIB

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
MB = 1 << 20

# What each board must end with, from the stock layouts and convert's slot rule (independent of
# the README): slot size, the vfs row (None: v1.26+, registered by the firmware past the table).
EXPECT = {
    "esp32": {"slot": 0x1B0000, "vfs": (0x370000, 0x90000), "physical": 4 * MB},
    "esp32s3": {"slot": 0x1B0000, "vfs": (0x370000, 0x490000), "physical": 8 * MB},
    "esp32c3": {"slot": 0x1B0000, "vfs": None, "physical": 4 * MB},
    "esp32c6": {"slot": 0x1E0000, "vfs": None, "physical": 4 * MB},
}


def section() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("### I have a stock board\n")
    return text[start : text.index("\n### ", start + 1)]


def block() -> str:
    """The section's shell block (marked `test tests/test_stock_board.py`)."""
    m = re.search(r"^<!-- readme: test [^\n]*-->\n```sh\n(.*?)^```$", section(), re.M | re.S)
    return m.group(1)


def rows() -> dict[str, str]:
    """chip -> the first line its table row gives."""
    found = re.findall(r"^\|[^|\n]*\|[^|\n]*\| `(chip=(\w+) [^`]*)` \|$", section(), re.M)
    return {chip: line for line, chip in found}


def variables(line: str) -> dict[str, str]:
    return dict(kv.split("=", 1) for kv in line.split())


def test_the_table_has_every_chip_and_the_block_is_its_esp32_row():
    r = rows()
    assert sorted(r) == sorted(EXPECT)
    assert block().splitlines()[0] == r["esp32"]
    for chip, line in r.items():
        v = variables(line)
        assert v["at"] == f"0x{chips.get(chip).bootloader_offset:x}", line
        assert v["flash"] == f"{EXPECT[chip]['physical'] // MB}MB", line
        # realistic stock sizes (MicroPython's size metrics: 1.60 to 1.86 MB)
        assert 1_600_000 <= int(v["size"]) <= 1_860_000, line
        assert 1_600_000 <= int(v["newsize"]) <= 1_860_000, line


def run_block(d: Path, line: str) -> dict:
    """The README's block with `line` as its first line, in the empty folder d; its results."""
    d.mkdir()
    body = block().split("\n", 1)[1]
    script = "set -e -o pipefail\n" + line + "\n" + body.replace("8000", str(free_port()))
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}")
    p = subprocess.run(
        ["bash", "-c", script],
        cwd=d,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
        start_new_session=True,
    )
    return {"rc": p.returncode, "out": p.stdout + p.stderr, "dir": d, "v": variables(line)}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("stock")
    lines = rows()
    with ThreadPoolExecutor(len(lines)) as ex:
        futs = {c: ex.submit(run_block, base / c, line) for c, line in lines.items()}
        return {c: f.result() for c, f in futs.items()}


@pytest.mark.parametrize("chip", ["esp32", "esp32s3", "esp32c3", "esp32c6"])
def test_a_stock_board_converted_over_the_wire_takes_its_first_update(runs, chip):
    r = runs[chip]
    d, v, out = r["dir"], r["v"], r["out"]
    assert r["rc"] == 0, out
    at = int(v["at"], 16)
    stock = (d / "stock.bin").read_bytes()
    new = (d / "stock-www/fw/micropython.bin").read_bytes()
    flash = d / "stock-board.bin"

    # The board was blank: nothing booted until esptool wrote the converted image, whose hard
    # reset booted the stock app in ota_0 (mpremote's reset, machine.reset() on the board,
    # booted the update: sim.running() below).
    log = (d / "stock-serial.log").read_text().splitlines()
    assert log[0].startswith("rfc2217://127.0.0.1:")
    assert log[1].startswith("espsim: the app does not boot: no 2nd stage bootloader"), log
    assert log[2:4] == [
        "espsim: download mode: the ROM loader waits for esptool",
        "espsim: booted 'ota_0' at 0x10000",
    ], log
    st = device.read_state(str(flash))
    assert st["chip"] == chip and flash.stat().st_size == EXPECT[chip]["physical"]

    # The layout convert made, as esptool wrote it; the stock bootloader and app did not move.
    image = flash.read_bytes()
    table = {p.name: (p.offset, p.size) for p in PartitionTable.from_binary(image[0x8000:0x8C00])}
    slot = EXPECT[chip]["slot"]
    assert table["ota_0"] == (0x10000, slot) and table["ota_1"] == (0x10000 + slot, slot)
    assert table.get("vfs") == EXPECT[chip]["vfs"]
    assert image[at:0x8000] == stock[: 0x8000 - at]  # the bootloader (its header kept)
    sim = Sim(flash, "micropython")
    app = stock[0x10000 - at :]
    assert sim.region("ota_0")[: len(app)] == app
    # ota_1 holds the update byte for byte, booted and confirmed.
    assert sim.region("ota_1")[: len(new)] == new
    assert sim.running() == "ota_1"
    assert sim.state("ota_1") == otadata.VALID

    # mpremote: ota installed from the mip index, the update's messages, status() after.
    assert "Done" in out and "Installing: /lib/ota/update.mpy" in out, out
    assert "OTA Partition 'ota_1' updated successfully." in out, out
    slots = out[out.index("OTA slots:") :].splitlines()
    assert re.match(rf"  ota_0 +VALID +MicroPython {v['stock']} ", slots[2]), slots
    assert re.match(rf"  ota_1 +VALID +MicroPython {v['new']} .*\[running\]", slots[3]), slots
    if chip == "esp32":  # the block's own line: status() prints what the README shows after it
        text = section()
        after = text[text.index("The last command prints the new layout") :]
        start = after.index("```\n") + 4
        shown = after[start : after.index("\n```", start)].splitlines()
        assert len(shown) == 7
        for line in shown:
            assert line in out.splitlines(), (line, out)


# -- the pieces: mpota image --merged and mpota sim create --blank ------------------------------


def mpota(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mpota", *args], cwd=cwd, capture_output=True, text=True
    )


@pytest.mark.parametrize(
    ("chip", "version", "csv", "header"),
    [
        ("esp32", "v1.24.0", STOCK_4MIB, 4),
        ("esp32", "v1.25.0", STOCK_4MIB, 4),
        ("esp32s2", "v1.24.0", STOCK_4MIB, 4),
        ("esp32s3", "v1.25.0", STOCK_8MIB, 8),
        ("esp32s3", "v1.26.0", STOCK_4MIBPLUS, 4),
        ("esp32c3", "v1.26.0-preview.12.gabc", STOCK_4MIBPLUS, 4),
        ("esp32c6", "v1.28.0", STOCK_4MIBPLUS, 4),
    ],
)
def test_image_merged_is_the_stock_download(tmp_path, chip, version, csv, header):
    r = mpota(tmp_path, "image", "-o", "s.bin", "--merged", "--chip", chip, "--version", version)
    assert r.returncode == 0, r.stderr
    at = chips.get(chip).bootloader_offset
    assert f"(esptool write-flash 0x{at:x} s.bin)" in r.stdout
    data = (tmp_path / "s.bin").read_bytes()
    assert data[0] == 0xE9 and data[3] >> 4 == {4: 2, 8: 3}[header]  # the header's flash size
    assert data[0x8000 - at : 0x8C00 - at] == PartitionTable.from_csv(csv).to_binary()
    app = data[0x10000 - at :]
    assert app[12] == chips.get(chip).chip_id and f"MicroPython {version}".encode() in app


def test_image_merged_refuses_a_chip_without_a_stock_board(tmp_path):
    with pytest.raises(ValueError, match="esp32c2"):
        images.stock_table("esp32c2", "v1.28.0")


def test_sim_create_blank_is_a_never_flashed_chip(tmp_path):
    r = mpota(
        tmp_path,
        "sim",
        "create",
        "b.bin",
        "--blank",
        "--chip",
        "esp32c6",
        "--mac",
        "24:0a:c4:01:02:03",
        "--flash-size",
        "8MB",
    )
    assert r.returncode == 0, r.stderr
    assert "never flashed" in r.stdout
    flash = (tmp_path / "b.bin").read_bytes()
    assert flash == b"\xff" * (8 * MB)
    st = device.read_state(str(tmp_path / "b.bin"))
    assert (st["chip"], st["chip_rev"], st["mac"], st["boots"], st["running"]) == (
        "esp32c6",
        chips.get("esp32c6").default_rev,
        0x240AC4010203,
        0,
        0,
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.bin", "b.bin.state"]
    # It does not boot: the ROM finds no bootloader.
    r = mpota(tmp_path, "sim", "boot", "b.bin")
    assert r.returncode == 3 and "no 2nd stage bootloader" in r.stdout, r.stdout
