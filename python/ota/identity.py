# Firmware identity: a firmware is known by its build id (esp_app_desc_t.app_elf_sha256, which
# every ESP-IDF build sets) and a version: esp_app_desc_t.version when a custom build sets
# PROJECT_VER, else MicroPython's own version. MicroPython's esp32 port leaves version and
# project_name empty (CONFIG_APP_EXCLUDE_PROJECT_VER_VAR / _NAME_VAR); its version is in the
# image's rodata as the REPL banner, "MicroPython v1.28.0 on 2026-04-06\0", followed by
# "; ESP32C3 module with ESP32C3\0", and, for the running firmware, in os.uname():
# release "1.28.0", version "v1.28.0 on 2026-04-06", machine "ESP32C3 module with ESP32C3".

import binascii
import struct

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


_MARK = b"MicroPython "
_PREVIEW2 = "(with v2.0 preview) "  # MICROPY_PREVIEW_VERSION_2 builds
_CAP = const(128)  # bytes kept from a banner candidate: banner, padding, "; machine"
_SCAN_MAX = const(0x80000)  # a slot's banner is in its first segment (DROM): read at most this


# (version, date, machine) from "MicroPython <tag> on <YYYY-MM-DD>\0...; <machine>\0", or None.
def parse_banner(buf):
    b = bytes(buf)
    if not b.startswith(_MARK):
        return None
    end = b.find(b"\0")
    if end < 0:
        return None
    try:
        s = b[len(_MARK) : end].decode()
    except UnicodeError:
        return None
    if s.startswith(_PREVIEW2):
        s = s[len(_PREVIEW2) :]
    i = s.rfind(" on ")
    if i <= 0:
        return None
    tag, date = s[:i], s[i + 4 : i + 14]
    if " " in tag or len(date) != 10 or date[4] != "-" or date[7] != "-":
        return None
    if not (date[:4] + date[5:7] + date[8:]).isdigit():
        return None
    machine = None
    j = end
    while j < len(b) and j < end + 4 and b[j] == 0:
        j += 1
    if b[j : j + 2] == b"; ":
        k = b.find(b"\0", j)
        if k > 0:
            try:
                machine = b[j + 2 : k].decode()
            except UnicodeError:
                pass
    return (tag, date, machine)


class Scanner:
    # Finds MicroPython's banner in an image fed to it chunk by chunk, in place: besides the
    # chunk it keeps at most _CAP bytes (a candidate begun near a chunk's end, or the last bytes
    # of the chunk), so a banner split across chunks is found. .found is (version, date,
    # machine) once seen, else None. feed() needs bytes or a bytearray (find()).
    def __init__(self):
        self.found = None
        self.pend = b""  # a candidate that starts with _MARK, or the chunk's last bytes

    def _try(self, cand):
        self.found = parse_banner(cand)
        return self.found is not None

    def feed(self, buf, n=None):
        if self.found:
            return self.found
        if n is None:
            n = len(buf)
        tail = len(_MARK) - 1
        pos = 0
        while True:
            pend = self.pend
            if pend.startswith(_MARK):  # complete the candidate from this chunk
                take = min(_CAP - len(pend), n - pos)
                pend += bytes(buf[pos : pos + take])
                pos += take
                if len(pend) < _CAP:
                    self.pend = pend
                    return None
                if self._try(pend):
                    return self.found
                i = pend.find(_MARK, 1)
                self.pend = pend[i:] if i > 0 else pend[-tail:]
                continue
            if pend:  # a marker across the boundary?
                join = pend + bytes(buf[pos : pos + tail])
                i = join.find(_MARK)
                if 0 <= i < len(pend):
                    self.pend = join[i:]
                    pos += len(join) - len(pend)
                    continue
            i = buf.find(_MARK, pos, n)
            while i >= 0 and i + _CAP <= n:
                if self._try(buf[i : i + _CAP]):
                    return self.found
                i = buf.find(_MARK, i + 1, n)
            if i >= 0:
                self.pend = bytes(buf[i:n])
            else:
                self.pend = (pend + bytes(buf[max(pos, n - tail) : n]))[-tail:]
            return None

    def end(self):
        # The data ended: a candidate cut short by the end is judged as it is.
        if not self.found and self.pend.startswith(_MARK):
            self._try(self.pend)
        self.pend = b""
        return self.found


