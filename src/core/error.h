/* Error reporting: functions return an fi_status and fill the caller's fi_error. */
#ifndef FI_CORE_ERROR_H
#define FI_CORE_ERROR_H

#include "flexinfer.h"

#if defined(__GNUC__)
#define FI_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define FI_PRINTF(a, b)
#endif

/* Writes a formatted message into err (if non-NULL) and returns code. */
fi_status fi_error_set(fi_error *err, fi_status code, const char *fmt, ...) FI_PRINTF(3, 4);
/* Prefixes an existing message with context ("while reading X: ..."). */
void fi_error_prefix(fi_error *err, const char *fmt, ...) FI_PRINTF(2, 3);
void fi_error_clear(fi_error *err);

#endif
