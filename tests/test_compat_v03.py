"""Drop-in for the original project's latest version (glenn20/micropython-esp32-ota v0.3,
2024-08-11): every call its README documents, as written, on the simulated ESP32 under
MicroPython, CPython and the native backend; request options (auth=, headers=) reaching the
server; manifests that are not JSON, or too large, refused before anything is erased; and the
ota.status helpers checked against the simulator's otadata and partition table.

Where a README example cannot run as written on a PC, the test says what it changed and why."""

import base64
import json

import pytest
from conftest import FACTORY_ONLY, image, sha256
from espsim import otadata
from mpota import serve

V23 = image("v1.23.0", 400_016)
V24 = image("v1.24.0", 300_032)
V25 = image("v1.25.0", 350_000)


class Handler(serve.RangeRequestHandler):
    """Serves the site; logs each request's path and headers; with server.auth set, answers
    401 to a request without that Authorization header; serves server.stream (path -> size) as
    a JSON-looking body of that size without a Content-Length, and counts what it sent."""

    def do_GET(self):
        srv = self.server
        srv.log.append((self.path, dict(self.headers)))
        if srv.auth and self.headers.get("Authorization") != srv.auth:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="ota"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        size = srv.stream.get(self.path)
        if size is None:
            super().do_GET()
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()  # no Content-Length: the body ends when the connection closes
        self.close_connection = True
        chunk = b'{"pad": "' + b"x" * 4087
        try:
            for i in range(0, size, 4096):
                self.wfile.write(chunk)
                srv.sent[self.path] = i + 4096
                chunk = b"x" * 4096
        except (BrokenPipeError, ConnectionResetError):
            pass


@pytest.fixture
def site(tmp_path):
    www = tmp_path / "www"
    (www / "micropython").mkdir(parents=True)
    server = serve.start(www, handler=Handler)
    server.log, server.auth, server.stream, server.sent = [], None, {}, {}
    port = server.server_address[1]
    yield www, server, f"http://127.0.0.1:{port}", f"nas.local=127.0.0.1:{port}"
    server.shutdown()
    server.server_close()


def publish(www, img, name="micropython.bin", manifest="micropython/micropython.json"):
    (www / name).write_bytes(img)
    (www / "micropython" / name).write_bytes(img)
    m = {"firmware": name, "sha": sha256(img), "length": len(img)}
    (www / manifest).write_text(json.dumps(m))
    return m


def confirm(sim):
    sim.run("import ota.rollback\nota.rollback.cancel()\n")


# The README calls that reboot (reboot=True, the module functions' default) count down 10 real
# seconds: they run as written under MicroPython only (the pure backend; the same calls with
# reboot=False run on every runtime in the tests below and in test_network.py).
AS_WRITTEN = pytest.mark.parametrize("runtime", ["micropython"])


# --- The README's Usage section -------------------------------------------------------------

USAGE_UPDATE = """\
import ota.update
ota.update.from_file("http://nas.local/micropython.bin", reboot=True)
"""

USAGE_STATUS = """\
import ota.status
ota.status.status()
"""

USAGE_CANCEL = """\
import ota.rollback
ota.rollback.cancel()
"""


@AS_WRITTEN
def test_usage(sim, site, tmp_path):
    www, server, base, hosts = site
    publish(www, V23)
    r = sim.run(USAGE_UPDATE, hosts=hosts, cwd=tmp_path)
    out = r.stdout
    # The lines v0.3's README shows, in the same order (the seed's wording where v0.3's differs:
    # "Device: ..." for "Device capacity: ...", see the README's "Coming from" section).
    lines = [
        "Opening firmware file http://nas.local/micropython.bin...",
        "Writing new micropython image to OTA partition 'ota_1'...",
        "Verifying ",
        "SHA256=" + sha256(V23),
        "OTA Partition 'ota_1' updated successfully.",
        "Rebooting in 10 seconds (ctrl-C to cancel)",
        "espsim: running 'ota_1' at 0x190000",
    ]
    at = [out.find(s) for s in lines]
    assert -1 not in at and at == sorted(at), out
    assert sim.running() == "ota_1" and sim.state("ota_1") == otadata.PENDING_VERIFY
    sim.run(USAGE_STATUS)
    assert "Micropython firmware is loading from partition 'ota_1'." in sim.out
    assert "  ota_1      app      ota_1      0x190000   0x180000  1,572,864" in sim.out
    sim.run(USAGE_CANCEL)
    assert sim.out == "" and sim.state("ota_1") == otadata.VALID
    sim.power_on()
    assert sim.running() == "ota_1"  # confirmed: no rollback


