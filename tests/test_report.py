"""Reports from the simulated device (python/ota/report.py) under MicroPython and CPython, through
micropython-lib's umqtt.simple (PyPI: micropython-umqtt.simple) to a real mosquitto: retained
per device, the last will on an abrupt end, the PUBACK wait bounded against a broker that never
answers, nothing lost across a broker restart, "rolled_back" sent by the old firmware after a
real rollback and "success" by the new one, and the HTTP POST transport."""

from __future__ import annotations

import http.server
import json
import socket
import threading

import netserver
import pytest
from conftest import ROOT, Sim, free_port, image
from mpota import fleet, inspect, simdev
from mqttbroker import Mosquitto, Subscriber
from test_network import NEW, update, write_manifest
from test_policy import roll_back

pytestmark = pytest.mark.parametrize("runtime", ["micropython", "cpython"])

DEV = "0a0b0c0d0e01"
OLD_BUILD = inspect.identity(image("v1.22.0", 1_400_000))["build"]  # the sim fixture's firmware
NEW_BUILD = inspect.identity(NEW)["build"]
REL = "1.23.0+" + NEW_BUILD[:8]
FIELDS = {"device", "state", "release", "from", "to", "reason", "progress", "seq", "t"}


@pytest.fixture(scope="session")
def umqtt() -> str:
    return str(fleet.fetch_umqtt(ROOT / "build" / "umqtt"))


@pytest.fixture
def broker(tmp_path):
    b = Mosquitto(tmp_path / "broker")
    yield b
    b.stop()


@pytest.fixture
def sub(broker):
    s = Subscriber(broker.port)
    yield s
    s.close()


def device(sim, umqtt, port, code, device=DEV, timeout=3, ok=True):
    """Run `code` on the device with `r`, an ota.report.MQTT reporter; its RESULT lines."""
    head = (
        "import ota.report\n"
        f"r = ota.report.MQTT('127.0.0.1', {port}, device={device!r}, timeout={timeout})\n"
    )
    res = sim.run(head + code, ok=ok, extra_path=[umqtt], timeout=60)
    return [x[len("RESULT ") :] for x in res.stdout.splitlines() if x.startswith("RESULT ")]


def kept(sim) -> list:
    return json.loads((sim.path.parent / "ota_report.json").read_text())["q"]


def test_a_retained_report_per_device(make_sim, tmp_path, umqtt, broker, runtime):
    a = make_sim()
    b_path = tmp_path / "b" / "flash.bin"
    b_path.parent.mkdir()
    simdev.create(b_path, image("v1.21.0", 300_032))
    b = Sim(b_path, runtime)
    code = (
        "print('RESULT', r.send('checking', release=%r, to_build=%r))\n"
        "print('RESULT', r.send('downloading', release=%r, to_build=%r, progress=50))\n"
        "print('RESULT', r.send('failure', release=%r, to_build=%r, reason='integrity'))\n"
        "r.close()\n"
    ) % ((REL, NEW_BUILD) * 3)
    assert device(a, umqtt, broker.port, code) == ["True"] * 3
    code_b = "print('RESULT', r.send('success'))\nr.close()\n"
    assert device(b, umqtt, broker.port, code_b, device="0a0b0c0d0e02") == ["True"]
    assert kept(a) == [] and kept(b) == []
    # A controller that comes later finds each device's last report, kept by the broker.
    s = Subscriber(broker.port)
    try:
        ta, pa, ra = s.wait_for(lambda m: m[0] == f"ota/{DEV}/ota")
        tb, pb, rb = s.wait_for(lambda m: m[0] == "ota/0a0b0c0d0e02/ota")
    finally:
        s.close()
    assert ra and rb
    assert set(pa) == FIELDS and isinstance(pa["t"], int) and pa["t"] > 1735689600
    assert dict(pa, t=None) == {
        "device": DEV,
        "state": "failure",
        "release": REL,
        "from": OLD_BUILD,
        "to": NEW_BUILD,
        "reason": "integrity",
        "progress": None,
        "seq": 3,
        "t": None,
    }
    b_build = inspect.identity(image("v1.21.0", 300_032))["build"]
    assert (pb["state"], pb["from"], pb["seq"], pb["release"]) == ("success", b_build, 1, None)
    assert "offline" not in broker.log()  # a clean close: no last will


