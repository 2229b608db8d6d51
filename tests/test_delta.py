"""Delta updates: MPZ1 patches (detools sequential bsdiff in raw deflate with checkpoints) made by
`mpota manifest --from`, applied by the simulated device over HTTP under MicroPython, CPython
and the native backend; fallback to the full image; resume of patches and of compressed full
images after a drop, a reboot and power cuts; the device's applier against detools'."""

import hashlib
import io
import json
import subprocess
import sys
import zlib

import pytest
from conftest import ROOT, image, sha256
from mpota import delta, manifest, pairs

OLD = image("v1.22.0", 400_016)
# A frozen-module change, then a version bump (so that the declared version is newer).
NEW = pairs.variant(pairs.variant(OLD, "frozen"), "version")
# A release's worth of code changes: a patch of some size, for the drop and power-cut cases.
BIG = pairs.variant(pairs.variant(OLD, "code"), "version")
INTERVAL = 16384

DEVICE = """
import ota.update
try:
    ota.update.from_json({url!r}, reboot=False, backoff=0{kw})
    print("RESULT ok")
except Exception as e:
    print("RESULT", type(e).__name__, e)
"""


def site_files(
    www, new=NEW, sources=(OLD,), compression=None, key=None, interval=INTERVAL, **changes
):
    (www / "micropython.bin").write_bytes(new)
    olds = []
    for i, o in enumerate(sources):
        olds.append(www.parent / f"old{i}.bin")
        olds[-1].write_bytes(o)
    m = manifest.make(
        www / "micropython.bin", compression=compression, sources=olds, interval=interval
    )
    for k, v in changes.items():
        if k.startswith("patch_"):
            m["patches"][0][k[6:]] = v
        else:
            m[k] = v
    if key:
        m = manifest.sign(m, key)
    (www / "manifest.json").write_text(json.dumps(m))
    return m


@pytest.fixture
def old_sim(make_sim):
    return make_sim(firmware=OLD)


def device_code(sim, url, **kw):
    return DEVICE.format(url=url, kw="".join(f", {k}={v!r}" for k, v in kw.items()))


def update(sim, url, cwd, ok=True, **kw):
    r = sim.run(device_code(sim, url, **kw), cwd=cwd, ok=ok)
    results = [line for line in r.stdout.splitlines() if line.startswith("RESULT")]
    return (results[-1][len("RESULT ") :] if results else None), sim.out


def served(server, suffix):
    return sum(n for p, n in server.sent.items() if p.endswith(suffix))


def requests_for(server, suffix):
    return [rng for p, rng in server.log if p.endswith(suffix)]


def applied_by(sim, out):
    """The applier the device used, as download.py says it: the core's in C with the native
    backend (_ota.Patch), Python's otherwise; asserted, so that a silent fallback fails."""
    lang = "C" if sim.backend == "native" else "Python"
    assert f"Patch applier: {lang}." in out, out
    assert f"Patch applier: {'Python' if lang == 'C' else 'C'}." not in out, out


def check_new(sim, new=NEW):
    assert sim.boot_slot() == "ota_1"
    assert sim.region("ota_1")[: len(new)] == new
    sim.power_on()
    assert sim.running() == "ota_1"


# -- the PC side ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", pairs.KINDS)
def test_patch_round_trip_and_checkpoints(kind):
    new = pairs.variant(OLD, kind)
    assert len(new) == len(OLD) and new != OLD
    blob, patch = delta.patch_transport(OLD, new, INTERVAL)
    assert delta.apply(OLD, patch) == new  # detools' own applier
    assert patch[0] == 0x00  # sequential, compression none
    h = delta.parse_header(blob)
    assert h["kind"] == delta.KIND_PATCH and h["length"] == len(new)
    assert [c[1] for c in h["checkpoints"]] == list(range(INTERVAL, len(new), INTERVAL))
    # Every checkpoint's compressed offset inflates, alone, to the patch from its offset.
    for i, c in enumerate(h["checkpoints"]):
        assert delta.unpack(blob, i + 1) == patch[c[2] :]
    assert delta.unpack(blob) == patch


def test_pairs_are_valid_images(tmp_path):
    for kind in pairs.KINDS:
        p = tmp_path / f"{kind}.bin"
        p.write_bytes(pairs.variant(OLD, kind))
        d = manifest.describe_image(p)  # esptool: checksum and appended digest are right
        assert d["build"] != OLD[176:208].hex()


