"""Opt-in: the _ota module compiled into a real MicroPython unix port (USER_C_MODULES), with the
host backend in place of ESP-IDF. Given $MICROPY_DIR (a MicroPython source tree) conftest builds
it; given $OTA_MICROPYTHON it uses that build. Every device test then also runs under it, as the
runtime "micropython-native"."""

import subprocess

import pytest
from conftest import MICROPYTHON_NATIVE

pytestmark = pytest.mark.skipif(
    MICROPYTHON_NATIVE is None,
    reason="no MicroPython build with _ota: set MICROPY_DIR to a MicroPython source tree (with "
    "its submodules) or OTA_MICROPYTHON to a unix port built with "
    "USER_C_MODULES=<this repo>/usermod",
)


def test_the_build_has_the_native_module():
    r = subprocess.run(
        [
            MICROPYTHON_NATIVE,
            "-c",
            "import _ota, sys; print(sys.implementation.name, "
            "_ota.BUFFER_SIZE, _ota.PROGRESS_STEP, hasattr(_ota, 'flash_counts'), "
            "sorted(dir(_ota.Update)))",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 0, r.stderr
    name, buf, step, host, methods = r.stdout.split(" ", 4)
    assert (name, buf, step, host) == ("micropython", "4096", "65536", "True")
    for m in ("write", "write_from", "finish", "abort", "sha", "__enter__", "__exit__", "__del__"):
        assert f"'{m}'" in methods
