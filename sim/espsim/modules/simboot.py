# How the simulated device starts its Python code, as ports/esp32/main.c does (every process
# that plays the firmware imports this first):
# - under MicroPython, sys.implementation and sys.version name the firmware in the running slot
#   (espsim_sys.py; os.uname() does in mp/os.py, and under CPython sitecustomize.py does both);
# - run_file(): a script run on the running firmware (`mpota sim run FLASH SCRIPT`);
# - boot(): one boot of the firmware: boot.py, then main.py when boot.py ended without an
#   exception, from the current directory (the board's filesystem); ports/esp32/main.c and
#   shared/runtime/pyexec.c. An exception is printed and ends the boot (the board would sit in
#   its REPL); SystemExit (sys.exit(), machine.soft_reset()) is a soft reset: "MPY: soft
#   reboot" and the process ends with SOFT_RESET so that the PC runs boot.py again;
#   machine.reset() (a machine.HardReset) ends the process after the simulated bootloader ran.

import sys

SOFT_RESET = 75  # exit status of a process that ended with a soft reset

if sys.implementation.name == "micropython":
    import espsim_sys

    sys.modules["sys"] = espsim_sys


def _print_exc(e):
    if hasattr(sys, "print_exception"):
        sys.print_exception(e)
    else:
        import traceback

        traceback.print_exception(type(e), e, e.__traceback__, file=sys.stdout)


def run_file(path, g):
    with open(path) as f:
        src = f.read()
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
    import os

    # The port appends "/lib" to sys.path after mp_init(); the filesystem is the current
    # directory here.
    sys.path.append(os.getcwd() + "/lib")
    if _exec_if_exists("boot.py", g) and _exec_if_exists("main.py", g):
        return
    sys.exit(1)
