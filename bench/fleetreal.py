"""A real fleet for bench/fleet.py --real N: N full simulated ESP32s (`mpota sim create --mac`,
each its own flash file and filesystem) running the stock `ota` package under the MicroPython
unix port: ota.fleet polls a release directory that `mpota release` published and Debian's
nginx serves, ota.report reports through micropython-lib's umqtt.simple to Debian's mosquitto,
and `mpota fleet watch` (the real controller, a subprocess) halts a bad release by writing the
signed halted manifest. Nothing is modeled but time, which is compressed (below) and real:

- a device is one process run per step, as its main.py would do it: a boot (ota.rollback.cancel()
  where the app confirms itself, ota.report.at_boot(), then Fleet.first_delay()), and polls
  (Fleet.check() with the reporter, then Fleet.next_delay()): the scheduler runs each step when
  the device's own delays say, at most `workers` processes at a time;
- "installed": the chip resets (the simulated bootloader boots the new slot); a release that
  "fails on boot" raises in its boot step before confirming (its build id stands for the bug),
  the chip resets again, the bootloader goes back to the old firmware, which reports
  rolled_back at its next boot (ota.report.at_boot());
- time: poll interval `interval` s (10: an hour / 360), stages 25 / 50 / 100 % of the devices
  `stage` s apart (30: three intervals rather than a day's 24, so that a run takes minutes), the
  release published `lead` s after the fleet powered on; figures in wall-clock seconds.

What it counts comes from the real parts: nginx's access log (requests, and the bytes of each
request answered 304, both ways, as nginx logged them: $request_length and $bytes_sent), the
controller's log (reports received, the halt), the devices' own state files (reports sent,
reports still kept unsent) and flash (the slot each one runs, confirmed or not).
"""

from __future__ import annotations

