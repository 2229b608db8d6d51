"""What ota.update refuses before anything is erased, and the device state behind it, on the
simulated ESP32 under every runtime: keys that cannot be used (fail closed), builds this device
rolled back from (no loops), expired and replayed manifests (expires, sequence), and state files
with any content or cut short by a power cut."""

import json

import pytest
from conftest import image, sha256
from espsim import otadata
from mpota import cli, manifest
from test_network import NEW, RESET_MIDWAY, firmware_requests, update

V24 = image("v1.24.0", 360_448)  # a multiple of 4 KB, another build
MANIFEST = "/manifest.json"


@pytest.fixture
def site(site):
    site[0].joinpath("micropython.bin").write_bytes(NEW)
    return site


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    manifest.keygen(d / "a.pem", d / "a.pub")
    return {"a": (d / "a.pem").read_bytes()}, {"a": (d / "a.pub").read_bytes()}


def put(www, name="manifest.json", key=None, fw="micropython.bin", **fields):
    m = manifest.make(www / fw)
    m.update(fields)
    if key:
        m = manifest.sign(m, key)
    (www / name).write_text(json.dumps(m))
    return m


def history(tmp_path):
    return json.loads((tmp_path / "ota_history.json").read_text())


def roll_back(sim):
    """Boot the new firmware, which never confirms itself, then reset: the bootloader marks it
    ABORTED and starts ota_0 again."""
    sim.power_on()
    assert sim.running() == "ota_1"
    sim.power_on()
    assert sim.running() == "ota_0" and sim.state("ota_1") == otadata.ABORTED


def test_a_build_that_rolled_back_is_refused_unless_forced(sim, site, tmp_path, keys):
    www, server, base = site
    private, public = keys
    (tmp_path / "ota_pubkey.pem").write_bytes(public["a"])
    m = put(www, key=private["a"], sequence=1)
    result, out = update(sim, base + MANIFEST, cwd=tmp_path)
    assert result == "ok", out
    roll_back(sim)
    before = sim.region("ota_1")
    n = len(firmware_requests(server))
    result, out = update(sim, base + MANIFEST, cwd=tmp_path)
    assert result == (
        f"ValueError This device rolled back from build {m['build'][:16]}... (it was installed, "
        "booted and did not confirm itself): refused, so that it does not loop (force=True "
        "installs it again)."
    ), out
    assert len(firmware_requests(server)) == n  # refused before the image was requested
    assert history(tmp_path)["rolled_back"] == [m["build"]]
    # Without a manifest, the image's own build id (its first 288 bytes) gives it away.
    result, out = update(
        sim, base + "/micropython.bin", "from_file", tmp_path, sha=m["sha"], length=m["length"]
    )
    assert result.startswith("ValueError This device rolled back from build"), out
    assert sim.region("ota_1") == before and sim.boot_slot() == "ota_0"  # nothing erased
    result, out = update(sim, base + MANIFEST, cwd=tmp_path, force=True)
    assert result == "ok", out
    assert sim.boot_slot() == "ota_1" and history(tmp_path)["rolled_back"] == []
    sim.power_on()
    sim.run("import ota\nota.stop_rollback()")
    sim.power_on()
    assert sim.running() == "ota_1" and sim.state("ota_1") == otadata.VALID