def test_the_last_will_on_an_abrupt_end(sim, umqtt, broker, sub, runtime):
    # A reset in the middle of a download: the connection ends without a DISCONNECT.
    code = (
        "print('RESULT', r.send('downloading', release=%r, to_build=%r, progress=25))\n"
        "import machine\nmachine.reset()\n"
    ) % (REL, NEW_BUILD)
    assert device(sim, umqtt, broker.port, code, ok=False) == ["True"]
    will = sub.wait_for(lambda m: m[1].get("state") == "offline")
    assert will == (
        f"ota/{DEV}/ota",
        {"device": DEV, "state": "offline", "from": OLD_BUILD},
        False,
    )
    states = [m[1]["state"] for m in sub.messages]
    assert states == ["downloading", "offline"]
    later = Subscriber(broker.port)  # and the broker keeps it as the device's state
    try:
        assert later.wait_for(lambda m: True)[1:] == (will[1], True)
    finally:
        later.close()


class SilentBroker:
    """The failure being tested: a TCP server that takes the CONNECT and then answers nothing
    ("connect"), a CONNACK and nothing more ("connack"), or a CONNACK and the first byte of a
    PUBACK ("half": umqtt.simple has turned its socket back to blocking by then)."""

    def __init__(self, mode):
        self.mode = mode
        self.s = socket.create_server(("127.0.0.1", 0))
        self.port = self.s.getsockname()[1]
        self.conns = []
        self.got = bytearray()
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            try:
                c, _ = self.s.accept()
            except OSError:
                return
            self.conns.append(c)
            if self.packet(c)[0] != 0x10:  # CONNECT
                continue
            if self.mode == "connect":
                continue
            c.sendall(b"\x20\x02\x00\x00")
            if self.mode == "half" and self.packet(c)[0] == 0x33:  # PUBLISH, QoS 1, retained
                c.sendall(b"\x40")

    def packet(self, c) -> bytes:
        """One whole MQTT packet from c (fixed header, remaining length, the rest)."""

        def take(n):
            out = b""
            while len(out) < n:
                b = c.recv(n - len(out))
                if not b:
                    raise EOFError
                out += b
            return out

        head = take(1)
        n = shift = 0
        while True:
            b = take(1)
            head += b
            n |= (b[0] & 0x7F) << shift
            shift += 7
            if not b[0] & 0x80:
                break
        pkt = head + take(n)
        self.got += pkt
        return pkt

    def close(self):
        self.s.close()
        for c in self.conns:
            c.close()


@pytest.mark.parametrize("mode", ["connect", "connack", "half"])
def test_a_broker_that_never_answers_does_not_hold_the_device(sim, umqtt, mode, runtime):
    fake = SilentBroker(mode)
    try:
        code = "print('RESULT', r.send('checking', release=%r, to_build=%r))\n" % (REL, NEW_BUILD)
        # simdev.run's timeout (60 s) fails the test if send() waits for ever.
        assert device(sim, umqtt, fake.port, code, timeout=1) == ["False"]
    finally:
        fake.close()
    assert b"MQTT" in fake.got  # it did connect
    q = kept(sim)  # and the report is kept for later
    assert [(p["state"], p["seq"], p["to"]) for p in q] == [("checking", 1, NEW_BUILD)]
    assert "kept for later" in sim.out


