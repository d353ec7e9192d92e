/* Tokenizer built from a GGUF file's metadata: byte-level BPE ("gpt2", with the pre-tokenizer regex of
 * tokenizer.ggml.pre) and SentencePiece-style BPE ("llama", score-ranked merges with byte fallback).
 * Special/control tokens are matched in the text first (longest match) when parse_special is set. */
#ifndef FI_MODEL_TOKENIZER_H
#define FI_MODEL_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "flexinfer.h"
#include "model/gguf.h"

typedef struct fi_tokenizer fi_tokenizer;

typedef enum fi_tokenizer_kind { FI_TOKENIZER_BPE = 0, FI_TOKENIZER_SPM = 1 } fi_tokenizer_kind;

/* Token types as GGUF stores them in tokenizer.ggml.token_type. */
enum { FI_TOKEN_NORMAL = 1, FI_TOKEN_UNKNOWN = 2, FI_TOKEN_CONTROL = 3, FI_TOKEN_USER_DEFINED = 4,
       FI_TOKEN_UNUSED = 5, FI_TOKEN_BYTE = 6 };

fi_status fi_tokenizer_from_gguf(const fi_gguf *g, fi_tokenizer **out, fi_error *err);

/* Builds a tokenizer from plain arrays (tests, tools). tokens[i] is the vocabulary text of id i (NUL
 * terminated, as stored: byte-level BPE text or SentencePiece text with '▁'); scores may be NULL (BPE);
 * types may be NULL (all normal); merges ("a b", rank = index) only for BPE; a merge whose parts or result
 * are not tokens is ignored. pre: the pre-tokenizer name (BPE only; NULL = "default"). Special ids may be -1. */
typedef struct fi_tokenizer_spec {
    fi_tokenizer_kind kind;
    const char *const *tokens;
    const float *scores;
    const int32_t *types;
    int64_t n_tokens;
    const char *const *merges;
    int64_t n_merges;
    const char *pre;
    int32_t bos, eos, eot, pad, unk;
    bool add_bos, add_eos, add_space_prefix;
} fi_tokenizer_spec;
fi_status fi_tokenizer_from_spec(const fi_tokenizer_spec *spec, fi_tokenizer **out, fi_error *err);

void fi_tokenizer_free(fi_tokenizer *t);

/* add_special: BOS/EOS per the model's add_bos/add_eos flags; parse_special: "<|im_start|>" in text -> its id
 * (user-defined tokens are matched either way). Byte-level BPE reads malformed UTF-8 bytes as U+FFFD, and
 * drops bytes the vocabulary cannot spell, as llama.cpp does. The tokenizer is read-only here: threads may
 * share it. */
fi_status fi_tokenizer_encode(const fi_tokenizer *t, const char *text, size_t len, bool add_special,
                              bool parse_special, int32_t **ids, size_t *n_ids, fi_error *err); /* caller frees *ids */

/* Bytes of a token's text (byte-level BPE decoded to raw bytes, SentencePiece '▁' -> ' ', <0xXX> -> byte).
 * Control tokens give their literal text (e.g. "<|im_end|>"); callers that must hide them check
 * fi_tokenizer_token_type. Unknown ids give NULL with *len = 0. */
const char *fi_tokenizer_piece(const fi_tokenizer *t, int32_t id, size_t *len);
/* The token as the vocabulary stores it (NUL terminated), NULL for a bad id. */
const char *fi_tokenizer_token_text(const fi_tokenizer *t, int32_t id);
int32_t fi_tokenizer_token_type(const fi_tokenizer *t, int32_t id);   /* FI_TOKEN_*, 0 for a bad id */
/* Exact vocabulary lookup of a token text; -1 if absent. */
int32_t fi_tokenizer_find(const fi_tokenizer *t, const char *text, size_t len);

int64_t fi_tokenizer_n_vocab(const fi_tokenizer *t);
fi_tokenizer_kind fi_tokenizer_kind_of(const fi_tokenizer *t);
const char *fi_tokenizer_pre_name(const fi_tokenizer *t);          /* BPE pre-tokenizer in use */
int32_t fi_tokenizer_bos(const fi_tokenizer *t); int32_t fi_tokenizer_eos(const fi_tokenizer *t); /* -1 if none */
int32_t fi_tokenizer_eot(const fi_tokenizer *t);                   /* -1 if none */
bool fi_tokenizer_add_bos(const fi_tokenizer *t);
bool fi_tokenizer_add_eos(const fi_tokenizer *t);
bool fi_tokenizer_is_eog(const fi_tokenizer *t, int32_t id);   /* EOS, EOT, <|im_end|> ... ends generation */
size_t fi_tokenizer_max_piece_len(const fi_tokenizer *t);          /* longest fi_tokenizer_piece */

/* Streaming detokenizer: emits only complete UTF-8 sequences (an incomplete one is held back until the
 * next token completes it; bytes that can never complete are released as they are). Control tokens
 * print nothing. Zero-initialise before use. push returns the bytes written to out; give
 * cap >= fi_tokenizer_max_piece_len + 8 (a smaller cap truncates). */
typedef struct fi_detok { char pending[8]; int n_pending; } fi_detok;
size_t fi_detok_push(fi_detok *d, const fi_tokenizer *t, int32_t id, char *out, size_t cap);
size_t fi_detok_flush(fi_detok *d, char *out, size_t cap);

#endif