def test_an_image_written_over_a_rolled_back_slot_is_not_taken_for_it(sim, site, tmp_path):
    # After a rollback the spare slot's otadata record stays ABORTED until the next set_boot():
    # an update into it, cut short by a reset, must not count as a build that rolled back.
    www, server, base = site
    (www / "v24.bin").write_bytes(V24)
    put(www)
    result, out = update(sim, base + MANIFEST, cwd=tmp_path)
    assert result == "ok", out
    roll_back(sim)
    r = sim.run("from ota.status import status\nstatus()", cwd=tmp_path)
    assert "ABORTED" in r.stdout
    assert history(tmp_path)["rolled_back"] == [
        manifest.describe_image(www / "micropython.bin")["build"]
    ]
    m24 = put(www, "v24.json", fw="v24.bin")
    code = "import ota.update\nota.update.from_json(%r, reboot=False, backoff=0, progress=%s)" % (
        base + "/v24.json",
        RESET_MIDWAY,
    )
    r = sim.run(code, cwd=tmp_path)
    assert "espsim: hard reset" in r.stdout
    # The pure backend leaves otadata alone until set_boot(); ESP-IDF's esp_ota_begin() (the
    # native one) erases the spare slot's record.
    gone = None if sim.backend == "native" else otadata.ABORTED
    assert sim.state("ota_1") == gone and sim.region("ota_1")[:4096] == V24[:4096]
    result, out = update(sim, base + "/v24.json", cwd=tmp_path)
    assert result == "ok", out
    assert "Resuming after the first" in out
    assert sim.boot_slot() == "ota_1" and sim.region("ota_1")[: len(V24)] == V24
    assert m24["build"] not in history(tmp_path)["rolled_back"]


KEY_CASES = """
import os
import ota.update
from ota import state
key = state.path("ota_pubkey.pem")
def attempt(**kw):
    try:
        ota.update.from_json({url!r}, reboot=False, backoff=0, **kw)
        print("RESULT ok")
    except Exception as e:
        print("RESULT", type(e).__name__, e)
def put(data):
    with open(key, "wb") as f:
        f.write(data)
put(b"")
attempt()
put(b"  \\n")
attempt()
put(b"-----BEGIN PUBLIC KEY-----\\nAAAA\\n-----END PUBLIC KEY-----\\n")
attempt()
put({private!r})
attempt()
put(b"x" * 5000)
attempt()
os.remove(key)
os.mkdir(key)
attempt()
os.rmdir(key)
attempt(pubkey="")
attempt(pubkey=b"")
attempt(pubkey="0123")
attempt(pubkey=123)
"""


def test_a_configured_key_that_cannot_be_used_refuses(sim, site, tmp_path, keys):
    www, server, base = site
    private, public = keys
    put(www)  # unsigned: any of these keys installing it would be failing open
    r = sim.run(KEY_CASES.format(url=base + MANIFEST, private=private["a"]), cwd=tmp_path)
    results = [line[7:] for line in r.stdout.splitlines() if line.startswith("RESULT")]
    path = f"{tmp_path}/ota_pubkey.pem"
    empty = f"ValueError The public key in {path} is empty: refused"
    assert [x.split(" (")[0] for x in results] == [
        empty,
        empty,
        f"ValueError The public key in {path} is not usable",
        f"ValueError The public key in {path} is not usable",
        f"ValueError The public key file {path} is larger than a key: refused.",
        f"ValueError The public key file {path} cannot be read",
        "ValueError pubkey='' is not a key: pass an ECDSA P-256 public key",
        "ValueError pubkey='' is not a key: pass an ECDSA P-256 public key",
        "ValueError The public key given as pubkey= is not usable",
        "ValueError pubkey must be PEM text or DER bytes, not 123",
    ], r.stdout
    assert server.log == []  # not even the manifest was requested
    assert sim.boot_slot() == "ota_0" and sim.state("ota_1") is None


def test_no_key_installs_unsigned_and_says_so(sim, site, tmp_path):
    www, server, base = site
    put(www)
    result, out = update(sim, base + MANIFEST, cwd=tmp_path)
    assert result == "ok", out
    assert (
        f"Manifest signature: not checked: no public key (pubkey=, or {tmp_path}/ota_pubkey.pem)"
        ": this manifest is installed unsigned." in out
    )
    assert sim.boot_slot() == "ota_1"


CHDIR = """
import os
import ota.update
os.mkdir("app")
os.chdir("app")
for url in {urls!r}:
    try:
        ota.update.from_json(url, reboot=False, backoff=0)
        print("RESULT ok")
    except Exception as e:
        print("RESULT", type(e).__name__, e)
print(os.listdir("."))
"""