def test_reports_are_kept_and_sent_again_across_a_broker_restart(sim, umqtt, broker, sub, runtime):
    send = "print('RESULT', r.send(%r, release=%r, to_build=%r, reason=%r, progress=%r))\n"
    code = send % ("checking", REL, NEW_BUILD, None, None) + "r.close()\n"
    assert device(sim, umqtt, broker.port, code) == ["True"]
    sub.wait_for(lambda m: m[1]["seq"] == 1)
    broker.stop()
    code = send % ("downloading", REL, NEW_BUILD, None, 25)
    code += send % ("failure", REL, NEW_BUILD, "connection_lost", None)
    assert device(sim, umqtt, broker.port, code, timeout=1) == ["False", "False"]
    assert [(p["state"], p["seq"]) for p in kept(sim)] == [("downloading", 2), ("failure", 3)]
    # The second send() did not wait for the broker again (retry: 30 s): queued only.
    assert sim.out.count("kept for later") == 1, sim.out
    broker.start()  # same port; its retained reports come back from its persistence file
    sub.wait_for(lambda m: m[1]["seq"] == 1 and m[2])  # retained, after the restart
    # The next boot sends what was kept, in order.
    code = "print('RESULT', ota.report.at_boot(r))\nr.close()\n"
    assert device(sim, umqtt, broker.port, code) == ["None"]
    sub.wait_for(lambda m: m[1]["seq"] == 3)
    assert kept(sim) == []
    seqs = [m[1]["seq"] for m in sub.messages]
    assert sorted(set(seqs)) == [1, 2, 3] and seqs[-2:] == [2, 3], seqs
    last = sub.messages[-1][1]
    assert (last["state"], last["reason"], last["release"]) == ("failure", "connection_lost", REL)


@pytest.fixture
def site(site):
    www, _, base = site
    (www / "micropython.bin").write_bytes(NEW)
    write_manifest(www)
    return base + "/manifest.json"


def install(sim, umqtt, port, url, tmp_path):
    """The old firmware reports and installs NEW (not booted yet)."""
    code = (
        "print('RESULT', r.send('installing', release=%r, to_build=%r, progress=100))\n"
        "r.close()\n" % (REL, NEW_BUILD)
    )
    assert device(sim, umqtt, port, code) == ["True"]
    result, out = update(sim, url, cwd=tmp_path)
    assert result == "ok", out


@pytest.mark.parametrize("noticed_first", [False, True], ids=["at_boot", "status_first"])
def test_rolled_back_is_reported_by_the_old_firmware(
    sim, umqtt, broker, sub, site, tmp_path, noticed_first
):
    if noticed_first:  # the app calls at_boot() at every boot, so before the update too
        assert device(sim, umqtt, broker.port, "print('RESULT', ota.report.at_boot(r))\n") == [
            "None"
        ]
    install(sim, umqtt, broker.port, site, tmp_path)
    roll_back(sim)  # the new firmware never confirmed itself: ota_0 again
    if noticed_first:  # ota.status() saw the rollback first (and cleared the trial)
        sim.run("from ota.status import slots\nslots()")
        assert json.loads((tmp_path / "ota_history.json").read_text())["trial"] is None
    code = "print('RESULT', ota.report.at_boot(r))\nr.close()\n"
    assert device(sim, umqtt, broker.port, code) == ["rolled_back"]
    m = sub.wait_for(lambda m: m[1]["state"] == "rolled_back")[1]
    assert (m["from"], m["to"], m["release"], m["reason"]) == (
        OLD_BUILD,
        NEW_BUILD,
        REL,
        "rolled_back",
    )
    # Once per trial: the next boot has nothing new to say.
    assert device(sim, umqtt, broker.port, code) == ["None"]
    assert [x[1]["state"] for x in sub.messages] == ["installing", "rolled_back"]


def test_success_is_reported_once_the_new_firmware_confirmed(
    sim, umqtt, broker, sub, site, tmp_path
):
    install(sim, umqtt, broker.port, site, tmp_path)
    sim.power_on()
    assert sim.running() == "ota_1"
    code = "print('RESULT', ota.report.at_boot(r))\nr.close()\n"  # on trial: nothing yet
    assert device(sim, umqtt, broker.port, code) == ["None"]
    code = (
        "import ota.rollback\nota.rollback.cancel()\nprint('RESULT', ota.report.at_boot(r))\n"
        + code
    )
    assert device(sim, umqtt, broker.port, code) == ["success", "None"]
    m = sub.wait_for(lambda m: m[1]["state"] == "success")[1]
    assert (m["from"], m["to"], m["release"], m["reason"]) == (NEW_BUILD, NEW_BUILD, REL, None)
    assert [x[1]["state"] for x in sub.messages] == ["installing", "success"]


