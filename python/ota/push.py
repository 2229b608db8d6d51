# ota.push: receive a firmware image over the REPL's serial line (what `mpota push` talks to).
# The device asks for each chunk ("OTA>n"), reads exactly n raw bytes from stdin into one
# buffer and writes them to the OTA partition; "OTA:ok <sha256>" or "OTA:error <message>" ends
# it. Ctrl-C is disabled meanwhile, so that image bytes pass through untouched.

import sys


def receive(length, sha, chunk=4096, verify=True, reboot=False, backend=None):
    from ._backend import read_count
    from .writer import OTA

    out = sys.stdout
    inp = sys.stdin.buffer
    try:
        import micropython

        micropython.kbd_intr(-1)
    except (ImportError, AttributeError):
        micropython = None
    try:
        ota = OTA(sha=sha, length=length, verify=verify, verbose=False, backend=backend)
        buf = memoryview(bytearray(chunk))
        done = 0
        while done < length:
            want = min(chunk, length - done)
            out.write("OTA>%d\n" % want)
            if hasattr(out, "flush"):
                out.flush()
            got = 0
            while got < want:
                n = read_count(inp.readinto(buf[got:want]), want - got)
                if not n:
                    raise OSError(5, "the serial line closed after %d bytes" % (done + got))
                got += n
            ota.write(buf[:want])
            done += want
        n, digest = ota.close()
        out.write("OTA:ok %s\n" % digest)
    except Exception as e:
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
