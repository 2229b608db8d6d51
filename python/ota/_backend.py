# Picks the backend that does the flash work: the native `_ota` module when the firmware has
# it, else the pure-Python one over esp32.Partition. Both give the same messages and errors.


def get(name=None):
    if name not in (None, "native", "pure"):
        raise ValueError("backend must be 'native', 'pure' or None, not %r" % (name,))
    if name != "pure":
        try:
            import _ota
        except ImportError as e:
            if name == "native":
                raise ImportError("this firmware has no native _ota module") from e
            if "_ota" not in str(e):
                raise
        else:
            from ._native import Backend

            return Backend(_ota)
    from ._pure import Backend

    return Backend()


# A stream's readinto(buf) must return how many bytes it put in buf: 0 at the end, None when a
# non-blocking stream has none yet. Anything else is the stream's error, refused before a byte
# is used, in the native core's words (ota_core_message).
def read_count(n, size):
    if n is None or isinstance(n, int) and 0 <= n <= size:
        return n
    if not isinstance(n, int):
        what = "a " + type(n).__name__
    elif -0x40000000 < n < 0x40000000:
        what = "%d" % n
    else:
        what = "a huge int"
    raise ValueError(
        "Stream error: readinto() returned %s for a buffer of %d bytes." % (what, size)
    )
