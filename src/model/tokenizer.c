/* Tokenizer: vocabulary, special-token partitioning, byte-level BPE and SentencePiece-style BPE,
 * token pieces and the streaming detokenizer.
 *
 * Encoding goes in three steps, as llama.cpp does it (so ids agree with it on the same file):
 *   1. the text is partitioned on special tokens (longest token text first, every occurrence);
 *   2. BPE: every raw fragment is pre-tokenized by the regexes of tokenizer.ggml.pre, applied one
 *      after the other (each splits the pieces of the previous one; text between matches stays a
 *      piece of its own); SPM: '▁' replaces spaces (plus a leading one per add_space_prefix);
 *   3. merges: BPE by rank (lowest first, leftmost on ties), SPM by the merged token's score
 *      (highest first, leftmost on ties); SPM falls back to <0xXX> byte tokens. */
#include "model/tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "core/error.h"

#define FI_TOK_MAX_REGEX 4
#define FI_TOK_MAX_EOG 16

/* Open-addressing hash of token ids keyed by their vocabulary text. */
typedef struct text_map {
    int32_t *slots; /* -1 = empty */
    uint64_t mask;
} text_map;

/* Open-addressing hash of BPE merges keyed by the (left id, right id) pair. */
typedef struct merge_entry {
    uint64_t key; /* (left << 32) | right; UINT64_MAX = empty */
    int32_t rank;
    int32_t result;
} merge_entry;
typedef struct merge_map {
    merge_entry *slots;
    uint64_t mask;
} merge_map;

struct fi_tokenizer {
    fi_tokenizer_kind kind;
    int64_t n_vocab;
    char *text_arena;    /* vocabulary texts, each NUL terminated */
    uint32_t *text_off;
    uint32_t *text_len;
    char *piece_arena;   /* decoded bytes of each token */
    uint32_t *piece_off;
    uint32_t *piece_len;
    float *scores;
    int32_t *types;
    text_map vocab;
    merge_map merges;
    int32_t *specials;   /* control / user-defined / unknown ids, longest text first */
    int64_t n_specials;
    int32_t byte_token[256]; /* BPE: id of the byte's mapped char; SPM: id of <0xXX>; -1 if none */
    pcre2_code *re[FI_TOK_MAX_REGEX];
    int n_re;
    char pre[32];
    bool ignore_merges;
    int32_t bos, eos, eot, pad, unk;
    int32_t eog[FI_TOK_MAX_EOG];
    int n_eog;
    bool add_bos, add_eos, add_space_prefix;
    size_t max_piece_len;
};

/* ------------------------------------------------------------------------ */
/* Small helpers                                                             */
/* ------------------------------------------------------------------------ */

static uint64_t hash_bytes(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a, then a final mix for the low bits */
    for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)s[i]) * 1099511628211ull;
    h ^= h >> 29;
    h *= 0xbf58476d1ce4e5b9ull;
    return h ^ (h >> 32);
}

static uint64_t hash_u64(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    return x ^ (x >> 33);
}

static uint64_t pow2_at_least(uint64_t n) {
    uint64_t c = 16;
    while (c < n) c <<= 1;
    return c;
}

static size_t utf8_len(uint8_t lead) {
    if (lead < 0x80) return 1;
    if ((lead & 0xE0) == 0xC0) return 2;
    if ((lead & 0xF0) == 0xE0) return 3;
    if ((lead & 0xF8) == 0xF0) return 4;
    return 1; /* stray continuation or invalid byte: a unit of its own */
}

/* Decodes one code point (lenient: an invalid sequence gives its first byte as U+FFFD, length 1). */
static uint32_t utf8_decode(const char *s, size_t n, size_t *used) {
    const uint8_t *u = (const uint8_t *)s;
    size_t len = utf8_len(u[0]);
    if (len == 1 || len > n) {
        *used = 1;
        return u[0] < 0x80 ? u[0] : 0xFFFD;
    }
    uint32_t cp = u[0] & (0x7F >> len);
    for (size_t i = 1; i < len; i++) {
        if ((u[i] & 0xC0) != 0x80) {
            *used = 1;
            return 0xFFFD;
        }
        cp = (cp << 6) | (u[i] & 0x3F);
    }
    *used = len;
    return cp;
}

