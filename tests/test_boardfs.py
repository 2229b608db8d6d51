"""The simulated board's filesystem is the port's: littlefs2 in its flash (the "vfs" partition,
or the region MicroPython v1.26+ registers past the table), mounted at / by the device under
MicroPython's unix port, formatted at first boot, fs_corrupted() otherwise; read and written
from the PC with littlefs-python (mpota.boardfs, `mpota sim fs`)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import image
from espsim import parttable
from mpota import boardfs, inspect, simdev

MPOTA = str(Path(sys.executable).parent / "mpota")
V126_TABLE = (  # partitions-4MiBplus.csv: no vfs row
    "nvs,data,nvs,0x9000,0x6000,\nphy_init,data,phy,0xf000,0x1000,\n"
    "factory,app,factory,0x10000,0x1f0000,\n"
)


def board(tmp_path: Path, version: str = "v1.24.0", table=None, flash_size=None) -> Path:
    flash = tmp_path / "flash.bin"
    kw = {"table": table} if table else {}
    if flash_size:
        kw["flash_size"] = flash_size
    simdev.create(flash, image(version, 200_000), **kw)
    return flash


def device(flash: Path, code: str, cut_after: int | None = None, runtime: str = "micropython"):
    # code run on the board with its filesystem mounted at / (as after a boot), under
    # MicroPython (vfs.VfsLfs2) or CPython (littlefs-python behind open() and os.*)
    return simdev.run(flash, "simboot.mount_fs()\n" + code, runtime, cut_after=cut_after)


BOTH = ["micropython", "cpython"]


@pytest.mark.parametrize("runtime", BOTH)
def test_device_and_pc_see_the_same_littlefs(tmp_path, runtime):
    flash = board(tmp_path)
    assert boardfs.fs_region(flash) == (0x310000, 0xF0000)  # the seed table's vfs row
    assert boardfs.state(flash) == "blank"
    r = device(
        flash,
        "import os\n"
        "with open('/hello.txt', 'w') as f: f.write('from the board')\n"
        "os.mkdir('/lib')\n"
        "with open('/lib/m.py', 'wb') as f: f.write(bytes(range(256)) * 20)\n"
        "print(sorted(os.listdir('/')), os.getcwd())",
        runtime=runtime,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    # first boot of a blank region: the port's inisetup.setup()
    assert r.stdout.splitlines() == [
        "Performing initial setup",
        "['boot.py', 'hello.txt', 'lib'] /",
    ]
    files = boardfs.read_files(flash)
    assert sorted(files) == ["/boot.py", "/hello.txt", "/lib/m.py"]
    assert files["/boot.py"][0] == simdev.STOCK_BOOT_PY.encode()
    assert files["/hello.txt"][0] == b"from the board"
    assert files["/lib/m.py"][0] == bytes(range(256)) * 20
    # the bytes are in the vfs partition of the flash file, nowhere else
    raw = flash.read_bytes()
    assert raw.find(b"from the board") in range(0x310000, 0x400000)
    # and the other way round: written on the PC, read on the board
    files["/hello.txt"] = (b"from the PC", None)
    del files["/lib/m.py"]
    boardfs.write_files(flash, files, dirs=["/lib"])  # an empty directory stays
    r = device(
        flash, "import os\nprint(open('/hello.txt').read(), os.listdir('/lib'))", runtime=runtime
    )
    assert r.stdout == "from the PC []\n", r.stdout + r.stderr


def test_micropython_mounts_its_own_vfs_lfs2_at_root(tmp_path):
    flash = board(tmp_path)
    r = device(flash, "import vfs\nprint([(type(m.board).__name__, p) for m, p in vfs.mount()])")
    assert r.stdout.splitlines()[-1] == "[('VfsLfs2', '/')]", r.stdout + r.stderr


@pytest.mark.parametrize("runtime", BOTH)
def test_mtime_round_trips(tmp_path, runtime):
    flash = board(tmp_path)
    t = 1_700_000_000_123_456_789  # ns
    boardfs.write_files(flash, {"/a.txt": (b"a", t)})
    r = device(flash, "import os\nprint(os.stat('/a.txt')[8])", runtime=runtime)
    assert r.stdout == f"{t // 10**9}\n", r.stdout + r.stderr  # VfsLfs2's st_mtime (seconds)
    before = time.time_ns()
    device(flash, "with open('/b.txt', 'w') as f: f.write('b')", runtime=runtime)
    data, mtime = boardfs.read_files(flash)["/b.txt"]
    assert data == b"b" and before - 10**9 < mtime < time.time_ns() + 10**9
    assert boardfs.read_files(flash)["/a.txt"] == (b"a", t)
    # the mirror folder gets the board's mtimes
    out = tmp_path / "mirror"
    boardfs.mirror_out(flash, out)
    assert (out / "a.txt").stat().st_mtime_ns == t


def test_a_corrupted_filesystem_region_is_fs_corrupted(tmp_path):
    flash = board(tmp_path)
    with open(flash, "r+b") as f:
        f.seek(0x310000)
        f.write(b"stale data" * 10)  # neither blank nor littlefs (block 1 blank)
    assert boardfs.state(flash) == "corrupted"
    r = subprocess.run(
        [MPOTA, "sim", "run", str(flash), "--fs", str(tmp_path / "fs")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 5, r.stdout + r.stderr
    assert "The filesystem appears to be corrupted." in r.stdout
    assert "inisetup.fs_corrupted()" in r.stdout
    assert not (tmp_path / "fs").exists()  # nothing to mirror
    with pytest.raises(boardfs.NoFilesystem, match="corrupted"):
        boardfs.read_files(flash)
    # the region is left as it was: no format
    assert flash.read_bytes()[0x310000:0x310064] == b"stale data" * 10


def test_v1_26_registers_the_region_past_the_table_to_the_physical_end(tmp_path):
    table = inspect.table_from_csv(V126_TABLE)
    flash = board(tmp_path, "v1.26.0", table, flash_size=8 << 20)
    assert boardfs.fs_region(flash) == (0x200000, (8 << 20) - 0x200000)
    r = device(flash, "from flashbdev import bdev\nprint(bdev.info())")
    assert r.stdout.splitlines()[-1] == "(1, 129, 2097152, 6291456, 'vfs', False)", r.stdout
    assert b"littlefs" in flash.read_bytes()[0x200000 : 0x200000 + 8192]
    # not in the table: MicroPython registers it at boot, only since v1.26
    raw = flash.read_bytes()
    parts = parttable.parse(raw[parttable.OFFSET : parttable.OFFSET + parttable.MAX_LEN], 8 << 20)
    assert [p.label for p in parts] == ["nvs", "phy_init", "factory"]
    (tmp_path / "old").mkdir()
    old = board(tmp_path / "old", "v1.25.0", table)
    r = device(old, "from flashbdev import bdev\nprint(bdev)")
    assert r.stdout.strip() == "None", r.stdout + r.stderr


@pytest.mark.parametrize("runtime", BOTH)
def test_a_power_cut_in_a_write_leaves_the_old_or_the_new_file(tmp_path, runtime):
    flash = board(tmp_path)
    old, new = b"old " * 3000, b"NEW " * 3000
    boardfs.write_files(flash, {"/data.bin": (old, None)})
    clean = flash.read_bytes()
    code = "with open('/data.bin', 'wb') as f:\n    f.write(%r)\nprint('done')" % new
    seen = set()
    for n in range(0, 400, 3):
        flash.write_bytes(clean)
        r = device(flash, code, cut_after=n, runtime=runtime)
        files = boardfs.read_files(flash)  # mounts: littlefs is copy-on-write
        assert files["/data.bin"][0] in (old, new), n
        seen.add(files["/data.bin"][0] == new)
        if "done" in r.stdout:
            break
    else:
        pytest.fail("the write never finished")
    assert seen == {False, True}  # cut before the commit, and the run that got through


def test_sim_fs_lists_gets_puts_and_removes(tmp_path):
    flash = board(tmp_path)
    src = tmp_path / "up.bin"
    src.write_bytes(b"\x00\x01" * 5000)

    def mpota(*args, ok=True):
        r = subprocess.run(
            [MPOTA, "sim", "fs", str(flash), *args], capture_output=True, text=True, cwd=tmp_path
        )
        assert (r.returncode == 0) == ok, r.stdout + r.stderr
        return r.stdout + r.stderr

    assert "blank" in mpota("ls", ok=False)  # the port formats it at first boot
    device(flash, "pass")
    assert mpota("ls") == "boot.py\n"
    mpota("put", str(src), "/lib/")
    assert mpota("ls") == "boot.py\nlib/\n"
    assert mpota("ls", "/lib") == "up.bin\n"
    r = device(flash, "print(len(open('/lib/up.bin', 'rb').read()))")
    assert r.stdout == "10000\n", r.stdout + r.stderr
    mpota("get", "/lib/up.bin", "down.bin")
    assert (tmp_path / "down.bin").read_bytes() == src.read_bytes()
    assert (tmp_path / "down.bin").stat().st_mtime_ns == src.stat().st_mtime_ns
    mpota("rm", "/lib/up.bin")
    assert mpota("ls", "/lib") == ""
    assert "nosuch" in mpota("get", "nosuch", ok=False)


def test_sim_run_fs_mirrors_the_board(tmp_path):
    flash = board(tmp_path)
    fs = tmp_path / "fs"
    fs.mkdir()
    (fs / "main.py").write_text("with open('/out.txt', 'w') as f: f.write('ran')\n")
    (fs / "gone.txt").write_text("x")
    boardfs.write_files(flash, {"/stale.txt": (b"s", None)})
    r = subprocess.run(
        [MPOTA, "sim", "run", str(flash), "--fs", str(fs)], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stdout + r.stderr
    # DIR went onto the board (stale.txt removed), the board's file came back
    assert sorted(boardfs.read_files(flash)) == ["/gone.txt", "/main.py", "/out.txt"]
    assert (fs / "out.txt").read_text() == "ran"
    (fs / "gone.txt").unlink()
    subprocess.run([MPOTA, "sim", "run", str(flash), "--fs", str(fs)], capture_output=True)
    assert sorted(boardfs.read_files(flash)) == ["/main.py", "/out.txt"]
