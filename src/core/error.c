#include "core/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

fi_status fi_error_set(fi_error *err, fi_status code, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
        err->code = code;
    }
    return code;
}

void fi_error_prefix(fi_error *err, const char *fmt, ...) {
    if (!err) return;
    char prefix[256], old[sizeof err->msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, err->msg, sizeof old);
    snprintf(err->msg, sizeof err->msg, "%s: %s", prefix, old);
}

void fi_error_clear(fi_error *err) {
    if (err) {
        err->code = FI_OK;
        err->msg[0] = '\0';
    }
}
