"""Updates over the network: a real HTTP server on 127.0.0.1 (mpota's, with faults injected),
the simulated device downloading under MicroPython, CPython and the native backend. Each case
ends with the expected boot slot and a clear message."""

import base64
import datetime
import json

import netserver
import nginxserver
import pytest
from conftest import image, sha256
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from mpota import manifest

NEW = image("v1.23.0", 400_016)
OLD = image("v1.21.0", 300_032)

DEVICE = """
import ota.update
try:
    ota.update.{fn}({url!r}, reboot=False, backoff=0{kw})
    print("RESULT ok")
except Exception as e:
    print("RESULT", type(e).__name__, e)
"""


def start_site(tmp_path, kind):
    www = tmp_path / "www"
    www.mkdir()
    (www / "micropython.bin").write_bytes(NEW)
    if kind == "nginx":
        server = nginxserver.Nginx(www, tmp_path / "nginx")
    else:
        server = netserver.start(www)
    return www, server, f"http://127.0.0.1:{server.server_address[1]}"


# The cases that need no fault injection run against mpota's server and against nginx (Debian's,
# as a static host or CDN would serve the files); cpython-native's HTTP client is cpython's.
@pytest.fixture(params=["mpota", "nginx"])
def site(request, tmp_path):
    if request.param == "nginx" and request.getfixturevalue("runtime") == "cpython-native":
        pytest.skip("the HTTP client of cpython-native is cpython's, run against nginx there")
    www, server, base = start_site(tmp_path, request.param)
    yield www, server, base
    server.shutdown()
    server.server_close()


@pytest.fixture
def faulty_site(tmp_path):
    """mpota's server with its faults to inject (netserver.py)."""
    www, server, base = start_site(tmp_path, "mpota")
    yield www, server, base
    server.shutdown()
    server.server_close()


def write_manifest(www, name="manifest.json", key=None, **changes):
    m = manifest.make(www / "micropython.bin", compression=changes.pop("compression", None))
    m.update(changes)
    if key:
        m = manifest.sign(m, key)
    (www / name).write_text(json.dumps(m))
    return m


def update(sim, url, fn="from_json", cwd=None, **kw):
    extra = "".join(f", {k}={v!r}" for k, v in kw.items())
    r = sim.run(DEVICE.format(fn=fn, url=url, kw=extra), cwd=cwd)
    results = [line for line in r.stdout.splitlines() if line.startswith("RESULT")]
    assert results, sim.out
    return results[-1][len("RESULT ") :], r.stdout


def saved_offset(tmp_path, low, high):
    """The resume offset in the device's state file: a 4 KB boundary in [low, high) (where
    exactly depends on how the bytes came off the socket and on the backend's chunks)."""
    off = json.loads((tmp_path / "ota_resume.json").read_text())["offset"]
    assert low <= off < high and off % 4096 == 0, off
    return off


def firmware_requests(server):
    return [rng for path, rng in server.log if path.endswith(".bin") or ".bin." in path]


def test_plain_update(sim, site, tmp_path):
    www, server, base = site
    write_manifest(www)
    result, out = update(sim, base + "/manifest.json", cwd=tmp_path)
    assert result == "ok", out
    assert "Opening json file" in out and "KB/s" in out and "100%" in out
    assert "OTA Partition 'ota_1' updated successfully." in out
    assert firmware_requests(server) == [None]
    assert sim.boot_slot() == "ota_1"
    assert sim.region("ota_1")[: len(NEW)] == NEW
    assert not (tmp_path / "ota_resume.json").exists()
    sim.power_on()
    assert sim.running() == "ota_1"


@pytest.mark.parametrize("compression", ["zlib", "gzip"])
def test_compressed_image(sim, site, tmp_path, compression):
    www, server, base = site
    m = write_manifest(www, compression=compression)
    assert m["compressed_length"] < len(NEW)
    result, out = update(sim, base + "/manifest.json", cwd=tmp_path)
    assert result == "ok", out
    assert firmware_requests(server) == [None]
    assert sim.region("ota_1")[: len(NEW)] == NEW and sim.boot_slot() == "ota_1"


def test_compressed_transfer_is_checked(sim, site, tmp_path):
    www, server, base = site
    write_manifest(www, compression="zlib", compressed_sha="0" * 64)
    result, out = update(sim, base + "/manifest.json", cwd=tmp_path)
    assert result.startswith("ValueError Compressed SHA mismatch recv="), out
    assert sim.boot_slot() == "ota_0"


