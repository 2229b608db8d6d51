"""mpota release: the channel layout on a static host (files named by content, a signed manifest
with channel, release, sequence, rollout and halted), its refusals, nginx serving it (Range,
ETag and 304, keep-alive, cache headers), and the same release in an S3-compatible bucket (moto's
S3 server from PyPI) that a simulated device updates from."""

from __future__ import annotations

import hashlib
import http.client
import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import nginxserver
import pytest
from conftest import Sim, free_port, image
from mpota import cli, manifest, release, simdev

NEW = image("v1.23.0", 200_016)
OLD = image("v1.22.0", 200_000)


@pytest.fixture
def work(tmp_path):
    (tmp_path / "new.bin").write_bytes(NEW)
    (tmp_path / "old.bin").write_bytes(OLD)
    manifest.keygen(tmp_path / "k.pem", tmp_path / "pub.pem")
    return tmp_path


def mpota(*args) -> int:
    return cli.main([str(a) for a in args])


def test_publish_to_a_directory(work, capsys):
    www = work / "www"
    pub = ["release", "publish", work / "new.bin", www, "--key", work / "k.pem"]
    rc = mpota(*pub, "--version", "2.3.1", "--from", work / "old.bin", "--start", "1800000000")
    assert rc == 0
    out = capsys.readouterr().out
    m = json.loads((www / "stable" / "manifest.json").read_text())
    assert manifest.verify(m, (work / "pub.pem").read_bytes())
    build = NEW[176:208].hex()
    assert (m["channel"], m["release"], m["halted"], m["manifest"]) == (
        "stable",
        f"2.3.1+{build[:8]}",
        False,
        2,
    )
    day = 86400
    t0 = 1800000000
    assert m["rollout"] == {
        "stages": [[100, t0], [500, t0 + day], [2500, t0 + 2 * day], [10000, t0 + 3 * day]]
    }
    assert m["sequence"] >= int(time.time()) - 5
    # files by content: the image, and the patch from the old build
    served = {p.name: p.read_bytes() for p in (www / "files").iterdir()}
    for name, data in served.items():
        assert name.split(".")[0] == hashlib.sha256(data).hexdigest()
    assert m["firmware"] == f"../files/{hashlib.sha256(NEW).hexdigest()}.bin"
    assert m["patches"][0]["file"].startswith("../files/") and m["patches"][0]["file"].endswith(
        ".mpz"
    )
    assert len(served) == 2
    assert f"stable: release 2.3.1+{build[:8]}, sequence {m['sequence']}, live" in out
    # The same image again: no new file; the sequence grows; the plan is the one given.
    before = (www / "stable" / "manifest.json").stat().st_mtime_ns
    assert mpota(*pub, "--version", "2.3.1", "--ramp", "1:72h", "--start", "1800000000") == 0
    m2 = json.loads((www / "stable" / "manifest.json").read_text())
    assert m2["sequence"] > m["sequence"]
    assert m2["rollout"] == {"start": t0, "start_bp": 100, "duration": 3 * day}
    assert len(list((www / "files").iterdir())) == 2  # the image is there already
    assert (www / "stable" / "manifest.json").stat().st_mtime_ns > before


def test_change_halts_with_the_next_sequence_and_a_new_mtime(work):
    www = work / "www"
    key = (work / "k.pem").read_bytes()
    st = release.DirStore(www)
    m = release.publish(work / "new.bin", st, "beta", key, {"stages": [[10000, 0]]})
    path = www / "beta" / "manifest.json"
    t = path.stat().st_mtime_ns
    h = release.change(st, "beta", key, halted=True)
    assert (h["halted"], h["sequence"]) == (True, m["sequence"] + 1)
    # within the same second: the mtime (nginx's ETag and Last-Modified) is a second later
    assert path.stat().st_mtime_ns >= t + 1_000_000_000
    assert manifest.verify(json.loads(path.read_text()), (work / "pub.pem").read_bytes())
    manifest.keygen(work / "other.pem", work / "other-pub.pem")
    with pytest.raises(ValueError, match="not signed by this key"):
        release.change(st, "beta", (work / "other.pem").read_bytes(), halted=False)
    with pytest.raises(ValueError, match="no release on channel 'stable'"):
        release.change(st, "stable", key, halted=False)


@pytest.mark.parametrize(
    "args,message",
    [
        (["--channel", "Stable!"], "a channel name is 1-32 of a-z, 0-9, _ and -, not 'Stable!'"),
        (["--stages", "1@0,200@1d"], "a percentage is between 0 and 100, not '200'"),
        (["--stages", "5@2d,10@1d"], "stages must be in time order: '5@2d,10@1d'"),
        (["--stages", "5"], "a stage is PERCENT@OFFSET (e.g. 5@24h), not '5'"),
        (["--ramp", "1"], "a ramp is START_PERCENT:DURATION (e.g. 1:72h), not '1'"),
        (["--stages", "1@soon"], "not a duration: 'soon' (e.g. 3600, 30m, 24h, 3d)"),
    ],
)
def test_bad_input_is_refused_and_nothing_is_written(work, capsys, args, message):
    www = work / "www"
    rc = mpota("release", "publish", work / "new.bin", www, "--key", work / "k.pem", *args)
    assert rc == 2
    assert capsys.readouterr().err.strip() == f"mpota release publish: {message}"
    assert not list((www / "stable").glob("*")) if (www / "stable").exists() else True
    assert not (www / "files").exists() or not list((www / "files").iterdir())


