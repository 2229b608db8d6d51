"""A cable between a serial tool and the simulated board's RFC 2217 port that fails on cue.

The proxy forwards both ways and counts esptool's commands (SLIP frames from the tool, telnet
escapes and RFC 2217 negotiation taken out). cut_at=N:
- mode "cable": the N-th command never reaches the board: the line drops as it is sent
  (a USB cable pulled);
- mode "power": the N-th command reaches the board and runs; once the board has answered,
  `on_power_cut` is called (the test kills the board's process: power gone) and the line
  drops before the answer reaches the tool.
cut_at=None counts only (`commands`)."""

from __future__ import annotations

import socket
import threading

IAC, SB, SE = 0xFF, 0xFA, 0xF0


class _Slip:
    """SLIP frames in a telnet stream: feed(bytes) -> number of frames that ended."""

    def __init__(self):
        self.telnet = 0  # 0 data, 1 after IAC, 2 option byte, 3 in SB, 4 IAC in SB
        self.in_frame = False
        # (command byte, frame length) of each frame: a command is 0x00, op, size (2),
        # checksum (4), data; the stub's read acknowledgements are 4 bytes
        self.ops: list[tuple[int, int]] = []
        self._pos = 0
        self._op = None

    def feed(self, data: bytes) -> list[int]:
        """Offsets (in data) just past each frame's end."""
        ends = []
        for i, b in enumerate(data):
            st = self.telnet
            if st == 1:
                if b == IAC:
                    self.telnet = 0  # an escaped 0xFF: data
                    continue
                self.telnet = 3 if b == SB else (2 if 0xFB <= b <= 0xFE else 0)
                continue
            if st == 2:
                self.telnet = 0
                continue
            if st == 3:
                self.telnet = 4 if b == IAC else 3
                continue
            if st == 4:
                self.telnet = 0 if b == SE else 3
                continue
            if b == IAC:
                self.telnet = 1
                continue
            if b == 0xC0:
                if self.in_frame:
                    ends.append(i + 1)
                    self.ops.append((self._op, self._pos))
                self.in_frame = not self.in_frame
                self._pos = 0
            elif self.in_frame:
                self._pos += 1
                if self._pos == 2:
                    self._op = b
        return ends


class CutProxy:
    def __init__(self, target_port: int, cut_at: int | None = None, mode: str = "cable",
                 on_power_cut=None):  # fmt: skip
        if mode not in ("cable", "power"):
            raise ValueError(mode)
        self.target = target_port
        self.cut_at = cut_at
        self.mode = mode
        self.on_power_cut = on_power_cut
        self.commands = 0
        self.slips: list[_Slip] = []  # one per connection: .ops, the commands seen
        self.cut = False
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.url = f"rfc2217://127.0.0.1:{self.sock.getsockname()[1]}"
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def _accept(self) -> None:
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            if self.cut:
                c.close()
                continue
            try:
                s = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                c.close()
                continue
            for x in (c, s):
                x.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            pending = {"answer": False}
            threading.Thread(target=self._up, args=(c, s, pending), daemon=True).start()
            threading.Thread(target=self._down, args=(s, c, pending), daemon=True).start()

    def _drop(self, *socks, cut: bool = False) -> None:
        if cut:
            self.cut = True
        for x in socks:
            try:
                x.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            x.close()

    def _up(self, c, s, pending) -> None:  # tool -> board
        slip = _Slip()
        self.slips.append(slip)
        while True:
            try:
                data = c.recv(65536)
            except OSError:
                data = b""
            if not data or self.cut:
                self._drop(c, s)
                return
            start = 0
            for end in slip.feed(data):
                with self.lock:
                    self.commands += 1
                    n = self.commands
                if n == self.cut_at:
                    if self.mode == "cable":
                        self._send(s, data[start : end - 1])  # all but the frame's end
                        self._drop(c, s, cut=True)
                        return
                    pending["answer"] = True
                    self._send(s, data[start:end])
                    start = end
                    break  # the rest waits for the board's answer, which never comes
            else:
                if self._send(s, data[start:]):
                    continue
                self._drop(c, s)
                return
            if pending["answer"]:
                continue

    @staticmethod
    def _send(sock, data: bytes) -> bool:
        try:
            sock.sendall(data)
            return True
        except OSError:
            return False

    def _down(self, s, c, pending) -> None:  # board -> tool
        slip = _Slip()
        while True:
            try:
                data = s.recv(65536)
            except OSError:
                data = b""
            if not data or self.cut:
                self._drop(c, s)
                return
            if pending["answer"] and slip.feed(data):
                # the board answered the cut command: the power goes now
                if self.on_power_cut:
                    self.on_power_cut()
                self._drop(c, s, cut=True)
                return
            if not pending["answer"]:
                slip.feed(data)
            if not self._send(c, data):
                self._drop(c, s)
                return