def test_dropped_connection_resumes_with_range(sim, faulty_site, tmp_path):
    www, server, base = faulty_site
    write_manifest(www)
    server.faults.update(drop_times=1, drop_after=200_000)
    result, out = update(sim, base + "/manifest.json", cwd=tmp_path)
    assert result == "ok", out
    ranges = firmware_requests(server)
    assert ranges[0] is None and ranges[1] == "bytes=196608-", ranges
    assert "retrying from byte 196608 (1 of 3)" in out
    assert sim.region("ota_1")[: len(NEW)] == NEW and sim.boot_slot() == "ota_1"


ERASED = """
import espsim.device
dev = espsim.device.current()
def erased():
    c = dict(dev.flash.counts)
    try:
        import _ota
        k = _ota.flash_counts()
        c["erase_4k"] += k[0]
        c["erase_64k"] += k[1]
    except ImportError:
        pass
    return c["erase_4k"] * 4096 + c["erase_64k"] * 65536
e0 = erased()
"""
ERASED_REPORT = """
print("ERASED", erased() - e0)
"""


def erased_bytes(out):
    return sum(int(line.split()[1]) for line in out.splitlines() if line.startswith("ERASED"))


# A dropped connection, resumed in the same call or by the next one after it gave up: no sector
# is erased twice. The native core erases 64 KB blocks ahead of its data; the writer that
# stopped cleanly hands on how far (writer.OTA.erased), in memory or in the state file. All the
# update erases is the image's 64 KB blocks (at most) and the otadata sector of set_boot().
@pytest.mark.parametrize("gives_up", [False, True])
def test_dropped_connection_erases_nothing_twice(sim, faulty_site, tmp_path, gives_up):
    www, server, base = faulty_site
    write_manifest(www)
    server.faults.update(drop_times=1, drop_after=230_000)
    kw = ", retries=0" if gives_up else ""
    code = ERASED + DEVICE.format(fn="from_json", url=base + "/manifest.json", kw=kw)
    r = sim.run(code + ERASED_REPORT, cwd=tmp_path)
    out = r.stdout
    if gives_up:
        assert "RESULT NetError" in out, out
        state = json.loads((tmp_path / "ota_resume.json").read_text())
        if sim.backend == "native":
            assert state["erased"] == 262144 > state["offset"], state
        else:
            assert "erased" not in state, state  # the pure backend erases nothing ahead
        r = sim.run(code + ERASED_REPORT, cwd=tmp_path)
        out += r.stdout
    assert "RESULT ok" in r.stdout, out
    assert sim.region("ota_1")[: len(NEW)] == NEW and sim.boot_slot() == "ota_1"
    assert erased_bytes(out) <= -(-len(NEW) // 65536) * 65536 + 4096, out


def test_writer_erased_argument_is_checked(sim):
    r = sim.run(
        """
from ota.writer import OTA
for kw in ({"erased": 8192}, {"start": 8192, "erased": 4096}, {"start": 8192, "erased": 9000},
           {"start": 8192, "erased": 1 << 30}, {"start": 8192, "erased": "x"}):
    try:
        OTA(verbose=False, **kw)
        print("accepted", kw)
    except ValueError as e:
        print("ValueError", e)
"""
    )
    lines = [x for x in r.stdout.splitlines() if x]
    assert len(lines) == 5 and all(x.startswith("ValueError erased must be") for x in lines), (
        sim.out
    )
    assert sim.boot_slot() == "ota_0"


RESET_MIDWAY = "lambda n, total: n >= 250000 and __import__('machine').reset()"


def test_resume_after_a_reboot(sim, site, tmp_path):
    www, server, base = site
    write_manifest(www)
    code = DEVICE.format(
        fn="from_json", url=base + "/manifest.json", kw=f", progress={RESET_MIDWAY}"
    )
    r = sim.run(code, cwd=tmp_path)
    assert "espsim: hard reset" in r.stdout and "RESULT" not in r.stdout
    assert sim.running() == "ota_0"  # the reboot came before the update completed
    state = json.loads((tmp_path / "ota_resume.json").read_text())
    # The last 64 KB step saved before the reset at 250,000 bytes, on a 4 KB boundary.
    off = state["offset"]
    assert 196608 <= off < 250000 and off % 4096 == 0 and state["slot"] == "ota_1", state
    result, out = update(sim, base + "/manifest.json", cwd=tmp_path)
    assert result == "ok", out
    assert f"Resuming after the first {off} bytes" in out
    assert firmware_requests(server)[-1] == f"bytes={off}-"
    assert sim.region("ota_1")[: len(NEW)] == NEW and sim.boot_slot() == "ota_1"
    assert not (tmp_path / "ota_resume.json").exists()


def test_resume_after_a_power_cut(sim, site, tmp_path):
    www, server, base = site
    write_manifest(www)
    code = DEVICE.format(fn="from_json", url=base + "/manifest.json", kw="")
    r = sim.run(code, cwd=tmp_path, cut_after=1000, ok=False)
    assert "PowerCut" in sim.out and "RESULT" not in r.stdout
    sim.power_on()
    assert sim.running() == "ota_0"
    offset = saved_offset(tmp_path, 131072, 250000)
    # Saved while writing went on: nothing past the offset is known erased after the cut.
    assert "erased" not in json.loads((tmp_path / "ota_resume.json").read_text())
    result, out = update(sim, base + "/manifest.json", cwd=tmp_path)
    assert result == "ok", out
    assert firmware_requests(server)[-1] == f"bytes={offset}-"
    assert sim.region("ota_1")[: len(NEW)] == NEW and sim.boot_slot() == "ota_1"


def test_server_without_range_restarts_from_zero(sim, faulty_site, tmp_path):
    www, server, base = faulty_site
    write_manifest(www)
    server.faults.update(drop_times=1, drop_after=200_000, ignore_range=True)
    result, out = update(sim, base + "/manifest.json", cwd=tmp_path)
    assert result == "ok", out
    assert "The server ignored the Range request: restarting from byte 0." in out
    assert sim.region("ota_1")[: len(NEW)] == NEW and sim.boot_slot() == "ota_1"


def test_404(sim, site, tmp_path):
    www, server, base = site
    result, out = update(sim, base + "/nothing.json", cwd=tmp_path)
    # str() of an OSError: "[Errno 5] EIO: ..." in MicroPython, "[Errno 5] ..." in CPython
    assert result.startswith("HTTPError [Errno 5]"), out
    reason = "Not Found" if isinstance(server, nginxserver.Nginx) else "File not found"
    assert result.endswith(f"HTTP 404 {reason} for {base}/nothing.json")
    write_manifest(www, firmware="missing.bin")
    result, out = update(sim, base + "/manifest.json", cwd=tmp_path)
    assert "HTTP 404" in result and "missing.bin" in result, out
    assert len([p for p, _ in server.log if p.endswith("missing.bin")]) == 1  # not retried
    assert sim.boot_slot() == "ota_0"


def test_500_is_retried(sim, faulty_site, tmp_path):
    www, server, base = faulty_site
    write_manifest(www)
    server.faults.update(status=500, status_times=2)
    result, out = update(sim, base + "/manifest.json", cwd=tmp_path)
    assert result == "ok", out
    assert out.count("HTTP 500") == 2 and sim.boot_slot() == "ota_1"
    server.faults.update(status=500, status_times=10)
    result, out = update(sim, base + "/manifest.json", cwd=tmp_path, allow_downgrade=True)
    assert "HTTP 500" in result and "retrying" in out
    assert len(firmware_requests(server)) == 1 + 2 + 4  # 1 + retries each time


def test_every_response_cut_short_still_completes(sim, faulty_site, tmp_path):
    # Each attempt resumes where the last one stopped, so nothing is downloaded twice.
    www, server, base = faulty_site
    write_manifest(www)
    server.faults.update(drop_times=100, drop_after=150_000)
    result, out = update(sim, base + "/manifest.json", cwd=tmp_path)
    assert result == "ok", out
    ranges = firmware_requests(server)
    offsets = [int(r[6:-1]) for r in ranges[1:]]
    assert ranges[0] is None and len(offsets) >= 2
    assert offsets == sorted(offsets) and all(o % 4096 == 0 for o in offsets)
    assert offsets[0] in (131072, 147456)  # 4 KB boundary below 150,000 (pure: 64 KB chunks)
    assert sim.region("ota_1")[: len(NEW)] == NEW and sim.boot_slot() == "ota_1"


def test_no_progress_fails_after_the_retries(sim, faulty_site, tmp_path):
    www, server, base = faulty_site
    write_manifest(www)
    server.faults.update(drop_times=100, drop_after=1000)
    result, out = update(sim, base + "/manifest.json", cwd=tmp_path, retries=2)
    assert result.startswith("NetError [Errno 5]"), out
    assert result.endswith("connection closed 399016 bytes before the end")
    assert firmware_requests(server) == [None, None, None]
    assert sim.boot_slot() == "ota_0"


def test_truncated_file(sim, site, tmp_path):
    www, server, base = site
    write_manifest(www)
    (www / "micropython.bin").write_bytes(NEW[:300_000])  # cut short on the server
    result, out = update(sim, base + "/manifest.json", cwd=tmp_path)
    assert result == f"ValueError Receive 300000 bytes (expect {len(NEW)}).", out
    assert sim.boot_slot() == "ota_0"


def test_wrong_sha(sim, site, tmp_path):
    www, server, base = site
    write_manifest(www, sha="ab" * 32)
    result, out = update(sim, base + "/manifest.json", cwd=tmp_path)
    assert result == f"ValueError SHA mismatch recv={sha256(NEW)} expect={'ab' * 32}.", out
    assert sim.boot_slot() == "ota_0"
    assert not (tmp_path / "ota_resume.json").exists()


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    manifest.keygen(d / "a.pem", d / "a.pub")
    manifest.keygen(d / "b.pem", d / "b.pub")
    return {k: (d / f"{k}.pem").read_bytes() for k in "ab"}, {
        k: (d / f"{k}.pub").read_bytes() for k in "ab"
    }


def test_signed_manifest(sim, site, tmp_path, keys):
    www, server, base = site
    private, public = keys
    (tmp_path / "ota_pubkey.pem").write_bytes(public["a"])
    write_manifest(www, key=private["a"])
    result, out = update(sim, base + "/manifest.json", cwd=tmp_path)
    assert result == "ok" and "Manifest signature: valid." in out, out
    assert sim.boot_slot() == "ota_1"


@pytest.mark.parametrize("case", ["tampered", "other-key", "unsigned", "garbage"])
def test_bad_signatures_are_refused(sim, site, tmp_path, keys, case):
    www, server, base = site
    private, public = keys
    (tmp_path / "ota_pubkey.pem").write_bytes(public["a"])
    if case == "tampered":
        m = write_manifest(www, key=private["a"])
        m["length"] += 1
        (www / "manifest.json").write_text(json.dumps(m))
    elif case == "other-key":
        write_manifest(www, key=private["b"])
    elif case == "unsigned":
        write_manifest(www)
    else:
        write_manifest(www, signature="bm90IGEgc2lnbmF0dXJl")
    result, out = update(sim, base + "/manifest.json", cwd=tmp_path)
    expect = (
        "The manifest is not signed"
        if case == "unsigned"
        else "The manifest's signature does not match the public key: refused."
    )
    assert result.startswith("ValueError " + expect), out
    assert firmware_requests(server) == []  # refused before the image was even requested
    assert sim.boot_slot() == "ota_0"


def _sign_form1(m, private_pem):
    """A manifest signed as earlier versions of `mpota sign` did (canonical form 1)."""
    key = serialization.load_pem_private_key(private_pem, password=None)
    sig = key.sign(manifest.canonical(m), ec.ECDSA(hashes.SHA256()))
    return dict(m, signature=base64.b64encode(sig).decode())


@pytest.mark.parametrize("case", ["merged-keys", "form2-to-form1", "retyped", "list-to-text"])
def test_signed_form_cannot_be_reinterpreted(sim, site, tmp_path, keys, case):
    # Tampered manifests whose signature would still hold if the signed text were ambiguous.
    www, server, base = site
    private, public = keys
    (tmp_path / "ota_pubkey.pem").write_bytes(public["a"])
    m = manifest.make(www / "micropython.bin", compression="zlib")
    if case == "merged-keys":
        # Form 1 signs "key=value" lines: one key holding "=" and a newline gives the same
        # lines as two fields, and the device would then check neither.
        signed = _sign_form1(m, private["a"])
        forged = {k: v for k, v in signed.items() if not k.startswith("compressed_")}
        merged = "compressed_length=%d\ncompressed_sha" % m["compressed_length"]
        forged[merged] = m["compressed_sha"]
        lines = sorted(f"{k}={v}" for k, v in forged.items() if k != "signature")
        assert "\n".join(lines) == "\n".join(
            sorted(f"{k}={v}" for k, v in signed.items() if k != "signature")
        )
        expect = "manifest field name 'compressed_length="
    else:
        signed = manifest.sign(m, private["a"])
        assert signed["manifest"] == 2
        if case == "form2-to-form1":
            forged = {k: v for k, v in signed.items() if k != "manifest"}
        elif case == "retyped":
            forged = dict(signed, length=str(signed["length"]))
        else:
            forged = dict(signed, chip=[signed["chip"]])
        expect = "The manifest's signature does not match the public key: refused."
    (www / "manifest.json").write_text(json.dumps(forged))
    result, out = update(sim, base + "/manifest.json", cwd=tmp_path)
    assert result.startswith("ValueError " + expect), out
    assert firmware_requests(server) == []  # refused before the image was requested
    assert sim.boot_slot() == "ota_0"
    # The genuine manifest still installs, form 1 included.
    (www / "manifest.json").write_text(json.dumps(signed))
    result, out = update(sim, base + "/manifest.json", cwd=tmp_path)
    assert result == "ok", out
    assert sim.boot_slot() == "ota_1"


def test_key_given_as_argument(sim, site, tmp_path, keys):
    www, server, base = site
    private, public = keys
    write_manifest(www, key=private["b"])
    result, out = update(sim, base + "/manifest.json", cwd=tmp_path, pubkey=public["a"].decode())
    assert "does not match" in result
    result, out = update(sim, base + "/manifest.json", cwd=tmp_path, pubkey=public["b"].decode())
    assert result == "ok", out


# The same version in another build is a rebuild, and installs; the same build is "nothing to
# do" (tests/test_rebuild.py).
def test_an_older_version_is_refused(sim, site, tmp_path):
    www, server, base = site
    write_manifest(www, version="v1.21.0")
    result, out = update(sim, base + "/manifest.json", cwd=tmp_path)
    message = "The manifest version v1.21.0 is older than the running firmware's v1.22.0"
    assert result.startswith("ValueError " + message), out
    assert firmware_requests(server) == []
    assert sim.boot_slot() == "ota_0"


def test_image_version_must_match_and_be_newer(sim, site, tmp_path):
    www, server, base = site
    (www / "micropython.bin").write_bytes(OLD)  # an older image behind a newer manifest
    write_manifest(www, version="v1.23.0")
    result, out = update(sim, base + "/manifest.json", cwd=tmp_path)
    # MicroPython's image has no app version: its banner, found as it streams in, names it
    assert result == (
        "ValueError The image is version v1.21.0 (its MicroPython banner), but the manifest "
        "says v1.23.0: refused."
    ), out
    assert sim.boot_slot() == "ota_0"  # aborted: the boot partition is as it was
    write_manifest(www)  # the manifest now says v1.21.0, as the image does
    result, out = update(sim, base + "/manifest.json", cwd=tmp_path)
    assert "older than the running firmware's v1.22.0" in result
    result, out = update(sim, base + "/manifest.json", cwd=tmp_path, allow_downgrade=True)
    assert result == "ok", out
    assert sim.boot_slot() == "ota_1"


def test_manifest_for_another_chip(sim, site, tmp_path):
    www, server, base = site
    write_manifest(www, chip="esp32s3")
    result, out = update(sim, base + "/manifest.json", cwd=tmp_path)
    assert result == "ValueError The manifest is for esp32s3, but this device is esp32.", out
    assert sim.boot_slot() == "ota_0"


def test_from_file_with_sha_and_length(sim, site, tmp_path):
    www, server, base = site
    result, out = update(
        sim,
        base + "/micropython.bin",
        fn="from_file",
        cwd=tmp_path,
        sha=sha256(NEW),
        length=len(NEW),
    )
    assert result == "ok" and "Opening firmware file" in out, out
    assert sim.boot_slot() == "ota_1"


def _tls_files(tmp_path):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ota.test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("ota.test")]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert.public_bytes(serialization.Encoding.DER)


