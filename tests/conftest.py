"""Shared fixtures: real ESP32 app images, a simulated ESP32 per test, device code run under the
MicroPython unix port and under CPython, and a local HTTP server."""

from __future__ import annotations

import functools
import hashlib
import http.server
import os
import shutil
import socket
import subprocess
import textwrap
import threading
import time
from pathlib import Path

import pytest
from espsim import device, idf, otadata
from mpota import images, inspect, simdev

ROOT = Path(__file__).resolve().parent.parent


def micropython_native() -> str | None:
    """A MicroPython unix port with the _ota module: $OTA_MICROPYTHON, or built here from the
    MicroPython source tree $MICROPY_DIR (its submodules checked out; extra make arguments in
    $MICROPY_MAKEFLAGS, e.g. "MICROPY_PY_FFI=0 MICROPY_PY_BTREE=0")."""
    if os.environ.get("OTA_MICROPYTHON"):
        return os.environ["OTA_MICROPYTHON"]
    tree = os.environ.get("MICROPY_DIR")
    if not tree:
        return None
    build = ROOT / "build" / "micropython-unix"
    simdev.build_unix_port(tree, build)
    os.environ["OTA_MICROPYTHON"] = str(build / "micropython")
    return os.environ["OTA_MICROPYTHON"]


# The device runs as stock firmware (pure backend) under MicroPython and CPython, and with the
# native backend under CPython (the C core through ctypes) and, given a unix port built with
# usermod/ota_native, under MicroPython through the real binding.
MICROPYTHON_NATIVE = micropython_native()
RUNTIMES = ["micropython", "cpython", "cpython-native"]
if MICROPYTHON_NATIVE:
    RUNTIMES.append("micropython-native")


def build_c() -> None:
    r = subprocess.run(
        ["make", "-s", "-C", str(ROOT / "tests" / "c")], capture_output=True, text=True
    )
    if r.returncode != 0:
        pytest.fail(f"building the C core and host backend failed:\n{r.stdout}{r.stderr}")


def c_test_names(binary: Path) -> list[str]:
    """The tests of a tests/c program (`binary --list`), built first."""
    build_c()
    return subprocess.run(
        [str(binary), "--list"], capture_output=True, text=True, check=True
    ).stdout.split()


def run_c_test(binary: Path, fixtures: Path, name: str) -> None:
    """Run one test of a tests/c program on its fixtures directory: it must say "ok NAME"."""
    r = subprocess.run(
        [str(binary), str(fixtures), name], capture_output=True, text=True, timeout=300
    )
    print(r.stdout)
    assert r.returncode == 0 and f"ok {name}" in r.stdout.splitlines(), r.stdout + r.stderr


@functools.cache
@functools.lru_cache(maxsize=32)
def image(version: str = "v1.23.0", size: int | None = None, chip: str = "esp32") -> bytes:
    return images.app_image(version, size=size, chip=chip)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Sim:
    """A simulated ESP32 in a file, and the interpreter that runs as its firmware."""

    def __init__(self, path: Path, runtime: str):
        self.path = path
        self.runtime = runtime
        self.backend = "native" if runtime.endswith("-native") else "pure"
        self.out = ""

    def run(self, code: str, ok: bool = True, **kw):
        # The board's filesystem (where ota keeps its state files): the test's directory.
        if kw.get("cwd") is None:
            kw["cwd"] = self.path.parent
        r = simdev.run(self.path, textwrap.dedent(code), self.runtime, **kw)
        self.out = r.stdout + r.stderr
        if ok and r.returncode != 0:
            pytest.fail(
                f"device code failed (exit {r.returncode}) under {self.runtime}:\n{self.out}"
            )
        return r

    def power_on(self) -> list[str]:
        return simdev.power_on(self.path)

    def flash(self) -> bytes:
        return self.path.read_bytes()

    def _dev(self):
        return device.Device(str(self.path))

    def running(self) -> str | None:
        st = device.read_state(str(self.path))
        dev = self._dev()
        try:
            for p in dev.parts:
                if p.address == st["running"] and p.type == 0:
                    return p.label
            return None
        finally:
            dev.close()

    def boot_slot(self) -> str | None:
        """The partition esp_ota_get_boot_partition() names (what set_boot chose)."""
        dev = self._dev()
        try:
            p = idf.get_boot_partition(dev)
            return p.label if p else None
        finally:
            dev.close()

    def state(self, label: str) -> int | None:
        dev = self._dev()
        try:
            try:
                return idf.get_state_partition(dev, dev.find_first(0, 0xFF, label))
            except Exception:
                return None
        finally:
            dev.close()

    def region(self, label: str) -> bytes:
        dev = self._dev()
        try:
            p = dev.find_first(0xFF, 0xFF, label)
            return self.flash()[p.address : p.address + p.size]
        finally:
            dev.close()

    def otadata_entries(self) -> list[otadata.Entry]:
        raw = self.region("otadata")
        return [otadata.Entry.unpack(raw[0:32]), otadata.Entry.unpack(raw[4096:4128])]


