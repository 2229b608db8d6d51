// Host stand-in for ESP-IDF's esp_system.h: esp_restart() ends the simulated app (ota_host.c).
#ifndef OTA_HOST_ESP_SYSTEM_H
#define OTA_HOST_ESP_SYSTEM_H

void esp_restart(void) __attribute__((noreturn));

#endif
