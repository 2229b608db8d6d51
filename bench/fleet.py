"""A model fleet on simulated time: N devices (10,000) run the device's own code, python/ota/
fleet.py under CPython (Fleet.check(): the decision, bucket(), basis_points(), the penalty box;
Fleet.first_delay() / next_delay(): the first poll, the +-10 % jitter, the backoff), and report
through ota.report's own payload (ota.report._Reporter.report()) to the controller's own rule
(host/mpota/fleet.py: parse_report(), Rollout.add(), Rollout.verdict(), as `mpota fleet watch`
calls them), which halts the release. A discrete-event loop, no sleeping: the device code gets
the simulated clock (now=), a seeded random source (rand=), and the model's transport:

- the static host behind a cache (a CDN, nginx's proxy_cache): a manifest written at time w
  (a release, a halt) reaches a device at its first poll at or after w + TTL; a poll whose
  manifest did not change is one request answered 304 (its bytes: measured against nginx, by
  measure_no_news() or the real run below);
- the install (download, verify, write) takes INSTALL s, a boot BOOT s; a release that "fails
  on boot" on a device rolls back (two boots) and the old firmware reports rolled_back, as
  ota.report.at_boot() does; the device never takes that build again (ota.history);
- a report reaches the controller LATENCY s after it is sent; the controller's halt (a signed
  manifest, halted, sequence + 1) is written when its verdict() says so.

Scenarios: a good release; a bad one failing on boot on 100, 30, 10, 3 % of the devices; the
whole fleet powered on at once (ota.fleet's first poll, and two variants for comparison); time
to halt against poll interval and cache TTL.

--real N adds a real fleet (bench/fleetreal.py): N full simulated ESP32s under MicroPython, the
stock ota package polling nginx and reporting to mosquitto, `mpota fleet watch` halting; a good
release and one failing on boot on every device, on compressed wall-clock time.

--chart PAGE writes a static HTML page with inline SVG (no dependencies): the rollouts over
time with the stage boundaries and the halts, the mass power-on's requests per second, and the
real fleet's runs.

  python bench/fleet.py [--devices 10000] [--real 20] [--chart build/bench/fleet.html]
"""

from __future__ import annotations

import argparse
import heapq
import html
import json
import math
import random
import sys
import types
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for _p in (ROOT / "python", ROOT / "host", ROOT / "bench"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))
try:
    import esp32  # noqa: F401  (MicroPython, or the simulator's module)
except ImportError:  # CPython: ota/__init__.py imports esp32.Partition; the model touches no flash
    _esp32 = types.ModuleType("esp32")
    _esp32.Partition = type("Partition", (), {})
    sys.modules["esp32"] = _esp32

import tables  # noqa: E402
from mpota import fleet as controller  # noqa: E402
from ota import fleet as device  # noqa: E402
from ota import history, report, update  # noqa: E402

HOUR = 3600
DAY = 86400
WINDOWS = (1, 60, 300)  # s: the request rate's windows
T0 = 1_800_000_000  # the release is published (2027-01-15): a set clock
# A poll with no news: one request answered 304, bytes both ways (TCP/IP headers not counted).
# The bench measures it against nginx (measure_no_news(), or the real run); this is the figure of
# tests/test_fleet.py::test_a_poll_with_no_news_is_one_304_and_stages_open_with_time (a
# counting proxy), used where nginx is not installed (said in the table).
NO_NEWS = (171, 193)
OLD = "1" * 64  # build ids (hex SHA-256) of the running and the new firmware
NEW = "2" * 64


def plan(t0: int = T0, bps=(100, 500, 2500, 10000), every: int = DAY) -> dict:
    return {"stages": [[b, t0 + i * every] for i, b in enumerate(bps)]}


