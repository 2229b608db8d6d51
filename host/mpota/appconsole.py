"""The simulated board's serial port while its app runs: MicroPython's REPL, as a board's UART
carries it.

AppConsole speaks the REPL protocol on the wire as MicroPython's shared/runtime/pyexec.c and
shared/readline/readline.c do on the esp32 port (v1.28.0): the friendly REPL (">>> ", echo,
line editing and history, auto-indent, continuation lines, paste mode, Ctrl-A/B/C/D/E), the raw
REPL ("raw REPL; CTRL-B to exit", Ctrl-D: "OK", output, 0x04, error, 0x04, ">") and raw-paste
mode (Ctrl-E "A" Ctrl-A: "R\\x01", window size, flow control). The code runs in a real
interpreter playing the board's firmware: MicroPython's unix port with the simulated chip
(espsim/modules/simrepl.py), kept up between commands as the board's interpreter is, started
again at each soft reset (boot.py, and main.py in the friendly REPL, as ports/esp32/main.c
does); machine.reset() runs the simulated bootloader and starts the app again.

Bytes from the host go in with feed(); everything the board sends comes out through write().
"""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

from . import boardfs, simdev

PS1 = b">>> "
PS2 = b"... "
HELP = b'Type "help()" for more information.\r\n'
RAW_BANNER = b"raw REPL; CTRL-B to exit\r\n"
PASTE_BANNER = b"\r\npaste mode; Ctrl-C to cancel, Ctrl-D to finish\r\n=== "
SOFT_REBOOT = b"MPY: soft reboot\r\n"
# MICROPY_REPL_STDIN_BUFFER_MAX (pyexec.c's default, kept by the esp32 port): raw-paste mode
# announces half of it as its flow-control window.
STDIN_BUFFER_MAX = 256
WINDOW = STDIN_BUFFER_MAX // 2
HISTORY = 8  # MICROPY_READLINE_HISTORY_SIZE
RUNTIMES = ("micropython", "micropython-native")
_LONE_NL = re.compile(rb"(?<!\r)\n")
STOP_TIMEOUT = 5.0  # seconds a firmware process gets to end before it is killed