def test_https_with_certificate_check(sim, tmp_path):
    www = tmp_path / "www"
    www.mkdir()
    (www / "micropython.bin").write_bytes(NEW)
    write_manifest(www)
    (tmp_path / "other").mkdir()
    other = _tls_files(tmp_path / "other")
    ca = _tls_files(tmp_path)
    server = netserver.start(www, tls=(tmp_path / "cert.pem", tmp_path / "key.pem"))
    try:
        url = "https://ota.test/manifest.json"
        hosts = f"ota.test=127.0.0.1:{server.server_address[1]}"
        code = DEVICE.format(fn="from_json", url=url, kw=", retries=0, ca=CA")
        bad = sim.run("CA = " + repr(other) + code, cwd=tmp_path, hosts=hosts)
        assert "RESULT NetError" in bad.stdout, sim.out
        assert sim.boot_slot() == "ota_0"
        good = sim.run("CA = " + repr(ca) + code, cwd=tmp_path, hosts=hosts)
        assert "RESULT ok" in good.stdout, sim.out
        assert sim.boot_slot() == "ota_1"
        # A redirect to plain http is refused (it would drop the authentication); without a CA
        # too: test_https_never_redirects_to_plain_http.
        server.faults["redirect"] = {"/moved.json": "http://ota.test/manifest.json"}
        moved = code.replace("/manifest.json", "/moved.json")
        r = sim.run("CA = " + repr(ca) + moved, cwd=tmp_path, hosts=hosts)
        assert (
            "RESULT ValueError refused: https://ota.test/moved.json redirects to plain http"
            in (r.stdout)
        ), sim.out
    finally:
        server.shutdown()
        server.server_close()


