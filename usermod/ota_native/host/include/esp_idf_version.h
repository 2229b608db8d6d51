// Host stand-in for ESP-IDF's esp_idf_version.h: the host backend follows ESP-IDF v5.5
// (ota_host_set_idf() switches its otadata handling to v5.4's at run time).
#ifndef OTA_HOST_ESP_IDF_VERSION_H
#define OTA_HOST_ESP_IDF_VERSION_H

#define ESP_IDF_VERSION_MAJOR 5
#define ESP_IDF_VERSION_MINOR 5
#define ESP_IDF_VERSION_PATCH 2
#define ESP_IDF_VERSION_VAL(major, minor, patch) ((major << 16) | (minor << 8) | (patch))
#define ESP_IDF_VERSION ESP_IDF_VERSION_VAL(ESP_IDF_VERSION_MAJOR, ESP_IDF_VERSION_MINOR, \
    ESP_IDF_VERSION_PATCH)

#endif