def test_nginx_serves_ranges_etags_304_and_keep_alive(work):
    www = work / "www"
    key = (work / "k.pem").read_bytes()
    release.publish(work / "new.bin", release.DirStore(www), "stable", key, None)
    server = nginxserver.Nginx(www, work / "nginx")
    try:
        c = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        c.request("GET", "/stable/manifest.json")
        r = c.getresponse()
        body = r.read()
        assert r.status == 200 and json.loads(body)["channel"] == "stable"
        etag, modified = r.getheader("ETag"), r.getheader("Last-Modified")
        assert etag and modified and r.getheader("Cache-Control") == "no-cache"
        c.request("GET", "/stable/manifest.json", headers={"If-None-Match": etag})
        r = c.getresponse()
        assert (r.status, r.read()) == (304, b"")
        c.request("GET", "/stable/manifest.json", headers={"If-Modified-Since": modified})
        r = c.getresponse()
        assert (r.status, r.read()) == (304, b"")
        name = f"/files/{hashlib.sha256(NEW).hexdigest()}.bin"
        c.request("GET", name, headers={"Range": "bytes=4096-"})
        r = c.getresponse()
        assert r.status == 206 and r.read() == NEW[4096:]
        assert r.getheader("Content-Range") == f"bytes 4096-{len(NEW) - 1}/{len(NEW)}"
        assert r.getheader("Cache-Control") == release.FILE_CACHE
        c.close()
        # four requests, one connection (HTTP/1.1 keep-alive)
        reqs = server.requests
        assert [(q[0], q[1]) for q in reqs] == [(reqs[0][0], str(n)) for n in (1, 2, 3, 4)]
        # a manifest replaced within the same second is news (a new ETag)
        release.change(release.DirStore(www), "stable", key, halted=True)
        c = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        c.request("GET", "/stable/manifest.json", headers={"If-None-Match": etag})
        r = c.getresponse()
        assert r.status == 200 and json.loads(r.read())["halted"] is True
        c.close()
    finally:
        server.stop()


# -- an S3-compatible bucket: moto's server (PyPI moto[server]), a real S3 HTTP API ------------


@pytest.fixture
def s3(tmp_path, monkeypatch):
    exe = shutil.which("moto_server", path=str(Path(sys.executable).parent))
    if not exe:
        pytest.skip("moto[server] is not installed (make setup installs it)")
    port = free_port()
    for k, v in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(k, v)
    log = open(tmp_path / "moto.log", "wb")
    p = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        end = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > end or p.poll() is not None:
                    pytest.fail(
                        "moto_server did not start:\n" + (tmp_path / "moto.log").read_text()
                    )
                time.sleep(0.05)
        import boto3

        boto3.client("s3", endpoint_url=url).create_bucket(Bucket="fleet")
        yield url
    finally:
        p.terminate()
        p.wait(10)
        log.close()


def test_publish_to_an_s3_bucket_and_update_from_it(work, s3, capsys):
    import boto3

    rc = mpota("release", "publish", work / "new.bin", "s3://fleet/releases", "--key",
               work / "k.pem", "--endpoint-url", s3, "--acl", "public-read",
               "--stages", "100@0")  # fmt: skip
    assert rc == 0, capsys.readouterr()
    b = boto3.client("s3", endpoint_url=s3)
    keys = sorted(o["Key"] for o in b.list_objects_v2(Bucket="fleet")["Contents"])
    name = f"releases/files/{hashlib.sha256(NEW).hexdigest()}.bin"
    assert keys == [name, "releases/stable/manifest.json"]
    head = b.head_object(Bucket="fleet", Key=name)
    assert head["CacheControl"] == release.FILE_CACHE
    o = b.get_object(Bucket="fleet", Key="releases/stable/manifest.json")
    assert o["CacheControl"] == "no-cache" and o["ContentType"] == "application/json"
    m = json.loads(o["Body"].read())
    assert manifest.verify(m, (work / "pub.pem").read_bytes())
    capsys.readouterr()
    assert mpota("release", "show", "s3://fleet/releases", "--endpoint-url", s3) == 0
    assert capsys.readouterr().out.startswith(f"stable: release {m['release']}, sequence")
    # A simulated device polls the bucket over plain HTTP (path-style URL) and updates.
    sim = Sim(work / "board.bin", "cpython")
    simdev.create(sim.path, OLD)
    fs = work / "fs"
    fs.mkdir()
    (fs / "ota_pubkey.pem").write_bytes((work / "pub.pem").read_bytes())
    code = (
        "import ota.fleet\n"
        f"f = ota.fleet.Fleet({s3 + '/fleet/releases'!r}, reboot=False)\n"
        "print('FLEET', f.check())\n"
    )
    r = sim.run(code, cwd=fs)
    assert "FLEET installed" in r.stdout, sim.out
    assert sim.boot_slot() == "ota_1" and sim.region("ota_1")[: len(NEW)] == NEW
    kept = json.loads((fs / "ota_fleet_manifest.json").read_text())
    assert kept["etag"].strip('"')  # the bucket's ETag, for the next conditional poll
