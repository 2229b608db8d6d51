"""The simulated board's serial port while its app runs (mpota/appconsole.py): MicroPython's
REPL as a board speaks it. mpremote, unmodified, drives the board over a pseudo-terminal; the
friendly and raw REPLs are checked byte by byte."""

from __future__ import annotations

import hashlib
import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import image
from espsim import device
from mpota import appconsole, boardfs, simdev

MPREMOTE = str(Path(sys.executable).parent / "mpremote")
BANNER = b"MicroPython v1.23.0 on 2023-10-12; Generic ESP32 module with ESP32\r\n"
HELP = b'Type "help()" for more information.\r\n'

MAIN_PY = "print('main.py ran')\nX = 42\n"
BOOT_PY = "with open('/boots.txt', 'a') as f:\n    f.write('b')\n"


@pytest.fixture
def board(tmp_path: Path):
    """A simulated ESP32 (MicroPython v1.23.0 in ota_0) whose serial port is a pty, booted;
    its filesystem is tmp_path/fs with a boot.py that counts boots and a main.py."""
    flash = tmp_path / "flash.bin"
    simdev.create(flash, image("v1.23.0"), boot=False)
    fs = tmp_path / "fs"
    fs.mkdir()
    (fs / "boot.py").write_text(BOOT_PY)
    (fs / "main.py").write_text(MAIN_PY)
    port = appconsole.PtyPort(lambda write: appconsole.AppConsole(flash, fs, write=write))
    port.flash, port.fs = flash, fs
    port.console.boot()
    assert port.console.wait_idle(30)
    yield port
    port.close()