# --- ota.update module functions, with request options --------------------------------------

FROM_FILE_AUTH = """\
import ota.update
ota.update.from_file("http://nas.local/micropython.bin",
  auth=("username", "password"))
"""

BASIC = "Basic " + base64.b64encode(b"username:password").decode()


@AS_WRITTEN
def test_from_file_passes_auth_to_the_server(sim, site, tmp_path):
    www, server, base, hosts = site
    publish(www, V23)
    server.auth = BASIC
    # Without credentials the server says 401: refused, not retried, nothing written.
    before = sim.flash()
    r = sim.run(
        'import ota.update\nota.update.from_file("http://nas.local/micropython.bin")\n',
        hosts=hosts,
        cwd=tmp_path,
        ok=False,
    )
    assert r.returncode != 0 and "HTTP 401 Unauthorized for http://nas.local" in sim.out
    assert len(server.log) == 1 and sim.flash() == before
    sim.run(FROM_FILE_AUTH, hosts=hosts, cwd=tmp_path)
    assert server.log[-1][1]["Authorization"] == BASIC
    assert server.log[-1][1]["Host"] == "nas.local"
    assert "espsim: running 'ota_1' at 0x190000" in sim.out and sim.running() == "ota_1"


def test_headers_and_auth_reach_the_server(sim, site, tmp_path):
    # requests.get()'s headers= and auth=, through from_json to the manifest and the image, and
    # through the OTA class; the caller's Host and User-Agent replace the client's own.
    www, server, base, hosts = site
    publish(www, V23)
    server.auth = BASIC
    sim.run(
        f"""
import ota.update
h = {{"X-Fleet": "north", "User-Agent": "fleet-agent/2"}}
ota.update.from_json({base + "/micropython/micropython.json"!r}, reboot=False,
                     auth=("username", "password"), headers=h)
o = ota.update.OTA()
try:
    o.from_firmware_file({base + "/micropython.bin"!r}, headers={{"Host": "cdn.example"}})
except Exception as e:
    print("RESULT", type(e).__name__, e)
""",
        cwd=tmp_path,
    )
    paths = [p for p, _ in server.log]
    assert paths == ["/micropython/micropython.json", "/micropython/micropython.bin"] + [
        "/micropython.bin"
    ], sim.out
    for _, h in server.log[:2]:
        assert h["Authorization"] == BASIC and h["X-Fleet"] == "north", h
        assert h["User-Agent"] == "fleet-agent/2"
    assert sim.boot_slot() == "ota_1"
    # The third request had no credentials: 401, and the caller's Host was sent.
    assert server.log[2][1]["Host"] == "cdn.example"
    assert "Authorization" not in server.log[2][1]
    assert "RESULT HTTPError" in sim.out and "HTTP 401" in sim.out


def test_bad_request_options_are_refused(sim, site, tmp_path):
    www, server, base, hosts = site
    publish(www, V23)
    sim.run(
        f"""
import ota.update
for kw in ({{"auth": "username:password"}}, {{"headers": {{"X-A": "1\\r\\nX-B: 2"}}}},
           {{"data": b"x"}}):
    try:
        ota.update.from_file({base + "/micropython.bin"!r}, reboot=False, **kw)
    except Exception as e:
        print("RESULT", type(e).__name__, e)
""",
        cwd=tmp_path,
    )
    res = [line for line in sim.out.splitlines() if line.startswith("RESULT")]
    assert res[0] == (
        "RESULT ValueError auth must be a (username, password) tuple, not 'username:password'"
    )
    assert res[1].startswith("RESULT ValueError Invalid HTTP header: 'X-A'")
    assert res[2].startswith("RESULT TypeError unexpected keyword argument 'data'")
    assert server.log == [] and sim.boot_slot() == "ota_0"