def test_firmware_without_esp_ota_resume_starts_again(sim, site, tmp_path):
    # ESP-IDF v5.3.0-v5.3.2 have no esp_ota_resume(): the native module says so and the update
    # starts again from byte 0 (the pure backend does not need it).
    if sim.backend != "native":
        pytest.skip("only the native backend uses esp_ota_resume()")
    www, server, base = site
    write_manifest(www)
    code = DEVICE.format(
        fn="from_json", url=base + "/manifest.json", kw=f", progress={RESET_MIDWAY}"
    )
    sim.run(code, cwd=tmp_path)
    saved_offset(tmp_path, 196608, 250000)
    r = sim.run(
        DEVICE.format(fn="from_json", url=base + "/manifest.json", kw=""),
        cwd=tmp_path,
        environ={"OTA_HOST_IDF": "5.3"},
    )
    assert "RESULT ok" in r.stdout, sim.out
    assert "This firmware cannot resume an update" in r.stdout
    assert firmware_requests(server)[-1] is None
    assert sim.region("ota_1")[: len(NEW)] == NEW and sim.boot_slot() == "ota_1"


def test_redirects_are_followed(sim, faulty_site, tmp_path):
    www, server, base = faulty_site
    write_manifest(www, firmware="old/micropython.bin")
    server.faults["redirect"] = {
        "/moved.json": base + "/manifest.json",
        "/old/micropython.bin": "/micropython.bin",
    }
    result, out = update(sim, base + "/moved.json", cwd=tmp_path)
    assert result == "ok", out
    assert [p for p, _ in server.log] == [
        "/moved.json",
        "/manifest.json",
        "/old/micropython.bin",
        "/micropython.bin",
    ]
    assert sim.boot_slot() == "ota_1"


