"""Boards the device suite runs on: a real ESP32 over USB serial (mpremote's transport, or
pytest-embedded's serial service and its `dut`), or the simulated ESP32 (MicroPython unix port or
CPython) with the same interface, so that the suite's code is exercised here too."""

from __future__ import annotations

import re
import time

from espsim import chips
from mpota import push, simdev


class BoardError(RuntimeError):
    pass


class SimBoard:
    def __init__(self, flash, runtime: str, cwd, chip: str = "esp32"):
        self.flash = flash
        self.runtime = runtime
        self.cwd = cwd
        self.name = f"simulated {chips.get(chip).display} ({runtime})"

    def exec(self, code: str, timeout: float = 120) -> str:
        r = simdev.run(self.flash, code, self.runtime, cwd=self.cwd, timeout=timeout)
        if r.returncode != 0:
            raise BoardError(r.stdout + r.stderr)
        return r.stdout

    def reset(self) -> None:
        self.exec("import machine\nmachine.reset()")

    def push(self, image: bytes, backend: str | None = None) -> str:
        p = simdev.spawn(
            self.flash, push.receiver_code(image, backend=backend), self.runtime, cwd=self.cwd
        )

        def write(b):
            p.stdin.write(b)
            p.stdin.flush()

        try:
            return push.run(p.stdout.readline, write, image)
        finally:
            p.stdin.close()
            p.wait(timeout=120)
            p.stdout.close()
            p.stderr.close()


class SerialBoard:
    """An ESP32 on a serial port, running MicroPython with the ota package installed."""

    def __init__(self, port: str, baudrate: int = 115200):
        self.port = port
        self.baudrate = baudrate
        self.name = f"ESP32 on {port}"
        self.t = None
        self._connect()

    def _connect(self, attempts: int = 20) -> None:
        from mpremote.transport_serial import SerialTransport

        for _ in range(attempts):
            try:
                self.t = SerialTransport(self.port, baudrate=self.baudrate)
                self.t.enter_raw_repl(soft_reset=False)
                return
            except Exception:
                time.sleep(1)
        raise BoardError(f"no MicroPython REPL on {self.port}")

    def exec(self, code: str, timeout: float = 120) -> str:
        out, err = self.t.exec_raw(code, timeout=timeout)
        if err:
            raise BoardError((out + err).decode(errors="replace"))
        return out.decode(errors="replace").replace("\r\n", "\n")

    def reset(self) -> None:
        self.t.exec_raw_no_follow("import machine\nmachine.reset()")
        self.t.close()
        time.sleep(3)
        self._connect()

    def push(self, image: bytes, backend: str | None = None) -> str:
        self.t.exec_raw_no_follow(push.receiver_code(image, backend=backend))
        digest = push.run(self.t.serial.readline, self.t.serial.write, image)
        self.t.follow(timeout=30)
        return digest

    def close(self) -> None:
        if self.t:
            self.t.close()


class EmbeddedBoard:
    """An ESP32 on the port pytest-embedded's serial service opened (`--embedded-services serial
    --port PORT`): its raw REPL driven through the `dut` fixture's write() and expect(), as a test
    written for pytest-embedded does. The port stays open across resets: the board's boot log
    and REPL banner go through the dut's log like any other output."""

    LINE = re.compile(rb"[^\n]*\n")

    def __init__(self, dut, port: str):
        self.dut = dut
        self.name = f"ESP32 on {port} (pytest-embedded)"
        self._raw_repl()

    def _raw_repl(self, timeout: float = 30) -> None:
        self.dut.write(b"\r\x03\x03")  # stop a running program: the friendly or raw REPL
        self.dut.write(b"\r\x01")
        self.dut.expect_exact(b"raw REPL; CTRL-B to exit\r\n>", timeout=timeout)

    def _send(self, code: str) -> None:
        # in 256-byte pieces, as mpremote does, for a board's UART receive buffer
        data = code.encode()
        for i in range(0, len(data), 256):
            self.dut.write(data[i : i + 256])
            time.sleep(0.01)
        self.dut.write(b"\x04")
        self.dut.expect_exact(b"OK", timeout=10)

    def _follow(self, timeout: float) -> tuple[bytes, bytes]:
        out = self.dut.expect_exact(b"\x04", timeout=timeout, return_what_before_match=True)
        err = self.dut.expect_exact(b"\x04", timeout=timeout, return_what_before_match=True)
        self.dut.expect_exact(b">", timeout=timeout)
        return out, err

    def exec(self, code: str, timeout: float = 120) -> str:
        self._send(code)
        out, err = self._follow(timeout)
        if err:
            raise BoardError((out + err).decode(errors="replace"))
        return out.decode(errors="replace").replace("\r\n", "\n")

    def reset(self) -> None:
        self._send("import machine\nmachine.reset()")
        self.dut.expect_exact(b'Type "help()" for more information.', timeout=30)
        self._raw_repl()

    def push(self, image: bytes, backend: str | None = None) -> str:
        self._send(push.receiver_code(image, backend=backend))
        ok = False
        try:
            digest = push.run(
                lambda: self.dut.expect(self.LINE, timeout=60).group(0), self.dut.write, image
            )
            ok = True
        finally:
            out, err = self._follow(30)
        if ok and err:
            raise BoardError((out + err).decode(errors="replace"))
        return digest
