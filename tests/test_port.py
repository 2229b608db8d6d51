"""The simulated ESP32 as MicroPython's esp32 port: a board's life (boot.py and main.py at every
boot, `mpota sim run --fs`), esp32.Partition under a locked heap, the frozen flashbdev,
io.BufferedWriter, extra module directories (--path), and the firmware's identity from the
banner of the image in the running slot."""

from __future__ import annotations

import hashlib
import re
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import image
from espsim import banner, device, otadata
from mpota import inspect, simdev

ROOT = Path(__file__).resolve().parent.parent
MPOTA = str(Path(sys.executable).parent / "mpota")
# ../shared/reference/firmware/ beside the repository (or beside its worktree's parent)
REFERENCE = next(
    (
        d / "shared/reference/firmware/micropython-v1.28.0-esp32c3.bin"
        for d in (ROOT.parent, ROOT.parent.parent)
        if (d / "shared/reference/firmware").is_dir()
    ),
    ROOT.parent / "shared/reference/firmware/micropython-v1.28.0-esp32c3.bin",
)
BOTH = ["micropython", "cpython"]


def play(sim_path, fs, runtime, *args, timeout=300):
    r = subprocess.run(
        [MPOTA, "sim", "run", str(sim_path), *args, "--fs", str(fs), "--runtime", runtime],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return r.returncode, r.stdout + r.stderr


def write(fs: Path, name: str, code: str) -> None:
    (fs / name).parent.mkdir(parents=True, exist_ok=True)
    (fs / name).write_text(textwrap.dedent(code))


def active(path: Path):
    flash = path.read_bytes()
    ent = inspect.read_otadata(flash, inspect.read_table(flash))
    return ent[otadata.active(ent)]


# --- the lifecycle -------------------------------------------------------------------------


@pytest.fixture
def board(tmp_path):
    path = tmp_path / "flash.bin"
    simdev.create(path, image("v1.22.0", 300_000))
    fs = tmp_path / "fs"
    simdev.seed_fs(fs)
    return path, fs


@pytest.mark.parametrize("runtime", BOTH)
def test_power_on_runs_boot_py_then_main_py_in_the_filesystem(board, runtime):
    path, fs = board
    write(fs, "boot.py", "import os\nprint('boot.py in', os.getcwd()); booted = 1\n")
    write(fs, "lib/helper.py", "X = 42\n")
    write(fs, "main.py", "import helper\nprint('main.py sees', booted, helper.X)\n")
    rc, out = play(path, fs, runtime)
    assert rc == 0, out
    assert "espsim: running 'ota_0' at 0x10000" in out  # the bootloader ran
    assert "boot.py in /\n" in out  # the littlefs in the flash, mounted at / (fs mirrors it)
    assert out.index("boot.py in") < out.index("main.py sees 1 42"), out


@pytest.mark.parametrize("runtime", BOTH)
def test_an_exception_in_boot_py_skips_main_py_and_ends_the_boot(board, runtime):
    path, fs = board
    write(fs, "boot.py", "raise ValueError('bad boot.py')\n")
    write(fs, "main.py", "print('MAIN RAN')\n")
    rc, out = play(path, fs, runtime)
    assert rc == 1, out
    assert "ValueError: bad boot.py" in out and "MAIN RAN" not in out


@pytest.mark.parametrize("runtime", BOTH)
def test_soft_reset_runs_boot_py_again_without_the_bootloader(board, runtime):
    path, fs = board
    write(
        fs,
        "main.py",
        """\
        import os, sys
        n = len(os.listdir("marks")) if "marks" in os.listdir() else 0
        print("main.py run", n)
        if n < 2:
            if n == 0:
                os.mkdir("marks")
            open("marks/%d" % n, "w").close()
            sys.exit()
        """,
    )
    boots = device.read_state(str(path))["boots"]
    rc, out = play(path, fs, runtime)
    assert rc == 0, out
    assert out.count("MPY: soft reboot") == 2
    assert "main.py run 2" in out
    assert device.read_state(str(path))["boots"] == boots + 1  # one power-on, no hard reset


@pytest.mark.parametrize("runtime", BOTH)
def test_max_boots_bounds_a_board_that_resets_forever(board, runtime):
    path, fs = board
    write(fs, "main.py", "import machine\nmachine.reset()\n")
    rc, out = play(path, fs, runtime, "--max-boots", "3")
    assert rc == 4, out
    assert "espsim: stopped after 3 boots (--max-boots 3)" in out
    assert out.count("espsim: hard reset") == 3


def test_a_script_that_does_not_reset_runs_no_boot(board):
    path, fs = board
    write(fs, "main.py", "print('MAIN RAN')\n")
    rc, out = play(path, fs, "micropython", "-c", "print('script', 6 * 7)")
    assert rc == 0 and "script 42" in out and "MAIN RAN" not in out, out


def test_sim_run_refuses_a_file_as_the_filesystem(board, tmp_path):
    path, _ = board
    (tmp_path / "afile").write_text("")
    rc, out = play(path, tmp_path / "afile", "micropython")
    assert rc == 2 and "not a directory" in out


def test_first_boot_without_a_filesystem_creates_it(board, tmp_path):
    path, _ = board
    fs = tmp_path / "newfs"
    rc, out = play(path, fs, "micropython")
    assert rc == 0, out
    assert "Performing initial setup" in out
    assert (fs / "boot.py").read_text() == simdev.STOCK_BOOT_PY


# A port test of our own, in the style of tests/ports/esp32/partition_ota.py: boot.py copies
# the running firmware, boots it, rolls back once, then confirms; state kept in a file.
OWN_PARTITION_TEST = """\
import machine
from esp32 import Partition
cur = Partition(Partition.RUNNING)
try:
    step = int(open("step").read())
except OSError:
    step = 0
print("step", step, "in", cur.info()[4])
nxt = cur.get_next_update()
if step == 0:
    buf = bytearray(4096)
    for b in range(cur.info()[3] // 4096):
        cur.readblocks(b, buf)
        nxt.writeblocks(b, buf)
    nxt.set_boot()
elif step == 1:
    pass  # on trial, not confirmed: the next boot goes back
elif step == 2:
    nxt.set_boot()
elif step == 3:
    Partition.mark_app_valid_cancel_rollback()
    print("DONE in", cur.info()[4])
with open("step", "w") as f:  # closed before the reset: littlefs commits at close
    f.write(str(step + 1))
if step < 3:
    machine.reset()
"""


@pytest.mark.parametrize("runtime", BOTH)
def test_own_partition_test_through_the_lifecycle(board, runtime):
    path, fs = board
    write(fs, "boot.py", OWN_PARTITION_TEST)
    rc, out = play(path, fs, runtime)
    assert rc == 0, out
    seq = re.findall(r"step (\d) in (ota_\d)", out)
    assert seq == [("0", "ota_0"), ("1", "ota_1"), ("2", "ota_0"), ("3", "ota_1")], out
    assert "PENDING_VERIFY -> ABORTED" in out and "DONE in ota_1" in out
    ent = active(path)
    assert ent.state == otadata.VALID and (ent.seq - 1) % 2 == 1  # ota_1, confirmed


# --- esp32.Partition under a locked heap (check_err_str.py's OTA half) -----------------------

HEAP_LOCKED = """\
from esp32 import Partition as p
import micropython
part = p.find(type=p.TYPE_DATA)[0]
fun = p.set_boot
try:
    fun(part)
except OSError as e:
    print(e)
exc = "FAILED TO RAISE"
e = None
micropython.heap_lock()
try:
    fun(part)
except OSError as e:
    exc = e
micropython.heap_unlock()
print("exc:", repr(exc))
buf = bytearray(16)
exc = e = None  # preallocated entries in globals
micropython.heap_lock()
try:
    part.readblocks(10000, buf)
except OSError as e:
    exc = e
micropython.heap_unlock()
print("exc:", repr(exc))
exc = e = None  # preallocated entries in globals
micropython.heap_lock()
try:
    part.ioctl(6, 10000)
except OSError as e:
    exc = e
micropython.heap_unlock()
print("exc:", repr(exc))
e = None
d1 = d2 = 0
micropython.heap_lock()
micropython.heap_lock()
try:
    fun(part)
except OSError as e:
    exc = e
d1 = micropython.heap_unlock()
d2 = micropython.heap_unlock()
print(d1, d2, repr(exc))
"""


def test_partition_errors_allocate_nothing_under_a_locked_heap(board):
    path, _ = board
    r = simdev.run(path, HEAP_LOCKED, "micropython")
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.splitlines() == [
        "(-5379, 'ESP_ERR_OTA_VALIDATE_FAILED')",
        "exc: OSError()",
        "exc: OSError()",  # readblocks past the end: ESP_ERR_INVALID_SIZE, bare
        "exc: OSError()",  # ioctl BLOCK_ERASE past the end: bare
        "1 0 OSError()",  # the lock depth is put back as it was
    ]


# --- flashbdev, io.BufferedWriter, --path ------------------------------------------------

# Third-party style code: an io.IOBase over a block device behind io.BufferedWriter, as
# glenn20/micropython-esp32-ota v0.3's blockdev_writer does.
BUFFERED = """\
import io, hashlib
from esp32 import Partition
from flashbdev import bdev
print("bdev", bdev.info()[4], bdev.ioctl(5, 0))

class Dev(io.IOBase):
    def __init__(self, part):
        self.part, self.pos, self.writes = part, 0, []
    def write(self, data):
        self.writes.append(len(data))
        if len(data) % 4096:  # a last, partial block: erase it, then program
            self.part.ioctl(6, self.pos // 4096)
            self.part.writeblocks(self.pos // 4096, data, 0)
        else:
            self.part.writeblocks(self.pos // 4096, data)
        self.pos += len(data)
        return len(data)

part = Partition(Partition.RUNNING).get_next_update()
dev = Dev(part)
w = io.BufferedWriter(dev, 4096)
data = bytes(range(256)) * 41  # 10496 bytes: 2 blocks and a part
n = 0
for i in range(0, len(data), 1000):
    n += w.write(data[i:i + 1000])
print("written", n, dev.writes)
w.flush()
print("flushed", dev.writes)
buf = bytearray(len(data))
part.readblocks(0, buf)
print("same", bytes(buf) == data)
"""


@pytest.mark.parametrize("runtime", BOTH)
def test_flashbdev_and_buffered_writer_over_a_block_device(board, runtime):
    path, _ = board
    r = simdev.run(path, BUFFERED, runtime)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.splitlines() == [
        "bdev vfs 4096",
        "written 10496 [4096, 4096]",
        "flushed [4096, 4096, 2304]",
        "same True",
    ]


def test_flashbdev_without_a_filesystem_partition_is_none(tmp_path):
    path = tmp_path / "flash.bin"
    csv = "nvs,data,nvs,0x9000,0x6000,\nfactory,app,factory,0x10000,0x1f0000,\n"
    simdev.create(path, image("v1.22.0", 300_000), table=inspect.table_from_csv(csv))
    r = simdev.run(path, "from flashbdev import bdev\nprint(bdev)", "micropython")
    assert r.stdout.strip() == "None", r.stdout + r.stderr


def test_buffered_writer_reports_a_stream_that_claims_too_much(board):
    path, _ = board
    code = """\
    import io
    class Liar(io.IOBase):
        def write(self, b):
            return len(b) + 1
    w = io.BufferedWriter(Liar(), 16)
    try:
        w.write(bytes(16))
    except OSError as e:
        print("OSError", e.args[0])
    """
    for runtime in BOTH:
        r = simdev.run(path, textwrap.dedent(code), runtime)
        assert r.stdout.strip() == "OSError 5", (runtime, r.stdout + r.stderr)


@pytest.mark.parametrize("runtime", BOTH)
def test_path_puts_a_directory_first(board, tmp_path, runtime):
    path, fs = board
    extra = tmp_path / "extra"
    write(extra, "ota/__init__.py", "WHO = 'third party'\n")
    rc, out = play(
        path, fs, runtime, "-c", "import ota; print('ota is', ota.WHO)", "--path", str(extra)
    )
    assert rc == 0 and "ota is third party" in out, out
    r = simdev.run(path, "import ota; print(hasattr(ota, 'WHO'))", runtime)
    assert r.stdout.strip() == "False"  # without --path, the project's ota package


# --- firmware identity -------------------------------------------------------------------


def with_banner(img: bytes, text: bytes, at: int = 32 + 0x200) -> bytes:
    """img with `text` written into its first segment's data (by default after esp_app_desc_t,
    at +0x200), checksum and appended SHA-256 recomputed."""
    img = bytearray(img)
    n = struct.unpack_from("<I", img, 28)[0]
    assert 32 <= at and at + len(text) < 32 + n
    img[at : at + len(text)] = text
    # segments end, then the XOR checksum closing a 16-byte block, then the SHA-256
    off = 24
    csum = 0xEF
    for _ in range(img[1]):
        size = struct.unpack_from("<I", img, off + 4)[0]
        for b in img[off + 8 : off + 8 + size]:
            csum ^= b
        off += 8 + size
    end = (off + 16) & ~15
    img[end - 1] = csum
    img[end : end + 32] = hashlib.sha256(bytes(img[:end])).digest()
    return bytes(img)


def bannerless(img: bytes) -> bytes:
    """img with its banner string spoilt ("MicroPython v..." -> "microPython v..."), as a build
    whose banner the scan cannot find."""
    i = img.find(b"MicroPython v")
    while i >= 0:
        img = with_banner(img, b"m", at=i)
        i = img.find(b"MicroPython v")
    return img


IDENTITY = """\
import os, sys
u = os.uname()
print(u.sysname, u.nodename, u.release, "|", u.version, "|", u.machine)
print(tuple(sys.implementation.version), "|", sys.implementation._machine)
print(sys.version)
"""


def identity(tmp_path, img, runtime):
    path = tmp_path / "flash.bin"
    simdev.create(path, img)
    r = simdev.run(path, IDENTITY, runtime)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout.splitlines()


@pytest.mark.parametrize("runtime", BOTH)
def test_identity_from_a_crafted_banner(tmp_path, runtime):
    img = with_banner(
        image("v1.22.0", 300_000),
        b"\0MicroPython v1.23.0-preview.42.gabcdef0123 on 2024-03-01\0\0\0"
        b"; Generic ESP32 module with ESP32\0",
    )
    assert identity(tmp_path, img, runtime) == [
        "esp32 esp32 1.23.0-preview | v1.23.0-preview.42.gabcdef0123 on 2024-03-01 | "
        "Generic ESP32 module with ESP32",
        "(1, 23, 0, 'preview') | Generic ESP32 module with ESP32",
        "3.4.0; MicroPython v1.23.0-preview.42.gabcdef0123 on 2024-03-01",
    ]


@pytest.mark.parametrize("runtime", BOTH)
def test_identity_follows_the_running_slot(tmp_path, runtime):
    old = with_banner(image("v1.22.0", 300_000), b"\0MicroPython v1.22.0 on 2024-01-05\0")
    new = with_banner(image("v1.23.0", 300_000), b"\0MicroPython v1.23.0 on 2024-05-31\0")
    path = tmp_path / "flash.bin"
    simdev.create(path, old)
    (tmp_path / "new.bin").write_bytes(new)
    code = """\
    import os
    print("before", os.uname().release)
    from ota.writer import OTA
    with open("new.bin", "rb") as f, OTA(verbose=False) as w:
        w.write_file(f)
    import machine
    machine.reset()
    """
    write(tmp_path / "fs", "main.py", "import os\nprint('after', os.uname().release)\n")
    (tmp_path / "fs" / "new.bin").write_bytes(new)
    rc, out = play(path, tmp_path / "fs", runtime, "-c", textwrap.dedent(code))
    assert rc == 0, out
    assert "before 1.22.0" in out and "after 1.23.0" in out, out


@pytest.mark.skipif(not REFERENCE.exists(), reason=f"{REFERENCE} is absent")
@pytest.mark.parametrize("runtime", BOTH)
def test_identity_of_the_real_micropython_image(tmp_path, runtime):
    # A real ESP32-C3 image on the simulated chip: only its banner is read (the simulated
    # bootloader of this branch checks ESP32 images; the chip's own rules are another change).
    ref = REFERENCE.read_bytes()
    b = banner.find(lambda a, n: ref[a : a + n], 0, len(ref))
    assert b == {"tag": "v1.28.0", "date": "2026-04-06", "machine": "ESP32C3 module with ESP32C3"}
    assert banner.version_tuple(b["tag"]) == (1, 28, 0, "")
    assert banner.release(b["tag"]) == "1.28.0"
    # On the device: the reference image in the running slot (bootloader state set by hand).
    path = tmp_path / "flash.bin"
    simdev.create(path, image("v1.22.0", 300_000))
    flash = bytearray(path.read_bytes())
    flash[0x10000 : 0x10000 + len(ref)] = ref
    path.write_bytes(flash)
    r = simdev.run(path, IDENTITY, runtime)
    assert r.stdout.splitlines()[:2] == [
        "esp32 esp32 1.28.0 | v1.28.0 on 2026-04-06 | ESP32C3 module with ESP32C3",
        "(1, 28, 0, '') | ESP32C3 module with ESP32C3",
    ], r.stdout + r.stderr


def test_without_a_banner_the_interpreter_speaks(tmp_path):
    img = bannerless(image("v1.22.0", 300_000))
    assert banner.find(lambda a, n: img[a : a + n], 0, len(img)) is None
    out = identity(tmp_path, img, "micropython")
    assert not out[0].startswith("esp32 esp32"), out  # the unix port's own sysname
    assert "MicroPython" in out[2]


def test_banner_found_after_any_data():
    # A string literal at a word boundary follows whatever constant the linker put before it:
    # a printable last byte ('.' 0x2e, as in image("v1.22.0", 300_032)) does not hide it.
    preceded = set()
    for version, size in [("v1.22.0", 300_032), ("v1.22.0", 1_400_000), ("v1.23.0", 400_016)] + [
        ("v1.24.0", 600_032 + 16 * k) for k in range(12)
    ]:
        img = image(version, size)
        i = img.find(b"MicroPython " + version.encode())
        preceded.add(chr(img[i - 1]).isprintable())
        b = banner.find(lambda a, n, img=img: img[a : a + n], 0, len(img))
        assert b and b["tag"] == version, (version, size, img[i - 8 : i])
    assert preceded == {True, False}  # both kinds of neighbour were tried


def test_banner_scan_rejects_lookalikes_and_is_bounded():
    # not at a string's start ("3.4.0; MicroPython ..."), no date, unterminated
    for text in (
        b"\x003.4.0; MicroPython v1.28.0 on 2026-04-06\0",
        b"\0MicroPython v1.28.0\0",
        b"\0MicroPython v1.28.0 on 2026-04-06" + b"x" * 200,
    ):
        img = with_banner(bannerless(image("v1.22.0", 300_000)), text)
        assert banner.find(lambda a, n, img=img: img[a : a + n], 0, len(img)) is None, text
    reads = []
    big = bannerless(image("v1.22.0", 3_000_000))

    def read(a, n):
        reads.append(n)
        return big[a : a + n]

    assert banner.find(read, 0, len(big)) is None
    assert sum(reads) < banner.MAX_SCAN + 0x10000


@pytest.mark.parametrize("runtime", BOTH)
@pytest.mark.parametrize("chip", ["esp32", "esp32s3", "esp32c6"])
def test_identity_of_a_realistic_image(tmp_path, runtime, chip):
    # mpota's images lay the banner out as a real build does (no NUL before it, word-aligned
    # after code bytes): the simulated board names the firmware from it.
    path = tmp_path / "flash.bin"
    simdev.create(path, image("v1.24.0", chip=chip), chip=chip)
    r = simdev.run(path, IDENTITY, runtime)
    assert r.returncode == 0, r.stdout + r.stderr
    first = r.stdout.splitlines()[0]
    mcu = chip.upper()
    assert first.startswith("esp32 esp32 1.24.0 | v1.24.0 on "), first
    assert first.endswith(f"| {mcu} module with {mcu}") or first.endswith(
        f"| Generic {mcu} module with {mcu}"
    ), first
