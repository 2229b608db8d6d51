#!/bin/sh
# Compile check of the _ota module (modota.c, ota_core.c, ota_delta.c, ota_sha256.c, ota_sig.c)
# for MicroPython's esp32 port: with the port's own compiler flags, include directories, sdkconfig.h
# and generated headers, taken from a configured ports/esp32 build (compile_commands.json).
# Nothing is linked; each file is compiled to an object (-c) exactly as the port's build would.
#
#   MICROPY_DIR=/path/to/micropython IDF_PATH=/path/to/esp-idf \
#       usermod/ota_native/check_esp32.sh [BOARD]          (default ESP32_GENERIC_C3)
#
# The toolchain of the board's chip (xtensa-esp32-elf-gcc, riscv32-esp-elf-gcc, ...) must be on
# PATH, as for any esp32 port build. Optional settings:
#   BUILD=dir          the build directory (default build/esp32-check-BOARD); when it already
#                      holds compile_commands.json (e.g. from `make BOARD=... USER_C_MODULES=
#                      .../micropython.cmake` in ports/esp32), that configuration is used as is
#   BOARD_DIR=dir      a board directory outside the tree (MICROPY_BOARD_DIR)
#   CMAKE_ARGS="..."   more arguments for the CMake configure step
#   EXTRA_CFLAGS="..." flags added to each compile (e.g. a stand-in -include)
#   PYTHON=python      the Python of the ESP-IDF environment (default python3)
# See README.md in this directory for what was checked, against which versions.
set -eu

BOARD=${1:-${BOARD:-ESP32_GENERIC_C3}}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BUILD=${BUILD:-$ROOT/build/esp32-check-$BOARD}
PYTHON=${PYTHON:-python3}
: "${MICROPY_DIR:?MICROPY_DIR must name a MicroPython source tree}"
: "${IDF_PATH:?IDF_PATH must name an ESP-IDF tree}"
export IDF_PATH

if [ ! -f "$BUILD/compile_commands.json" ]; then
    # shellcheck disable=SC2086 # CMAKE_ARGS is a list of arguments
    cmake -G Ninja -S "$MICROPY_DIR/ports/esp32" -B "$BUILD" \
        -DMICROPY_BOARD="$BOARD" ${BOARD_DIR:+-DMICROPY_BOARD_DIR="$BOARD_DIR"} \
        -DUSER_C_MODULES="$ROOT/micropython.cmake" -DCMAKE_EXPORT_COMPILE_COMMANDS=ON \
        -DPYTHON="$PYTHON" ${CMAKE_ARGS:-}
fi

# MicroPython's generated headers, made by the port's own rules: qstrs (every source of the
# firmware preprocessed with the port's flags) and the version header through ninja; module,
# root-pointer and compressed-message tables by the same generator commands, run directly so
# that ninja does not also build the frozen modules and every object they are ordered after.
ninja -C "$BUILD" genhdr/qstrdefs.generated.h genhdr/mpversion.h
for t in moduledefs root_pointers compressed.data; do
    ninja -C "$BUILD" -t commands "genhdr/$t.h" \
        | grep -E 'makeqstrdefs\.py (split|cat) |makemoduledefs\.py|make_root_pointers\.py|makecompresseddata\.py' \
        | while read -r cmd; do sh -c "$cmd"; done
done

mkdir -p "$BUILD/ota-check"
"$PYTHON" - "$BUILD" "${EXTRA_CFLAGS:-}" <<'EOF'
import json, shlex, subprocess, sys

build, extra = sys.argv[1], shlex.split(sys.argv[2])
done, failed = set(), 0
for e in json.load(open(build + "/compile_commands.json")):
    name = e["file"].rsplit("/", 1)[1]
    if "/ota_native/" not in e["file"] or name in done:
        continue
    done.add(name)
    args = shlex.split(e["command"]) if "command" in e else e["arguments"]
    args[args.index("-o") + 1] = "%s/ota-check/%s.o" % (build, name)
    args[1:1] = extra
    r = subprocess.run(args, cwd=e["directory"], capture_output=True, text=True)
    print("%-12s %s" % (name, "ok" if r.returncode == 0 else "FAILED"))
    sys.stdout.write(r.stdout + r.stderr)
    failed += r.returncode != 0
want = {"modota.c", "ota_core.c", "ota_delta.c", "ota_sha256.c", "ota_sig.c"}
if done != want:
    print("not in compile_commands.json:", sorted(want - done))
    failed += 1
sys.exit(1 if failed else 0)
EOF