# --- The README's Examples block, each as written -------------------------------------------

EX_FROM_JSON = """\
import ota.update

# Write firmware from a url provided in a JSON file
ota.update.from_json("http://nas.local/micropython/micropython.json")
"""

EX_FIRMWARE_FILE = """\
import ota.update

# Write firmware from a url or filename and reboot if successful and verified
ota.update.from_firmware_file(
    "http://nas.local/micropython/micropython.bin",
    sha="{sha}",
    length={length})
"""

# "/sdcard/micropython.bin" is "micropython.bin" in the device's current directory: no SD card
# on the PC.
EX_STREAM = """\
import ota.update

# Write firmware from an open stream:
with ota.update.OTA() as ota:
    with open("micropython.bin", "rb") as f:
        ota.from_stream(f)
"""

# As written, except: `uart` is a stream over the image file (the board's UART), `import gc`
# (the README leaves it out), and no stray ":" after the readinto() line (a SyntaxError).
EX_UART = """\
import gc
import ota.update
uart = open("micropython.bin", "rb")

# Read a firmware file from a serial uart
remaining = {length}
sha = "{sha}"
with ota.update.OTA(length=remaining, sha=sha) as ota:
    data = memoryview(bytearray(1024))
    gc.collect()
    while remaining > 0:
        n = uart.readinto(data[:min(remaining, len(data))])
        ota.write(data[:n])
        remaining -= n
"""

EX_NO_WITH = """\
import ota.update

# Used without the "with" statement - must call close() explicitly
ota = ota.update.OTA()
ota.from_json("http://nas.local/micropython/micropython.json")
ota.close()
"""


@AS_WRITTEN
def test_examples(sim, site, tmp_path):
    # One device through every example in turn, each update newer than the last: it boots each
    # new image and confirms it (the README's cancel()) before the next.
    www, server, base, hosts = site
    slots = ["ota_1", "ota_0"]

    def check(img, rebooted):
        slot = slots[0]
        assert sim.boot_slot() == slot, sim.out
        assert sim.region(slot)[: len(img)] == img
        if rebooted:
            assert f"espsim: running '{slot}'" in sim.out
        else:
            sim.power_on()
        assert sim.running() == slot
        confirm(sim)
        slots.reverse()

    publish(www, V23)
    sim.run(EX_FROM_JSON, hosts=hosts, cwd=tmp_path)
    assert "Opening json file http://nas.local/micropython/micropython.json..." in sim.out
    check(V23, True)

    publish(www, V24)
    sim.run(EX_FIRMWARE_FILE.format(sha=sha256(V24), length=len(V24)), hosts=hosts, cwd=tmp_path)
    check(V24, True)

    (tmp_path / "micropython.bin").write_bytes(V25)
    sim.run(EX_STREAM, cwd=tmp_path)
    check(V25, False)

    v26 = image("v1.26.0", 310_000)
    (tmp_path / "micropython.bin").write_bytes(v26)
    sim.run(EX_UART.format(sha=sha256(v26), length=len(v26)), cwd=tmp_path)
    check(v26, False)

    v27 = image("v1.27.0", 320_000)
    publish(www, v27)
    sim.run(EX_NO_WITH, hosts=hosts, cwd=tmp_path)
    check(v27, False)


