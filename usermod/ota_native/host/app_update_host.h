// What ota_host.c uses of app_update_host.c beyond esp_ota_ops.h. Not an ESP-IDF header;
// nothing outside host/ uses it.
#ifndef OTA_HOST_APP_UPDATE_HOST_H
#define OTA_HOST_APP_UPDATE_HOST_H

#include "esp_ota_ops.h"

// Forget every esp_ota handle (the device was closed).
void host_ota_handles_clear(void);

#endif