def test_cli_manifest_from(tmp_path):
    (tmp_path / "new.bin").write_bytes(NEW)
    (tmp_path / "old.bin").write_bytes(OLD)
    r = subprocess.run(
        [sys.executable, "-m", "mpota", "manifest", str(tmp_path / "new.bin"), "--from",
         str(tmp_path / "old.bin"), "--compress", "mpz"],
        capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    m = json.loads((tmp_path / "manifest.json").read_text())
    (p,) = m["patches"]
    assert "patch from build" in r.stdout and p["file"] in r.stdout
    blob = (tmp_path / p["file"]).read_bytes()
    assert p["sha"] == sha256(blob) and p["length"] == len(blob)
    assert p["from_sha"] == sha256(OLD) and p["from_length"] == len(OLD)
    assert p["build"] == OLD[176:208].hex()
    assert p["header_sha"] == sha256(blob[: p["header_length"]])
    assert len(blob) < len(NEW) // 100  # a frozen-module change: < 1 % of the image
    full = (tmp_path / m["firmware"]).read_bytes()
    assert m["compression"] == "mpz" and delta.unpack(full) == NEW


def test_signature_covers_patches(tmp_path, keys=None):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    priv = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )  # fmt: skip
    pub = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    www = tmp_path / "www"
    www.mkdir()
    m = site_files(www, key=priv)
    assert manifest.verify(m, pub)
    for field, value in (("sha", "0" * 64), ("build", "1" * 64), ("from_length", 1)):
        bad = json.loads(json.dumps(m))
        bad["patches"][0][field] = value
        assert not manifest.verify(bad, pub), field
    bad = json.loads(json.dumps(m))
    bad["patches"].append(dict(bad["patches"][0]))
    assert not manifest.verify(bad, pub)


# -- on the device ----------------------------------------------------------------------------


def test_patch_applied_over_http(old_sim, site, tmp_path):
    www, server, base = site
    m = site_files(www)
    result, out = update(old_sim, base + "/manifest.json", tmp_path)
    assert result == "ok", out
    assert "Applying the patch from build" in out
    applied_by(old_sim, out)
    p = m["patches"][0]
    assert requests_for(server, ".bin") == [] and requests_for(server, ".mpz") == [None], out
    assert served(server, ".mpz") == p["length"] < len(NEW) // 100
    assert not (tmp_path / "ota_resume.json").exists()
    check_new(old_sim)


def test_wrong_source_firmware_gets_the_full_image(make_sim, site, tmp_path):
    www, server, base = site
    site_files(www)
    sim = make_sim(firmware=image("v1.21.0", 400_016))
    result, out = update(sim, base + "/manifest.json", tmp_path)
    assert result == "ok", out
    assert "No patch applies (no patch is made from the running build" in out
    assert requests_for(server, ".mpz") == [] and requests_for(server, ".bin") == [None]
    check_new(sim)


def test_running_slot_not_the_patch_source(old_sim, site, tmp_path):
    www, server, base = site
    site_files(www, patch_from_sha="ab" * 32)
    result, out = update(old_sim, base + "/manifest.json", tmp_path)
    assert result == "ok", out
    assert "the running slot's image does not match the patch's source (from_sha)" in out
    assert requests_for(server, ".mpz") == []
    check_new(old_sim)


def test_patch_sha_mismatch(old_sim, site, tmp_path):
    www, server, base = site
    site_files(www, patch_sha="0" * 64)
    result, out = update(old_sim, base + "/manifest.json", tmp_path)
    assert result == "ok", out
    assert "The patch failed (Compressed SHA mismatch recv=" in out
    assert "going on with the full image" in out
    assert requests_for(server, ".bin") == [None]
    check_new(old_sim)


