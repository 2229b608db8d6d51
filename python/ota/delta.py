# ota.delta: delta updates on the device. Reads the MPZ1 transport (a header with checkpoints,
# then a raw deflate stream fully flushed at each checkpoint; host/mpota/delta.py writes it and
# the README describes it) and applies detools sequential patches (compression "none") to the
# image in the running partition. The new image comes out of Patch.readinto(), so that it goes
# through ota.writer.OTA like any other image: same checks, verification and set_boot().

import binascii
import hashlib
import struct

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


_HEAD = const(20)
_CP = const(24)
_BLOCK = const(4096)
_DIFF = const(1)
_EXTRA = const(2)
_START = const(0)
_END = const(3)
KIND_IMAGE = const(0)
KIND_PATCH = const(1)


def _hex(b):
    return binascii.hexlify(b).decode()


# The parsed header of an MPZ1 file: kind, wbits, payload and output lengths, checkpoints
# [(comp, out, pay, frm, phase, left)] with comp counted from the start of the file.
class Header:
    def __init__(self, data, sha="", length=0):
        if sha and _hex(hashlib.sha256(data).digest()) != sha:
            raise ValueError("The transfer's header does not match its header_sha: refused.")
        if len(data) < _HEAD or bytes(data[:4]) != b"MPZ1" or data[4] != 1:
            raise ValueError("The transfer does not start with an MPZ1 (version 1) header.")
        self.kind, self.wbits = data[5], data[6]
        self.payload, self.length, n = struct.unpack_from("<IIH", data, 8)
        self.size = _HEAD + n * _CP
        if len(data) != self.size or self.kind > 1 or not 9 <= self.wbits <= 15:
            raise ValueError("The transfer's MPZ1 header is malformed.")
        if length and self.length != length:
            raise ValueError(
                "The transfer makes an image of %d bytes, the manifest says %d."
                % (self.length, length)
            )
        self.cps = []
        prev = (0, 0)
        for i in range(n):
            c = list(struct.unpack_from("<6I", data, _HEAD + i * _CP))
            c[0] += self.size
            if c[1] % _BLOCK or c[1] <= prev[1] or c[0] <= prev[0] or c[1] >= self.length:
                raise ValueError("The transfer's checkpoint %d is malformed." % i)
            prev = c
            self.cps.append(tuple(c))

    # The last checkpoint at or before output offset n, or None.
    def before(self, n):
        best = None
        for c in self.cps:
            if c[1] <= n:
                best = c
        return best

    # The checkpoint at output offset n exactly (0: None, the start).
    def at(self, n):
        for c in self.cps:
            if c[1] == n:
                return c
        if n:
            raise ValueError("No checkpoint at byte %d of the image." % n)
        return None


# Raw inflate of an MPZ1 transfer (deflate.DeflateIO), from its start or a checkpoint. Bad
# compressed data is a ValueError: MicroPython raises OSError(EINVAL) for it (EOFError when cut
# short); a network error (a subclass of OSError) goes through as it is.
class Inflate:
    def __init__(self, src, wbits):
        import deflate

        self.d = deflate.DeflateIO(src, deflate.RAW, wbits)

    def readinto(self, buf):
        try:
            return self.d.readinto(buf)
        except EOFError:
            raise ValueError("The transfer's compressed data is truncated.")
        except OSError as e:
            if type(e) is OSError and e.args and e.args[0] == 22:
                raise ValueError("The transfer's compressed data is corrupted.")
            raise

    def close(self):
        pass


# new[i] = patch[i] + old[i] (mod 256), in place in dst: under the viper emitter where the
# firmware has it (the esp32 port does), else eight bytes at a time in big integers (SWAR).
def _add_swar(dst, src, n):
    a = int.from_bytes(dst[:n], "little")
    b = int.from_bytes(src[:n], "little")
    lo = int.from_bytes(b"\x7f" * n, "little")
    hi = int.from_bytes(b"\x80" * n, "little")
    s = ((a & lo) + (b & lo)) ^ ((a ^ b) & hi)
    dst[:n] = s.to_bytes(n, "little")


try:
    import micropython

    @micropython.viper
    def _add_viper(dst, src, n: int):
        d = ptr8(dst)  # noqa: F821 (viper's pointer types)
        s = ptr8(src)  # noqa: F821
        for i in range(n):
            d[i] = d[i] + s[i]

    _add = _add_viper
except (ImportError, AttributeError, SyntaxError, NameError):
    _add = _add_swar


def _add_loop(dst, src, n):
    for i in range(n):
        dst[i] = (dst[i] + src[i]) & 0xFF


