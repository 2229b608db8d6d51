"""bench/fleet.py's model fleet (ota.fleet's own code on simulated time, the controller's own
halt rule) meets the issue's targets: a release failing on boot on 100 % of the devices exposes
<= 0.25 % of the fleet, on 10 % <= 1 %; a good release reaches 100 % within its plan, no false
halt, none stranded; after a mass power-on, the manifest requests stay <= 1.5 x N / interval
(over 5 minutes; the busiest minute is shown in the README's table)."""

import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import fleet  # noqa: E402

SVG = "{http://www.w3.org/2000/svg}"


def test_bad_releases_are_halted_early():
    for fail, limit in ((1.0, 0.0025), (0.1, 0.01)):
        m = fleet.Model(fleet.Params(n=10_000, fail=fail)).run()
        assert m.halted_at is not None, fail
        assert "stage 1" in m.why and m.exposed() <= limit, (fail, m.exposed(), m.why)
        # the halt reached every device: nobody started the release after halt + TTL
        assert max(m.exposed_t) < m.halted_at + m.p.ttl
        assert len(m.failed_t) >= m.p.min_failures
    assert not fleet.Model(fleet.Params(n=10_000, fail=1.0)).run().updated_t


def test_a_good_release_reaches_the_whole_fleet_within_its_plan():
    m = fleet.Model(fleet.Params(n=1000)).run()
    assert m.halted_at is None and not m.failed_t
    assert len(m.updated_t) == m.p.n and len({d.build for d in m.devs}) == 1
    last_stage = m.p.rollout["stages"][-1][1]
    # everyone by the last stage + one poll (interval + 10 %) + the cache, install and boot
    assert max(m.updated_t) <= last_stage + 1.1 * m.p.interval + m.p.ttl + 200
    # the stages held: 1 % in the first day (of 1,000 devices: their buckets below 100)
    first_day = [t for t in m.updated_t if t < fleet.T0 + fleet.DAY]
    assert 0 < len(first_day) <= 0.03 * m.p.n
    assert 23 < m.per_day() < 26  # polls at 1 h +-10 %, and the reboots' first polls


def test_mass_power_on_spreads_the_polls():
    m = fleet.power_on(10_000, hours=3)
    target = 1.5 * m.p.n / m.p.interval
    assert m.peak(60) <= target and m.peak(300) <= target
    # ota.fleet's first poll within 0.9 x interval: no device polls twice within it, so the
    # rate is about N / (0.9 x interval) (1.11 x N / interval) at most, noise aside
    assert m.peak(300) <= 1.15 * m.p.n / (0.9 * m.p.interval)
    assert m.no_news == m.requests - m.p.n  # one full manifest per device, then 304s
    # the model can fail: a first poll anywhere in the interval peaks at 1.5 x N / interval at
    # its end (over 5 min, where first and second polls overlap), and at boot it is a herd
    wide = fleet.power_on(10_000, hours=3, first="interval")
    assert wide.peak(300) > 1.05 * m.peak(300) and wide.peak(60) > m.peak(60)
    herd = fleet.power_on(1000, hours=1, first="boot")
    assert herd.peak(1) == 1000


def test_tables_and_the_chart_are_written(tmp_path):
    runs = {
        "good": fleet.Model(fleet.Params(n=200)).run(),
        "bad 100 %": fleet.Model(fleet.Params(n=200, fail=1.0)).run(),
    }
    on = fleet.power_on(200, hours=2)
    variants = {"at boot (model variant)": fleet.power_on(200, hours=2, first="boot")}
    text = fleet.report_tables(runs, on, variants, fleet.grid(200, (3600,), (0, 300)))
    assert "| good | - | no halt |" in text and "364 bytes" in text
    assert text.count("\n| bad 100 % |") == 1
    page = fleet.chart(str(tmp_path / "f.html"), runs, on, variants)
    assert (tmp_path / "f.html").read_text() == page
    root = ET.fromstring(page)  # well-formed (XHTML)
    svgs = {s.get("id"): s for s in root.iter(SVG + "svg")}
    assert set(svgs) == {"good", "bad", "power-on"}
    bad = runs["bad 100 %"]
    # the halt marker at the halt's time, in minutes after the release; the printed time to
    # halt is from the first exposure
    (halt,) = [e for e in svgs["bad"] if e.get("class") == "halt"]
    assert float(halt.get("data-x")) == pytest.approx((bad.halted_at - fleet.T0) / 60, rel=1e-5)
    printed = [r for r in text.splitlines() if r.startswith("| bad 100 % |")][0]
    assert fleet._h(bad.halted_at - min(bad.exposed_t)) in printed
    (exposed,) = [e for e in svgs["bad"] if e.get("class") == "series"]
    assert float(exposed.get("data-y")) == pytest.approx(100 * bad.exposed(), rel=1e-5)
    assert f"{100 * bad.exposed():.2f} %" in printed
    # the stage boundaries of the good release's plan, in hours
    stages = [float(e.get("data-x")) for e in svgs["good"] if e.get("class") == "stage"]
    assert stages == [0, 24, 48, 72]
    (updated,) = [e for e in svgs["good"] if e.get("class") == "series"]
    assert float(updated.get("data-y")) == 100
    # the mass power-on curve: every request of the run, per 60 s bin
    (curve,) = [e for e in svgs["power-on"] if e.get("class") == "series"]
    pts = [tuple(map(float, p.split(","))) for p in curve.get("points").split()]
    assert len(pts) == on.p.horizon // on.p.window == int(curve.get("data-n"))
    levels = sorted(float(e.get("data-y")) for e in svgs["power-on"] if e.get("class") == "level")
    assert levels == pytest.approx([200 / (0.9 * 3600), 1.5 * 200 / 3600], rel=1e-5)


def test_a_small_real_fleet_halts_a_bad_release(tmp_path):
    """bench/fleet.py --real, small: 3 simulated devices (MicroPython) poll nginx, report to
    mosquitto; `mpota fleet watch` halts the release that fails on boot after one rollback."""
    from bench import fleetreal

    um = str(fleet_umqtt())
    r = fleetreal.Run(
        "bad",
        3,
        tmp_path,
        True,
        um,
        interval=2,
        stage=3,
        lead=2.5,
        tail=5,
        min_executed=1,
        min_failures=1,
    ).run()
    assert r.halted_at is not None and "failed" in r.why, r.watch_text()
    ex = r.exposed()
    assert ex and ex[0] < r.halted_at and r.after_halt() == 0
    assert all(d.crashes <= 1 for d in r.devs) and sum(d.crashes for d in r.devs) == len(ex)
    assert [d for d in r.devs if d.rolled] == [d for d in r.devs if d.exposed]
    assert r.stranded == [] and r.lost == 0 and r.kept == 0 and r.reports == r.sent > 0
    nn = r.no_news()
    assert nn and all(u + d <= 400 for u, d in nn), nn
    assert len(r.requests) >= len(r.polls)  # each poll: one manifest request (+ the image)
    text = fleetreal.table({"bad 100 %": r})
    assert f"| bad 100 % | 0 of 3 | - | {len(ex)} of 3 |" in text


def fleet_umqtt():
    from mpota import fleet as controller

    return controller.fetch_umqtt(ROOT / "build" / "umqtt").resolve()