import heapq
import json
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for _p in (ROOT / "host", ROOT / "sim", ROOT / "tests"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from espsim import device as espdevice  # noqa: E402
from espsim import idf, otadata  # noqa: E402
from mpota import fleet as controller  # noqa: E402
from mpota import images, inspect, manifest, release, simdev  # noqa: E402

OLD_IMAGE = ("v1.22.0", 1_400_000)  # what the fleet runs (a MicroPython-sized image)
NEW_IMAGE = ("v1.23.0", 1_400_016)
STAGES = (2500, 5000, 10000)  # basis points

# One step of a device: its boot (BOOT) or one poll (POLL), as its main.py would run them.
DEVICE = """
import ota.fleet, ota.report
r = ota.report.MQTT('127.0.0.1', {port}, timeout=5)
f = ota.fleet.Fleet({base!r}, reporter=r, reboot=False, interval={interval})
f.errors = {errors}
if {boot}:
    if ota.fleet._running_build() == {bad!r}:
        raise RuntimeError('this build fails on boot')  # before the app confirms it
    import ota.rollback
    ota.rollback.cancel()  # the app runs: it confirms the firmware (a no-op when not on trial)
    print('BOOT', ota.report.at_boot(r), f.first_delay())
else:
    r.flush()  # what a broker that was down did not get yet
    try:
        d = f.check()
    except (OSError, ValueError) as e:
        d = 'error'
        print('ERROR', e)
    print('POLL', d, f.next_delay(d not in ('failure', 'error')))
r.close()
"""


class Dev:
    def __init__(self, i: int, d: Path, old: bytes, pub: bytes):
        self.i = i
        self.mac = 0x240AC4100000 + i
        self.id = "%012x" % self.mac
        self.flash = d / f"dev{i:02d}.bin"
        self.fs = d / f"fs{i:02d}"
        self.fs.mkdir()
        (self.fs / "ota_pubkey.pem").write_bytes(pub)
        simdev.create(self.flash, old, mac=self.mac)
        self.errors = 0
        self.exposed = None  # when its poll started the release
        self.updated = None  # when the new firmware confirmed itself, reported success
        self.rolled = None  # when the old firmware reported rolled_back
        self.steps = 0
        self.crashes = 0
        self.late = 0.0  # the longest a step waited past its time for a free worker
        self.broken = None  # the output of a step that failed unexpectedly


class Run:
    """One scenario: `fail` True for a release whose build fails on boot on every device."""

    def __init__(self, name: str, n: int, work: Path, fail: bool, umqtt: str, **kw):
        self.name, self.n, self.fail, self.umqtt = name, n, fail, umqtt
        self.interval = kw.get("interval", 10)
        self.stage = kw.get("stage", 30)
        self.lead = kw.get("lead", 12)
        self.workers = kw.get("workers", 4)
        self.tail = kw.get("tail", 2.2 * self.interval)  # after the last stage opened
        self.min_executed = kw.get("min_executed", 3)
        self.min_failures = kw.get("min_failures", 3)
        self.threshold = kw.get("threshold", 2.0)
        self.dir = work / name.replace(" ", "-").replace("%", "pc")
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)
        self.heap: list = []
        self.k = 0
        self.cv = threading.Condition()
        self.busy = 0
        self.polls: list[tuple[float, int, str]] = []  # (start, device, result)
        self.events: list[tuple[float, int, str]] = []  # (time, device, what)

    # -- the real parts
    def setup(self) -> None:
        import nginxserver
        from mqttbroker import Mosquitto

        d = self.dir
        manifest.keygen(d / "k.pem", d / "pub.pem")
        self.key = (d / "k.pem").read_bytes()
        self.old = images.app_image(*OLD_IMAGE)
        self.new = images.app_image(*NEW_IMAGE)
        self.old_build = inspect.identity(self.old)["build"]
        self.new_build = inspect.identity(self.new)["build"]
        (d / "old.bin").write_bytes(self.old)
        (d / "new.bin").write_bytes(self.new)
        self.www = d / "www"
        self.store = release.DirStore(self.www)
        # the fleet's current release: everyone runs it already
        release.publish(d / "old.bin", self.store, "stable", self.key, None, version="1.0.0")
        self.nginx = nginxserver.Nginx(self.www, d / "nginx")
        self.broker = Mosquitto(d / "broker")
        self.base = self.nginx.base + "/"
        pub = (d / "pub.pem").read_bytes()
        self.devs = [Dev(i, d, self.old, pub) for i in range(self.n)]
        self.watch_log = d / "watch.log"
        cmd = [sys.executable, "-m", "mpota", "fleet", "watch"]
        cmd += ["--broker", self.broker.address, "--root", str(self.www), "--channel", "stable"]
        cmd += ["--key", str(d / "k.pem"), "--log", str(self.watch_log)]
        cmd += ["--min-executed", str(self.min_executed), "--threshold", str(self.threshold)]
        cmd += ["--min-failures", str(self.min_failures)]
        self.watch_out = open(d / "watch.out", "wb")  # noqa: SIM115
        self.watch = subprocess.Popen(cmd, stdout=self.watch_out, stderr=subprocess.STDOUT)
        end = time.monotonic() + 20
        while not (self.watch_log.exists() and self.watch_log.read_text()):
            if self.watch.poll() is not None or time.monotonic() > end:
                raise RuntimeError("mpota fleet watch did not start: " + self.watch_text())
            time.sleep(0.05)
        time.sleep(0.5)  # subscribed

    def watch_text(self) -> str:
        return (self.dir / "watch.out").read_text(errors="replace")

    def stop(self) -> None:
        if self.watch.poll() is None:
            self.watch.send_signal(signal.SIGINT)
            try:
                self.watch.wait(10)
            except subprocess.TimeoutExpired:
                self.watch.kill()
                self.watch.wait()
        self.watch_out.close()
        self.nginx.stop()
        self.broker.stop()

    # -- the scheduler: each device's next step at the time its own code chose
    def at(self, t: float, dev: Dev, step: str) -> None:
        with self.cv:
            self.k += 1
            heapq.heappush(self.heap, (t, self.k, dev, step))
            self.cv.notify()

    def step(self, dev: Dev, step: str, due: float) -> None:
        start = time.time()
        dev.late = max(dev.late, start - due)
        dev.steps += 1
        code = DEVICE.format(
            port=self.broker.port,
            base=self.base,
            interval=self.interval,
            errors=dev.errors,
            boot=step == "boot",
            bad=self.new_build if self.fail else "",
        )
        r = simdev.run(dev.flash, code, cwd=dev.fs, extra_path=[self.umqtt], timeout=120)
        out = r.stdout + r.stderr
        words = next(
            (ln.split() for ln in r.stdout.splitlines() if ln[:5] in ("BOOT ", "POLL ")), None
        )
        now = time.time()
        if step == "boot":
            if words is None and "fails on boot" in out:  # the watchdog resets the chip
                dev.crashes += 1
                self.events.append((now, dev.i, "crash"))
                simdev.power_on(dev.flash)
                self.at(now, dev, "boot")
                return
            if words is None:
                dev.broken = out
                return
            if words[1] == "success":
                dev.updated = now
            elif words[1] == "rolled_back":
                dev.rolled = now
            if words[1] != "None":
                self.events.append((now, dev.i, words[1]))
            self.at(now + float(words[2]), dev, "poll")
            return
        if words is None:
            dev.broken = out
            return
        result = words[1]
        self.polls.append((start, dev.i, result))
        dev.errors = dev.errors + 1 if result in ("failure", "error") else 0
        if result in ("installed", "failure") and dev.exposed is None:
            dev.exposed = start
            self.events.append((start, dev.i, "exposed"))
        if result == "installed":  # reboot=False: the scheduler resets the chip
            simdev.power_on(dev.flash)
            self.at(now, dev, "boot")
        else:
            self.at(now + float(words[2]), dev, "poll")

    def _worker(self, dev, step, due):
        try:
            self.step(dev, step, due)
        except Exception as e:  # noqa: BLE001  (said in the figures: the device is stranded)
            dev.broken = repr(e)
        finally:
            with self.cv:
                self.busy -= 1
                self.cv.notify()

    def run(self) -> Run:
        self.setup()
        try:
            self.t0 = time.time()  # the whole fleet powers on
            for dev in self.devs:
                self.at(self.t0, dev, "boot")
            self.published = self.t0 + self.lead
            self.stage_t = [self.published + k * self.stage for k in range(len(STAGES))]
            self.end = self.stage_t[-1] + self.tail
            done = False
            while True:
                with self.cv:
                    while True:
                        now = time.time()
                        if not done and now >= self.published:
                            break
                        if now >= self.end:  # no more polls; a chip that resets boots still
                            self.heap = [x for x in self.heap if x[3] == "boot"]
                            heapq.heapify(self.heap)
                            if not self.heap and self.busy == 0:
                                break
                        if self.heap and self.heap[0][0] <= now and self.busy < self.workers:
                            break
                        wake = ([] if now >= self.end else [self.end]) + (
                            [] if done else [self.published]
                        )
                        if self.heap and self.busy < self.workers:
                            wake.append(self.heap[0][0])
                        self.cv.wait(
                            max(0.005, min(wake) - now) if wake else 1.0
                        )  # or a step ends
                    if not done and now >= self.published:
                        job = None
                    elif not self.heap:
                        break
                    else:
                        t, _, dev, step = heapq.heappop(self.heap)
                        self.busy += 1
                        job = (dev, step, t)
                if job is None:
                    self.publish()
                    done = True
                    continue
                threading.Thread(target=self._worker, args=job, daemon=True).start()
            time.sleep(1.5)  # the controller's last reports
        finally:
            self.stop()
        self.collect()
        return self

    def publish(self) -> None:
        rollout = {"stages": [[bp, int(t)] for bp, t in zip(STAGES, self.stage_t, strict=True)]}
        m = release.publish(
            self.dir / "new.bin", self.store, "stable", self.key, rollout, version="1.1.0"
        )
        self.release = m["release"]
        self.published = time.time()

    # -- the figures, from the real parts
    def collect(self) -> None:
        self.requests = self.nginx.requests
        self.log = []
        for line in self.watch_log.read_text().splitlines():
            try:
                self.log.append(json.loads(line))
            except ValueError:
                pass
        halts = [r for r in self.log if isinstance(r.get("halt"), str)]
        self.halted_at = halts[0]["rx"] if halts else None
        self.why = halts[0]["halt"] if halts else None
        got: dict[str, set] = {}
        for r in self.log:
            p = r.get("r")
            if isinstance(p, dict) and isinstance(p.get("seq"), int) and not r.get("retained"):
                got.setdefault(p["device"], set()).add(p["seq"])
        self.reports = sum(len(s) for s in got.values())
        self.sent = self.lost = self.kept = 0
        self.stranded = []
        for dev in self.devs:
            try:
                st = json.loads((dev.fs / "ota_report.json").read_text())
            except (OSError, ValueError):
                st = {"seq": 0, "q": []}
            self.sent += st.get("seq", 0)
            self.kept += len(st.get("q") or [])
            self.lost += len(set(range(1, st.get("seq", 0) + 1)) - got.get(dev.id, set()))
            runs, confirmed = self.running(dev)
            want = self.old if self.fail else self.new
            if dev.broken or not confirmed or runs[: len(want)] != want:
                self.stranded.append(dev.i)

    def running(self, dev: Dev) -> tuple[bytes, bool]:
        """The image the device runs (its slot's first bytes) and whether otadata says it is
        confirmed (valid, or the factory/first slot, which is never on trial)."""
        st = espdevice.read_state(str(dev.flash))
        d = espdevice.Device(str(dev.flash))
        try:
            part = next(p for p in d.parts if p.address == st["running"] and p.type == 0)
            try:
                state = idf.get_state_partition(d, part)
            except Exception:  # noqa: BLE001  (never written: the slot flashed first)
                state = None
        finally:
            d.close()
        raw = dev.flash.read_bytes()[part.address : part.address + len(self.new)]
        return raw, state in (None, otadata.VALID, otadata.UNDEFINED)

    def exposed(self) -> list[float]:
        return sorted(d.exposed for d in self.devs if d.exposed is not None)

    def after_halt(self) -> int:
        """Polls that started the release after the halt was written."""
        if self.halted_at is None:
            return 0
        return sum(1 for t, _, r in self.polls if t > self.halted_at and r == "installed")

    def halted_polls(self) -> int:
        """Polls after the halt that decided "halted" (the devices saw it, did not start)."""
        if self.halted_at is None:
            return 0
        return sum(1 for t, _, r in self.polls if t > self.halted_at and r == "halted")

    def no_news(self) -> list[tuple[int, int]]:
        """(bytes up, bytes down) of each manifest request answered 304, as nginx logged it."""
        return [(int(r[6]), int(r[5])) for r in self.requests if r[4] == "304"]


