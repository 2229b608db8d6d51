"""Every example of the original project's README (glenn20/micropython-esp32-ota at b4a1352),
as written, on the simulated ESP32, under MicroPython and CPython.

The examples and their printed output are copied verbatim from that README. Where the README
cannot hold as written, the test says why and checks the nearest thing that can."""

import pytest
from conftest import FACTORY_ONLY, image, sha256
from espsim import otadata
from mpota import images

READY = """\
import ota
if not ota.ready():
    print("Install an OTA-enabled micropython firmware (or bootloader) to use OTA.")
"""

STOP_ROLLBACK = """\
import ota
ota.stop_rollback()
"""

STATUS = """\
from ota.status import status
status()
"""

STATUS_OUTPUT = """\
Micropython firmware is loading from partition 'ota_0'.
The next OTA partition is 'ota_1'.
The / filesystem is mounted from partition 'vfs'.
Partition table:
# Name       Type     SubType      Offset       Size (bytes)
  nvs        data     nvs          0x9000     0x4000     16,384
  otadata    data     ota          0xd000     0x2000      8,192
  phy_init   data     phy          0xf000     0x1000      4,096
  ota_0      app      ota_0       0x10000   0x180000  1,572,864
  ota_1      app      ota_1      0x190000   0x180000  1,572,864
  vfs        data     fat        0x310000    0xf0000    983,040
"""

# The README shows this one as a REPL session; these are its lines without the prompts.
FROM_SERVER = """\
import urequests
from ota.writer import OTA
with OTA() as ota:
   r = urequests.get("http://nas.lan/micropython/micropython.bin")
   ota.write_file(r.raw)
r.close()
"""

FROM_SERVER_OUTPUT = """\
Writing new micropython image to OTA partition 'ota_1'...
Device: 384 x 4096 byte blocks.
Writing 372 blocks + 1824 bytes.
BLOCK 372 + 1824 bytes
Verifying 372 blocks + 1824 bytes...Passed.
SHA256=18026395faa6c39201b422017cdc4d136f8f84f654e4a79a7acf13ccac5dcb6f
OTA Partition 'ota_1' updated successfully.
Micropython will be loaded from 'ota_1' on next hard reboot.
Remember to call esp32.Partition.mark_app_valid_cancel_rollback() after reboot.
"""

FROM_FILE = """\
import urequests
from ota.writer import OTA
with open("micropython.bin") as f, OTA() as ota:
    ota.write_file(f)
"""

WITH_SHA_AND_LENGTH = """\
import urequests
from ota.writer import OTA
file_name = "micropython.bin"
file_sha = "18026395faa6c39201b422017cdc4d136f8f84f654e4a79a7acf13ccac5dcb6f"
file_length = 1525536
f = open(file_name)
ota = OTA(sha=file_sha, length=file_length):
ota.write_file(f)
ota.close()
f.close()
"""

SEED_SHA = "18026395faa6c39201b422017cdc4d136f8f84f654e4a79a7acf13ccac5dcb6f"


def rendered(out: str) -> list[str]:
    """What a terminal shows: each line as left by its last carriage return."""
    return [line.split("\r")[-1] for line in out.replace("\r\n", "\n").split("\n")]


def new_firmware() -> bytes:
    return image("v1.23.0", images.SEED_IMAGE_SIZE)


def test_ready_on_ota_firmware_prints_nothing(sim):
    r = sim.run(READY)
    assert r.stdout == ""


def test_ready_without_ota_partitions_prints_the_hint(make_sim):
    r = make_sim(FACTORY_ONLY).run(READY)
    assert r.stdout == "Install an OTA-enabled micropython firmware (or bootloader) to use OTA.\n"


