"""The fleet controller (README "Fleets"): what the devices report over MQTT (python/ota/report.py:
"<prefix>/<device id>/ota", retained JSON), watched live, and the channel's manifest halted when
a stage fails too often.

  mpota fleet watch    live view (counts per state and stage, failure ratio, devices behind);
                       with --root and --key, halts the release automatically when a stage has
                       at least --min-executed devices done and --threshold percent of them failed
  mpota fleet halt | pause | resume   by hand
  mpota fleet table    each device's build, state, release and last report (the retained ones)
  mpota fleet report   an HTML page with a picture of the rollout over time, from watch's --log
  mpota fleet umqtt    micropython-lib's umqtt.simple for the simulated device (--path DIR)

Halting rewrites <root>/<channel>/manifest.json (root: a directory or an S3 bucket, as `mpota
release` publishes them) with "halted": true and "sequence" + 1, signed with the release key,
atomically (temp + rename, a later modification time, so that a server's ETag and Last-Modified
change); a device that has not installed the release does not start it.
Resume writes "halted": false, sequence + 1. "halt_reason" (signed too) says why: "paused",
"halted by hand" or the automatic rule's numbers.
"""

from __future__ import annotations

import html
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import manifest as mf

FINAL = ("success", "failure", "rolled_back")
FAILED = ("failure", "rolled_back")
STATES = (
    "checking",
    "downloading",
    "verifying",
    "installing",
    "rebooting",
    "success",
    "failure",
    "rolled_back",
)
MAX_PAYLOAD = 4096  # bytes of a report the controller reads; a longer one is not ours


# -- micropython-lib's umqtt.simple for the simulated device ----------------------------------

UMQTT = "micropython-umqtt.simple==1.3.4"
UMQTT_SHA256 = "b6a2520239e3992c63a7de9370ee9b3d9d27819a90359c521f1c0f7ccab8d12f"


def fetch_umqtt(dest: str | Path) -> Path:
    """umqtt/simple.py (micropython-lib's, as PyPI ships it: micropython-umqtt.simple) into
    `dest`, a directory for the simulated device's path (`mpota sim run --path DEST`). The
    package is an sdist for MicroPython's old upip, which pip downloads and checks (its SHA-256)
    but cannot install: pip leaves it unpacked (--no-clean) and the module is taken from there.
    Nothing is done when dest already has it."""
    dest = Path(dest)
    target = dest / "umqtt" / "simple.py"
    if target.exists():
        return dest
    with tempfile.TemporaryDirectory() as tmp:
        req = Path(tmp) / "requirements.txt"
        req.write_text(f"{UMQTT} --hash=sha256:{UMQTT_SHA256}\n")
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-clean"]
        cmd += ["--require-hashes", "-r", str(req), "-d", str(Path(tmp) / "dl")]
        try:
            r = subprocess.run(
                cmd, env=dict(os.environ, TMPDIR=tmp), capture_output=True, text=True, timeout=300
            )
            err = r.stderr
        except subprocess.TimeoutExpired:
            err = "timed out"
        found = sorted(Path(tmp).glob("pip-*/*/umqtt/simple.py"))
        if not found:
            last = [x for x in err.splitlines() if x.strip() and "WARNING" not in x]
            raise OSError(f"pip download {UMQTT} failed: {last[-1] if last else 'no umqtt'}")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(found[0], target)
    return dest


# -- the rollout, as the reports tell it -------------------------------------------------------


def stage_index(rollout: dict | None, t: float) -> int:
    """The stage of the plan in force at Unix time t: the index of the last of the manifest's
    "stages" started (0 before the first; a plan with a start and a duration is one stage)."""
    stages = (rollout or {}).get("stages")
    if not isinstance(stages, list):
        return 0
    i = 0
    for n, s in enumerate(stages):
        if isinstance(s, list) and len(s) == 2 and isinstance(s[1], int) and t >= s[1]:
            i = n
    return i


