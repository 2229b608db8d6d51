"""mpota convert --port: a live stock board (served by `mpota sim serial`) made OTA-capable over
the wire with esptool, its littlefs files backed up on the PC and put back, names, bytes and
mtime; and, with the line cut (cable pulled, power gone) at esptool commands, the same command
run again finishes the job: no board left unbootable, no file lost."""

from __future__ import annotations

import concurrent.futures
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import littlefs
import pytest
from cutproxy import CutProxy
from esp_idf_defs import PartitionTable
from espsim import chips
from mpota import boardfs, convert, liveconvert, simdev
from test_convert import STOCK_4MIB, STOCK_4MIBPLUS, STOCK_8MIB, stock_bin, write_flash
from test_identity import REF_BIN
from test_wire import Served

MB = 1 << 20
T = 1_700_000_000_123_456_789  # ns since 1970: a file's mtime attribute

# chip, stock table, physical flash, app version and size, the stock filesystem region
BOARDS = {
    "esp32": (STOCK_4MIB, 4 * MB, "v1.24.0", 1_672_800, (0x200000, 0x200000)),
    "esp32s3": (STOCK_8MIB, 8 * MB, "v1.24.0", 1_650_000, (0x200000, 0x600000)),
    "esp32c3": (STOCK_4MIBPLUS, 4 * MB, "v1.28.0", 1_660_000, (0x200000, 0x200000)),
    "esp32c6": (STOCK_4MIBPLUS, 4 * MB, "v1.28.0", 1_860_000, (0x200000, 0x200000)),
}


def board_files() -> dict[str, tuple[bytes, int | None]]:
    rnd = random.Random(7)
    return {
        "/boot.py": (b"# This file is executed on every boot\n", T),
        "/main.py": (b"import app\napp.run()\n", T + 10**9),
        "/lib/app/__init__.py": (b"def run():\n    pass\n" * 30, T + 2 * 10**9),
        "/data/log.bin": (rnd.randbytes(50_000), T + 3 * 10**9),
        "/config.json": (b'{"ssid": "home"}', None),  # written by a tool that set no mtime
    }


_made: dict[str, tuple[bytes, bytes]] = {}


def make_board(d: Path, chip: str, app: bytes | None = None) -> Path:
    """A stock board as the user holds it: the merged .bin written at the bootloader offset,
    and a littlefs (MicroPython's geometry) holding files, in the stock filesystem region.
    (Made once per chip, copied after; its MAC comes from its path.) `app`: the app in
    factory instead of a made one."""
    flash = d / "board.bin"
    if chip in _made and app is None:
        flash.write_bytes(_made[chip][0])
        Path(f"{flash}.state").write_bytes(_made[chip][1])
        return flash
    csv, physical, version, size, (fs_at, fs_size) = BOARDS[chip]
    header = physical if chip == "esp32s3" else 4 * MB  # S3 up to v1.25: 8MiB table, 8 MB
    stock, _ = stock_bin(chip, csv, version, size, header)
    if app is not None:
        at = chips.get(chip).bootloader_offset
        stock = stock[: 0x10000 - at] + app
    write_flash(flash, stock, chips.get(chip).bootloader_offset, chip, physical)
    fs = littlefs.LittleFS(
        block_count=fs_size // 4096, disk_version=liveconvert.LFS_DISK_VERSION,
        **liveconvert.LFS_GEOMETRY,
    )  # fmt: skip
    for path, (data, mtime) in board_files().items():
        parent = path.rsplit("/", 1)[0]
        if parent:
            fs.makedirs(parent, exist_ok=True)
        with fs.open(path, "wb") as f:
            f.write(data)
        if mtime is not None:
            fs.setattr(path, liveconvert.MTIME, mtime.to_bytes(8, "little"))
    b = bytearray(flash.read_bytes())
    b[fs_at : fs_at + fs_size] = fs.context.buffer
    flash.write_bytes(b)
    if app is None:
        _made[chip] = (bytes(b), Path(f"{flash}.state").read_bytes())
    return flash


def convert_live(url: str, backup: Path, cwd: Path, timeout: float = 120, before: str = ""):
    opts = ["--yes", "--backup", str(backup)] + (["--before", before] if before else [])
    return subprocess.run(
        [sys.executable, "-m", "mpota", "convert", "--port", url, *opts],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
    )