static size_t utf8_encode(uint32_t cp, char *out) {
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* GPT-2's byte <-> unicode table: printable bytes map to themselves, the other 68 bytes to
 * U+0100 onwards in byte order, so every byte has a visible, non-space character. */
static bool byte_is_printable(int b) {
    return (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
}
static uint32_t byte_to_cp(int b) {
    if (byte_is_printable(b)) return (uint32_t)b;
    int n = 0;
    for (int i = 0; i < b; i++)
        if (!byte_is_printable(i)) n++;
    return 256u + (uint32_t)n;
}
static int cp_to_byte(uint32_t cp) {
    if (cp < 256) return byte_is_printable((int)cp) ? (int)cp : -1;
    int n = (int)(cp - 256);
    for (int b = 0; b < 256; b++)
        if (!byte_is_printable(b) && n-- == 0) return b;
    return -1;
}

/* ------------------------------------------------------------------------ */
/* Hash maps                                                                 */
/* ------------------------------------------------------------------------ */

static const char *tok_text(const fi_tokenizer *t, int32_t id) { return t->text_arena + t->text_off[id]; }

static int32_t text_map_find(const fi_tokenizer *t, const char *s, size_t n) {
    if (!t->vocab.slots) return -1;
    for (uint64_t i = hash_bytes(s, n) & t->vocab.mask;; i = (i + 1) & t->vocab.mask) {
        int32_t id = t->vocab.slots[i];
        if (id < 0) return -1;
        if (t->text_len[id] == n && memcmp(tok_text(t, id), s, n) == 0) return id;
    }
}

/* A text that appears twice maps to its last id, as the reference's text-to-id map ends up. */
static fi_status text_map_build(fi_tokenizer *t, fi_error *err) {
    uint64_t cap = pow2_at_least((uint64_t)t->n_vocab * 2 + 1);
    t->vocab.slots = malloc(cap * sizeof *t->vocab.slots);
    if (!t->vocab.slots) return fi_error_set(err, FI_ERR_NOMEM, "tokenizer: out of memory (vocabulary map)");
    memset(t->vocab.slots, 0xFF, cap * sizeof *t->vocab.slots);
    t->vocab.mask = cap - 1;
    for (int32_t id = 0; id < t->n_vocab; id++) {
        const char *s = tok_text(t, id);
        uint32_t n = t->text_len[id];
        for (uint64_t i = hash_bytes(s, n) & t->vocab.mask;; i = (i + 1) & t->vocab.mask) {
            int32_t other = t->vocab.slots[i];
            if (other < 0) {
                t->vocab.slots[i] = id;
                break;
            }
            if (t->text_len[other] == n && memcmp(tok_text(t, other), s, n) == 0) {
                t->vocab.slots[i] = id;
                break;
            }
        }
    }
    return FI_OK;
}

static const merge_entry *merge_find(const merge_map *m, int32_t left, int32_t right) {
    if (!m->slots || left < 0 || right < 0) return NULL;
    uint64_t key = ((uint64_t)(uint32_t)left << 32) | (uint32_t)right;
    for (uint64_t i = hash_u64(key) & m->mask;; i = (i + 1) & m->mask) {
        if (m->slots[i].key == key) return &m->slots[i];
        if (m->slots[i].key == UINT64_MAX) return NULL;
    }
}

/* ------------------------------------------------------------------------ */
/* Pre-tokenizers                                                            */
/* ------------------------------------------------------------------------ */

/* The GPT-2 split: contractions, optional space + letters / digits / other symbols, whitespace. */
#define RE_GPT2 "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)"
/* Contractions spelled with ASCII case classes: a caseless match under Unicode rules would also
 * accept letters such as U+017F that fold to 's', which the reference tokenizers do not. */
#define RE_CONTRACTIONS "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"
#define RE_LLAMA3 RE_CONTRACTIONS "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define RE_QWEN2 RE_CONTRACTIONS "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define RE_GPT4O_UPPER "[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]"
#define RE_GPT4O_LOWER "[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]"
#define RE_GPT4O                                                                                             \
    "[^\\r\\n\\p{L}\\p{N}]?" RE_GPT4O_UPPER "*" RE_GPT4O_LOWER "+" RE_CONTRACTIONS "?"                       \
    "|[^\\r\\n\\p{L}\\p{N}]?" RE_GPT4O_UPPER "+" RE_GPT4O_LOWER "*" RE_CONTRACTIONS "?"                      \
    "|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"

typedef struct pre_spec {
    const char *names; /* '|'-separated tokenizer.ggml.pre values */
    const char *regex[FI_TOK_MAX_REGEX];
    bool ignore_merges; /* a whole pre-token found in the vocabulary is used as is */
} pre_spec;

static const pre_spec PRE_SPECS[] = {
    {"default", {"[\\p{P}\\$\\+<=>\\^~\\|]+", RE_GPT2, "\\p{N}+", "[0-9][0-9][0-9]"}, false},
    {"gpt2|gpt-2|phi-2|mpt|olmo|jais|trillion", {RE_GPT2}, false},
    {"smollm|starcoder|refact|command-r|codeshell|exaone|minerva-7b", {"\\p{N}", RE_GPT2}, false},
    {"llama3|llama-v3|llama-bpe|falcon3|falcon-h1|pixtral|midm-2.0|lfm2", {RE_LLAMA3}, true},
    {"dbrx|smaug-bpe|chatglm-bpe", {RE_LLAMA3}, false},
    {"qwen2|qwen2.5|qwen-2.5|deepseek-r1-qwen|stablelm2|hunyuan|megrez|grok-2", {RE_QWEN2}, false},
    {"gpt-4o|llama4|minimax-m2", {RE_GPT4O}, false},
};

static bool name_in_list(const char *list, const char *name) {
    size_t n = strlen(name);
    for (const char *p = list; *p;) {
        const char *bar = strchr(p, '|');
        size_t len = bar ? (size_t)(bar - p) : strlen(p);
        if (len == n && memcmp(p, name, n) == 0) return true;
        if (!bar) break;
        p = bar + 1;
    }
    return false;
}

static fi_status setup_pre(fi_tokenizer *t, const char *pre, fi_error *err) {
    if (!pre || !*pre) pre = "default";
    const pre_spec *spec = NULL;
    for (size_t i = 0; i < sizeof PRE_SPECS / sizeof PRE_SPECS[0]; i++)
        if (name_in_list(PRE_SPECS[i].names, pre)) spec = &PRE_SPECS[i];
    if (!spec) {
        char names[512] = "";
        for (size_t i = 0; i < sizeof PRE_SPECS / sizeof PRE_SPECS[0]; i++) {
            if (i) strncat(names, "|", sizeof names - strlen(names) - 1);
            strncat(names, PRE_SPECS[i].names, sizeof names - strlen(names) - 1);
        }
        return fi_error_set(err, FI_ERR_UNSUPPORTED,
                            "tokenizer: unknown pre-tokenizer tokenizer.ggml.pre = '%s' (supported: %s)", pre,
                            names);
    }
    snprintf(t->pre, sizeof t->pre, "%s", pre);
    t->ignore_merges = spec->ignore_merges;
    for (int i = 0; i < FI_TOK_MAX_REGEX && spec->regex[i]; i++) {
        int code;
        PCRE2_SIZE at;
        pcre2_code *re = pcre2_compile((PCRE2_SPTR)spec->regex[i], PCRE2_ZERO_TERMINATED,
                                       PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &code, &at, NULL);
        if (!re) {
            PCRE2_UCHAR msg[160];
            pcre2_get_error_message(code, msg, sizeof msg);
            return fi_error_set(err, FI_ERR_INVALID, "tokenizer: regex %d of pre-tokenizer '%s' at %zu: %s", i,
                                pre, (size_t)at, (const char *)msg);
        }
        (void)pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* best effort: the interpreter is the fallback */
        t->re[t->n_re++] = re;
    }
    return FI_OK;
}

/* ------------------------------------------------------------------------ */
/* Construction                                                              */
/* ------------------------------------------------------------------------ */

void fi_tokenizer_free(fi_tokenizer *t) {
    if (!t) return;
    for (int i = 0; i < t->n_re; i++) pcre2_code_free(t->re[i]);
    free(t->text_arena);
    free(t->text_off);
    free(t->text_len);
    free(t->piece_arena);
    free(t->piece_off);
    free(t->piece_len);
    free(t->scores);
    free(t->types);
    free(t->vocab.slots);
    free(t->merges.slots);
    free(t->specials);
    free(t);
}

typedef fi_gguf_str (*token_getter)(const void *src, int64_t i);

/* Copies the vocabulary texts into one arena. */
static fi_status load_texts(fi_tokenizer *t, const void *src, token_getter get, fi_error *err) {
    uint64_t total = 0;
    for (int64_t i = 0; i < t->n_vocab; i++) {
        fi_gguf_str s = get(src, i);
        if (!s.data && s.len) return fi_error_set(err, FI_ERR_FORMAT, "tokenizer: token %lld has no text", (long long)i);
        if (s.len > UINT32_MAX / 2) return fi_error_set(err, FI_ERR_FORMAT, "tokenizer: token %lld is too long", (long long)i);
        total += s.len + 1;
    }
    if (total > UINT32_MAX) return fi_error_set(err, FI_ERR_FORMAT, "tokenizer: vocabulary text exceeds 4 GiB");
    t->text_arena = malloc(total ? total : 1);
    t->text_off = malloc((size_t)t->n_vocab * sizeof(uint32_t));
    t->text_len = malloc((size_t)t->n_vocab * sizeof(uint32_t));
    t->piece_arena = malloc(total ? total : 1);
    t->piece_off = malloc((size_t)t->n_vocab * sizeof(uint32_t));
    t->piece_len = malloc((size_t)t->n_vocab * sizeof(uint32_t));
    t->types = malloc((size_t)t->n_vocab * sizeof(int32_t));
    if (!t->text_arena || !t->text_off || !t->text_len || !t->piece_arena || !t->piece_off || !t->piece_len || !t->types)
        return fi_error_set(err, FI_ERR_NOMEM, "tokenizer: out of memory (%lld tokens)", (long long)t->n_vocab);
    uint64_t at = 0;
    for (int64_t i = 0; i < t->n_vocab; i++) {
        fi_gguf_str s = get(src, i);
        if (s.len) memcpy(t->text_arena + at, s.data, s.len);
        t->text_arena[at + s.len] = 0;
        t->text_off[i] = (uint32_t)at;
        t->text_len[i] = (uint32_t)s.len;
        at += s.len + 1;
    }
    return FI_OK;
}

static int parse_byte_token(const char *s, size_t n) {
    if (n != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>') return -1;
    int v = 0;
    for (int i = 3; i < 5; i++) {
        char c = s[i];
        int d = (c >= '0' && c <= '9') ? c - '0' : (c >= 'A' && c <= 'F') ? c - 'A' + 10 : (c >= 'a' && c <= 'f') ? c - 'a' + 10 : -1;
        if (d < 0) return -1;
        v = v * 16 + d;
    }
    return v;
}

/* Decoded bytes of every token (what generation prints). */
static void build_pieces(fi_tokenizer *t) {
    uint32_t at = 0;
    t->max_piece_len = 0;
    for (int32_t id = 0; id < t->n_vocab; id++) {
        const char *s = tok_text(t, id);
        size_t n = t->text_len[id];
        char *out = t->piece_arena + at;
        size_t len = 0;
        int32_t type = t->types[id];
        if (type == FI_TOKEN_CONTROL || type == FI_TOKEN_USER_DEFINED || type == FI_TOKEN_UNKNOWN) {
            memcpy(out, s, n);
            len = n;
        } else if (t->kind == FI_TOKENIZER_SPM) {
            int b = type == FI_TOKEN_BYTE ? parse_byte_token(s, n) : -1;
            if (b >= 0) {
                out[len++] = (char)b;
            } else {
                for (size_t i = 0; i < n;) {
                    if (i + 3 <= n && memcmp(s + i, "\xE2\x96\x81", 3) == 0) {
                        out[len++] = ' ';
                        i += 3;
                    } else {
                        out[len++] = s[i++];
                    }
                }
            }
        } else {
            for (size_t i = 0; i < n;) {
                size_t used;
                uint32_t cp = utf8_decode(s + i, n - i, &used);
                int b = cp_to_byte(cp);
                if (b >= 0) {
                    out[len++] = (char)b;
                } else { /* not a mapped byte: keep the character as written */
                    memcpy(out + len, s + i, used);
                    len += used;
                }
                i += used;
            }
        }
        t->piece_off[id] = at;
        t->piece_len[id] = (uint32_t)len;
        at += (uint32_t)len;
        if (len > t->max_piece_len) t->max_piece_len = len;
    }
}

/* Sort key for special tokens: longer text first, then lower id (stable, deterministic). */
typedef struct special_key { uint32_t len; int32_t id; } special_key;
static int cmp_special_key(const void *a, const void *b) {
    const special_key *x = a, *y = b;
    if (x->len != y->len) return x->len > y->len ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

static fi_status build_specials(fi_tokenizer *t, fi_error *err) {
    int64_t n = 0;
    for (int32_t id = 0; id < t->n_vocab; id++) {
        int32_t ty = t->types[id];
        if ((ty == FI_TOKEN_CONTROL || ty == FI_TOKEN_USER_DEFINED || ty == FI_TOKEN_UNKNOWN) && t->text_len[id] > 0) n++;
    }
    special_key *keys = malloc((size_t)(n ? n : 1) * sizeof *keys);
    t->specials = malloc((size_t)(n ? n : 1) * sizeof *t->specials);
    if (!keys || !t->specials) {
        free(keys);
        return fi_error_set(err, FI_ERR_NOMEM, "tokenizer: out of memory (special tokens)");
    }
    n = 0;
    for (int32_t id = 0; id < t->n_vocab; id++) {
        int32_t ty = t->types[id];
        if ((ty == FI_TOKEN_CONTROL || ty == FI_TOKEN_USER_DEFINED || ty == FI_TOKEN_UNKNOWN) && t->text_len[id] > 0)
            keys[n++] = (special_key){t->text_len[id], id};
    }
    qsort(keys, (size_t)n, sizeof *keys, cmp_special_key);
    for (int64_t i = 0; i < n; i++) t->specials[i] = keys[i].id;
    t->n_specials = n;
    free(keys);
    return FI_OK;
}

static void add_eog(fi_tokenizer *t, int32_t id) {
    if (id < 0 || id >= t->n_vocab || t->n_eog >= FI_TOK_MAX_EOG) return;
    for (int i = 0; i < t->n_eog; i++)
        if (t->eog[i] == id) return;
    t->eog[t->n_eog++] = id;
}

/* End-of-generation: EOS, EOT, and control tokens whose text marks the end of a turn. */
static void build_eog(fi_tokenizer *t) {
    static const char *const ends[] = {"<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>",
                                       "<|eom_id|>", "<EOT>", "</s>", "<|end_of_text|>"};
    add_eog(t, t->eos);
    add_eog(t, t->eot);
    for (size_t i = 0; i < sizeof ends / sizeof ends[0]; i++) {
        int32_t id = text_map_find(t, ends[i], strlen(ends[i]));
        if (id >= 0 && (t->types[id] == FI_TOKEN_CONTROL || t->types[id] == FI_TOKEN_USER_DEFINED)) add_eog(t, id);
    }
}

static fi_status build_merges(fi_tokenizer *t, const void *src, token_getter get, int64_t n_merges, fi_error *err) {
    uint64_t cap = pow2_at_least((uint64_t)n_merges * 2 + 1);
    t->merges.slots = malloc(cap * sizeof *t->merges.slots);
    if (!t->merges.slots) return fi_error_set(err, FI_ERR_NOMEM, "tokenizer: out of memory (%lld merges)", (long long)n_merges);
    for (uint64_t i = 0; i < cap; i++) t->merges.slots[i].key = UINT64_MAX;
    t->merges.mask = cap - 1;
    char buf[1024];
    for (int64_t r = 0; r < n_merges; r++) {
        fi_gguf_str m = get(src, r);
        /* "left right": split at the first space after the first byte (a left part is never empty). */
        const char *sp = m.len > 1 ? memchr(m.data + 1, ' ', m.len - 1) : NULL;
        if (!sp) return fi_error_set(err, FI_ERR_FORMAT, "tokenizer: merge %lld ('%.*s') has no space", (long long)r,
                                     (int)(m.len > 64 ? 64 : m.len), m.data ? m.data : "");
        size_t nl = (size_t)(sp - m.data), nr = m.len - nl - 1;
        if (nl + nr > sizeof buf) continue; /* longer than any token: cannot produce one */
        int32_t left = text_map_find(t, m.data, nl), right = text_map_find(t, sp + 1, nr);
        memcpy(buf, m.data, nl);
        memcpy(buf + nl, sp + 1, nr);
        int32_t result = text_map_find(t, buf, nl + nr);
        /* A merge whose parts or result are not tokens can never complete a token: skip it. */
        if (left < 0 || right < 0 || result < 0) continue;
        uint64_t key = ((uint64_t)(uint32_t)left << 32) | (uint32_t)right;
        for (uint64_t i = hash_u64(key) & t->merges.mask;; i = (i + 1) & t->merges.mask) {
            if (t->merges.slots[i].key == key) break; /* duplicate merge: the first (lowest rank) wins */
            if (t->merges.slots[i].key == UINT64_MAX) {
                t->merges.slots[i] = (merge_entry){key, (int32_t)r, result};
                break;
            }
        }
    }
    return FI_OK;
}

static fi_status finish(fi_tokenizer *t, fi_error *err) {
    build_pieces(t);
    fi_status st = build_specials(t, err);
    if (st != FI_OK) return st;
    for (int b = 0; b < 256; b++) {
        t->byte_token[b] = -1;
        if (t->kind == FI_TOKENIZER_BPE) {
            char u[4];
            size_t n = utf8_encode(byte_to_cp(b), u);
            t->byte_token[b] = text_map_find(t, u, n);
        } else {
            char s[8];
            snprintf(s, sizeof s, "<0x%02X>", b);
            t->byte_token[b] = text_map_find(t, s, 6);
        }
    }
    int32_t *ids[] = {&t->bos, &t->eos, &t->eot, &t->pad, &t->unk};
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++)
        if (*ids[i] >= t->n_vocab || *ids[i] < -1) *ids[i] = -1;
    build_eog(t);
    if (t->add_bos && t->bos < 0) t->add_bos = false;
    if (t->add_eos && t->eos < 0) t->add_eos = false;
    return FI_OK;
}

static fi_gguf_str spec_token(const void *src, int64_t i) {
    const char *s = ((const char *const *)src)[i];
    return (fi_gguf_str){s, s ? strlen(s) : 0};
}

fi_status fi_tokenizer_from_spec(const fi_tokenizer_spec *spec, fi_tokenizer **out, fi_error *err) {
    *out = NULL;
    if (!spec || !spec->tokens || spec->n_tokens <= 0 || spec->n_tokens > INT32_MAX)
        return fi_error_set(err, FI_ERR_INVALID, "tokenizer: empty vocabulary");
    fi_tokenizer *t = calloc(1, sizeof *t);
    if (!t) return fi_error_set(err, FI_ERR_NOMEM, "tokenizer: out of memory");
    t->kind = spec->kind;
    t->n_vocab = spec->n_tokens;
    t->bos = spec->bos;
    t->eos = spec->eos;
    t->eot = spec->eot;
    t->pad = spec->pad;
    t->unk = spec->unk;
    t->add_bos = spec->add_bos;
    t->add_eos = spec->add_eos;
    t->add_space_prefix = spec->add_space_prefix;
    fi_status st = load_texts(t, spec->tokens, spec_token, err);
    if (st == FI_OK) {
        for (int64_t i = 0; i < t->n_vocab; i++) t->types[i] = spec->types ? spec->types[i] : FI_TOKEN_NORMAL;
        t->scores = calloc((size_t)t->n_vocab, sizeof(float));
        if (!t->scores) st = fi_error_set(err, FI_ERR_NOMEM, "tokenizer: out of memory");
        else if (spec->scores) memcpy(t->scores, spec->scores, (size_t)t->n_vocab * sizeof(float));
    }
    if (st == FI_OK) st = text_map_build(t, err);
    if (st == FI_OK && t->kind == FI_TOKENIZER_BPE) {
        st = setup_pre(t, spec->pre, err);
        if (st == FI_OK) st = build_merges(t, spec->merges, spec_token, spec->merges ? spec->n_merges : 0, err);
    }
    if (st == FI_OK) st = finish(t, err);
    if (st != FI_OK) {
        fi_tokenizer_free(t);
        return st;
    }
    *out = t;
    return FI_OK;
}

static fi_gguf_str gguf_array_get(const void *src, int64_t i) { return fi_gguf_array_str((const fi_gguf_kv *)src, (uint64_t)i); }

static int32_t gguf_id(const fi_gguf *g, const char *key, int32_t fallback) {
    int64_t v;
    if (!fi_gguf_get_i64(g, key, &v)) return fallback;
    return (v >= 0 && v <= INT32_MAX) ? (int32_t)v : -1;
}

static bool gguf_flag(const fi_gguf *g, const char *key, bool fallback) {
    bool v;
    return fi_gguf_get_bool(g, key, &v) ? v : fallback;
}

fi_status fi_tokenizer_from_gguf(const fi_gguf *g, fi_tokenizer **out, fi_error *err) {
    *out = NULL;
    fi_gguf_str model;
    if (!fi_gguf_get_str(g, "tokenizer.ggml.model", &model))
        return fi_error_set(err, FI_ERR_FORMAT, "tokenizer: the file has no string tokenizer.ggml.model");
    fi_tokenizer_kind kind;
    if (fi_gguf_str_eq(model, "gpt2")) kind = FI_TOKENIZER_BPE;
    else if (fi_gguf_str_eq(model, "llama")) kind = FI_TOKENIZER_SPM;
    else
        return fi_error_set(err, FI_ERR_UNSUPPORTED,
                            "tokenizer: tokenizer.ggml.model = '%.*s' is not supported (supported: gpt2, llama)",
                            (int)(model.len > 64 ? 64 : model.len), model.data);

    const fi_gguf_kv *tokens = fi_gguf_find(g, "tokenizer.ggml.tokens");
    if (!tokens || tokens->type != FI_GGUF_ARRAY || tokens->arr_type != FI_GGUF_STRING || tokens->arr_count == 0 ||
        tokens->arr_count > INT32_MAX)
        return fi_error_set(err, FI_ERR_FORMAT, "tokenizer: tokenizer.ggml.tokens must be a non-empty string array");
    int64_t n = (int64_t)tokens->arr_count;
    const fi_gguf_kv *types = fi_gguf_find(g, "tokenizer.ggml.token_type");
    if (types && (types->type != FI_GGUF_ARRAY || types->arr_type != FI_GGUF_I32 || (int64_t)types->arr_count != n))
        return fi_error_set(err, FI_ERR_FORMAT, "tokenizer: tokenizer.ggml.token_type must be an i32 array of %lld", (long long)n);
    const fi_gguf_kv *scores = fi_gguf_find(g, "tokenizer.ggml.scores");
    if (scores && (scores->type != FI_GGUF_ARRAY || scores->arr_type != FI_GGUF_F32 || (int64_t)scores->arr_count != n))
        return fi_error_set(err, FI_ERR_FORMAT, "tokenizer: tokenizer.ggml.scores must be an f32 array of %lld", (long long)n);
    const fi_gguf_kv *merges = fi_gguf_find(g, "tokenizer.ggml.merges");
    if (kind == FI_TOKENIZER_BPE &&
        (!merges || merges->type != FI_GGUF_ARRAY || merges->arr_type != FI_GGUF_STRING || merges->arr_count > INT32_MAX))
        return fi_error_set(err, FI_ERR_FORMAT, "tokenizer: a gpt2 tokenizer needs the string array tokenizer.ggml.merges");

    fi_tokenizer *t = calloc(1, sizeof *t);
    if (!t) return fi_error_set(err, FI_ERR_NOMEM, "tokenizer: out of memory");
    t->kind = kind;
    t->n_vocab = n;
    /* Defaults as the reference reads them: SPM files assume <unk>=0 <s>=1 </s>=2. */
    int32_t def_bos = kind == FI_TOKENIZER_SPM ? 1 : -1, def_eos = kind == FI_TOKENIZER_SPM ? 2 : -1;
    t->bos = gguf_id(g, "tokenizer.ggml.bos_token_id", def_bos);
    t->eos = gguf_id(g, "tokenizer.ggml.eos_token_id", def_eos);
    t->eot = gguf_id(g, "tokenizer.ggml.eot_token_id", -1);
    t->pad = gguf_id(g, "tokenizer.ggml.padding_token_id", -1);
    t->unk = gguf_id(g, "tokenizer.ggml.unknown_token_id", kind == FI_TOKENIZER_SPM ? 0 : -1);
    t->add_bos = gguf_flag(g, "tokenizer.ggml.add_bos_token", kind == FI_TOKENIZER_SPM);
    t->add_eos = gguf_flag(g, "tokenizer.ggml.add_eos_token", false);
    t->add_space_prefix = gguf_flag(g, "tokenizer.ggml.add_space_prefix", kind == FI_TOKENIZER_SPM);

    fi_status st = load_texts(t, tokens, gguf_array_get, err);
    if (st == FI_OK) {
        t->scores = calloc((size_t)n, sizeof(float));
        if (!t->scores) st = fi_error_set(err, FI_ERR_NOMEM, "tokenizer: out of memory");
    }
    if (st == FI_OK) {
        for (int64_t i = 0; i < n; i++) {
            int32_t ty = FI_TOKEN_NORMAL;
            if (types) memcpy(&ty, (const char *)types->value + 4 * i, 4);
            t->types[i] = ty;
            if (scores) memcpy(&t->scores[i], (const char *)scores->value + 4 * i, 4);
        }
        st = text_map_build(t, err);
    }
    if (st == FI_OK && kind == FI_TOKENIZER_BPE) {
        fi_gguf_str pre = {0};
        char pre_name[64] = "";
        if (fi_gguf_get_str(g, "tokenizer.ggml.pre", &pre))
            snprintf(pre_name, sizeof pre_name, "%.*s", (int)(pre.len > 63 ? 63 : pre.len), pre.data);
        st = setup_pre(t, pre_name, err);
        if (st == FI_OK) st = build_merges(t, merges, gguf_array_get, (int64_t)merges->arr_count, err);
    }
    if (st == FI_OK) st = finish(t, err);
    if (st != FI_OK) {
        fi_tokenizer_free(t);
        return st;
    }
    *out = t;
    return FI_OK;
}

/* ------------------------------------------------------------------------ */
/* Accessors                                                                 */
/* ------------------------------------------------------------------------ */

int64_t fi_tokenizer_n_vocab(const fi_tokenizer *t) { return t->n_vocab; }
fi_tokenizer_kind fi_tokenizer_kind_of(const fi_tokenizer *t) { return t->kind; }
const char *fi_tokenizer_pre_name(const fi_tokenizer *t) { return t->pre; }
int32_t fi_tokenizer_bos(const fi_tokenizer *t) { return t->bos; }
int32_t fi_tokenizer_eos(const fi_tokenizer *t) { return t->eos; }
int32_t fi_tokenizer_eot(const fi_tokenizer *t) { return t->eot; }
bool fi_tokenizer_add_bos(const fi_tokenizer *t) { return t->add_bos; }
bool fi_tokenizer_add_eos(const fi_tokenizer *t) { return t->add_eos; }
size_t fi_tokenizer_max_piece_len(const fi_tokenizer *t) { return t->max_piece_len; }

bool fi_tokenizer_is_eog(const fi_tokenizer *t, int32_t id) {
    for (int i = 0; i < t->n_eog; i++)
        if (t->eog[i] == id) return true;
    return false;
}

const char *fi_tokenizer_piece(const fi_tokenizer *t, int32_t id, size_t *len) {
    if (id < 0 || id >= t->n_vocab) {
        *len = 0;
        return NULL;
    }
    *len = t->piece_len[id];
    return t->piece_arena + t->piece_off[id];
}

const char *fi_tokenizer_token_text(const fi_tokenizer *t, int32_t id) {
    return (id < 0 || id >= t->n_vocab) ? NULL : tok_text(t, id);
}

int32_t fi_tokenizer_token_type(const fi_tokenizer *t, int32_t id) {
    return (id < 0 || id >= t->n_vocab) ? 0 : t->types[id];
}

int32_t fi_tokenizer_find(const fi_tokenizer *t, const char *text, size_t len) { return text_map_find(t, text, len); }

/* ------------------------------------------------------------------------ */
/* Encoding                                                                  */
/* ------------------------------------------------------------------------ */

typedef struct id_vec {
    int32_t *data;
    size_t n, cap;
    bool oom;
} id_vec;

static void id_push(id_vec *v, int32_t id) {
    if (v->oom) return;
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 64;
        int32_t *p = realloc(v->data, cap * sizeof *p);
        if (!p) {
            v->oom = true;
            return;
        }
        v->data = p;
        v->cap = cap;
    }
    v->data[v->n++] = id;
}

/* A piece of the input: a special token (id >= 0) or raw text [off, off + len). */
typedef struct fragment {
    size_t off, len;
    int32_t id;
} fragment;

typedef struct frag_vec {
    fragment *data;
    size_t n, cap;
} frag_vec;

static bool frag_push(frag_vec *v, size_t off, size_t len, int32_t id) {
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 16;
        fragment *p = realloc(v->data, cap * sizeof *p);
        if (!p) return false;
        v->data = p;
        v->cap = cap;
    }
    v->data[v->n++] = (fragment){off, len, id};
    return true;
}

static const char *find_bytes(const char *hay, size_t n, const char *needle, size_t m) {
    if (m == 0 || m > n) return NULL;
    for (const char *p = hay, *end = hay + n - m + 1; p < end;) {
        p = memchr(p, needle[0], (size_t)(end - p));
        if (!p) return NULL;
        if (memcmp(p, needle, m) == 0) return p;
        p++;
    }
    return NULL;
}

/* Splits the raw fragments on every occurrence of each special token, longest token first, so a
 * longer token wins over a shorter one it contains. Control tokens only when parse_special. */
static bool partition_specials(const fi_tokenizer *t, const char *text, size_t len, bool parse_special, frag_vec *out) {
    frag_vec cur = {0}, next = {0};
    bool ok = len == 0 || frag_push(&cur, 0, len, -1);
    for (int64_t s = 0; ok && s < t->n_specials; s++) {
        int32_t id = t->specials[s];
        int32_t ty = t->types[id];
        if (!parse_special && (ty == FI_TOKEN_CONTROL || ty == FI_TOKEN_UNKNOWN)) continue;
        const char *tok = tok_text(t, id);
        size_t m = t->text_len[id];
        next.n = 0;
        bool changed = false;
        for (size_t f = 0; ok && f < cur.n; f++) {
            fragment fr = cur.data[f];
            if (fr.id >= 0 || fr.len < m) {
                ok = frag_push(&next, fr.off, fr.len, fr.id);
                continue;
            }
            size_t pos = fr.off, end = fr.off + fr.len;
            const char *hit;
            while (ok && (hit = find_bytes(text + pos, end - pos, tok, m)) != NULL) {
                size_t at = (size_t)(hit - text);
                if (at > pos) ok = frag_push(&next, pos, at - pos, -1);
                if (ok) ok = frag_push(&next, at, m, id);
                pos = at + m;
                changed = true;
            }
            if (ok && pos < end) ok = frag_push(&next, pos, end - pos, -1);
        }
        if (changed) {
            frag_vec tmp = cur;
            cur = next;
            next = tmp;
        }
    }
    free(next.data);
    if (!ok) {
        free(cur.data);
        return false;
    }
    *out = cur;
    return true;
}

/* Pieces of a pre-tokenized fragment, as [start, end) byte ranges. */
typedef struct range_vec {
    size_t *start, *end;
    size_t n, cap;
} range_vec;

static bool range_push(range_vec *v, size_t s, size_t e) {
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 32;
        size_t *ps = realloc(v->start, cap * sizeof *ps);
        if (!ps) return false;
        v->start = ps;
        size_t *pe = realloc(v->end, cap * sizeof *pe);
        if (!pe) return false;
        v->end = pe;
        v->cap = cap;
    }
    v->start[v->n] = s;
    v->end[v->n] = e;
    v->n++;
    return true;
}