def parse_report(topic: str, payload: bytes, prefix: str) -> dict | None:
    """A report from the broker, checked: a JSON object whose "device" is the topic's, with a
    known state; None for anything else (it is not ours, or is broken)."""
    parts = topic.split("/")
    pre = prefix.strip("/").split("/") if prefix.strip("/") else []
    if len(parts) != len(pre) + 2 or parts[: len(pre)] != pre or parts[-1] != "ota":
        return None
    if len(payload) > MAX_PAYLOAD:
        return None
    try:
        r = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(r, dict) or r.get("device") != parts[-2]:
        return None
    if r.get("state") not in STATES + ("offline",):
        return None
    return r


def release_name(m: dict) -> str:
    """The manifest's release id, else its version, else its build id's first 8 digits."""
    for v in (m.get("release"), m.get("version"), str(m.get("build") or "")[:8]):
        if isinstance(v, str) and v:
            return v
    return "?"


class Rollout:
    """The devices' latest reports, and the current release's counts per stage. `m` is the
    channel's manifest (None: no release to judge; every device is listed still)."""

    def __init__(
        self,
        m: dict | None = None,
        min_executed: int = 5,
        threshold: float = 2.0,
        min_failures: int = 1,
    ):
        self.m = m
        self.min_executed = min_executed
        self.threshold = threshold
        self.min_failures = min_failures
        self.devices: dict[str, dict] = {}
        self.channel = "?"

    def _ours(self, r: dict) -> bool:
        if not self.m:
            return False
        rel, build = self.m.get("release"), self.m.get("build")
        return (rel is not None and r.get("release") == rel) or (
            build is not None and r.get("to") == build
        )

    def add(self, r: dict, now: float) -> None:
        d = self.devices.setdefault(
            r["device"],
            {
                "state": None,
                "build": None,
                "release": None,
                "seen": None,
                "online": True,
                "stage": None,
                "outcome": None,
                "reason": None,
                "seq": -1,
            },
        )
        d["seen"] = now
        if r["state"] == "offline":
            d["online"] = False
            if isinstance(r.get("from"), str) and not d["build"]:
                d["build"] = r["from"]
            return
        seq = r.get("seq")
        if seq == d["seq"] and r["state"] == d["state"] and d["online"]:
            return  # the same report again (QoS 1 is at least once; a retained copy)
        d["seq"] = seq if isinstance(seq, int) else d["seq"]
        d["online"] = True
        d["state"] = r["state"]
        d["reason"] = r.get("reason")
        if isinstance(r.get("from"), str):
            d["build"] = r["from"]
        if r.get("release"):
            d["release"] = r["release"]
        if self._ours(r):
            if d["stage"] is None:
                t = r["t"] if isinstance(r.get("t"), (int, float)) else now
                d["stage"] = stage_index(self.m.get("rollout"), t)
            d["outcome"] = r["state"]

    def set_manifest(self, m: dict | None) -> None:
        """The channel's manifest changed: another release, or a resume (halted before, not
        now), counts the devices anew (a resumed release is judged on what follows)."""
        new, old = m or {}, self.m or {}
        other = (new.get("release"), new.get("build")) != (old.get("release"), old.get("build"))
        if other or (old.get("halted") and not new.get("halted")):
            for d in self.devices.values():
                d["stage"] = d["outcome"] = None
        self.m = m

    def stages(self) -> dict[int, dict[str, int]]:
        """{stage: {state: devices}} of the current release."""
        out: dict[int, dict[str, int]] = {}
        for d in self.devices.values():
            if d["stage"] is not None:
                c = out.setdefault(d["stage"], {})
                c[d["outcome"]] = c.get(d["outcome"], 0) + 1
        return out

    def behind(self) -> int:
        """Devices known not to run the current release's build."""
        build = (self.m or {}).get("build")
        return sum(1 for d in self.devices.values() if build and d["build"] != build)

    def verdict(self) -> str | None:
        """Why the release must halt (a stage with at least min_executed devices done, at least
        min_failures of them failed, threshold percent or more), or None."""
        for i, c in sorted(self.stages().items()):
            done = sum(c.get(s, 0) for s in FINAL)
            bad = sum(c.get(s, 0) for s in FAILED)
            if done >= self.min_executed and bad >= self.min_failures and done:
                if 100 * bad / done >= self.threshold:
                    return (
                        f"stage {i + 1}: {bad} of {done} devices failed "
                        f"({100 * bad / done:.1f} % >= {self.threshold:g} %)"
                    )
        return None

    def view(self) -> list[str]:
        m = self.m or {}
        lines = []
        if m:
            halted = (m.get("halt_reason") or "halted") if m.get("halted") else "live"
            lines.append(
                f"{m.get('channel') or self.channel}: release {release_name(m)}, sequence "
                f"{m.get('sequence', '?')}, {halted}"
            )
        n = len(self.devices)
        online = sum(1 for d in self.devices.values() if d["online"])
        lines.append(f"devices: {n} ({online} online), behind: {self.behind()}")
        done = bad = 0
        for i, c in sorted(self.stages().items()):
            cells = ", ".join(f"{s} {c[s]}" for s in STATES if c.get(s))
            lines.append(f"  stage {i + 1}: {cells}")
            done += sum(c.get(s, 0) for s in FINAL)
            bad += sum(c.get(s, 0) for s in FAILED)
        ratio = f"{100 * bad / done:.1f} %" if done else "-"
        lines.append(f"done: {done}, failed: {bad}, failure ratio: {ratio}")
        return lines


