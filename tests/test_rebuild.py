"""Rebuilds and release versions (issue 15, items 1 and 2): a build of the same MicroPython
version with other frozen modules installs, as a patch and as a full image, through
`mpota manifest NEW --from OLD` as written; the same build again is "nothing to do"; a release
version of the user's own (`mpota manifest --version 2.3.1`) orders releases on the device; a
bare git hash is never a version."""

import json
import subprocess
import sys

import pytest
from conftest import ROOT, image
from mpota import inspect, pairs

OLD = image("v1.28.0", 400_016)
# The user's app changed, frozen into the firmware: the same MicroPython, another build.
REBUILD = pairs.variant(OLD, "frozen")
AGAIN = pairs.variant(OLD, "frozen", seed=2)
THIRD = pairs.variant(OLD, "frozen", seed=3)

DEVICE = """
import ota.update
try:
    ota.update.from_json({url!r}, reboot=False, backoff=0{kw})
    print("RESULT ok")
except Exception as e:
    print("RESULT", type(e).__name__, e)
"""


def build(img: bytes) -> str:
    return img[32 + 144 : 32 + 176].hex()


def test_the_pair_is_a_rebuild():
    assert inspect.banner(REBUILD)[0] == inspect.banner(OLD)[0] == "v1.28.0"
    assert len({build(OLD), build(REBUILD), build(AGAIN), build(THIRD)}) == 4


