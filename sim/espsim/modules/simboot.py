# How the simulated device starts its Python code, as ports/esp32/main.c does (every process
# that plays the firmware imports this first):
# - under MicroPython, sys.implementation and sys.version name the firmware in the running slot
#   (espsim_sys.py; os.uname() does in mp/os.py, and under CPython sitecustomize.py does both);
# - run_file(): a script run on the running firmware (`mpota sim run FLASH SCRIPT`; with
#   --fs, the board's filesystem mounted at / first, as below);
# - boot(): one boot of the firmware: the board's filesystem mounted at / (simfs.py: the
#   littlefs in the flash, as _boot.py mounts it), then
#   boot.py, then main.py when boot.py ended without an exception; ports/esp32/main.c and
#   shared/runtime/pyexec.c. An exception is printed and ends the boot (the board would sit in
#   its REPL); SystemExit (sys.exit(), machine.soft_reset()) is a soft reset: "MPY: soft
#   reboot" and the process ends with SOFT_RESET so that the PC runs boot.py again;
#   machine.reset() (a machine.HardReset) ends the process after the simulated bootloader ran.

#
# The heap: on a board, the esp32 module, the flash driver and ESP-IDF are C and take nothing from
# MicroPython's heap; here they are Python on the unix port's one fixed heap. `mpota sim run
# --heap H` therefore starts MicroPython with H + RESERVE (simdev.command()), and this module
# loads the simulated chip first and then holds what is left of RESERVE in one block, so that
# the device code has about H for itself (less the GC's tables for RESERVE, ~3%), in one
# fixed area. (The esp32 port's heap is not fixed: it starts at 56 KB on an ESP32 and adds an
# area from ESP-IDF's heap when an allocation fails, MICROPY_GC_SPLIT_HEAP_AUTO; H stands for
# what it can reach.)

import sys

SOFT_RESET = 75  # exit status of a process that ended with a soft reset
RESERVE = 131072  # bytes of heap for the simulator itself (as in mpota/simdev.py)


def _reserve():
    import gc

    from espsim import heap

    try:
        import esp32  # noqa: F401
        from espsim import device

        device.current()
        from espsim import identity

        # The running image's banner, read now (16 KB at a time) and kept: os.uname() on a
        # board is C and takes nothing from the heap the device code has.
        identity.running_banner()
    except Exception:  # noqa: BLE001 - no flash here: the device code will say so
        pass
    gc.collect()
    heap.hold(RESERVE - gc.mem_alloc())


if sys.implementation.name == "micropython":
    import espsim_sys

    sys.modules["sys"] = espsim_sys
    _reserve()


def _print_exc(e):
    if hasattr(sys, "print_exception"):
        sys.print_exception(e)
    else:
        import traceback

        traceback.print_exception(type(e), e, e.__traceback__, file=sys.stdout)


def mount_fs(host=None):
    # The board's filesystem at / (simfs.py), `host` (a host path) still reachable.
    import simfs

    if host:
        simfs.HOST_PATHS.append(host)
    simfs.mount()


def run_file(path, g, fs=False):
    # A script that cannot be read: the interpreter's own words (`micropython missing.py`),
    # naming the file, and its exit status 2.
    try:
        f = open(path)
    except OSError as e:
        name = "micropython" if sys.implementation.name == "micropython" else "python"
        sys.stderr.write("%s: can't open file %r: %s\n" % (name, path, e))
        sys.exit(2)
    with f:
        src = f.read()
    if fs:
        mount_fs(path)
    g["__file__"] = path
    exec(compile(src, path, "exec"), g)


def _exec_if_exists(path, g):
    # pyexec_file_if_exists(): True when the file ran to its end (or does not exist).
    try:
        f = open(path)
    except OSError:
        return True
    with f:
        src = f.read()
    import machine

    try:
        exec(compile(src, path, "exec"), g)
        return True
    except machine.HardReset:
        raise
    except SystemExit:
        print("MPY: soft reboot")
        sys.exit(SOFT_RESET)
    except BaseException as e:  # noqa: BLE001 - the board prints every exception
        _print_exc(e)
        return False


def boot(g):
    mount_fs()
    if _exec_if_exists("boot.py", g) and _exec_if_exists("main.py", g):
        return
    sys.exit(1)