# -- the channel's manifest --------------------------------------------------------------------


def _store(root: str | Path, endpoint_url: str | None = None):
    """Where the release is: a directory, or an S3-compatible bucket (s3://BUCKET[/PREFIX]),
    as `mpota release` publishes it."""
    from . import release

    return release.store(str(root), endpoint_url)


def _raw(st, channel: str) -> bytes | None:
    from . import release

    return st.read(f"{release.check_channel(channel)}/manifest.json")


def _parse(raw: bytes | None, where: str) -> dict:
    if raw is None:
        raise ValueError(f"{where} does not exist")
    try:
        m = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{where} is not JSON: {e}") from None
    if not isinstance(m, dict):
        raise ValueError(f"{where} is not a JSON object")
    return m


def read_manifest(root: str | Path, channel: str, endpoint_url: str | None = None) -> dict:
    st = _store(root, endpoint_url)
    return _parse(_raw(st, channel), f"{st.where}/{channel}/manifest.json")


def _public(key) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def set_halted(
    root: str | Path,
    channel: str,
    key_pem: bytes,
    halted: bool,
    reason: str | None = None,
    endpoint_url: str | None = None,
) -> dict:
    """Rewrite the channel's manifest halted (with `reason`) or not, sequence + 1, signed with
    key_pem, which must be the key that signed it. Unchanged (and returned as it is) when it is
    already so. A directory's manifest is replaced atomically, with a later modification time
    (so that a web server's ETag and Last-Modified change), a bucket's in one PUT (mpota
    release's stores)."""
    from . import release

    st = _store(root, endpoint_url)
    where = f"{st.where}/{channel}/manifest.json"
    m = _parse(_raw(st, channel), where)
    key = mf.load_private_key(key_pem, "the release key")
    if not mf.verify(m, _public(key)):
        raise ValueError(f"{where} is not signed by this key: not changed")
    seq = m.get("sequence")
    if isinstance(seq, bool) or not isinstance(seq, int):
        raise ValueError(f'{where} has no integer "sequence": not changed')
    if m.get("halted", False) is halted and (not halted or m.get("halt_reason") == reason):
        return m
    m = dict(m)
    m["halted"] = halted
    m.pop("halt_reason", None)
    if halted and reason:
        m["halt_reason"] = reason
    m["sequence"] = seq + 1
    return release.write_manifest(st, channel, m, key_pem)


# -- the broker --------------------------------------------------------------------------------


def broker_address(s: str) -> tuple[str, int]:
    host, _, port = s.rpartition(":") if ":" in s else (s, "", "1883")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"a broker is HOST or HOST:PORT, not {s!r}")
    return host, int(port)


def _client(broker: str, prefix: str, on_report, name: str):
    """A paho-mqtt client subscribed (again after each reconnect) to every device's report."""
    import paho.mqtt.client as mqtt

    host, port = broker_address(broker)
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"mpota-{name}-{os.getpid()}")
    topic = f"{prefix.strip('/')}/+/ota" if prefix.strip("/") else "+/ota"

    def on_connect(client, userdata, flags, rc, props=None):
        client.subscribe(topic, qos=1)

    def on_message(client, userdata, msg):
        r = parse_report(msg.topic, msg.payload, prefix)
        if r is not None:
            on_report(r, msg.retain)

    c.on_connect = on_connect
    c.on_message = on_message
    try:
        c.connect(host, port, keepalive=30)
    except OSError as e:
        raise OSError(f"cannot connect to the broker {host}:{port}: {e.strerror or e}") from None
    return c