class Tap:
    # A stream that hands on what it reads and feeds the first `limit` bytes to a Scanner
    # through one buffer of its own; on_found(banner) is called once the banner is seen (it
    # may raise to stop the transfer).
    def __init__(self, stream, limit, on_found):
        self.s = stream
        self.sc = Scanner()
        self.left = limit
        self.on_found = on_found
        self.buf = None

    def readinto(self, mv):
        if self.sc is None:
            return self.s.readinto(mv)
        if self.buf is None:
            self.buf = bytearray(min(len(mv), 4096))
        m = min(len(mv), len(self.buf))
        n = self.s.readinto(memoryview(self.buf)[:m])
        if not n:
            if n == 0:
                self._done(self.sc.end())
            return n
        mv[:n] = memoryview(self.buf)[:n]
        self.left -= n
        found = self.sc.feed(self.buf, n)
        if found or self.left <= 0:
            self._done(found or self.sc.end())
        return n

    def _done(self, found):
        self.sc = None
        self.buf = None
        if found:
            self.on_found(found)

    def close(self):
        self.s.close()


# The build id (hex) from the first 288 bytes of an image, or None without an app description.
def build_id(head):
    if len(head) < 208 or struct.unpack_from("<I", head, 32)[0] != 0xABCD5432:
        return None
    return binascii.hexlify(bytes(head[176:208])).decode()


# Bytes of the first segment (where rodata, and so the banner, is), from the image header.
def first_segment(head):
    if len(head) < 32 or head[0] != 0xE9:
        return 0
    return struct.unpack_from("<I", head, 28)[0]


# Scan a partition's image for the banner: at most its first segment, at most limit bytes.
def scan_partition(part, limit=_SCAN_MAX):
    head = bytearray(32)
    part.readblocks(0, head)
    end = min(32 + first_segment(head), limit, _SCAN_MAX)
    sc = Scanner()
    buf = bytearray(4096)
    off = 0
    while off < end and not sc.found:
        part.readblocks(off // 4096, buf)
        sc.feed(buf, min(4096, end - off))
        off += 4096
    return sc.end()


# (release, version, machine) of os.uname() when it is MicroPython's esp32 port's, else None.
def _uname():
    try:
        import os

        u = os.uname()
    except (ImportError, AttributeError, OSError):
        return None
    v = u.version
    i = v.find(" on ")
    if i <= 0:
        return None
    tag = v[:i]
    from . import version

    p = version.parse(tag)
    if p is None or ".".join([str(x) for x in p[0]]) != u.release.split("-")[0]:
        return None
    return (tag, v[i + 4 : i + 14], u.machine)


# A firmware's identity: {"version", "build", "date", "machine", "project", "source"} where
# source says where the version came from: "app" (esp_app_desc_t), "uname", "banner", or None.
def of(desc, build, banner):
    ident = {
        "version": None,
        "build": build,
        "date": None,
        "machine": None,
        "project": desc[1] if desc else None,
        "source": None,
    }
    if banner:
        ident["version"], ident["date"], ident["machine"] = banner
        ident["source"] = "banner"
    if desc and desc[0]:
        ident["version"] = desc[0]
        ident["source"] = "app"
    return ident


def _head(part):
    head = bytearray(288)
    part.readblocks(0, head)
    return head


# The identity of the firmware in a partition (the running one: os.uname(), as a board says).
def of_partition(part, backend=None, running=False):
    from . import _backend

    be = backend if hasattr(backend, "describe") else _backend.get(backend)
    desc = be.describe(part)
    if desc is None:
        return None
    head = _head(part)
    banner = None
    if not desc[0]:
        banner = _uname() if running else None
        if banner:
            ident = of(desc, build_id(head), banner)
            ident["source"] = "uname"
            return ident
        banner = scan_partition(part)
    return of(desc, build_id(head), banner)


def running(backend=None):
    from esp32 import Partition

    return of_partition(Partition(Partition.RUNNING), backend, True)


# "MicroPython v1.28.0 (build dbed42b0)" or "myapp 2.1 (build ...)" for messages.
def name(ident):
    if not ident:
        return "(no app)"
    v = ident["version"] or "an unknown version"
    if ident["source"] == "app":
        what = "%s %s" % (ident["project"] or "firmware", v)
    else:
        what = "MicroPython %s" % v
    return what + (" (build %s)" % ident["build"][:8] if ident["build"] else "")
