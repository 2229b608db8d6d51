"""A hostile server (tests/hostile.py) against ota.update on the simulated device, under
MicroPython, CPython and the native backend: every case ends, within its bounds, with a clear
result, and the device either on the new image or exactly where it was."""

import json
import time

import hostile
import pytest
from conftest import image, sha256

IMG = image("v1.23.0", 200_016)
CALL = """
import ota.update
try:
    ota.update.from_file({url!r}, {sha!r}, {length}, reboot=False, backoff=0{kw})
    print("RESULT ok")
except Exception as e:
    print("RESULT", type(e).__name__, e)
"""


def ok_response(conn, req, data=IMG, headers=()):
    """What a good server answers: 200, or 206 for a Range."""
    start = req.start or 0
    if start:
        hdr = [("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")]
        conn.sendall(
            hostile.response(206, data[start:], hdr + [("Content-Length", len(data) - start)])
        )
    else:
        conn.sendall(hostile.response(200, data, [("Content-Length", len(data)), *headers]))


def run(sim, tmp_path, script, kw="", lifetime=60, server=None):
    """from_file() of the hostile server's /fw.bin on the device (`server`: one already
    running, which is left running)."""
    own = server is None
    server = server or hostile.Server(script, lifetime)
    try:
        code = CALL.format(url=server.url + "/fw.bin", sha=sha256(IMG), length=len(IMG), kw=kw)
        t0 = time.monotonic()
        r = sim.run(code, cwd=tmp_path, timeout=lifetime)
        elapsed = time.monotonic() - t0
    finally:
        if own:
            server.stop()
    results = [line[7:] for line in r.stdout.splitlines() if line.startswith("RESULT ")]
    assert results, sim.out
    return results[-1], server.log, elapsed


def unchanged(sim):
    return sim.boot_slot() == "ota_0"


def updated(sim):
    return sim.boot_slot() == "ota_1" and sim.region("ota_1")[: len(IMG)] == IMG


def first_then_ok(bad):
    """`bad` answers the first request, a good server the others."""

    def script(conn, req):
        if len(script.seen) == 0:
            script.seen.append(req)
            bad(conn, req)
        else:
            ok_response(conn, req)

    script.seen = []
    return script


def test_header_without_colon(sim, tmp_path):
    def bad(conn, req):
        conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length 5\r\n\r\n" + IMG)

    result, log, _ = run(sim, tmp_path, bad, ", retries=0")
    assert result.startswith("NetError") and "a header line without ':'" in result, result
    assert unchanged(sim)


def test_headers_too_long(sim, tmp_path):
    def bad(conn, req):
        conn.sendall(b"HTTP/1.0 200 OK\r\n" + b"X-Pad: " + b"a" * 20000 + b"\r\n\r\n")

    result, _, _ = run(sim, tmp_path, bad, ", retries=0")
    assert "headers are longer than 8192 bytes" in result, result
    assert unchanged(sim)


def test_drop_without_content_length_is_retried(sim, tmp_path):
    # Without a Content-Length the end of the body is the end of the connection: a drop before
    # the expected length is a network failure (retried from what is on flash), not the image.
    def bad(conn, req):
        conn.sendall(hostile.response(200, IMG[:100_000]))

    result, log, _ = run(sim, tmp_path, first_then_ok(bad))
    assert result == "ok", result
    assert len(log) == 2 and log[1].start is not None and log[1].start % 4096 == 0
    assert updated(sim)


def test_content_length_larger_than_the_body(sim, tmp_path):
    def bad(conn, req):
        conn.sendall(hostile.response(200, IMG[:50_000], [("Content-Length", len(IMG))]))

    result, log, _ = run(sim, tmp_path, first_then_ok(bad))
    assert result == "ok" and len(log) == 2, (result, log)
    assert updated(sim)


