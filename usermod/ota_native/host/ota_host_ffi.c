// Accessors for the CPython simulator's _ota (sim/espsim/modules/cp/_ota.py), which drives the
// core through ctypes: sizes and fields it must not hard-code. Not part of any firmware.
#include "ota_core.h"
#include "ota_delta.h"

size_t ota_ffi_core_size(void) {
    return sizeof(ota_core_t);
}

size_t ota_ffi_received(const ota_core_t *s) {
    return s->received;
}

size_t ota_ffi_written(const ota_core_t *s) {
    return s->written;
}

size_t ota_ffi_head(const ota_core_t *s, const uint8_t **head) {
    *head = s->head;
    return s->head_len;
}

const char *ota_ffi_target(const ota_core_t *s) {
    return s->part ? s->part->label : NULL;
}

const char *ota_ffi_label(const esp_partition_t *p) {
    return p ? p->label : NULL;
}

size_t ota_ffi_delta_size(void) {
    return sizeof(ota_delta_t);
}