/* Applies one regex to each range: matches and the text between them become ranges. */
static bool regex_split(const pcre2_code *re, pcre2_match_data *md, const char *text, const range_vec *in,
                        range_vec *out) {
    out->n = 0;
    for (size_t r = 0; r < in->n; r++) {
        const char *sub = text + in->start[r];
        size_t n = in->end[r] - in->start[r], pos = 0, gap = 0;
        while (pos < n) {
            int rc = pcre2_match(re, (PCRE2_SPTR)sub, n, pos, 0, md, NULL);
            if (rc < 0 && rc != PCRE2_ERROR_NOMATCH) rc = PCRE2_ERROR_NOMATCH; /* e.g. limits: keep the rest whole */
            if (rc == PCRE2_ERROR_NOMATCH) break;
            PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
            size_t ms = ov[0], me = ov[1];
            if (me <= ms) { /* empty match: move on by one character */
                pos = ms + utf8_len((uint8_t)sub[ms < n ? ms : n - 1]);
                continue;
            }
            if (ms > gap && !range_push(out, in->start[r] + gap, in->start[r] + ms)) return false;
            if (!range_push(out, in->start[r] + ms, in->start[r] + me)) return false;
            gap = pos = me;
        }
        if (gap < n && !range_push(out, in->start[r] + gap, in->start[r] + n)) return false;
    }
    return true;
}