def test_the_key_and_state_files_do_not_depend_on_the_current_directory(sim, site, tmp_path, keys):
    www, server, base = site
    private, public = keys
    (tmp_path / "ota_pubkey.pem").write_bytes(public["a"])
    put(www, "unsigned.json")
    put(www, "signed.json", key=private["a"], sequence=2)
    r = sim.run(CHDIR.format(urls=[base + "/unsigned.json", base + "/signed.json"]), cwd=tmp_path)
    results = [line[7:] for line in r.stdout.splitlines() if line.startswith("RESULT")]
    assert results == [
        "ValueError The manifest is not signed, and a public key is configured: refused.",
        "ok",
    ], r.stdout
    assert r.stdout.splitlines()[-1] == "[]"  # nothing written in the current directory
    assert history(tmp_path)["sequence"] == 2 and sim.boot_slot() == "ota_1"


EXPIRY = """
import ota.update
from ota import trust
def attempt(url):
    try:
        ota.update.from_json(url, reboot=False, backoff=0)
        print("RESULT ok")
    except Exception as e:
        print("RESULT", type(e).__name__, e)
for name in ("expired", "bad", "garbage"):
    attempt({base!r} + "/" + name + ".json")
real = trust.clock
trust.clock = lambda: (2000, 1, 1, 0, 0, 7)  # an ESP32 after a reset, before NTP
attempt({base!r} + "/future.json")
trust.clock = real
attempt({base!r} + "/future.json")
"""


def test_expired_manifests_and_an_unset_clock_are_refused(sim, site, tmp_path, keys):
    www, server, base = site
    private, public = keys
    (tmp_path / "ota_pubkey.pem").write_bytes(public["a"])
    put(www, "expired.json", key=private["a"], expires="2024-06-30T12:00:00Z")
    put(www, "bad.json", key=private["a"], expires="2099-12-31")
    put(www, "garbage.json", key=private["a"], expires=4102444800)
    put(www, "future.json", key=private["a"], expires="2099-12-31T23:59:59Z")
    r = sim.run(EXPIRY.format(base=base), cwd=tmp_path)
    results = [line[7:] for line in r.stdout.splitlines() if line.startswith("RESULT")]
    assert len(results) == 5, r.stdout
    assert results[0].startswith(
        "ValueError The manifest expired at 2024-06-30T12:00:00Z (now 20"
    ), results
    assert results[1] == (
        'ValueError The manifest\'s "expires" must be UTC as "YYYY-MM-DDTHH:MM:SSZ", not '
        "'2099-12-31'"
    )
    assert results[2].startswith('ValueError The manifest\'s "expires" must be UTC')
    assert results[3] == (
        "ValueError The manifest expires at 2099-12-31T23:59:59Z, and this device's clock is not "
        "set (it says 2000-01-01T00:00:07Z): refused. Set the clock first (ntptime.settime())."
    )
    assert results[4] == "ok"
    assert len(firmware_requests(server)) == 1 and sim.boot_slot() == "ota_1"


SEQUENCE = """
import ota.update
def attempt(url, **kw):
    try:
        ota.update.from_json({base!r} + url, reboot=False, backoff=0, **kw)
        print("RESULT ok")
    except Exception as e:
        print("RESULT", type(e).__name__, e)
for url in ("/s5.json", "/s5.json", "/s4.json", "/none.json", "/bad-sha-9.json", "/s6.json"):
    attempt(url)
attempt("/s3.json", allow_downgrade=True)
attempt("/neg.json", force=True)
"""


