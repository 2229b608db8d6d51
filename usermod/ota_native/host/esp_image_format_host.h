// The image checks of the host backend's bootloader_support (esp_image_format_host.c) that
// esp_image_format.h does not declare: esp_image_verify() and bootloader_load_image() of an
// app partition, for the simulated device's chip. Not an ESP-IDF header; nothing outside host/
// uses it (ota_host.h offers them to tests as ota_host_verify_image(), ota_host_load_image()).
#ifndef OTA_HOST_ESP_IMAGE_FORMAT_HOST_H
#define OTA_HOST_ESP_IMAGE_FORMAT_HOST_H

#include "esp_partition.h"

// esp_image_verify(ESP_IMAGE_VERIFY): ESP_OK, ESP_ERR_IMAGE_INVALID (0x2002), ESP_FAIL (wrong
// chip or chip revision) or a flash error.
esp_err_t host_image_verify(const esp_partition_t *p);
// bootloader_load_image() without the copying: the same, plus the load address checks.
esp_err_t host_image_load(const esp_partition_t *p);

#endif