/* Merge candidates in a binary heap: lowest key first, then leftmost. */
typedef struct heap_item {
    double key; /* BPE: rank; SPM: -score */
    int32_t left, right;
    int32_t left_id, right_id; /* BPE: symbol ids when pushed (stale entries are skipped) */
    size_t size;               /* SPM: bytes of the merged text when pushed */
} heap_item;

typedef struct heap {
    heap_item *data;
    size_t n, cap;
} heap;

static bool heap_less(const heap_item *a, const heap_item *b) {
    return a->key < b->key || (a->key == b->key && a->left < b->left);
}

static bool heap_push(heap *h, heap_item it) {
    if (h->n == h->cap) {
        size_t cap = h->cap ? h->cap * 2 : 64;
        heap_item *p = realloc(h->data, cap * sizeof *p);
        if (!p) return false;
        h->data = p;
        h->cap = cap;
    }
    size_t i = h->n++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!heap_less(&it, &h->data[parent])) break;
        h->data[i] = h->data[parent];
        i = parent;
    }
    h->data[i] = it;
    return true;
}

static heap_item heap_pop(heap *h) {
    heap_item top = h->data[0], last = h->data[--h->n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= h->n) break;
        if (c + 1 < h->n && heap_less(&h->data[c + 1], &h->data[c])) c++;
        if (!heap_less(&h->data[c], &last)) break;
        h->data[i] = h->data[c];
        i = c;
    }
    if (h->n) h->data[i] = last;
    return top;
}

