"""Bad input: each case gives a clear error and leaves the device as it was. The boot partition,
the running firmware's bytes and otadata stay unchanged; nothing outside the target slot
(ota_1) changes at all."""

import ast
import re

import pytest
from conftest import FACTORY_ONLY, ONE_OTA_SLOT, image, sha256
from mpota import images

SLOT = 0x180000
GOOD = image("v1.23.0", images.SEED_IMAGE_SIZE)


def _random(n: int, first: int | None = None) -> bytes:
    import random

    b = bytearray(random.Random(n).randbytes(n))
    if first is not None:
        b[0] = first
    elif b[0] == 0xE9:
        b[0] = 0
    return bytes(b)


def _flipped() -> bytes:
    b = bytearray(GOOD)
    b[700_000] ^= 0x40
    return bytes(b)


WRITE = """
from ota.writer import OTA
with open("image.bin", "rb") as f, OTA({args}) as ota:
    ota.write_file(f)
"""

RAISING_STREAM = """
from ota.writer import OTA
class Dropped:
    def __init__(self, f):
        self.f, self.n = f, 0
    def readinto(self, buf):
        if self.n > 200000:
            raise OSError(5, "link down")
        n = self.f.readinto(buf)
        self.n += n
        return n
with open("image.bin", "rb") as f, OTA() as ota:
    ota.write_file(Dropped(f))
"""

# A stream whose readinto() misreports what it read, after 200,000 honest bytes.
LYING_STREAM = """
from ota.writer import OTA
class Lying:
    def __init__(self, f):
        self.f, self.n = f, 0
    def readinto(self, buf):
        n = self.f.readinto(buf)
        self.n += n
        return {answer} if self.n > 200000 else n
with open("image.bin", "rb") as f, OTA() as ota:
    ota.write_file(Lying(f))
"""


def _lie(answer: str, said: str):
    return (
        LYING_STREAM.format(answer=answer),
        "ValueError",
        r"Stream error: readinto\(\) returned " + said + r" for a buffer of \d+ bytes\.",
    )


# (id, image file, device code, exception type, message pattern)
CASES = [
    (
        "truncated",
        GOOD[:1_000_000],
        WRITE.format(args=""),
        "OSError",
        r"\(-5379, 'ESP_ERR_OTA_VALIDATE_FAILED'\)",
    ),
    (
        "truncated-with-length",
        GOOD[:1_000_000],
        WRITE.format(args="length=1525536"),
        "ValueError",
        r"Receive 1000000 bytes \(expect 1525536\)\.",
    ),
    (
        "wrong-sha",
        GOOD,
        WRITE.format(args="sha='" + "0" * 64 + "'"),
        "ValueError",
        r"SHA mismatch recv=" + sha256(GOOD) + " expect=0{64}\\.",
    ),
    (
        "sha-too-short",
        GOOD,
        WRITE.format(args="sha='18026395faa6'"),
        "ValueError",
        r"sha must be the image's SHA-256 as 64 hex digits, not '18026395faa6'",
    ),
    (
        "sha-not-hex",
        GOOD,
        WRITE.format(args="sha='" + "g" * 64 + "'"),
        "ValueError",
        r"sha must be the image's SHA-256 as 64 hex digits, not 'g{64}'",
    ),
    (
        "wrong-length",
        GOOD,
        WRITE.format(args="length=1525535"),
        "ValueError",
        r"Receive 1525536 bytes \(expect 1525535\)\.",
    ),
    (
        "negative-length",
        GOOD,
        WRITE.format(args="length=-1"),
        "ValueError",
        r"length must be the image size in bytes \(>= 0\), not -1",
    ),
    (
        "length-larger-than-slot",
        GOOD,
        WRITE.format(args=f"length={SLOT + 1}"),
        "ValueError",
        r"length \(1572865 bytes\) is > size of partition\.",
    ),
    (
        "image-larger-than-slot",
        image("v1.23.0", SLOT + 4096 * 3 + 16 * 7 + 32),
        WRITE.format(args=""),
        "ValueError",
        r"Image is larger than partition 'ota_1' \(1572864 bytes\)\.",
    ),
    (
        "random-bytes",
        _random(300_000),
        WRITE.format(args=""),
        "ValueError",
        r"Not an ESP32 app image: it starts with 0x[0-9a-f]{2}, not 0xe9",
    ),
    (
        "random-bytes-after-0xe9",
        _random(300_000, 0xE9),
        WRITE.format(args=""),
        "ValueError",
        r"Image is for an unknown chip \(chip id \d+\), but this device is ESP32",
    ),
    (
        "other-chip",
        image("v1.23.0", chip="esp32s3"),
        WRITE.format(args=""),
        "ValueError",
        r"Image is for ESP32-S3 \(chip id 9\), but this device is ESP32 \(chip id 0\)",
    ),
    (
        "bootloader",
        images.bootloader_image(),
        WRITE.format(args=""),
        "ValueError",
        r"This is a bootloader image, or a merged firmware\.bin",
    ),
    (
        "merged-firmware-bin",
        images.merged_firmware(GOOD, b"\xaa\x50" + b"\xff" * 30),
        WRITE.format(args=""),
        "ValueError",
        r"This is a bootloader image, or a merged firmware",
    ),
    (
        "partition-table",
        b"\xaa\x50" + bytes(3070),
        WRITE.format(args=""),
        "ValueError",
        r"it starts with 0xaa, not 0xe9",
    ),
    (
        "header-only",
        GOOD[:200],
        WRITE.format(args=""),
        "ValueError",
        r"only 200 bytes \(an app image has at least 288\)",
    ),
    ("zero-bytes", b"", WRITE.format(args=""), "ValueError", r"No image data was written\."),
    (
        "corrupted-byte",
        _flipped(),
        WRITE.format(args=""),
        "OSError",
        r"\(-5379, 'ESP_ERR_OTA_VALIDATE_FAILED'\)",
    ),
    ("stream-raises-midway", GOOD, RAISING_STREAM, "OSError", r"\(5, 'link down'\)"),
    ("stream-count-above-buffer", GOOD, *_lie("len(buf) + 1", r"\d+")),
    ("stream-count-far-above", GOOD, *_lie("1 << 20", "1048576")),
    ("stream-count-negative", GOOD, *_lie("-1", "-1")),
    ("stream-count-not-int", GOOD, *_lie("float(n)", "a float")),
]