@pytest.mark.parametrize("damage", ["truncated", "corrupted", "garbage"])
def test_bad_patch_leaves_the_boot_slot_then_full_image(old_sim, site, tmp_path, damage):
    www, server, base = site
    m = site_files(www)
    p = www / m["patches"][0]["file"]
    blob = bytearray(p.read_bytes())
    hl = m["patches"][0]["header_length"]
    if damage == "truncated":
        blob = blob[: hl + (len(blob) - hl) // 2]
    elif damage == "corrupted":
        for i in range(hl + 40, len(blob), 97):
            blob[i] ^= 0x5A
    else:
        blob[hl:] = bytes(range(256)) * ((len(blob) - hl) // 256) + bytes((len(blob) - hl) % 256)
    p.write_bytes(blob)
    # Without the full image on the server: the patch's error, and the boot slot as it was.
    (www / "micropython.bin").rename(www / "gone.bin")
    result, out = update(old_sim, base + "/manifest.json", tmp_path)
    assert "The patch failed (" in out and "going on with the full image" in out, out
    applied_by(old_sim, out)
    assert result.startswith("HTTPError") and "404" in result, out
    assert old_sim.boot_slot() == "ota_0"
    old_sim.power_on()
    assert old_sim.running() == "ota_0"
    (www / "gone.bin").rename(www / "micropython.bin")
    result, out = update(old_sim, base + "/manifest.json", tmp_path)
    assert result == "ok", out
    check_new(old_sim)


def test_patch_drop_at_60_percent_resumes_from_a_checkpoint(old_sim, site, tmp_path):
    www, server, base = site
    m = site_files(www, new=BIG)
    p = m["patches"][0]
    size = p["length"]
    server.faults.update(drop_times=1, drop_after=size * 6 // 10)
    result, out = update(old_sim, base + "/manifest.json", tmp_path)
    assert result == "ok", out
    ranges = requests_for(server, ".mpz")
    assert ranges[0] is None and len(ranges) == 2 and ranges[1].startswith("bytes="), ranges
    at = int(ranges[1][6:-1])
    h = delta.parse_header((www / p["file"]).read_bytes())
    comps = [c[0] + h["header_length"] for c in h["checkpoints"]]
    assert at in comps and at > 0
    assert "Resumed at a checkpoint" in out
    applied_by(old_sim, out)
    assert out.count("Patch applier:") == 2, out  # from the start, then from the checkpoint
    assert served(server, ".mpz") <= 1.5 * size
    assert requests_for(server, ".bin") == []
    check_new(old_sim, BIG)


def _until_done(sim, url, tmp_path, new, tries=4):
    out = ""
    for _ in range(tries):
        if sim.running() == "ota_1" and sim.region("ota_1")[: len(new)] == new:
            return out
        result, out = update(sim, url, tmp_path)
        if result == "ok":
            sim.power_on()
            return out
    pytest.fail(f"no success after {tries} calls:\n{out}")


def _cut_sweep(make_sim, site, tmp_path, old, new):
    """A power cut at the 50th, 100th, ... flash operation (erase or program) of the update,
    each on a fresh device; after each, power on and call again until the update is done."""
    www, server, base = site
    site_files(www, new=new, sources=(old,))
    url = base + "/manifest.json"
    bricks = []
    resumed = 0
    n = 50
    while True:
        (tmp_path / "ota_resume.json").unlink(missing_ok=True)
        sim = make_sim(firmware=old)
        r = sim.run(device_code(sim, url, verbose=False), cwd=tmp_path, ok=False,
                    cut_after=n)  # fmt: skip
        cut = "PowerCut" in sim.out
        boot = sim.power_on()
        if sim.running() not in ("ota_0", "ota_1"):
            bricks.append((n, boot))
            break
        resumed += "Resuming after the first" in _until_done(sim, url, tmp_path, new)
        assert sim.running() == "ota_1" and sim.region("ota_1")[: len(new)] == new, n
        if not cut:
            assert "RESULT ok" in r.stdout
            break
        n += 50
    assert not bricks, bricks
    assert resumed, "no cut left a checkpoint to resume from"
    return n


SMALL = image("v1.22.0", 131_088)


def test_patch_power_cut_every_50th_flash_operation(make_sim, site, tmp_path):
    new = pairs.variant(pairs.variant(SMALL, "code"), "version")
    last = _cut_sweep(make_sim, site, tmp_path, SMALL, new)
    assert last > 400  # the sweep went through the whole update (> 512 page programs)


def test_compressed_full_image_resumes_after_a_drop(make_sim, site, tmp_path):
    www, server, base = site
    m = site_files(www, sources=(), compression="mpz")
    assert m["firmware"] == "micropython.bin.mpz"
    server.faults.update(drop_times=1, drop_after=m["compressed_length"] * 6 // 10)
    sim = make_sim(firmware=OLD)
    result, out = update(sim, base + "/manifest.json", tmp_path)
    assert result == "ok", out
    ranges = requests_for(server, ".mpz")
    assert ranges[0] is None and ranges[1] not in (None, "bytes=0-"), ranges
    assert served(server, ".mpz") <= 1.5 * m["compressed_length"]
    check_new(sim)


def test_compressed_full_image_resumes_after_a_power_cut(make_sim, site, tmp_path):
    www, server, base = site
    site_files(www, sources=(), compression="mpz")
    url = base + "/manifest.json"
    sim = make_sim(firmware=OLD)
    r = sim.run(device_code(sim, url), cwd=tmp_path, ok=False, cut_after=1200)
    assert "PowerCut" in sim.out and "RESULT" not in r.stdout
    sim.power_on()
    assert sim.running() == "ota_0"
    st = json.loads((tmp_path / "ota_resume.json").read_text())
    assert st["offset"] > 0 and st["offset"] % INTERVAL == 0, st
    result, out = update(sim, url, tmp_path)
    assert result == "ok", out
    assert f"Resuming after the first {st['offset']} bytes" in out
    assert requests_for(server, ".mpz")[-1] not in (None, "bytes=0-")
    check_new(sim)


def test_resume_state_with_a_header_over_2_kb(make_sim, site, tmp_path):
    """A checkpoint every 4 KB: the header, kept as hex in ota_resume.json, makes that file
    larger than the 2 KB other state files are held to; the resume must still find it."""
    www, server, base = site
    m = site_files(www, sources=(), compression="mpz", interval=4096)
    assert 2 * m["header_length"] > 2048
    url = base + "/manifest.json"
    sim = make_sim(firmware=OLD)
    r = sim.run(device_code(sim, url), cwd=tmp_path, ok=False, cut_after=1200)
    assert "PowerCut" in sim.out and "RESULT" not in r.stdout
    sim.power_on()
    st = (tmp_path / "ota_resume.json").read_text()
    assert len(st) > 2048 and json.loads(st)["offset"] > 0
    result, out = update(sim, url, tmp_path)
    assert result == "ok", out
    assert f"Resuming after the first {json.loads(st)['offset']} bytes" in out
    assert requests_for(server, ".mpz")[-1] not in (None, "bytes=0-")
    check_new(sim)


# -- the device's applier, in-process (CPython), against detools' -------------------------


def test_device_applier_matches_detools():
    sys.path.insert(0, str(ROOT / "python" / "ota"))
    try:
        import delta as dev  # python/ota/delta.py, without the ota package's esp32 imports
    finally:
        sys.path.pop(0)

    class Part:
        def __init__(self, b):
            self.b = b

        def readblocks(self, n, buf):
            buf[:] = self.b[n * 4096 : n * 4096 + len(buf)].ljust(len(buf), b"\xff")

    class Src(io.BytesIO):
        pass

    for kind in pairs.KINDS:
        new = pairs.variant(OLD, kind)
        blob, patch = delta.patch_transport(OLD, new, INTERVAL)
        hl = delta.parse_header(blob)["header_length"]
        h = dev.Header(blob[:hl], hashlib.sha256(blob[:hl]).hexdigest(), len(new))
        for cp in [None] + h.cps[::3]:
            off = cp[0] if cp else hl
            src = Src(zlib.decompressobj(-h.wbits).decompress(blob[off:]))
            p = dev.Patch(src, Part(OLD), len(OLD), len(new), cp)
            out = bytearray()
            buf = bytearray(3000)
            while n := p.readinto(buf):
                out += buf[:n]
            assert bytes(out) == new[cp[1] if cp else 0 :], (kind, cp)
    with pytest.raises(ValueError, match="header_sha"):
        dev.Header(blob[:hl], "0" * 64, len(new))
    with pytest.raises(ValueError, match="another length|manifest says"):
        dev.Header(blob[:hl], "", len(new) + 16)


def test_unproven_mpz_resume_state_starts_at_zero_in_the_same_call(make_sim, site, tmp_path):
    """An MPZ1 transfer's resume state with an offset that is no checkpoint of its header (or
    not an int, or past the image), a bad `erased` or a damaged header: the transfer starts
    again at byte 0 and installs in the same call. The state as saved still resumes."""
    www, server, base = site
    m = site_files(www, sources=(), compression="mpz")
    url = base + "/manifest.json"
    sim = make_sim(firmware=OLD)
    sim.run(device_code(sim, url), cwd=tmp_path, ok=False, cut_after=1200)
    assert "PowerCut" in sim.out
    sim.power_on()
    st = json.loads((tmp_path / "ota_resume.json").read_text())
    off = st["offset"]
    assert off > 0 and off % INTERVAL == 0, st
    # (Each call inflates the whole image: a few cases, the rest are test_network's.)
    cases = [
        {"offset": 10**30},
        {"offset": off + 4096},  # a 4 KB boundary, but no checkpoint
        {"offset": float(off)},
        {"offset": True},
        {"erased": 1 << 40},
        {"erased": off + 100},
        {"header": st["header"][:-1] + ("1" if st["header"][-1] == "0" else "0")},  # header_sha
    ]
    wrong = []
    for bad in [*cases, {}]:  # {}: the state as saved resumes
        (tmp_path / "ota_resume.json").write_text(json.dumps(dict(st, **bad)))
        seen, sent = len(server.log), served(server, ".mpz")
        result, out = update(sim, url, tmp_path)
        ranges = [r for p, r in server.log[seen:] if p.endswith(".mpz")]
        got = (result, ranges, served(server, ".mpz") - sent)
        if bad and got != ("ok", [None], m["compressed_length"]):
            wrong.append((bad, got, out[-300:]))
        elif bad and "Resume state ignored" not in out:
            wrong.append((bad, "no message", out[-300:]))
        elif not bad and (result != "ok" or ranges[0] in (None, "bytes=0-")):
            wrong.append((bad, got, out[-300:]))
        assert sim.boot_slot() == "ota_1" and sim.region("ota_1")[: len(NEW)] == NEW, bad
    assert not wrong, "\n".join(map(repr, wrong))