def _utc(t: float | None) -> str:
    if t is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t))


def _summary(m: dict | None) -> dict | None:
    if not m:
        return None
    keys = ("channel", "release", "build", "sequence", "halted", "halt_reason", "rollout")
    return {k: m.get(k) for k in keys}


def watch(
    broker: str,
    prefix: str = "ota",
    root: str | Path | None = None,
    channel: str = "stable",
    key_pem: bytes | None = None,
    min_executed: int = 5,
    threshold: float = 2.0,
    min_failures: int = 1,
    log: str | Path | None = None,
    duration: float | None = None,
    out=None,
    every: float = 1.0,
    stop=None,
    endpoint_url: str | None = None,
) -> Rollout:
    """Follow the reports; print the view every `every` seconds when it changed; with root and
    key_pem, halt the channel's release when verdict() says so. Ends after `duration` seconds
    (None: never) or when stop() is true. `log` (a file) gets every report, manifest change
    and halt as JSON lines, for report_html()."""
    out = out or sys.stdout
    ro = Rollout(None, min_executed, threshold, min_failures)
    ro.channel = channel
    logf = open(log, "a", buffering=1) if log else None  # noqa: SIM115
    st = _store(root, endpoint_url) if root is not None else None
    last_raw = [b"-"]

    def note(**kw):
        if logf:
            logf.write(json.dumps(dict(rx=round(time.time(), 3), **kw)) + "\n")

    def load_manifest():
        if st is None:
            return
        raw = _raw(st, channel)
        if raw == last_raw[0]:
            return
        last_raw[0] = raw
        try:
            m = _parse(raw, f"{st.where}/{channel}/manifest.json") if raw is not None else None
        except ValueError as e:  # not ours to judge: the view says so, nothing is halted
            print(f"mpota fleet watch: {e}", file=out)
            m = None
        ro.set_manifest(m)
        note(manifest=_summary(m))

    def on_report(r, retained):
        ro.add(r, time.time())
        note(r=r, retained=retained)

    load_manifest()
    c = _client(broker, prefix, on_report, "watch")
    end = None if duration is None else time.monotonic() + duration
    shown = None
    next_view = 0.0
    try:
        while (end is None or time.monotonic() < end) and not (stop and stop()):
            if c.loop(timeout=0.1) != 0:
                time.sleep(0.5)
                try:
                    c.reconnect()
                except OSError:
                    pass
            if time.monotonic() < next_view:
                continue
            next_view = time.monotonic() + every
            load_manifest()
            m = ro.m
            if key_pem and m and not m.get("halted"):
                why = ro.verdict()
                if why:
                    ro.set_manifest(set_halted(root, channel, key_pem, True, why, endpoint_url))
                    last_raw[0] = _raw(st, channel)
                    note(halt=why, manifest=_summary(ro.m))
                    print(f"HALTED {channel} release {release_name(m)}: {why}", file=out)
            v = ro.view()
            if v != shown:
                shown = v
                print(f"[{_utc(time.time())}] " + "\n".join(v), file=out, flush=True)
    finally:
        c.disconnect()
        if logf:
            logf.close()
    return ro


def retained(broker: str, prefix: str = "ota", wait: float = 1.0, limit: float = 10.0) -> dict:
    """{device: its retained report}: what the broker holds, read until no more came for `wait`
    seconds (at most `limit` seconds)."""
    got: dict[str, dict] = {}
    last = [time.monotonic()]

    def on_report(r, is_retained):
        got[r["device"]] = r
        last[0] = time.monotonic()

    c = _client(broker, prefix, on_report, "table")
    start = time.monotonic()
    try:
        while time.monotonic() - last[0] < wait and time.monotonic() - start < limit:
            c.loop(timeout=0.1)
    finally:
        c.disconnect()
    return got