def test_replayed_manifests_are_refused_by_sequence(sim, site, tmp_path, keys):
    www, server, base = site
    private, public = keys
    (tmp_path / "ota_pubkey.pem").write_bytes(public["a"])
    for n in (3, 4, 5, 6):
        put(www, f"s{n}.json", key=private["a"], sequence=n)
    put(www, "none.json", key=private["a"])
    put(www, "bad-sha-9.json", key=private["a"], sequence=9, sha="00" * 32)
    put(www, "neg.json", key=private["a"], sequence=-1)
    r = sim.run(SEQUENCE.format(base=base), cwd=tmp_path)
    results = [line[7:] for line in r.stdout.splitlines() if line.startswith("RESULT")]
    older = (
        "ValueError The manifest's sequence %d is not above 5, the highest this device "
        "installed: refused (an older manifest served again? allow_downgrade=True installs it)."
    )
    assert results == [
        "ok",
        older % 5,
        older % 4,
        "ValueError The manifest has no sequence, and this device installed sequence 5: "
        "refused (an older manifest served again? allow_downgrade=True installs it).",
        "ValueError SHA mismatch recv=%s expect=%s." % (sha256(NEW), "00" * 32),
        "ok",
        "ok",
        'ValueError The manifest\'s "sequence" must be an integer >= 0, not -1',
    ], r.stdout
    # Kept only once set_boot() succeeded (9 failed), and never lowered (3 came after 6).
    assert history(tmp_path)["sequence"] == 6


STATE = """
import json
from ota import download, history, state
for content in {contents!r}:
    for name in ("ota_resume.json", "ota_history.json"):
        with open(state.path(name), "wb") as f:
            f.write(content)
    print(repr(state.read("ota_resume.json")) + " | " + repr(history.load()))
"""

HOSTILE = [
    b"[1, 2, 3]",
    b'"a string"',
    b"42",
    b"null",
    b'{"url": 1, "sha": [], "length": "x", "slot": {}, "offset": true, "rolled_back": "ab", '
    b'"trial": [], "sequence": -3}',
    b'{"rolled_back": ["' + b"a" * 64 + b'", 7, "xyz"], "sequence": 1.5, "trial": {"slot": 1}}',
    b"{" + b" " * 5000 + b"}",
    b"\xff\xfe\x00garbage",
    b'{"url": "http://x/y", "sha": "ab", "offset": 40',
]


def test_state_files_with_any_content_are_ignored_and_replaced(sim, site, tmp_path):
    r = sim.run(STATE.format(contents=HOSTILE), cwd=tmp_path)
    empty = {"rolled_back": [], "trial": None, "sequence": None, "releases": []}
    lines = [[eval(x) for x in line.split(" | ")] for line in r.stdout.splitlines()]
    assert len(lines) == len(HOSTILE), r.stdout
    for i, (resume, hist) in enumerate(lines):
        if i == 4:  # an object, whose fields ota.download checks one by one
            assert isinstance(resume, dict) and hist == empty, r.stdout
        elif i == 5:
            assert isinstance(resume, dict), r.stdout
            assert hist == dict(empty, rolled_back=["a" * 64]), r.stdout
        else:
            assert (resume, hist) == (None, empty), r.stdout
    # The update goes on as if the files were not there, and replaces them.
    www, server, base = site
    put(www, sequence=1)
    for name, content in (("ota_resume.json", b"[1, 2]"), ("ota_history.json", b'"x"')):
        (tmp_path / name).write_bytes(content)
    result, out = update(sim, base + MANIFEST, cwd=tmp_path)
    assert result == "ok", out
    assert firmware_requests(server) == [None]
    assert not (tmp_path / "ota_resume.json").exists()
    h = history(tmp_path)
    assert h["sequence"] == 1 and h["trial"]["slot"] == "ota_1"
    assert not list(tmp_path.glob("*.tmp"))


