# The identity of the firmware in the simulated device's running slot, as the board reports it:
# os.uname() and sys.implementation of the esp32 port (extmod/modos.c, py/modsys.c) with the
# MicroPython version, build date and board/chip taken from the banner of the image in the
# running slot (espsim/banner.py), not from the interpreter that plays the firmware.
#
# When the running image holds no banner (or the device has not booted), the interpreter's own
# values are given instead: there is nothing else to report.

import os
import sys
from collections import namedtuple

from espsim import banner, device

_found = 0  # 0: not looked yet
_banner = None


def _read_banner():
    path = os.getenv("ESPSIM_FLASH")
    if not path:
        return None
    addr = device.read_state(path)["running"]
    if not addr:
        return None
    # A read-only handle of its own: the banner is read once, outside the simulated flash
    # operations (and power-cut counts) of the device code.
    with open(path, "rb") as f:
        f.seek(0, 2)
        size = f.tell() - addr

        def read(a, n):
            f.seek(a)
            return f.read(n)

        return banner.find(read, addr, size)


def running_banner():
    # {"tag", "date", "machine"} of the running image, or None.
    global _found, _banner
    if not _found:
        _found = 1
        try:
            _banner = _read_banner()
        except (OSError, ValueError, KeyError):
            _banner = None
    return _banner


def _fields():
    # (release, version, machine, version tuple) of the running image, or None.
    b = running_banner()
    if b is None:
        return None
    v = banner.version_tuple(b["tag"])
    if v is None:
        return None
    # The board name is not in the banner when the board overrides MICROPY_BANNER_MACHINE; the
    # chip the simulated device is gives the MCU then.
    machine = b["machine"] or "ESP32 module with " + _chip_name()
    return banner.release(b["tag"]), b["tag"] + " on " + b["date"], machine, v


def _chip_name():
    path = os.getenv("ESPSIM_FLASH")
    chip = device.read_state(path)["chip"] if path else "esp32"
    return chip.upper()


_uname_result = namedtuple(
    "uname_result", ("sysname", "nodename", "release", "version", "machine")
)


class _Impl:
    # sys.implementation's fields (an attrtuple on the board)
    def __init__(self, name, version, machine, mpy, thread):
        self.name = name
        self.version = version
        self._machine = machine
        if mpy is not None:
            self._mpy = mpy
        if thread is not None:
            self._thread = thread

    def __repr__(self):
        r = "(name=%r, version=%r, _machine=%r" % (self.name, self.version, self._machine)
        for k in ("_mpy", "_thread"):
            if hasattr(self, k):
                r += ", %s=%r" % (k, getattr(self, k))
        return r + ")"


def uname(interpreter_uname=None):
    # os.uname() of the esp32 port: sysname and nodename are MICROPY_PY_SYS_PLATFORM ("esp32"),
    # release MICROPY_VERSION_STRING, version "<git tag> on <build date>", machine
    # "<board> with <mcu>".
    f = _fields()
    if f is None:
        # No banner: the interpreter's own values (CPython's os.uname(), or on MicroPython's
        # unix port, which has no os.uname(), the same fields from its sys module).
        if interpreter_uname is not None:
            return interpreter_uname()
        impl = sys.implementation
        ver = sys.version.split("; ", 1)[-1].split(" ", 1)[-1]
        rel = "%d.%d.%d" % impl.version[:3]
        return _uname_result(sys.platform, sys.platform, rel, ver, impl._machine)
    return _uname_result("esp32", "esp32", f[0], f[1], f[2])


def implementation(interp):
    # sys.implementation of the running image: name, version (major, minor, micro,
    # "preview" or ""), _machine from the banner; _mpy and _thread stay the interpreter's (they
    # say which .mpy files and threads the interpreter that plays the firmware can run). The
    # board's build name (_build, e.g. "ESP32_GENERIC_C3") is not in the banner: left out.
    f = _fields()
    if f is None:
        return interp
    return _Impl(
        "micropython",
        f[3],
        f[2],
        getattr(interp, "_mpy", None),
        getattr(interp, "_thread", None),
    )


def version(interp_version):
    # sys.version: "3.4.0; MicroPython <tag> on <date>" (py/modsys.c).
    b = running_banner()
    if b is None or _fields() is None:
        return interp_version
    return "3.4.0; MicroPython %s on %s" % (b["tag"], b["date"])