def table(reports: dict) -> list[str]:
    rows = [("device", "build", "state", "release", "reason", "last report (UTC)")]
    for dev in sorted(reports):
        r = reports[dev]
        build = r.get("from") if isinstance(r.get("from"), str) else None
        t = r.get("t") if isinstance(r.get("t"), (int, float)) else None
        rows.append(
            (
                dev,
                build[:8] if build else "-",
                r["state"],
                str(r.get("release") or "-"),
                str(r.get("reason") or "-"),
                _utc(t),
            )
        )
    w = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w[i]) for i, c in enumerate(row)).rstrip() for row in rows]


# -- a picture of the rollout ------------------------------------------------------------------

SERIES = (  # (name, colour, what counts) over the current release's devices
    ("succeeded", "#2a9d3f", ("success",)),
    ("failed or rolled back", "#d1342f", FAILED),
    (
        "in progress",
        "#e69f00",
        ("checking", "downloading", "verifying", "installing", "rebooting"),
    ),
)


def replay(lines) -> tuple[list[tuple[float, dict[str, int]]], list[tuple[float, str]], Rollout]:
    """watch's log (JSON lines) replayed: [(time, {series: devices})], [(time, halt reason)]
    and the rollout at its end."""
    ro = Rollout()
    points: list[tuple[float, dict[str, int]]] = []
    halts: list[tuple[float, str]] = []
    recs = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            raise ValueError(f"line {n} of the log is not JSON") from None
        if isinstance(rec, dict) and isinstance(rec.get("rx"), (int, float)):
            recs.append(rec)
    recs.sort(key=lambda r: r["rx"])
    for rec in recs:
        if "manifest" in rec:
            ro.set_manifest(rec["manifest"] if isinstance(rec["manifest"], dict) else None)
        if isinstance(rec.get("halt"), str):
            halts.append((rec["rx"], rec["halt"]))
        r = rec.get("r")
        if isinstance(r, dict) and r.get("state") in STATES + ("offline",) and r.get("device"):
            ro.add(r, rec["rx"])
        counts = {name: 0 for name, _, _ in SERIES}
        for d in ro.devices.values():
            for name, _, states in SERIES:
                if d["outcome"] in states:
                    counts[name] += 1
        points.append((rec["rx"], counts))
    return points, halts, ro


def report_html(lines, title: str = "Rollout") -> str:
    """A static HTML page: the view at the end, and an SVG chart of devices per outcome over
    time, with the halts marked."""
    points, halts, ro = replay(lines)
    W, H, L, B, T, R = 760, 320, 50, 40, 20, 20
    esc = html.escape
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" role="img">']
    if points:
        t0, t1 = points[0][0], max(points[-1][0], points[0][0] + 1)
        step = -(-max([1] + [max(c.values()) for _, c in points]) // 4)  # whole devices
        top = 4 * step

        def x(t):
            return L + (W - L - R) * (t - t0) / (t1 - t0)

        def y(n):
            return H - B - (H - B - T) * n / top

        svg.append(f'<line x1="{L}" y1="{H - B}" x2="{W - R}" y2="{H - B}" stroke="#555"/>')
        svg.append(f'<line x1="{L}" y1="{T}" x2="{L}" y2="{H - B}" stroke="#555"/>')
        for k in range(5):
            svg.append(
                f'<text x="{L - 6}" y="{y(step * k) + 4:.1f}" font-size="11" '
                f'text-anchor="end">{step * k}</text>'
            )
        for k in range(5):
            t = t0 + (t1 - t0) * k / 4
            svg.append(
                f'<text x="{x(t):.1f}" y="{H - B + 16}" font-size="11" text-anchor="middle">'
                f"+{t - t0:.0f} s</text>"
            )
        for name, colour, _ in SERIES:
            pts = []
            prev = 0
            for t, c in points:  # steps: a count holds until the next report
                pts.append(f"{x(t):.1f},{y(prev):.1f}")
                pts.append(f"{x(t):.1f},{y(c[name]):.1f}")
                prev = c[name]
            pts.append(f"{x(t1):.1f},{y(prev):.1f}")
            svg.append(
                f'<polyline fill="none" stroke="{colour}" stroke-width="2" '
                f'points="{" ".join(pts)}"><title>{esc(name)}</title></polyline>'
            )
        for t, why in halts:
            svg.append(
                f'<line x1="{x(t):.1f}" y1="{T}" x2="{x(t):.1f}" y2="{H - B}" stroke="#000" '
                f'stroke-dasharray="4 3"><title>halted: {esc(why)}</title></line>'
            )
            svg.append(f'<text x="{x(t) + 4:.1f}" y="{T + 10}" font-size="11">halted</text>')
        for i, (name, colour, _) in enumerate(SERIES):
            svg.append(
                f'<text x="{L + 10 + 170 * i}" y="{H - 6}" font-size="12" fill="{colour}">'
                f"&#9632; {esc(name)}</text>"
            )
    else:
        svg.append(f'<text x="{L}" y="{H / 2}">no reports in the log</text>')
    svg.append("</svg>")
    view = "\n".join(ro.view())
    halted = "".join(f"<li>{esc(_utc(t))} UTC: halted, {esc(w)}</li>" for t, w in halts)
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
        f'<title>{esc(title)}</title></head>\n<body style="font-family: sans-serif">\n'
        f"<h1>{esc(title)}</h1>\n{''.join(svg)}\n<pre>{esc(view)}</pre>\n"
        f"<ul>{halted}</ul>\n</body></html>\n"
    )