class Params:
    def __init__(self, **kw):
        self.n = 10_000  # devices
        self.interval = HOUR  # poll interval (+-10 %, device.Fleet)
        self.ttl = 60  # the cache's TTL in front of the manifest (s)
        self.latency = 2.0  # a report's way to the controller (s)
        self.install = 120  # download + verify + write (s)
        self.boot = 30  # one boot (s)
        self.fail = 0.0  # share of the devices on which the release fails on boot
        self.rollout = plan()
        self.min_executed, self.min_failures, self.threshold = 5, 5, 2.0
        self.seed = 1
        self.horizon = 5 * DAY  # simulated time after T0 at most
        self.release = True  # publish a new release at T0 (False: no news, mass power-on)
        self.power_on = False  # every device boots at T0 (else: running, polls in phase)
        self.first = None  # model variants of the first poll: "boot" (at boot), "interval"
        # (anywhere in the interval: ota.fleet before it kept it within 0.9 x interval)
        self.window = 60  # s: the bins of the request rate
        for k, v in kw.items():
            if not hasattr(self, k):
                raise TypeError(f"unknown parameter {k}")
            setattr(self, k, v)


class Dev:
    __slots__ = ("i", "id", "s", "build", "rolled", "bad", "seq", "etag", "fleet", "exposed")

    def __init__(self, i: int, rng: random.Random, fail: float):
        self.i = i
        self.id = "%012x" % (0x246F28000000 + i)  # a MAC per device, as `mpota sim create --mac`
        self.s = {"channel": "stable", "pin": None, "failures": {}}
        self.build = OLD
        self.rolled: set[str] = set()
        self.bad = rng.random() < fail
        self.seq = 0
        self.etag = None
        self.exposed = None


class ModelReporter(report._Reporter):
    """ota.report's reporter with the model as its transport: the payload is ota.report's own
    (report()), JSON on "ota/<device>/ota", to the controller after the model's latency."""

    def __init__(self, model, dev: Dev):
        self.model, self.dev, self.device = model, dev, dev.id

    @property
    def build(self):
        return self.dev.build

    def send(self, st, release=None, to_build=None, reason=None, progress=None):
        if st not in report.STATES or (reason is not None and reason not in report.REASONS):
            raise ValueError(f"ota.report: bad report {st!r} {reason!r}")
        self.dev.seq += 1
        p = self.report(st, release, to_build, reason, progress, self.dev.seq)
        self.model.send(f"ota/{self.device}/ota", json.dumps(p).encode())
        return True


class ModelFleet(device.Fleet):
    def fetch(self, url):
        return self.model.fetch(self.dev)