class _Readline:
    """shared/readline/readline.c: one line of the friendly REPL, edited as the board does
    (MICROPY_REPL_EMACS_KEYS and MICROPY_REPL_AUTO_INDENT, as the esp32 port has them; tab
    completion is not simulated: tab after a space indents, elsewhere it does nothing)."""

    ENABLED, JUST_ADDED = 1, 2

    def __init__(self, out: Callable[[bytes], None]):
        self.out = out
        self.hist: list[bytes] = []
        self.last_nl = 0
        self.init(bytearray(), b"")

    def init(self, line: bytearray, prompt: bytes) -> None:
        self.line = line
        self.orig = len(line)
        self.esc = 0  # 0 none, 1 ESC, 2 ESC [, 3 ESC [ digit, 4 ESC O
        self.esc_digit = 0
        self.hist_cur = -1
        self.cursor = self.orig
        self.out(prompt)
        if not line:
            self.auto = self.ENABLED
        self._auto_indent()

    def note_newline(self, prompt: bytes) -> None:
        self.orig = len(self.line)
        self.cursor = self.orig
        self.out(prompt)
        self._auto_indent()

    def _auto_indent(self) -> None:
        line = self.line
        if not (self.auto & self.ENABLED) or len(line) < 2 or line[-1] != 10:
            return
        i = len(line) - 1
        while i > 0 and line[i - 1] != 10:
            i -= 1
        j = i
        while j < len(line) and line[j] == 32:
            j += 1
        if i > 0 and j + 1 == len(line):
            # the previous line is all spaces: no auto-indent after two such lines
            k = i - 1
            while k > 0:
                if line[k - 1] == 10:
                    return
                if line[k - 1] != 32:
                    break
                k -= 1
        n = (j - i) // 4 + (line[-2] == ord(":"))
        for _ in range(n):
            line += b"    "
            self.out(b"    ")
            self.cursor += 4
            self.auto |= self.JUST_ADDED

    def _move_back(self, n: int) -> None:
        self.out(b"\b" * n if n <= 4 else b"\x1b[%dD" % n)

    def _push_history(self) -> None:
        s = bytes(self.line[self.orig :])
        if s and (not self.hist or self.hist[0] != s):
            self.hist.insert(0, s)
            del self.hist[HISTORY:]

    def _process_nl(self, c: int) -> bool:
        if c in (10, 13) and self.last_nl in (0, c):
            self.last_nl = c
            return True
        self.last_nl = 0
        return False

    def process(self, c: int) -> int:
        """-1: more to come; 0: the line is complete; a control character (Ctrl-A..E on an
        empty line, Ctrl-C anywhere) for the REPL to act on."""
        line = self.line
        last_len = len(line)
        back = fwd = 0
        redraw = False
        esc = self.esc
        if esc == 0:
            if 1 <= c <= 5 and len(line) == self.orig:
                return c
            if c == 3:
                return c
            if c == 1:
                back = self.cursor - self.orig  # home
            elif c == 2:
                back = 1 if self.cursor > self.orig else 0  # left
            elif c == 4:
                redraw = self._delete()
            elif c == 5:
                fwd = len(line) - self.cursor  # end
            elif c == 6:
                fwd = 1 if self.cursor < len(line) else 0  # right
            elif c == 11:
                del line[self.cursor :]  # kill to end of line
                redraw = True
            elif c in (14, 16):
                back, fwd, redraw = self._history(1 if c == 16 else -1)
            elif c == 21:
                back = self.cursor - self.orig  # kill to start of line
                del line[self.orig : self.cursor]
                redraw = True
            elif self._process_nl(c):
                self.out(b"\r\n")
                self._push_history()
                return 0
            elif c == 27:
                self.esc = 1
            elif c in (8, 127):
                if self.cursor > self.orig:
                    spaces = 0
                    for b in line[self.orig : self.cursor]:
                        if b != 32:
                            spaces = 0
                            break
                        spaces += 1
                    n = 4 if spaces >= 4 else 1
                    del line[self.cursor - n : self.cursor]
                    back, redraw = n, True
            elif (self.auto & self.JUST_ADDED) and c in (9, 32):
                # tab or space right after auto-indent: auto-indent off (a space takes 3 back)
                self.auto = 0
                if c == 32:
                    back = 3
                    del line[-3:]
            elif c == 9:
                if self.cursor > 0 and line and line[self.cursor - 1] in b" \t\n\r":
                    line[self.cursor : self.cursor] = b"    "
                    redraw, fwd = True, 4
            elif 32 <= c <= 126:
                line[self.cursor : self.cursor] = bytes((c,))
                redraw, fwd = True, 1
        elif esc == 1:
            self.esc = {ord("["): 2, ord("O"): 4}.get(c, 0)
        elif esc == 2:
            self.esc = 0
            if ord("0") <= c <= ord("9"):
                self.esc, self.esc_digit = 3, c
            elif c in (ord("A"), ord("B")):
                back, fwd, redraw = self._history(1 if c == ord("A") else -1)
            elif c == ord("C"):
                fwd = 1 if self.cursor < len(line) else 0
            elif c == ord("D"):
                back = 1 if self.cursor > self.orig else 0
            elif c == ord("H"):
                back = self.cursor - self.orig
            elif c == ord("F"):
                fwd = len(line) - self.cursor
        elif esc == 3:
            self.esc = 0
            if c == ord("~"):
                if self.esc_digit in b"17":
                    back = self.cursor - self.orig
                elif self.esc_digit in b"48":
                    fwd = len(line) - self.cursor
                elif self.esc_digit == ord("3"):
                    redraw = self._delete()
        else:
            self.esc = 0
            if c == ord("H"):
                back = self.cursor - self.orig
            elif c == ord("F"):
                fwd = len(line) - self.cursor
        # redraw, as readline.c does
        if back > 0:
            self._move_back(back)
            self.cursor -= back
        if redraw:
            if len(line) < last_len:
                self.out(b"\x1b[K")
            self.out(bytes(line[self.cursor :]))
            self._move_back(len(line) - (self.cursor + fwd))
            self.cursor += fwd
        elif fwd > 0:
            self.out(bytes(line[self.cursor : self.cursor + fwd]))
            self.cursor += fwd
        self.auto &= ~self.JUST_ADDED
        return -1

    def _delete(self) -> bool:
        if self.cursor < len(self.line):
            del self.line[self.cursor]
            return True
        return False

    def _history(self, step: int) -> tuple[int, int, bool]:
        cur = self.hist_cur + step
        if step > 0 and cur >= len(self.hist):
            return 0, 0, False
        if step < 0 and self.hist_cur < 0:
            return 0, 0, False
        self.hist_cur = cur
        del self.line[self.orig :]
        if cur >= 0:
            self.line += self.hist[cur]
        return self.cursor - self.orig, len(self.line) - self.orig, True


