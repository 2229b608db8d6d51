"""An update started while the running firmware is still unconfirmed (PENDING_VERIFY: it booted
after an update and nobody called ota.stop_rollback()). The running firmware is confirmed just
before the first erase, so what a failure leaves depends on when the image is refused:

- at the header checks (before anything is erased): still unconfirmed, the flash untouched;
- later (a download that fails its SHA-256, a compressed stream that breaks off, a version
  found only in MicroPython's banner): confirmed, and the spare slot, which held the firmware
  a rollback would return to, holds the refused bytes instead; no rollback is possible any
  more. status() cannot tell: see SHOWN for what it names that slot."""

import json
import zlib

import pytest
import test_network
from conftest import image, sha256
from espsim import otadata
from mpota import images
from test_network import update, write_manifest

site = test_network.site  # the fixture: (www directory, server, base URL)

RUNNING = image("v1.23.0", 300_032)  # updated to, booted, not confirmed (ota_1)
NEW = image("v1.24.0", 400_016)


@pytest.fixture
def pending(sim, tmp_path):
    """ota_1 runs RUNNING, unconfirmed; ota_0 holds the firmware before it."""
    (tmp_path / "running.bin").write_bytes(RUNNING)
    sim.run(
        """
from ota.writer import OTA
with open("running.bin", "rb") as f, OTA(verbose=False) as ota:
    ota.write_file(f)
import machine
machine.reset()
""",
        cwd=tmp_path,
    )
    assert sim.running() == "ota_1" and sim.state("ota_1") == otadata.PENDING_VERIFY
    rows, _ = slots(sim, tmp_path)
    assert rows["ota_0"][:2] == ("VALID", "v1.22.0")  # the firmware a rollback returns to
    return sim.region("ota_0")


STATUS = """
import ota.status
for label, st, desc, running, boot in ota.status.slots():
    print("SLOT|%s|%s|%s|%s|%s" % (label, st, desc[0] if desc else None, running, boot))
"""
FORCE = """
import ota.rollback
try:
    ota.rollback.force()
    print("FORCE ok")
except OSError as e:
    print("FORCE", e.args[0])
"""


def slots(sim, cwd, force=False):
    """status()'s rows {label: (state, version, running, next boot)}; with force, then
    ota.rollback.force()'s outcome ("ok" or the OSError's code)."""
    r = sim.run(STATUS + (FORCE if force else ""), cwd=cwd)
    rows = {}
    for line in r.stdout.splitlines():
        if line.startswith("SLOT|"):
            _, label, st, version, running, boot = line.split("|")
            rows[label] = (st, version, running == "True", boot == "True")
    forced = [line[len("FORCE ") :] for line in r.stdout.splitlines() if line.startswith("FORCE ")]
    return rows, forced[-1] if force else None


def _older_in_app_description(www):
    # The app description says v1.21.0 (a build with PROJECT_VER); the manifest, v1.25.0.
    (www / "micropython.bin").write_bytes(
        images.app_image("v1.21.0", 200_016, project_version="v1.21.0")
    )
    write_manifest(www, version="v1.25.0")
    return "The image is version v1.21.0"


def _other_chip(www):
    (www / "micropython.bin").write_bytes(image("v1.24.0", 200_016, chip="esp32s3"))
    m = write_manifest(www)
    del m["chip"]  # a manifest that does not say: the writer's header check refuses it
    (www / "manifest.json").write_text(json.dumps(m))
    return "Image is for ESP32-S3 (chip id 9), but this device is ESP32 (chip id 0)."


def _older_manifest(www):
    (www / "micropython.bin").write_bytes(image("v1.21.0", 200_016))
    write_manifest(www)  # version v1.21.0: refused before the image is requested
    return "The manifest version v1.21.0 is older than the running firmware's v1.23.0"


@pytest.mark.parametrize("serve", [_older_in_app_description, _other_chip, _older_manifest])
def test_refused_at_the_header_checks_stays_unconfirmed(sim, pending, site, tmp_path, serve):
    www, server, base = site
    error = serve(www)
    before = sim.flash()
    result, out = update(sim, base + "/manifest.json", cwd=tmp_path)
    assert result.startswith("ValueError " + error), out
    # The writer was about to confirm it (not yet started for a refused manifest)...
    assert ("is not confirmed yet" in out) == (serve is not _older_manifest)
    assert sim.flash() == before  # ...but the image was refused before the first erase
    assert sim.state("ota_1") == otadata.PENDING_VERIFY
    sim.power_on()
    assert sim.running() == "ota_0"  # the bootloader still rolls back


