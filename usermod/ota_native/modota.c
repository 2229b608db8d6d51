// The `_ota` module: MicroPython binding of the OTA core (ota_core.c). It only converts:
// arguments to C, buffers and streams to calls into the core, esp_err_t to exceptions (in
// ota_raise(), the one place that does it), and it releases the GIL around flash work.
//
//   _ota.Update(length=0, confirm=False, progress=None, offset=0, erased=0)
//                                      an update of the next OTA partition (offset: resume one
//                                      whose first bytes are already written; erased: the slot
//                                      is known erased from there up to this offset)
//       .write(buf) -> int            any bytes-like object
//       .write_from(stream, limit=-1) -> int    pumps stream.readinto(): native streams
//                                      straight into the session's own buffer
//                                      (ota_core_space/commit), others through a buffer of
//                                      their own (see ota_update_write_from())
//       .finish(sha=None, length=0, verify=True, set_boot=False)    verify: the flash holds the
//                                      bytes received (ValueError "SHA verify failed: ...")
//       .abort()
//       .sha() -> bytes                SHA-256 of the bytes received so far
//       .nbytes, .flashed              bytes received; of those, bytes on flash (the rest is
//                                      in the buffer until its 4 KB is complete, or finish())
//       .erased                        the slot is known erased from .flashed up to here
//       .partition, .head              target label, the first bytes held
//   _ota.running() / boot() / next_update() -> label or None
//   _ota.state(label) -> int or None   esp_ota_get_state_partition()
//   _ota.describe(label) -> (version, project, date, time, idf_ver) or None
//   _ota.set_boot(label), mark_valid(), mark_invalid_and_reboot(), rollback_possible()
//   _ota.verify_signature(key, digest, signature) -> bool     ECDSA P-256 (mbedtls)
//   _ota.Patch(src, old, old_length, length, cp=None)    the core's delta-patch applier
//                                      (ota_delta.c): a detools sequential patch read from
//                                      stream src, applied to the image in partition `old` (a
//                                      label, or an esp32.Partition); cp: the MPZ1 checkpoint
//                                      (comp, out, pay, frm, phase, left) src starts at
//       .readinto(buf) -> int          bytes of the new image (0: complete)
//       .close()                       readinto() then raises ValueError
//
// Memory safety whatever Python code does: no pointer into a Python object is used after a call
// back into Python (a stream's readinto(), progress()) without fetching it again and checking
// its length, and Python is never handed a view of memory it does not own (the session's buffer
// and the patch bytes are C memory inside these objects): a stream's readinto() gets a fresh
// memoryview of a heap buffer that the object keeps (a view kept by the stream keeps that buffer
// alive; a memoryview cannot be resized), and its bytes are copied out before anything else runs.
// A stream's readinto() returning None means "no data yet" (a non-blocking stream): it is asked
// again, by write_from() and by Patch alike.
//   _ota.flash_counts() -> (erase_4k, erase_64k, program_pages, program_bytes, read_ops,
//                           read_bytes)        host builds only (the simulated flash)

#include <limits.h>
#include <stdint.h>
#include <string.h>

#include "py/mperrno.h"
#include "py/objarray.h"
#include "py/runtime.h"
#include "py/stream.h"

#include "ota_config.h"
#include "ota_core.h"
#include "ota_delta.h"
#include "ota_sig.h"
#if OTA_HOST_BACKEND
#include "ota_host.h"
#endif

#ifndef MP_NORETURN
#define MP_NORETURN NORETURN
#endif

#if !MICROPY_PY_BUILTINS_MEMORYVIEW
#error "_ota hands streams memoryviews: it needs MICROPY_PY_BUILTINS_MEMORYVIEW"
#endif

typedef struct _ota_update_obj_t {
    mp_obj_base_t base;
    ota_core_t core;
    mp_obj_t progress;
    uint8_t *scratch; // OTA_BUFFER_SIZE heap bytes: what Python streams' readinto() is given
    size_t reported; // bytes received at the last progress call
    size_t expect_len; // of the last finish(), for its error message
    uint8_t expect_sha[OTA_SHA256_LEN];
} ota_update_obj_t;

