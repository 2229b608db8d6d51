// What the host backend's files above esp_partition_host.c use of it beyond esp_partition.h:
// the partition table's loading (on first use, as ESP-IDF does) and the running app's entry.
// Not an ESP-IDF header; nothing outside host/ uses it.
#ifndef OTA_HOST_ESP_PARTITION_HOST_H
#define OTA_HOST_ESP_PARTITION_HOST_H

#include "esp_partition.h"

// Read the partition table of the device's flash now: ESP_OK, ESP_ERR_NOT_FOUND (no table, or
// its MD5 differs) or a flash error.
esp_err_t host_partitions_load(void);
// Forget it (the device was closed): the next use reads it again.
void host_partitions_clear(void);
// The app partition at this flash address (the running one), or NULL.
const esp_partition_t *host_partition_app_at(uint32_t address);

#endif