def mpremote(board, *args: str, ok: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(
        [MPREMOTE, "connect", board.path, *args], capture_output=True, text=True, timeout=60
    )
    if ok:
        assert r.returncode == 0, r.stdout + r.stderr
    return r


class Term:
    """The host end of the serial line, for bytes typed by hand."""

    def __init__(self, path: str):
        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
        self.seen = bytearray()

    def write(self, data: bytes) -> None:
        os.write(self.fd, data)

    def expect(self, ending: bytes, timeout: float = 20) -> bytes:
        """Everything up to and including `ending` (which must come within `timeout`)."""
        end = time.monotonic() + timeout
        while ending not in self.seen:
            left = end - time.monotonic()
            assert left > 0, f"no {ending!r} in {bytes(self.seen)!r}"
            if select.select([self.fd], [], [], left)[0]:
                self.seen += os.read(self.fd, 4096)
        i = self.seen.index(ending) + len(ending)
        got = bytes(self.seen[:i])
        del self.seen[:i]
        return got

    def close(self) -> None:
        os.close(self.fd)


@pytest.fixture
def term(board):
    t = Term(board.path)
    t.expect(HELP + b">>> ")  # the boot's output, waiting in the line
    yield t
    t.close()


def test_boot_log_then_friendly_repl(tmp_path: Path):
    flash = tmp_path / "flash.bin"
    simdev.create(flash, image("v1.23.0"), boot=False)
    fs = tmp_path / "fs"
    simdev.seed_fs(fs)
    (fs / "main.py").write_text(MAIN_PY)
    out = bytearray()
    con = appconsole.AppConsole(flash, fs, write=out.extend)
    try:
        con.boot()
        assert con.wait_idle(30)
        # the first boot of a freshly flashed board (otadata blank)
        assert bytes(out) == (
            b"espsim: boot: No factory image, trying OTA 0\r\n"
            b"espsim: boot: Loaded app from partition at offset 0x10000\r\n"
            b"espsim: boot: Set actual ota_seq=1 in otadata[0]\r\n"
            b"espsim: running 'ota_0' at 0x10000\r\n"
            b"main.py ran\r\n" + BANNER + HELP + b">>> "
        )
        assert device.read_state(str(flash))["boots"] == 1
    finally:
        con.stop()
    assert con.state == "off"


def test_mpremote_exec_eval_run(board, tmp_path: Path):
    r = mpremote(board, "exec", "print('hi', 6 * 7)")
    assert r.stdout == "hi 42\n"
    assert mpremote(board, "eval", "[1, 'a'] * 2").stdout == "[1, 'a', 1, 'a']\n"
    script = tmp_path / "script.py"
    script.write_text("def f(n):\n    return n * 2\n\nfor i in range(3):\n    print(f(i))\n")
    assert mpremote(board, "run", str(script)).stdout == "0\n2\n4\n"
    # The interpreter lives on between commands of one connection, as on a board...
    r = mpremote(board, "exec", "a = 5", "exec", "print(a * 2)")
    assert r.stdout == "10\n"
    # ...and each connection soft-resets it (mpremote does): a new interpreter, in which the
    # raw REPL ran boot.py only (ports/esp32/main.c runs main.py in the friendly REPL only).
    r = mpremote(board, "exec", "print('a' in globals(), 'X' in globals())")
    assert r.stdout == "False False\n"
    # An exception: the board's traceback (none of the simulator's frames), exit status 1.
    r = mpremote(board, "exec", "def g():\n    1/0\ng()", ok=False)
    assert r.returncode == 1
    assert r.stdout == (
        "Traceback (most recent call last):\n"
        '  File "<stdin>", line 3, in <module>\n'
        '  File "<stdin>", line 2, in g\n'
        "ZeroDivisionError: divide by zero\n"
    )


def test_mpremote_fs(board, tmp_path: Path):
    fs = board.fs
    data = bytes(range(256)) * 21 + b"end"
    up = tmp_path / "up.bin"
    up.write_bytes(data)
    mpremote(board, "fs", "mkdir", ":d1")
    mpremote(board, "fs", "cp", str(up), ":d1/up.bin")
    # in the littlefs of the board's flash, and in its mirror folder
    assert boardfs.read_files(board.flash)["/d1/up.bin"][0] == data
    assert (fs / "d1" / "up.bin").read_bytes() == data
    r = mpremote(board, "fs", "ls", ":")
    assert "d1/" in r.stdout and "boot.py" in r.stdout
    assert f"{len(data)} up.bin" in mpremote(board, "fs", "ls", ":d1").stdout
    down = tmp_path / "down.bin"
    mpremote(board, "fs", "cp", ":d1/up.bin", str(down))
    assert down.read_bytes() == data
    # the board's root is its filesystem: no host directory shows
    r = mpremote(board, "exec", "import os; print(sorted(os.listdir('/')))")
    assert r.stdout == str(sorted(p.name for p in fs.iterdir())) + "\n"
    mpremote(board, "fs", "rm", ":d1/up.bin")
    assert not (fs / "d1" / "up.bin").exists()
    r = mpremote(board, "fs", "rm", ":nosuch", ok=False)
    assert r.returncode != 0 and "nosuch" in r.stderr


def test_mpremote_soft_reset_and_reset(board):
    boots = (board.fs / "boots.txt").read_text()
    mpremote(board, "soft-reset")
    # mpremote's soft reset (raw REPL, Ctrl-D) and the one of the command that follows
    assert (board.fs / "boots.txt").read_text() == boots + "b"
    before = device.read_state(str(board.flash))["boots"]
    mpremote(board, "reset")
    # machine.reset(): the simulated bootloader ran, and the app is up again
    assert board.console.wait_idle(30)
    time.sleep(0.3)
    assert board.console.wait_idle(30)
    assert device.read_state(str(board.flash))["boots"] == before + 1
    assert board.console.mode == "friendly"
    r = mpremote(board, "exec", "import machine; print(machine.reset_cause())")
    assert r.stdout == "2\n"  # HARD_RESET


def test_mpremote_mip_install(board, http_dir):
    root, url = http_dir
    files = {"hello/__init__.py": b"GREETING = 'hello from mip'\n", "hello/util.py": b"N = 7\n"}
    hashes = []
    for name, body in files.items():
        h = hashlib.sha256(body).hexdigest()[:8]
        (root / "file" / h[:2]).mkdir(parents=True, exist_ok=True)
        (root / "file" / h[:2] / h).write_bytes(body)
        hashes.append([name, h])
    pkg = root / "package" / "6" / "hello"
    pkg.mkdir(parents=True)
    (pkg / "latest.json").write_text(json.dumps({"hashes": hashes, "version": "1.0"}))
    r = mpremote(board, "mip", "install", "--index", url, "hello")
    assert "Done" in r.stdout
    for name, body in files.items():
        assert (board.fs / "lib" / name).read_bytes() == body  # in /lib, as on a board
    r = mpremote(board, "exec", "import hello, hello.util; print(hello.GREETING, hello.util.N)")
    assert r.stdout == "hello from mip 7\n"
    # installed again: mip finds the files there, with their hashes
    assert (
        "Exists: /lib/hello/util.py"
        in mpremote(board, "mip", "install", "--index", url, "hello").stdout
    )


def test_friendly_repl(board, term):
    term.write(b"1+2\r")
    assert term.expect(b">>> ") == b"1+2\r\n3\r\n>>> "
    term.write(b"X\r")  # main.py ran in the friendly REPL's globals
    assert term.expect(b">>> ") == b"X\r\n42\r\n>>> "
    # a compound statement: continuation lines, auto-indent, ended by an empty line
    term.write(b"for i in range(2):\rprint(i * 10)\r\r\r\r")
    assert term.expect(b">>> ") == (
        b"for i in range(2):\r\n...     print(i * 10)\r\n...     \r\n...     \r\n... \r\n"
        b"0\r\n10\r\n>>> "
    )
    # line editing: backspace
    term.write(b"7*8\x7f9\r")
    assert term.expect(b">>> ").endswith(b"63\r\n>>> ")
    # Ctrl-C interrupts running code
    term.write(b"while True: pass\r\r")
    term.expect(b"while True: pass\r\n... \r\n")
    time.sleep(0.3)
    term.write(b"\x03")
    assert term.expect(b">>> ") == (
        b"Traceback (most recent call last):\r\n"
        b'  File "<stdin>", line 1, in <module>\r\n'
        b"KeyboardInterrupt: \r\n>>> "
    )
    # Ctrl-C at the prompt discards the line; Ctrl-B prints the banner
    term.write(b"abc\x03")
    assert term.expect(b">>> ") == b"abc\r\n>>> "
    term.write(b"\x02")
    assert term.expect(b">>> ") == b"\r\n" + BANNER + HELP + b">>> "
    # an exception
    term.write(b"nosuch\r")
    assert term.expect(b">>> ") == (
        b"nosuch\r\nTraceback (most recent call last):\r\n"
        b'  File "<stdin>", line 1, in <module>\r\n'
        b"NameError: name 'nosuch' isn't defined\r\n>>> "
    )
    # input() reads the wire; what the code leaves unread goes back to the REPL
    term.write(b"s = input('? ')\r")
    term.expect(b"s = input('? ')\r\n? ")
    term.write(b"typed\rs\r")
    assert term.expect(b">>> ") == b"typed\r\n>>> "  # echoed by input()
    assert term.expect(b">>> ") == b"s\r\n'typed'\r\n>>> "
    # Ctrl-D: soft reboot, boot.py and main.py again, the banner
    term.write(b"\x04")
    assert (
        term.expect(b">>> ")
        == b"\r\nMPY: soft reboot\r\nmain.py ran\r\n" + BANNER + HELP + b">>> "
    )
    term.write(b"'s' in globals()\r")
    assert term.expect(b">>> ").endswith(b"False\r\n>>> ")
    # paste mode
    term.write(b"\x05if 1:\r    print('pasted')\r\x04")
    assert term.expect(b">>> ") == (
        b"\r\npaste mode; Ctrl-C to cancel, Ctrl-D to finish\r\n=== "
        b"if 1:\r\n===     print('pasted')\r\n=== \r\npasted\r\n>>> "
    )


def _console(tmp_path: Path, main_py: str | None = None):
    # main_py: the board's main.py (fs mirrors the board's filesystem: files written into it
    # go onto the board before it runs, as the REPL's own writes come back into it)
    flash = tmp_path / "flash.bin"
    simdev.create(flash, image("v1.23.0"), boot=False)
    fs = tmp_path / "fs"
    simdev.seed_fs(fs)
    if main_py is not None:
        (fs / "main.py").write_text(main_py)
    out = bytearray()
    con = appconsole.AppConsole(flash, fs, write=out.extend)
    con.boot()
    assert con.wait_idle(30)
    return con, out, fs


def _step(con, out, data: bytes) -> bytes:
    del out[:]
    con.feed(data)
    assert con.wait_idle(30)
    return bytes(out)


def test_raw_repl_bytes(tmp_path: Path):
    con, out, fs = _console(tmp_path, "print('main')\n")
    try:
        assert _step(con, out, b"\x01") == b"\r\nraw REPL; CTRL-B to exit\r\n>"
        assert _step(con, out, b"print(1)\nprint(2)\x04") == b"OK1\r\n2\r\n\x04\x04>"
        assert _step(con, out, b"v = 3\x04") == b"OK\x04\x04>"
        assert _step(con, out, b"print(v)\nv.x\x04") == (
            b"OK3\r\n\x04Traceback (most recent call last):\r\n"
            b'  File "<stdin>", line 2, in <module>\r\n'
            b"AttributeError: 'int' object has no attribute 'x'\r\n\x04>"
        )
        # Ctrl-C clears what was typed
        assert _step(con, out, b"junk\x03print(4)\x04") == b"OK4\r\n\x04\x04>"
        # raw-paste: "R\x01", the window (half of the 256-byte stdin buffer), flow control
        head = _step(con, out, b"\x05A\x01")
        assert head == b"R\x01\x80\x00\x01"
        code = b"x = '" + b"a" * 300 + b"'\nprint(len(x))\n"
        assert _step(con, out, code[:128]) == b"\x01"
        assert _step(con, out, code[128:256]) == b"\x01"
        assert _step(con, out, code[256:]) == b""
        assert _step(con, out, b"\x04") == b"\x04300\r\n\x04\x04>"
        assert _step(con, out, b"\x05Z\x01") == b"R\x00>"  # an unknown raw-paste command
        # bytes sent while code runs and left unread are the REPL's next input
        del out[:]
        con.feed(b"import time\ntime.sleep(0.3)\x04")
        con.feed(b"print(5)\x04")
        assert con.wait_idle(30)
        time.sleep(0.1)
        assert con.wait_idle(30)
        assert bytes(out) == b"OK\x04\x04>OK5\r\n\x04\x04>"
        # Ctrl-D on an empty line: soft reboot (boot.py only, in the raw REPL; there is a
        # main.py)
        assert (
            _step(con, out, b"\x04") == b"OK\r\nMPY: soft reboot\r\nraw REPL; CTRL-B to exit\r\n>"
        )
        assert _step(con, out, b"print('v' in globals())\x04") == b"OKFalse\r\n\x04\x04>"
        # sys.exit() is a soft reset too
        assert _step(con, out, b"import sys\nsys.exit()\x04") == (
            b"OK\x04\x04MPY: soft reboot\r\nraw REPL; CTRL-B to exit\r\n>"
        )
        # Ctrl-B: the friendly REPL
        assert _step(con, out, b"\x02") == b"\r\n" + BANNER + HELP + b">>> "
        assert con.mode == "friendly"
    finally:
        con.stop()


def test_machine_reset_boots_again(tmp_path: Path):
    con, out, fs = _console(tmp_path, MAIN_PY)
    try:
        got = _step(con, out, b"import machine; machine.reset()\r")
        time.sleep(0.3)
        assert con.wait_idle(30)
        got = bytes(out)
        assert got == (
            b"import machine; machine.reset()\r\n"
            b"\r\nespsim: hard reset\r\n"
            b"espsim: boot: Loaded app from partition at offset 0x10000\r\n"
            b"espsim: running 'ota_0' at 0x10000\r\n"
            b"main.py ran\r\n" + BANNER + HELP + b">>> "
        )
        assert device.read_state(str(tmp_path / "flash.bin"))["boots"] == 2
    finally:
        con.stop()


def test_ctrl_c_stops_main_py(tmp_path: Path):
    con, out, fs = _console(tmp_path)
    con.stop()
    (fs / "main.py").write_text(
        "import time\nprint('looping')\nwhile True:\n    time.sleep_ms(10)\n"
    )
    del out[:]
    con.boot(power_on=False)
    try:
        end = time.monotonic() + 30
        while b"looping" not in out:
            assert time.monotonic() < end, bytes(out)
            time.sleep(0.05)
        assert con.state == "job"  # main.py runs
        con.feed(b"\x03")
        assert con.wait_idle(30)
        assert bytes(out) == (
            b"looping\r\nTraceback (most recent call last):\r\n"
            b'  File "main.py", line 4, in <module>\r\n'
            b"KeyboardInterrupt: \r\n" + BANNER + HELP + b">>> "
        )
    finally:
        con.stop()


def test_bad_arguments(tmp_path: Path):
    with pytest.raises(ValueError, match="cpython"):
        appconsole.AppConsole(tmp_path / "f", tmp_path, runtime="cpython")
    with pytest.raises(NotADirectoryError, match="nosuch"):
        appconsole.AppConsole(tmp_path / "f", tmp_path / "nosuch")


def test_continue_with_input():
    c = appconsole.continue_with_input
    assert not c(b"x = 1")
    assert c(b"if x:") and c(b"def f():") and c(b"@dec")
    assert not c(b"iffy = 1")  # a keyword only as a whole word
    assert c(b"f(1,") and c(b"[1") and c(b"'''doc") and c(b"x = 1 + \\")
    assert not c(b"s = '('")
    assert not c(b"if x:\n    y\n")