class Model:
    def __init__(self, p: Params):
        self.p = p
        self.rng = random.Random(p.seed)
        self.t = float(T0 - 2 * p.interval)
        self.start = T0 if p.power_on else self.t  # the devices poll from here
        self.q: list = []
        self.k = 0
        old = {"channel": "stable", "release": "1.0.0+11111111", "build": OLD, "sequence": 1}
        self.new = {
            "channel": "stable",
            "release": "1.1.0+22222222",
            "build": NEW,
            "sequence": 2,
            "rollout": p.rollout,
            "halted": False,
        }
        self.origin = [(float("-inf"), old)]  # (written at, manifest)
        self.ro = controller.Rollout(old, p.min_executed, p.threshold, p.min_failures)
        self.halted_at = self.why = None
        self.requests = self.no_news = 0
        self.bins: dict[int, int] = {}
        self.secs: dict[int, int] = {}
        self.reports = 0
        self.exposed_t: list[float] = []  # when each device started the new release
        self.updated_t: list[float] = []  # when each device ran it, confirmed
        self.failed_t: list[float] = []  # when each failure reached the controller
        self.cur: Dev | None = None
        self.devs = [Dev(i, self.rng, p.fail) for i in range(p.n)]
        for d in self.devs:
            d.fleet = ModelFleet(
                "http://cdn.example.com/releases/",
                reporter=ModelReporter(self, d),
                interval=p.interval,
                now=self.now,
                rand=self.rng.random,
                sleep=None,
                reboot=False,
                device=d.id,
            )
            d.fleet.model, d.fleet.dev = self, d
            if p.first == "boot":
                d.fleet.first_delay = lambda: 0.0
            elif p.first == "interval":
                d.fleet.first_delay = lambda f=d.fleet: f.rand() * f.interval
            # powered on at T0, or running already: the phases spread out before the release
            self.at(self.start + d.fleet.first_delay(), self.poll, d)
        if p.release:
            self.at(T0, self.publish, self.new)

    def now(self) -> float:
        return self.t

    def at(self, t: float, fn, arg) -> None:
        self.k += 1
        heapq.heappush(self.q, (t, self.k, fn, arg))

    # -- the static host behind its cache
    def publish(self, m: dict) -> None:
        self.origin.append((self.t, m))
        self.ro.set_manifest(m)

    def fetch(self, dev: Dev):
        self.requests += 1
        b = int(self.t // self.p.window)
        self.bins[b] = self.bins.get(b, 0) + 1
        s = int(self.t)
        self.secs[s] = self.secs.get(s, 0) + 1
        i = len(self.origin) - 1
        while i and self.origin[i][0] + self.p.ttl > self.t:
            i -= 1
        if dev.etag == i:
            self.no_news += 1
            return self.origin[i][1], False
        dev.etag = i
        return self.origin[i][1], True

    # -- a device
    def poll(self, dev: Dev) -> None:
        self.cur = dev
        d = dev.fleet.check()
        if d != "installed":  # installed: it resets, boot() schedules the next poll
            self.at(self.t + dev.fleet.next_delay(d != "failure"), self.poll, dev)

    def from_json(self, url, manifest=None, progress=None, **kw):  # ota.update.from_json
        dev = self.cur
        if dev.exposed is None and manifest.get("build") == NEW:
            dev.exposed = self.t
            self.exposed_t.append(self.t)
        for q in range(1, 5):
            progress(q * 250_000, 1_000_000)
        boots = 2 if dev.bad else 1  # a failing boot, then the old firmware's
        self.at(self.t + self.p.install + boots * self.p.boot, self.boot, (dev, manifest))

    def boot(self, arg) -> None:
        dev, m = arg
        if dev.bad:  # failed on boot: the bootloader went back; the old firmware tells
            dev.rolled.add(m["build"])
            dev.fleet.reporter.send("rolled_back", m["release"], m["build"], "rolled_back")
        else:
            dev.build = m["build"]
            self.updated_t.append(self.t)
            dev.fleet.reporter.send("success", m["release"], m["build"])
        self.at(self.t + dev.fleet.first_delay(), self.poll, dev)

    # -- reports, the controller
    def send(self, topic: str, payload: bytes) -> None:
        self.at(self.t + self.p.latency, self.receive, (topic, payload))

    def receive(self, arg) -> None:
        r = controller.parse_report(arg[0], arg[1], "ota")
        if r is None:
            raise AssertionError(f"the controller refused a report: {arg}")
        self.reports += 1
        self.ro.add(r, self.t)
        if r["state"] in controller.FAILED:
            self.failed_t.append(self.t)
            if self.halted_at is None and not self.ro.m.get("halted"):
                why = self.ro.verdict()
                if why:  # `mpota fleet watch` writes the halted manifest, sequence + 1
                    self.halted_at, self.why = self.t, why
                    m = dict(self.ro.m, halted=True, sequence=self.ro.m["sequence"] + 1)
                    self.publish(m)

    @contextmanager
    def device_code(self):
        """The device's module functions that touch its files or flash, on the model's
        device of the moment (restored after)."""
        saved = [
            (device, "settings", lambda: self.cur.s),
            (device, "_save", lambda s: None),  # s is the device's own dict, changed in place
            (device, "_running_build", lambda: self.cur.build),
            (history, "rolled_back", lambda b: bool(b) and b in self.cur.rolled),
            (update, "from_json", self.from_json),
            (report, "_now", self.now),
        ]
        old = [(mod, name, getattr(mod, name)) for mod, name, _ in saved]
        for mod, name, fn in saved:
            setattr(mod, name, fn)
        try:
            yield
        finally:
            for mod, name, fn in old:
                setattr(mod, name, fn)

    def run(self) -> Model:
        p = self.p
        end = T0 + p.horizon
        with self.device_code():
            while self.q:
                t, _, fn, arg = heapq.heappop(self.q)
                if t > end:
                    break
                self.t = t
                fn(arg)
                if self.halted_at is not None and t > self.quiet():
                    break  # the halt reached every device: nobody starts the release any more
                if p.release and not p.fail and len(self.updated_t) == p.n:
                    break
        self.end = self.t
        return self

    def quiet(self) -> float:
        return self.halted_at + self.p.ttl + 1.1 * self.p.interval + 2 * self.p.install

    # -- figures
    def exposed(self) -> float:
        return len(self.exposed_t) / self.p.n

    def time_to_halt(self) -> float | None:
        """From the first device's install of the release to the halted manifest written."""
        return None if self.halted_at is None else self.halted_at - self.exposed_t[0]

    def peak(self, window: int) -> float:
        """Peak request rate (per s) over the busiest `window` s (from the 1 s counts)."""
        s = self.secs
        lo, hi = min(s), max(s)
        run = sum(s.get(t, 0) for t in range(lo, lo + window))
        best = run
        for t in range(lo + window, hi + 1):
            run += s.get(t, 0) - s.get(t - window, 0)
            best = max(best, run)
        return best / window

    def per_day(self) -> float:
        return self.requests / self.p.n / ((self.end - self.start) / DAY)


# -- scenarios and tables ----------------------------------------------------------------------


def _h(s: float | None) -> str:
    if s is None:
        return "-"
    return f"{s / HOUR:.1f} h" if s >= HOUR else f"{s / 60:.1f} min"


def _pct(x: float) -> str:
    return f"{100 * x:.2f} %"


def scenarios(n: int, fails=(1.0, 0.3, 0.1, 0.03), seed: int = 1) -> dict[str, Model]:
    out = {"good": Model(Params(n=n, seed=seed)).run()}
    for f in fails:
        out[f"bad {100 * f:g} %"] = Model(Params(n=n, fail=f, seed=seed)).run()
    return out


def power_on(n: int, seed: int = 1, first: str | None = None, hours: int = 6) -> Model:
    """The whole fleet boots at T0, no release; `first`: a model variant (Params.first)."""
    p = Params(n=n, seed=seed, release=False, power_on=True, horizon=hours * HOUR)
    p.first = first
    return Model(p).run()


def grid(n: int, intervals=(900, HOUR, 4 * HOUR), ttls=(0, 300, HOUR), seed: int = 1):
    return {
        (iv, ttl): Model(Params(n=n, fail=1.0, interval=iv, ttl=ttl, seed=seed)).run()
        for iv in intervals
        for ttl in ttls
    }


def report_tables(
    runs: dict[str, Model],
    on: Model,
    variants: dict[str, Model],
    g: dict,
    no_news: tuple[int, int, str] = (*NO_NEWS, "by tests/test_fleet.py"),
) -> str:
    """The model's tables. variants: {name: mass power-on run of a model variant};
    no_news: (bytes up, bytes down, where they were measured)."""
    p = runs["good"].p
    stages = " / ".join(f"{b / 100:g} %" for b, _ in p.rollout["stages"])
    lines = [
        f"Model fleet of {p.n} devices running ota.fleet's own code on simulated time: poll "
        f"every {_h(p.interval)} +-10 %, stages {stages} every 24 h, halt (the controller's "
        f"Rollout.verdict()) at >= {p.min_failures} failures and >= {p.threshold:g} % of a "
        f"stage's done devices; cache TTL {p.ttl} s, report latency {p.latency:g} s, install "
        f"{p.install} s, boot {p.boot} s.",
        "",
        "| release | exposed before the halt | time to halt | halted by | "
        "time to 100 % | updated | stranded | manifest requests / device / day |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, m in runs.items():
        good = not m.p.fail
        to100 = max(m.updated_t) - T0 if good and len(m.updated_t) == m.p.n else None
        lines.append(
            f"| {name} | {_pct(m.exposed()) if not good else '-'} "
            f"| {_h(m.time_to_halt()) if m.halted_at else ('no halt' if good else 'NOT HALTED')} "
            f"| {m.why or '-'} | {_h(to100)} | {len(m.updated_t)} "
            f"| {m.p.n - len(m.updated_t) if good else 0} | {m.per_day():.1f} |"
        )
    up, down, where = no_news
    lines += [
        "",
        f"A poll with no news: one request answered 304, {up} bytes up + {down} down = "
        f"{up + down} bytes (measured {where}; TCP/IP headers not counted); at "
        f"{on.per_day():.1f} polls a day: {on.per_day() * (up + down) / 1000:.1f} kB per device "
        "per day.",
        "",
        f"Mass power-on: all {on.p.n} devices boot at once (no release), manifest requests "
        f"per second over the busiest window of {on.p.horizon // HOUR} h:",
        "",
        "| first poll | "
        + " | ".join(f"peak /s over {_h(w)}" for w in WINDOWS[1:])
        + " | peak in one second | expected peak | target 1.5 x N / interval |",
        "|---" * (len(WINDOWS) + 3) + "|",
    ]
    n, iv = on.p.n, on.p.interval
    target = 1.5 * n / iv
    expect = {
        None: f"{n / (0.9 * iv):.2f}",
        "interval": f"{1.5 * n / iv:.2f}",
        "boot": f"{n} in 1 s",
    }
    for name, m in (("within 0.9 x interval (ota.fleet)", on), *variants.items()):
        cells = " | ".join(f"{m.peak(w):.2f}" for w in WINDOWS[1:])
        lines.append(
            f"| {name} | {cells} | {m.peak(1):.0f} | {expect[m.p.first]} | {target:.2f} |"
        )
    lines += [
        "",
        "Expected peak, noise aside: ota.fleet polls first within 0.9 x interval, the shortest "
        "gap between two polls, so no device polls twice within it and the rate is at most "
        "N / (0.9 x interval) at any time (1.11 x N / interval; reached during the first polls). "
        "A first poll anywhere in the interval (the model variant) peaks at exactly "
        "1.5 x N / interval at the end of the interval, where the second polls begin, and the "
        "busiest minute's noise goes beyond it. The target holds for windows of 1 minute and "
        f"more; over one second, {n} devices are a handful of requests, Poisson noise.",
    ]
    ivs = sorted({k[0] for k in g})
    ttls = sorted({k[1] for k in g})
    lines += [
        "",
        "Release failing on boot on 100 % of the devices: time from the first install to the "
        "halt written (the devices see it a TTL later), and the share of the fleet exposed, by "
        "poll interval and cache TTL:",
        "",
        "| poll interval | " + " | ".join(f"TTL {_h(t) if t else '0'}" for t in ttls) + " |",
        "|---" * (len(ttls) + 1) + "|",
    ]
    for iv in ivs:
        cells = [f"{_h(g[iv, t].time_to_halt())} ({_pct(g[iv, t].exposed())})" for t in ttls]
        lines.append(f"| {_h(iv)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# -- the chart: a static HTML page with inline SVG (no dependencies) --------------------------

COLOURS = ("#1f77b4", "#d62728", "#ff7f0e", "#9467bd", "#2ca02c", "#8c564b")


def _esc(s) -> str:
    return html.escape(str(s), quote=True)


def svg_plot(
    title: str,
    xlabel: str,
    ylabel: str,
    xmax: float,
    ymax: float,
    series=(),
    marks=(),
    hlines=(),
    ident: str = "",
) -> str:
    """One chart: series [(name, colour, [(x, y)], step)], marks (vertical lines) [(x, label,
    kind, colour)], hlines [(y, label, colour)]. Every element carries its data in data-*
    attributes (data-x, data-y, data-n) so that the page can be read back."""
    W, H, L, R, T, B = 760, 300, 60, 190, 28, 42
    xmax = xmax or 1
    ymax = ymax or 1

    def X(x):
        return L + (W - L - R) * min(max(x, 0), xmax) / xmax

    def Y(y):
        return H - B - (H - B - T) * min(max(y, 0), ymax) / ymax

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
        f'id="{_esc(ident)}" data-xmax="{xmax:g}" data-ymax="{ymax:g}">',
        f'<text x="{L}" y="16" font-size="13" font-weight="bold">{_esc(title)}</text>',
        f'<line x1="{L}" y1="{H - B}" x2="{W - R}" y2="{H - B}" stroke="#444"/>',
        f'<line x1="{L}" y1="{T}" x2="{L}" y2="{H - B}" stroke="#444"/>',
    ]
    for k in range(5):
        out.append(
            f'<text x="{X(xmax * k / 4):.1f}" y="{H - B + 15}" font-size="10" '
            f'text-anchor="middle">{xmax * k / 4:.3g}</text>'
        )
        out.append(
            f'<text x="{L - 5}" y="{Y(ymax * k / 4) + 3:.1f}" font-size="10" '
            f'text-anchor="end">{ymax * k / 4:.3g}</text>'
        )
    out.append(
        f'<text x="{(L + W - R) / 2}" y="{H - 6}" font-size="11" '
        f'text-anchor="middle">{_esc(xlabel)}</text>'
    )
    out.append(
        f'<text x="12" y="{(T + H - B) / 2}" font-size="11" text-anchor="middle" '
        f'transform="rotate(-90 12 {(T + H - B) / 2})">{_esc(ylabel)}</text>'
    )
    legend = 0
    for y, label, colour in hlines:
        out.append(
            f'<line class="level" data-y="{y:g}" x1="{L}" y1="{Y(y):.1f}" x2="{W - R}" '
            f'y2="{Y(y):.1f}" stroke="{colour}" stroke-dasharray="6 3">'
            f"<title>{_esc(label)}</title></line>"
        )
        out.append(
            f'<text x="{W - R + 6}" y="{Y(y) + 3:.1f}" font-size="10" '
            f'fill="{colour}">{_esc(label)}</text>'
        )
    for x, label, kind, colour in marks:
        out.append(
            f'<line class="{kind}" data-x="{x:g}" x1="{X(x):.1f}" y1="{T}" '
            f'x2="{X(x):.1f}" y2="{H - B}" stroke="{colour}" stroke-dasharray="2 3">'
            f"<title>{_esc(label)}</title></line>"
        )
        if kind == "halt":
            out.append(
                f'<text x="{X(x) + 3:.1f}" y="{T + 10 + 11 * legend}" font-size="10" '
                f'fill="{colour}">{_esc(label)}</text>'
            )
            legend += 1
    for i, (name, colour, pts, step) in enumerate(series):
        xy = []
        prev = None
        for x, y in pts:
            if step and prev is not None:
                xy.append(f"{X(x):.1f},{Y(prev):.1f}")
            xy.append(f"{X(x):.1f},{Y(y):.1f}")
            prev = y
        last = pts[-1] if pts else (0, 0)
        out.append(
            f'<polyline class="series" data-name="{_esc(name)}" data-n="{len(pts)}" '
            f'data-x="{last[0]:g}" data-y="{last[1]:g}" fill="none" stroke="{colour}" '
            f'stroke-width="1.6" points="{" ".join(xy)}"><title>{_esc(name)}</title>'
            "</polyline>"
        )
        out.append(
            f'<text x="{W - R + 6}" y="{T + 12 * i + 8}" font-size="10" '
            f'fill="{colour}">{_esc(name)}</text>'
        )
    out.append("</svg>")
    return "\n".join(out)


def _cumulative(ts, t0: float, scale: float, per: float, end: float) -> list[tuple[float, float]]:
    """[(time since t0 / scale, count so far * per)]: a step curve from 0 to `end` (time)."""
    pts = [(0.0, 0.0)]
    for k, t in enumerate(sorted(ts), 1):
        pts.append(((t - t0) / scale, k * per))
    pts.append(((end - t0) / scale, len(ts) * per))
    return pts


def chart(
    path: str,
    runs: dict[str, Model],
    on: Model,
    variants: dict[str, Model],
    real: dict | None = None,
) -> str:
    """Write the static HTML page of the rollouts, the halts, the mass power-on (and the real
    fleet's runs); returns its text."""
    svgs = []
    good = runs["good"]
    stages = good.p.rollout["stages"]
    last = max(good.updated_t) if good.updated_t else T0
    xmax = math.ceil((last - T0) / HOUR / 12) * 12 or 12
    svgs.append(
        svg_plot(
            f"A good release: the fleet's devices running it ({good.p.n} devices)",
            "hours after the release",
            "% of the fleet updated",
            xmax,
            100,
            [
                (
                    "updated",
                    COLOURS[4],
                    _cumulative(good.updated_t, T0, HOUR, 100 / good.p.n, last),
                    True,
                )
            ],
            [
                ((t - T0) / HOUR, f"stage {i + 1}: {b / 100:g} %", "stage", "#888")
                for i, (b, t) in enumerate(stages)
            ],
            ident="good",
        )
    )
    bad = {k: m for k, m in runs.items() if m.p.fail}
    if bad:
        xmax = max(m.quiet() - T0 for m in bad.values() if m.halted_at) / 60
        xmax = math.ceil(xmax / 30) * 30
        ymax = max(100 * m.exposed() for m in bad.values())
        ymax = math.ceil(ymax * 4 + 1e-9) / 4
        series, marks = [], []
        for (name, m), c in zip(bad.items(), COLOURS, strict=False):
            end = m.quiet() if m.halted_at else m.end
            series.append(
                (f"{name}: exposed", c, _cumulative(m.exposed_t, T0, 60, 100 / m.p.n, end), True)
            )
            if m.halted_at is not None:
                marks.append(((m.halted_at - T0) / 60, f"{name}: halted", "halt", c))
        svgs.append(
            svg_plot(
                "Bad releases (failing on boot on a share of the devices): exposed until the halt",
                "minutes after the release (stage 2 opens at 24 h)",
                "% of the fleet exposed",
                xmax,
                ymax,
                series,
                marks,
                ident="bad",
            )
        )
    n, iv, w = on.p.n, on.p.interval, on.p.window
    series = []
    for (name, m), c in zip(
        (("ota.fleet: within 0.9 x interval", on), *variants.items()), COLOURS, strict=False
    ):
        if m.p.first == "boot":
            continue  # 10,000 requests in one second: off this chart's scale
        ks = range(int(T0 // w), int((T0 + m.p.horizon) // w))
        series.append(
            (
                name.replace(" (model variant)", ""),
                c,
                [((k * w - T0) / HOUR, m.bins.get(k, 0) / w) for k in ks],
                False,
            )
        )
    svgs.append(
        svg_plot(
            f"Mass power-on: {n} devices boot at once; manifest requests per second ({w} s bins)",
            "hours after power-on",
            "requests / s",
            on.p.horizon / HOUR,
            2 * n / iv,
            series,
            (),
            [
                (1.5 * n / iv, "target 1.5 x N / interval", "#d62728"),
                (n / (0.9 * iv), "N / (0.9 x interval)", "#2ca02c"),
            ],
            ident="power-on",
        )
    )
    for name, r in (real or {}).items():
        t0 = r.published
        xmax = math.ceil((r.end - t0) / 10) * 10
        series = [("exposed", COLOURS[1], _cumulative(r.exposed(), t0, 1, 1, r.end), True)]
        done = [d.updated for d in r.devs if d.updated]
        rolled = [d.rolled for d in r.devs if d.rolled]
        if done:
            series.append(("updated", COLOURS[4], _cumulative(done, t0, 1, 1, r.end), True))
        if rolled:
            series.append(("rolled back", COLOURS[2], _cumulative(rolled, t0, 1, 1, r.end), True))
        marks = [(t - t0, f"stage {i + 1}", "stage", "#888") for i, t in enumerate(r.stage_t)]
        if r.halted_at is not None:
            marks.append((r.halted_at - t0, "halted", "halt", "#000"))
        svgs.append(
            svg_plot(
                f"Real fleet, {name}: {r.n} simulated ESP32s, nginx, mosquitto, mpota fleet watch",
                "seconds after the release (wall clock)",
                "devices",
                xmax,
                r.n,
                series,
                marks,
                ident=f"real-{name}",
            )
        )
    page = (
        '<!DOCTYPE html>\n<html xmlns="http://www.w3.org/1999/xhtml"><head>'
        '<meta charset="utf-8"/><title>bench/fleet.py</title></head>\n'
        '<body style="font-family: sans-serif">\n<h1>A model fleet'
        + (" and a real one" if real else "")
        + "</h1>\n"
        + "\n".join(f"<div>{s}</div>" for s in svgs)
        + "\n</body></html>\n"
    )
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(page)
    print(f"chart: {path}")
    return page


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--devices", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--chart", help="a static HTML page (inline SVG) of the runs")
    ap.add_argument("--out", type=Path, help="where fleet.md goes (default build/bench)")
    ap.add_argument(
        "--real",
        type=int,
        default=0,
        metavar="N",
        help="also run N full simulated devices against nginx and mosquitto",
    )
    ap.add_argument("--real-interval", type=int, default=10, help="their poll interval (s)")
    ap.add_argument("--real-stage", type=int, default=30, help="s between their stages")
    ap.add_argument("--workers", type=int, default=4, help="device processes at a time")
    ap.add_argument(
        "--work",
        type=Path,
        default=ROOT / "build" / "bench" / "fleet-real",
        help="the real fleet's files",
    )
    a = ap.parse_args(argv)
    if a.real < 0 or a.real_interval <= 0 or a.real_stage <= 0 or a.workers <= 0:
        ap.error("--real, --real-interval, --real-stage and --workers must be positive")
    real = None
    if a.real:
        import fleetreal

        real = fleetreal.scenarios(
            a.real, a.work, interval=a.real_interval, stage=a.real_stage, workers=a.workers
        )
        text = fleetreal.table(real)
        print(text)
        print(f"written: {tables.write('fleet-real', text, a.out)}")
        up, down = real["good"].no_news()[0]
        no_news = (up, down, "in the real fleet's run below, as nginx logged it")
    else:
        no_news = measure_no_news()
    runs = scenarios(a.devices, seed=a.seed)
    on = power_on(a.devices, a.seed)
    variants = {
        "anywhere in the interval (model variant)": power_on(a.devices, a.seed, "interval"),
        "at boot (model variant)": power_on(a.devices, a.seed, "boot"),
    }
    g = grid(a.devices, seed=a.seed)
    text = report_tables(runs, on, variants, g, no_news)
    print(text)
    print(f"written: {tables.write('fleet', text, a.out)}")
    if a.chart:
        chart(a.chart, runs, on, variants, real)
    return 0


def measure_no_news() -> tuple[int, int, str]:
    """One simulated device (MicroPython) polls a release on nginx twice: the second poll's
    bytes both ways as nginx logged them; the constant NO_NEWS (said) without nginx."""
    try:
        import fleetreal

        up, down = fleetreal.no_news_poll(ROOT / "build" / "bench" / "fleet-no-news")
    except (RuntimeError, OSError, ImportError) as e:
        print(f"no-news poll not measured ({e}): the figure of tests/test_fleet.py")
        return (*NO_NEWS, "by tests/test_fleet.py")
    return up, down, "here: a simulated device's second poll of nginx, as nginx logged it"


if __name__ == "__main__":
    sys.exit(main())