def test_relative_redirects_and_absolute_firmware_paths(sim, faulty_site, tmp_path):
    # "firmware": "/fw/..." is a path on the manifest's server, never a file on the device;
    # relative Locations resolve against the URL that answered.
    www, server, base = faulty_site
    (www / "fw").mkdir()
    (www / "fw" / "micropython.bin").write_bytes(NEW)
    (tmp_path / "fw").mkdir()
    (tmp_path / "fw" / "micropython.bin").write_bytes(b"a local file, not the image")
    (www / "sub").mkdir()
    m = manifest.make(www / "micropython.bin")
    m["firmware"] = "/fw/old.bin"
    (www / "sub" / "manifest.json").write_text(json.dumps(m))
    server.faults["redirect"] = {
        "/moved.json": "sub/manifest.json",  # relative to /moved.json: /sub/manifest.json
        "/fw/old.bin": "micropython.bin",  # relative to /fw/old.bin: /fw/micropython.bin
    }
    result, out = update(sim, base + "/moved.json", cwd=tmp_path)
    assert result == "ok", out
    assert [p for p, _ in server.log] == [
        "/moved.json",
        "/sub/manifest.json",
        "/fw/old.bin",
        "/fw/micropython.bin",
    ]
    assert sim.region("ota_1")[: len(NEW)] == NEW and sim.boot_slot() == "ota_1"