def test_ota_class_return_values_and_errors(sim, site, tmp_path):
    www, server, base, hosts = site
    m = publish(www, V23)
    (tmp_path / "micropython.bin").write_bytes(V23)
    sim.run(
        f"""
import ota.update
from ota.update import OTA
def show(tag, f):
    try:
        print(tag, repr(f()))
    except Exception as e:
        print(tag, type(e).__name__, e)
o = OTA(True, False, False, "", {len(V23)})  # positional: verify, verbose, reboot, sha, length
show("BIG", lambda: OTA(True, False, False, "", 4 << 20))
show("NOJSON", lambda: o.from_json({base + "/micropython.bin"!r}))
try:
    with OTA(verbose=False) as x:
        x.write(open("micropython.bin", "rb").read(8192))
        raise KeyError("stop")
except KeyError:
    print("ABORTED", x._w)
f = open("micropython.bin", "rb")
show("HALF", lambda: o.write(f.read(100000)))
show("REST", lambda: o.from_stream(f, {m["sha"]!r}))
show("MIXED", lambda: o.from_json({base + "/micropython/micropython.json"!r}))
show("CLOSE", lambda: o.close()[0])
show("AGAIN", lambda: o.write(b"x"))
""",
        cwd=tmp_path,
    )
    out = sim.out
    assert sim.boot_slot() == "ota_1" and sim.region("ota_1")[: len(V23)] == V23
    # Updates that fail leave otadata as it was (the spare slot's bytes are not promised: a
    # second update writes into the same slot until the device reboots).
    sim.run(
        """
from ota.update import OTA
def show(tag, f):
    try:
        print(tag, repr(f()))
    except Exception as e:
        print(tag, type(e).__name__, e)
e = OTA(verbose=False)
show("EMPTY", lambda: e.close())
w = OTA(sha="ab" * 32, verbose=False)
show("WRONG", lambda: w.from_stream(open("micropython.bin", "rb")))
show("WRONGCLOSE", lambda: w.close())
""",
        cwd=tmp_path,
    )
    out += sim.out
    assert "BIG ValueError length (4194304 bytes) is > size of partition." in out
    assert "NOJSON ValueError Url does not end with '.json'" in out
    assert "HALF 100000" in out and f"REST {len(V23) - 100000}" in out
    assert "MIXED ValueError from_json() writes a whole image" in out
    assert f"CLOSE {len(V23)}" in out
    assert "AGAIN ValueError This update is complete" in out
    assert "EMPTY ValueError No image data was written." in out
    assert f"WRONG {len(V23)}" in out
    assert f"WRONGCLOSE ValueError SHA mismatch recv={sha256(V23)} expect={'ab' * 32}." in out
    assert "ABORTED None" in out
    assert sim.boot_slot() == "ota_1"


def test_no_ota_partitions(make_sim):
    sim = make_sim(FACTORY_ONLY)
    sim.run(
        """
import ota.update, ota.status, ota.rollback
try:
    ota.update.OTA()
except OSError as e:
    print("OTA", e.args[0])
print("READY", ota.status.ready(), ota.status.next_ota, ota.status.current_ota.info()[4])
print("BOOT", ota.status.boot_ota().info()[4], ota.status.ota_partitions())
ota.status.otadata_check()
print("CANCEL", ota.rollback.cancel())
try:
    ota.status.force_rollback()
except OSError as e:
    print("FORCE", e.args[0])
"""
    )
    out = sim.out
    assert "OTA 2" in out
    assert "READY False None factory" in out and "BOOT factory []" in out
    assert "OTA record" not in out  # no otadata partition: nothing to print, as in v0.3
    assert "CANCEL False" in out and "FORCE -261" in out


# --- from_json() and manifests that are not one -----------------------------------------------


def _refuse(sim, tmp_path, url, **kw):
    before = sim.flash()
    extra = "".join(f", {k}={v!r}" for k, v in kw.items())
    sim.run(
        f"""
import ota.update
try:
    ota.update.from_json({url!r}, reboot=False{extra})
except Exception as e:
    print("RESULT", type(e).__name__, e)
""",
        cwd=tmp_path,
    )
    assert sim.flash() == before, "the device was changed"
    return [line for line in sim.out.splitlines() if line.startswith("RESULT")][0][7:]


