"""The fleet controller (mpota fleet, host/mpota/fleet.py) against a real mosquitto: the automatic
halt on a stream of reports (a signed manifest, halted, sequence + 1), no halt below the rule's
numbers, pause / resume / halt by hand, the table of devices, the report page."""

from __future__ import annotations

import json
import threading
import time

import paho.mqtt.client as mqtt
import pytest
from mpota import cli, fleet, manifest
from mqttbroker import Mosquitto
from test_release import s3  # noqa: F401 (a fixture: moto's S3 server)

BUILD = "ab" * 32
OLD = "cd" * 32
REL = "2.0.0+abababab"


@pytest.fixture
def broker(tmp_path):
    b = Mosquitto(tmp_path / "broker")
    yield b
    b.stop()


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    manifest.keygen(d / "k.pem", d / "k.pub")
    manifest.keygen(d / "other.pem", d / "other.pub")
    return d


@pytest.fixture
def root(tmp_path, keys):
    """A release directory: stable/manifest.json signed, stage 1 (1 %) open since an hour."""
    r = tmp_path / "www"
    (r / "stable").mkdir(parents=True)
    now = int(time.time())
    m = {
        "firmware": "../files/x.bin",
        "sha": "00" * 32,
        "length": 4096,
        "build": BUILD,
        "channel": "stable",
        "release": REL,
        "sequence": 7,
        "rollout": {"stages": [[100, now - 3600], [500, now + 86400], [10000, now + 172800]]},
        "halted": False,
    }
    m = manifest.sign(m, (keys / "k.pem").read_bytes())
    (r / "stable" / "manifest.json").write_text(json.dumps(m))
    return r


def publish(port, reports, rel=REL, build=BUILD):
    """The devices' reports, retained, QoS 1, as ota.report sends them."""
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-devices")
    c.connect("127.0.0.1", port)
    c.loop_start()
    try:
        for seq, (dev, st, extra) in enumerate(reports, 1):
            r = {
                "device": dev,
                "state": st,
                "release": rel,
                "from": OLD,
                "to": build,
                "reason": None,
                "progress": None,
                "seq": seq,
                "t": int(time.time()),
            }
            r.update(extra)
            c.publish(f"ota/{dev}/ota", json.dumps(r), qos=1, retain=True).wait_for_publish(5)
    finally:
        c.loop_stop()
        c.disconnect()


def outcomes(n, failures, build=BUILD):
    """n devices: checking, downloading, then failure (the first `failures`; one of them a
    rollback reported by the old firmware) or success (from the new build)."""
    out = []
    for i in range(n):
        dev = "%012x" % (0xA00 + i)
        out += [(dev, "checking", {}), (dev, "downloading", {"progress": 50})]
        if i < failures:
            reason = "rolled_back" if i == 0 else "integrity"
            out.append((dev, "rolled_back" if i == 0 else "failure", {"reason": reason}))
        else:
            out.append((dev, "success", {"from": build}))
    return out


def watch_until(broker, root, keys, stop_when, limit=15, **kw):
    """fleet.watch in a thread until stop_when() (or `limit` seconds); its printed view."""
    lines = []

    class Out:
        def write(self, s):
            lines.append(s)

        def flush(self):
            pass

    done = threading.Event()
    t = threading.Thread(
        target=lambda: fleet.watch(
            broker.address,
            root=root,
            key_pem=(keys / "k.pem").read_bytes(),
            out=Out(),
            stop=lambda: done.is_set(),
            every=0.2,
            **kw,
        ),
        daemon=True,
    )
    t.start()
    end = time.monotonic() + limit
    while time.monotonic() < end and not stop_when():
        time.sleep(0.1)
    done.set()
    t.join(10)
    return "".join(lines)


def current(root):
    return json.loads((root / "stable" / "manifest.json").read_text())


