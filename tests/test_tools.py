"""The PC-side tools: manifest, keygen, sign, serve (Range), inspect, and push, whose
device-side receiver runs under the MicroPython unix port (and CPython) fed through pipes."""

import http.client
import json
import re
import socket

import pytest
from conftest import image, sha256
from espsim import parttable
from mpota import cli, images, inspect, manifest, push, serve, simdev

NEW = image("v1.23.0", 400_016)


def test_manifest_describes_the_image(tmp_path):
    (tmp_path / "micropython.bin").write_bytes(NEW)
    m = manifest.make(tmp_path / "micropython.bin")
    assert m == {
        "sha": sha256(NEW),
        "length": len(NEW),
        "chip": "esp32",
        "version": "v1.23.0",
        "project": "MicroPython",
        "build": NEW[176:208].hex(),
        "idf": "v5.5.2",
        "firmware": "micropython.bin",
    }
    m = manifest.make(tmp_path / "micropython.bin", compression="gzip")
    packed = (tmp_path / "micropython.bin.gz").read_bytes()
    assert m["firmware"] == "micropython.bin.gz" and m["compressed_length"] == len(packed)
    assert m["compressed_sha"] == sha256(packed) and m["sha"] == sha256(NEW)


@pytest.mark.parametrize(
    "data,message",
    [
        (images.bootloader_image(), "has no app description"),
        (
            images.merged_firmware(NEW, parttable.build(parttable.seed_table())),
            "is a merged firmware.bin",
        ),
        (NEW[:-40] + bytes(40), "wrong"),
        (b"\x00" * 1000, "not an ESP32 app image"),
    ],
)
def test_manifest_refuses_what_is_not_an_app_image(tmp_path, data, message):
    (tmp_path / "x.bin").write_bytes(data)
    with pytest.raises(ValueError, match=message):
        manifest.make(tmp_path / "x.bin")


def test_cli_manifest_keygen_sign(tmp_path):
    (tmp_path / "micropython.bin").write_bytes(NEW)
    assert (
        cli.main(
            ["keygen", "--private", str(tmp_path / "k.pem"), "--public", str(tmp_path / "k.pub")]
        )
        == 0
    )
    assert cli.main(["manifest", str(tmp_path / "micropython.bin"), "--compress", "zlib"]) == 0
    m = json.loads((tmp_path / "manifest.json").read_text())
    assert m["compression"] == "zlib" and "signature" not in m
    assert (
        cli.main(["sign", str(tmp_path / "manifest.json"), "--key", str(tmp_path / "k.pem")]) == 0
    )
    signed = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest.verify(signed, (tmp_path / "k.pub").read_bytes())
    assert {k: v for k, v in signed.items() if k not in ("signature", "manifest")} == m
    assert signed["manifest"] == 2  # canonical form 2


def test_serve_answers_ranges(tmp_path):
    (tmp_path / "f.bin").write_bytes(NEW)
    server = serve.start(tmp_path)
    try:
        host, port = server.server_address[:2]

        def get(rng=None):
            c = http.client.HTTPConnection(host, port)
            c.request("GET", "/f.bin", headers={"Range": rng} if rng else {})
            r = c.getresponse()
            return r.status, dict(r.getheaders()), r.read()

        assert get()[0] == 200 and get()[2] == NEW
        status, h, body = get("bytes=1000-")
        assert status == 206 and body == NEW[1000:]
        assert h["Content-Range"] == f"bytes 1000-{len(NEW) - 1}/{len(NEW)}"
        status, h, body = get("bytes=10-19")
        assert status == 206 and body == NEW[10:20] and h["Content-Length"] == "10"
        status, h, _ = get(f"bytes={len(NEW)}-")
        assert status == 416 and h["Content-Range"] == f"bytes */{len(NEW)}"
        # RFC 7233 suffix ranges: the last n bytes (all of them when n exceeds the size).
        status, h, body = get("bytes=-500")
        assert status == 206 and body == NEW[-500:]
        assert h["Content-Range"] == f"bytes {len(NEW) - 500}-{len(NEW) - 1}/{len(NEW)}"
        status, _, body = get(f"bytes=-{len(NEW) + 10}")
        assert status == 206 and body == NEW
        assert get("bytes=-0")[0] == 416
        assert get("bytes=-")[0] == 400
    finally:
        server.shutdown()
        server.server_close()