def test_non_json_manifest_is_refused(sim, site, tmp_path):
    www, server, base, hosts = site
    publish(www, V23)
    (www / "fw.json").write_bytes(V23[:10_000])  # an image named .json: 10 KB, not JSON
    res = _refuse(sim, tmp_path, base + "/fw.json")
    assert res == (
        f"ValueError The manifest at {base}/fw.json is not a JSON object: it starts with "
        f"{V23[:16]!r} (an ESP32 app image? from_file() takes those)."
    )
    (www / "page.json").write_text("\n  <html><body>Log in to the captive portal</body></html>")
    res = _refuse(sim, tmp_path, base + "/page.json")
    assert res == (
        f"ValueError The manifest at {base}/page.json is not a JSON object: it starts with "
        "b'<html><body>Log '."
    )
    (www / "cut.json").write_text('{"firmware": "micropython.bin", "sha": ')
    res = _refuse(sim, tmp_path, base + "/cut.json")
    assert res == f"ValueError The manifest at {base}/cut.json is not valid JSON."
    (www / "empty.json").write_text("  \n")
    res = _refuse(sim, tmp_path, base + "/empty.json")
    assert res == f"ValueError The manifest at {base}/empty.json is empty."
    (www / "list.json").write_text("[1, 2]")
    assert "is not a JSON object: it starts with b'[1, 2]'" in _refuse(
        sim, tmp_path, base + "/list.json"
    )
    assert not [p for p, _ in server.log if p == "/micropython.bin"]


def test_oversized_manifest_is_refused_unread(sim, site, tmp_path):
    www, server, base, hosts = site
    publish(www, V23)
    # Content-Length says 1.4 MB: refused before the body is read.
    big = b'{"firmware": "micropython.bin", "pad": "' + b"x" * 1_400_000 + b'"}'
    (www / "big.json").write_bytes(big)
    res = _refuse(sim, tmp_path, base + "/big.json")
    assert res == (
        f"ValueError The manifest at {base}/big.json is larger than 16384 bytes: refused "
        "(a manifest is a small JSON file)."
    )
    # No Content-Length: at most 16 KB + 1 are read, and the connection is closed on the rest.
    # Of a 64 MB body, the server gets rid of at most what the kernel buffers (loopback here:
    # tcp_wmem 4 MB + tcp_rmem 32 MB at most) before the client closes; and the device's heap
    # (2 MB) could not hold it whole.
    server.stream["/endless.json"] = 64 << 20
    res = _refuse(sim, tmp_path, base + "/endless.json")
    assert res.endswith(
        "endless.json is larger than 16384 bytes: refused (a manifest is a small JSON file)."
    )
    assert server.sent.get("/endless.json", 0) < 40 << 20, server.sent  # never sent whole
    # The same for a file on the device, and exactly 16 KB is still accepted.
    (tmp_path / "big.json").write_bytes(big)
    res = _refuse(sim, tmp_path, "big.json")
    assert res.startswith("ValueError The manifest at big.json is larger than 16384 bytes")
    m = json.loads((www / "micropython" / "micropython.json").read_text())
    m["firmware"] = f"{base}/micropython.bin"
    text = json.dumps(m)
    (tmp_path / "m.json").write_text(text + " " * (16384 - len(text)))
    sim.run("import ota.update\nota.update.from_json('m.json', reboot=False)\n", cwd=tmp_path)
    assert sim.boot_slot() == "ota_1"


# --- ota.status and ota.rollback helpers against the simulator's real state -------------------

HELPERS = """
import ota.status as s
print("CURRENT", s.current_ota.info()[4])
print("NEXT", s.next_ota.info()[4] if s.next_ota else None)
print("BOOT", s.boot_ota().info()[4])
print("READY", s.ready())
print("PARTS", [p.info()[4] for p in s.ota_partitions()])
print("OTADATA", s.otadata_part.info()[4] if s.otadata_part else None)
s.partition_table_print()
s.otadata_check()
"""


def helpers(sim):
    sim.run(HELPERS)
    out = {}
    for line in sim.out.splitlines():
        key, _, val = line.partition(" ")
        if key.isupper():
            out[key] = val
    recs = [line for line in sim.out.splitlines() if line.startswith("OTA record")]
    nxt = [line for line in sim.out.splitlines() if line.startswith("Next boot is")]
    return out, recs, nxt[0] if nxt else None


def expect_records(sim):
    names = {
        0: "NEW",
        1: "PENDING",
        2: "VALID",
        3: "INVALID",
        4: "ABORTED",
        0xFFFFFFFF: "UNDEFINED",
    }
    out = []
    for e in sim.otadata_entries():
        valid = e.valid()
        out.append(f"OTA record: state={names[e.state]}, seq={e.seq}, crc={e.crc}, valid={valid}")
    return out