// The one place that maps esp_err_t to Python exceptions: ESP-IDF's codes as MicroPython's
// esp32 port does (OSError(-code, "ESP_ERR_NAME")); the core's own as ValueError(message), or
// OSError(ENOENT, message) when there is no OTA partition, with the `ota` package's wording.
static MP_NORETURN void ota_raise(esp_err_t err, ota_update_obj_t *self) {
    if (err == OTA_ERR_CLOSED && self && self->core.state == OTA_CORE_DONE) {
        mp_raise_ValueError(MP_ERROR_TEXT(
            "This OTA update is finished: start a new Update() to write again."));
    }
    if (err >= OTA_ERR_BASE && err < OTA_ERR_BASE + 0x100) {
        char msg[320];
        ota_core_message(self ? &self->core : NULL, err, self ? self->expect_len : 0,
            self ? self->expect_sha : NULL, msg, sizeof(msg));
        mp_obj_t text = mp_obj_new_str(msg, strlen(msg));
        if (err == OTA_ERR_NO_OTA) {
            mp_obj_t args[2] = { MP_OBJ_NEW_SMALL_INT(MP_ENOENT), text };
            nlr_raise(mp_obj_new_exception_args(&mp_type_OSError, 2, args));
        }
        nlr_raise(mp_obj_new_exception_args(&mp_type_ValueError, 1, &text));
    }
    mp_int_t pcode = -err;
    if (err == ESP_ERR_NO_MEM) {
        pcode = MP_ENOMEM;
    } else if (err == ESP_ERR_TIMEOUT) {
        pcode = MP_ETIMEDOUT;
    } else if (err == ESP_ERR_NOT_SUPPORTED) {
        pcode = MP_EOPNOTSUPP;
    }
    const char *name = esp_err_to_name(err);
    mp_obj_t args[2] = { MP_OBJ_NEW_SMALL_INT(pcode), mp_obj_new_str(name, strlen(name)) };
    nlr_raise(mp_obj_new_exception_args(&mp_type_OSError, 2, args));
}

static void ota_check(esp_err_t err, ota_update_obj_t *self) {
    if (err != ESP_OK) {
        ota_raise(err, self);
    }
}

static ota_update_obj_t *ota_update_get(mp_obj_t self_in) {
    return MP_OBJ_TO_PTR(self_in);
}

// Counts beyond 30 bits are "a huge int" whatever the port's small-int range (as in
// ota_core_message()), so that every port and the ctypes _ota say the same.
#define OTA_HUGE_COUNT (0x40000000)

// What a Python stream's readinto() returned: *count, or (*what set) something that is no
// count at all. False for None: a non-blocking stream with no data yet.
static bool ota_read_count(mp_obj_t r, long long *count, const char **what) {
    *count = 0;
    *what = NULL;
    if (r == mp_const_none) {
        return false;
    }
    if (mp_obj_is_small_int(r) || mp_obj_is_bool(r)) {
        *count = mp_obj_get_int(r);
    } else {
        *what = mp_obj_is_int(r) ? "huge int" : mp_obj_get_type_str(r);
    }
    return true;
}

// readinto() of a stream given `asked` bytes returned something other than a count of bytes
// in them: the stream's error, in ota_core_message()'s words.
static MP_NORETURN void ota_raise_stream(long long count, const char *what, size_t asked) {
    if (what == NULL && (count >= OTA_HUGE_COUNT || count <= -OTA_HUGE_COUNT)) {
        what = "huge int";
    }
    if (what) {
        mp_raise_msg_varg(&mp_type_ValueError, MP_ERROR_TEXT("Stream error: readinto() "
            "returned a %s for a buffer of %u bytes."), what, (unsigned)asked);
    }
    mp_raise_msg_varg(&mp_type_ValueError, MP_ERROR_TEXT("Stream error: readinto() returned "
        "%d for a buffer of %u bytes."), (int)count, (unsigned)asked);
}

// A fresh writable memoryview of n bytes at buf (heap memory the caller keeps), for a Python
// stream's readinto(): it cannot be resized, and keeps buf alive as long as it is kept.
static mp_obj_t ota_view(uint8_t *buf, size_t n) {
    return mp_obj_new_memoryview('B' | MP_OBJ_ARRAY_TYPECODE_FLAG_RW, n, buf);
}

// Flash work happens without the GIL (data must stay valid meanwhile): len bytes of data, or
// (data NULL) len bytes a stream put in the session's buffer.
static void ota_update_feed(ota_update_obj_t *self, const uint8_t *data, size_t len) {
    MP_THREAD_GIL_EXIT();
    esp_err_t err = data ? ota_core_write(&self->core, data, len)
        : ota_core_commit(&self->core, len);
    MP_THREAD_GIL_ENTER();
    ota_check(err, self);
    if (self->progress != mp_const_none
        && self->core.received - self->reported >= OTA_PROGRESS_STEP) {
        self->reported = self->core.received;
        mp_call_function_1(self->progress, mp_obj_new_int_from_uint(self->core.received));
    }
}

extern const mp_obj_type_t ota_update_type;