def assert_converted(flash: Path, chip: str) -> None:
    """Boots ota_0 and holds every file, bytes and mtime."""
    log = simdev.power_on(flash)
    assert log[-1] == "running 'ota_0' at 0x10000", log
    table = {p.name: p for p in PartitionTable.from_binary(flash.read_bytes()[0x8000:0x8C00])}
    assert {"otadata", "ota_0", "ota_1"} <= set(table)
    assert boardfs.read_files(flash) == board_files()


@pytest.mark.parametrize("chip", list(BOARDS))
def test_a_live_board_converted_keeps_its_files(tmp_path, chip):
    flash = make_board(tmp_path, chip)
    before = flash.read_bytes()
    board = Served(flash)
    try:
        r = convert_live(board.url, tmp_path / "backup", tmp_path)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "lost: nvs (0x9000-0xF000) is erased" in r.stdout
        # The board's own app listed them back over the REPL, and they matched the backup.
        assert "done: " in r.stdout and "match the backup" in r.stdout
        for path, (data, _) in board_files().items():
            assert f"  {path}  {len(data)} bytes" in r.stdout
            assert (tmp_path / "backup" / "files" / path.lstrip("/")).read_bytes() == data
        again = convert_live(board.url, tmp_path / "backup", tmp_path)
        assert again.returncode == 0 and "already converted" in again.stdout, again.stderr
    finally:
        board.stop()
    after = flash.read_bytes()
    app_at = 0x10000
    assert after[app_at : app_at + BOARDS[chip][3]] == before[app_at : app_at + BOARDS[chip][3]]
    assert_converted(flash, chip)


@pytest.mark.skipif(not REF_BIN.exists(), reason=f"no reference image in {REF_BIN.parent}")
def test_a_board_with_a_real_micropython_build(tmp_path):
    # The real v1.28.0 C3 app (7 segments, two of them RTC, empty app version, appended
    # SHA-256): its length read from the board's segment headers is esptool's, and the board
    # converts, boots it from ota_0 and keeps its files.
    app = REF_BIN.read_bytes()
    flash = make_board(tmp_path, "esp32c3", app)
    n = convert._app_length("esp32c3", app, "the reference app")

    class Flash:
        def read(self, addr, k):
            return flash.read_bytes()[addr : addr + k]

    assert liveconvert.app_length(Flash(), "esp32c3") == n == len(app)
    board = Served(flash)
    try:
        r = convert_live(board.url, tmp_path / "backup", tmp_path)
        assert r.returncode == 0, r.stdout + r.stderr
        assert f"app {n} bytes in factory" in r.stdout
    finally:
        board.stop()
    assert_converted(flash, "esp32c3")
    assert flash.read_bytes()[0x10000 : 0x10000 + n] == app


def test_a_usb_serial_jtag_board_with_usb_reset(tmp_path):
    # The C3's USB-Serial-JTAG behind RFC 2217: esptool cannot see its USB ids, so --before
    # usb-reset, as for esptool itself
    flash = make_board(tmp_path, "esp32c3")
    board = Served(flash, "--usb", "jtag")
    try:
        r = convert_live(board.url, tmp_path / "backup", tmp_path, before="usb-reset")
        assert r.returncode == 0, r.stdout + r.stderr
    finally:
        board.stop()
    assert_converted(flash, "esp32c3")


def test_nothing_is_written_without_a_yes(tmp_path):
    flash = make_board(tmp_path, "esp32")
    before = flash.read_bytes()
    board = Served(flash)
    try:
        r = subprocess.run(
            [sys.executable, "-m", "mpota", "convert", "--port", board.url, "--backup",
             str(tmp_path / "b")],  # fmt: skip
            input="n\n", capture_output=True, text=True, cwd=tmp_path, timeout=120,
        )  # fmt: skip
    finally:
        board.stop()
    assert r.returncode == 1 and "nothing written" in r.stdout, r.stdout + r.stderr
    assert flash.read_bytes() == before
    assert (tmp_path / "b" / "files" / "data" / "log.bin").exists()  # the backup is made


def test_another_boards_journal_is_refused(tmp_path):
    (tmp_path / "a").mkdir()
    a = make_board(tmp_path / "a", "esp32")
    board = Served(a)
    try:
        r = convert_live(board.url, tmp_path / "b", tmp_path)
        assert r.returncode == 0, r.stderr
    finally:
        board.stop()
    j = (tmp_path / "b" / "journal.json").read_text()
    (tmp_path / "b" / "journal.json").write_text(j.replace('"done"', '"planned"'))
    (tmp_path / "c").mkdir()
    other = make_board(tmp_path / "c", "esp32")  # its MAC comes from its path: another
    before = other.read_bytes()
    board = Served(other)
    try:
        r = convert_live(board.url, tmp_path / "b", tmp_path)
    finally:
        board.stop()
    assert r.returncode == 2 and "the journal of board 24:0a:c4" in r.stderr, r.stderr
    assert r.stderr.count("\n") == 1
    assert other.read_bytes() == before


