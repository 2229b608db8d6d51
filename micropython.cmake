# USER_C_MODULES entry point for CMake-based MicroPython ports, e.g.
#   make -C ports/esp32 BOARD=ESP32_GENERIC BOARD_VARIANT=OTA \
#       USER_C_MODULES=/path/to/this/repo/micropython.cmake
include(${CMAKE_CURRENT_LIST_DIR}/usermod/ota_native/micropython.cmake)