def _run_case(sim, tmp_path, data, code):
    (tmp_path / "image.bin").write_bytes(data)
    wrapped = "try:\n" + "\n".join("    " + line for line in code.strip().splitlines())
    wrapped += "\nexcept Exception as e:\n    print('ERROR', type(e).__name__, repr(e.args))\n"
    r = sim.run(wrapped, cwd=tmp_path)
    errors = [line for line in r.stdout.splitlines() if line.startswith("ERROR ")]
    assert errors, f"no error raised:\n{sim.out}"
    _, etype, args = errors[-1].split(" ", 2)
    return etype, ast.literal_eval(args)


def _outside_slot(flash: bytes) -> bytes:
    return flash[:0x190000] + flash[0x190000 + SLOT :]


@pytest.mark.parametrize("name,data,code,etype,pattern", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_refused_and_changes_nothing(sim, tmp_path, name, data, code, etype, pattern):
    before = sim.flash()
    got_type, args = _run_case(sim, tmp_path, data, code)
    assert got_type == etype
    assert re.search(pattern, repr(args) if etype == "OSError" else args[0]), args
    after = sim.flash()
    assert sim.boot_slot() == "ota_0"
    assert _outside_slot(after) == _outside_slot(before)
    sim.power_on()
    assert sim.running() == "ota_0"


def test_rejected_before_anything_is_erased(sim, tmp_path):
    # Header checks run on the first bytes: the spare slot is not touched either.
    before = sim.flash()
    for data in (images.bootloader_image(), image("v1.23.0", chip="esp32s3"), _random(8192)):
        _run_case(sim, tmp_path, data, WRITE.format(args=""))
        assert sim.flash() == before


def test_no_ota_partitions(make_sim):
    sim = make_sim(FACTORY_ONLY)
    before = sim.flash()
    r = sim.run("""
from ota.writer import OTA
try:
    OTA()
except OSError as e:
    print('ERROR', repr(e.args))
""")
    assert "ERROR (2, \"This firmware's partition table has no spare OTA partition" in r.stdout
    assert "BOARD_VARIANT=OTA" in r.stdout
    assert sim.flash() == before


def test_one_ota_slot_is_never_overwritten_while_running_from_it(make_sim):
    sim = make_sim(ONE_OTA_SLOT)
    before = sim.flash()
    r = sim.run("""
import ota
print('ready', ota.ready())
from ota.writer import OTA
try:
    OTA()
except OSError as e:
    print('ERROR', e.args[0])
""")
    assert r.stdout.splitlines() == ["ready False", "ERROR 2"]
    assert sim.flash() == before


def test_failed_update_while_pending_verify_keeps_the_state(sim, tmp_path):
    # Running an unconfirmed firmware: a refused image must not confirm it.
    (tmp_path / "good.bin").write_bytes(GOOD)
    sim.run(
        """
from ota.writer import OTA
with open("good.bin", "rb") as f, OTA(verbose=False) as ota:
    ota.write_file(f)
import machine
machine.reset()
""",
        cwd=tmp_path,
    )
    assert sim.running() == "ota_1" and sim.state("ota_1") == 1
    before = sim.flash()
    etype, _ = _run_case(sim, tmp_path, images.bootloader_image(), WRITE.format(args=""))
    assert etype == "ValueError"
    assert sim.flash() == before
    assert sim.state("ota_1") == 1  # still PENDING_VERIFY


MISUSE = """
from ota.writer import OTA
def attempt(what, fn):
    try:
        fn()
        print(what, "no error")
    except Exception as e:
        print(what, type(e).__name__, e)
small = open("small.bin", "rb").read()
w = OTA(verbose=False)
attempt("second writer", lambda: OTA(verbose=False))
attempt("wrong type", lambda: w.write(12345))
attempt("write after error", lambda: w.write(small))
attempt("close after error", lambda: w.close())
w2 = OTA(verbose=False)
w2.write(small)
w2.close()
attempt("write after close", lambda: w2.write(small))
attempt("write_file after close", lambda: w2.write_file(open("small.bin", "rb")))
w3 = OTA(verbose=False)
w3.abort()
attempt("write after abort", lambda: w3.write(small))
attempt("close after abort", lambda: w3.close())
"""


def test_writer_misuse_raises_and_leaves_the_flash_alone(sim, tmp_path):
    # Writing after close() would erase the tail of the slot just set as boot; a second writer
    # would corrupt the first one's image; an error must end the session on every backend.
    small = image("v1.23.0", 200_000)
    (tmp_path / "small.bin").write_bytes(small)
    r = sim.run(MISUSE, cwd=tmp_path)
    lines = {}
    for line in r.stdout.splitlines():
        for what in (
            "second writer",
            "wrong type",
            "write after error",
            "close after error",
            "write after close",
            "write_file after close",
            "write after abort",
            "close after abort",
        ):
            if line.startswith(what + " "):
                lines[what] = line[len(what) + 1 :]
    assert lines["second writer"] == (
        "ValueError Another OTA update is open on 'ota_1': close() or abort() it first."
    )
    assert lines["wrong type"].startswith("TypeError")
    assert lines["write after error"] == "ValueError This OTA update was aborted."
    assert lines["close after error"] == "ValueError This OTA update was aborted."
    closed = "ValueError This OTA update is closed: start a new OTA() to write again."
    assert lines["write after close"] == closed
    assert lines["write_file after close"] == closed
    assert lines["write after abort"] == "ValueError This OTA update was aborted."
    assert lines["close after abort"] == "ValueError This OTA update was aborted."
    # The one image that was closed is the boot image, intact up to its last byte.
    assert sim.boot_slot() == "ota_1"
    assert sim.region("ota_1")[: len(small)] == small
    sim.power_on()
    assert sim.running() == "ota_1"


# A byte that esp_image_verify() does not cover (the entry address, in an image without an
# appended SHA-256) goes bad on the flash after it was written: only the read-back catches it.
READBACK = """
from esp32 import Partition
from ota.writer import OTA
try:
    with open("image.bin", "rb") as f, OTA(verbose=False) as ota:
        ota.write_file(f)
        p = Partition.find(Partition.TYPE_APP, label="ota_1")[0]
        b = bytearray(1)
        p.readblocks(0, b, 4)
        p.writeblocks(0, bytes([b[0] & (b[0] - 1)]), 4)  # one bit cleared, as NOR fails
except Exception as e:
    print("ERROR", type(e).__name__, e)
"""


def test_readback_catches_a_byte_gone_bad_on_flash(sim, tmp_path):
    data = images.app_image("v1.23.0", 300_000, digest=False)
    assert data[4] != 0
    (tmp_path / "image.bin").write_bytes(data)
    r = sim.run(READBACK, cwd=tmp_path)
    bad = bytearray(data)
    bad[4] &= bad[4] - 1
    assert f"ERROR ValueError SHA verify failed: write={sha256(data)} read={sha256(bad)}" in (
        r.stdout
    ), sim.out
    assert sim.boot_slot() == "ota_0"
    sim.power_on()
    assert sim.running() == "ota_0"


def test_a_valid_image_refused_by_its_sha_can_never_boot(sim, tmp_path):
    # The image is a good app, but not the one the caller vouched for (its SHA-256 differs):
    # refused, and its first sector erased, so that no set_boot() or rollback can start it.
    (tmp_path / "image.bin").write_bytes(GOOD)
    r = sim.run(
        """
import esp32
from ota.writer import OTA
try:
    with open("image.bin", "rb") as f, OTA(sha="ab" * 32, verbose=False) as ota:
        ota.write_file(f)
except ValueError as e:
    print("REFUSED", e)
try:
    esp32.Partition("ota_1").set_boot()
    print("BOOTABLE")
except OSError as e:
    print("NOT BOOTABLE", e.args[0])
""",
        cwd=tmp_path,
    )
    assert "REFUSED SHA mismatch recv=" + sha256(GOOD) in r.stdout, sim.out
    assert "NOT BOOTABLE -5379" in r.stdout, sim.out
    assert sim.region("ota_1")[:4096] == b"\xff" * 4096
    assert (
        sim.region("ota_1")[4096 : len(GOOD) // 4096 * 4096]
        == GOOD[4096 : len(GOOD) // 4096 * 4096]
    )
    assert sim.boot_slot() == "ota_0"