/* Per-call scratch: the tokenizer itself stays read-only, so threads may share it. */
typedef struct scratch {
    int32_t *sym_id;   /* BPE: token id of the symbol; -1 = none */
    size_t *sym_start; /* byte offset of the symbol in the word */
    size_t *sym_len;   /* 0 = merged away */
    int32_t *prev, *next;
    size_t cap;
    heap h;
    char *buf; /* mapped text of a word (ignore_merges lookups) or SPM text */
    size_t buf_cap;
    char *clean; /* BPE: a fragment with invalid UTF-8 replaced */
    size_t clean_cap;
} scratch;

static bool scratch_reserve(scratch *s, size_t n) {
    if (n <= s->cap) return true;
    size_t cap = s->cap ? s->cap : 64;
    while (cap < n) cap *= 2;
    int32_t *a = realloc(s->sym_id, cap * sizeof *a);
    if (!a) return false;
    s->sym_id = a;
    size_t *b = realloc(s->sym_start, cap * sizeof *b);
    if (!b) return false;
    s->sym_start = b;
    size_t *c = realloc(s->sym_len, cap * sizeof *c);
    if (!c) return false;
    s->sym_len = c;
    int32_t *d = realloc(s->prev, cap * sizeof *d);
    if (!d) return false;
    s->prev = d;
    int32_t *e = realloc(s->next, cap * sizeof *e);
    if (!e) return false;
    s->next = e;
    s->cap = cap;
    return true;
}