# What status() shows for the spare slot afterwards, pure and native backend: its otadata record
# (the pure backend leaves the old one, VALID; ESP-IDF v5.5's esp_ota_begin() erases it) and
# the version status() finds there.
SHOWN = {
    # A whole image refused by its SHA-256: its first sector erased, no app there any more.
    "_bad_sha": {"pure": ("VALID", "None"), "native": ("-", "None")},
    "_broken_zlib": {"pure": ("VALID", "v1.24.0"), "native": ("-", "v1.24.0")},
    # Refused before its banner was written: on the pure backend the rest of the slot still
    # holds the previous firmware's bytes, banner included, so status() names that firmware;
    # the native backend erased the image's whole length up front: no version at all.
    "_older_banner": {"pure": ("VALID", "v1.22.0"), "native": ("-", "")},
}


def _bad_sha(www):
    (www / "micropython.bin").write_bytes(NEW)
    write_manifest(www)
    bad = bytearray(NEW)
    bad[200_000] ^= 1  # the server's file differs from what the manifest describes
    (www / "micropython.bin").write_bytes(bad)
    return "SHA mismatch recv=" + sha256(bytes(bad)), len(bad)


def _broken_zlib(www):
    (www / "micropython.bin").write_bytes(NEW)
    m = write_manifest(www, compression="zlib")
    packed = zlib.compress(NEW, 9)
    (www / m["firmware"]).write_bytes(packed[: len(packed) // 2])  # the stream breaks off
    return "The compressed image is truncated or corrupted.", None


def _older_banner(www):
    # A stock build: its version is only in MicroPython's banner, in the first segment (here
    # at 190 KB, as in a real 1.5 MB image), checked as the image streams in.
    old = image("v1.21.0", images.SEED_IMAGE_SIZE)
    assert 131072 < old.find(b"MicroPython v1.21.0") < 196608
    (www / "micropython.bin").write_bytes(old)
    write_manifest(www, version="v1.25.0")
    return "The image is version v1.21.0 (its MicroPython banner), but the manifest says", None


@pytest.mark.parametrize("serve", [_bad_sha, _broken_zlib, _older_banner])
def test_refused_after_the_first_erase_leaves_it_confirmed(sim, pending, site, tmp_path, serve):
    www, server, base = site
    error, written = serve(www)
    served = (www / "micropython.bin").read_bytes()
    result, out = update(sim, base + "/manifest.json", cwd=tmp_path)
    assert result.startswith("ValueError " + error), out
    assert "is not confirmed yet" in out
    assert sim.state("ota_1") == otadata.VALID  # confirmed before the first erase
    slot = sim.region("ota_0")
    if written:
        # A whole image refused by its SHA-256 could still be a valid app: its first sector is
        # erased, so that no rollback or set_boot() can start it. The rest of the refused bytes
        # are on flash (the pure backend writes its last piece before the SHA-256 is compared,
        # the native core its whole 4 KB pieces: a tail stays unwritten).
        assert slot[:4096] == b"\xff" * 4096
        n = written if sim.backend == "pure" else written // 4096 * 4096
        assert slot[4096:n] == served[4096:n]
    else:
        assert slot[:288] == served[:288]  # the previous firmware is gone
        assert slot[-65536:] == pending[-65536:]  # half-written: the old tail is still there
    rows, force = slots(sim, tmp_path, force=True)
    assert rows["ota_0"] == SHOWN[serve.__name__][sim.backend] + (False, False)
    assert rows["ota_1"] == ("VALID", "v1.23.0", True, True)
    assert force == "-5379"  # ESP_ERR_OTA_VALIDATE_FAILED: no rollback to it
    for _ in range(2):
        sim.power_on()
        assert sim.running() == "ota_1"  # no rollback either: it stays on the running firmware
    assert not (tmp_path / "ota_resume.json").exists()


def test_banner_in_the_first_buffer(sim, pending, site, tmp_path):
    # The banner 24 KB into the image: the pure backend finds it while its first 64 KB buffer
    # fills, before the first erase; the native one has started writing after 288 bytes.
    www, server, base = site
    old = image("v1.21.0", 200_016)
    assert old.find(b"MicroPython v1.21.0") < 65536
    (www / "micropython.bin").write_bytes(old)
    write_manifest(www, version="v1.25.0")
    before = sim.flash()
    result, out = update(sim, base + "/manifest.json", cwd=tmp_path)
    assert result.startswith("ValueError The image is version v1.21.0 (its MicroPython banner)")
    if sim.backend == "pure":
        assert sim.flash() == before and sim.state("ota_1") == otadata.PENDING_VERIFY
    else:
        assert sim.state("ota_1") == otadata.VALID and sim.region("ota_0")[:288] == old[:288]