def test_status_helpers_follow_the_device(sim, tmp_path):
    # Freshly flashed: otadata erased (both records UNDEFINED with seq 0xFFFFFFFF), then the
    # bootloader's "Set actual ota_seq=1": ota_0 VALID.
    out, recs, nxt = helpers(sim)
    assert out["CURRENT"] == "ota_0" == sim.running()
    assert out["NEXT"] == "ota_1" and out["BOOT"] == "ota_0" == sim.boot_slot()
    assert out["READY"] == "True" and out["PARTS"] == "['ota_0', 'ota_1']"
    assert out["OTADATA"] == "otadata"
    assert "  ota_0      app      ota_0       0x10000   0x180000  1,572,864" in sim.out
    assert [r for r in recs if r.startswith("OTA record:")] == expect_records(sim)
    assert nxt == "Next boot is 'ota_0'."

    # An update, not yet booted: otadata's new record is NEW (v0.3 would not count it and name
    # ota_0); the bootloader boots ota_1 and makes it PENDING_VERIFY.
    (tmp_path / "v23.bin").write_bytes(V23)
    sim.run(
        'from ota.writer import OTA\nwith open("v23.bin","rb") as f, OTA(verbose=False) as o:\n'
        "    o.write_file(f)\n",
        cwd=tmp_path,
    )
    out, recs, nxt = helpers(sim)
    assert out["CURRENT"] == "ota_0" and out["BOOT"] == "ota_1" == sim.boot_slot()
    assert [r for r in recs if r.startswith("OTA record:")] == expect_records(sim)
    assert "OTA record is NEW. Will be updated on next boot." in recs
    assert nxt == "Next boot is 'ota_1'."
    sim.power_on()
    assert sim.running() == "ota_1" and sim.state("ota_1") == otadata.PENDING_VERIFY

    # Running unconfirmed: esp_ota_get_boot_partition() still names ota_1, but the bootloader
    # will abort it and roll back to ota_0, which is what otadata_check() says.
    out, recs, nxt = helpers(sim)
    assert out["CURRENT"] == "ota_1" and out["NEXT"] == "ota_0" and out["BOOT"] == "ota_1"
    assert "OTA record is PENDING. Will be updated on next boot." in recs
    assert nxt == "Next boot is 'ota_0'."
    sim.power_on()
    assert sim.running() == "ota_0"  # rolled back, as predicted
    out, recs, nxt = helpers(sim)
    assert "OTA record: state=ABORTED" in "\n".join(recs) and nxt == "Next boot is 'ota_0'."
    assert [r for r in recs if r.startswith("OTA record:")] == expect_records(sim)


def test_rollback_helpers(sim, tmp_path):
    (tmp_path / "v23.bin").write_bytes(V23)
    sim.run(
        'from ota.writer import OTA\nwith open("v23.bin","rb") as f, OTA(verbose=False) as o:\n'
        "    o.write_file(f)\n",
        cwd=tmp_path,
    )
    sim.power_on()
    sim.run(USAGE_CANCEL)
    assert sim.running() == "ota_1" and sim.state("ota_1") == otadata.VALID
    # force(): v0.3 returns None; ours names the partition (a v0.3 caller ignores it).
    sim.run("import ota.rollback\nprint('FORCE', ota.rollback.force())\n")
    assert "FORCE ota_0" in sim.out and sim.boot_slot() == "ota_0"
    sim.run("import ota.rollback\nprint('UNDO', ota.rollback.cancel_force())\n")
    assert "UNDO None" in sim.out and sim.boot_slot() == "ota_1"
    sim.run("import ota.status\nprint('FR', ota.status.force_rollback())\n")
    assert "FR None" in sim.out and sim.boot_slot() == "ota_0"
    sim.run("import ota.status\nota.status.otadata_check()\n")
    assert sim.out.rstrip().endswith("Next boot is 'ota_0'.")
    sim.power_on()
    assert sim.running() == "ota_0"