static bool buf_reserve(scratch *s, size_t n) {
    if (n <= s->buf_cap) return true;
    size_t cap = s->buf_cap ? s->buf_cap : 256;
    while (cap < n) cap *= 2;
    char *p = realloc(s->buf, cap);
    if (!p) return false;
    s->buf = p;
    s->buf_cap = cap;
    return true;
}

static void scratch_free(scratch *s) {
    free(s->sym_id);
    free(s->sym_start);
    free(s->sym_len);
    free(s->prev);
    free(s->next);
    free(s->h.data);
    free(s->buf);
    free(s->clean);
}

static bool bpe_push_pair(const fi_tokenizer *t, scratch *s, int32_t left, int32_t right) {
    if (left < 0 || right < 0) return true;
    const merge_entry *m = merge_find(&t->merges, s->sym_id[left], s->sym_id[right]);
    if (!m) return true;
    return heap_push(&s->h, (heap_item){(double)m->rank, left, right, s->sym_id[left], s->sym_id[right], 0});
}

/* Byte-level BPE of one pre-token. Symbols start as one per byte (each byte is one mapped char). */
static bool bpe_word(const fi_tokenizer *t, scratch *s, const char *w, size_t n, id_vec *out) {
    if (t->ignore_merges) {
        if (!buf_reserve(s, 2 * n + 1)) return false;
        size_t m = 0;
        for (size_t i = 0; i < n; i++) m += utf8_encode(byte_to_cp((uint8_t)w[i]), s->buf + m);
        int32_t id = text_map_find(t, s->buf, m);
        if (id >= 0) {
            id_push(out, id);
            return true;
        }
    }
    if (n > INT32_MAX || !scratch_reserve(s, n)) return false;
    for (size_t i = 0; i < n; i++) {
        s->sym_id[i] = t->byte_token[(uint8_t)w[i]];
        s->sym_len[i] = 1;
        s->prev[i] = (int32_t)i - 1;
        s->next[i] = i + 1 < n ? (int32_t)i + 1 : -1;
    }
    s->h.n = 0;
    for (size_t i = 1; i < n; i++)
        if (!bpe_push_pair(t, s, (int32_t)i - 1, (int32_t)i)) return false;
    while (s->h.n) {
        heap_item it = heap_pop(&s->h);
        int32_t l = it.left, r = it.right;
        if (!s->sym_len[l] || !s->sym_len[r] || s->next[l] != r || s->sym_id[l] != it.left_id ||
            s->sym_id[r] != it.right_id)
            continue; /* stale: one side changed since the pair was queued */
        const merge_entry *m = merge_find(&t->merges, it.left_id, it.right_id);
        s->sym_id[l] = m->result;
        s->sym_len[l] += s->sym_len[r];
        s->sym_len[r] = 0;
        s->next[l] = s->next[r];
        if (s->next[r] >= 0) s->prev[s->next[r]] = l;
        if (!bpe_push_pair(t, s, s->prev[l], l) || !bpe_push_pair(t, s, l, s->next[l])) return false;
    }
    for (int32_t i = 0; i >= 0; i = s->next[i])
        if (s->sym_id[i] >= 0) id_push(out, s->sym_id[i]); /* a byte missing from the vocabulary is dropped */
    return true;
}