# -- mpota fleet ... ---------------------------------------------------------------------------


def _percent(s: str) -> float:
    v = float(s.rstrip("%"))
    if not 0 <= v <= 100:
        raise ValueError(f"a percentage is 0 to 100, not {s!r}")
    return v


def _count(s: str) -> int:
    if not s.isdigit():
        raise ValueError(f"a count is a whole number >= 0, not {s!r}")
    return int(s)


def _seconds(s: str) -> float:
    v = float(s)
    if not v > 0:
        raise ValueError(f"a time in seconds is > 0, not {s!r}")
    return v


def _key(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise OSError(f"cannot read the key {path}: {e.strerror}") from None


def arguments(p, arg) -> None:
    """The `mpota fleet` subcommands on parser p; `arg` makes argparse types (cli._arg)."""
    sub = p.add_subparsers(dest="fleet", required=True, parser_class=type(p))

    def broker(s):
        s.add_argument(
            "--broker",
            default="localhost:1883",
            help="MQTT broker, HOST[:PORT] (default localhost:1883)",
        )
        s.add_argument(
            "--prefix",
            default="ota",
            help="topic prefix: reports on PREFIX/DEVICE/ota (default ota)",
        )

    def channel(s, key_required):
        s.add_argument("--channel", default="stable", help="the channel (default stable)")
        s.add_argument(
            "--endpoint-url",
            help="with an s3:// release: the S3-compatible service's URL (default: AWS)",
        )
        s.add_argument(
            "--key",
            required=key_required,
            help="the release's private key (PEM), which "
            "signed the manifest" + ("" if key_required else "; with --root: halt automatically"),
        )

    s = sub.add_parser(
        "watch",
        help="live view of the reports; halts a failing release",
        description="Follow the devices' reports: counts per state and stage of the channel's "
        "current release, failure ratio, devices behind it. With --root and --key, halt the "
        "release (a signed manifest, halted, sequence + 1) as soon as one stage has "
        "--min-executed devices done (success, failure, rolled back), --min-failures of them "
        "failed, and failures reach --threshold percent of them.",
    )
    broker(s)
    s.add_argument(
        "--root",
        help="the release: a directory or s3://BUCKET[/PREFIX] (<root>/<channel>/manifest.json)",
    )
    channel(s, False)
    s.add_argument(
        "--min-executed",
        type=arg(_count),
        default=5,
        help="devices of a stage done before it is judged (default 5)",
    )
    s.add_argument(
        "--min-failures",
        type=arg(_count),
        default=1,
        help="failed devices of a stage needed to halt (default 1)",
    )
    s.add_argument(
        "--threshold",
        type=arg(_percent),
        default=2.0,
        help="failure percentage of a stage's done devices that halts (default 2)",
    )
    s.add_argument("--log", help="append every report and halt to this file (for `report`)")
    s.add_argument(
        "--duration", type=arg(_seconds), help="stop after this many seconds (default: never)"
    )
    s.set_defaults(fleet_fn=_cmd_watch)

    for name, text in (
        ("halt", "halt the channel's release now"),
        ("pause", "pause the channel's release (a halt, shown as paused)"),
        ("resume", "let the channel's release go on (halted: false)"),
    ):
        s = sub.add_parser(
            name,
            help=text,
            description=f"{text[0].upper()}{text[1:]}: rewrite ROOT/CHANNEL/manifest.json "
            "signed with --key, sequence + 1.",
        )
        s.add_argument(
            "root",
            help="the release: a directory or s3://BUCKET[/PREFIX] (<root>/<channel>/"
            "manifest.json)",
        )
        channel(s, True)
        if name == "halt":
            s.add_argument(
                "--reason",
                default="halted by hand",
                help="why (in the manifest; default: halted by hand)",
            )
        s.set_defaults(fleet_fn=_cmd_halt)

    s = sub.add_parser(
        "table",
        help="each device's build, state and last report",
        description="The devices' retained reports on the broker: device, running build, "
        "state, release, reason, time of the report (the device's clock).",
    )
    broker(s)
    s.add_argument(
        "--wait",
        type=arg(_seconds),
        default=1.0,
        help="seconds without a new report before the table is complete (default 1)",
    )
    s.set_defaults(fleet_fn=_cmd_table)

    s = sub.add_parser(
        "report",
        help="an HTML page with a picture of the rollout over time",
        description="Replay the log of `mpota fleet watch --log` into a static HTML page: "
        "devices succeeded, failed and in progress over time (an SVG chart), halts marked.",
    )
    s.add_argument("log", help="the log written by mpota fleet watch --log")
    s.add_argument("-o", "--output", required=True, help="the HTML file to write")
    s.add_argument("--title", default="Rollout", help="the page's title (default Rollout)")
    s.set_defaults(fleet_fn=_cmd_report)

    s = sub.add_parser(
        "umqtt",
        help="micropython-lib's umqtt.simple for the simulated device",
        description="Put umqtt/simple.py (PyPI's micropython-umqtt.simple, fetched with pip, "
        "its SHA-256 checked) into DIR, for mpota sim run --path DIR. On a board: mpremote mip "
        "install umqtt.simple.",
    )
    s.add_argument("dir", help="the directory to put umqtt/simple.py in")
    s.set_defaults(fleet_fn=_cmd_umqtt)


def run(a) -> int:
    return a.fleet_fn(a)


def _cmd_watch(a) -> int:
    if a.root is None and a.key:
        raise ValueError("--key halts a release in --root: give --root too")
    key = _key(a.key) if a.key else None
    if key:
        mf.load_private_key(key, a.key)
    watch(
        a.broker,
        a.prefix,
        a.root,
        a.channel,
        key,
        a.min_executed,
        a.threshold,
        a.min_failures,
        a.log,
        a.duration,
        endpoint_url=a.endpoint_url,
    )
    return 0


def _cmd_halt(a) -> int:
    key = _key(a.key)
    reason = "paused" if a.fleet == "pause" else getattr(a, "reason", None)
    m = set_halted(a.root, a.channel, key, a.fleet != "resume", reason, a.endpoint_url)
    state = (m.get("halt_reason") or "halted") if m.get("halted") else "live"
    print(f"{a.channel}: release {release_name(m)}, sequence {m['sequence']}, {state}")
    return 0


def _cmd_table(a) -> int:
    print("\n".join(table(retained(a.broker, a.prefix, a.wait))))
    return 0


def _cmd_report(a) -> int:
    try:
        lines = Path(a.log).read_text().splitlines()
    except OSError as e:
        raise OSError(f"cannot read the log {a.log}: {e.strerror}") from None
    Path(a.output).write_text(report_html(lines, a.title))
    points, halts, ro = replay(lines)
    print(f"{a.output}: {len(ro.devices)} devices, {len(points)} records, {len(halts)} halt(s)")
    return 0


def _cmd_umqtt(a) -> int:
    print(fetch_umqtt(a.dir) / "umqtt" / "simple.py")
    return 0