def continue_with_input(src: bytes) -> bool:
    """py/repl.c mp_repl_continue_with_input(): whether the friendly REPL asks for another
    line ("... ") before it runs what it has."""
    if not src:
        return False
    words = (b"if", b"while", b"for", b"try", b"with", b"def", b"class", b"async")
    compound = src[:1] == b"@" or any(
        src.startswith(w) and (len(src) == len(w) or not _ident(src[len(w)])) for w in words
    )
    paren = brack = brace = 0
    q = 0  # 0 none, 1 ', 2 ", 3 ''', 4 """
    i, n = 0, len(src)
    while i < n:
        c = src[i]
        if c == 0x27 or c == 0x22:
            single, triple = (1, 3) if c == 0x27 else (2, 4)
            if q in (0, triple) and src[i + 1 : i + 3] == bytes((c, c)):
                i += 2
                q = triple - q
            elif q in (0, single):
                q = single - q
        elif c == 0x5C and src[i + 1 : i + 2] in (b"'", b'"', b"\\"):
            if q:
                i += 1
        elif q == 0:
            paren += (c == 0x28) - (c == 0x29)
            brack += (c == 0x5B) - (c == 0x5D)
            brace += (c == 0x7B) - (c == 0x7D)
        i += 1
    if q in (3, 4):
        return True
    if (paren > 0 or brack > 0 or brace > 0) and q == 0:
        return True
    if src.endswith(b"\\"):
        return True
    return compound and not src.endswith(b"\n")


def _ident(c: int) -> bool:
    # str_startswith_word(): a keyword followed by a character that can continue a name
    return chr(c).isalnum() or c == 0x5F


def _sigint_caught(pid: int) -> bool:
    # The unix port catches SIGINT while Ctrl-C is the interrupt character
    # (mp_hal_set_interrupt_char) and leaves it at its default (ending the process) after
    # micropython.kbd_intr(-1): then a Ctrl-C is a byte for the code to read, as on a board.
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("SigCgt:"):
                    return bool(int(line.split()[1], 16) >> (signal.SIGINT - 1) & 1)
    except (OSError, ValueError):
        pass
    return False


