"""Update a board over USB serial: mpremote starts ota.push.receive() in the device's raw REPL,
then the image goes over the same line, chunk by chunk as the device asks for them
("OTA>n" -> n raw bytes), and the device answers "OTA:ok <sha256>" or "OTA:error <message>"."""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable

RECEIVER = (
    "import ota.push\n"
    "ota.push.receive({length}, {sha!r}, chunk={chunk}, reboot={reboot!r}, backend={backend!r})\n"
)


class PushError(RuntimeError):
    pass


def receiver_code(
    image: bytes, chunk: int = 4096, reboot: bool = False, backend: str | None = None
) -> str:
    return RECEIVER.format(
        length=len(image),
        sha=hashlib.sha256(image).hexdigest(),
        chunk=chunk,
        reboot=reboot,
        backend=backend,
    )


def run(
    readline: Callable[[], bytes],
    write: Callable[[bytes], object],
    image: bytes,
    progress: Callable[[int, int], None] | None = None,
    echo: Callable[[str], None] | None = None,
) -> str:
    """Feed `image` to a running receiver; returns the SHA-256 the device computed."""
    sent = 0
    while True:
        raw = readline()
        if not raw:
            raise PushError(f"the device stopped answering after {sent} of {len(image)} bytes")
        line = raw.decode(errors="replace").strip()
        if line.startswith("OTA>"):
            n = int(line[4:])
            write(image[sent : sent + n])
            sent += n
            if progress:
                progress(sent, len(image))
        elif line.startswith("OTA:ok"):
            return line.split()[1]
        elif line.startswith("OTA:error"):
            raise PushError(line[len("OTA:error") :].strip())
        elif echo and line:
            echo(line)


def bar(sent: int, total: int) -> None:
    width = 40
    done = width * sent // total if total else width
    sys.stdout.write(
        f"\r[{'#' * done}{'.' * (width - done)}] {sent * 100 // total:3d}% "
        f"{sent // 1024}/{total // 1024} KB"
    )
    sys.stdout.flush()
    if sent >= total:
        sys.stdout.write("\n")


def push_serial(port: str, image: bytes, baudrate: int = 115200, reboot: bool = False) -> str:
    """Over a real serial port, through mpremote's transport (needs the ota package on the
    device)."""
    from mpremote.transport_serial import SerialTransport

    t = SerialTransport(port, baudrate=baudrate)
    try:
        t.enter_raw_repl(soft_reset=False)
        t.exec_raw_no_follow(receiver_code(image, reboot=reboot))
        digest = run(t.serial.readline, t.serial.write, image, bar, echo=print)
        if not reboot:
            t.follow(timeout=30)
            t.exit_raw_repl()
        return digest
    finally:
        t.close()