def test_automatic_halt(broker, root, keys, tmp_path):
    before = current(root)
    mtime = (root / "stable" / "manifest.json").stat().st_mtime
    publish(broker.port, outcomes(10, 3))
    log = tmp_path / "fleet.jsonl"
    out = watch_until(
        broker,
        root,
        keys,
        lambda: current(root)["halted"],
        min_executed=5,
        threshold=2,
        log=log,
    )
    m = current(root)
    assert m["halted"] is True and m["sequence"] == before["sequence"] + 1, out
    assert manifest.verify(m, (keys / "k.pub").read_bytes())
    assert not manifest.verify(m, (keys / "other.pub").read_bytes())
    assert {
        k: v for k, v in m.items() if k not in ("halted", "sequence", "signature", "halt_reason")
    } == {k: v for k, v in before.items() if k not in ("halted", "sequence", "signature")}
    # Retained reports come all at once: the rule saw 10 done, 3 failed.
    assert m["halt_reason"] == "stage 1: 3 of 10 devices failed (30.0 % >= 2 %)", out
    assert f"HALTED stable release {REL}: stage 1: 3 of 10" in out
    assert (root / "stable" / "manifest.json").stat().st_mtime >= mtime + 1  # a new ETag
    assert "stage 1: success 7, failure 2, rolled_back 1" in out
    assert "done: 10, failed: 3, failure ratio: 30.0 %" in out
    assert "devices: 10 (10 online), behind: 3" in out
    # The report page draws it, the halt marked.
    page = tmp_path / "r.html"
    assert cli.main(["fleet", "report", str(log), "-o", str(page)]) == 0
    h = page.read_text()
    assert h.count("<polyline") == 3 and "halted: stage 1: 3 of 10 devices failed" in h
    assert "done: 10, failed: 3" in h


@pytest.mark.parametrize(("n", "failures", "min_executed"), [(10, 0, 5), (4, 2, 5), (100, 1, 5)])
def test_no_halt_below_the_rule(broker, root, keys, n, failures, min_executed):
    # All good; too few done to judge; 1 % failed (below 2 %).
    publish(broker.port, outcomes(n, failures))
    out = watch_until(
        broker,
        root,
        keys,
        lambda: False,
        limit=2,
        min_executed=min_executed,
        threshold=2,
    )
    m = current(root)
    assert m["halted"] is False and m["sequence"] == 7, out
    assert f"done: {n}, failed: {failures}" in out


def test_pause_resume_and_halt_by_hand(root, keys, capsys):
    k = str(keys / "k.pem")
    assert cli.main(["fleet", "pause", str(root), "--key", k]) == 0
    m = current(root)
    assert (m["halted"], m["halt_reason"], m["sequence"]) == (True, "paused", 8)
    assert manifest.verify(m, (keys / "k.pub").read_bytes())
    assert cli.main(["fleet", "resume", str(root), "--key", k]) == 0
    m = current(root)
    assert (m["halted"], "halt_reason" in m, m["sequence"]) == (False, False, 9)
    assert manifest.verify(m, (keys / "k.pub").read_bytes())
    assert cli.main(["fleet", "resume", str(root), "--key", k]) == 0  # already live: unchanged
    assert current(root)["sequence"] == 9
    assert cli.main(["fleet", "halt", str(root), "--key", k, "--reason", "bad batch"]) == 0
    m = current(root)
    assert (m["halted"], m["halt_reason"], m["sequence"]) == (True, "bad batch", 10)
    out = capsys.readouterr().out.splitlines()
    assert out == [
        f"stable: release {REL}, sequence 8, paused",
        f"stable: release {REL}, sequence 9, live",
        f"stable: release {REL}, sequence 9, live",
        f"stable: release {REL}, sequence 10, bad batch",
    ]


def test_a_manifest_signed_by_another_key_is_not_touched(root, keys, capsys):
    before = (root / "stable" / "manifest.json").read_bytes()
    assert cli.main(["fleet", "halt", str(root), "--key", str(keys / "other.pem")]) == 1
    err = capsys.readouterr().err
    assert "manifest.json is not signed by this key: not changed" in err
    assert (root / "stable" / "manifest.json").read_bytes() == before
    assert cli.main(["fleet", "pause", str(root), "--channel", "beta", "--key", "x"]) == 1
    assert "cannot read the key x" in capsys.readouterr().err