class _Proc:
    """One run of the firmware: a MicroPython process serving simrepl's loop."""

    def __init__(self, p: subprocess.Popen, cmd_w: int, ctl_r: int):
        self.p = p
        self.stdin_fd = p.stdin.fileno()
        os.set_blocking(self.stdin_fd, False)
        self.cmd_w = cmd_w
        self.ctl_r = ctl_r
        self.reset_code: int | None = None  # set when machine.reset() ran the bootloader
        self.ready = False
        self.started = False  # the current job's code has begun to run
        self.kbd_pending = False

    def send(self, kind: bytes, payload: bytes = b"") -> None:
        try:
            os.write(self.cmd_w, kind + len(payload).to_bytes(4, "little") + payload)
        except OSError:
            pass  # the process has ended: its end is reported by the reader

    def stdin(self, data: bytes) -> None:
        try:
            os.write(self.stdin_fd, data)
        except OSError:
            pass  # ended, or full: bytes no code reads are lost, as in a UART's overrun

    def interrupt(self) -> None:
        if _sigint_caught(self.p.pid):
            try:
                self.p.send_signal(signal.SIGINT)
            except OSError:
                pass
        else:
            self.stdin(b"\x03")

    def stop(self, power_off: bool = False) -> None:
        # A soft reset lets the idle interpreter end; a reset or power-off ends it at once.
        if not power_off:
            self.send(b"Q")
        try:
            self.p.wait(0 if power_off else STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
        self.close()

    def close(self) -> None:
        for fd in (self.cmd_w,):
            try:
                os.close(fd)
            except OSError:
                pass
        self.cmd_w = -1
        try:
            self.p.stdin.close()
        except (OSError, ValueError):
            pass


class AppConsole:
    """The serial port of the simulated board at `flash_path` while its app runs.

    The board's filesystem is the littlefs in the flash, mounted at / as the port mounts it
    (espsim/modules/simfs.py). `fs_dir` (a directory, or None) mirrors it: its files are put
    into the flash's filesystem here, before the board runs (and at boot(), what changed in it
    on the PC since), and the board's files are copied back into it whenever code ends on the
    board and when its process ends. `runtime` one of
    RUNTIMES; `write(data)` receives every byte the board sends (called from this object's
    threads and from feed(); it must not call feed()); ota=False leaves the repository's `ota`
    package off the board's path (simdev.device_path).

    boot(): reset the board and start its app (the bootloader's log first, unless
    `power_on=False`: then the bootloader is taken as run). feed(data): bytes from the host.
    stop(): end the app (the board is off). wait_idle(): for tests."""

    def __init__(
        self,
        flash_path: str | Path,
        fs_dir: str | Path | None = None,
        runtime: str = "micropython",
        write: Callable[[bytes], None] | None = None,
        heap: str = "2M",
        extra_path: list = (),
        hosts: str = "",
        ota: bool = True,
    ):
        if runtime not in RUNTIMES:
            raise ValueError(
                f"the serial REPL runs the firmware under {' or '.join(RUNTIMES)}, not {runtime!r}"
            )
        self.flash = Path(flash_path).resolve()
        self.fs = None
        self._snap = None  # fs_dir as it was when it last matched the board (boardfs.snapshot)
        if fs_dir is not None:
            self.fs = Path(fs_dir).resolve()
            if not self.fs.is_dir():
                raise NotADirectoryError(f"{fs_dir}: the board's filesystem must be a directory")
            self._snap = boardfs.mirror_in(self.flash, self.fs)
        self.runtime = runtime
        self.heap = heap
        self.extra_path = list(extra_path)
        self.hosts = hosts
        self.ota = ota
        self._write = write or (lambda data: None)
        self._lock = threading.RLock()
        self._idle = threading.Condition(self._lock)
        self._proc: _Proc | None = None
        self._state = "off"  # off starting job drain repl rawpaste dead
        self._mode = "friendly"  # pyexec_mode_kind: kept across soft resets
        self._job = ""  # boot friendly raw
        self._exc = False
        self._dirty = False
        self._inbuf = bytearray()
        self._line = bytearray()
        self._cont = False
        self._paste = False
        self._paste_remain = 0
        self._banner = b""
        self._last_cr = False
        self._rl = _Readline(self._out)

    # -- the interface -------------------------------------------------------------------

    def boot(self, power_on: bool = True) -> None:
        from espsim.bootloader import Bricked

        with self._lock:
            self._end(power_off=True)
            self._mode = "friendly"
            self._rl.hist.clear()
            self._inbuf.clear()
            if self.fs is not None:
                # what was changed in fs_dir on the PC since it last matched the board
                try:
                    self._snap = boardfs.mirror_in(self.flash, self.fs, self._snap)
                except boardfs.NoFilesystem:
                    pass
            if power_on:
                try:
                    log = simdev.power_on(self.flash)
                except Bricked as e:
                    self._out(f"espsim: the device does not boot: {e}\r\n".encode())
                    self._set_state("dead")
                    return
                for line in log:
                    self._out(f"espsim: {line}\r\n".encode())
            self._start()

    def feed(self, data: bytes) -> None:
        with self._lock:
            if self._state in ("off", "dead"):
                return  # nobody listens: a board that is off or does not boot
            if self._state == "job" and self._proc is not None:
                self._to_code(bytes(data))
                return
            self._inbuf += data
            self._pump()

    def stop(self) -> None:
        with self._lock:
            self._end(power_off=True)
            self._set_state("off")
            self.mirror()

    @property
    def state(self) -> str:
        """off, starting (the firmware process is loading), job (code runs: boot.py, main.py
        or a REPL command), drain, repl (the REPL waits for input), rawpaste, dead (no app)."""
        return self._state

    @property
    def mode(self) -> str:
        """friendly or raw: the REPL the board is in (or returns to)."""
        return self._mode

    def wait_idle(self, timeout: float = 30) -> bool:
        """Wait until the board waits for input at its REPL (or is dead or off); False after
        `timeout` seconds."""
        with self._idle:
            return self._idle.wait_for(
                lambda: self._state in ("repl", "rawpaste", "dead", "off") and not self._inbuf,
                timeout,
            )

    # -- the firmware process ------------------------------------------------------------

    def _start(self) -> None:
        cmd_r, cmd_w = os.pipe()
        ctl_r, ctl_w = os.pipe()
        code = f"import simboot\nimport simrepl\nsimrepl.main({cmd_r}, {ctl_w})"
        env = simdev.env(self.flash, self.runtime, extra_path=self.extra_path, ota=self.ota)
        if self.hosts:
            env["ESPSIM_HOSTS"] = self.hosts
        try:
            p = subprocess.Popen(
                simdev.command(self.runtime, self.heap) + ["-c", code],
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                pass_fds=(cmd_r, ctl_w),
            )
        finally:
            os.close(cmd_r)
            os.close(ctl_w)
        proc = _Proc(p, cmd_w, ctl_r)
        self._proc = proc
        self._set_state("starting")
        threading.Thread(target=self._reader, args=(proc,), daemon=True).start()

    def _end(self, power_off: bool = False) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.stop(power_off)

    def _reader(self, proc: _Proc) -> None:
        out_fd = proc.p.stdout.fileno()
        os.set_blocking(out_fd, False)
        fds = [out_fd, proc.ctl_r]
        ctl = bytearray()

        def read_out() -> None:
            # everything the process printed so far
            while out_fd in fds:
                try:
                    data = os.read(out_fd, 65536)
                except BlockingIOError:
                    return
                if not data:
                    fds.remove(out_fd)
                    return
                self._on_output(proc, data)

        while fds:
            ready, _, _ = select.select(fds, [], [])
            if proc.ctl_r in ready:
                data = os.read(proc.ctl_r, 65536)
                if not data:
                    fds.remove(proc.ctl_r)
                ctl += data
                # The process wrote the output that comes before these messages before it
                # wrote them: forward it first. (What it printed after them, the output of
                # the code a J message announces, may come along: no message puts anything
                # on the wire that must come before that.)
                read_out()
                while len(ctl) >= 5 and len(ctl) >= 5 + int.from_bytes(ctl[1:5], "little"):
                    n = 5 + int.from_bytes(ctl[1:5], "little")
                    kind, payload = ctl[0:1], bytes(ctl[5:n])
                    del ctl[:n]
                    self._on_ctl(proc, bytes(kind), payload)
            elif out_fd in ready:
                read_out()
        rc = proc.p.wait()
        os.close(proc.ctl_r)
        with self._lock:
            if proc is not self._proc:
                return
            self._proc = None
            proc.close()
            self.mirror()  # machine.reset(), a power cut, a crash
            if proc.reset_code is not None:
                if proc.reset_code == 3:
                    self._set_state("dead")  # machine.reset() found no app to boot
                    return
                self._mode = "friendly"
                self._rl.hist.clear()
                self._start()
                return
            if rc == simdev.FS_CORRUPTED:
                self._out(b"espsim: a board prints this every 3 s, forever (fs_corrupted())\r\n")
            else:
                self._out(
                    f"\r\nespsim: the firmware process ended (exit status {rc})\r\n".encode()
                )
            self._set_state("dead")

    def _on_output(self, proc: _Proc, data: bytes) -> None:
        with self._lock:
            if proc is self._proc:
                self._out(self._cook(data))

    def _cook(self, data: bytes) -> bytes:
        # The board's stdout is "cooked": "\n" goes out as "\r\n". (The unix port's line
        # input, input(), echoes "\r\n" itself: that stays as it is.)
        prev_cr, self._last_cr = self._last_cr, data[-1:] == b"\r"
        if prev_cr and data[:1] == b"\n":
            return b"\n" + _LONE_NL.sub(b"\r\n", data[1:])
        return _LONE_NL.sub(b"\r\n", data)

    def _on_ctl(self, proc: _Proc, kind: bytes, payload: bytes) -> None:
        with self._lock:
            if proc is not self._proc:
                return
            if kind == b"R":
                proc.ready = True
                self._banner = payload + b"\r\n"
                self._start_job(b"B", b"1" if self._mode == "friendly" else b"0", "boot")
            elif kind == b"J":
                proc.started = True
                if proc.kbd_pending:
                    proc.kbd_pending = False
                    proc.interrupt()
            elif kind == b"E":
                if self._job == "raw" and not self._exc:
                    self._out(b"\x04")  # the end of the normal output
                self._exc = True
                self._out(_LONE_NL.sub(b"\r\n", payload))
            elif kind == b"F":
                self._job_done(payload)
            elif kind == b"I":
                self._inbuf[:0] = payload
                self._enter_repl()
            elif kind == b"H":
                proc.reset_code = int(payload or b"0")

    # -- jobs: code running on the board -------------------------------------------------

    def _start_job(self, kind: bytes, payload: bytes, job: str) -> None:
        proc = self._proc
        self._job, self._exc, self._dirty = job, False, False
        proc.started = proc.kbd_pending = False
        self._set_state("job")
        proc.send(kind, payload)
        # What came in meanwhile sits in the board's UART buffer: the code may read it.
        pending = bytes(self._inbuf)
        self._inbuf.clear()
        if pending:
            self._to_code(pending)

    def _to_code(self, data: bytes) -> None:
        # While code runs, bytes from the host are its stdin, and Ctrl-C interrupts it.
        proc = self._proc
        parts = data.split(b"\x03")
        for k, part in enumerate(parts):
            if part:
                proc.stdin(part)
            if k < len(parts) - 1:
                if proc.started:
                    proc.interrupt()
                else:
                    proc.kbd_pending = True  # given when the code begins to run
        self._dirty = True

    def mirror(self) -> None:
        """Copy the board's files into fs_dir (when given): the code on the board has ended.
        Nothing when its flash holds no littlefs (blank, corrupted): fs_dir stays as it was."""
        if self.fs is not None:
            try:
                self._snap = boardfs.mirror_out(self.flash, self.fs)
            except boardfs.NoFilesystem:
                pass

    def _job_done(self, result: bytes) -> None:
        self.mirror()  # before the host hears that the code ended
        if self._job == "raw":
            if not self._exc:
                self._out(b"\x04")
            self._out(b"\x04")
        if result == b"S":
            self._soft_reset()  # SystemExit (sys.exit(), machine.soft_reset())
            return
        if self._dirty:
            # The code may have left bytes unread: they go back to the REPL.
            self._set_state("drain")
            self._proc.send(b"D")
            return
        self._enter_repl()

    def _enter_repl(self) -> None:
        job, self._job = self._job, ""
        self._set_state("repl")
        if job == "boot":
            if self._mode == "raw":
                self._raw_reset()
            else:
                self._friendly_banner()
        elif job == "raw":
            self._line = bytearray()
            self._out(b">")
        else:
            self._input_restart()
        self._pump()

    def _soft_reset(self) -> None:
        self._end()
        self._rl.hist.clear()
        self._out(SOFT_REBOOT)
        self._start()

    # -- the REPL ------------------------------------------------------------------------

    def _out(self, data: bytes) -> None:
        if data:
            self._write(data)

    def _set_state(self, state: str) -> None:
        self._state = state
        self._idle.notify_all()

    def _pump(self) -> None:
        buf = self._inbuf
        while buf and self._state in ("repl", "rawpaste"):
            c = buf[0]
            del buf[0]
            if self._state == "rawpaste":
                self._rawpaste_char(c)
            elif self._mode == "raw":
                self._raw_char(c)
            else:
                self._friendly_char(c)
        self._idle.notify_all()

    def _friendly_banner(self) -> None:
        self._out(self._banner + HELP)
        self._input_restart()

    def _input_restart(self) -> None:
        self._line = bytearray()
        self._cont = self._paste = False
        self._rl.init(self._line, PS1)

    def _friendly_char(self, c: int) -> None:
        if self._paste:
            if c == 3:
                self._out(b"\r\n")
                self._input_restart()
            elif c == 4:
                self._out(b"\r\n")
                self._start_job(b"P", bytes(self._line), "friendly")
            else:
                self._line.append(c)
                self._out(b"\r\n=== " if c == 13 else bytes((c,)))
            return
        ret = self._rl.process(c)
        line = self._line
        if not self._cont:
            if ret == 1:
                self._out(b"\r\n")
                self._mode = "raw"
                self._raw_reset()
            elif ret == 2:
                self._out(b"\r\n")
                self._friendly_banner()
            elif ret == 3:
                self._out(b"\r\n")
                self._input_restart()
            elif ret == 4:
                self._out(b"\r\n")
                self._soft_reset()
            elif ret == 5:
                self._out(PASTE_BANNER)
                self._line = bytearray()
                self._paste = True
            elif ret < 0:
                return
            elif not line:
                self._input_restart()
            elif continue_with_input(bytes(line)):
                line.append(10)
                self._cont = True
                self._rl.note_newline(PS2)
            else:
                self._start_job(b"S", bytes(line), "friendly")
        else:
            if ret == 3:
                self._out(b"\r\n")
                self._input_restart()
            elif ret == 4:
                self._start_job(b"S", bytes(line), "friendly")
            elif ret < 0:
                return
            elif continue_with_input(bytes(line)):
                line.append(10)
                self._rl.note_newline(PS2)
            else:
                self._start_job(b"S", bytes(line), "friendly")

    def _raw_reset(self) -> None:
        self._out(RAW_BANNER + b">")
        self._line = bytearray()

    def _raw_char(self, c: int) -> None:
        line = self._line
        if c == 1:
            if len(line) == 2 and line[0] == 5:
                self._rawpaste_begin(line[1])
            else:
                self._raw_reset()
        elif c == 2:
            self._out(b"\r\n")
            self._mode = "friendly"
            self._friendly_banner()
        elif c == 3:
            self._line = bytearray()
        elif c == 4:
            self._out(b"OK")
            if not line:
                self._out(b"\r\n")
                self._soft_reset()
            else:
                self._start_job(b"X", bytes(line), "raw")
        else:
            line.append(c)

    def _rawpaste_begin(self, command: int) -> None:
        if command != ord("A"):
            self._out(b"R\x00>")  # an unknown raw-paste command
            self._line = bytearray()
            return
        self._out(b"R\x01" + WINDOW.to_bytes(2, "little") + b"\x01")
        self._line = bytearray()
        self._paste_remain = WINDOW
        self._set_state("rawpaste")

    def _rawpaste_char(self, c: int) -> None:
        if c in (3, 4):
            self._out(b"\x04")  # the end, as the board acknowledges it
            if c == 4:
                self._start_job(b"X", bytes(self._line), "raw")
            else:
                self._out(b"\x04KeyboardInterrupt: \r\n\x04>")
                self._line = bytearray()
                self._set_state("repl")
            return
        self._line.append(c)
        self._paste_remain -= 1
        if self._paste_remain == 0:
            self._out(b"\x01")  # another window of bytes may come
            self._paste_remain = WINDOW


class PtyPort:
    """The board's serial port on a pseudo-terminal: any serial tool (mpremote, pyserial,
    picocom) opens `self.path`. For tests and for trying the REPL without RFC 2217."""

    def __init__(self, console_factory: Callable[[Callable[[bytes], None]], AppConsole]):
        import tty

        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)  # no echo, no line editing: the board's own bytes only
        self.path = os.ttyname(self.slave)
        os.set_blocking(self.master, False)
        self.console = console_factory(self._send)
        self._stop_r, self._stop_w = os.pipe()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _send(self, data: bytes) -> None:
        # Nobody reading: what does not fit in the terminal's buffer is lost, as on a UART.
        try:
            os.write(self.master, data)
        except (BlockingIOError, OSError):
            pass

    def _run(self) -> None:
        while True:
            r, _, _ = select.select([self.master, self._stop_r], [], [])
            if self._stop_r in r:
                return
            try:
                data = os.read(self.master, 4096)
            except (BlockingIOError, OSError):
                continue
            if data:
                self.console.feed(data)

    def close(self) -> None:
        self.console.stop()
        os.write(self._stop_w, b"x")
        self._thread.join(5)
        for fd in (self.master, self.slave, self._stop_r, self._stop_w):
            os.close(fd)