static mp_obj_t ota_update_make_new(const mp_obj_type_t *type, size_t n_args, size_t n_kw,
    const mp_obj_t *all_args) {
    enum { ARG_length, ARG_confirm, ARG_progress, ARG_offset, ARG_erased };
    static const mp_arg_t allowed_args[] = {
        { MP_QSTR_length, MP_ARG_INT, {.u_int = 0} },
        { MP_QSTR_confirm, MP_ARG_BOOL, {.u_bool = false} },
        { MP_QSTR_progress, MP_ARG_OBJ, {.u_rom_obj = MP_ROM_NONE} },
        { MP_QSTR_offset, MP_ARG_INT, {.u_int = 0} },
        { MP_QSTR_erased, MP_ARG_INT, {.u_int = 0} },
    };
    mp_arg_val_t args[MP_ARRAY_SIZE(allowed_args)];
    mp_arg_parse_all_kw_array(n_args, n_kw, all_args, MP_ARRAY_SIZE(allowed_args), allowed_args,
        args);
    if (args[ARG_length].u_int < 0 || args[ARG_offset].u_int < 0 || args[ARG_erased].u_int < 0) {
        mp_raise_ValueError(MP_ERROR_TEXT("length, offset and erased must be >= 0"));
    }
    #if MP_INT_MAX > 0xFFFFFFFF && MP_INT_MAX == LONG_MAX
    if (args[ARG_length].u_int > 0xFFFFFFFF) { // no partition is that large (the core's
        // message would print the length cut to 32 bits)
        mp_raise_msg_varg(&mp_type_ValueError, MP_ERROR_TEXT(
            "length (%ld bytes) is > size of partition."), (long)args[ARG_length].u_int);
    }
    #endif
    ota_update_obj_t *self = mp_obj_malloc_with_finaliser(ota_update_obj_t, type);
    self->progress = args[ARG_progress].u_obj;
    self->scratch = NULL;
    self->reported = 0;
    self->expect_len = 0;
    MP_THREAD_GIL_EXIT();
    esp_err_t err = ota_core_begin_at(&self->core, args[ARG_length].u_int,
        args[ARG_confirm].u_bool ? OTA_CORE_CONFIRM : 0, args[ARG_offset].u_int, NULL, 0);
    if (err == ESP_OK && args[ARG_erased].u_int) {
        err = ota_core_assume_erased(&self->core, args[ARG_erased].u_int);
        if (err != ESP_OK) {
            ota_core_abort(&self->core);
        }
    }
    self->reported = self->core.received;
    MP_THREAD_GIL_ENTER();
    ota_check(err, self);
    return MP_OBJ_FROM_PTR(self);
}

static mp_obj_t ota_update_write(mp_obj_t self_in, mp_obj_t data_in) {
    ota_update_obj_t *self = ota_update_get(self_in);
    mp_buffer_info_t bufinfo;
    mp_get_buffer_raise(data_in, &bufinfo, MP_BUFFER_READ);
    // The core copies data into its buffer: data must not be (part of) that buffer. Nothing
    // hands Python a view of it; this refuses one all the same, before the core is called.
    uintptr_t at = (uintptr_t)bufinfo.buf, own = (uintptr_t)self->core.buf;
    if (bufinfo.len && at < own + sizeof(self->core.buf) && own < at + bufinfo.len) {
        mp_raise_ValueError(MP_ERROR_TEXT("write(): the data overlaps the update's own buffer."));
    }
    ota_update_feed(self, bufinfo.buf, bufinfo.len);
    return MP_OBJ_NEW_SMALL_INT(bufinfo.len);
}
static MP_DEFINE_CONST_FUN_OBJ_2(ota_update_write_obj, ota_update_write);

