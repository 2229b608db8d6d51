"""Power-cut campaign: cut the power at every flash operation of a full OTA update (inside
erases, page programs, and both otadata writes), for each backend that runs here, then power
the simulated ESP32 on again and check that:

- it boots (a valid image is found: no brick);
- it boots the old firmware, unless the switch to the new one completed;
- nothing outside the target slot and otadata changed.

Also: each otadata sector corrupted, both corrupted, rollback after an unconfirmed boot,
confirm then reboot twice. Runs in-process under CPython: the device code is the same ota
package; the native backend is the C core and host backend through ctypes.

Then the network path (bench/netcut.py): a cut at every --net-stride-th flash operation of an
`ota.update.from_json()` update served over HTTP on 127.0.0.1 (plain, zlib, resumed; an image
whose length is a multiple of 64 KiB and one that is not), under MicroPython (pure backend) and
CPython with the native backend, each followed by power-on and the same call again until it
succeeds.

  python bench/powercut.py [--size 262176] [--seed-stride 61] [--net-stride 29] [--net-all]
                           [--quick]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODULES = ROOT / "sim" / "espsim" / "modules"
sys.path[:0] = [
    str(MODULES / "cp"),
    str(MODULES / "cpnative"),
    str(MODULES),
    str(ROOT / "sim"),
    str(ROOT / "python"),
    str(ROOT / "host"),
    str(ROOT),
]

from espsim import bootloader, device  # noqa: E402
from espsim.flash import PowerCut  # noqa: E402
from mpota import images, simdev  # noqa: E402

from bench import netcut, tables  # noqa: E402

SMALL, SEED_STRIDE, NET_STRIDE = 262_176, 61, 29  # the defaults: the README's tables
SLOTS = {"ota_0": (0x10000, 0x180000), "ota_1": (0x190000, 0x180000)}
OTADATA = (0xD000, 0x2000)


class Rig:
    """A simulated ESP32 in a file, with snapshots, for the campaign."""

    def __init__(self, work: Path):
        self.path = work / "flash.bin"
        os.environ["ESPSIM_FLASH"] = str(self.path)
        from ota import state

        state.ROOT = str(work)  # the board's filesystem: its state files (ota/state.py)
        simdev.create(self.path, images.app_image("v1.22.0", size=600_032))
        self.lib = None
        try:
            import _ota

            self.lib = _ota._lib
        except ImportError:
            pass

    def save(self):
        return self.path.read_bytes(), Path(str(self.path) + ".state").read_text()

    def restore(self, snap):
        self.path.write_bytes(snap[0])
        Path(str(self.path) + ".state").write_text(snap[1])

    def open(self, cut=None, backend="pure"):
        device.set_current(device.Device(str(self.path), cut if backend == "pure" else None))
        if self.lib:
            self.lib.ota_host_open(str(self.path).encode())
            self.lib.ota_host_cut_after(cut if backend == "native" and cut is not None else -1)

    def close(self):
        d = device.current()
        d.close()
        device.set_current(None)
        if self.lib:
            self.lib.ota_host_close()

    def update(self, image: Path, backend: str) -> bool:
        from ota.writer import OTA

        try:
            with (
                open(image, "rb") as f,
                OTA(verbose=False, length=image.stat().st_size, backend=backend) as ota,
            ):
                ota.write_file(f)
            return True
        except PowerCut:
            return False
        except OSError:
            if self.lib and not self.lib.ota_host_powered():
                return False  # the native backend's flash failed at the cut
            raise

    def ops(self) -> int:
        c = device.current().flash.counts
        n = c["erase_4k"] + c["erase_64k"] + c["program_pages"]
        if self.lib:
            hc = self.lib.ota_host_counts().contents
            n += hc[0] + hc[1] + hc[2]
        return n

    def boot(self) -> str:
        dev = device.Device(str(self.path))
        try:
            part, _ = bootloader.boot(dev)
            return part.label
        finally:
            dev.close()

    def confirm(self):
        self.open()
        from ota import stop_rollback

        stop_rollback()
        self.close()


def outside(flash: bytes, target: str) -> bytes:
    a, n = SLOTS[target]
    o, m = OTADATA
    return flash[:o] + flash[o + m : a] + flash[a + n :]


def campaign(rig: Rig, image: Path, backend: str, stride: int, pending: bool) -> dict:
    """Every cut point (or every stride-th) of one update; pending: the running firmware is
    unconfirmed, so the update first confirms it (one more otadata write)."""
    if pending:
        rig.open()
        rig.close()
        # ota_1 runs, unconfirmed; ota_0 holds the previous firmware.
        rig.open()
        rig.update(image, "pure")
        rig.close()
        rig.boot()
    start = rig.save()
    state = device.read_state(str(rig.path))
    running = next(k for k, (a, _) in SLOTS.items() if a == state["running"])
    target = "ota_0" if running == "ota_1" else "ota_1"
    previous = target  # what the slot held before: the fallback of an unconfirmed firmware
    rig.open(backend=backend)
    if backend == "native":
        rig.lib.ota_host_reset_counts()
    device.current().flash.counts.update(dict.fromkeys(device.current().flash.counts, 0))
    assert rig.update(image, backend)
    total = rig.ops()
    rig.close()
    result = {
        "backend": backend,
        "size": image.stat().st_size,
        "pending": pending,
        "ops": total,
        "tried": 0,
        "completed": 0,
        "bricks": 0,
        "wrong_boot": 0,
        "collateral": 0,
    }
    cuts = list(range(0, total + 1, stride))
    if cuts[-1] != total:
        cuts += list(range(max(0, total - 3), total + 1))
    for cut in sorted(set(cuts)):
        rig.restore(start)
        rig.open(cut, backend)
        completed = rig.update(image, backend)
        rig.close()
        after = rig.path.read_bytes()
        result["tried"] += 1
        result["completed"] += completed
        if outside(after, target) != outside(start[0], target):
            result["collateral"] += 1
        try:
            booted = rig.boot()
        except bootloader.Bricked:
            result["bricks"] += 1
            continue
        # An unconfirmed running firmware whose confirmation did not complete is rolled back
        # by the bootloader, to the firmware before it: as if the power had failed before the
        # update started.
        allowed = {target} if completed else {running} | ({previous} if pending else set())
        if booted not in allowed:
            result["wrong_boot"] += 1
    return result


def corrupt(rig: Rig, sector: int, how: str):
    data = bytearray(rig.path.read_bytes())
    o = OTADATA[0] + sector * 4096
    if how == "erased":
        data[o : o + 4096] = b"\xff" * 4096
    elif how == "crc":
        data[o + 28] ^= 0x01
    else:
        data[o : o + 32] = bytes(range(7, 39))
    rig.path.write_bytes(bytes(data))


def scenarios(rig: Rig, image: Path) -> list[tuple[str, str, str]]:
    out = []
    fresh = rig.save()

    def updated(confirm: bool):
        rig.restore(fresh)
        rig.open()
        rig.update(image, "pure")
        rig.close()
        booted = rig.boot()
        if confirm:
            rig.confirm()
        return booted

    for sector, expect in ((0, "ota_1"), (1, "ota_0")):
        for how in ("erased", "crc", "garbage"):
            updated(True)
            corrupt(rig, sector, how)
            out.append((f"otadata[{sector}] {how} (ota_{sector}'s entry)", rig.boot(), expect))
    for how in ("erased", "crc", "garbage"):
        updated(True)
        corrupt(rig, 0, how)
        corrupt(rig, 1, how)
        out.append((f"both otadata sectors {how}", rig.boot(), "ota_0"))
    first = updated(False)
    out.append(("update, boot: runs the new firmware", first, "ota_1"))
    out.append(("... reboot without confirming: rollback", rig.boot(), "ota_0"))
    updated(True)
    out.append(("update, boot, confirm, reboot", rig.boot(), "ota_1"))
    out.append(("... reboot again", rig.boot(), "ota_1"))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=SMALL, help="image for the every-op campaign")
    p.add_argument(
        "--seed-stride",
        type=int,
        default=SEED_STRIDE,
        help="cut every N-th operation of the seed's 1,525,536-byte image (0: skip)",
    )
    p.add_argument(
        "--net-stride",
        type=int,
        default=NET_STRIDE,
        help="network path: cut every N-th flash operation of from_json() (0: skip)",
    )
    p.add_argument(
        "--net-all", action="store_true", help="network path: cut at every flash operation"
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="every 25th operation only; network path: 3 cut points per case",
    )
    p.add_argument(
        "--out",
        type=Path,
        help="write the README's tables (powercut.md, netcut.md) into this directory (default: "
        "build/bench, for a run with the default options; bench/tables.py copies them)",
    )
    a = p.parse_args(argv)
    t0, cpu0 = time.monotonic(), sum(os.times()[:4])
    if not (ROOT / "build" / "c" / "libota_host.so").exists():
        raise SystemExit("build the host library first: make -C tests/c")
    work = Path(tempfile.mkdtemp())
    try:
        rig = Rig(work)
        fresh = rig.save()
        small = work / "small.bin"
        small.write_bytes(images.app_image("v1.23.0", size=a.size))
        seed = work / "seed.bin"
        seed.write_bytes(images.app_image("v1.23.0", size=images.SEED_IMAGE_SIZE))
        runs = []
        stride = 25 if a.quick else 1
        for backend in ("pure", "native"):
            for pending in (False, True):
                rig.restore(fresh)
                runs.append(campaign(rig, small, backend, stride, pending))
            if a.seed_stride and not a.quick:
                rig.restore(fresh)
                runs.append(campaign(rig, seed, backend, a.seed_stride, False))
        rig.restore(fresh)
        scen = scenarios(rig, small)
        net_stride = 1 if a.net_all else (0 if a.quick else a.net_stride)
        net = []
        if a.quick or net_stride:
            (work / "net").mkdir()
            net = netcut.run(work / "net", net_stride)
    finally:
        shutil.rmtree(work)
    lines = [
        "| backend | image | running firmware | flash ops | cut points tried | completed "
        "| bricks | wrong boot | writes outside slot+otadata |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        lines.append(
            f"| {r['backend']} | {r['size']:,} | "
            f"{'unconfirmed' if r['pending'] else 'confirmed'} | {r['ops']} | {r['tried']} | "
            f"{r['completed']} | {r['bricks']} | {r['wrong_boot']} | {r['collateral']} |"
        )
    lines += ["", "| scenario | boots | expected |", "|---|---|---|"]
    for name, got, want in scen:
        lines.append(f"| {name} | {got} | {want}{'' if got == want else '  FAIL'} |")
    blocks = {"powercut": "\n".join(lines)}
    lines = []
    if net:
        lines.append(netcut.table(net))
        for r in net:
            for note in r["notes"]:
                lines.append(f"{r['runtime']} {r['kind']} {r['size']}: {note}")
    tried = sum(r["tried"] for r in runs) + sum(r["tried"] for r in net)
    bricks = sum(r["bricks"] for r in runs) + sum(r["bricked"] for r in net)
    bad = sum(r["bricks"] + r["wrong_boot"] + r["collateral"] for r in runs)
    bad += sum(got != want for _, got, want in scen)
    bad += sum(r["failed"] for r in net)
    wall = time.monotonic() - t0
    cpu = sum(os.times()[:4]) - cpu0
    lines += [
        "",
        f"{tried:,} cut points tried, {bricks} bricks, {bad} failures in all",
        "",
        f"Run time: {int(wall // 60)} min {int(wall % 60)} s "
        f"({int(cpu // 60)} min {int(cpu % 60)} s of CPU) on a 2-core machine shared with "
        "other jobs.",
    ]
    blocks["netcut"] = "\n".join(lines)
    print(blocks["powercut"])
    print()
    print(blocks["netcut"])
    default = (a.size, a.seed_stride, a.net_stride) == (SMALL, SEED_STRIDE, NET_STRIDE)
    out = a.out or (tables.bench_out() if default and not (a.quick or a.net_all) else None)
    if out:
        for name, text in blocks.items():
            tables.write(name, text, out)
        print(f"tables: {out}/powercut.md, netcut.md")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
