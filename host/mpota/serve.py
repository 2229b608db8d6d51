"""An HTTP server for firmware files with Range requests (so that devices can resume), for
local tests and small fleets. Large fleets put the same files (image, manifest) on any static
HTTP server or CDN: all the device needs is GET with Range, which they all serve."""

from __future__ import annotations

import functools
import http.server
import os
import re
import threading

_RANGE = re.compile(r"bytes=(\d*)-(\d*)$")
IDLE_TIMEOUT = 60  # seconds a connection may stay silent before the server closes it


class _Slice:
    def __init__(self, f, n: int):
        self.f = f
        self.left = n

    def read(self, n: int = -1) -> bytes:
        if self.left <= 0:
            return b""
        n = self.left if n < 0 else min(n, self.left)
        data = self.f.read(n)
        self.left -= len(data)
        return data

    def close(self) -> None:
        self.f.close()


class RangeRequestHandler(http.server.SimpleHTTPRequestHandler):
    """SimpleHTTPRequestHandler, plus single byte ranges (RFC 7233: `a-b`, `a-` and the suffix
    `-n`, answered 206; 416 when unsatisfiable). A connection that stays silent for `timeout`
    seconds is closed, so that idle or slow clients cannot hold the server's threads."""

    quiet = False
    timeout = IDLE_TIMEOUT

    def log_message(self, fmt, *args):
        if not self.quiet:
            super().log_message(fmt, *args)

    def send_head(self):
        path = self.translate_path(self.path)
        rng = self.headers.get("Range")
        if os.path.isdir(path) or not rng:
            head = super().send_head()
            return head
        m = _RANGE.match(rng.strip())
        try:
            f = open(path, "rb")
        except OSError:
            self.send_error(404, "File not found")
            return None
        size = os.fstat(f.fileno()).st_size
        if not m or not (m.group(1) or m.group(2)):
            f.close()
            self.send_error(400, "Only single byte ranges are served")
            return None
        if m.group(1):
            start = int(m.group(1))
            end = min(int(m.group(2)) if m.group(2) else size - 1, size - 1)
        else:  # suffix range: the last n bytes
            start, end = max(size - int(m.group(2)), 0), size - 1
        if start >= size or end < start:
            f.close()
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{size}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        f.seek(start)
        self.send_response(206)
        self.send_header("Content-Type", self.guess_type(path))
        self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        return _Slice(f, end - start + 1)


def start(
    directory: str,
    host: str = "127.0.0.1",
    port: int = 0,
    handler: type = RangeRequestHandler,
    quiet: bool = True,
    tls=None,
    idle_timeout: float = IDLE_TIMEOUT,
):
    """Serve `directory` in a background thread; returns the server (.server_address).
    tls: a server-side ssl.SSLContext, for https; idle_timeout: seconds after which a silent
    connection is closed."""
    cls = type("Handler", (handler,), {"quiet": quiet, "timeout": idle_timeout})
    server = http.server.ThreadingHTTPServer(
        (host, port), functools.partial(cls, directory=str(directory))
    )
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