/* Length of the structurally valid UTF-8 sequence at s (lead byte + its continuation bytes), 0 if none.
 * Overlong forms and surrogates pass, as in the reference decoder. */
static size_t utf8_valid_len(const uint8_t *s, size_t n) {
    size_t len = s[0] < 0x80 ? 1 : (s[0] & 0xE0) == 0xC0 ? 2 : (s[0] & 0xF0) == 0xE0 ? 3 : (s[0] & 0xF8) == 0xF0 ? 4 : 0;
    if (!len || len > n) return 0;
    for (size_t i = 1; i < len; i++)
        if ((s[i] & 0xC0) != 0x80) return 0;
    return len;
}

/* Byte-level BPE reads its input as code points, as llama.cpp decodes it: a byte that does not start a
 * lead + continuation sequence becomes U+FFFD, and a sequence is re-encoded from its code point (an
 * overlong form shrinks). Returns the text to use (text itself when already clean, else s->clean). */
static const char *bpe_sanitize(scratch *s, const char *text, size_t *len) {
    size_t n = *len, i = 0, step;
    while (i < n && (step = utf8_valid_len((const uint8_t *)text + i, n - i)) != 0) {
        size_t used;
        uint32_t cp = utf8_decode(text + i, step, &used);
        char tmp[4];
        if (cp > 0x10FFFF || utf8_encode(cp, tmp) != step) break; /* overlong or out of range */
        i += step;
    }
    if (i == n) return text;
    if (n > (SIZE_MAX - 1) / 3) return NULL;
    if (n * 3 > s->clean_cap) {
        char *p = realloc(s->clean, n * 3);
        if (!p) return NULL;
        s->clean = p;
        s->clean_cap = n * 3;
    }
    size_t w = 0;
    for (i = 0; i < n;) {
        step = utf8_valid_len((const uint8_t *)text + i, n - i);
        uint32_t cp = 0xFFFD;
        if (step) {
            size_t used;
            cp = utf8_decode(text + i, step, &used);
            if (cp > 0x10FFFF) cp = 0xFFFD;
        }
        w += utf8_encode(cp, s->clean + w);
        i += step ? step : 1;
    }
    *len = w;
    return s->clean;
}

static bool bpe_fragment(const fi_tokenizer *t, scratch *s, pcre2_match_data *md, range_vec rv[2], const char *text,
                         size_t off, size_t len, id_vec *out) {
    text = bpe_sanitize(s, text + off, &len);
    if (!text) return false;
    off = 0;
    range_vec *cur = &rv[0], *nxt = &rv[1];
    cur->n = 0;
    if (!range_push(cur, off, off + len)) return false;
    for (int i = 0; i < t->n_re; i++) {
        if (!regex_split(t->re[i], md, text, cur, nxt)) return false;
        range_vec *tmp = cur;
        cur = nxt;
        nxt = tmp;
    }
    for (size_t r = 0; r < cur->n; r++)
        if (!bpe_word(t, s, text + cur->start[r], cur->end[r] - cur->start[r], out)) return false;
    return true;
}

static bool spm_push_pair(const fi_tokenizer *t, scratch *s, const char *w, int32_t left, int32_t right) {
    if (left < 0 || right < 0) return true;
    size_t size = s->sym_len[left] + s->sym_len[right];
    int32_t id = text_map_find(t, w + s->sym_start[left], size);
    if (id < 0) return true;
    return heap_push(&s->h, (heap_item){-(double)t->scores[id], left, right, 0, 0, size});
}

static void spm_emit(const fi_tokenizer *t, const char *w, size_t len, id_vec *out) {
    int32_t id = text_map_find(t, w, len);
    if (id >= 0) {
        id_push(out, id);
        return;
    }
    /* Only single characters can miss (merges always form tokens): spell them in bytes. */
    for (size_t i = 0; i < len; i++) {
        int32_t b = t->byte_token[(uint8_t)w[i]];
        if (b >= 0) id_push(out, b);
        else if (t->unk >= 0) id_push(out, t->unk);
    }
}

/* SentencePiece BPE of one raw fragment: spaces become U+2581, symbols start as UTF-8 characters and
 * the adjacent pair whose concatenation is the highest-scoring token merges first. */