def test_a_power_cut_while_a_state_file_is_written(sim, site, tmp_path):
    """ota.state writes <name>.tmp and renames it over <name>. A cut while the .tmp is written
    leaves a half-written .tmp; on FAT a cut between the removal of the old file and the rename
    leaves only the .tmp. Either way the next call goes on without a manual step."""
    www, server, base = site
    put(www)
    code = "import ota.update\nota.update.from_json(%r, reboot=False, progress=%s)" % (
        base + MANIFEST,
        RESET_MIDWAY,
    )
    r = sim.run(code, cwd=tmp_path)
    assert "espsim: hard reset" in r.stdout
    resume = tmp_path / "ota_resume.json"
    saved = json.loads(resume.read_text())
    assert saved["offset"] >= 65536
    # FAT: the old file removed, the new one complete in .tmp, not yet renamed.
    resume.rename(tmp_path / "ota_resume.json.tmp")
    r = sim.run(
        "from ota import download, state\nprint(state.read('ota_resume.json'))", cwd=tmp_path
    )
    assert eval(r.stdout) == saved
    # A cut while the .tmp was written: the file cut short, and the .tmp half-written too.
    text = json.dumps(saved)
    resume.write_text(text[: len(text) // 2])
    (tmp_path / "ota_resume.json.tmp").write_text(text[:10])
    (tmp_path / "ota_history.json").write_text('{"sequence": 4, "rolled_')
    (tmp_path / "ota_history.json.tmp").write_text("")
    result, out = update(sim, base + MANIFEST, cwd=tmp_path)
    assert result == "ok", out
    assert "Resuming" not in out and firmware_requests(server)[-1] is None  # from byte 0
    assert sim.region("ota_1")[: len(NEW)] == NEW and sim.boot_slot() == "ota_1"
    assert sorted(p.name for p in tmp_path.glob("ota_*")) == ["ota_history.json"]
    assert history(tmp_path)["trial"]["slot"] == "ota_1"


def test_resume_from_the_tmp_file_a_cut_left(sim, site, tmp_path):
    www, server, base = site
    put(www)
    code = "import ota.update\nota.update.from_json(%r, reboot=False, progress=%s)" % (
        base + MANIFEST,
        RESET_MIDWAY,
    )
    sim.run(code, cwd=tmp_path)
    resume = tmp_path / "ota_resume.json"
    off = json.loads(resume.read_text())["offset"]
    resume.rename(tmp_path / "ota_resume.json.tmp")
    result, out = update(sim, base + MANIFEST, cwd=tmp_path)
    assert result == "ok", out
    assert f"Resuming after the first {off} bytes" in out
    assert firmware_requests(server)[-1] == f"bytes={off}-"
    assert not list(tmp_path.glob("ota_resume*"))


def test_mpota_manifest_expires_and_sequence_are_signed(tmp_path, keys):
    private, public = keys
    (tmp_path / "fw.bin").write_bytes(NEW)
    (tmp_path / "k.pem").write_bytes(private["a"])
    args = ["manifest", str(tmp_path / "fw.bin"), "--expires", "2030-01-02T03:04:05Z"]
    assert cli.main(args + ["--sequence", "7", "--key", str(tmp_path / "k.pem")]) == 0
    m = json.loads((tmp_path / "manifest.json").read_text())
    assert m["expires"] == "2030-01-02T03:04:05Z" and m["sequence"] == 7
    assert manifest.verify(m, public["a"])
    assert not manifest.verify(dict(m, sequence=8), public["a"])
    assert not manifest.verify(dict(m, expires="2031-01-02T03:04:05Z"), public["a"])
    # mpota sign keeps them
    del m["signature"]
    (tmp_path / "manifest.json").write_text(json.dumps(m))
    assert (
        cli.main(["sign", str(tmp_path / "manifest.json"), "--key", str(tmp_path / "k.pem")]) == 0
    )
    s = json.loads((tmp_path / "manifest.json").read_text())
    assert s["sequence"] == 7 and s["expires"] == m["expires"] and manifest.verify(s, public["a"])
    for bad in ("2030-01-02", "2030-13-02T03:04:05Z", "tomorrow"):
        with pytest.raises(SystemExit):
            cli.main(["manifest", str(tmp_path / "fw.bin"), "--expires", bad])
    with pytest.raises(ValueError, match="sequence must be an integer >= 0"):
        manifest.make(tmp_path / "fw.bin", sequence=-1)