def test_resumed_download_still_checks_the_image_version(sim, site, tmp_path):
    # After a reboot the image's first bytes are on flash, not in the stream: its app
    # description is read from the slot and checked as a fresh download's would be.
    www, server, base = site
    write_manifest(www)
    code = DEVICE.format(
        fn="from_json", url=base + "/manifest.json", kw=f", progress={RESET_MIDWAY}"
    )
    sim.run(code, cwd=tmp_path)
    off = saved_offset(tmp_path, 196608, 250000)
    result, out = update(
        sim,
        base + "/micropython.bin",
        fn="from_file",
        cwd=tmp_path,
        sha=sha256(NEW),
        length=len(NEW),
        version="v1.23.5",
    )
    assert f"Resumed at byte {off}." in out, out
    assert result == (
        "ValueError The image is version v1.23.0 (its MicroPython banner), but the manifest "
        "says v1.23.5: refused."
    )
    assert not (tmp_path / "ota_resume.json").exists()  # that partial image is of no use
    assert sim.boot_slot() == "ota_0"


# A resume state that the device cannot prove (damaged or hostile: an offset past the image or
# the slot, off a 4 KB boundary, not an int, a bad `erased`, a slot that does not hold the
# image's start) is ignored: the update starts at byte 0 and installs in the same call. The first
# case runs on the fresh device, whose ota_1 is erased; each install leaves NEW in ota_1 for the
# next. Two good states (the last cases) show that the same calls do resume.
UNPROVEN = [
    {"offset": 196608},  # ota_1 is still erased: nothing to resume
    {"offset": 10**30},
    {"offset": len(NEW) + 4096},
    {"offset": -(-len(NEW) // 4096) * 4096},  # the first 4 KB boundary past the end
    {"offset": 4097},
    {"offset": -4096},
    {"offset": True},
    {"offset": 8192.0},
    {"offset": "8192"},
    {"offset": [8192]},
    {"offset": 196608, "erased": 1 << 40},
    {"offset": 196608, "erased": 266000},
    {"offset": 196608, "erased": 4096},
    {"offset": 196608, "erased": True},
    {"offset": 196608, "erased": "262144"},
    {"offset": 196608, "sha": "0" * 64},  # another image's state
    {"offset": 196608, "length": len(NEW) + 4096},
    {"offset": 196608, "slot": "ota_0"},
]
PROVEN = [({"offset": 196608}, 196608), ({"offset": 196608, "erased": 262144}, 196608)]


def test_unproven_resume_state_starts_at_zero_in_the_same_call(sim, faulty_site, tmp_path):
    www, server, base = faulty_site
    wrong = []
    for i, (bad, start) in enumerate([(b, 0) for b in UNPROVEN] + PROVEN):
        url = f"{base}/micropython.bin?{i}"  # one path per case in the server's log
        st = {"url": url, "sha": sha256(NEW), "length": len(NEW), "slot": "ota_1"}
        (tmp_path / "ota_resume.json").write_text(json.dumps(dict(st, **bad)))
        result, out = update(
            sim, url, fn="from_file", cwd=tmp_path, sha=sha256(NEW), length=len(NEW)
        )
        ranges = [r for p, r in server.log if p == f"/micropython.bin?{i}"]
        got = (result, ranges, server.sent.get(f"/micropython.bin?{i}"))
        if got != ("ok", [f"bytes={start}-" if start else None], len(NEW) - start):
            wrong.append((bad, got, out[-300:]))
        elif not start and set(bad) <= {"offset", "erased"} and "state ignored" not in out:
            wrong.append((bad, "no message", out[-300:]))  # only for this image's state
        if result == "ok":
            assert sim.region("ota_1")[: len(NEW)] == NEW and sim.boot_slot() == "ota_1"
            assert not (tmp_path / "ota_resume.json").exists()
        else:  # put the image in ota_1 for the next case
            (tmp_path / "ota_resume.json").unlink(missing_ok=True)
            assert update(sim, url, fn="from_file", cwd=tmp_path, sha=sha256(NEW))[0] == "ok"
    assert not wrong, "\n".join(map(repr, wrong))


@pytest.fixture
def two_schemes(faulty_site, tmp_path):
    """The site over http and over https (no CA needed: the device does not check the
    certificate without one), both as ota.test; other.test and ota.test:8080 reach the http
    server too (other origins)."""
    www, http_server, base = faulty_site
    _tls_files(tmp_path)
    tls = netserver.start(www, tls=(tmp_path / "cert.pem", tmp_path / "key.pem"))
    h, s = http_server.server_address[1], tls.server_address[1]
    hosts = (
        f"ota.test:443=127.0.0.1:{s},ota.test:80=127.0.0.1:{h},"
        f"ota.test:8080=127.0.0.1:{h},other.test=127.0.0.1:{h}"
    )
    yield www, http_server, tls, hosts
    tls.shutdown()
    tls.server_close()


def test_https_never_redirects_to_plain_http(sim, two_schemes, tmp_path):
    www, plain, tls, hosts = two_schemes
    write_manifest(www)
    tls.faults["redirect"] = {
        "/moved.json": "http://ota.test/manifest.json",
        "/away.json": "http://other.test:8080/manifest.json",
    }
    for path, to in tls.faults["redirect"].items():
        code = DEVICE.format(fn="from_json", url="https://ota.test" + path, kw=", retries=0")
        r = sim.run(code, cwd=tmp_path, hosts=hosts)
        assert (
            f"RESULT ValueError refused: https://ota.test{path} redirects to plain http ({to})"
            in r.stdout
        ), sim.out
        assert sim.boot_slot() == "ota_0"
    assert [p for p, _ in tls.log] == ["/moved.json", "/away.json"]
    assert plain.log == []  # nothing went out over plain http
    # The same site over https alone installs: the refusal is the redirect's.
    r = sim.run(
        DEVICE.format(fn="from_json", url="https://ota.test/manifest.json", kw=""),
        cwd=tmp_path,
        hosts=hosts,
    )
    assert "RESULT ok" in r.stdout, sim.out
    assert sim.boot_slot() == "ota_1"


GET_WITH_SECRETS = """
from ota import http
for url in {urls!r}:
    try:
        r = http.get(url, headers={{"X-Api-Token": "s3cret"}}, auth=("user", "pw"), timeout=10)
        r.read()
        r.close()
        print("GOT", url)
    except Exception as e:
        print("ERR", url, type(e).__name__, e)
"""


def test_caller_headers_never_go_to_another_origin(sim, two_schemes, tmp_path):
    www, plain, tls, hosts = two_schemes
    (www / "f.bin").write_bytes(b"x" * 1000)
    # Each case ends on f.bin?<case> (the server logs the query): (start URL, its redirect).
    plain.faults["redirect"] = {
        "/same": "/f.bin?same",  # same origin: the headers go on
        "/host": "http://other.test/f.bin?host",
        "/port": "http://ota.test:8080/f.bin?port",
        "/https": "https://ota.test/f.bin?https",  # http to https, same host: another origin
        "/back": "http://other.test/hop",  # another origin, then back to the first
        "/hop": "http://ota.test/f.bin?back",
    }
    urls = ["http://ota.test/" + c for c in ("same", "host", "port", "https", "back")]
    r = sim.run(GET_WITH_SECRETS.format(urls=urls), cwd=tmp_path, hosts=hosts)
    assert r.stdout.count("GOT ") == 5, sim.out
    seen = {p: h for p, h in plain.headers + tls.headers}
    secret = {"X-Api-Token": "s3cret", "Authorization": "Basic dXNlcjpwdw=="}
    for case in ("same", "host", "port", "https", "back"):
        first = {k: v for k, v in seen["/" + case].items() if k in secret}
        last = {k: v for k, v in seen["/f.bin?" + case].items() if k in secret}
        assert first == secret, (case, seen["/" + case])
        assert last == (secret if case == "same" else {}), (case, seen["/f.bin?" + case])
    assert "User-Agent" in seen["/f.bin?host"] and seen["/f.bin?host"]["Host"] == "other.test"