static bool spm_fragment(const fi_tokenizer *t, scratch *s, const char *text, size_t len, bool prefix_space, id_vec *out) {
    size_t cap = (len + 1) * 3;
    if (!buf_reserve(s, cap)) return false;
    size_t n = 0;
    if (prefix_space) {
        memcpy(s->buf, "\xE2\x96\x81", 3);
        n = 3;
    }
    for (size_t i = 0; i < len; i++) {
        if (text[i] == ' ') {
            memcpy(s->buf + n, "\xE2\x96\x81", 3);
            n += 3;
        } else {
            s->buf[n++] = text[i];
        }
    }
    const char *w = s->buf;
    if (n == 0) return true;
    if (n > INT32_MAX || !scratch_reserve(s, n)) return false;
    int32_t count = 0;
    for (size_t i = 0; i < n;) {
        size_t cl = utf8_len((uint8_t)w[i]);
        if (cl > n - i) cl = n - i;
        s->sym_start[count] = i;
        s->sym_len[count] = cl;
        s->prev[count] = count - 1;
        s->next[count] = -1;
        if (count > 0) s->next[count - 1] = count;
        count++;
        i += cl;
    }
    s->h.n = 0;
    for (int32_t i = 1; i < count; i++)
        if (!spm_push_pair(t, s, w, i - 1, i)) return false;
    while (s->h.n) {
        heap_item it = heap_pop(&s->h);
        int32_t l = it.left, r = it.right;
        if (!s->sym_len[l] || !s->sym_len[r] || s->sym_len[l] + s->sym_len[r] != it.size) continue;
        s->sym_len[l] += s->sym_len[r];
        s->sym_len[r] = 0;
        s->next[l] = s->next[r];
        if (s->next[r] >= 0) s->prev[s->next[r]] = l;
        if (!spm_push_pair(t, s, w, s->prev[l], l) || !spm_push_pair(t, s, w, l, s->next[l])) return false;
    }
    for (int32_t i = 0; i >= 0; i = s->next[i]) spm_emit(t, w + s->sym_start[i], s->sym_len[i], out);
    return true;
}

fi_status fi_tokenizer_encode(const fi_tokenizer *t, const char *text, size_t len, bool add_special,
                              bool parse_special, int32_t **ids, size_t *n_ids, fi_error *err) {
    *ids = NULL;
    *n_ids = 0;
    if (!text && len) return fi_error_set(err, FI_ERR_INVALID, "tokenizer: NULL text");
    frag_vec frags = {0};
    if (!partition_specials(t, text, len, parse_special, &frags))
        return fi_error_set(err, FI_ERR_NOMEM, "tokenizer: out of memory");
    id_vec out = {0};
    scratch s = {0};
    range_vec rv[2] = {{0}, {0}};
    pcre2_match_data *md = NULL;
    bool ok = true;
    if (t->kind == FI_TOKENIZER_BPE) {
        md = pcre2_match_data_create(16, NULL);
        ok = md != NULL;
    }
    if (add_special && t->add_bos) id_push(&out, t->bos);
    bool prev_special = true; /* SPM: the first raw fragment gets the space prefix */
    for (size_t f = 0; ok && f < frags.n; f++) {
        const fragment *fr = &frags.data[f];
        if (fr->id >= 0) {
            id_push(&out, fr->id);
            prev_special = true;
        } else if (t->kind == FI_TOKENIZER_BPE) {
            ok = bpe_fragment(t, &s, md, rv, text, fr->off, fr->len, &out);
        } else {
            ok = spm_fragment(t, &s, text + fr->off, fr->len, t->add_space_prefix && prev_special, &out);
            prev_special = false;
        }
    }
    if (add_special && t->add_eos) id_push(&out, t->eos);
    if (md) pcre2_match_data_free(md);
    scratch_free(&s);
    free(rv[0].start);
    free(rv[0].end);
    free(rv[1].start);
    free(rv[1].end);
    free(frags.data);
    if (!ok || out.oom) {
        free(out.data);
        return fi_error_set(err, FI_ERR_NOMEM, "tokenizer: out of memory while encoding %zu bytes", len);
    }
    if (!out.data) { /* empty result: still hand back a freeable pointer */
        out.data = malloc(sizeof(int32_t));
        if (!out.data) return fi_error_set(err, FI_ERR_NOMEM, "tokenizer: out of memory");
    }
    *ids = out.data;
    *n_ids = out.n;
    return FI_OK;
}

/* ------------------------------------------------------------------------ */
/* Streaming detokenizer                                                     */
/* ------------------------------------------------------------------------ */

/* Length of the tail of buf that starts an incomplete (so far valid) UTF-8 sequence; 0 if none. */
static size_t incomplete_tail(const char *buf, size_t n) {
    for (size_t back = 1; back <= 3 && back <= n; back++) {
        uint8_t c = (uint8_t)buf[n - back];
        if ((c & 0xC0) == 0x80) continue; /* continuation: look further back */
        size_t need = (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 1;
        return need > back ? back : 0;
    }
    return 0;
}

size_t fi_detok_push(fi_detok *d, const fi_tokenizer *t, int32_t id, char *out, size_t cap) {
    size_t len;
    const char *piece = fi_tokenizer_piece(t, id, &len);
    if (!piece || t->types[id] == FI_TOKEN_CONTROL) len = 0; /* control tokens are not text */
    size_t have = (size_t)d->n_pending;
    if (have > sizeof d->pending) have = 0;
    /* Work on pending + piece; the output never splits a character unless it is invalid. */
    size_t total = have + len;
    size_t tail = 0;
    if (len >= 3) {
        tail = incomplete_tail(piece, len);
    } else {
        char tmp[sizeof d->pending + 3];
        memcpy(tmp, d->pending, have);
        memcpy(tmp + have, piece, len);
        tail = incomplete_tail(tmp, total);
        if (tail > total) tail = total;
        /* pending bytes that can no longer complete a character are released as they are */
    }
    size_t emit = total - tail;
    if (emit > cap) emit = cap; /* callers size cap by fi_tokenizer_max_piece_len + 8 */
    size_t w = 0;
    char keep[sizeof d->pending];
    size_t nkeep = 0;
    /* Copy emit bytes of the concatenation; keep the rest (at most 3 + overflow) pending. */
    for (size_t i = 0; i < total; i++) {
        char c = i < have ? d->pending[i] : piece[i - have];
        if (i < emit) out[w++] = c;
        else if (nkeep < sizeof keep) keep[nkeep++] = c;
    }
    memcpy(d->pending, keep, nkeep);
    d->n_pending = (int)nkeep;
    return w;
}

size_t fi_detok_flush(fi_detok *d, char *out, size_t cap) {
    size_t n = (size_t)d->n_pending;
    if (n > sizeof d->pending) n = 0;
    if (n > cap) n = cap;
    memcpy(out, d->pending, n);
    d->n_pending = 0;
    return n;
}
