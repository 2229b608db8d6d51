"""nginx (Debian's) serving a directory on a free loopback port, for the tests: the configuration
`mpota release nginx` writes, in a temporary prefix folder, nginx in the foreground as a child
process (daemon off, one process). .log reads its access log as netserver's log: (path, Range
header or None) per request; .requests the whole lines (connection, request number on it,
request line, Range, status, bytes sent, request length)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from conftest import free_port, listening, need_program, stop_process
from mpota import release


class Nginx:
    def __init__(self, root: str | Path, prefix: str | Path):
        self.root = Path(root)
        self.prefix = Path(prefix)
        self.prefix.mkdir(parents=True, exist_ok=True)
        (self.prefix / "tmp").mkdir(exist_ok=True)
        nginx = need_program("nginx")
        for _ in range(5):  # a port taken between the choice and nginx's bind: another one
            self.port = free_port()
            conf = self.prefix / "nginx.conf"
            conf.write_text(release.nginx_conf(self.root, self.port))
            self.errors = open(self.prefix / "error.log", "wb")
            self.proc = subprocess.Popen(
                [nginx, "-p", str(self.prefix), "-c", str(conf), "-e", "stderr"],
                stdout=self.errors,
                stderr=subprocess.STDOUT,
            )
            if listening(self.proc, self.port):
                break
            self.stop()
        else:
            raise RuntimeError("nginx did not start:\n" + self.error_text())
        self.base = f"http://127.0.0.1:{self.port}"
        self.server_address = ("127.0.0.1", self.port)

    def error_text(self) -> str:
        return (self.prefix / "error.log").read_text(errors="replace")

    @property
    def requests(self) -> list[list[str]]:
        """The access log's lines; nginx writes one after its response has gone, so a client
        can be done before its line is there: read until it stops growing for 50 ms."""
        import shlex

        path = self.prefix / "access.log"
        text, end = None, time.monotonic() + 2
        while time.monotonic() < end:
            now = path.read_text() if path.exists() else ""
            if now == text:
                break
            text = now
            time.sleep(0.05)
        return [shlex.split(line) for line in text.splitlines()]

    @property
    def log(self) -> list[tuple[str, str | None]]:
        out = []
        for r in self.requests:
            path = r[2].split()[1]
            out.append((path, None if r[3] == "-" else r[3]))
        return out

    def stop(self) -> None:
        stop_process(self.proc)
        self.errors.close()

    # netserver's names, so that a test can use either
    def shutdown(self) -> None:
        self.stop()

    def server_close(self) -> None:
        pass