def test_status_prints_the_seed_lines_byte_for_byte(sim):
    r = sim.run(STATUS)
    assert r.stdout.startswith(STATUS_OUTPUT)
    # After the seed's table: each OTA slot's state and firmware.
    extra = r.stdout[len(STATUS_OUTPUT) :].splitlines()
    assert extra[0] == "OTA slots:"
    assert extra[2].split()[:4] == ["ota_0", "VALID", "MicroPython", "v1.22.0"]
    assert "[running]" in extra[2] and "[next boot]" in extra[2]
    assert extra[3].split() == ["ota_1", "-", "(no", "app)"]


def test_write_from_a_web_server(sim, http_dir):
    root, base = http_dir
    fw = new_firmware()
    (root / "micropython").mkdir()
    (root / "micropython" / "micropython.bin").write_bytes(fw)
    port = base.rsplit(":", 1)[1]
    r = sim.run(FROM_SERVER, hosts=f"nas.lan=127.0.0.1:{port}")
    got = [line for line in rendered(r.stdout) if line]
    want = FROM_SERVER_OUTPUT.replace(SEED_SHA, sha256(fw)).splitlines()
    # The README shows "Writing 372 blocks + 1824 bytes.", which the original code prints only
    # when OTA() is given a length; this example gives none, so neither prints it.
    want.remove("Writing 372 blocks + 1824 bytes.")
    assert got == want
    assert sim.boot_slot() == "ota_1"
    assert sim.region("ota_1")[: len(fw)] == fw


def test_write_from_a_file(sim, tmp_path):
    fw = new_firmware()
    (tmp_path / "micropython.bin").write_bytes(fw)
    r = sim.run(FROM_FILE, cwd=tmp_path)
    assert f"SHA256={sha256(fw)}" in r.stdout
    assert "OTA Partition 'ota_1' updated successfully." in r.stdout
    assert sim.boot_slot() == "ota_1"


def test_write_with_sha_and_length(sim, tmp_path):
    fw = new_firmware()
    (tmp_path / "micropython.bin").write_bytes(fw)
    # As written, the example has a stray ':' after OTA(...): a SyntaxError in any Python.
    r = sim.run(WITH_SHA_AND_LENGTH, ok=False, cwd=tmp_path)
    assert r.returncode != 0 and "SyntaxError" in sim.out
    fixed = WITH_SHA_AND_LENGTH.replace("length=file_length):", "length=file_length)")
    # Without the typo it runs. Our micropython.bin has the README's length but not its SHA-256
    # (that file is not available), so the SHA check must refuse it and change nothing...
    before = sim.otadata_entries()
    r = sim.run(fixed, ok=False, cwd=tmp_path)
    assert r.returncode != 0
    assert f"ValueError: SHA mismatch recv={sha256(fw)} expect={SEED_SHA}." in sim.out
    assert sim.boot_slot() == "ota_0"
    assert [e.pack() for e in sim.otadata_entries()] == [e.pack() for e in before]
    # ...and with the file's own SHA-256 it is written and becomes the boot partition.
    r = sim.run(fixed.replace(SEED_SHA, sha256(fw)), cwd=tmp_path)
    assert "Writing 372 blocks + 1824 bytes." in r.stdout
    assert sim.boot_slot() == "ota_1"


@pytest.mark.parametrize("confirm", [True, False])
def test_rollback_section(sim, tmp_path, confirm):
    # "After booting into the new firmware, the ESP32 will automatically rollback to the
    # previous firmware on the next reboot, unless you mark the new firmware as good."
    fw = new_firmware()
    (tmp_path / "micropython.bin").write_bytes(fw)
    sim.run(FROM_FILE + "import machine\nmachine.reset()\n", cwd=tmp_path)
    assert sim.running() == "ota_1"
    assert sim.state("ota_1") == otadata.PENDING_VERIFY
    if confirm:
        sim.run(STOP_ROLLBACK)
        assert sim.state("ota_1") == otadata.VALID
    sim.power_on()
    assert sim.running() == ("ota_1" if confirm else "ota_0")
    if not confirm:
        assert sim.state("ota_1") == otadata.ABORTED