def mpota(*args: str, ok: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(
        [sys.executable, "-m", "mpota", *args], capture_output=True, text=True, cwd=ROOT
    )
    assert (r.returncode == 0) == ok, r.stdout + r.stderr
    return r


def publish(www, new: bytes, *args: str) -> dict:
    """`mpota manifest` as a user runs it, for `new` (patches from OLD where --from is given)."""
    (www / "micropython.bin").write_bytes(new)
    (www.parent / "old.bin").write_bytes(OLD)
    args = [a.replace("OLD", str(www.parent / "old.bin")) for a in args]
    mpota("manifest", str(www / "micropython.bin"), *args)
    return json.loads((www / "manifest.json").read_text())


def update(sim, url, cwd, **kw):
    r = sim.run(DEVICE.format(url=url, kw="".join(f", {k}={v!r}" for k, v in kw.items())), cwd=cwd)
    results = [line for line in r.stdout.splitlines() if line.startswith("RESULT")]
    assert results, sim.out
    return results[-1][len("RESULT ") :], sim.out


def firmware_requests(server) -> list:
    return [p for p, _ in server.log if not p.endswith(".json")]


@pytest.mark.parametrize("how", ["patch", "full"])
def test_a_rebuild_of_the_same_version_installs(make_sim, site, tmp_path, how):
    www, server, base = site
    sim = make_sim(firmware=OLD)
    m = publish(www, REBUILD, "--compress", "mpz", "--from", "OLD")
    assert m["version"] == "v1.28.0" and "micropython" not in m  # as today, without --version
    assert m["build"] == build(REBUILD)
    kw = {} if how == "patch" else {"delta": False}
    result, out = update(sim, base + "/manifest.json", tmp_path, **kw)
    assert result == "ok", out
    assert f"Version v1.28.0 again, another build ({build(REBUILD)[:8]}..." in out, out
    assert ("Applying the patch" in out) == (how == "patch"), out
    assert sim.boot_slot() == "ota_1"
    assert sim.region("ota_1")[: len(REBUILD)] == REBUILD
    sim.power_on()
    assert sim.running() == "ota_1"
    # status() tells the two builds of one version apart.
    r = sim.run("from ota.status import status\nstatus()", cwd=tmp_path)
    slots = [line for line in r.stdout.splitlines() if line.startswith("  ota_")][-2:]
    assert "v1.28.0" in slots[0] and f"build {build(OLD)[:8]}" in slots[0], r.stdout
    assert "v1.28.0" in slots[1] and f"build {build(REBUILD)[:8]}" in slots[1], r.stdout
    assert "[running]" in slots[1], r.stdout


def test_the_same_build_again_is_nothing_to_do(make_sim, site, tmp_path):
    www, server, base = site
    sim = make_sim(firmware=OLD)
    publish(www, OLD)
    result, out = update(sim, base + "/manifest.json", tmp_path)
    assert result.startswith(
        f"ValueError The manifest's build {build(OLD)[:16]}... is the build already running: "
        "nothing to do"
    ), out
    assert firmware_requests(server) == []  # refused before the image was asked for
    assert sim.boot_slot() == "ota_0"
    # A manifest that names another build in front of the running image: the image's own
    # build id, in its first 288 bytes, still says so before anything is erased.
    m = json.loads((www / "manifest.json").read_text())
    m["build"] = build(REBUILD)
    (www / "manifest.json").write_text(json.dumps(m))
    result, out = update(sim, base + "/manifest.json", tmp_path)
    assert result.startswith("ValueError This image is the build already running"), out
    assert sim.boot_slot() == "ota_0"
    assert sim.region("ota_1")[:4096] == b"\xff" * 4096  # nothing erased, nothing written


def test_release_versions_of_the_users_own_order_releases(make_sim, site, tmp_path):
    www, server, base = site
    sim = make_sim(firmware=OLD)
    url = base + "/manifest.json"

    def step(new, version, expect):
        publish(www, new, "--version", version)
        result, out = update(sim, url, tmp_path)
        assert result.startswith(expect), out
        if result == "ok":
            sim.power_on()
        return out

    m = publish(www, REBUILD, "--version", "2.3.1")
    assert (m["version"], m["micropython"]) == ("2.3.1", "v1.28.0")
    # Flashed over USB, the device knows no release version: it takes the first one.
    out = step(REBUILD, "2.3.1", "ok")
    assert "knows no release version for the running firmware: installing release 2.3.1" in out
    assert sim.running() == "ota_1"
    # An older release is refused before the image is fetched; the same version and build too.
    before = len(firmware_requests(server))
    step(
        AGAIN,
        "2.3.0",
        "ValueError The manifest version 2.3.0 is older than the running firmware's 2.3.1",
    )
    step(REBUILD, "2.3.1", "ValueError The manifest's build")
    assert len(firmware_requests(server)) == before
    assert sim.running() == "ota_1" and sim.boot_slot() == "ota_1"
    # The same release version in another build installs (a rebuild), a newer one too.
    out = step(AGAIN, "2.3.1", "ok")
    assert "Version 2.3.1 again, another build" in out
    assert sim.running() == "ota_0"
    step(THIRD, "2.4.0", "ok")
    assert sim.running() == "ota_1"
    r = sim.run("from ota.status import status\nstatus()", cwd=tmp_path)
    assert f"release 2.4.0 build {build(THIRD)[:8]}" in r.stdout, r.stdout
    # The image's banner is checked against the manifest's "micropython".
    publish(www, OLD, "--version", "2.5.0")
    m = json.loads((www / "manifest.json").read_text())
    m["micropython"] = "v1.29.0"
    (www / "manifest.json").write_text(json.dumps(m))
    result, out = update(sim, url, tmp_path)
    assert result == (
        "ValueError The image is version v1.28.0 (its MicroPython banner), but the manifest "
        "says v1.29.0: refused."
    ), out
    assert sim.boot_slot() == "ota_1"


def test_builds_of_one_version_are_ordered_by_sequence(make_sim, site, tmp_path):
    www, server, base = site
    sim = make_sim(firmware=OLD)
    url = base + "/manifest.json"
    publish(www, REBUILD, "--sequence", "5")
    result, out = update(sim, url, tmp_path)
    assert result == "ok", out
    sim.power_on()
    for seq in ("5", "4"):
        publish(www, AGAIN, "--sequence", seq)
        result, out = update(sim, url, tmp_path)
        assert result.startswith(f"ValueError The manifest's sequence {seq} is not above 5"), out
        assert sim.boot_slot() == "ota_1"
    publish(www, AGAIN, "--sequence", "6")
    result, out = update(sim, url, tmp_path)
    assert result == "ok", out
    assert sim.boot_slot() == "ota_0"


# -- item 2: a bare git hash is never a version ---------------------------------------------

VERSIONS = """
from ota import version
for a, b in (("8675309", "v1.24.0"), ("abcdef0", "v1.24.0"), ("8675309-dirty", "1"),
             ("v1.24.0", "8675309"), ("1", "2"), ("123456", "1"), ("v1.25.0", "v1.24.0")):
    print(a, b, version.compare(a, b), version.is_hash(a))
"""


def test_a_git_hash_is_not_a_version(make_sim):
    sim = make_sim(firmware=OLD)
    r = sim.run(VERSIONS)
    assert r.stdout.split("\n")[:7] == [
        "8675309 v1.24.0 None True",
        "abcdef0 v1.24.0 None True",
        "8675309-dirty 1 None True",
        "v1.24.0 8675309 None False",
        "1 2 -1 False",  # ESP-IDF's PROJECT_VER outside git: a short number stays a number
        "123456 1 1 False",
        "v1.25.0 v1.24.0 1 False",
    ], r.stdout


def test_a_manifest_whose_version_is_a_git_hash_is_refused(make_sim, site, tmp_path):
    www, server, base = site
    sim = make_sim(firmware=OLD)
    publish(www, REBUILD)
    m = json.loads((www / "manifest.json").read_text())
    m["version"] = "8675309"
    (www / "manifest.json").write_text(json.dumps(m))
    result, out = update(sim, base + "/manifest.json", tmp_path)
    assert result == (
        "ValueError The manifest version '8675309' is a git hash (git describe without a tag), "
        "not a version: it cannot be ordered against the running firmware's 'v1.28.0' "
        "(allow_downgrade=True installs it anyway)."
    ), out
    assert firmware_requests(server) == [] and sim.boot_slot() == "ota_0"


@pytest.mark.parametrize("bad", ["8675309", "abcdef0123", "banana", "", "1" * 65])
def test_mpota_manifest_refuses_what_devices_cannot_order(tmp_path, bad):
    (tmp_path / "new.bin").write_bytes(REBUILD)
    r = mpota("manifest", str(tmp_path / "new.bin"), "--version", bad, ok=False)
    assert "version" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "manifest.json").exists()