def test_serve_closes_idle_connections(tmp_path):
    (tmp_path / "f.bin").write_bytes(b"x" * 100)
    server = serve.start(tmp_path, idle_timeout=0.5)
    conns = []
    try:
        for _ in range(20):
            conns.append(socket.create_connection(server.server_address[:2], timeout=10))
        conns[0].sendall(b"GET /f.bin HTTP/1.0\r\n")  # headers never finished
        # Each silent connection is closed by the server (recv returns b""), long before the
        # client's own 10 s timeout would have expired.
        assert [c.recv(100) for c in conns[1:]] == [b""] * 19
        assert conns[0].recv(100) == b""
    finally:
        for c in conns:
            c.close()
        server.shutdown()
        server.server_close()


def test_inspect_tells_what_a_file_is(tmp_path):
    table = parttable.build(parttable.seed_table())
    assert inspect.describe_file(NEW).startswith("App image: MicroPython v1.23.0")
    assert "sha256:    " + sha256(NEW) in inspect.describe_file(NEW)
    assert "bootloader image" in inspect.describe_file(images.bootloader_image())
    assert inspect.describe_file(images.merged_firmware(NEW, table)).startswith(
        "Merged firmware.bin"
    )
    assert "ota_1,app,ota_1,0x190000,1536K," in inspect.describe_file(table)
    csv = b"nvs,data,nvs,0x9000,0x6000,\nfactory,app,factory,0x10000,1M,\n"
    assert inspect.describe_file(csv).startswith("Partition table (CSV):")
    simdev.create(tmp_path / "flash.bin", image("v1.22.0"))
    out = inspect.describe_file((tmp_path / "flash.bin").read_bytes())
    assert "bootloader picks: ota_0" in out and "MicroPython v1.22.0" in out
    with pytest.raises(ValueError, match="not an image"):
        inspect.describe_file(b"\x01\x02garbage")


def _push(sim, tmp_path, data, code=None):
    p = simdev.spawn(sim.path, code or push.receiver_code(data), sim.runtime, cwd=tmp_path)
    seen = []

    def write(b):
        p.stdin.write(b)
        p.stdin.flush()

    try:
        return push.run(p.stdout.readline, write, data, lambda n, t: seen.append(n)), seen
    finally:
        p.stdin.close()
        p.wait(timeout=60)
        p.stdout.close()
        p.stderr.close()


def test_push_over_a_pipe(sim, tmp_path):
    digest, seen = _push(sim, tmp_path, NEW)
    assert digest == sha256(NEW)
    assert seen[-1] == len(NEW) and len(seen) == (len(NEW) + 4095) // 4096
    assert sim.boot_slot() == "ota_1" and sim.region("ota_1")[: len(NEW)] == NEW
    sim.power_on()
    assert sim.running() == "ota_1"


def test_push_reports_device_errors(sim, tmp_path):
    bad = images.bootloader_image()
    with pytest.raises(push.PushError, match="ValueError: This is a bootloader image"):
        _push(sim, tmp_path, bad)
    # A receiver told to expect other bytes than it gets: the SHA check fails at the end.
    with pytest.raises(push.PushError, match="ValueError: SHA mismatch"):
        _push(sim, tmp_path, NEW, push.receiver_code(NEW).replace(sha256(NEW), "0" * 64))
    assert sim.boot_slot() == "ota_0"


def test_push_notices_a_silent_device(sim, tmp_path):
    with pytest.raises(push.PushError, match="stopped answering after 0 of"):
        _push(sim, tmp_path, NEW, "print('hello')")


def test_push_receiver_gives_up_when_the_pc_stops(sim, tmp_path):
    # The PC sends half of the first chunk, then nothing, with the line still open: the device
    # stops waiting after `timeout` seconds, says why, and leaves the boot partition alone.
    code = push.receiver_code(NEW).replace(")\n", ", timeout=1)\n")
    p = simdev.spawn(sim.path, code, sim.runtime, cwd=tmp_path)
    try:
        assert p.stdout.readline().strip() == b"OTA>4096"
        p.stdin.write(NEW[:2000])
        p.stdin.flush()
        line = p.stdout.readline().decode()
        # OSError(ETIMEDOUT): CPython names it TimeoutError.
        assert re.match(r"OTA:error (OSError|TimeoutError): .*no data from the PC for 1 s", line)
        assert "after 2000 bytes" in line
        assert p.wait(timeout=60) == 0
    finally:
        p.kill()
        p.stdin.close()
        p.stdout.close()
        p.stderr.close()
    assert sim.boot_slot() == "ota_0"


@pytest.mark.parametrize("arg", ["chunk=0", "chunk=-4096", "timeout=0"])
def test_push_receiver_refuses_bad_arguments(sim, tmp_path, arg):
    code = push.receiver_code(NEW).replace(")\n", ", %s)\n" % arg).replace("chunk=4096, ", "")
    with pytest.raises(push.PushError, match="ValueError: (chunk|timeout) must be a positive"):
        _push(sim, tmp_path, NEW, code)
    assert sim.boot_slot() == "ota_0"
