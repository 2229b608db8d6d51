"""A new user's first update on every chip the simulator knows, with images laid out as
MicroPython's builds are: the update installs and boots, status() names each slot's firmware by
its MicroPython version, and a downgrade (by version) and the running build (by build id) are
refused before anything is erased. One runtime each (the whole suite runs on esp32, esp32s3 and
esp32c3 under every runtime)."""

import re

import pytest
from conftest import image, sha256
from espsim import chips
from mpota import simdev

SIZE = 300_032

ATTEMPT = """
def attempt(tag, fn):
    try:
        fn()
        print(tag, "ok")
    except Exception as e:
        print(tag, type(e).__name__, e)
"""

DEVICE = (
    ATTEMPT
    + """
import ota.update
attempt("UPDATE", lambda: ota.update.from_file("new.bin", {sha!r}, {length}, verbose=False,
                                               reboot=False))
"""
)

AFTER = (
    ATTEMPT
    + """
import ota, ota.status, ota.update
ota.stop_rollback()
ota.status.status()
attempt("OLDER", lambda: ota.update.from_file("old.bin", {old_sha!r}, {old_len}, verbose=False,
                                              reboot=False, version="v1.23.0"))
attempt("SAME", lambda: ota.update.from_file("new.bin", {sha!r}, {length}, verbose=False,
                                             reboot=False))
"""
)


@pytest.mark.parametrize("chip", list(chips.CHIPS))
def test_first_update_on_every_chip(tmp_path, chip):
    runtime = "cpython-native" if chips.get(chip).arch == "riscv" else "micropython"
    if runtime == "cpython-native":
        from conftest import build_c

        build_c()
    old = image("v1.23.0", SIZE, chip=chip)
    new = image("v1.24.0", SIZE, chip=chip)
    (tmp_path / "old.bin").write_bytes(old)
    (tmp_path / "new.bin").write_bytes(new)
    flash = tmp_path / "flash.bin"
    simdev.create(flash, old, chip=chip)
    r = simdev.run(flash, DEVICE.format(sha=sha256(new), length=len(new)), runtime, cwd=tmp_path)
    assert "UPDATE ok" in r.stdout, r.stdout + r.stderr
    log = simdev.power_on(flash)
    assert log[-1].startswith("running 'ota_1'"), log
    before = flash.read_bytes()
    r = simdev.run(
        flash,
        AFTER.format(sha=sha256(new), length=len(new), old_sha=sha256(old), old_len=len(old)),
        runtime,
        cwd=tmp_path,
    )
    out = r.stdout
    assert re.search(r"ota_0 +VALID +MicroPython v1\.23\.0 ", out), out
    assert re.search(r"ota_1 +VALID +MicroPython v1\.24\.0 .*\[running\]", out), out
    assert "OLDER ValueError The manifest version v1.23.0 is older than the running" in out, out
    assert "SAME ValueError This image is the build already running" in out, out
    # Neither refusal touched the spare slot or otadata: only the confirmation above did.
    simdev.power_on(flash)
    assert simdev.power_on(flash)[-1].startswith("running 'ota_1'")
    after = flash.read_bytes()
    assert after[0x10000 : 0x10000 + SIZE] == before[0x10000 : 0x10000 + SIZE]
