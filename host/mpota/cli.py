"""mpota: PC-side tools for MicroPython OTA updates on ESP32, and the ESP32 simulator.

mpota image -o FILE ...           build a test app image (a real ESP32 image, via esptool)
mpota sim create FLASH ...        a simulated ESP32's flash, with a firmware in ota_0
mpota sim boot FLASH              power-cycle the simulated ESP32 (bootloader + rollback)
mpota sim run FLASH SCRIPT        run SCRIPT (or -c CODE) as the simulated device's firmware
mpota sim run FLASH --fs DIR      power on, run boot.py and main.py from DIR, at every reset
mpota sim info FLASH              partition table, otadata and slots of a flash image
mpota demo                        a full OTA update on the simulated ESP32, under MicroPython

mpota manifest IMAGE [--from OLD]  an OTA manifest (sha, length, version, chip, ...) for IMAGE
mpota keygen                      an ECDSA P-256 key pair for signing manifests
mpota sign MANIFEST --key KEY     sign a manifest
mpota serve DIR                   serve firmware files over HTTP, with Range requests
mpota inspect FILE                an image, partition table, firmware.bin or flash dump
mpota push IMAGE --port PORT      update a board over USB serial (mpremote)
mpota convert FIRMWARE -o OUT     a stock MicroPython .bin made OTA-capable (two app slots)
mpota release publish IMAGE DIR   a channel's release on a static host (or s3://BUCKET), staged
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from espsim import chips

from . import images, inspect, simdev


def _size(s: str) -> int:
    s = s.strip().upper()
    for suffix, mult in (("MB", 1 << 20), ("M", 1 << 20), ("KB", 1 << 10), ("K", 1 << 10)):
        if s.endswith(suffix):
            return int(float(s[: -len(suffix)]) * mult)
    return int(s, 0)


def _table(csv: str | None):
    if not csv:
        return None
    return inspect.table_from_csv(Path(csv).read_text())


def cmd_image(a) -> int:
    import secrets

    seed = a.seed if a.seed is not None else secrets.randbits(32)
    data = images.app_image(
        a.version,
        a.size,
        a.chip,
        project_version=a.project_version,
        board=a.board,
        date=a.date,
        build=seed,
        idf_ver=a.idf_ver,
    )
    Path(a.output).parent.mkdir(parents=True, exist_ok=True)
    Path(a.output).write_bytes(data)
    print(
        f"{a.output}: MicroPython {a.version}"
        + (f" (PROJECT_VER {a.project_version})" if a.project_version else "")
        + f" for {a.chip}, {len(data)} bytes, build {data[32 + 144 : 32 + 152].hex()}..."
    )
    return 0


def _chip_rev(s: str) -> int:
    """A chip revision as esptool prints it ("v0.4", "1.0") or major * 100 + minor ("4")."""
    major, dot, minor = s.lstrip("v").partition(".")
    try:
        return int(major) * 100 + int(minor) if dot else int(major)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a chip revision: {s!r} (e.g. v0.4)") from None


def _expires(s: str) -> str:
    from .manifest import check_expires

    try:
        return check_expires(s)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _release(s: str) -> str:
    from .manifest import check_version

    try:
        return check_version(s)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _mac(s: str) -> int:
    """A MAC address as six hex bytes, e.g. 24:0a:c4:12:34:56 (or with - between them)."""
    parts = s.replace("-", ":").split(":")
    if len(parts) != 6 or not all(len(p) == 2 for p in parts):
        raise argparse.ArgumentTypeError(f"not a MAC address: {s!r} (e.g. 24:0a:c4:12:34:56)")
    try:
        return int("".join(parts), 16)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a MAC address: {s!r}") from None


def cmd_sim_create(a) -> int:
    if a.firmware:
        fw = Path(a.firmware).read_bytes()
    else:
        try:
            fw = images.app_image(a.version, chip=a.chip)
        except KeyError:
            print(
                f"mpota: no built-in test firmware for {chips.get(a.chip).display} yet: "
                "give one with --firmware",
                file=sys.stderr,
            )
            return 2
    if a.fs and Path(a.fs).exists() and not Path(a.fs).is_dir():
        print(f"mpota sim create: --fs {a.fs}: not a directory", file=sys.stderr)
        return 2
    log = simdev.create(
        a.flash,
        fw,
        table=_table(a.table),
        flash_size=a.flash_size,
        chip=a.chip,
        chip_rev=a.chip_rev,
        rollback=not a.no_rollback,
        mac=a.mac,
    )
    soc = chips.get(a.chip)
    rev = a.chip_rev if a.chip_rev is not None else soc.default_rev
    rev = f"v{rev // 100}.{rev % 100}"
    print(f"{a.flash}: {a.flash_size} bytes of simulated flash, {soc.display} {rev}")
    for line in log:
        print("espsim: " + line)
    if a.fs:
        if simdev.seed_fs(a.fs):
            print(f"{a.fs}: the board's filesystem, with the port's stock boot.py")
        else:
            print(f"{a.fs}: the board's filesystem (its boot.py is kept)")
    return 0


def cmd_sim_boot(a) -> int:
    from espsim.bootloader import Bricked

    try:
        for line in simdev.power_on(a.flash):
            print("espsim: " + line)
    except Bricked as e:
        print(f"espsim: the device does not boot: {e}")
        return 3
    return 0


def cmd_sim_run(a) -> int:
    runtime = a.runtime
    if a.fs:
        if Path(a.fs).exists() and not Path(a.fs).is_dir():
            print(f"mpota sim run: --fs {a.fs}: not a directory", file=sys.stderr)
            return 2
        return simdev.play(
            a.flash,
            a.fs,
            script=a.script,
            code=a.code,
            runtime=runtime,
            max_boots=a.max_boots,
            heap=a.heap,
            extra_path=a.path,
            hosts=a.hosts or "",
            cut_after=a.cut_after,
        )
    env = simdev.env(a.flash, runtime, a.cut_after, a.path)
    if a.hosts:
        env["ESPSIM_HOSTS"] = a.hosts
    cmd = simdev.command(runtime, a.heap)
    cmd += simdev.code_args(a.code) if a.code else simdev.script_args(Path(a.script).resolve())
    return subprocess.call(cmd, env=env)


def cmd_sim_info(a) -> int:
    print(inspect.describe_flash(Path(a.flash).read_bytes()))
    return 0


def cmd_demo(a) -> int:
    from . import demo

    return demo.run(Path(a.dir))


def cmd_manifest(a) -> int:
    from . import manifest

    m = manifest.make(
        a.image,
        a.out_dir,
        a.compress,
        a.url,
        a.version,
        a.expires,
        a.sequence,
        a.sources or (),
    )
    if a.key:
        m = manifest.sign(m, Path(a.key).read_bytes())
    out = a.output or str(Path(a.out_dir or Path(a.image).parent) / "manifest.json")
    manifest.dump(m, out)
    print(
        f"{out}: {m['project']} {m['version']}"
        + (f" (MicroPython {mp})" if (mp := m.get("micropython")) and mp != m["version"] else "")
        + f", build {m['build'][:8]} for {m['chip']}, {m['length']} bytes"
        + (f", {m['compression']} {m['compressed_length']} bytes" if a.compress else "")
        + (f", sequence {a.sequence}" if a.sequence is not None else "")
        + (f", expires {a.expires}" if a.expires else "")
        + (", signed" if a.key else "")
    )
    for p in m.get("patches", []):
        print(
            f"  patch from build {p['build'][:8]}: {p['file']}, {p['length']} bytes "
            f"({100 * p['length'] / m['length']:.1f} % of the image)"
        )
    return 0


def cmd_keygen(a) -> int:
    from . import manifest

    manifest.keygen(a.private, a.public)
    print(
        f"private key: {a.private} (keep it off devices)\npublic key:  {a.public} (copy it "
        "to the device as ota_pubkey.pem)"
    )
    return 0


def cmd_sign(a) -> int:
    from . import manifest

    m = json.loads(Path(a.manifest).read_text())
    m = manifest.sign(m, Path(a.key).read_bytes())
    manifest.dump(m, a.output or a.manifest)
    print(f"{a.output or a.manifest}: signed")
    return 0


def cmd_serve(a) -> int:
    from . import serve

    server = serve.start(a.dir, a.bind, a.port, quiet=False)
    host, port = server.server_address[:2]
    print(f"Serving {a.dir} on http://{host}:{port}/ (Range requests supported); ctrl-C stops")
    for f in sorted(Path(a.dir).glob("*.json")):
        print(f"  manifest: http://{host}:{port}/{f.name}")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.shutdown()
    return 0


def cmd_inspect(a) -> int:
    print(inspect.describe_file(Path(a.file).read_bytes()))
    return 0


def cmd_push(a) -> int:
    from . import manifest, push

    image = Path(a.image).read_bytes()
    m = manifest.describe_image(a.image)
    print(f"Pushing {m['project']} {m['version']} ({m['length']} bytes) to {a.port}...")
    digest = push.push_serial(a.port, image, a.baud, a.reboot)
    print(f"Device: written and verified, SHA256={digest}")
    return 0


def cmd_convert(a) -> int:
    from . import convert

    try:
        data = Path(a.firmware).read_bytes()
        bl = Path(a.bootloader).read_bytes() if a.bootloader else None
        r = convert.convert(data, a.chip, a.flash_size, a.slot_size, bl)
        convert.write_atomic(a.output, r.image)
    except (OSError, convert.ConvertError) as e:
        print(f"mpota convert: {a.firmware}: {e}", file=sys.stderr)
        return 2
    for line in r.lines:
        print(line)
    if a.csv:
        print(r.csv, end="")
    print(
        f"{a.output}: {len(r.image)} bytes; write it with: esptool --chip {r.chip} "
        f"write-flash 0x{r.offset:x} {a.output}"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="mpota", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("image", help="build a test app image")
    s.add_argument("-o", "--output", required=True)
    s.add_argument("--version", default="v1.24.0", help="MicroPython version (git describe)")
    s.add_argument("--size", type=_size, default=None, help="exact size in bytes")
    s.add_argument("--chip", default="esp32", choices=sorted(images.IMAGE_CLASSES))
    s.add_argument(
        "--project-version",
        default="",
        help="esp_app_desc_t.version, as a custom build with PROJECT_VER sets it (default empty)",
    )
    s.add_argument("--board", help="MICROPY_HW_BOARD_NAME (default: the chip's generic board)")
    s.add_argument("--date", help="MICROPY_BUILD_DATE, YYYY-MM-DD")
    s.add_argument("--idf-ver", default="v5.5.2", help="ESP-IDF version (default v5.5.2)")
    s.add_argument(
        "--seed", type=int, help="build seed: the same seed gives the same image (default random)"
    )
    s.set_defaults(fn=cmd_image)

    sim = sub.add_parser("sim", help="the simulated ESP32").add_subparsers(
        dest="sim", required=True
    )
    s = sim.add_parser("create", help="create a simulated flash with a firmware in ota_0")
    s.add_argument("flash")
    s.add_argument("--firmware", help="app image for the first app partition")
    s.add_argument("--version", default="v1.24.0", help="version of the built-in test firmware")
    s.add_argument("--table", help="partitions.csv (default: the seed's 4 MB OTA layout)")
    s.add_argument("--flash-size", type=_size, default=simdev.FLASH_SIZE)
    s.add_argument(
        "--chip",
        default="esp32",
        choices=sorted(chips.CHIPS),
        help="the simulated chip (its memory map, chip id and revision: espsim/chips.py)",
    )
    s.add_argument(
        "--chip-rev",
        type=_chip_rev,
        default=None,
        help="chip revision, e.g. v0.4 (default: a common one for the chip)",
    )
    s.add_argument(
        "--no-rollback",
        action="store_true",
        help="bootloader built without CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE",
    )
    s.add_argument(
        "--fs", metavar="DIR", help="the board's filesystem: create DIR with the port's boot.py"
    )
    s.add_argument(
        "--mac",
        type=_mac,
        help="the chip's base MAC, which machine.unique_id() returns, e.g. 24:0a:c4:12:34:56 "
        "(default: 24:0a:c4 and 3 bytes of a hash of FLASH's path: each device its own)",
    )
    s.set_defaults(fn=cmd_sim_create)

    s = sim.add_parser("boot", help="power-cycle the simulated ESP32")
    s.add_argument("flash")
    s.set_defaults(fn=cmd_sim_boot)

    s = sim.add_parser("run", help="run a script as the simulated device's firmware")
    s.add_argument("flash")
    s.add_argument("script", nargs="?")
    s.add_argument("-c", "--code")
    s.add_argument(
        "--runtime",
        default="micropython",
        choices=simdev.RUNTIMES,
        help="interpreter running as the firmware (default micropython)",
    )
    s.add_argument(
        "--heap",
        default="2M",
        help="MicroPython heap for the device code (default 2M; the simulator has its own)",
    )
    s.add_argument("--cut-after", type=int, help="power cut after N flash erase/program ops")
    s.add_argument("--hosts", help="simulated LAN, e.g. nas.lan=127.0.0.1:8000")
    s.add_argument(
        "--fs",
        metavar="DIR",
        help="the board's filesystem (its current directory): after SCRIPT, or at power-on "
        "without one, run boot.py then main.py from DIR at every boot that follows a reset",
    )
    s.add_argument(
        "--max-boots",
        type=int,
        default=10,
        metavar="N",
        help="with --fs: stop after N boots (default 10)",
    )
    s.add_argument(
        "--path",
        action="append",
        default=[],
        metavar="DIR",
        help="put DIR first on the device's module path (repeatable)",
    )
    s.set_defaults(fn=cmd_sim_run)

    s = sim.add_parser("info", help="partition table, otadata and slots of a flash image")
    s.add_argument("flash")
    s.set_defaults(fn=cmd_sim_info)

    s = sub.add_parser("demo", help="a full OTA update on the simulated ESP32 (MicroPython)")
    s.add_argument("--dir", default="build/demo", help="working directory (default build/demo)")
    s.set_defaults(fn=cmd_demo)

    s = sub.add_parser("manifest", help="make an OTA manifest for an app image")
    s.add_argument("image")
    s.add_argument("-o", "--output", help="manifest file (default DIR/manifest.json)")
    s.add_argument("--out-dir", help="where compressed images and the manifest go")
    s.add_argument(
        "--compress",
        choices=["zlib", "gzip", "mpz"],
        help="serve the image compressed (mpz: resumable, see README 'Delta updates')",
    )
    s.add_argument(
        "--from",
        dest="sources",
        action="append",
        metavar="OLD.bin",
        help="also write a patch from this older image (repeat for several)",
    )
    s.add_argument(
        "--url",
        help="firmware URL to put in the manifest (default: file name, "
        "relative to the manifest's URL)",
    )
    s.add_argument("--key", help="sign with this private key (PEM)")
    s.add_argument(
        "--version",
        type=_release,
        help="the release version devices compare, e.g. your product's 2.3.1 (default: the "
        "image's own: PROJECT_VER where the build sets it, else MicroPython's from its banner)",
    )
    s.add_argument(
        "--expires",
        type=_expires,
        help="UTC time (YYYY-MM-DDTHH:MM:SSZ) from which devices refuse this manifest",
    )
    s.add_argument(
        "--sequence",
        type=int,
        help="release number: devices refuse a manifest whose sequence is not above the "
        "highest they installed",
    )
    s.set_defaults(fn=cmd_manifest)

    s = sub.add_parser("keygen", help="make an ECDSA P-256 key pair for manifests")
    s.add_argument("--private", default="ota_signing_key.pem")
    s.add_argument("--public", default="ota_pubkey.pem")
    s.set_defaults(fn=cmd_keygen)

    s = sub.add_parser("sign", help="sign a manifest with a private key")
    s.add_argument("manifest")
    s.add_argument("--key", required=True)
    s.add_argument("-o", "--output")
    s.set_defaults(fn=cmd_sign)

    s = sub.add_parser("serve", help="serve firmware files over HTTP (with Range)")
    s.add_argument("dir")
    s.add_argument("--bind", default="127.0.0.1", help="address (default 127.0.0.1)")
    s.add_argument("--port", type=int, default=8000)
    s.set_defaults(fn=cmd_serve)

    s = sub.add_parser("inspect", help="an image, partition table, firmware.bin or flash dump")
    s.add_argument("file")
    s.set_defaults(fn=cmd_inspect)

    s = sub.add_parser("push", help="update a board over USB serial (mpremote)")
    s.add_argument("image")
    s.add_argument("--port", required=True, help="serial port, e.g. /dev/ttyUSB0")
    s.add_argument("--baud", type=int, default=115200)
    s.add_argument("--reboot", action="store_true", help="reset into the new firmware")
    s.set_defaults(fn=cmd_push)

    s = sub.add_parser(
        "convert",
        help="a stock MicroPython .bin (or .app-bin) made OTA-capable",
        description="Turn MicroPython's merged .bin for a board (or its .app-bin, with --chip "
        "and --flash-size) into an image with two app slots: ota_0 at 0x10000 where the app "
        "already is, ota_1 after it, blank otadata (the bootloader boots ota_0), and the "
        "filesystem after the slots (a vfs row to the end of flash where the stock table had "
        "one, up to v1.25; none from v1.26, whose firmware registers one past the table). "
        "Slot size: max(app size, the largest stock app of the chip: ESP32 1.70 MB, S3 1.65, "
        "C3 1.66, C6 1.86, C2 1.49) + 64 KB, rounded up to 64 KB, so that a later stock "
        "release fits the other slot (ESP32's app grew ~60 KB from v1.24 to v1.28). The "
        "bootloader header's flash size is changed only when the new table ends past it. "
        "Refused, naming the numbers, when the app does not fit a slot or less than 64 KB is "
        "left for the filesystem. The image blanks nvs, otadata and the new filesystem's "
        "first 8 KB: the board starts a fresh filesystem at its first boot (copy your files "
        "off first).",
    )
    s.add_argument("firmware", help="the stock .bin (merged) or .app-bin (app only)")
    s.add_argument("-o", "--output", required=True, help="the OTA-capable image to write")
    s.add_argument("--chip", choices=sorted(images.IMAGE_CLASSES), help="needed for an .app-bin")
    s.add_argument(
        "--flash-size",
        type=_size,
        help="the board's flash, e.g. 8MB (default for a .bin: its bootloader header's)",
    )
    s.add_argument(
        "--slot-size", type=_size, help="size of each app slot, a multiple of 64 KB (0x10000)"
    )
    s.add_argument(
        "--bootloader",
        help="with an .app-bin: the bootloader image to put in front (else the output starts "
        "at 0x8000 and the board keeps its own)",
    )
    s.add_argument("--csv", action="store_true", help="print the new partitions.csv")
    s.set_defaults(fn=cmd_convert)

    from . import release

    s = sub.add_parser(
        "release",
        help="releases on a static host or S3 bucket: channels, staged rollouts",
        description="Releases on a static host (README 'Fleets'): publish an image as a "
        "channel's release (signed manifest with a rollout plan, files named by content), show "
        "the channels, write an nginx configuration that serves the directory.",
    )
    release.arguments(s)
    s.set_defaults(fn=release.run)

    a = p.parse_args(argv)
    if a.cmd == "sim" and a.sim == "run":
        if not (a.script or a.code or a.fs):
            p.error("sim run needs a SCRIPT, -c CODE or --fs DIR")
        if a.script and a.code:
            p.error("sim run takes a SCRIPT or -c CODE, not both")
        if a.max_boots < 1:
            p.error(f"--max-boots must be at least 1, not {a.max_boots}")
    return a.fn(a)


if __name__ == "__main__":
    sys.exit(main())
