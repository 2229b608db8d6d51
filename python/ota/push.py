# ota.push: receive a firmware image over the REPL's serial line (what `mpota push` talks to).
# The device asks for each chunk ("OTA>n"), reads exactly n raw bytes from stdin into one
# buffer and writes them to the OTA partition; "OTA:ok <sha256>" or "OTA:error <message>" ends
# it. Ctrl-C is disabled meanwhile, so that image bytes pass through untouched; so that a PC
# that stops mid-way cannot hang the device, a wait for input ends after `timeout` seconds.

import sys

_ETIMEDOUT = 110


def receive(length, sha, chunk=4096, verify=True, reboot=False, backend=None, timeout=30):
    import select

    from ._pure import read_count
    from .writer import OTA

    out = sys.stdout
    inp = sys.stdin.buffer
    # CPython's buffered stdin reads ahead of what poll() can see: read its raw file instead.
    inp = getattr(inp, "raw", inp)
    poll = select.poll()
    poll.register(inp, select.POLLIN)
    ota = None
    try:
        import micropython

        micropython.kbd_intr(-1)
    except (ImportError, AttributeError):
        micropython = None
    try:
        if not isinstance(chunk, int) or chunk <= 0:
            raise ValueError("chunk must be a positive number of bytes, not %r" % (chunk,))
        if timeout is not None and not timeout > 0:
            raise ValueError("timeout must be a positive number of seconds, not %r" % (timeout,))
        ota = OTA(sha=sha, length=length, verify=verify, verbose=False, backend=backend)
        buf = memoryview(bytearray(chunk))
        one = bytearray(1)
        ms = None if timeout is None else int(timeout * 1000)
        done = 0
        while done < length:
            want = min(chunk, length - done)
            out.write("OTA>%d\n" % want)
            if hasattr(out, "flush"):
                out.flush()
            got = 0
            while got < want:
                if ms is None:
                    n = read_count(inp.readinto(buf[got:want]), want - got)
                elif not _ready(poll, ms):
                    raise OSError(
                        _ETIMEDOUT,
                        "no data from the PC for %s s after %d bytes" % (timeout, done + got),
                    )
                elif sys.implementation.name == "micropython":
                    # A MicroPython stream read returns only once all the bytes asked for have
                    # come (the port's stdin waits for each character), so that poll() can end
                    # a silence, the bytes are taken one at a time.
                    n = read_count(inp.readinto(one), 1)
                    if n:
                        buf[got] = one[0]
                else:  # CPython: what has come, at most want
                    n = read_count(inp.readinto(buf[got:want]), want - got)
                if not n:
                    raise OSError(5, "the serial line closed after %d bytes" % (done + got))
                got += n
            ota.write(buf[:want])
            done += want
        n, digest = ota.close()
        out.write("OTA:ok %s\n" % digest)
    except Exception as e:
        if ota:
            ota.abort()
        out.write("OTA:error %s: %s\n" % (type(e).__name__, e))
        return False
    finally:
        if micropython:
            micropython.kbd_intr(3)
        if hasattr(out, "flush"):
            out.flush()
    if reboot:
        from .writer import reboot as _reboot

        _reboot(reboot if reboot is not True else 3)
    return True


# Whether input comes within ms milliseconds (ipoll: MicroPython's poll without allocation).
def _ready(poll, ms):
    if hasattr(poll, "ipoll"):
        for _ in poll.ipoll(ms):
            return True
        return False
    return bool(poll.poll(ms))