// Pump a stream into the image: native streams (files, sockets, SSL) are read directly into
// the session's buffer, where the core collects whole 4 KB pieces for flash. Other objects
// through their readinto() method, given a fresh memoryview of the object's heap buffer
// (scratch, allocated on first use): never a view of the session's buffer, which a stream could
// keep after the Update is gone, or pass back to write(). What it read is then written as
// write() writes it, from scratch (which nothing frees while the Update lives), after the
// count is checked.
static mp_obj_t ota_update_write_from(size_t n_args, const mp_obj_t *args) {
    ota_update_obj_t *self = ota_update_get(args[0]);
    mp_obj_t stream = args[1];
    mp_int_t limit = n_args > 2 ? mp_obj_get_int(args[2]) : -1;
    mp_obj_t dest[3];
    mp_load_method(stream, MP_QSTR_readinto, dest);
    bool native = dest[0] == MP_OBJ_FROM_PTR(&mp_stream_readinto_obj);
    const mp_stream_p_t *sp = native ? mp_get_stream(stream) : NULL;
    size_t total = 0;
    nlr_buf_t nlr;
    if (nlr_push(&nlr) == 0) {
        if (!native && self->scratch == NULL) {
            self->scratch = m_new(uint8_t, OTA_BUFFER_SIZE);
        }
        while (limit < 0 || total < (size_t)limit) {
            size_t want;
            uint8_t *space = ota_core_space(&self->core, &want);
            if (space == NULL) {
                ota_raise(OTA_ERR_CLOSED, self);
            }
            if (limit >= 0 && (size_t)limit - total < want) {
                want = (size_t)limit - total;
            }
            // What the stream says it read, checked by the core before a byte is used: a
            // count above `want` would have the core read past the buffer.
            long long count = 0;
            const char *what = NULL;
            if (native) {
                int errcode;
                mp_uint_t r = sp->read(stream, space, want, &errcode);
                if (r == MP_STREAM_ERROR) {
                    if (mp_is_nonblocking_error(errcode)) {
                        continue;
                    }
                    mp_raise_OSError(errcode);
                }
                count = (long long)r;
            } else {
                dest[2] = ota_view(self->scratch, want);
                if (!ota_read_count(mp_call_method_n_kw(1, 0, dest), &count, &what)) {
                    continue; // None: a non-blocking stream with nothing to read yet
                }
            }
            ota_check(ota_core_check_read(&self->core, count, want, what), self);
            size_t n = (size_t)count;
            if (n == 0) {
                break;
            }
            // The session's buffer may have changed during readinto() (it is Python code: it
            // may have called write()): write() takes the bytes wherever the session is now.
            ota_update_feed(self, native ? NULL : self->scratch, n);
            total += n;
        }
        nlr_pop();
    } else {
        ota_core_abort(&self->core); // the stream failed: this update is over
        nlr_jump(nlr.ret_val);
    }
    return mp_obj_new_int_from_uint(total);
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(ota_update_write_from_obj, 2, 3, ota_update_write_from);

static mp_obj_t ota_update_finish(size_t n_args, const mp_obj_t *pos_args, mp_map_t *kw_args) {
    enum { ARG_sha, ARG_length, ARG_verify, ARG_set_boot };
    static const mp_arg_t allowed_args[] = {
        { MP_QSTR_sha, MP_ARG_OBJ, {.u_rom_obj = MP_ROM_NONE} },
        { MP_QSTR_length, MP_ARG_INT, {.u_int = 0} },
        { MP_QSTR_verify, MP_ARG_BOOL, {.u_bool = true} },
        { MP_QSTR_set_boot, MP_ARG_BOOL, {.u_bool = false} },
    };
    ota_update_obj_t *self = ota_update_get(pos_args[0]);
    mp_arg_val_t args[MP_ARRAY_SIZE(allowed_args)];
    mp_arg_parse_all(n_args - 1, pos_args + 1, kw_args, MP_ARRAY_SIZE(allowed_args),
        allowed_args, args);
    const uint8_t *sha = NULL;
    if (args[ARG_sha].u_obj != mp_const_none) {
        mp_buffer_info_t b;
        mp_get_buffer_raise(args[ARG_sha].u_obj, &b, MP_BUFFER_READ);
        if (b.len != OTA_SHA256_LEN) {
            mp_raise_ValueError(MP_ERROR_TEXT("sha must be the 32 bytes of a SHA-256"));
        }
        memcpy(self->expect_sha, b.buf, OTA_SHA256_LEN);
        sha = self->expect_sha;
    }
    if (args[ARG_length].u_int < 0) {
        mp_raise_ValueError(MP_ERROR_TEXT("length must be >= 0"));
    }
    self->expect_len = args[ARG_length].u_int;
    MP_THREAD_GIL_EXIT();
    esp_err_t err = ota_core_finish(&self->core, self->expect_len, sha,
        args[ARG_verify].u_bool, args[ARG_set_boot].u_bool, NULL, 0);
    MP_THREAD_GIL_ENTER();
    ota_check(err, self);
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_KW(ota_update_finish_obj, 1, ota_update_finish);

static mp_obj_t ota_update_abort(mp_obj_t self_in) {
    ota_core_abort(&ota_update_get(self_in)->core);
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_1(ota_update_abort_obj, ota_update_abort);

// Finaliser: an update left unfinished (e.g. by a soft reset) releases its ESP-IDF handle.
static mp_obj_t ota_update_del(mp_obj_t self_in) {
    ota_update_obj_t *self = ota_update_get(self_in);
    ota_core_abort(&self->core);
    ota_core_free(&self->core);
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_1(ota_update_del_obj, ota_update_del);

static mp_obj_t ota_update_sha(mp_obj_t self_in) {
    uint8_t d[OTA_SHA256_LEN];
    ota_core_sha(&ota_update_get(self_in)->core, d);
    return mp_obj_new_bytes(d, sizeof(d));
}
static MP_DEFINE_CONST_FUN_OBJ_1(ota_update_sha_obj, ota_update_sha);

static mp_obj_t ota_update_enter(mp_obj_t self_in) {
    return self_in;
}
static MP_DEFINE_CONST_FUN_OBJ_1(ota_update_enter_obj, ota_update_enter);

static mp_obj_t ota_update_exit(size_t n_args, const mp_obj_t *args) {
    (void)n_args;
    ota_core_abort(&ota_update_get(args[0])->core); // no-op once finish() succeeded
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(ota_update_exit_obj, 4, 4, ota_update_exit);

static void ota_update_attr(mp_obj_t self_in, qstr attr, mp_obj_t *dest) {
    ota_update_obj_t *self = ota_update_get(self_in);
    if (dest[0] != MP_OBJ_NULL) {
        return; // read-only
    }
    if (attr == MP_QSTR_nbytes) {
        dest[0] = mp_obj_new_int_from_uint(self->core.received);
    } else if (attr == MP_QSTR_flashed) {
        dest[0] = mp_obj_new_int_from_uint(self->core.written);
    } else if (attr == MP_QSTR_erased) {
        dest[0] = mp_obj_new_int_from_uint(ota_core_erased(&self->core));
    } else if (attr == MP_QSTR_partition) {
        dest[0] = self->core.part ? mp_obj_new_str(self->core.part->label,
            strlen(self->core.part->label)) : mp_const_none;
    } else if (attr == MP_QSTR_head) {
        dest[0] = mp_obj_new_bytes(self->core.head, self->core.head_len);
    } else {
        dest[1] = MP_OBJ_SENTINEL; // look in locals_dict
    }
}

static const mp_rom_map_elem_t ota_update_locals_dict_table[] = {
    { MP_ROM_QSTR(MP_QSTR_write), MP_ROM_PTR(&ota_update_write_obj) },
    { MP_ROM_QSTR(MP_QSTR_write_from), MP_ROM_PTR(&ota_update_write_from_obj) },
    { MP_ROM_QSTR(MP_QSTR_finish), MP_ROM_PTR(&ota_update_finish_obj) },
    { MP_ROM_QSTR(MP_QSTR_abort), MP_ROM_PTR(&ota_update_abort_obj) },
    { MP_ROM_QSTR(MP_QSTR_sha), MP_ROM_PTR(&ota_update_sha_obj) },
    { MP_ROM_QSTR(MP_QSTR___del__), MP_ROM_PTR(&ota_update_del_obj) },
    { MP_ROM_QSTR(MP_QSTR___enter__), MP_ROM_PTR(&ota_update_enter_obj) },
    { MP_ROM_QSTR(MP_QSTR___exit__), MP_ROM_PTR(&ota_update_exit_obj) },
};
static MP_DEFINE_CONST_DICT(ota_update_locals_dict, ota_update_locals_dict_table);

MP_DEFINE_CONST_OBJ_TYPE(
    ota_update_type,
    MP_QSTR_Update,
    MP_TYPE_FLAG_NONE,
    make_new, ota_update_make_new,
    attr, ota_update_attr,
    locals_dict, &ota_update_locals_dict
    );

// Module functions

static mp_obj_t ota_label(const esp_partition_t *p) {
    return p ? mp_obj_new_str(p->label, strlen(p->label)) : mp_const_none;
}

static const esp_partition_t *ota_find(mp_obj_t label) {
    const esp_partition_t *p = ota_core_find(mp_obj_str_get_str(label));
    if (p == NULL) {
        mp_raise_OSError(MP_ENOENT);
    }
    return p;
}

// The delta-patch applier: the core's state machine (ota_delta.c) and the patch bytes read from
// src but not yet taken by it, in `in` (C memory, never shown to Python). src is read
// OTA_DELTA_IN_BUF bytes at a time: native streams directly into `in`, others through their
// readinto() given a fresh memoryview of `scratch` (a heap buffer the Patch keeps; a view the
// stream keeps keeps it alive), whose bytes are copied into `in` as soon as it returns.
typedef struct _ota_patch_obj_t {
    mp_obj_base_t base;
    mp_obj_t src; // None once closed
    uint8_t *scratch;
    size_t pos; // in[pos:fill) is still to be taken
    size_t fill;
    bool ended; // the image is complete and src was found to end there
    bool closed; // close() ran, or an exception ended a readinto(): readinto() refuses
    ota_delta_t delta;
    uint8_t in[OTA_DELTA_IN_BUF];
} ota_patch_obj_t;

// A checkpoint's items: MPZ1 header fields (u32), each an int from 0 to 2**30 - 1 here (every
// port's small int, and far beyond any image), so that none reaches the core cut or overflowed.
static const char *const ota_cp_names[6] = { "comp", "out", "pay", "frm", "phase", "left" };

static void ota_patch_cp(mp_obj_t cp_in, mp_int_t v[6]) {
    size_t n = 0;
    mp_obj_t *cp = NULL;
    if (mp_obj_is_type(cp_in, &mp_type_tuple) || mp_obj_is_type(cp_in, &mp_type_list)) {
        mp_obj_get_array(cp_in, &n, &cp);
    }
    if (n != 6) {
        mp_raise_ValueError(MP_ERROR_TEXT("cp must be (comp, out, pay, frm, phase, left)"));
    }
    for (size_t i = 0; i < 6; i++) {
        if (!mp_obj_is_small_int(cp[i]) || MP_OBJ_SMALL_INT_VALUE(cp[i]) < 0
            || MP_OBJ_SMALL_INT_VALUE(cp[i]) >= OTA_HUGE_COUNT) {
            mp_raise_msg_varg(&mp_type_ValueError, MP_ERROR_TEXT(
                "cp's %s (item %d) must be an int from 0 to 2**30 - 1"), ota_cp_names[i], (int)i);
        }
        v[i] = MP_OBJ_SMALL_INT_VALUE(cp[i]);
    }
}

static mp_obj_t ota_patch_make_new(const mp_obj_type_t *type, size_t n_args, size_t n_kw,
    const mp_obj_t *all_args) {
    enum { ARG_src, ARG_old, ARG_old_length, ARG_length, ARG_cp };
    static const mp_arg_t allowed_args[] = {
        { MP_QSTR_src, MP_ARG_REQUIRED | MP_ARG_OBJ, {.u_rom_obj = MP_ROM_NONE} },
        { MP_QSTR_old, MP_ARG_REQUIRED | MP_ARG_OBJ, {.u_rom_obj = MP_ROM_NONE} },
        { MP_QSTR_old_length, MP_ARG_REQUIRED | MP_ARG_INT, {.u_int = 0} },
        { MP_QSTR_length, MP_ARG_REQUIRED | MP_ARG_INT, {.u_int = 0} },
        { MP_QSTR_cp, MP_ARG_OBJ, {.u_rom_obj = MP_ROM_NONE} },
    };
    mp_arg_val_t args[MP_ARRAY_SIZE(allowed_args)];
    mp_arg_parse_all_kw_array(n_args, n_kw, all_args, MP_ARRAY_SIZE(allowed_args), allowed_args,
        args);
    if (args[ARG_old_length].u_int < 0 || args[ARG_length].u_int < 0) {
        mp_raise_ValueError(MP_ERROR_TEXT("lengths must be >= 0"));
    }
    mp_int_t cp[6] = {0};
    if (args[ARG_cp].u_obj != mp_const_none) {
        ota_patch_cp(args[ARG_cp].u_obj, cp);
    }
    mp_obj_t label = args[ARG_old].u_obj;
    if (!mp_obj_is_str(label)) { // a Partition: its info()[4]
        mp_obj_t dest[2];
        mp_load_method(label, MP_QSTR_info, dest);
        label = mp_obj_subscr(mp_call_method_n_kw(0, 0, dest), MP_OBJ_NEW_SMALL_INT(4),
            MP_OBJ_SENTINEL);
    }
    const esp_partition_t *old = ota_find(label);
    ota_patch_obj_t *self = mp_obj_malloc(ota_patch_obj_t, type);
    self->src = args[ARG_src].u_obj;
    self->scratch = NULL;
    self->pos = self->fill = 0;
    self->ended = self->closed = false;
    esp_err_t err;
    if (args[ARG_cp].u_obj == mp_const_none) {
        err = ota_delta_begin(&self->delta, old, args[ARG_old_length].u_int,
            args[ARG_length].u_int);
    } else {
        err = ota_delta_begin_at(&self->delta, old, args[ARG_old_length].u_int,
            args[ARG_length].u_int, cp[1], cp[3], (int)cp[4], cp[5]);
    }
    ota_check(err, NULL);
    return MP_OBJ_FROM_PTR(self);
}

static void ota_patch_check_open(ota_patch_obj_t *self) {
    if (self->closed) {
        mp_raise_ValueError(MP_ERROR_TEXT("This Patch is closed."));
    }
}

// Read the next patch bytes from src into self->in; 0 at its end. A readinto() returning None
// (no data yet) is asked again.
static size_t ota_patch_read(ota_patch_obj_t *self) {
    mp_obj_t dest[3];
    mp_load_method(self->src, MP_QSTR_readinto, dest);
    bool native = dest[0] == MP_OBJ_FROM_PTR(&mp_stream_readinto_obj);
    for (;;) {
        size_t n;
        if (native) {
            int errcode;
            mp_uint_t r = mp_get_stream(self->src)->read(self->src, self->in, sizeof(self->in),
                &errcode);
            if (r == MP_STREAM_ERROR) {
                if (mp_is_nonblocking_error(errcode)) {
                    continue;
                }
                mp_raise_OSError(errcode);
            }
            n = r;
        } else {
            if (self->scratch == NULL) {
                self->scratch = m_new(uint8_t, OTA_DELTA_IN_BUF);
            }
            dest[2] = ota_view(self->scratch, OTA_DELTA_IN_BUF);
            long long count;
            const char *what;
            if (!ota_read_count(mp_call_method_n_kw(1, 0, dest), &count, &what)) {
                continue; // None: no data yet
            }
            if (what || count < 0 || count > OTA_DELTA_IN_BUF) {
                ota_raise_stream(count, what, OTA_DELTA_IN_BUF);
            }
            n = (size_t)count;
            memcpy(self->in, self->scratch, n);
        }
        ota_patch_check_open(self); // readinto() may have closed this Patch
        self->pos = 0;
        self->fill = n;
        return n;
    }
}

// Patch bytes from in[pos:fill) into image bytes at out (room bytes); the core's error raised.
static size_t ota_patch_run(ota_patch_obj_t *self, uint8_t *out, size_t room) {
    size_t used, made;
    MP_THREAD_GIL_EXIT();
    esp_err_t err = ota_delta_run(&self->delta, self->in + self->pos, self->fill - self->pos,
        &used, out, room, &made);
    MP_THREAD_GIL_ENTER();
    self->pos += used;
    ota_check(err, NULL);
    return made;
}

// buf's buffer, fetched again after each read of src (Python code, which may have resized or
// freed what it was): the same length as at the start, or ValueError.
static uint8_t *ota_patch_out(mp_obj_t buf_in, size_t len) {
    mp_buffer_info_t buf;
    mp_get_buffer_raise(buf_in, &buf, MP_BUFFER_WRITE);
    if (buf.len != len) {
        mp_raise_ValueError(MP_ERROR_TEXT(
            "Patch.readinto()'s buffer was resized while the patch was read."));
    }
    return buf.buf;
}

static mp_obj_t ota_patch_readinto(mp_obj_t self_in, mp_obj_t buf_in) {
    ota_patch_obj_t *self = MP_OBJ_TO_PTR(self_in);
    ota_patch_check_open(self);
    mp_buffer_info_t buf;
    mp_get_buffer_raise(buf_in, &buf, MP_BUFFER_WRITE);
    size_t made = 0;
    nlr_buf_t nlr;
    if (nlr_push(&nlr) == 0) {
        while (made < buf.len && !ota_delta_done(&self->delta)) {
            if (self->pos == self->fill) {
                size_t n = ota_patch_read(self);
                buf.buf = ota_patch_out(buf_in, buf.len);
                if (n == 0) {
                    ota_check(ota_delta_end(&self->delta), NULL); // the patch ends too soon
                }
            }
            made += ota_patch_run(self, (uint8_t *)buf.buf + made, buf.len - made);
        }
        if (ota_delta_done(&self->delta) && !self->ended) {
            // The image is complete: the patch must end here (a byte after it is the core's
            // error).
            if (self->pos == self->fill) {
                ota_patch_read(self);
            }
            ota_patch_run(self, NULL, 0);
            self->ended = true;
        }
        nlr_pop();
    } else {
        // The bytes made by this call are lost with its result: the Patch cannot go on.
        self->closed = true;
        self->src = mp_const_none;
        nlr_jump(nlr.ret_val);
    }
    return mp_obj_new_int_from_uint(made);
}
static MP_DEFINE_CONST_FUN_OBJ_2(ota_patch_readinto_obj, ota_patch_readinto);

static mp_obj_t ota_patch_close(mp_obj_t self_in) {
    ota_patch_obj_t *self = MP_OBJ_TO_PTR(self_in);
    self->closed = true;
    self->src = mp_const_none; // src is the caller's to close
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_1(ota_patch_close_obj, ota_patch_close);

static const mp_rom_map_elem_t ota_patch_locals_dict_table[] = {
    { MP_ROM_QSTR(MP_QSTR_readinto), MP_ROM_PTR(&ota_patch_readinto_obj) },
    { MP_ROM_QSTR(MP_QSTR_close), MP_ROM_PTR(&ota_patch_close_obj) },
};
static MP_DEFINE_CONST_DICT(ota_patch_locals_dict, ota_patch_locals_dict_table);

MP_DEFINE_CONST_OBJ_TYPE(
    ota_patch_type,
    MP_QSTR_Patch,
    MP_TYPE_FLAG_NONE,
    make_new, ota_patch_make_new,
    locals_dict, &ota_patch_locals_dict
    );

static mp_obj_t ota_running(void) {
    return ota_label(ota_core_partition(OTA_CORE_RUNNING));
}
static MP_DEFINE_CONST_FUN_OBJ_0(ota_running_obj, ota_running);

static mp_obj_t ota_boot(void) {
    return ota_label(ota_core_partition(OTA_CORE_BOOT));
}
static MP_DEFINE_CONST_FUN_OBJ_0(ota_boot_obj, ota_boot);

static mp_obj_t ota_next_update(void) {
    return ota_label(ota_core_partition(OTA_CORE_NEXT));
}
static MP_DEFINE_CONST_FUN_OBJ_0(ota_next_update_obj, ota_next_update);

static mp_obj_t ota_state(mp_obj_t label) {
    esp_ota_img_states_t st;
    esp_err_t err = ota_core_state(ota_find(label), &st);
    if (err == ESP_ERR_NOT_FOUND || err == ESP_ERR_NOT_SUPPORTED) {
        return mp_const_none; // no otadata entry for it, or not an OTA partition
    }
    ota_check(err, NULL);
    return mp_obj_new_int_from_uint(st);
}
static MP_DEFINE_CONST_FUN_OBJ_1(ota_state_obj, ota_state);

static mp_obj_t ota_str_field(const char *s, size_t max) {
    return mp_obj_new_str(s, strnlen(s, max));
}

static mp_obj_t ota_describe(mp_obj_t label) {
    esp_app_desc_t d;
    esp_err_t err = ota_core_describe(ota_find(label), &d);
    if (err == ESP_ERR_NOT_FOUND) {
        return mp_const_none; // no app description there
    }
    ota_check(err, NULL);
    mp_obj_t t[5] = {
        ota_str_field(d.version, sizeof(d.version)),
        ota_str_field(d.project_name, sizeof(d.project_name)),
        ota_str_field(d.date, sizeof(d.date)),
        ota_str_field(d.time, sizeof(d.time)),
        ota_str_field(d.idf_ver, sizeof(d.idf_ver)),
    };
    return mp_obj_new_tuple(5, t);
}
static MP_DEFINE_CONST_FUN_OBJ_1(ota_describe_obj, ota_describe);

static mp_obj_t ota_set_boot(mp_obj_t label) {
    const esp_partition_t *p = ota_find(label);
    MP_THREAD_GIL_EXIT();
    esp_err_t err = ota_core_set_boot(p);
    MP_THREAD_GIL_ENTER();
    ota_check(err, NULL);
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_1(ota_set_boot_obj, ota_set_boot);

static mp_obj_t ota_mark_valid(void) {
    ota_check(ota_core_mark_valid(), NULL);
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_0(ota_mark_valid_obj, ota_mark_valid);

static mp_obj_t ota_mark_invalid_and_reboot(void) {
    ota_check(ota_core_mark_invalid_and_reboot(), NULL); // returns only on failure
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_0(ota_mark_invalid_and_reboot_obj, ota_mark_invalid_and_reboot);

static mp_obj_t ota_rollback_possible(void) {
    return mp_obj_new_bool(ota_core_rollback_possible());
}
static MP_DEFINE_CONST_FUN_OBJ_0(ota_rollback_possible_obj, ota_rollback_possible);

// verify_signature(key, digest, signature) -> bool: ECDSA P-256, key as DER
// SubjectPublicKeyInfo, digest the 32 bytes of a SHA-256, signature DER.
static mp_obj_t ota_verify_signature(mp_obj_t key_in, mp_obj_t digest_in, mp_obj_t sig_in) {
    mp_buffer_info_t key, digest, sig;
    mp_get_buffer_raise(key_in, &key, MP_BUFFER_READ);
    mp_get_buffer_raise(digest_in, &digest, MP_BUFFER_READ);
    mp_get_buffer_raise(sig_in, &sig, MP_BUFFER_READ);
    if (digest.len != OTA_SHA256_LEN) {
        mp_raise_ValueError(MP_ERROR_TEXT("digest must be the 32 bytes of a SHA-256"));
    }
    esp_err_t err = ota_sig_verify(key.buf, key.len, digest.buf, sig.buf, sig.len);
    if (err == OTA_ERR_SIGNATURE) {
        return mp_const_false;
    }
    ota_check(err, NULL);
    return mp_const_true;
}
static MP_DEFINE_CONST_FUN_OBJ_3(ota_verify_signature_obj, ota_verify_signature);

#if OTA_HOST_BACKEND
// Host builds only: the simulated flash's operation counters, for tests and benchmarks.
static mp_obj_t ota_flash_counts(void) {
    const ota_host_counts_t *c = ota_host_counts();
    mp_obj_t t[6] = {
        mp_obj_new_int_from_uint(c->erase_4k), mp_obj_new_int_from_uint(c->erase_64k),
        mp_obj_new_int_from_uint(c->program_pages), mp_obj_new_int_from_uint(c->program_bytes),
        mp_obj_new_int_from_uint(c->read_ops), mp_obj_new_int_from_uint(c->read_bytes),
    };
    return mp_obj_new_tuple(6, t);
}
static MP_DEFINE_CONST_FUN_OBJ_0(ota_flash_counts_obj, ota_flash_counts);
#endif

static const mp_rom_map_elem_t ota_module_globals_table[] = {
    { MP_ROM_QSTR(MP_QSTR___name__), MP_ROM_QSTR(MP_QSTR__ota) },
    { MP_ROM_QSTR(MP_QSTR_Update), MP_ROM_PTR(&ota_update_type) },
    { MP_ROM_QSTR(MP_QSTR_Patch), MP_ROM_PTR(&ota_patch_type) },
    { MP_ROM_QSTR(MP_QSTR_running), MP_ROM_PTR(&ota_running_obj) },
    { MP_ROM_QSTR(MP_QSTR_boot), MP_ROM_PTR(&ota_boot_obj) },
    { MP_ROM_QSTR(MP_QSTR_next_update), MP_ROM_PTR(&ota_next_update_obj) },
    { MP_ROM_QSTR(MP_QSTR_state), MP_ROM_PTR(&ota_state_obj) },
    { MP_ROM_QSTR(MP_QSTR_describe), MP_ROM_PTR(&ota_describe_obj) },
    { MP_ROM_QSTR(MP_QSTR_set_boot), MP_ROM_PTR(&ota_set_boot_obj) },
    { MP_ROM_QSTR(MP_QSTR_mark_valid), MP_ROM_PTR(&ota_mark_valid_obj) },
    { MP_ROM_QSTR(MP_QSTR_mark_invalid_and_reboot), MP_ROM_PTR(&ota_mark_invalid_and_reboot_obj) },
    { MP_ROM_QSTR(MP_QSTR_rollback_possible), MP_ROM_PTR(&ota_rollback_possible_obj) },
    { MP_ROM_QSTR(MP_QSTR_verify_signature), MP_ROM_PTR(&ota_verify_signature_obj) },
    { MP_ROM_QSTR(MP_QSTR_BUFFER_SIZE), MP_ROM_INT(OTA_BUFFER_SIZE) },
    { MP_ROM_QSTR(MP_QSTR_PROGRESS_STEP), MP_ROM_INT(OTA_PROGRESS_STEP) },
    #if OTA_HOST_BACKEND
    { MP_ROM_QSTR(MP_QSTR_flash_counts), MP_ROM_PTR(&ota_flash_counts_obj) },
    #endif
};
static MP_DEFINE_CONST_DICT(ota_module_globals, ota_module_globals_table);

const mp_obj_module_t ota_module = {
    .base = { &mp_type_module },
    .globals = (mp_obj_dict_t *)&ota_module_globals,
};

MP_REGISTER_MODULE(MP_QSTR__ota, ota_module);