def umqtt_dir() -> str:
    return str(controller.fetch_umqtt(ROOT / "build" / "umqtt").resolve())


def scenarios(n: int, work: Path, **kw) -> dict[str, Run]:
    um = umqtt_dir()
    out = {}
    for name, fail in (("good", False), ("bad 100 %", True)):
        t = time.monotonic()
        out[name] = Run(name, n, work, fail, um, **kw).run()
        print(f"real fleet, {name}: {time.monotonic() - t:.0f} s", flush=True)
    return out


def table(runs: dict[str, Run]) -> str:
    r0 = next(iter(runs.values()))
    stages = " / ".join(f"{b / 100:g} %" for b in STAGES)
    lines = [
        f"Real fleet: {r0.n} simulated ESP32s (MicroPython unix port, each its own flash and MAC) "
        f"running the stock ota package, polling nginx and reporting to mosquitto through "
        f"umqtt.simple; `mpota fleet watch` halts at >= {r0.min_failures} failures of >= "
        f"{r0.min_executed} devices done and >= {r0.threshold:g} %. Time compressed: poll every "
        f"{r0.interval} s +-10 % (for an hour), stages {stages} {r0.stage} s apart, the release "
        f"{r0.lead} s after the fleet powered on; at most {r0.workers} device processes at a "
        "time. Times are wall clock.",
        "",
        "| release | updated | time to 100 % | exposed before the halt | time to halt "
        "| started after the halt "
        "| nginx requests | no-news polls (304) | bytes per no-news poll, up + down "
        "| reports sent / received | lost | stranded |",
        "|---" * 12 + "|",
    ]
    for name, r in runs.items():
        ex = r.exposed()
        tth = f"{r.halted_at - ex[0]:.1f} s" if r.halted_at and ex else "no halt"
        nn = r.no_news()
        sizes = sorted({u + d for u, d in nn})
        ups = sorted({u for u, _ in nn})
        downs = sorted({d for _, d in nn})
        b = (
            f"{'/'.join(map(str, ups))} + {'/'.join(map(str, downs))} = "
            f"{'/'.join(map(str, sizes))}"
            if nn
            else "-"
        )
        done = [d.updated for d in r.devs if d.updated]
        to100 = f"{max(done) - r.published:.1f} s" if len(done) == r.n else "-"
        lines.append(
            f"| {name} | {len(done)} of {r.n} | {to100} | "
            f"{f'{len(ex)} of {r.n}' if r.fail else '-'} | {tth} | "
            f"{r.after_halt() if r.fail else '-'} | "
            f"{len(r.requests)} | {len(nn)} | {b} | {r.sent} / {r.reports} | {r.lost} | "
            f"{len(r.stranded)} |"
        )
    bad = [r for r in runs.values() if r.fail and r.why]
    for r in bad:
        lines += [
            "",
            f"{r.name}: {sum(1 for d in r.devs if d.rolled)} devices rolled back and their old "
            f"firmware reported rolled_back; halted by `mpota fleet watch` ({r.why}); after the "
            f'halt {r.halted_polls()} polls decided "halted" and {r.after_halt()} started the '
            "release. Time to halt: from the first device's poll that started the release to "
            "the halted manifest written.",
        ]
    late = max(d.late for r in runs.values() for d in r.devs)
    lines += ["", f"The longest a device step waited for a free process slot: {late:.1f} s."]
    return "\n".join(lines) + "\n"


