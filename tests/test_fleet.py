"""The README's fleet walk-through, run as written (shell commands in a temporary directory,
with a free port instead of 8000): keys, a signed compressed manifest, a server, a simulated
device that updates, reboots into the new firmware and confirms it."""

import re
import socket
import subprocess
import sys
from pathlib import Path

from espsim import otadata
from mpota import inspect

ROOT = Path(__file__).resolve().parent.parent


def readme_block(title: str) -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split(f"## {title}", 1)[1]
    return re.search(r"```sh\n(.*?)```", section, re.S).group(1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_fleet_walkthrough(tmp_path):
    script = readme_block("A fleet, on the simulator")
    script = script.replace(".venv/bin/", str(Path(sys.executable).parent) + "/")
    script = script.replace("8000", str(free_port()))
    lines = []
    for line in script.splitlines():
        lines.append(line)
        if "mpota serve" in line:
            lines.append("sleep 1")  # the server's start, before the device asks it
    full = "set -e\n" + "\n".join(lines) + "\nkill %1\n"
    r = subprocess.run(
        ["bash", "-c", full], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert "Manifest signature: valid." in out
    assert "espsim: running 'ota_1' at 0x190000" in out
    flash = (tmp_path / "device.bin").read_bytes()
    table = inspect.read_table(flash)
    ent = inspect.read_otadata(flash, table)
    active = ent[otadata.active(ent)]
    assert (active.seq, active.state) == (2, otadata.VALID)  # ota_1, confirmed
    assert "ota_1      0x190000  MicroPython v1.25.0" in out
