/* libFuzzer target for the GGUF reader: any input must either be rejected with
 * a message or yield a file whose every key, string, array element and tensor
 * byte can be read inside the buffer (ASan/UBSan check the reads). */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "model/gguf.h"

static volatile uint64_t sink; /* keeps the reads from being optimised away */

static void walk(const fi_gguf *g) {
    uint64_t h = fi_gguf_version(g) + fi_gguf_alignment(g) + fi_gguf_data_offset(g);
    for (int64_t i = 0; i < fi_gguf_n_kv(g); i++) {
        const fi_gguf_kv *kv = fi_gguf_kv_at(g, i);
        char key[80];
        snprintf(key, sizeof key, "%.*s", (int)(kv->key.len < 79 ? kv->key.len : 79), kv->key.data);
        h += fi_gguf_find(g, key) != NULL;
        uint32_t u32;
        int64_t i64;
        float f32;
        bool b;
        fi_gguf_str s;
        h += fi_gguf_get_u32(g, key, &u32) + fi_gguf_get_i64(g, key, &i64) + fi_gguf_get_f32(g, key, &f32) +
             fi_gguf_get_bool(g, key, &b);
        if (fi_gguf_get_str(g, key, &s) && s.len) h += (uint8_t)s.data[0] + (uint8_t)s.data[s.len - 1];
        if (kv->type == FI_GGUF_ARRAY) {
            if (kv->arr_type == FI_GGUF_STRING) {
                for (uint64_t j = 0; j < kv->arr_count; j++) {
                    fi_gguf_str e = fi_gguf_array_str(kv, j);
                    if (e.len) h += (uint8_t)e.data[0] + (uint8_t)e.data[e.len - 1];
                }
            } else if (fi_gguf_type_size(kv->arr_type) && kv->arr_count) {
                const uint8_t *p = kv->value;
                h += p[0] + p[kv->arr_count * fi_gguf_type_size(kv->arr_type) - 1];
            }
        } else if (fi_gguf_type_size(kv->type)) {
            h += ((const uint8_t *)kv->value)[fi_gguf_type_size(kv->type) - 1];
        }
    }
    for (int64_t i = 0; i < fi_gguf_n_tensors(g); i++) {
        const fi_gguf_tensor *t = fi_gguf_tensor_at(g, i);
        const uint8_t *p = t->data;
        h += p[0] + p[t->nbytes - 1];
        char name[80];
        snprintf(name, sizeof name, "%.*s", (int)t->name.len, t->name.data);
        h += fi_gguf_find_tensor(g, name) != NULL;
    }
    sink = h;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fi_gguf *g = NULL;
    fi_error err = {0};
    if (fi_gguf_open_memory(data, size, &g, &err) == FI_OK) {
        walk(g);
        fi_gguf_close(g);
    } else if (strncmp(err.msg, "gguf: ", 6) != 0) {
        __builtin_trap(); /* every rejection carries a message */
    }
    return 0;
}
