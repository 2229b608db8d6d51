"""A model fleet on simulated time: N devices (10,000) run the device's own code, python/ota/
fleet.py under CPython (Fleet.check(): the decision, bucket(), basis_points(), the penalty box;
Fleet.first_delay() / next_delay(): the first poll, the +-10 % jitter, the backoff), and report
through ota.report's own payload (ota.report._Reporter.report()) to the controller's own rule
(host/mpota/fleet.py: parse_report(), Rollout.add(), Rollout.verdict(), as `mpota fleet watch`
calls them), which halts the release. A discrete-event loop, no sleeping: the device code gets
the simulated clock (now=), a seeded random source (rand=), and the model's transport:

- the static host behind a cache (a CDN, nginx's proxy_cache): a manifest written at time w
  (a release, a halt) reaches a device at its first poll at or after w + TTL; a poll whose
  manifest did not change is one request answered 304 (its bytes: measured by
  tests/test_fleet.py against nginx through a counting proxy, see NO_NEWS below);
- the install (download, verify, write) takes INSTALL s, a boot BOOT s; a release that "fails
  on boot" on a device rolls back (two boots) and the old firmware reports rolled_back, as
  ota.report.at_boot() does; the device never takes that build again (ota.history);
- a report reaches the controller LATENCY s after it is sent; the controller's halt (a signed
  manifest, halted, sequence + 1) is written when its verdict() says so.

Scenarios: a good release; a bad one failing on boot on 100, 30, 10, 3 % of the devices; the
whole fleet powered on at once; time to halt against poll interval and cache TTL.

  python bench/fleet.py [--devices 10000] [--chart build/bench/fleet.png] [--out DIR]

Not done: `--real N` (N MicroPython simulated devices against nginx and mosquitto): the tests
tests/test_fleet.py and tests/test_report.py run single devices through those real servers.
"""

from __future__ import annotations

import argparse
import heapq
import json
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
# A poll with no news: one request answered 304, bytes both ways (TCP/IP headers not counted),
# measured by tests/test_fleet.py::test_a_poll_with_no_news_is_one_304_and_stages_open_with_time
# (ota.fleet on the simulated ESP32 against nginx through a counting proxy; README "Fleets").
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
        self.first_at_boot = False  # model variant: the first poll at boot, not at random
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
            if p.first_at_boot:
                d.fleet.first_delay = lambda: 0.0
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


def power_on(n: int, seed: int = 1, first_at_boot: bool = False, hours: int = 6) -> Model:
    p = Params(n=n, seed=seed, release=False, power_on=True, horizon=hours * HOUR)
    p.first_at_boot = first_at_boot
    return Model(p).run()


def grid(n: int, intervals=(900, HOUR, 4 * HOUR), ttls=(0, 300, HOUR), seed: int = 1):
    return {
        (iv, ttl): Model(Params(n=n, fail=1.0, interval=iv, ttl=ttl, seed=seed)).run()
        for iv in intervals
        for ttl in ttls
    }


def report_tables(runs: dict[str, Model], on: Model, at_boot: Model, g: dict) -> str:
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
    up, down = NO_NEWS
    lines += [
        "",
        f"A poll with no news: one request answered 304, {up} bytes up + {down} down = "
        f"{up + down} bytes (measured against nginx by tests/test_fleet.py; TCP/IP headers not "
        f"counted); at {on.per_day():.1f} polls a day: {on.per_day() * (up + down) / 1000:.1f} "
        "kB per device per day.",
        "",
        f"Mass power-on: all {on.p.n} devices boot at once (no release), manifest requests "
        f"per second over the busiest window of {on.p.horizon // HOUR} h:",
        "",
        "| first poll | "
        + " | ".join(f"peak /s over {_h(w)}" for w in WINDOWS[1:])
        + " | peak in one second | target 1.5 x N / interval |",
        "|---" * (len(WINDOWS) + 2) + "|",
    ]
    target = 1.5 * on.p.n / on.p.interval
    for name, m in (("at a random point of the interval (ota.fleet)", on),
                    ("at boot (model variant, for comparison)", at_boot)):  # fmt: skip
        cells = " | ".join(f"{m.peak(w):.2f}" for w in WINDOWS[1:])
        lines.append(f"| {name} | {cells} | {m.peak(1):.0f} | {target:.2f} |")
    lines += [
        "",
        "Expected rate, noise aside: first polls N / interval over the first interval, plus the "
        "second polls ramping in from 0.9 x interval: 1.5 x N / interval just before the end "
        "of the first interval, so the busiest minute's noise goes beyond it.",
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


def chart(path: str, runs: dict[str, Model], on: Model) -> None:
    plt = tables.pyplot(path)
    if plt is None:
        return
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for name, m in runs.items():
        ts = sorted(m.updated_t if not m.p.fail else m.exposed_t)
        xs = [(t - T0) / HOUR for t in ts]
        ys = [100 * (i + 1) / m.p.n for i in range(len(ts))]
        a.step(xs, ys, where="post", label=name + (" (updated)" if not m.p.fail else " (exposed)"))
    a.set_xlabel("hours after the release")
    a.set_ylabel("% of the fleet")
    a.set_yscale("symlog", linthresh=1)
    a.legend(fontsize=8)
    a.set_title("Rollouts")
    ks = sorted(on.bins)
    b.plot([(k * on.p.window - T0) / HOUR for k in ks], [on.bins[k] / on.p.window for k in ks])
    b.axhline(1.5 * on.p.n / on.p.interval, color="r", ls="--", label="1.5 x N / interval")
    b.set_xlabel("hours after mass power-on")
    b.set_ylabel(f"manifest requests/s ({on.p.window} s windows)")
    b.legend(fontsize=8)
    b.set_title("Mass power-on")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    print(f"chart: {path}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--devices", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--chart", help="a PNG of the rollouts and the mass power-on")
    ap.add_argument("--out", type=Path, help="where fleet.md goes (default build/bench)")
    a = ap.parse_args(argv)
    runs = scenarios(a.devices, seed=a.seed)
    on = power_on(a.devices, a.seed)
    at_boot = power_on(a.devices, a.seed, first_at_boot=True)
    g = grid(a.devices, seed=a.seed)
    text = report_tables(runs, on, at_boot, g)
    print(text)
    print(f"written: {tables.write('fleet', text, a.out)}")
    if a.chart:
        chart(a.chart, runs, on)
    return 0


if __name__ == "__main__":
    sys.exit(main())