def test_body_longer_than_the_image_is_cut_off(sim, tmp_path):
    # No Content-Length and a body that goes on past the image: refused at the first byte past
    # `length`, long before the 4 MB the server would send.
    def bad(conn, req):
        conn.sendall(hostile.response(200, IMG))
        try:
            for _ in range(64):
                conn.sendall(b"\0" * 65536)
        except OSError:
            pass

    result, _, _ = run(sim, tmp_path, bad, ", retries=0")
    assert result == f"ValueError Receive {len(IMG) + 1} bytes (expect {len(IMG)}).", result
    assert unchanged(sim)


def test_content_length_shorter_than_the_body(sim, tmp_path):
    # The client reads what Content-Length promises, no more.
    def bad(conn, req):
        conn.sendall(hostile.response(200, IMG + b"junk" * 1000, [("Content-Length", len(IMG))]))

    result, _, _ = run(sim, tmp_path, bad)
    assert result == "ok", result
    assert updated(sim)


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("Transfer-Encoding: chunked", "chunked transfer encoding is not supported"),
        ("Content-Encoding: gzip", "the server sent a gzip-encoded body, which was not asked for"),
    ],
)
def test_encodings_not_asked_for(sim, tmp_path, header, message):
    k, v = header.split(": ")

    def bad(conn, req):
        conn.sendall(hostile.response(200, IMG, [(k, v)]))

    result, log, _ = run(sim, tmp_path, bad)
    assert result.startswith("ValueError " + message), result
    assert len(log) == 1  # bad input: not retried
    assert unchanged(sim)


def test_partial_content_from_another_offset(sim, tmp_path):
    # First a drop (so that the client resumes), then a 206 that starts 4 KB later than asked.
    def script(conn, req):
        if req.start is None:
            conn.sendall(hostile.response(200, IMG[:100_000], [("Content-Length", len(IMG))]))
        else:
            s = req.start + 4096
            rng = [("Content-Range", f"bytes {s}-{len(IMG) - 1}/{len(IMG)}")]
            conn.sendall(hostile.response(206, IMG[s:], rng))

    result, log, _ = run(sim, tmp_path, script)
    assert result.startswith("ValueError asked for the bytes from"), result
    assert "the server sent them from" in result
    assert unchanged(sim)
    assert not (tmp_path / "ota_resume.json").exists()  # the next call starts afresh


def test_whole_file_to_a_range_request(sim, tmp_path):
    def script(conn, req):
        if len(script.seen) == 0:
            conn.sendall(hostile.response(200, IMG[:100_000], [("Content-Length", len(IMG))]))
        else:
            conn.sendall(hostile.response(200, IMG, [("Content-Length", len(IMG))]))
        script.seen.append(req)

    script.seen = []
    result, log, _ = run(sim, tmp_path, script)
    assert result == "ok" and len(log) == 2 and log[1].start, (result, log)
    assert updated(sim)


def test_redirect_loop(sim, tmp_path):
    def loop(conn, req):
        conn.sendall(hostile.response(302, b"", [("Location", "loop.bin")]))

    result, log, _ = run(sim, tmp_path, loop, ", retries=1")
    assert result.startswith("NetError") and "too many redirects" in result, result
    assert len(log) == 8  # 4 per attempt
    assert all(r.path in ("/fw.bin", "/loop.bin") for r in log)  # a relative Location, resolved
    assert unchanged(sim)


def test_slowloris_headers_end_at_the_deadline(sim, tmp_path):
    def slow(conn, req):
        conn.sendall(b"HTTP/1.0 200 OK\r\nX-Slow: ")
        for _ in range(200):
            conn.sendall(b"a")
            time.sleep(0.05)

    result, _, elapsed = run(sim, tmp_path, slow, ", deadline=2, retries=5")
    assert result.startswith("NetError") and "deadline passed" in result, result
    assert elapsed < 9
    assert unchanged(sim)