def no_news_poll(work: Path) -> tuple[int, int]:
    """One simulated device (MicroPython) polls a release that nginx serves, twice: (bytes up,
    bytes down) of the second poll, answered 304, as nginx logged them."""
    import nginxserver

    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    manifest.keygen(work / "k.pem", work / "pub.pem")
    (work / "old.bin").write_bytes(images.app_image(*OLD_IMAGE))
    st = release.DirStore(work / "www")
    release.publish(work / "old.bin", st, "stable", (work / "k.pem").read_bytes(), None)
    server = nginxserver.Nginx(work / "www", work / "nginx")
    try:
        dev = Dev(0, work, (work / "old.bin").read_bytes(), (work / "pub.pem").read_bytes())
        code = (
            "import ota.fleet\nf = ota.fleet.Fleet(%r, reboot=False)\n"
            "print('POLL', f.check(), f.check())\n" % (server.base + "/")
        )
        r = simdev.run(dev.flash, code, cwd=dev.fs, timeout=60)
        if "POLL current current" not in r.stdout:
            raise RuntimeError("the device's polls failed: " + r.stdout + r.stderr)
        log = server.requests
    finally:
        server.stop()
    if [x[4] for x in log] != ["200", "304"]:
        raise RuntimeError(f"nginx answered {[x[4] for x in log]}, not 200 then 304")
    return int(log[1][6]), int(log[1][5])
