"""Realistic images and firmware identity: every chip's image as esptool sees it, the layout of
a real MicroPython build (../shared/reference/firmware, when present), the banner found in a
streaming image, version ordering, and the update policy by build id and version."""

import hashlib
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, image, sha256
from esp_idf_defs import AppDescription
from mpota import images, inspect, manifest

# beside the clone, as CI places it ($MPOTA_REFERENCE elsewhere)
REFERENCE = Path(os.environ.get("MPOTA_REFERENCE", ROOT.parent / "shared/reference/firmware"))
REF_BIN = REFERENCE / "micropython-v1.28.0-esp32c3.bin"
ESPTOOL = Path(sys.executable).parent / "esptool"
OTA = ROOT / "python" / "ota"


def _load(name):
    spec = importlib.util.spec_from_file_location("ota_" + name, OTA / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


identity = _load("identity")
version = _load("version")


def image_info(tmp_path, data):
    p = tmp_path / "i.bin"
    p.write_bytes(data)
    r = subprocess.run([str(ESPTOOL), "image-info", str(p)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def segments(info):
    """[(length, load address, memory types)] from esptool image-info's table."""
    rows = re.findall(r"^\s+\d+\s+(0x[0-9a-f]+)\s+(0x[0-9a-f]+)\s+0x[0-9a-f]+\s+(.*)$", info, re.M)
    return [(int(n, 16), int(a, 16), t.strip()) for n, a, t in rows]


@pytest.mark.parametrize("chip", sorted(images.CHIPS))
def test_every_chip_image_is_what_esptool_expects(tmp_path, chip):
    data = images.app_image("v1.28.0", chip=chip, date="2026-04-06")
    info = image_info(tmp_path, data)
    assert "Checksum:" in info and "(valid)" in info.split("Checksum:")[1].splitlines()[0]
    assert re.search(r"Validation hash: [0-9a-f]{64} \(valid\)", info)
    assert re.search(r"Project name: *\n", info) and re.search(r"App version: *\n", info)
    assert "ESP-IDF: v5.5.2" in info and "MMU page size: 64 KB" in info
    segs = segments(info)
    kinds = [t for _, _, t in segs]
    assert "DROM" in kinds[0] and any("IROM" in t for t in kinds[1:])
    assert any("IRAM" in t for t in kinds) and any("DRAM" in t for t in kinds)
    assert 1_000_000 < len(data) < 1_500_000  # fits a 1.5 MB OTA slot, as a release does
    # MicroPython's banner pair in the rodata, each string NUL-terminated and 4-byte aligned
    c = images.CHIPS[chip]
    b = b"MicroPython v1.28.0 on 2026-04-06\0"
    m = f"; {c.board} with {c.mcu}\0".encode()
    i = data.find(b)
    assert i > 0 and i < 24 + 8 + segs[0][0]  # in the first segment, DROM
    j = data.find(m, i)
    assert j == i + len(b) + (-len(b) % 4)
    assert data[i + len(b) : j] == bytes(j - i - len(b))


def test_builds_differ_by_build_id_only_when_asked(tmp_path):
    a = images.app_image("v1.24.0")
    assert images.app_image("v1.24.0") == a  # reproducible
    b = images.app_image("v1.24.0", build=1)
    assert a[176:208] != b[176:208]  # app_elf_sha256: another build of the same source
    assert inspect.identity(a)["version"] == inspect.identity(b)["version"] == "v1.24.0"
    c = images.app_image("v1.24.0", project_version="2.1-custom", size=600_032)
    assert len(c) == 600_032
    assert AppDescription.from_bytes(c[32:288]).version == "2.1-custom"
    assert inspect.identity(c)["version"] == "2.1-custom"


def test_padding_segments_where_elf2image_puts_them(tmp_path):
    # A small image: the RAM segments do not fill the gap up to IROM's MMU page, so esptool
    # adds a padding segment at load address 0; the simulated bootloader must not load it.
    data = image("v1.23.0", 150_032)
    segs = segments(image_info(tmp_path, data))
    assert [a for _, a, _ in segs].count(0) == 1
    from espsim import appimage, chips

    md = appimage.Metadata()
    md.segments = [(a, n, 0) for n, a, _ in segs]
    appimage.check_load_addresses(md, chips.get("esp32"))  # no "bad load address range"
    # The same segments with the padding's address changed to one no RAM has are refused.
    md.segments = [(0x20000000 if a == 0 else a, n, o) for a, n, o in md.segments]
    with pytest.raises(appimage.Invalid, match="bad load address range"):
        appimage.check_load_addresses(md, chips.get("esp32"))


@pytest.mark.skipif(not REF_BIN.exists(), reason=f"no reference image in {REFERENCE}")
def test_looks_like_the_reference_build(tmp_path):
    ref = REF_BIN.read_bytes()
    ours = images.app_image("v1.28.0", chip="esp32c3", date="2026-04-06")
    ri, oi = image_info(tmp_path, ref), image_info(tmp_path, ours)
    rs, os_ = segments(ri), segments(oi)
    assert [t for _, _, t in rs] == [t for _, _, t in os_]  # DROM DRAM IRAM IROM IRAM RTC RTC
    for (rn, ra, _), (on, oa, _) in zip(rs, os_, strict=True):
        assert ra >> 20 == oa >> 20  # same memory regions
        assert 0.5 < on / rn < 2 or rn < 0x100
    assert 0.8 < len(ours) / len(ref) < 1.25
    for line in ("Project name: \n", "App version: \n", "ESP-IDF: v5.5.2", "Chip ID: 5"):
        assert line in ri and line in oi
    # the same strings, laid out the same way
    for s in (b"MicroPython v1.28.0 on 2026-04-06\0", b"; ESP32C3 module with ESP32C3\0"):
        assert ref.find(s) % 4 == 0 and ours.find(s) % 4 == 0
    gap = [d.find(b"; ESP32C3") - d.find(b"MicroPython v1.28.0 on") for d in (ref, ours)]
    assert gap[0] == gap[1]


@pytest.mark.skipif(not REF_BIN.exists(), reason=f"no reference image in {REFERENCE}")
def test_identity_of_the_reference_image(tmp_path):
    ref = REF_BIN.read_bytes()
    i = inspect.identity(ref)
    assert i["version"] == "v1.28.0" and i["source"] == "banner"
    assert i["machine"] == "ESP32C3 module with ESP32C3" and i["date"] == "2026-04-06"
    info = image_info(tmp_path, ref)  # esptool's reading of app_elf_sha256
    assert i["build"] == re.search(r"ELF file SHA256: ([0-9a-f]{64})", info).group(1)
    (tmp_path / "micropython.bin").write_bytes(ref)
    m = manifest.make(tmp_path / "micropython.bin")
    assert (m["version"], m["chip"], m["build"]) == ("v1.28.0", "esp32c3", i["build"])
    assert "MicroPython v1.28.0" in inspect.describe_file(ref)
    # the device's scanner, fed the image in chunks of every awkward size
    for n in (1, 11, 12, 13, 127, 128, 4096):
        sc = identity.Scanner()
        for off in range(0, 0x20000, n):
            if sc.feed(bytearray(ref[off : off + n])):
                break
        assert sc.end() == ("v1.28.0", "2026-04-06", "ESP32C3 module with ESP32C3"), n
    assert identity.build_id(ref[:288]) == i["build"]


def test_scanner_under_micropython(tmp_path):
    data = image("v1.25.0-preview.42.gdeadbee", 300_000, chip="esp32c6")
    (tmp_path / "img.bin").write_bytes(data)
    code = f"""
import sys
sys.path.insert(0, {str(OTA)!r})
import identity
f = open({str(tmp_path / "img.bin")!r}, "rb")
buf = bytearray(13)
sc = identity.Scanner()
while True:
    n = f.readinto(buf)
    if not n or sc.feed(buf, n):
        break
print(sc.end())
"""
    r = subprocess.run(
        [str(Path(sys.executable).parent / "micropython"), "-c", code],
        capture_output=True,
        text=True,
    )
    want = ("v1.25.0-preview.42.gdeadbee", images.app_image.__defaults__ and None)
    assert r.returncode == 0, r.stderr
    got = eval(r.stdout)
    assert got[0] == want[0] and got[2] == "ESP32C6 module with ESP32C6"
    assert got == inspect.banner(data)


def test_scanner_ignores_what_is_not_the_banner():
    sc = identity.Scanner()
    junk = b"Welcome to MicroPython on the ESP32!\n\0MicroPython-1.28.0-riscv\0MicroPython x\0"
    assert sc.feed(bytearray(junk)) is None and sc.end() is None
    assert identity.parse_banner(b"MicroPython v1.2 on 2024-1-01\0") is None
    assert identity.parse_banner(b"MicroPython (with v2.0 preview) v1.27.0 on 2025-12-09\0") == (
        "v1.27.0",
        "2025-12-09",
        None,
    )


ORDER = [
    "v1.22.2",
    "v1.23.0-preview",
    "v1.23.0-preview.5.g1234567",
    "v1.23.0-preview.123.gabcdef0",
    "1.23.0",
    "v1.23.0-dirty",
    "v1.23.0-5-gabcdef0",
    "v1.23.0-5-gabcdef0-dirty",
    "v1.23.0.1",
    "v1.23.1",
    "v1.24.0",
    "v1.100.0",
]


def test_version_ordering():
    for i, a in enumerate(ORDER):
        for j, b in enumerate(ORDER):
            assert version.compare(a, b) == (i > j) - (i < j), (a, b)
    assert version.compare("v1.23.0", "v1.23.0.0") == 0
    assert version.compare("v1.22.2-rc1", "v1.22.2") == -1
    for bad in ("abcdef0", "", "main", "g1234567"):
        assert version.compare(bad, "v1.23.0") is None
        assert version.compare("v1.23.0", bad) is None


def test_version_ordering_under_micropython():
    code = f"""
import sys
sys.path.insert(0, {str(OTA)!r})
import version
o = {ORDER!r}
print(all(version.compare(a, b) == (i > j) - (i < j)
          for i, a in enumerate(o) for j, b in enumerate(o)), version.compare("abc1234", o[0]))
"""
    r = subprocess.run(
        [str(Path(sys.executable).parent / "micropython"), "-c", code],
        capture_output=True,
        text=True,
    )
    assert r.stdout.split() == ["True", "None"], r.stderr


# The policy on the simulated device, with both backends and under both interpreters.
# (The simulated device's os.uname() is not yet the running image's: the running firmware's
# version comes from its banner, scanned in its slot, as for any other slot.)
DEVICE = """
import ota.update
try:
    ota.update.from_file({url!r}, reboot=False{kw})
    print("RESULT ok")
except Exception as e:
    print("RESULT", type(e).__name__, e)
"""


def run_update(sim, tmp_path, fw, **kw):
    (tmp_path / "new.bin").write_bytes(fw)
    if sim.backend == "native":
        kw.setdefault("backend", "native")
    extra = "".join(f", {k}={v!r}" for k, v in kw.items())
    r = sim.run(DEVICE.format(url="new.bin", kw=extra), cwd=tmp_path)
    res = [ln for ln in r.stdout.splitlines() if ln.startswith("RESULT")]
    assert res, sim.out
    return res[-1][7:], r.stdout


RUNNING = image("v1.23.0", 900_000)


def test_the_same_build_is_refused_before_any_erase(make_sim, tmp_path):
    sim = make_sim(firmware=RUNNING)
    before = sim.flash()
    result, out = run_update(sim, tmp_path, RUNNING)
    assert result.startswith("ValueError This image is the build already running"), out
    assert sim.flash() == before
    # another build of the same version is not the same firmware
    other = images.app_image("v1.23.0", 900_000, build=7)
    result, out = run_update(sim, tmp_path, other)
    assert result == "ok", out
    assert sim.boot_slot() == "ota_1"


def test_from_file_without_a_version_installs_an_older_image(make_sim, tmp_path):
    sim = make_sim(firmware=RUNNING)
    old = image("v1.21.0", 300_032)
    result, out = run_update(sim, tmp_path, old, sha=sha256(old), length=len(old))
    assert result == "ok", out
    assert f"Replacing MicroPython v1.23.0 (build {RUNNING[176:180].hex()})." in out
    assert sim.boot_slot() == "ota_1"


def test_a_declared_downgrade_is_refused_unless_allowed(make_sim, tmp_path):
    sim = make_sim(firmware=RUNNING)
    old = image("v1.21.0", 300_032)
    before = sim.flash()
    result, out = run_update(sim, tmp_path, old, version="v1.21.0")
    assert result.startswith(
        "ValueError The manifest version v1.21.0 is older than the running firmware's v1.23.0"
    ), out
    assert sim.flash() == before
    result, out = run_update(sim, tmp_path, old, version="v1.21.0", allow_downgrade=True)
    assert result == "ok", out
    assert sim.boot_slot() == "ota_1"


def test_an_image_older_than_its_manifest_says_is_aborted(make_sim, tmp_path):
    # The manifest says v1.24.0; the banner found while the image streams in says v1.22.0.
    sim = make_sim(firmware=RUNNING)
    old = image("v1.22.0", 600_032)
    result, out = run_update(sim, tmp_path, old, version="v1.24.0")
    assert result == (
        "ValueError The image is version v1.22.0 (its MicroPython banner), but the manifest "
        "says v1.24.0: refused."
    ), out
    assert sim.boot_slot() == "ota_0"
    sim.power_on()
    assert sim.running() == "ota_0"


def test_status_names_each_slot_by_identity(make_sim, tmp_path):
    sim = make_sim(firmware=RUNNING)
    new = image("v1.24.0-3-gabcdef0", 600_032)
    result, out = run_update(sim, tmp_path, new)
    assert result == "ok", out
    r = sim.run("from ota.status import slots\nfor s in slots(): print(s[0], s[2][:2], s[2][5])")
    assert r.stdout.splitlines() == [
        f"ota_0 ('v1.23.0', 'MicroPython') {RUNNING[176:208].hex()}",
        f"ota_1 ('v1.24.0-3-gabcdef0', 'MicroPython') {new[176:208].hex()}",
    ]
    assert hashlib.sha256(new).hexdigest() == sha256(new)
    assert json.dumps(inspect.identity(new))  # the PC side agrees
    assert inspect.identity(new)["version"] == "v1.24.0-3-gabcdef0"