# The applier: a stream of the new image (readinto()) from the patch payload `src` (a stream,
# e.g. deflate.DeflateIO over the download) and the old image in partition `old` (read through
# readblocks() with one 4 KB buffer). cp: the checkpoint the payload starts at (None: its start).
# src.readinto() returning None means "no data yet" (a non-blocking stream): it is asked again,
# as by _ota.Patch and the writers' write_from().
class Patch:
    def __init__(self, src, old, old_length, length, cp=None):
        self.src = src
        self.old = old
        self.old_len = old_length
        self.length = length
        self.buf = bytearray(_BLOCK)
        self.blk = -1
        self.one = bytearray(1)
        if cp:
            self.out, self.frm = cp[1], cp[3]
            if cp[4] not in (_DIFF, _EXTRA):
                raise ValueError("The transfer's checkpoint is not in a diff or extra block.")
            self._block(cp[4], cp[5])
            if not 0 <= self.frm <= old_length:  # as the C applier bounds it
                raise ValueError("The patch reads outside the old image: corrupted patch.")
        else:
            self.out, self.frm, self.phase, self.left = 0, 0, _START, 0

    def _read(self, mv):
        n = None
        while n is None:
            n = self.src.readinto(mv)
        return n

    def _byte(self):
        if not self._read(self.one):
            raise ValueError("The patch is truncated.")
        return self.one[0]

    # detools' size: 0x80 more bytes follow, 0x40 negative, 6 bits, then 7 bits a byte.
    def _size(self):
        b = self._byte()
        neg = b & 0x40
        v = b & 0x3F
        sh = 6
        while b & 0x80:
            if sh > 34:
                raise ValueError("The patch holds a size that is too large: corrupted.")
            b = self._byte()
            v |= (b & 0x7F) << sh
            sh += 7
        return -v if neg else v

    def _block(self, phase, n):
        if n < 0 or self.out + n > self.length:
            raise ValueError("The patch's blocks run past the new image: corrupted patch.")
        if phase == _DIFF and (self.frm < 0 or self.frm + n > self.old_len):
            raise ValueError("The patch reads outside the old image: corrupted patch.")
        self.phase, self.left = phase, n

    # Move to the next block; False at the end of the patch.
    def _next(self):
        p = self.phase
        if p == _START:
            if self._byte() != 0:
                raise ValueError(
                    "The patch is not a detools sequential patch without compression."
                )
            if self._size() != self.length:
                raise ValueError("The patch makes an image of another length.")
            if self._size() != 0:
                raise ValueError("detools data-format patches are not supported.")
            self._block(_DIFF, self._size())
        elif p == _DIFF:
            self._block(_EXTRA, self._size())
        elif p == _EXTRA:
            self.frm += self._size()
            if self.out >= self.length:
                self.phase = _END
                if self._read(self.one):
                    raise ValueError("The patch goes on past its end: corrupted.")
                return False
            self._block(_DIFF, self._size())
        else:
            return False
        return True

    def _fill(self, mv):
        got = 0
        while got < len(mv):
            n = self._read(mv[got:])
            if not n:
                raise ValueError("The patch is truncated.")
            got += n

    def _add_old(self, mv, n):
        done = 0
        while done < n:
            b = self.frm // _BLOCK
            if b != self.blk:
                self.old.readblocks(b, self.buf)
                self.blk = b
            off = self.frm % _BLOCK
            k = min(n - done, _BLOCK - off)
            _add(mv[done : done + k], memoryview(self.buf)[off : off + k], k)
            self.frm += k
            done += k

    def readinto(self, buf):
        if self.src is None:
            raise ValueError("This Patch is closed.")
        mv = memoryview(buf)
        n = 0
        while n < len(mv):
            if not self.left:
                if not self._next():
                    break
                continue
            k = min(self.left, len(mv) - n)
            self._fill(mv[n : n + k])
            if self.phase == _DIFF:
                self._add_old(mv[n : n + k], k)
            n += k
            self.left -= k
            self.out += k
        return n

    def close(self):
        self.src = None  # src is the caller's to close


# The applier for a patch: the core's, in C (_ota.Patch: usermod/ota_native/ota_delta.c), with
# the native backend when the firmware has it, else Patch above. Returns (applier, "C" or
# "Python").
def applier(src, old, old_length, length, cp=None, backend="pure"):
    if backend == "native":
        try:
            from _ota import Patch as C
        except ImportError:
            pass
        else:
            return C(src, old, old_length, length, cp), "C"
    return Patch(src, old, old_length, length, cp), "Python"


# SHA-256 (hex) of the first n bytes of partition part.
def slot_sha(part, n):
    h = hashlib.sha256()
    buf = bytearray(_BLOCK)
    mv = memoryview(buf)
    off = 0
    while off < n:
        part.readblocks(off // _BLOCK, buf)
        k = min(_BLOCK, n - off)
        h.update(mv[:k])
        off += k
    return _hex(h.digest())


# The manifest's patch for the running firmware: (entry, None), or (None, why not). The build
# id comes from the running image's app description; the running slot's bytes [0:from_length)
# must hash to from_sha (checked here, before anything is erased).
def pick(patches, running, build):
    if not isinstance(patches, list):
        return None, 'the manifest\'s "patches" is not a list'
    why = "no patch is made from the running build %s" % (build or "?")[:8]
    for p in patches:
        if not isinstance(p, dict) or p.get("build") != build:
            continue
        n = p.get("from_length")
        if not isinstance(n, int) or not 0 < n <= running.info()[3]:
            why = "the patch's from_length is not a length in the running slot"
            continue
        if slot_sha(running, n) != p.get("from_sha"):
            why = "the running slot's image does not match the patch's source (from_sha)"
            continue
        return p, None
    return None, why
