# io.BufferedWriter as MicroPython defines it (py/modio.c), for interpreters that lack it (the
# unix port is built without MICROPY_PY_IO_BUFFEREDWRITER) or whose own one is another thing
# (CPython's needs a writable RawIOBase).
#
# BufferedWriter(stream, buffer_size): write() collects bytes in a buffer of exactly
# buffer_size bytes and, each time it is full, writes the whole buffer to stream (so a block
# device behind an io.IOBase sees whole blocks); flush() writes what is left. write() returns the
# length it was given. A stream whose write() returns None (EAGAIN), a negative errno, or more
# than it was given (EIO) raises OSError, as MicroPython's stream layer does; one that accepts
# nothing (returns 0) ends that write, as mp_stream_write_exactly() does.

_EAGAIN = 11
_EIO = 5


def _write_all(stream, mv):
    while len(mv):
        n = stream.write(mv)
        if n is None:
            raise OSError(_EAGAIN)
        if n < 0:
            raise OSError(-n)
        if n > len(mv):
            raise OSError(_EIO)
        if n == 0:
            return
        mv = mv[n:]


class BufferedWriter:
    def __init__(self, stream, buffer_size):
        self._stream = stream
        self._buf = bytearray(buffer_size)
        self._mv = memoryview(self._buf)
        self._len = 0

    def write(self, data):
        mv = memoryview(data)
        size = len(mv)
        alloc = len(self._buf)
        while len(mv):
            rem = alloc - self._len
            if len(mv) < rem:
                self._mv[self._len : self._len + len(mv)] = mv
                self._len += len(mv)
                break
            self._mv[self._len :] = mv[:rem]
            mv = mv[rem:]
            self._len = 0
            _write_all(self._stream, self._mv)
        return size

    def flush(self):
        if self._len:
            n = self._len
            self._len = 0
            _write_all(self._stream, self._mv[:n])
