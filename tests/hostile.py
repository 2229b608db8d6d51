"""A scriptable hostile HTTP server on 127.0.0.1 for the adversarial tests.

Each connection is answered by `script(conn, req)`: `req` holds the request line, the headers
(lower-case names) and the Range start (or None); the script writes whatever bytes it likes,
as slowly as it likes, and may reset the connection. The server runs in a thread, every socket
has a timeout, and `stop()` ends it: nothing outlives a test. `log` lists the requests."""

from __future__ import annotations

import re
import socket
import struct
import threading
import time

_RANGE = re.compile(r"bytes=(\d+)-")


class Request:
    def __init__(self, line: str, headers: dict):
        self.line = line
        self.path = line.split()[1] if len(line.split()) > 1 else ""
        self.headers = headers
        m = _RANGE.match(headers.get("range", ""))
        self.start = int(m.group(1)) if m else None


def _read_request(conn) -> Request | None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            return None
        data += chunk
        if len(data) > 65536:
            return None
    head = data.split(b"\r\n\r\n")[0].decode(errors="replace").split("\r\n")
    headers = {}
    for h in head[1:]:
        k, _, v = h.partition(":")
        headers[k.strip().lower()] = v.strip()
    return Request(head[0], headers)


class Server:
    def __init__(self, script, lifetime: float = 120):
        self.script = script
        self.log: list[Request] = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._stop = threading.Event()
        self._until = time.monotonic() + lifetime  # stops by itself whatever happens
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self):
        while not self._stop.is_set() and time.monotonic() < self._until:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn):
        conn.settimeout(10)
        try:
            req = _read_request(conn)
            if req is None:
                return
            req.port = self.port
            self.log.append(req)
            self.script(conn, req)
        except OSError:
            pass
        finally:
            conn.close()

    def stop(self):
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()


def reset(conn):
    """Close with a TCP RST instead of a FIN."""
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()


def response(status: int, body: bytes = b"", headers: list | None = None) -> bytes:
    lines = [f"HTTP/1.0 {status} X"] + [f"{k}: {v}" for k, v in (headers or [])]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body
