"""The simulated board on the wire (issue 17, item 2): `mpota sim serial` serves the simulated
ESP32 as an RFC 2217 port, and unmodified esptool 5 (a subprocess, from this venv) detects,
reads, writes, erases and verifies it, for every simulated chip, with its flasher stub and with
--no-stub; what it writes, the simulator boots.

esptool over RFC 2217 spends about 0.2 s per command in pyserial's client (each timeout change
is a settings round trip that it polls every 50 ms), so the esptool runs below go in parallel,
one board per job, and the tests read their results."""

from __future__ import annotations

import os
import random
import signal
import struct
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import image
from esp_pylib import serial_reset
from espsim import chips, device, parttable
from mpota import boardfs, images, simdev, simserial

MB = 1 << 20


class Served:
    """`mpota sim serial FLASH` as a subprocess; url from its first line."""

    def __init__(self, flash: Path, *args: str):
        self.p = subprocess.Popen(
            [sys.executable, "-m", "mpota", "sim", "serial", str(flash), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.url = self.p.stdout.readline().strip()
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.p.stdout:
            self.lines.append(line.rstrip("\n"))

    def stop(self) -> list[str]:
        os.killpg(self.p.pid, signal.SIGTERM)
        self.p.wait(timeout=10)
        self.reader.join(timeout=10)
        return self.lines


def tool(name: str, url: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """esptool or mpremote, unmodified, on the board at `url`."""
    port = ["--port", url] if name == "esptool" else ["connect", url]
    return subprocess.run(
        [sys.executable, "-m", name, *port, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=240,
    )


def esptool(url: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return tool("esptool", url, *args, cwd=cwd)


def make_board(d: Path, chip: str, firmware: bytes | None = None) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    flash = d / "flash.bin"
    simdev.create(flash, firmware or image("v1.24.0", chip=chip), chip=chip)
    return flash


def job_every_chip(d: Path, chip: str) -> dict:
    # detection and flash id, then a new app written (compressed, by the stub), which esptool
    # verifies (MD5) and its hard reset boots
    flash = make_board(d, chip)
    # (a smaller image on the S3 would be one the simulator refuses: images.app_image() places
    # its DRAM segment below the S3's DRAM at small sizes)
    new = images.app_image("v1.25.0", size=None if chip == "esp32s3" else 96 * 1024, chip=chip)
    (d / "app.bin").write_bytes(new)
    srv = Served(flash)
    r = {"url": srv.url, "new": new, "flash": flash}
    r["flash_id"] = esptool(srv.url, "flash-id", cwd=d)
    boots = device.read_state(str(flash))["boots"]
    r["write"] = esptool(srv.url, "write-flash", "0x10000", "app.bin", cwd=d)
    r["boots_after_write"] = device.read_state(str(flash))["boots"] - boots
    r["log"] = srv.stop()
    return r


def job_rom(d: Path, chip: str) -> dict:
    # the ROM loader alone (--no-stub): on the ESP32 a plain write, 64-byte reads and an erase
    # (FLASH_BEGIN); on the C3 a compressed write and MD5; then the stub's own erase
    flash = make_board(d, chip)
    rnd = random.Random(chip)
    data = bytes(rnd.randrange(256) for _ in range(5000))  # not a whole sector
    if chip != "esp32":
        data = bytes(rnd.randrange(4) for _ in range(6000)) * 2
    (d / "data.bin").write_bytes(data)
    srv = Served(flash)
    r = {"data": data, "flash": flash}
    ns = "--no-stub"
    if chip == "esp32":
        r["write"] = esptool(
            srv.url, ns, "write-flash", "--no-compress", "0x300000", "data.bin", cwd=d
        )
        r["image_after"] = flash.read_bytes()
        r["read"] = esptool(srv.url, ns, "read-flash", "0x300000", "0x100", "read.bin", cwd=d)
        r["read_back"] = (d / "read.bin").read_bytes() if (d / "read.bin").exists() else b""
        r["erase"] = esptool(srv.url, ns, "erase-region", "0x300000", "0x2000", cwd=d)
    else:
        r["write"] = esptool(
            srv.url, ns, "write-flash", "--compress", "0x300000", "data.bin", cwd=d
        )
        r["image_after"] = flash.read_bytes()
        r["verify"] = esptool(srv.url, ns, "verify-flash", "0x300000", "data.bin", cwd=d)
        r["erase"] = esptool(srv.url, "erase-region", "0x300000", "0x2000", cwd=d)
    r["erased"] = flash.read_bytes()[0x300000:0x302000] == b"\xff" * 0x2000
    r["log"] = srv.stop()
    return r


def job_blank(d: Path, chip: str) -> dict:
    # with the stub: erase the whole chip, bring it up from nothing with MicroPython's
    # firmware.bin (bootloader, table and app in one file, written where the ROM looks for the
    # bootloader), read the app back
    flash = make_board(d, chip)
    soc = chips.get(chip)
    app = images.app_image("v1.26.0", size=80 * 1024, chip=chip)
    table = parttable.build(parttable.seed_table())
    (d / "firmware.bin").write_bytes(images.merged_firmware(app, table))
    srv = Served(flash)
    r = {"app": app, "flash": flash}
    r["erase_flash"] = esptool(srv.url, "erase-flash", cwd=d)
    r["blank"] = flash.read_bytes() == b"\xff" * flash.stat().st_size
    at = f"{soc.bootloader_offset:#x}"
    r["write"] = esptool(srv.url, "write-flash", at, "firmware.bin", cwd=d)
    r["read"] = esptool(srv.url, "read-flash", "0x10000", str(len(app)), "read.bin", cwd=d)
    r["read_back"] = (d / "read.bin").read_bytes() if (d / "read.bin").exists() else b""
    r["log"] = srv.stop()
    return r


def job_usb_jtag(d: Path, chip: str) -> dict:
    flash = make_board(d, chip)
    srv = Served(flash, "--usb", "jtag")
    r = {"chip_id": esptool(srv.url, "--before", "usb-reset", "chip-id", cwd=d)}
    r["log"] = srv.stop()
    return r


EVERY = sorted(simserial.USB_JTAG_CHIPS + ("esp32", "esp32s2", "esp32c2"))
ROM_CHIPS = ("esp32", "esp32c3")
BLANK_CHIPS = ("esp32", "esp32c6")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("wire")
    jobs = {("every", c): (job_every_chip, c) for c in EVERY}
    jobs.update({("rom", c): (job_rom, c) for c in ROM_CHIPS})
    jobs.update({("blank", c): (job_blank, c) for c in BLANK_CHIPS})
    jobs[("jtag", "esp32c3")] = (job_usb_jtag, "esp32c3")
    jobs[("session", "esp32")] = (job_session, "esp32")
    with ThreadPoolExecutor(len(jobs)) as ex:
        futs = {k: ex.submit(fn, base / f"{k[0]}-{c}", c) for k, (fn, c) in jobs.items()}
        return {k: f.result() for k, f in futs.items()}


def ok(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def test_the_url_is_the_first_line(runs):
    for c in EVERY:
        assert runs[("every", c)]["url"].startswith("rfc2217://127.0.0.1:")


@pytest.mark.parametrize("chip", EVERY)
def test_esptool_detects_every_chip(runs, chip):
    r = runs[("every", chip)]
    out = ok(r["flash_id"])
    soc = chips.get(chip)
    rev = device.read_state(str(r["flash"]))["chip_rev"]
    assert f"Connected to {soc.display} on {r['url']}" in out
    assert f"(revision v{rev // 100}.{rev % 100})" in out
    assert "Stub flasher running." in out
    assert "Manufacturer: ef" in out and "Device: 4016" in out
    assert "Detected flash size: 4MB" in out
    assert "MAC:                24:0a:c4:" in out


@pytest.mark.parametrize("chip", EVERY)
def test_esptool_writes_every_chip_and_its_hard_reset_boots_the_app(runs, chip):
    r = runs[("every", chip)]
    out = ok(r["write"])
    assert "Hash of data verified." in out and "compressed" in out
    assert "Hard resetting via RTS pin..." in out
    flash = r["flash"].read_bytes()
    assert flash[0x10000 : 0x10000 + len(r["new"])] == r["new"]
    # esptool's hard reset booted the new app on the board...
    assert r["boots_after_write"] == 1
    assert r["log"][-1] == "espsim: booted 'ota_0' at 0x10000", r["log"]
    # ...and the simulator's bootloader boots it again
    assert "running 'ota_0' at 0x10000" in simdev.power_on(r["flash"])[-1]


def test_esptool_without_stub_esp32(runs):
    r = runs[("rom", "esp32")]
    out = ok(r["write"])
    assert "Stub flasher" not in out and "Hash of data verified." in out
    img = r["image_after"]
    assert img[0x300000 : 0x300000 + 5000] == r["data"]
    assert img[0x300000 + 5000 : 0x301000] == b"\xff" * (0x1000 - 5000)  # ROM padding
    ok(r["read"])
    assert r["read_back"] == r["data"][:0x100]
    ok(r["erase"])
    assert r["erased"]


def test_esptool_without_stub_compressed_and_md5_esp32c3(runs):
    r = runs[("rom", "esp32c3")]
    out = ok(r["write"])
    assert "Stub flasher" not in out and "compressed" in out
    assert "Hash of data verified." in out
    assert r["image_after"][0x300000 : 0x300000 + len(r["data"])] == r["data"]
    out = ok(r["verify"])
    assert "Stub flasher" not in out and "Verification successful (digest matched)" in out
    assert "Stub flasher running." in ok(r["erase"])
    assert r["erased"]


@pytest.mark.parametrize("chip", BLANK_CHIPS)
def test_esptool_brings_up_an_erased_board(runs, chip):
    r = runs[("blank", chip)]
    ok(r["erase_flash"])
    assert r["blank"]
    ok(r["write"])
    ok(r["read"])
    assert r["read_back"] == r["app"]
    log = simdev.power_on(r["flash"])
    assert "running 'ota_0' at 0x10000" in log[-1], log


def test_usb_serial_jtag_reset(runs):
    r = runs[("jtag", "esp32c3")]
    assert "ESP32-C3" in ok(r["chip_id"])
    log = "\n".join(r["log"])
    assert "download mode" in log
    assert log.rstrip().endswith("booted 'ota_0' at 0x10000")


# ---- without esptool's process: the reset circuit and the loader on their own ----


class Line:
    def __init__(self):
        self.data = bytearray()

    def __call__(self, b: bytes):
        self.data += b


def board(tmp_path: Path, chip: str = "esp32", usb: str = "uart"):
    b = simserial.Board(make_board(tmp_path, chip), usb=usb)
    b.output = Line()
    b.power_on()
    port = simserial.FakeSerial(b)
    return b, port


def settle(b):
    time.sleep(b.SETTLE + 0.15)
    return b.mode


def test_esptools_reset_sequences_drive_the_auto_reset_circuit(tmp_path):
    b, port = board(tmp_path)
    assert settle(b) == "app"
    serial_reset.classic_bootloader_reset(port)
    assert settle(b) == "rom"
    assert b"rst:0x1 (POWERON_RESET),boot:0x3" in b.output.data
    assert b"waiting for download" in b.output.data
    serial_reset.hard_reset(port)
    assert settle(b) == "app"
    assert bytes(b.output.data).endswith(b"boot: Loaded app from partition at offset 0x10000\r\n")
    # opening a port (DTR then RTS asserted) and closing it do not reset the chip
    n = len(b.output.data)
    port.dtr, port.rts = True, True
    b.hang_up()
    assert settle(b) == "app" and len(b.output.data) == n


def test_usb_serial_jtag_sequences(tmp_path):
    b, port = board(tmp_path, "esp32c6", "jtag")
    assert b.mode == "app"
    serial_reset.usb_jtag_bootloader_reset(port)
    assert b.mode == "rom"
    assert b"rst:0x15 (USB_UART_CHIP_RESET)" in b.output.data
    serial_reset.hard_reset(port)
    assert b.mode == "app"
    with pytest.raises(ValueError, match="no USB-Serial-JTAG"):
        simserial.Board(make_board(tmp_path / "s2", "esp32s2"), usb="jtag")


def frames(data: bytes) -> list[bytes]:
    return [
        f.replace(b"\xdb\xdc", b"\xc0").replace(b"\xdb\xdd", b"\xdb")
        for f in data.split(b"\xc0")
        if f
    ]


def test_the_rom_refuses_bad_blocks_and_out_of_range_writes(tmp_path):
    from espsim import romloader

    flash = make_board(tmp_path, "esp32c3")
    before = flash.read_bytes()
    line = Line()
    ld = romloader.Loader(str(flash), "esp32c3", 4, bytes(6), line, lambda: None)

    def cmd(op, data, chk=0):
        line.data.clear()
        ld.feed(romloader.slip_encode(struct.pack("<BBHI", 0, op, len(data), chk) + data))
        return frames(bytes(line.data))

    # FLASH_BEGIN past the end of the 4 MB chip: status 1, "invalid parameter"; nothing erased
    (resp,) = cmd(
        romloader.FLASH_BEGIN, struct.pack("<IIIII", 0x2000, 2, 0x400, 4 * MB - 0x1000, 0)
    )
    assert resp[:2] == b"\x01\x02" and resp[-4:] == b"\x01\x01\x00\x00"
    # a block whose checksum is wrong: "checksum error", nothing programmed
    (resp,) = cmd(romloader.FLASH_BEGIN, struct.pack("<IIIII", 0x400, 1, 0x400, 0x3F0000, 0))
    assert resp[-4:] == b"\x00\x00\x00\x00"
    block = b"\x00" * 0x400
    (resp,) = cmd(romloader.FLASH_DATA, struct.pack("<IIII", 0x400, 0, 0, 0) + block, chk=0x12)
    assert resp[-4:] == b"\x01\x07\x00\x00"
    after = flash.read_bytes()
    assert after[0x3F0000:0x3F1000] == b"\xff" * 0x1000  # the ROM erased at FLASH_BEGIN
    assert after[:0x3F0000] == before[:0x3F0000]
    # a corrupt deflate stream: "deflate failed"
    cmd(romloader.FLASH_DEFL_BEGIN, struct.pack("<IIIII", 0x400, 1, 0x400, 0x3F0000, 0))
    junk = b"not a zlib stream"
    c = 0xEF
    for x in junk:
        c ^= x
    (resp,) = cmd(romloader.FLASH_DEFL_DATA, struct.pack("<IIII", len(junk), 0, 0, 0) + junk, c)
    assert resp[-4:] == b"\x01\x0b\x00\x00"
    ld.close()


# -- the app's side: MicroPython's REPL on the line (mpota.appconsole) -----------------------


def mpremote(url: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return tool("mpremote", url, *args, cwd=cwd)


def test_mpremote_and_esptool_on_one_line(runs):
    # run with the other jobs of `runs` (it waits on the line most of the time)
    error = runs[("session", "esp32")]
    if error is not None:
        raise error


def job_session(tmp_path: Path, chip: str):
    """A user's session: mpremote copies an image to the board and updates it with ota.writer
    over the REPL, resets it into the new firmware; esptool then reads the boot slot back and
    writes another app at ota_0, whose hard reset boots the app mpremote talks to again. Returns
    the exception raised, or None."""
    try:
        session(tmp_path, chip)
    except Exception as e:  # noqa: BLE001 - given to the test
        return e
    return None


def session(tmp_path: Path, chip: str) -> None:
    flash = make_board(tmp_path, chip, image("v1.24.0", 120_000))
    (tmp_path / "new.bin").write_bytes(image("v1.25.0", 120_000))
    (tmp_path / "update.py").write_text(
        "from ota.writer import OTA\n"
        "with open('new.bin', 'rb') as f, OTA(verbose=False) as w:\n"
        "    w.write_file(f)\n"
        "print('updated')\n"
    )
    srv = Served(flash)
    try:
        out = ok(mpremote(srv.url, "exec", "import os; print(os.uname().release)", cwd=tmp_path))
        assert out.strip() == "1.24.0", out
        ok(mpremote(srv.url, "fs", "cp", "new.bin", ":new.bin", cwd=tmp_path))
        assert "new.bin" in ok(mpremote(srv.url, "fs", "ls", cwd=tmp_path))
        assert "updated" in ok(mpremote(srv.url, "run", "update.py", cwd=tmp_path))
        ok(mpremote(srv.url, "reset", cwd=tmp_path))
        code = "import os, ota; ota.stop_rollback(); print(os.uname().release)"
        assert ok(mpremote(srv.url, "exec", code, cwd=tmp_path)).strip() == "1.25.0"
        # esptool on the same line: the ROM loader, then its hard reset boots the app again
        (tmp_path / "app.bin").write_bytes(image("v1.26.0", 120_000))
        ok(esptool(srv.url, "read-flash", "0xd000", "0x2000", "otadata.bin", cwd=tmp_path))
        ok(esptool(srv.url, "write-flash", "0x190000", "app.bin", cwd=tmp_path))
        out = ok(mpremote(srv.url, "exec", "import os; print(os.uname().release)", cwd=tmp_path))
        assert out.strip() == "1.26.0", out  # ota_1 (confirmed above) now holds v1.26.0
    finally:
        log = srv.stop()
    assert any("download mode" in line for line in log), log
    # in the board's littlefs, as the PC reads it from the flash
    assert boardfs.read_files(flash)["/new.bin"][0][:1] == b"\xe9"