def test_table(broker, capsys):
    publish(
        broker.port,
        [
            ("00000000000b", "downloading", {"progress": 50}),
            ("00000000000a", "failure", {"reason": "no_space", "t": 1767225600}),
        ],
    )
    assert cli.main(["fleet", "table", "--broker", broker.address, "--wait", "0.5"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == [
        "device",
        "build",
        "state",
        "release",
        "reason",
        "last",
        "report",
        "(UTC)",
    ]
    assert lines[1].split() == [
        "00000000000a",
        "cdcdcdcd",
        "failure",
        REL,
        "no_space",
        "2026-01-01",
        "00:00:00",
    ]
    assert lines[2].split()[:5] == ["00000000000b", "cdcdcdcd", "downloading", REL, "-"]
    assert len(lines) == 3


def test_reports_that_are_not_ours_are_ignored():
    ok = json.dumps({"device": "aa", "state": "success"}).encode()
    assert fleet.parse_report("ota/aa/ota", ok, "ota") == {"device": "aa", "state": "success"}
    assert fleet.parse_report("ota/bb/ota", ok, "ota") is None  # another device's topic
    assert fleet.parse_report("x/aa/ota", ok, "ota") is None
    assert fleet.parse_report("ota/aa/ota", b"{", "ota") is None
    assert fleet.parse_report("ota/aa/ota", b"[1]", "ota") is None
    bad = json.dumps({"device": "aa", "state": "exploded"}).encode()
    assert fleet.parse_report("ota/aa/ota", bad, "ota") is None
    big = json.dumps({"device": "aa", "state": "success", "x": "y" * 5000}).encode()
    assert fleet.parse_report("ota/aa/ota", big, "ota") is None
    assert fleet.parse_report("site/a/aa/ota", ok, "site/a") is not None


def test_a_resumed_release_is_judged_on_what_follows():
    m = {"release": REL, "build": BUILD, "halted": False, "rollout": None}
    ro = fleet.Rollout(dict(m), min_executed=2, threshold=50)
    now = time.time()
    for i, st in enumerate(["failure", "failure", "success"]):
        ro.add({"device": f"d{i}", "state": st, "release": REL, "to": BUILD, "seq": 1}, now)
    assert ro.verdict() == "stage 1: 2 of 3 devices failed (66.7 % >= 50 %)"
    ro.add({"device": "d0", "state": "failure", "release": REL, "to": BUILD, "seq": 1}, now)
    assert ro.stages() == {0: {"failure": 2, "success": 1}}  # the same report again
    ro.set_manifest(dict(m, halted=True, halt_reason="paused"))
    assert ro.verdict() is not None  # halted: the same counts
    ro.set_manifest(dict(m, halted=False))  # resumed: counted anew
    assert ro.verdict() is None and ro.stages() == {}
    ro.add({"device": "d3", "state": "success", "release": REL, "to": BUILD, "seq": 1}, now)
    ro.add({"device": "d0", "state": "success", "release": REL, "to": BUILD, "seq": 2}, now)
    assert ro.verdict() is None and ro.stages() == {0: {"success": 2}}
    # A report on another release does not count for this one.
    ro.add({"device": "d9", "state": "failure", "release": "other", "to": "ee" * 32}, now)
    assert ro.stages() == {0: {"success": 2}} and len(ro.devices) == 5


def test_a_release_in_an_s3_bucket(s3, broker, keys, tmp_path):  # noqa: F811 (the fixture)
    # mpota release publishes to an S3-compatible bucket (moto's server); the controller halts
    # it there, by hand and on the rule.
    import boto3
    from conftest import image

    (tmp_path / "new.bin").write_bytes(image("v1.23.0", 200_016))
    k = str(keys / "k.pem")
    where = "s3://fleet/releases"
    assert cli.main(["release", "publish", str(tmp_path / "new.bin"), where, "--key", k,
                     "--endpoint-url", s3, "--stages", "100@0"]) == 0  # fmt: skip

    def bucket():
        o = boto3.client("s3", endpoint_url=s3).get_object(
            Bucket="fleet", Key="releases/stable/manifest.json"
        )
        return json.loads(o["Body"].read())

    m0 = bucket()
    assert cli.main(["fleet", "pause", where, "--key", k, "--endpoint-url", s3]) == 0
    assert cli.main(["fleet", "resume", where, "--key", k, "--endpoint-url", s3]) == 0
    m = bucket()
    assert (m["halted"], m["sequence"]) == (False, m0["sequence"] + 2)
    assert manifest.verify(m, (keys / "k.pub").read_bytes())
    publish(broker.port, outcomes(5, 1, m["build"]), m["release"], m["build"])
    out = watch_until(
        broker, where, keys, lambda: bucket()["halted"], min_executed=5, endpoint_url=s3
    )
    m = bucket()
    assert (m["halted"], m["sequence"]) == (True, m0["sequence"] + 3), out
    assert m["halt_reason"] == "stage 1: 1 of 5 devices failed (20.0 % >= 2 %)"
    assert manifest.verify(m, (keys / "k.pub").read_bytes())


def test_the_controller_reads_the_states_the_device_sends():
    """The report's vocabulary is written twice, on both sides of the wire (the device package
    is not a dependency of the host tools): ota.report's and the controller's must agree."""
    import ast
    from pathlib import Path

    src = Path(__file__).resolve().parent.parent / "python" / "ota" / "report.py"
    consts = {}
    for node in ast.parse(src.read_text()).body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            try:
                consts[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                pass
    assert consts["STATES"] == fleet.STATES
    assert consts["_FINAL"] == fleet.FINAL
    assert set(fleet.FAILED) < set(fleet.FINAL) and "success" not in fleet.FAILED