def test_slowloris_body_ends_at_the_deadline(sim, tmp_path):
    def slow(conn, req):
        conn.sendall(hostile.response(200, IMG[:150_000], [("Content-Length", len(IMG))]))
        for i in range(200):
            conn.sendall(IMG[150_000 + i : 150_001 + i])
            time.sleep(0.05)

    server = hostile.Server(first_then_ok(slow), 120)
    try:
        result, _, elapsed = run(sim, tmp_path, None, ", deadline=2, retries=5", server=server)
        assert result.startswith("NetError") and "deadline passed" in result, result
        assert elapsed < 9
        assert unchanged(sim)
        # What came is on flash: the next call resumes from there.
        saved = json.loads((tmp_path / "ota_resume.json").read_text())["offset"]
        assert saved >= 131072
        result, log, _ = run(sim, tmp_path, None, server=server)
        assert result == "ok" and log[-1].start == saved, (result, log[-1].start)
        assert updated(sim)
    finally:
        server.stop()


def test_reset_midway_is_retried(sim, tmp_path):
    def bad(conn, req):
        conn.sendall(hostile.response(200, IMG[:120_000], [("Content-Length", len(IMG))]))
        hostile.reset(conn)

    result, log, _ = run(sim, tmp_path, first_then_ok(bad))
    assert result == "ok" and len(log) == 2, (result, log)
    assert updated(sim)


def test_host_header_names_the_port(sim, tmp_path):
    result, log, _ = run(sim, tmp_path, ok_response)
    assert result == "ok"
    assert log[0].headers["host"] == f"127.0.0.1:{log[0].port}"  # not the default port 80


def test_resume_state_at_the_very_end_is_not_stuck(sim, tmp_path):
    # A power cut between the last resume save (offset == length, for an image whose length is
    # a multiple of 64 KiB) and set_boot(): a Range from the image's length gets HTTP 416.
    # The device must finish the update with no one deleting its state file.
    img = image("v1.23.0", 262144)
    (tmp_path / "img.bin").write_bytes(img)
    sim.run(
        "from ota.writer import OTA\n"
        "w = OTA(verbose=False)\n"
        "w.write_file(open('img.bin', 'rb'))\n"
        "w.abort()\n",
        cwd=tmp_path,
    )
    assert sim.region("ota_1")[: len(img)] == img and unchanged(sim)

    def serve(conn, req):
        start = req.start or 0
        if start >= len(img):
            conn.sendall(hostile.response(416, b"", [("Content-Range", f"bytes */{len(img)}")]))
        else:
            ok_response(conn, req, img)

    server = hostile.Server(serve, 60)
    try:
        url = server.url + "/fw.bin"
        state = {"url": url, "sha": sha256(img), "length": len(img), "slot": "ota_1"}
        (tmp_path / "ota_resume.json").write_text(json.dumps(dict(state, offset=len(img))))
        code = CALL.format(url=url, sha=sha256(img), length=len(img), kw="")
        r = sim.run(code, cwd=tmp_path)
    finally:
        server.stop()
    assert "RESULT ok" in r.stdout, sim.out
    assert server.log[0].start == len(img) - 4096  # the last 4 KB again, not bytes=<length>-
    assert sim.boot_slot() == "ota_1" and sim.region("ota_1")[: len(img)] == img
    assert not (tmp_path / "ota_resume.json").exists()


def test_range_not_satisfiable_starts_again(sim, tmp_path):
    # A state file from another file that happens to have the same name, SHA and length cannot
    # exist; but a server that answers every Range with 416 must not stall the device.
    def serve(conn, req):
        if req.start:
            conn.sendall(hostile.response(416, b"", [("Content-Range", f"bytes */{len(IMG)}")]))
        elif len(serve.seen) == 0:
            serve.seen.append(req)
            conn.sendall(hostile.response(200, IMG[:150_000], [("Content-Length", len(IMG))]))
        else:
            ok_response(conn, req)

    serve.seen = []
    result, log, _ = run(sim, tmp_path, serve)
    assert result == "ok", result
    assert [r.start is not None for r in log] == [False, True, False]
    assert updated(sim)