def count_commands(tmp_path: Path) -> tuple[int, list[int]]:
    """esptool's frames in a whole conversion (commands and the stub's read acknowledgements),
    and the numbers of the CI's cuts: one while reading (nothing written yet), then the erase,
    the filesystem's FLASH_DEFL_BEGIN and a middle block, the table's begin and its block, the
    first MD5."""
    d = tmp_path / "count"
    d.mkdir()
    flash = make_board(d, "esp32")
    board = Served(flash)
    proxy = CutProxy(int(board.url.rsplit(":", 1)[1]))
    try:
        r = convert_live(proxy.url, d / "backup", d)
        assert r.returncode == 0, r.stdout + r.stderr
    finally:
        proxy.close()
        board.stop()
    cmds = [(i + 1, op) for i, (op, n) in enumerate(proxy.slips[0].ops) if n >= 8]
    erase = next(k for k, op in cmds if op == 0xD1)
    begins = [k for k, op in cmds if op == 0x10]
    fs_data = [k for k, op in cmds if op == 0x11 and begins[0] < k < begins[1]]
    table_data = next(k for k, op in cmds if op == 0x11 and k > begins[1])
    md5 = next(k for k, op in cmds if op == 0x13)
    sample = [erase // 2, erase, begins[0], fs_data[len(fs_data) // 2], begins[1], table_data, md5]
    return proxy.commands, sample


def cut_points(n: int, sample: list[int]) -> list[tuple[int, str]]:
    """(frame number, cable or power). MPOTA_ALL_CUTS=1: every frame, both ways (slow, ~30
    min); else the sample, cable and power in turn."""
    if os.environ.get("MPOTA_ALL_CUTS") == "1":
        return [(k, m) for m in ("cable", "power") for k in range(1, n + 1)]
    return [(k, ("cable", "power")[i % 2]) for i, k in enumerate(sample)]


def test_a_cut_at_any_command_and_the_same_command_finishes(tmp_path):
    n, sample = count_commands(tmp_path)
    points = cut_points(n, sample)
    print(f"{n} esptool frames in a conversion; cuts: {points}")
    assert n > 20 and sample == sorted(set(sample))
    bad = {"not one line": [], "not finished": [], "unbootable": [], "files lost": []}
    # three boards at a time: each waits on its line most of the time
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        for found in pool.map(lambda km: one_cut(tmp_path, *km), points):
            for what, case in found:
                bad[what].append(case)
    print(
        f"cuts: {len(points)}; boards left unbootable: {len(bad['unbootable'])}, with files "
        f"lost: {len(bad['files lost'])}, not finished by the same command: "
        f"{len(bad['not finished'])}"
    )
    assert not any(bad.values()), bad


def one_cut(tmp_path: Path, k: int, mode: str) -> list[tuple[str, tuple]]:
    """A conversion cut at frame k (cable or power), then the same command again: what went
    wrong, as (kind, case) pairs."""
    found = []
    d = tmp_path / f"{mode}{k}"
    d.mkdir()
    flash = make_board(d, "esp32")
    board = Served(flash)
    killed = []

    def power(board=board, killed=killed):
        os.killpg(board.p.pid, signal.SIGKILL)
        killed.append(True)

    proxy = CutProxy(int(board.url.rsplit(":", 1)[1]), k, mode, power)
    try:
        try:
            liveconvert.run(proxy.url, str(d / "backup"), True, None, lambda m: None, None)
            found.append(("not finished", (mode, k, "the cut run went on")))
        except liveconvert.LiveError as e:
            if "\n" in str(e):
                found.append(("not one line", (mode, k)))
        finally:
            proxy.close()
        if killed:
            board.p.wait(timeout=10)
            board = Served(flash)  # the power is back
        again = convert_live(board.url, d / "backup", d)
        if again.returncode != 0:
            found.append(("not finished", (mode, k, again.stderr.strip())))
    finally:
        try:
            board.stop()
        except ProcessLookupError:
            pass
    if simdev.power_on(flash)[-1] != "running 'ota_0' at 0x10000":
        found.append(("unbootable", (mode, k)))
    if boardfs.read_files(flash) != board_files():
        found.append(("files lost", (mode, k)))
    return found
