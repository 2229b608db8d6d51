// Host stand-in for ESP-IDF's esp_cpu.h (components/esp_hw_support): whether a JTAG debugger is
// attached to the CPU. The simulated device has none unless ota_host_set_debugger() says so.
#ifndef OTA_HOST_ESP_CPU_H
#define OTA_HOST_ESP_CPU_H

#include <stdbool.h>

bool esp_cpu_dbgr_is_attached(void);

#endif