@pytest.fixture(scope="session")
def native_lib() -> None:
    build_c()


@pytest.fixture(params=RUNTIMES)
def runtime(request) -> str:
    if request.param == "cpython-native":
        request.getfixturevalue("native_lib")
    return request.param


# Partition tables other than the seed's, as partitions.csv text.
FACTORY_ONLY = (
    "nvs,data,nvs,0x9000,0x6000,\nphy_init,data,phy,0xf000,0x1000,\n"
    "factory,app,factory,0x10000,0x1f0000,\n"
)
ONE_OTA_SLOT = (
    "nvs,data,nvs,0x9000,0x4000,\notadata,data,ota,0xd000,0x2000,\n"
    "ota_0,app,ota_0,0x10000,0x1f0000,\n"
)


# The device scenarios run on the ESP32 under every runtime, and on one Xtensa (ESP32-S3) and one
# RISC-V (ESP32-C3) chip under one runtime each: `@chip_runs` on a test that uses `sim`,
# `make_sim` or `chip`.
CHIP_RUNS = [pytest.param("esp32", r, id=r) for r in RUNTIMES] + [
    pytest.param("esp32s3", "micropython", id="esp32s3-micropython"),
    pytest.param("esp32c3", "cpython-native", id="esp32c3-cpython-native"),
]
chip_runs = pytest.mark.parametrize(("chip", "runtime"), CHIP_RUNS)


@pytest.fixture
def chip() -> str:
    """The simulated chip (espsim.chips); ESP32 unless a test is marked @chip_runs."""
    return "esp32"


@pytest.fixture
def make_sim(request, tmp_path: Path, runtime: str, chip: str):
    """make_sim(csv=None, firmware=None, **create_args): a booted simulated chip (`chip`)."""
    if runtime == "cpython-native":
        request.getfixturevalue("native_lib")

    def make(csv: str | None = None, firmware: bytes | None = None, **kw) -> Sim:
        path = tmp_path / "flash.bin"
        table = inspect.table_from_csv(csv) if csv else None
        kw.setdefault("chip", chip)
        fw = firmware or image("v1.22.0", 1_400_000, chip=kw["chip"])
        simdev.create(path, fw, table=table, **kw)
        return Sim(path, runtime)

    return make


@pytest.fixture
def sim(make_sim) -> Sim:
    """A 4 MB ESP32 (or `chip`) with the seed's partition table, running micropython v1.22.0
    from ota_0."""
    return make_sim()


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def site(tmp_path: Path):
    """A web server (tests/netserver.py: Range, ETag, its request log) on 127.0.0.1 serving
    tmp_path/www: (www, server, base URL)."""
    import netserver

    www = tmp_path / "www"
    www.mkdir()
    server = netserver.start(www)
    yield www, server, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def http_dir(tmp_path: Path):
    """(directory, base URL) of an HTTP server on 127.0.0.1."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(_Quiet, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(proc: subprocess.Popen, port: int, timeout: float = 10) -> bool:
    """True once something accepts connections on 127.0.0.1:port; False if `proc` (the server
    started for it) ended first, or after `timeout` seconds."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True
        except OSError:
            time.sleep(0.02)
    return False


def stop_process(proc: subprocess.Popen | None) -> None:
    """SIGTERM (a server's orderly exit), SIGKILL after 10 s."""
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def need_program(name: str) -> str:
    """The path of a Debian program the tests start (nginx, mosquitto): a test without it is
    skipped, except in CI, where .ci/run installs it and its absence fails the test."""
    found = shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/usr/local/sbin/{name}") if os.path.exists(p)), None
    )
    if not found:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is not installed (apt-get install {name}: .ci/run does)")
        pytest.skip(f"{name} is not installed (apt-get install {name})")
    return found
