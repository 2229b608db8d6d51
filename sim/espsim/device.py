# The simulated chip: its flash, its partition table as the running app loaded it, and the few
# facts a real chip keeps outside flash (which partition the bootloader started, the chip model
# and revision, whether the bootloader and app were built with rollback enabled).
#
# <flash>.state holds those facts as key=value lines, so that the C host backend can read the same
# file:
#   running=0x10000     address of the partition the bootloader started (0 = not booted yet)
#   chip=esp32c3        chip model, one of espsim/chips.py
#   chip_rev=4          chip revision, major * 100 + minor (default: the chip's, chips.py)
#   rollback=1          CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE
#   boots=3             number of simulated boots
#   mac=0x240ac4a1b2c3  the chip's base MAC address (eFuse): machine.unique_id() returns its 6
#                       bytes; without it, one derived from the flash file's name

import os

from espsim import chips, errors, parttable
from espsim.flash import Flash

DEFAULT_STATE = (
    ("running", 0),
    ("chip", "esp32"),
    ("chip_rev", None),
    ("rollback", 1),
    ("boots", 0),
    ("mac", None),
)

ESPRESSIF_OUI = 0x240AC4  # the first three bytes of an Espressif base MAC


# A base MAC for the simulated chip in the flash file `path` when none was given: Espressif's
# OUI and three bytes of the SHA-256 of the path, so that each simulated device has its own.
def default_mac(path):
    import hashlib

    d = hashlib.sha256(path.encode()).digest()
    return (ESPRESSIF_OUI << 24) | (d[0] << 16) | (d[1] << 8) | d[2]


def read_state(path):
    st = {}
    for k, v in DEFAULT_STATE:
        st[k] = v
    try:
        f = open(path + ".state")
    except OSError:
        st["chip_rev"] = chips.get(st["chip"]).default_rev
        return st
    with f:
        for line in f.read().split("\n"):
            line = line.strip()
            if not line or line.startswith("#") or "=" not in line:
                continue
            k, v = line.split("=", 1)
            st[k.strip()] = v.strip() if k.strip() == "chip" else int(v.strip(), 0)
    if st["chip_rev"] is None:
        st["chip_rev"] = chips.get(st["chip"]).default_rev
    return st


def write_state(path, st):
    with open(path + ".state", "w") as f:
        for k, _ in DEFAULT_STATE:
            v = st.get(k)
            if v is None and k == "mac":
                continue
            if k in ("running", "mac"):
                f.write("%s=0x%x\n" % (k, v))
            else:
                f.write("%s=%s\n" % (k, v))


class Device:
    def __init__(self, path, cut_after=None):
        self.path = path
        self.flash = Flash(path, cut_after)
        self.state = read_state(path)
        self.chip = chips.get(self.state["chip"])
        self.chip_id = self.chip.chip_id
        self.chip_rev = self.state["chip_rev"]
        self.rollback = bool(self.state["rollback"])
        self.parts = None
        self.load_partitions()

    def load_partitions(self):
        # The app reads the table once at start-up (esp_partition_find's cached list).
        buf = self.flash.read(parttable.OFFSET, parttable.MAX_LEN)
        self.parts = parttable.parse(buf, self.flash.size)
        # MicroPython v1.26+ registers a "vfs" past the table when the table has none (main.c)
        fs = parttable.fs_region(self.parts, self.flash.size)
        if fs is not None and fs not in self.parts and self._registers_vfs():
            self.parts.append(fs)

    def _registers_vfs(self):
        # The firmware in the running slot registers the region when it is v1.26 or later, or
        # when its version is unknown (no banner, not booted yet: the port as it is today).
        # Read with a handle of its own: not the device code's flash operations.
        from espsim import banner

        addr = self.state["running"]
        app = None
        for p in self.parts:
            if p.type == parttable.TYPE_APP and p.address == addr:
                app = p
        if app is None:
            return True
        try:
            with open(self.path, "rb") as f:

                def read(a, n):
                    f.seek(a)
                    return f.read(n)

                b = banner.find(read, app.address, app.size)
        except (OSError, ValueError, KeyError):
            return True
        v = banner.version_tuple(b["tag"]) if b else None
        return v is None or v >= (1, 26)

    def running(self):
        for p in self.parts:
            if p.type == parttable.TYPE_APP and p.address == self.state["running"]:
                return p
        raise RuntimeError(
            "simulated device has not booted: run machine.reset() or `mpota sim boot` first"
        )

    def find(self, ptype, subtype=parttable.SUBTYPE_ANY, label=None):
        out = []
        for p in self.parts:
            if ptype != 0xFF and p.type != ptype:
                continue
            if subtype != parttable.SUBTYPE_ANY and p.subtype != subtype:
                continue
            if label is not None and p.label != label:
                continue
            out.append(p)
        return out

    def find_first(self, ptype, subtype=parttable.SUBTYPE_ANY, label=None):
        r = self.find(ptype, subtype, label)
        return r[0] if r else None

    # esp_partition_read/write/erase_range, with their argument checks
    # (components/esp_partition/partition_target.c).
    def _bounds(self, p, offset, n):
        if offset < 0 or offset > p.size:
            raise errors.EspError(errors.ESP_ERR_INVALID_ARG)
        if n > p.size - offset:
            raise errors.EspError(errors.ESP_ERR_INVALID_SIZE)

    def part_read(self, p, offset, n):
        self._bounds(p, offset, n)
        return self.flash.read(p.address + offset, n)

    def part_readinto(self, p, offset, buf):
        self._bounds(p, offset, len(buf))
        self.flash.readinto(p.address + offset, buf)

    def part_write(self, p, offset, data):
        self._bounds(p, offset, len(data))
        self.flash.program(p.address + offset, data)

    def part_erase(self, p, offset, n):
        self._bounds(p, offset, n)
        if n % 4096:
            raise errors.EspError(errors.ESP_ERR_INVALID_SIZE)
        if offset % 4096:
            raise errors.EspError(errors.ESP_ERR_INVALID_ARG)
        self.flash.erase_region(p.address + offset, n)

    # machine.unique_id(): the base MAC's 6 bytes.
    def unique_id(self):
        mac = self.state.get("mac")
        if mac is None:
            mac = default_mac(self.path)
        return mac.to_bytes(6, "big")

    def save_state(self):
        write_state(self.path, self.state)

    def close(self):
        self.flash.close()


_current = None


def current():
    # The device the esp32/machine modules act on: $ESPSIM_FLASH, opened once per process.
    # $ESPSIM_CUT_AFTER=N arms the power-cut switch for this process.
    global _current
    if _current is None:
        path = os.getenv("ESPSIM_FLASH")
        if not path:
            raise RuntimeError("ESPSIM_FLASH is not set: point it at a simulated flash image")
        cut = os.getenv("ESPSIM_CUT_AFTER")
        _current = Device(path, int(cut) if cut else None)
    return _current


def set_current(dev):
    global _current
    _current = dev
