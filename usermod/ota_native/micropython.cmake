# The _ota module for CMake-based MicroPython ports (esp32): the binding and the core, over
# ESP-IDF's app_update, esp_partition and mbedtls components (which the esp32 port already
# requires for its main component).
add_library(usermod_ota_native INTERFACE)

target_sources(usermod_ota_native INTERFACE
    ${CMAKE_CURRENT_LIST_DIR}/modota.c
    ${CMAKE_CURRENT_LIST_DIR}/ota_core.c
    ${CMAKE_CURRENT_LIST_DIR}/ota_delta.c
    ${CMAKE_CURRENT_LIST_DIR}/ota_sha256.c
    ${CMAKE_CURRENT_LIST_DIR}/ota_sig.c
)

target_include_directories(usermod_ota_native INTERFACE
    ${CMAKE_CURRENT_LIST_DIR}
)

target_link_libraries(usermod INTERFACE usermod_ota_native)
