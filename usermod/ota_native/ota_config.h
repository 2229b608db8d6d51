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

#endif
