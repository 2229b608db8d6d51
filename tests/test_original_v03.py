"""The original project's own code, unmodified: glenn20/micropython-esp32-ota v0.3 (mip/ota/ of
a checkout named by $ORIGINAL_OTA_DIR, first on the simulated device's path) runs its README's
calls on the simulated ESP32, and the device ends as a board would. Without ORIGINAL_OTA_DIR
these tests are skipped; a fetched checkout is used, never committed.

Under MicroPython only: v0.3 imports `requests` (frozen into MicroPython's firmware) and
wraps the partition in `io.BufferedWriter`, which CPython's io refuses for a stream that is not
writable() in its sense. v0.3's ota.status (imported by ota.update and by rollback.force())
needs the esp32 firmware's frozen `flashbdev`; its writer needs `io.BufferedWriter`, which the
unix port lacks: a call that needs either is skipped, naming what the simulated device lacks."""

import json
import os
from pathlib import Path

import pytest
from conftest import image, sha256
from espsim import otadata
from mpota import serve

ORIGINAL = os.environ.get("ORIGINAL_OTA_DIR")
pytestmark = [
    pytest.mark.skipif(
        not ORIGINAL,
        reason="set ORIGINAL_OTA_DIR to a checkout of glenn20/micropython-esp32-ota v0.3",
    ),
    pytest.mark.parametrize("runtime", ["micropython"]),
]

V23 = image("v1.23.0", 400_016)
V24 = image("v1.24.0", 300_032)

PROBE = """
import io
try:
    import flashbdev
except ImportError:
    print("LACKS flashbdev")
if not hasattr(io, "BufferedWriter"):
    print("LACKS io.BufferedWriter")
"""


def mip():
    d = Path(ORIGINAL) / "mip"
    if not (d / "ota" / "update.py").exists():
        pytest.fail(f"ORIGINAL_OTA_DIR={ORIGINAL} has no mip/ota/update.py (v0.3's layout)")
    return str(d)


def run(sim, code, **kw):
    """Run code on the device with v0.3's ota package first on its path."""
    return sim.run(code, extra_path=[mip()], **kw)


def need(sim, *what):
    run(sim, PROBE)
    lacks = [w for w in what if f"LACKS {w}" in sim.out]
    if lacks:
        pytest.skip(
            "the simulated device lacks the esp32 firmware's " + " and ".join(lacks) + ", which "
            "v0.3 needs here"
        )


@pytest.fixture
def site(tmp_path):
    www = tmp_path / "www"
    (www / "micropython").mkdir(parents=True)
    server = serve.start(www)
    port = server.server_address[1]
    yield www, f"nas.local=127.0.0.1:{port}"
    server.shutdown()
    server.server_close()


def publish(www, img):
    for d in (www, www / "micropython"):
        (d / "micropython.bin").write_bytes(img)
    m = {"firmware": "micropython.bin", "sha": sha256(img), "length": len(img)}
    (www / "micropython" / "micropython.json").write_text(json.dumps(m))


def test_it_is_the_original(sim):
    run(sim, "import ota.rollback\nprint(ota.rollback.__file__)\n")
    assert sim.out.strip() == str(Path(mip()) / "ota" / "rollback.py")


def test_rollback_cancel(sim):
    # Only esp32.Partition: runs on the simulator as it is.
    run(sim, "import ota.rollback\nota.rollback.cancel()\n")
    assert sim.out == "" and sim.state("ota_0") == otadata.VALID


def test_rollback_cancel_after_an_update(sim, tmp_path):
    # The new firmware boots PENDING_VERIFY; v0.3's cancel() confirms it.
    (tmp_path / "v23.bin").write_bytes(V23)
    sim.run(
        'from ota.writer import OTA\nwith open("v23.bin","rb") as f, OTA(verbose=False) as o:\n'
        "    o.write_file(f)\n",
        cwd=tmp_path,
    )
    sim.power_on()
    assert sim.running() == "ota_1" and sim.state("ota_1") == otadata.PENDING_VERIFY
    run(sim, "import ota.rollback\nota.rollback.cancel()\n")
    assert sim.state("ota_1") == otadata.VALID
    sim.power_on()
    assert sim.running() == "ota_1"


def test_status(sim):
    need(sim, "flashbdev")
    run(sim, "import ota.status\nota.status.status()\n")
    out = sim.out
    assert "has booted from partition 'ota_0'." in out, out
    assert "Will boot from partition 'ota_0' on next reboot." in out
    assert "The next OTA partition for update is 'ota_1'." in out
    assert "  ota_1      app      ota_1      0x190000   0x180000  1,572,864" in out
    assert "Next boot is 'ota_0'." in out


def test_from_file_usage(sim, site, tmp_path):
    need(sim, "flashbdev", "io.BufferedWriter")
    www, hosts = site
    publish(www, V23)
    code = """\
import ota.update
ota.update.from_file("http://nas.local/micropython.bin", reboot=True)
"""
    run(sim, code, hosts=hosts, cwd=tmp_path)
    assert "OTA Partition 'ota_1' updated successfully." in sim.out, sim.out
    assert "espsim: running 'ota_1' at 0x190000" in sim.out
    assert sim.running() == "ota_1" and sim.region("ota_1")[: len(V23)] == V23


def test_from_json_and_the_ota_class(sim, site, tmp_path):
    need(sim, "flashbdev", "io.BufferedWriter")
    www, hosts = site
    publish(www, V23)
    run(
        sim,
        "import ota.update\nota = ota.update.OTA()\n"
        'ota.from_json("http://nas.local/micropython/micropython.json")\nota.close()\n',
        hosts=hosts,
        cwd=tmp_path,
    )
    assert sim.boot_slot() == "ota_1" and sim.region("ota_1")[: len(V23)] == V23, sim.out
    (tmp_path / "micropython.bin").write_bytes(V24)
    run(
        sim,
        "import ota.update\nwith ota.update.OTA() as ota:\n"
        '    with open("micropython.bin", "rb") as f:\n        ota.from_stream(f)\n',
        cwd=tmp_path,
    )
    assert sim.boot_slot() == "ota_1" and sim.region("ota_1")[: len(V24)] == V24, sim.out


def test_module_from_firmware_file_is_missing_in_v03(sim):
    # v0.3's README calls ota.update.from_firmware_file(...), which its code has only as a
    # method of OTA; ours has both.
    need(sim, "flashbdev")
    run(sim, "import ota.update\nprint(hasattr(ota.update, 'from_firmware_file'))\n")
    assert sim.out.strip() == "False"


def test_force_and_cancel_force(sim, tmp_path):
    need(sim, "flashbdev")
    (tmp_path / "v23.bin").write_bytes(V23)
    sim.run(
        'from ota.writer import OTA\nwith open("v23.bin","rb") as f, OTA(verbose=False) as o:\n'
        "    o.write_file(f)\n",
        cwd=tmp_path,
    )
    sim.power_on()
    run(sim, "import ota.rollback\nota.rollback.cancel()\nota.rollback.force()\n")
    assert sim.boot_slot() == "ota_0", sim.out
    run(sim, "import ota.rollback\nota.rollback.cancel_force()\n")
    assert sim.boot_slot() == "ota_1", sim.out
