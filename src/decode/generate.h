/* The generation loop: prefill a prompt, then sample, stream and stop (EOS/EOT, stop strings,
 * max tokens, context limit).
 *
 * It talks to the model only through fi_logits_source ("next-token logits after these tokens"), so
 * beam search, speculative decoding and tests can put a mock or a wrapper behind it. */
#ifndef FI_DECODE_GENERATE_H
#define FI_DECODE_GENERATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "flexinfer.h"
#include "model/tokenizer.h"

typedef struct fi_logits_source {
    void *self;
    /* Appends n tokens to the sequence and writes the logits after the last one ([n_vocab]). */
    fi_status (*eval)(void *self, const int32_t *tokens, size_t n, float *logits_last, fi_error *err);
    int64_t (*n_past)(void *self);              /* tokens in the sequence */
    void (*truncate)(void *self, int64_t n_past); /* drops positions >= n_past */
    int64_t n_vocab, n_ctx;
} fi_logits_source;

/* A source over a model session. */
fi_logits_source fi_logits_source_session(fi_session *s, const fi_model *m);

typedef enum fi_stop_reason {
    FI_STOP_NONE = 0,
    FI_STOP_EOG,       /* end-of-generation token */
    FI_STOP_STRING,    /* a stop string appeared */
    FI_STOP_MAX_TOKENS,
    FI_STOP_CONTEXT,   /* the context is full */
    FI_STOP_CALLER,    /* the emit callback asked to stop */
} fi_stop_reason;

/* Receives generated text as it comes (complete UTF-8, stop strings held back); false stops. */
typedef bool (*fi_emit_fn)(const char *text, size_t len, void *ctx);
/* Prefill progress: tokens done of total. */
typedef void (*fi_progress_fn)(int64_t done, int64_t total, void *ctx);

typedef struct fi_generate_params {
    int64_t max_tokens;           /* < 0: until the context is full */
    const char *const *stop;      /* stop strings (not emitted) */
    size_t n_stop;
    int64_t prefill_chunk;        /* tokens per progress report; 0: one call */
    fi_progress_fn progress;
    void *progress_ctx;
    bool stop_at_eog;             /* normally true */
    int32_t *tokens_out;          /* optional: receives the sampled tokens (a final EOG excluded) */
    size_t tokens_out_cap;
} fi_generate_params;

typedef struct fi_generate_stats {
    int64_t n_prompt, n_generated;
    double prefill_ms, decode_ms;
    fi_stop_reason reason;
} fi_generate_stats;

/* Appends `prompt` to the source's sequence and generates. Generated tokens (except a final EOG and
 * the stop-string tail's tokens are kept as they were evaluated) are fed back through the source,
 * so the sequence ends with the prompt and the reply. logits: caller scratch [n_vocab]. */
fi_status fi_generate(const fi_logits_source *src, fi_sampler *smp, const fi_tokenizer *tok,
                      const int32_t *prompt, size_t n_prompt, const fi_generate_params *gp,
                      float *logits, fi_emit_fn emit, void *emit_ctx, fi_generate_stats *stats,
                      fi_error *err);

/* Stop-string matching over streamed text (exposed for tests). Append text, then take what may be
 * emitted now: everything that cannot be the start of a stop string. */
typedef struct fi_stop_matcher {
    const char *const *stop;
    size_t n_stop;
    char *buf;
    size_t len, cap;
    bool hit;
} fi_stop_matcher;
fi_status fi_stop_matcher_push(fi_stop_matcher *m, const char *text, size_t len, fi_error *err);
/* Bytes at the start of buf that are safe to emit; when a stop string was found, the text before
 * it (and hit is set). Call fi_stop_matcher_consume(m, n) after emitting them. */
size_t fi_stop_matcher_ready(fi_stop_matcher *m, bool final);
void fi_stop_matcher_consume(fi_stop_matcher *m, size_t n);
void fi_stop_matcher_free(fi_stop_matcher *m);

#endif /* FI_DECODE_GENERATE_H */
