"""ota.fleet on the device (MicroPython and CPython): selection (buckets, plans), scheduling
(first poll, jitter, backoff) with an injected clock and random source, and polls of releases
that `mpota release` published, served by nginx: a poll with no news is one request answered
304, counted in bytes both ways by a proxy; stages that open with time, halted releases, pins,
channels and the penalty box, with the reports a reporter receives."""

from __future__ import annotations

import hashlib
import json
import select
import socket
import threading
from pathlib import Path

import nginxserver
import pytest
from conftest import Sim, image
from espsim import device
from mpota import manifest, release, simdev

RUNTIMES = ["micropython", "cpython"]
OLD = image("v1.22.0", 200_000)
NEW = image("v1.23.0", 200_016)
BETA = image("v1.24.0", 200_032)
T0 = 1_800_000_000  # the plans' start (2027)
DAY = 86400


@pytest.fixture(params=RUNTIMES)
def rt(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def key(tmp_path_factory) -> bytes:
    d = tmp_path_factory.mktemp("keys")
    manifest.keygen(d / "k.pem", d / "pub.pem")
    return (d / "k.pem").read_bytes()


def public(key_pem: bytes) -> bytes:
    return release._public(key_pem)


class Board:
    """A simulated ESP32 running OLD, its filesystem with the fleet's public key."""

    def __init__(self, tmp: Path, runtime: str, key_pem: bytes, mac: int | None = None):
        self.sim = Sim(tmp / "board.bin", runtime)
        simdev.create(self.sim.path, OLD, mac=mac)
        self.fs = tmp / "fs"
        self.fs.mkdir()
        (self.fs / "ota_pubkey.pem").write_bytes(public(key_pem))
        self.id = "%012x" % device.read_state(str(self.sim.path))["mac"]

    def poll(self, base: str, now: int, polls: int = 1, setup: str = "", tries: int = 3):
        code = POLL.format(setup=setup, base=base, now=now, polls=polls, tries=tries)
        r = self.sim.run(code, cwd=self.fs)
        lines = [ln for ln in r.stdout.splitlines() if ln.startswith("FLEET ")]
        assert lines, self.sim.out
        return json.loads(lines[-1][6:])


POLL = """
import json
import ota.fleet
class Reporter:
    def __init__(self):
        self.calls = []
    def send(self, state, release=None, to_build=None, reason=None, progress=None):
        self.calls.append([state, release, to_build, reason, progress])
r = Reporter()
{setup}
f = ota.fleet.Fleet({base!r}, reporter=r, reboot=False, now=lambda: {now}, tries={tries})
out = []
for i in range({polls}):
    try:
        out.append(f.check())
    except Exception as e:
        out.append("%s: %s" % (type(e).__name__, e))
print("FLEET " + json.dumps({{"results": out, "calls": r.calls, "id": f.device}}))
"""


def build(img: bytes) -> str:
    return img[32 + 144 : 32 + 176].hex()  # esp_app_desc_t.app_elf_sha256


def release_id(img: bytes) -> str:
    return "%s+%s" % (img_version(img), build(img)[:8])


def img_version(img: bytes) -> str:
    for v in ("v1.22.0", "v1.23.0", "v1.24.0"):
        if f"MicroPython {v} ".encode() in img:
            return v
    raise AssertionError("unknown test image")


def bucket(dev: str, rel: str) -> int:
    """The contract's formula, computed on the PC (FLEET_SPEC.md)."""
    d = hashlib.sha256(f"{dev}/{rel}".encode()).digest()
    return int.from_bytes(d[:4], "big") % 10000


def publish(tmp: Path, www: Path, img: bytes, key_pem: bytes, rollout, channel="stable"):
    p = tmp / f"{img_version(img)}.bin"
    p.write_bytes(img)
    m = release.publish(p, release.DirStore(www), channel, key_pem, rollout)
    assert m["release"] == release_id(img)
    return m


class Proxy:
    """A TCP proxy in front of a server, counting the bytes of each connection both ways."""

    def __init__(self, port: int):
        self.to = ("127.0.0.1", port)
        self.conns: list[list[int]] = []  # [bytes up, bytes down] per connection
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.base = "http://127.0.0.1:%d/" % self.sock.getsockname()[1]
        self.done = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.done.is_set():
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            n = [0, 0]
            self.conns.append(n)
            threading.Thread(target=self._pump, args=(c, n), daemon=True).start()

    def _pump(self, c, n):
        s = socket.create_connection(self.to)
        ends = {c: (s, 0), s: (c, 1)}
        try:
            while ends:
                ready, _, _ = select.select(list(ends), [], [], 10)
                if not ready:
                    return
                for a in ready:
                    data = a.recv(65536)
                    other, way = ends[a]
                    if not data:  # one side is done: so is the other's writing
                        del ends[a]
                        try:
                            other.shutdown(socket.SHUT_WR)
                        except OSError:
                            pass
                        continue
                    n[way] += len(data)
                    other.sendall(data)
        except OSError:
            pass
        finally:
            c.close()
            s.close()

    def close(self):
        self.done.set()
        self.sock.close()


@pytest.fixture
def site(tmp_path):
    www = tmp_path / "www"
    www.mkdir()
    server = nginxserver.Nginx(www, tmp_path / "nginx")
    yield www, server
    server.stop()


def firmware_requests(server) -> list[str]:
    return [p for p, _ in server.log if "/files/" in p]


# -- selection and scheduling, on the device --------------------------------------------------

LOGIC = """
import json, random
import ota.fleet as fl
ids = ["%012x" % (0x240ac4000000 + i * 7919) for i in range({n})]
out = {{"a": [fl.bucket(d, "2.3.1+1a2b3c4d") for d in ids],
       "b": [fl.bucket(d, "2.3.2+5e6f7a8b") for d in ids], "ids": ids}}
stages = {{"stages": [[100, {t0}], [500, {t0} + 86400], [2500, {t0} + 172800],
                      [10000, {t0} + 259200]]}}
ramp = {{"start": {t0}, "start_bp": 100, "duration": 259200}}
times = [1000, {t0} - 1, {t0}, {t0} + 86399, {t0} + 86400, {t0} + 200000, {t0} + 259200,
         {t0} + 10**6]
out["stages"] = [fl.basis_points(stages, t) for t in times]
out["ramp"] = [fl.basis_points(ramp, t) for t in times]
out["none"] = fl.basis_points(None, {t0})
out["times"] = times
bad = []
for plan in ({{"stages": [[100, 5], [50, 3]]}}, {{"stages": [[20000, 5]]}}, {{"stages": []}},
             {{"start": 1}}, {{"stages": [[True, 1]]}}, [1, 2]):
    try:
        fl.basis_points(plan, {t0})
        bad.append("accepted")
    except ValueError as e:
        bad.append(str(e))
out["bad"] = bad
sched = {{}}
for r in (0.0, 0.5, 0.999999):
    f = fl.Fleet("http://x/", device="d", interval=3600, backoff=60, cap=3600, rand=lambda: r)
    first = f.first_delay()
    nxt = f.next_delay(True)
    errs = [f.next_delay(False) for i in range(12)]
    after = f.next_delay(True)
    sched[str(r)] = [first, nxt, errs, after]
out["sched"] = sched
f = fl.Fleet("http://x/", device="d", interval=3600)
out["real"] = [f.next_delay(True) for i in range(500)]
out["real_first"] = [f.first_delay() for i in range(500)]
sleeps = []
class Flaky(fl.Fleet):
    n = 0
    def check(self):
        self.n += 1
        if self.n <= 3:
            raise OSError(113, "EHOSTUNREACH")
        return "wait"
f = Flaky("http://x/", device="d", interval=3600, backoff=60, rand=lambda: 0.5,
          sleep=sleeps.append)
out["run"] = [f.run(polls=5), sleeps]
from ota import http
out["join"] = [http.join("http://h:8/r/stable/manifest.json", "../files/a.bin"),
               http.join("http://h/stable/manifest.json", "../../a/./b.bin"),
               http.join("http://h/a/m.json", "b.bin")]
print("LOGIC " + json.dumps(out))
"""


@pytest.fixture(scope="module")
def logic(tmp_path_factory):
    """What the device computes, under each runtime (one process each)."""
    out = {}
    for rt in RUNTIMES:
        tmp = tmp_path_factory.mktemp(rt)
        sim = Sim(tmp / "board.bin", rt)
        simdev.create(sim.path, OLD)
        r = sim.run(LOGIC.format(n=4000, t0=T0))
        line = [ln for ln in r.stdout.splitlines() if ln.startswith("LOGIC ")]
        assert line, sim.out
        out[rt] = json.loads(line[0][6:])
    return out


def test_buckets_follow_the_contract_and_are_uniform(logic, rt):
    got = logic[rt]
    assert got["a"] == [bucket(d, "2.3.1+1a2b3c4d") for d in got["ids"]]
    assert got["b"] == [bucket(d, "2.3.2+5e6f7a8b") for d in got["ids"]]
    for name in ("a", "b"):
        deciles = [0] * 10
        for b in got[name]:
            deciles[b // 1000] += 1
        expect = len(got[name]) / 10
        chi2 = sum((c - expect) ** 2 / expect for c in deciles)
        assert chi2 < 27.9, (name, deciles)  # 9 degrees of freedom, p = 0.001


def test_different_releases_start_on_different_devices(logic, rt):
    got = logic[rt]
    first_a = {d for d, b in zip(got["ids"], got["a"], strict=True) if b < 100}  # the 1 % stage
    first_b = {d for d, b in zip(got["ids"], got["b"], strict=True) if b < 100}
    assert 20 <= len(first_a) <= 65 and 20 <= len(first_b) <= 65  # 40 expected of 4000
    assert len(first_a & first_b) <= 4  # 0.4 expected if independent


def test_plans_in_basis_points(logic, rt):
    got = logic[rt]
    # clock not set: the first stage; before the first stage: nobody; then each stage
    assert got["stages"] == [100, 0, 100, 100, 500, 2500, 10000, 10000]
    linear = [100 + 9900 * s // (3 * DAY) for s in (86399, 86400, 200000)]
    assert got["ramp"] == [100, 0, 100, *linear, 10000, 10000]
    assert got["none"] == 10000
    # the PC's view (mpota release show) agrees once the clock is set
    stages = {"stages": [[100, T0], [500, T0 + DAY], [2500, T0 + 2 * DAY], [10000, T0 + 3 * DAY]]}
    for t, bp in zip(got["times"][1:], got["stages"][1:], strict=True):
        assert release.percent_now(stages, t) == bp / 100
    for t, bp in zip(got["times"][1:], got["ramp"][1:], strict=True):
        assert release.percent_now({"start": T0, "start_bp": 100, "duration": 3 * DAY}, t) == (
            bp / 100
        )
    assert got["bad"][:2] == [
        "The manifest's rollout: a stage's start must be an integer >= 5, not 3",
        "The manifest's rollout: a stage's basis points must be an integer >= 0, not 20000",
    ]
    assert "accepted" not in got["bad"], got["bad"]


def test_schedule_jitter_and_backoff(logic, rt):
    s = logic[rt]["sched"]
    for r, (first, nxt, errs, after) in s.items():
        r = float(r)
        # a random point of 0.9 x interval, the shortest gap between two polls (so that no
        # device polls twice within it: a fleet's rate stays <= N / (0.9 x interval))
        assert first == pytest.approx(r * 0.9 * 3600)
        assert nxt == pytest.approx(3600 * (0.9 + 0.2 * r))  # +-10 %
        caps = [min(3600, 60 * 2**i) for i in range(12)]
        for d, cap in zip(errs, caps, strict=True):  # capped, jitter within [cap/2, cap)
            assert d == pytest.approx(cap / 2 + r * cap / 2)
        assert after == pytest.approx(nxt)  # a success ends the backoff
    assert s["0.0"][2][:4] == [30, 60, 120, 240] and max(s["0.999999"][2]) < 3600
    real = logic[rt]["real"]
    assert all(3240 <= d <= 3960 for d in real) and min(real) < 3300 and max(real) > 3900
    first = logic[rt]["real_first"]
    assert all(0 <= d < 3240 for d in first) and min(first) < 324 and max(first) > 2916
    assert max(first) < min(real)  # the first poll comes before any second one could
    result, sleeps = logic[rt]["run"]
    # first poll inside 0.9 x interval, three errors backing off, then the interval again
    assert result == "wait"
    assert sleeps == pytest.approx([1620, 45, 90, 180, 3600])


def test_releases_files_resolve_without_dot_segments(logic, rt):
    assert logic[rt]["join"] == [
        "http://h:8/r/files/a.bin",
        "http://h/a/b.bin",
        "http://h/a/b.bin",
    ]


def test_each_simulated_device_has_its_own_id(tmp_path, capsys):
    from mpota import cli

    ids = []
    for name, mac in (("a", None), ("b", None), ("c", "24:0a:c4:12:34:56")):
        argv = ["sim", "create", str(tmp_path / f"{name}.bin")] + (["--mac", mac] if mac else [])
        assert cli.main(argv) == 0
        sim = Sim(tmp_path / f"{name}.bin", "micropython")
        sim.run("import machine, binascii; print('ID', binascii.hexlify(machine.unique_id()))")
        ids.append(sim.out.split("ID ")[1].split()[0].strip("b'"))
    assert ids[0] != ids[1] and ids[0].startswith("240ac4") and ids[2] == "240ac4123456"
    with pytest.raises(SystemExit):
        cli.main(["sim", "create", str(tmp_path / "d.bin"), "--mac", "24:0a:c4:12:34"])
    assert "not a MAC address: '24:0a:c4:12:34'" in capsys.readouterr().err


# -- polls against nginx ----------------------------------------------------------------------


def test_a_poll_with_no_news_is_one_304_and_stages_open_with_time(rt, tmp_path, key, site):
    www, server = site
    board = Board(tmp_path, rt, key)
    b = bucket(board.id, release_id(NEW))
    publish(tmp_path, www, NEW, key, {"stages": [[b, T0], [10000, T0 + DAY]]})
    proxy = Proxy(server.port)
    try:
        r = board.poll(proxy.base, T0 + 10)
        assert r["id"] == board.id  # machine.unique_id()
        assert r["results"] == ["wait"] and r["calls"] == []  # bucket b is not below b
        assert len(proxy.conns) == 1 and server.requests[-1][4] == "200"
        r = board.poll(proxy.base, T0 + 20)
        assert r["results"] == ["wait"]
        assert len(proxy.conns) == 2 and server.requests[-1][4] == "304"
        up, down = proxy.conns[-1]
        print(f"a poll with no news: one request, {up} bytes up, {down} down, {up + down} in all")
        assert up + down <= 400, (up, down)
        # A day later the second stage lets everyone in: the same 304, then the image.
        r = board.poll(proxy.base, T0 + DAY)
        assert r["results"] == ["installed"], board.sim.out
        assert [q[4] for q in server.requests[-2:]] == ["304", "200"]  # manifest, image
        board.sim.power_on()
        after = board.poll(proxy.base, T0 + DAY + 3600)  # the new firmware: nothing to do
    finally:
        proxy.close()
    assert after["results"] == ["current"] and server.requests[-1][4] == "304"
    assert firmware_requests(server) == [f"/files/{hashlib.sha256(NEW).hexdigest()}.bin"]
    states = [c[0] for c in r["calls"]]
    assert states[0] == "checking" and states[-3:] == ["verifying", "installing", "rebooting"]
    downloads = [c[4] for c in r["calls"] if c[0] == "downloading"]
    assert downloads == sorted(downloads) and downloads[0] == 0 and len(downloads) >= 2
    assert {(c[1], c[2]) for c in r["calls"]} == {(release_id(NEW), build(NEW))}
    assert board.sim.running() == "ota_1"


def test_halted_releases_are_not_started_and_resume(rt, tmp_path, key, site):
    www, server = site
    board = Board(tmp_path, rt, key)
    publish(tmp_path, www, NEW, key, {"stages": [[10000, T0]]})
    st = release.DirStore(www)
    m = release.change(st, "stable", key, halted=True)
    r = board.poll(server.base, T0 + 10)
    assert r["results"] == ["halted"] and r["calls"] == []
    assert firmware_requests(server) == [] and board.sim.boot_slot() == "ota_0"
    assert release.change(st, "stable", key, halted=False)["sequence"] == m["sequence"] + 1
    r = board.poll(server.base, T0 + 20)
    assert r["results"] == ["installed"] and board.sim.boot_slot() == "ota_1"
    assert server.requests[-2][4] == "200"  # the resumed manifest is news: a new ETag


def test_channels_and_pins(rt, tmp_path, key, site):
    www, server = site
    board = Board(tmp_path, rt, key)
    publish(tmp_path, www, NEW, key, {"stages": [[10000, T0]]})
    publish(tmp_path, www, BETA, key, {"stages": [[0, T0]]}, channel="beta")  # nobody yet
    setup = 'ota.fleet.set_channel("beta"); ota.fleet.pin("9.9.9+deadbeef")'
    r = board.poll(server.base, T0 + 10, setup=setup)
    assert r["results"] == ["pinned"] and server.log[-1][0] == "/beta/manifest.json"
    r = board.poll(server.base, T0 + 20, setup="ota.fleet.pin(None)")
    assert r["results"] == ["wait"]  # beta's plan lets nobody in
    # A device pinned to the beta release takes it, whatever its stage.
    r = board.poll(server.base, T0 + 30, setup=f"ota.fleet.pin({release_id(BETA)!r})")
    assert r["results"] == ["installed"], board.sim.out
    assert board.sim.region("ota_1")[: len(BETA)] == BETA
    assert all(p.startswith(("/beta/", "/files/")) for p, _ in server.log)


def test_penalty_box(rt, tmp_path, key, site):
    www, server = site
    board = Board(tmp_path, rt, key)
    m = publish(tmp_path, www, NEW, key, {"stages": [[10000, T0]]})
    served = www / m["firmware"][3:]
    served.write_bytes(NEW[:-4096] + bytes(4096))  # other bytes at the end: another SHA-256
    r = board.poll(server.base, T0, polls=4)
    assert r["results"] == ["failure", "failure", "failure", "penalty"], board.sim.out
    failures = [c for c in r["calls"] if c[0] == "failure"]
    assert [c[3] for c in failures] == ["integrity"] * 3
    assert r["calls"][-1][0] == "failure"  # the fourth poll started nothing
    tried = len(firmware_requests(server))
    assert tried >= 3
    r = board.poll(server.base, T0 + DAY - 1)
    assert r["results"] == ["penalty"] and len(firmware_requests(server)) == tried
    served.write_bytes(NEW)  # fixed; 24 h after the last failure the device tries again
    r = board.poll(server.base, T0 + DAY)
    assert r["results"] == ["installed"] and board.sim.boot_slot() == "ota_1"


def test_a_manifest_signed_by_another_key_is_a_reported_failure(rt, tmp_path, key, site):
    www, server = site
    board = Board(tmp_path, rt, key)
    manifest.keygen(tmp_path / "other.pem", tmp_path / "other-pub.pem")
    publish(tmp_path, www, NEW, (tmp_path / "other.pem").read_bytes(), {"stages": [[10000, T0]]})
    r = board.poll(server.base, T0)
    assert r["results"] == ["failure"], board.sim.out
    assert [c[0] for c in r["calls"]] == ["checking", "downloading", "failure"]
    assert r["calls"][-1][3] == "signature"
    assert firmware_requests(server) == [] and board.sim.boot_slot() == "ota_0"