class _Collect(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        tok = (self.headers.get("X-Token"), self.headers.get("Host"))
        self.server.got.append((self.path, tok, json.loads(body)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *a):
        pass


def test_http_post_transport(sim, tmp_path, runtime):
    port = free_port()
    head = (
        "import ota.report\n"
        "r = ota.report.HTTP('http://127.0.0.1:%d/ota/report', headers={'X-Token': 'k'}, "
        "device=%r, timeout=2)\n" % (port, DEV)
    )
    send = "print('RESULT', r.send(%r, release=%r, to_build=%r))\n"
    # No server yet: kept.
    out = sim.run(head + send % ("checking", REL, NEW_BUILD)).stdout
    assert "RESULT False" in out and len(kept(sim)) == 1
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", port), _Collect)
    srv.got = []
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        out = sim.run(head + send % ("downloading", REL, NEW_BUILD)).stdout
    finally:
        srv.shutdown()
        srv.server_close()
    assert "RESULT True" in out and kept(sim) == []
    assert [(p, tok, b["state"], b["seq"], b["from"]) for p, tok, b in srv.got] == [
        ("/ota/report", ("k", f"127.0.0.1:{port}"), "checking", 1, OLD_BUILD),
        ("/ota/report", ("k", f"127.0.0.1:{port}"), "downloading", 2, OLD_BUILD),
    ]
    # A server that takes the request and never answers: bounded, kept.
    fake = SilentBroker("connect")
    try:
        head2 = head.replace(str(port), str(fake.port))
        out = sim.run(head2 + send % ("success", REL, NEW_BUILD), timeout=60).stdout
    finally:
        fake.close()
    assert "RESULT False" in out and [p["state"] for p in kept(sim)] == ["success"]


def test_a_fleet_update_reported_from_checking_to_success(sim, umqtt, broker, sub, tmp_path):
    # ota.fleet (a release that `mpota release` published, everyone's turn) with this reporter:
    # every step on the broker, then "success" from the new firmware once it confirmed.
    from espsim import device as espdevice
    from mpota import manifest, release

    manifest.keygen(tmp_path / "k.pem", tmp_path / "ota_pubkey.pem")
    (tmp_path / "new.bin").write_bytes(NEW)
    www = tmp_path / "www"
    rollout = {"stages": [[10000, 1700000000]]}
    m = release.publish(
        tmp_path / "new.bin",
        release.DirStore(www),
        "stable",
        (tmp_path / "k.pem").read_bytes(),
        rollout,
    )
    dev = "%012x" % espdevice.read_state(str(sim.path))["mac"]
    server = netserver.start(www)
    try:
        code = (
            "import ota.fleet, ota.report\n"
            "r = ota.report.MQTT('127.0.0.1', %d, timeout=3)\n"
            "print('RESULT', ota.fleet.Fleet('http://127.0.0.1:%d/', reporter=r, reboot=False)"
            ".check())\nr.close()\n" % (broker.port, server.server_address[1])
        )
        r = sim.run(code, extra_path=[umqtt], timeout=120)
    finally:
        server.shutdown()
        server.server_close()
    assert "RESULT installed" in r.stdout, sim.out
    sub.wait_for(lambda x: x[1]["state"] == "rebooting")
    got = [x[1] for x in sub.messages]
    assert [(x["state"], x["progress"]) for x in got] == [
        ("checking", None),
        ("downloading", 0),
        ("downloading", 25),
        ("downloading", 50),
        ("downloading", 75),
        ("verifying", 100),
        ("installing", 100),
        ("rebooting", None),
    ]
    assert {(x["device"], x["release"], x["from"], x["to"]) for x in got} == {
        (dev, m["release"], OLD_BUILD, NEW_BUILD)
    }
    assert [x["seq"] for x in got] == list(range(1, 9))
    sim.power_on()
    assert sim.running() == "ota_1"
    code = (
        "import ota.report, ota.rollback\nr = ota.report.MQTT('127.0.0.1', %d)\n"
        "ota.rollback.cancel()\nprint('RESULT', ota.report.at_boot(r))\nr.close()\n" % broker.port
    )
    assert "RESULT success" in sim.run(code, extra_path=[umqtt]).stdout, sim.out
    ok = sub.wait_for(lambda x: x[1]["state"] == "success")[1]
    assert (ok["device"], ok["release"], ok["from"], ok["to"], ok["seq"]) == (
        dev,
        m["release"],
        NEW_BUILD,
        NEW_BUILD,
        9,
    )
