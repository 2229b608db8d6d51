# Picks the backend that does the flash work: the native `_ota` module when the firmware has
# it, else the pure-Python one over esp32.Partition. Both give the same messages and errors.
# Nothing here is imported by _pure or _native (this module imports them): what their callers
# share, such as read_count(), lives in the lowest module that needs it.


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
