// Build-time settings of the native OTA module. Each can be overridden with -D.
#ifndef OTA_CONFIG_H
#define OTA_CONFIG_H

// Bytes of a stream read per readinto() call; the buffer lives inside the update object.
#ifndef OTA_BUFFER_SIZE
#define OTA_BUFFER_SIZE (4096)
#endif

// The progress callback is called at most once per this many bytes written.
#ifndef OTA_PROGRESS_STEP
#define OTA_PROGRESS_STEP (65536)
#endif

// Erase unit the core aims for: a 64 KB block erase is ~3x faster than sixteen 4 KB ones.
#ifndef OTA_ERASE_BLOCK
#define OTA_ERASE_BLOCK (65536)
#endif

// Delta patches (ota_delta.c): bytes of the old image read per esp_partition_read() (a power
// of two that divides 4096; the buffer lives inside the applier's state), and bytes of the patch
// read per readinto() of its stream (in the binding's Patch object).
#ifndef OTA_DELTA_OLD_BUF
#define OTA_DELTA_OLD_BUF (1024)
#endif
#ifndef OTA_DELTA_IN_BUF
#define OTA_DELTA_IN_BUF (1024)
#endif

#endif
