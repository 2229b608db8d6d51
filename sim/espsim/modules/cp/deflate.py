"""MicroPython's `deflate` module (DeflateIO, RAW/ZLIB/GZIP/AUTO) for device code run under
CPython in the simulator, over zlib: decompression only, as the OTA code uses it."""

import zlib

AUTO, RAW, ZLIB, GZIP = 0, 1, 2, 3
_WBITS = {AUTO: 47, RAW: -15, ZLIB: 15, GZIP: 31}


class DeflateIO:
    def __init__(self, stream, format=AUTO, wbits=0, close=False):
        bits = _WBITS[format]
        if wbits:
            bits = (wbits if bits > 0 else -wbits) + (bits - bits % 16 if bits > 15 else 0)
        self._d = zlib.decompressobj(bits)
        self._s = stream
        self._close = close
        self._in = bytearray(4096)

    # As MicroPython's: EOFError when the compressed data is cut short or corrupted.
    def readinto(self, buf):
        try:
            return self._readinto(memoryview(buf))
        except zlib.error:
            raise EOFError() from None

    def _readinto(self, mv):
        while True:
            if self._d.unconsumed_tail:
                out = self._d.decompress(self._d.unconsumed_tail, len(mv))
            elif self._d.eof:
                return 0
            else:
                n = self._s.readinto(self._in)
                if not n:
                    # zlib may still hold output that max_length held back (a long match from
                    # a few input bytes): the stream ends only when that is out too.
                    out = self._d.decompress(b"", len(mv))
                    if not out:
                        if not self._d.eof:
                            raise EOFError()
                        return 0
                else:
                    out = self._d.decompress(bytes(self._in[:n]), len(mv))
            if out:
                mv[: len(out)] = out
                return len(out)

    def read(self, n=-1):
        out = bytearray()
        buf = bytearray(4096)
        while n < 0 or len(out) < n:
            k = self.readinto(buf if n < 0 else memoryview(buf)[: min(4096, n - len(out))])
            if not k:
                break
            out += buf[:k]
        return bytes(out)

    def close(self):
        if self._close:
            self._s.close()
