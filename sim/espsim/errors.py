# ESP-IDF error codes used by the simulator, and the OSError that MicroPython's esp32 port raises
# for them (check_esp_err in ports/esp32/mphalport.c: OSError(-code, "ESP_ERR_NAME")).

ESP_OK = 0
ESP_FAIL = -1
ESP_ERR_NO_MEM = 0x101
ESP_ERR_INVALID_ARG = 0x102
ESP_ERR_INVALID_STATE = 0x103
ESP_ERR_INVALID_SIZE = 0x104
ESP_ERR_NOT_FOUND = 0x105
ESP_ERR_NOT_SUPPORTED = 0x106
ESP_ERR_OTA_PARTITION_CONFLICT = 0x1501
ESP_ERR_OTA_SELECT_INFO_INVALID = 0x1502
ESP_ERR_OTA_VALIDATE_FAILED = 0x1503
ESP_ERR_OTA_SMALL_SEC_VER = 0x1504
ESP_ERR_OTA_ROLLBACK_FAILED = 0x1505
ESP_ERR_OTA_ROLLBACK_INVALID_STATE = 0x1506
ESP_ERR_IMAGE_INVALID = 0x2002

NAMES = {
    ESP_FAIL: "ESP_FAIL",
    ESP_ERR_NO_MEM: "ESP_ERR_NO_MEM",
    ESP_ERR_INVALID_ARG: "ESP_ERR_INVALID_ARG",
    ESP_ERR_INVALID_STATE: "ESP_ERR_INVALID_STATE",
    ESP_ERR_INVALID_SIZE: "ESP_ERR_INVALID_SIZE",
    ESP_ERR_NOT_FOUND: "ESP_ERR_NOT_FOUND",
    ESP_ERR_NOT_SUPPORTED: "ESP_ERR_NOT_SUPPORTED",
    ESP_ERR_OTA_PARTITION_CONFLICT: "ESP_ERR_OTA_PARTITION_CONFLICT",
    ESP_ERR_OTA_SELECT_INFO_INVALID: "ESP_ERR_OTA_SELECT_INFO_INVALID",
    ESP_ERR_OTA_VALIDATE_FAILED: "ESP_ERR_OTA_VALIDATE_FAILED",
    ESP_ERR_OTA_SMALL_SEC_VER: "ESP_ERR_OTA_SMALL_SEC_VER",
    ESP_ERR_OTA_ROLLBACK_FAILED: "ESP_ERR_OTA_ROLLBACK_FAILED",
    ESP_ERR_OTA_ROLLBACK_INVALID_STATE: "ESP_ERR_OTA_ROLLBACK_INVALID_STATE",
    ESP_ERR_IMAGE_INVALID: "ESP_ERR_IMAGE_INVALID",
}


class EspError(Exception):
    # Raised inside the simulator by the emulated ESP-IDF functions; esp32.Partition turns it
    # into the OSError that MicroPython raises. EspError.last: the code of the latest one (read
    # by esp32.Partition, which catches it without `as`: see its _try()).
    last = 0

    def __init__(self, code, detail=""):
        super().__init__(code, detail)
        EspError.last = code
        self.code = code
        self.detail = detail


def check(code):
    if code != ESP_OK:
        raise EspError(code)


def oserror(code):
    # As check_esp_err() in ports/esp32/mphalport.c: OSError(-code, name), with three codes
    # mapped to POSIX errno values.
    name = NAMES.get(code, "ESP_ERR_0x%X" % code)
    if code == ESP_ERR_NO_MEM:
        return OSError(12, name)  # ENOMEM
    if code == ESP_ERR_NOT_SUPPORTED:
        return OSError(95, name)  # EOPNOTSUPP
    return OSError(-code, name)
