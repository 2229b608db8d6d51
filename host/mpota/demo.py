"""A full OTA update on the simulated ESP32, under the real MicroPython unix port: the seed
README's code downloads a new firmware over HTTP, writes and checks it, the device reboots into
it, and the new firmware confirms itself."""

from __future__ import annotations

import functools
import http.server
import subprocess
import sys
import threading
from pathlib import Path

from . import images, inspect, simdev

DEVICE_1 = """
import ota
if not ota.ready():
    print("Install an OTA-enabled micropython firmware (or bootloader) to use OTA.")
from ota.status import status
status()
print()
import urequests
from ota.writer import OTA
with OTA() as ota:
    r = urequests.get("http://nas.lan/micropython/micropython.bin")
    ota.write_file(r.raw)
r.close()
import machine
machine.reset()
"""

DEVICE_2 = """
from ota.status import slots
for label, state, desc, running, boot in slots():
    if running:
        print("Booted %s %s from '%s' (ota state %s)" % (desc[1], desc[0], label, state))
import ota
ota.stop_rollback()
print("ota.stop_rollback(): the new firmware is confirmed.")
from ota.status import status
status()
"""


def _say(text: str) -> None:
    if sys.stdout.isatty():
        text = f"\033[1m{text}\033[0m"
    print(f"\n== {text}", flush=True)


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def _device(flash: Path, code: str, hosts: str = "") -> None:
    env = simdev.env(flash, "micropython")
    if hosts:
        env["ESPSIM_HOSTS"] = hosts
    cmd = simdev.command("micropython") + simdev.code_args(code)
    # The board's filesystem root is the process's directory: its state files stay in the demo's.
    subprocess.run(cmd, env=env, check=True, cwd=flash.parent)


def run(work: Path) -> int:
    work.mkdir(parents=True, exist_ok=True)
    www = work / "www" / "micropython"
    www.mkdir(parents=True, exist_ok=True)
    flash = work / "flash.bin"

    _say("Building two ESP32 firmware images (esptool image format)")
    old = images.app_image("v1.22.0", size=1_400_000)
    new = images.app_image("v1.23.0", size=images.SEED_IMAGE_SIZE)
    (www / "micropython.bin").write_bytes(new)
    print(f"running firmware: MicroPython v1.22.0, {len(old)} bytes")
    print(f"new firmware:     MicroPython v1.23.0, {len(new)} bytes -> {www / 'micropython.bin'}")

    _say(f"Flashing the simulated ESP32 ({flash}) and powering it on")
    for line in simdev.create(flash, old):
        print("espsim: " + line)

    handler = functools.partial(_Quiet, directory=str(work / "www"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    hosts = f"nas.lan=127.0.0.1:{server.server_address[1]}"
    try:
        _say(
            f"On the device (MicroPython): status, then the update from http://nas.lan "
            f"(served on 127.0.0.1:{server.server_address[1]})"
        )
        print(DEVICE_1.strip())
        print("--")
        _device(flash, DEVICE_1, hosts)
    finally:
        server.shutdown()

    _say("On the device after the reboot: the new firmware confirms itself")
    print(DEVICE_2.strip())
    print("--")
    _device(flash, DEVICE_2)

    _say("The flash seen from the PC (esp-idf-defs)")
    data = flash.read_bytes()
    print(inspect.describe_flash(data))

    table = inspect.read_table(data)
    ent = inspect.read_otadata(data, table)
    ota1 = table["ota_1"]
    ok = data[ota1.offset : ota1.offset + len(new)] == new and any(
        e.valid() and e.state == 2 and (e.seq - 1) % 2 == 1 for e in ent
    )
    _say(
        "Demo "
        + ("OK: the device runs MicroPython v1.23.0 from ota_1, confirmed" if ok else "FAILED")
    )
    return 0 if ok else 1
