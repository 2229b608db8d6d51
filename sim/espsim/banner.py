# The identity of a MicroPython firmware image, from its banner.
#
# MicroPython keeps its version in the image's flash-mapped rodata as the C compiler lays out
# string literals: MICROPY_BANNER_NAME_AND_VERSION, "MicroPython <git tag> on <build date>\0"
# (py/mpconfig.h; the tag and date come from py/makeversionhdr.py), and near it, separately,
# "; " MICROPY_BANNER_MACHINE, "; <board> with <mcu>\0" (pyexec.c prints them one after the
# other). A real ESP32-C3 build of v1.28.0 holds "MicroPython v1.28.0 on 2026-04-06\0" and
# "; ESP32C3 module with ESP32C3\0" in its DROM segment.
#
# find() walks the image's segments (esp_image_header_t, then {load_addr, data_len} + data),
# skips esptool's padding segments (load address 0), and reads at most MAX_SCAN bytes.

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


MAX_SCAN = const(0x100000)  # bytes of segment data read at most
_CHUNK = const(0x4000)
_MAX_STR = const(128)  # longest banner string taken
_NAME = b"MicroPython "
_PREVIEW2 = b"(with v2.0 preview) "


def _cstr(buf, i):
    # The NUL-terminated string at buf[i:], or None when it is not terminated within _MAX_STR.
    j = buf.find(b"\0", i, i + _MAX_STR)
    return None if j < 0 else buf[i:j]


def _printable(s):
    for c in s:
        if c < 0x20 or c > 0x7E:
            return False
    return True


def _banner_at(buf, i, aligned):
    # (tag, date) when buf[i:] is a whole NUL-terminated "MicroPython <tag> on <date>" string
    # that starts a string, else None. A string starts after another one's NUL, or (string
    # literals are word-aligned in .rodata) at a 4-byte boundary after other data, whatever
    # its bytes (a constant before it may well end in a printable byte, e.g. 0x2e: '.'); a
    # word after a space that follows text, as in "3.4.0; MicroPython v...", is inside a
    # longer string and does not count.
    if i > 0 and buf[i - 1] != 0:
        if not aligned or (buf[i - 1] == 0x20 and i > 1 and _printable(buf[i - 2 : i - 1])):
            return None
    s = _cstr(buf, i)
    if s is None or not _printable(s):
        return None
    s = s[len(_NAME) :]
    if s.startswith(_PREVIEW2):
        s = s[len(_PREVIEW2) :]
    parts = s.split(b" on ")
    if len(parts) != 2 or not parts[0].startswith(b"v") or len(parts[1]) != 10:
        return None
    return parts[0].decode(), parts[1].decode()


def _machine_near(buf, i):
    # The "; <board> with <mcu>" string that follows the banner at buf[i:] (after its NUL and
    # the compiler's alignment padding), without the "; ".
    j = buf.find(b"\0", i)
    while 0 <= j < len(buf) and buf[j] == 0 and j < i + 2 * _MAX_STR:
        j += 1
    if buf[j : j + 2] == b"; ":
        s = _cstr(buf, j + 2)
        if s and _printable(s):
            return s.decode()
    return None


def _machine_anywhere(buf):
    i = buf.find(b"\0; ")
    while i >= 0:
        s = _cstr(buf, i + 3)
        if s and _printable(s) and b" with " in s:
            return s.decode()
        i = buf.find(b"\0; ", i + 1)
    return None


def segments(read, addr, size):
    # (offset in the image, length) of each segment's data; read(addr, n) reads flash.
    hdr = read(addr, 24)
    if len(hdr) < 24 or hdr[0] != 0xE9:
        return []
    out = []
    off = 24
    for _ in range(min(hdr[1], 16)):
        if off + 8 > size:
            break
        sh = read(addr + off, 8)
        load = int.from_bytes(sh[0:4], "little")
        n = int.from_bytes(sh[4:8], "little")
        off += 8
        if off + n > size:
            break
        if load != 0:  # esptool's padding segments hold nothing
            out.append((off, n))
        off += n
    return out


def find(read, addr, size):
    # The banner of the image at flash address addr (partition size size):
    # {"tag", "date", "machine"} (machine None when not found), or None when there is none.
    scanned = 0
    machine = None
    for off, n in segments(read, addr, size):
        pos = 0
        while pos < n and scanned < MAX_SCAN:
            k = min(_CHUNK + _MAX_STR * 3, n - pos)
            buf = read(addr + off + pos, k)
            scanned += min(_CHUNK, k)
            i = buf.find(_NAME)
            while 0 <= i < _CHUNK:
                b = _banner_at(buf, i, (off + pos + i) % 4 == 0)
                if b:
                    machine = _machine_near(buf, i)
                    if machine is None:
                        machine = _machine_anywhere(buf)
                    return {"tag": b[0], "date": b[1], "machine": machine}
                i = buf.find(_NAME, i + 1)
            pos += _CHUNK
    return None


def version_tuple(tag):
    # sys.implementation.version of the build named tag, as py/mpconfig.h makes it from
    # MICROPY_VERSION_MAJOR/MINOR/MICRO and MICROPY_VERSION_PRERELEASE ("preview" or "").
    # None when tag is not "vX.Y.Z[-...]".
    base = tag[1:].split("-", 1)
    nums = base[0].split(".")
    if len(nums) != 3:
        return None
    try:
        major, minor, micro = int(nums[0]), int(nums[1]), int(nums[2])
    except ValueError:
        return None
    pre = "preview" if len(base) > 1 and base[1].startswith("preview") else ""
    return (major, minor, micro, pre)


def release(tag):
    # os.uname().release: MICROPY_VERSION_STRING, "X.Y.Z" or "X.Y.Z-preview".
    v = version_tuple(tag)
    if v is None:
        return None
    s = "%d.%d.%d" % v[:3]
    return s + "-preview" if v[3] else s
