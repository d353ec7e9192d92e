/* Tokenizer: tiny hand-built vocabularies whose merges are worked out by hand (byte-level BPE with
 * several pre-tokenizers, SentencePiece BPE with byte fallback), special-token partitioning, pieces,
 * the streaming detokenizer, and round trips on the real default model (skipped when absent). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "model/gguf.h"
#include "model/tokenizer.h"
#include "test_support.h"

/* ------------------------------------------------------------------------ */
/* A tiny byte-level BPE vocabulary                                          */
/* ------------------------------------------------------------------------ */

/* GPT-2's byte -> character table, written from its definition: printable Latin-1 bytes keep their
 * code point; the rest take U+0100, U+0101, ... in byte order. */
static unsigned ref_byte_cp(int b) {
    int printable[256] = {0};
    for (int i = 33; i <= 126; i++) printable[i] = 1;
    for (int i = 161; i <= 172; i++) printable[i] = 1;
    for (int i = 174; i <= 255; i++) printable[i] = 1;
    if (printable[b]) return (unsigned)b;
    unsigned n = 0;
    for (int i = 0; i < b; i++) n += !printable[i];
    return 256 + n;
}

static void ref_utf8(unsigned cp, char *out) {
    if (cp < 0x80) {
        out[0] = (char)cp;
        out[1] = 0;
    } else {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        out[2] = 0;
    }
}

#define MAX_VOCAB 400
typedef struct vocab_builder {
    char text[MAX_VOCAB][32];
    const char *ptr[MAX_VOCAB];
    int32_t types[MAX_VOCAB];
    float scores[MAX_VOCAB];
    int n;
} vocab_builder;

static int32_t vb_add(vocab_builder *v, const char *text, int32_t type, float score) {
    assert_true(v->n < MAX_VOCAB);
    snprintf(v->text[v->n], sizeof v->text[v->n], "%s", text);
    v->ptr[v->n] = v->text[v->n];
    v->types[v->n] = type;
    v->scores[v->n] = score;
    return v->n++;
}

static int32_t vb_id(const vocab_builder *v, const char *text) {
    for (int i = 0; i < v->n; i++)
        if (!strcmp(v->text[i], text)) return i;
    fail_msg("token '%s' not in the test vocabulary", text);
    return -1;
}

/* Id of the byte token for byte b (ids 0..255 are the bytes in order). */
#define BYTE(b) ((int32_t)(uint8_t)(b))

static vocab_builder bpe_vocab;
static int32_t T_ab, T_abc, T_cc, T_Ga, T_12, T_123, T_34, T_xyz, T_ctl, T_ctl_long, T_user, T_eos;

static const char *const BPE_MERGES[] = {
    "a b",  /* 0 */
    "ab c", /* 1 */
    "c c",  /* 2 */
    "\xC4\xA0 a", /* 3: "Ġ a" (space + a) */
    "3 4",  /* 4 */
    "1 2",  /* 5 */
    "12 3", /* 6 */
};

static fi_tokenizer *make_bpe(const char *pre, bool add_bos, bool add_eos) {
    vocab_builder *v = &bpe_vocab;
    v->n = 0;
    for (int b = 0; b < 256; b++) {
        char s[4];
        ref_utf8(ref_byte_cp(b), s);
        vb_add(v, s, FI_TOKEN_NORMAL, 0);
    }
    T_ab = vb_add(v, "ab", FI_TOKEN_NORMAL, 0);
    T_abc = vb_add(v, "abc", FI_TOKEN_NORMAL, 0);
    T_cc = vb_add(v, "cc", FI_TOKEN_NORMAL, 0);
    T_Ga = vb_add(v, "\xC4\xA0" "a", FI_TOKEN_NORMAL, 0);
    T_12 = vb_add(v, "12", FI_TOKEN_NORMAL, 0);
    T_123 = vb_add(v, "123", FI_TOKEN_NORMAL, 0);
    T_34 = vb_add(v, "34", FI_TOKEN_NORMAL, 0);
    T_xyz = vb_add(v, "xyz", FI_TOKEN_NORMAL, 0); /* reachable only without merges (llama3's rule) */
    T_ctl = vb_add(v, "<|x|>", FI_TOKEN_CONTROL, 0);
    T_ctl_long = vb_add(v, "<|x|>y", FI_TOKEN_CONTROL, 0);
    T_user = vb_add(v, "[U]", FI_TOKEN_USER_DEFINED, 0);
    T_eos = vb_add(v, "<|end|>", FI_TOKEN_CONTROL, 0);
    fi_tokenizer_spec spec = {
        .kind = FI_TOKENIZER_BPE, .tokens = v->ptr, .types = v->types, .n_tokens = v->n,
        .merges = BPE_MERGES, .n_merges = sizeof BPE_MERGES / sizeof BPE_MERGES[0], .pre = pre,
        .bos = T_ctl, .eos = T_eos, .eot = -1, .pad = -1, .unk = -1, .add_bos = add_bos, .add_eos = add_eos,
    };
    fi_tokenizer *t = NULL;
    fi_error err = {0};
    if (fi_tokenizer_from_spec(&spec, &t, &err) != FI_OK) fail_msg("tokenizer: %s", err.msg);
    return t;
}

static void expect_ids(const fi_tokenizer *t, const char *text, bool add_special, bool parse_special,
                       const int32_t *want, size_t n_want) {
    int32_t *ids = NULL;
    size_t n = 0;
    fi_error err = {0};
    if (fi_tokenizer_encode(t, text, strlen(text), add_special, parse_special, &ids, &n, &err) != FI_OK)
        fail_msg("encode '%s': %s", text, err.msg);
    bool same = n == n_want;
    for (size_t i = 0; same && i < n; i++) same = ids[i] == want[i];
    if (!same) {
        char got[512] = "", exp[512] = "";
        for (size_t i = 0; i < n; i++) snprintf(got + strlen(got), sizeof got - strlen(got), " %d", ids[i]);
        for (size_t i = 0; i < n_want; i++) snprintf(exp + strlen(exp), sizeof exp - strlen(exp), " %d", want[i]);
        free(ids);
        fail_msg("encode '%s': got [%s ] want [%s ]", text, got, exp);
    }
    free(ids);
}
#define EXPECT(t, text, as, ps, ...)                                                                        \
    do {                                                                                                     \
        const int32_t want_[] = {__VA_ARGS__};                                                               \
        expect_ids(t, text, as, ps, want_, sizeof want_ / sizeof want_[0]);                                 \
    } while (0)

static void expect_empty(const fi_tokenizer *t, const char *text, bool add_special) {
    expect_ids(t, text, add_special, true, NULL, 0);
}

/* Merges worked by hand on the table above. */
static void test_bpe_merges_by_hand(void **state) {
    (void)state;
    fi_tokenizer *t = make_bpe("gpt2", false, false);
    /* a b c c: (a,b) rank 0 -> ab c c; (ab,c) rank 1 beats (c,c) rank 2 -> abc c. */
    EXPECT(t, "abcc", false, false, T_abc, BYTE('c'));
    /* c c c: two equal-rank pairs, the leftmost merges first -> cc c. */
    EXPECT(t, "ccc", false, false, T_cc, BYTE('c'));
    EXPECT(t, "cccc", false, false, T_cc, T_cc);
    /* " ab" is one pre-token: Ġ a b; (a,b) rank 0 goes before (Ġ,a) rank 3 -> Ġ ab, no (Ġ,ab) merge. */
    EXPECT(t, " ab", false, false, BYTE(' '), T_ab);
    fi_tokenizer_free(t);
}

static void test_bpe_pretokenize(void **state) {
    (void)state;
    fi_tokenizer *t = make_bpe("gpt2", false, false);
    int32_t space = 0;
    for (int b = 0; b < 256; b++)
        if (ref_byte_cp(b) == 0x120) space = b; /* the byte that maps to 'Ġ' is the space */
    assert_int_equal(space, ' ');
    EXPECT(t, " a", false, false, T_Ga);
    /* "a  b" -> "a" | " " (whitespace not followed by non-space) | " b". */
    EXPECT(t, "a  b", false, false, BYTE('a'), BYTE(' '), BYTE(' '), BYTE('b'));
    /* gpt2 keeps digit runs together: "1234" -> 1 2 3 4: (3,4) rank 4 first, then (1,2) rank 5 -> 12 34. */
    EXPECT(t, "1234", false, false, T_12, T_34);
    /* letters and digits are separate pre-tokens: "ab12" -> "ab" | "12". */
    EXPECT(t, "ab12", false, false, T_ab, T_12);
    /* a non-ASCII character falls back to its bytes' tokens. */
    EXPECT(t, "\xC3\xA9", false, false, BYTE(0xC3), BYTE(0xA9));
    /* xyz is a token, but no merges build it. */
    EXPECT(t, "xyz", false, false, BYTE('x'), BYTE('y'), BYTE('z'));
    fi_tokenizer_free(t);

    /* smollm splits every digit before the gpt2 regex: "1234" -> 1 | 2 | 3 | 4, no merges across. */
    t = make_bpe("smollm", false, false);
    EXPECT(t, "1234", false, false, BYTE('1'), BYTE('2'), BYTE('3'), BYTE('4'));
    EXPECT(t, "abc 12", false, false, T_abc, BYTE(' '), BYTE('1'), BYTE('2'));
    fi_tokenizer_free(t);

    /* llama3: digits in groups of three ("123" | "4"), and a pre-token that is a token is used whole. */
    t = make_bpe("llama3", false, false);
    EXPECT(t, "1234", false, false, T_123, BYTE('4'));
    EXPECT(t, "xyz", false, false, T_xyz);
    /* llama3 attaches one non-letter to a letter run: " ab" stays one pre-token -> Ġ ab. */
    EXPECT(t, " ab", false, false, BYTE(' '), T_ab);
    fi_tokenizer_free(t);

    /* qwen2: single digits. */
    t = make_bpe("qwen2", false, false);
    EXPECT(t, "1234", false, false, BYTE('1'), BYTE('2'), BYTE('3'), BYTE('4'));
    fi_tokenizer_free(t);
}

static void test_bpe_specials(void **state) {
    (void)state;
    fi_tokenizer *t = make_bpe("gpt2", true, true);
    /* add_special adds BOS and EOS per the flags. */
    EXPECT(t, "ab", true, true, T_ctl, T_ab, T_eos);
    EXPECT(t, "ab", false, true, T_ab);
    expect_empty(t, "", false);
    EXPECT(t, "", true, true, T_ctl, T_eos);
    /* control tokens in the text with parse_special; the longest token wins where both match. */
    EXPECT(t, "ab<|x|>ab", false, true, T_ab, T_ctl, T_ab);
    EXPECT(t, "<|x|>y<|x|>", false, true, T_ctl_long, T_ctl);
    EXPECT(t, "<|x|><|x|>", false, true, T_ctl, T_ctl);
    /* without parse_special the control text is plain text: "<|" "x" "|>" pre-tokens, bytes only. */
    EXPECT(t, "<|x|>", false, false, BYTE('<'), BYTE('|'), BYTE('x'), BYTE('|'), BYTE('>'));
    /* user-defined tokens are matched either way. */
    EXPECT(t, "ab[U]c", false, false, T_ab, T_user, BYTE('c'));
    EXPECT(t, "ab[U]c", false, true, T_ab, T_user, BYTE('c'));
    assert_true(fi_tokenizer_is_eog(t, T_eos));
    assert_false(fi_tokenizer_is_eog(t, T_ab));
    assert_int_equal(fi_tokenizer_bos(t), T_ctl);
    assert_int_equal(fi_tokenizer_eos(t), T_eos);
    fi_tokenizer_free(t);
}

static void test_bpe_pieces(void **state) {
    (void)state;
    fi_tokenizer *t = make_bpe("gpt2", false, false);
    for (int b = 0; b < 256; b++) {
        size_t n;
        const char *p = fi_tokenizer_piece(t, b, &n);
        assert_int_equal(n, 1);
        assert_int_equal((uint8_t)p[0], b);
    }
    size_t n;
    const char *p = fi_tokenizer_piece(t, T_Ga, &n);
    assert_int_equal(n, 2);
    assert_memory_equal(p, " a", 2);
    p = fi_tokenizer_piece(t, T_ctl, &n);
    assert_int_equal(n, 5);
    assert_memory_equal(p, "<|x|>", 5);
    assert_null(fi_tokenizer_piece(t, -1, &n));
    assert_int_equal(n, 0);
    assert_null(fi_tokenizer_piece(t, (int32_t)fi_tokenizer_n_vocab(t), &n));
    fi_tokenizer_free(t);
}

static void test_unknown_pre_is_refused(void **state) {
    (void)state;
    const char *tokens[] = {"a"};
    fi_tokenizer_spec spec = {.kind = FI_TOKENIZER_BPE, .tokens = tokens, .n_tokens = 1, .pre = "no-such-pre",
                              .bos = -1, .eos = -1, .eot = -1, .pad = -1, .unk = -1};
    fi_tokenizer *t = NULL;
    fi_error err = {0};
    assert_int_equal(fi_tokenizer_from_spec(&spec, &t, &err), FI_ERR_UNSUPPORTED);
    assert_null(t);
    assert_non_null(strstr(err.msg, "no-such-pre"));
    assert_non_null(strstr(err.msg, "smollm"));
}

/* ------------------------------------------------------------------------ */
/* A tiny SentencePiece vocabulary                                           */
/* ------------------------------------------------------------------------ */

static vocab_builder spm_vocab;

static fi_tokenizer *make_spm(bool add_bos) {
    vocab_builder *v = &spm_vocab;
    v->n = 0;
    vb_add(v, "<unk>", FI_TOKEN_UNKNOWN, 0);
    vb_add(v, "<s>", FI_TOKEN_CONTROL, 0);
    vb_add(v, "</s>", FI_TOKEN_CONTROL, 0);
    for (int b = 0; b < 256; b++) {
        char s[8];
        snprintf(s, sizeof s, "<0x%02X>", b);
        vb_add(v, s, FI_TOKEN_BYTE, 0);
    }
    vb_add(v, "\xE2\x96\x81", FI_TOKEN_NORMAL, -10);
    const char *chars[] = {"h", "e", "l", "o"};
    for (int i = 0; i < 4; i++) vb_add(v, chars[i], FI_TOKEN_NORMAL, -10);
    vb_add(v, "\xE2\x96\x81h", FI_TOKEN_NORMAL, -5);
    vb_add(v, "he", FI_TOKEN_NORMAL, -3);
    vb_add(v, "ll", FI_TOKEN_NORMAL, -1);
    vb_add(v, "llo", FI_TOKEN_NORMAL, -2);
    vb_add(v, "\xE2\x96\x81he", FI_TOKEN_NORMAL, -4);
    fi_tokenizer_spec spec = {
        .kind = FI_TOKENIZER_SPM, .tokens = v->ptr, .types = v->types, .scores = v->scores, .n_tokens = v->n,
        .bos = 1, .eos = 2, .eot = -1, .pad = -1, .unk = 0, .add_bos = add_bos, .add_space_prefix = true,
    };
    fi_tokenizer *t = NULL;
    fi_error err = {0};
    if (fi_tokenizer_from_spec(&spec, &t, &err) != FI_OK) fail_msg("tokenizer: %s", err.msg);
    return t;
}

static void test_spm_by_hand(void **state) {
    (void)state;
    fi_tokenizer *t = make_spm(true);
    const vocab_builder *v = &spm_vocab;
    int32_t sp_he = vb_id(v, "\xE2\x96\x81he"), llo = vb_id(v, "llo"), sp_h = vb_id(v, "\xE2\x96\x81h");
    int32_t sp = vb_id(v, "\xE2\x96\x81"), l = vb_id(v, "l"), o = vb_id(v, "o");
    /* "hello" -> "▁hello": ll(-1) > llo(-2) > he(-3) > ▁he(-4); ▁h(-5) is stale by then -> ▁he llo. */
    EXPECT(t, "hello", false, false, sp_he, llo);
    EXPECT(t, "hello", true, false, 1, sp_he, llo);
    /* é has no token: its UTF-8 bytes fall back to <0xC3> <0xA9> (ids 3 + byte). */
    EXPECT(t, "h\xC3\xA9", false, false, sp_h, 3 + 0xC3, 3 + 0xA9);
    /* spaces are '▁'; after a special token the space prefix comes back. */
    EXPECT(t, "lo o", false, false, sp, l, o, sp, o);
    EXPECT(t, "</s>hello", false, true, 2, sp_he, llo);
    size_t n;
    const char *p = fi_tokenizer_piece(t, sp_he, &n);
    assert_int_equal(n, 3);
    assert_memory_equal(p, " he", 3);
    p = fi_tokenizer_piece(t, 3 + 0xC3, &n);
    assert_int_equal(n, 1);
    assert_int_equal((uint8_t)p[0], 0xC3);
    assert_true(fi_tokenizer_is_eog(t, 2));
    fi_tokenizer_free(t);
}

/* ------------------------------------------------------------------------ */
/* Loading from GGUF metadata (a file built in memory)                       */
/* ------------------------------------------------------------------------ */

typedef struct gbuf {
    uint8_t *p;
    size_t n, cap;
} gbuf;

static void gb_put(gbuf *b, const void *data, size_t n) {
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
        assert_non_null(b->p);
    }
    memcpy(b->p + b->n, data, n);
    b->n += n;
}
static void gb_u32(gbuf *b, uint32_t v) { gb_put(b, &v, 4); }
static void gb_u64(gbuf *b, uint64_t v) { gb_put(b, &v, 8); }
static void gb_str(gbuf *b, const char *s) {
    gb_u64(b, strlen(s));
    gb_put(b, s, strlen(s));
}
static void gb_key(gbuf *b, const char *key, uint32_t type) {
    gb_str(b, key);
    gb_u32(b, type);
}

/* GGUF v3 with no tensors and the SentencePiece vocabulary of make_spm, model name as given;
 * drop_types leaves out token_type; bad_scores gives one score too few. */
static gbuf spm_gguf(const char *model, bool drop_types, bool bad_scores) {
    fi_tokenizer_free(make_spm(false)); /* fills spm_vocab */
    const vocab_builder *v = &spm_vocab;
    gbuf b = {0};
    gb_put(&b, "GGUF", 4);
    gb_u32(&b, 3);
    gb_u64(&b, 0);
    gb_u64(&b, drop_types ? 6 : 7);
    gb_key(&b, "tokenizer.ggml.model", 8);
    gb_str(&b, model);
    gb_key(&b, "tokenizer.ggml.tokens", 9);
    gb_u32(&b, 8);
    gb_u64(&b, (uint64_t)v->n);
    for (int i = 0; i < v->n; i++) gb_str(&b, v->text[i]);
    gb_key(&b, "tokenizer.ggml.scores", 9);
    gb_u32(&b, 6);
    gb_u64(&b, (uint64_t)v->n - (bad_scores ? 1 : 0));
    for (int i = 0; i < v->n - (bad_scores ? 1 : 0); i++) gb_put(&b, &v->scores[i], 4);
    if (!drop_types) {
        gb_key(&b, "tokenizer.ggml.token_type", 9);
        gb_u32(&b, 5);
        gb_u64(&b, (uint64_t)v->n);
        for (int i = 0; i < v->n; i++) gb_put(&b, &v->types[i], 4);
    }
    gb_key(&b, "tokenizer.ggml.bos_token_id", 4);
    gb_u32(&b, 1);
    gb_key(&b, "tokenizer.ggml.eos_token_id", 4);
    gb_u32(&b, 2);
    gb_key(&b, "tokenizer.ggml.add_bos_token", 7);
    gb_put(&b, "\x01", 1);
    while (b.n % 32) gb_put(&b, "", 1);
    return b;
}

static fi_status from_memory(gbuf *b, fi_tokenizer **t, fi_error *err) {
    fi_gguf *g = NULL;
    fi_status st = fi_gguf_open_memory(b->p, b->n, &g, err);
    if (st != FI_OK) fail_msg("gguf: %s", err->msg);
    st = fi_tokenizer_from_gguf(g, t, err);
    fi_gguf_close(g);
    return st;
}

static void test_spm_from_gguf(void **state) {
    (void)state;
    gbuf b = spm_gguf("llama", false, false);
    fi_tokenizer *t = NULL;
    fi_error err = {0};
    if (from_memory(&b, &t, &err) != FI_OK) fail_msg("%s", err.msg);
    const vocab_builder *v = &spm_vocab;
    assert_int_equal(fi_tokenizer_kind_of(t), FI_TOKENIZER_SPM);
    assert_true(fi_tokenizer_add_bos(t));
    /* Same hand-worked result as test_spm_by_hand, with the BOS the file asks for; add_space_prefix
     * defaults to on for SentencePiece files. */
    EXPECT(t, "hello", true, false, 1, vb_id(v, "\xE2\x96\x81he"), vb_id(v, "llo"));
    fi_tokenizer_free(t);
    free(b.p);

    b = spm_gguf("bert", false, false);
    assert_int_equal(from_memory(&b, &t, &err), FI_ERR_UNSUPPORTED);
    assert_non_null(strstr(err.msg, "bert"));
    assert_non_null(strstr(err.msg, "gpt2"));
    free(b.p);

    b = spm_gguf("llama", false, true);
    assert_int_equal(from_memory(&b, &t, &err), FI_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "tokenizer.ggml.scores"));
    free(b.p);

    /* gpt2 without merges is refused with the key named. */
    b = spm_gguf("gpt2", true, false);
    assert_int_equal(from_memory(&b, &t, &err), FI_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "tokenizer.ggml.merges"));
    assert_null(t);
    free(b.p);
}

/* ------------------------------------------------------------------------ */
/* Streaming detokenizer                                                     */
/* ------------------------------------------------------------------------ */

static bool complete_utf8(const char *s, size_t n) {
    for (size_t i = 0; i < n;) {
        uint8_t c = (uint8_t)s[i];
        size_t len = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 0;
        if (!len || i + len > n) return false;
        for (size_t k = 1; k < len; k++)
            if (((uint8_t)s[i + k] & 0xC0) != 0x80) return false;
        i += len;
    }
    return true;
}

/* Streams ids one by one; every chunk must be whole characters (when the text is UTF-8) and the
 * concatenation must be want (the text itself for a lossless round trip). */
static void stream_and_check_want(const fi_tokenizer *t, const char *text, size_t len, const char *want,
                                  size_t want_len, bool text_is_utf8) {
    int32_t *ids = NULL;
    size_t n = 0;
    fi_error err = {0};
    if (fi_tokenizer_encode(t, text, len, false, false, &ids, &n, &err) != FI_OK) fail_msg("%s", err.msg);
    char *all = malloc(want_len + 64);
    size_t total = 0;
    fi_detok d = {0};
    size_t cap = fi_tokenizer_max_piece_len(t) + 8;
    char *chunk = malloc(cap);
    for (size_t i = 0; i < n; i++) {
        size_t w = fi_detok_push(&d, t, ids[i], chunk, cap);
        if (text_is_utf8 && !complete_utf8(chunk, w)) fail_msg("chunk %zu of '%.*s' splits a character", i, (int)len, text);
        if (total + w > want_len) fail_msg("decoding '%.*s' gives more bytes than expected", (int)len, text);
        memcpy(all + total, chunk, w);
        total += w;
    }
    size_t w = fi_detok_flush(&d, chunk, cap);
    assert_true(total + w <= want_len);
    memcpy(all + total, chunk, w);
    total += w;
    if (total != want_len || memcmp(all, want, want_len) != 0)
        fail_msg("round trip of '%.*s' gave '%.*s'", (int)len, text, (int)total, all);
    free(chunk);
    free(all);
    free(ids);
}

static void stream_and_check(const fi_tokenizer *t, const char *text, size_t len, bool text_is_utf8) {
    stream_and_check_want(t, text, len, text, len, text_is_utf8);
}

static void test_detok_holds_partial_utf8(void **state) {
    (void)state;
    /* In the tiny vocabulary every non-ASCII byte is its own token, so each emoji arrives in 4 pieces. */
    fi_tokenizer *t = make_bpe("gpt2", false, false);
    const char *text = "hi \xF0\x9F\x98\x80 and \xF0\x9F\x91\xA8\xE2\x80\x8D\xF0\x9F\x91\xA9 caf\xC3\xA9 \xE4\xB8\xAD";
    stream_and_check(t, text, strlen(text), true);
    /* Byte by byte: nothing comes out until the last byte of the emoji. */
    fi_detok d = {0};
    char out[64];
    const uint8_t emoji[4] = {0xF0, 0x9F, 0x98, 0x80};
    for (int i = 0; i < 3; i++) assert_int_equal(fi_detok_push(&d, t, BYTE(emoji[i]), out, sizeof out), 0);
    assert_int_equal(fi_detok_push(&d, t, BYTE(emoji[3]), out, sizeof out), 4);
    assert_memory_equal(out, emoji, 4);
    /* A lead byte followed by ASCII can never complete: both come out as they are. */
    assert_int_equal(fi_detok_push(&d, t, BYTE(0xE4), out, sizeof out), 0);
    assert_int_equal(fi_detok_push(&d, t, BYTE('a'), out, sizeof out), 2);
    assert_int_equal((uint8_t)out[0], 0xE4);
    assert_int_equal(out[1], 'a');
    /* flush releases a dangling prefix. */
    assert_int_equal(fi_detok_push(&d, t, BYTE(0xF0), out, sizeof out), 0);
    assert_int_equal(fi_detok_flush(&d, out, sizeof out), 1);
    assert_int_equal((uint8_t)out[0], 0xF0);
    /* control tokens print nothing. */
    assert_int_equal(fi_detok_push(&d, t, T_ctl, out, sizeof out), 0);
    fi_tokenizer_free(t);
}

/* ------------------------------------------------------------------------ */
/* The real default model                                                    */
/* ------------------------------------------------------------------------ */

static fi_gguf *open_model(const char *test) {
    char path[1024];
    const char *env = getenv("FI_MODEL");
    const char *data = getenv("FI_TEST_DATA");
    if (env) snprintf(path, sizeof path, "%s", env);
    else snprintf(path, sizeof path, "%s/../../models/SmolLM2-135M-Instruct.Q4_1.gguf", data ? data : "tests/data");
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        printf("[%s] skipped: %s not found (run scripts/get_model.sh)\n", test, path);
        return NULL;
    }
    fclose(fp);
    fi_gguf *g = NULL;
    fi_error err = {0};
    if (fi_gguf_open(path, &g, &err) != FI_OK) fail_msg("%s", err.msg);
    return g;
}

static void test_real_model_specials(void **state) {
    (void)state;
    fi_gguf *g = open_model("test_real_model_specials");
    if (!g) skip();
    fi_tokenizer *t = NULL;
    fi_error err = {0};
    if (fi_tokenizer_from_gguf(g, &t, &err) != FI_OK) fail_msg("%s", err.msg);
    /* Facts of SmolLM2's vocabulary (its tokenizer.json): 49152 tokens, 0 <|endoftext|>, 1 <|im_start|>,
     * 2 <|im_end|>; BOS 1, EOS 2, no BOS added; pre-tokenizer smollm. */
    assert_int_equal(fi_tokenizer_n_vocab(t), 49152);
    assert_string_equal(fi_tokenizer_token_text(t, 0), "<|endoftext|>");
    assert_string_equal(fi_tokenizer_token_text(t, 1), "<|im_start|>");
    assert_string_equal(fi_tokenizer_token_text(t, 2), "<|im_end|>");
    assert_int_equal(fi_tokenizer_bos(t), 1);
    assert_int_equal(fi_tokenizer_eos(t), 2);
    assert_false(fi_tokenizer_add_bos(t));
    assert_string_equal(fi_tokenizer_pre_name(t), "smollm");
    assert_true(fi_tokenizer_is_eog(t, 2));
    assert_true(fi_tokenizer_is_eog(t, 0));
    assert_false(fi_tokenizer_is_eog(t, 1));
    /* Ids from llama.cpp (llama-cpp-python 0.3.36) on this file. */
    EXPECT(t, "Hello world 12345  x", true, true, 19556, 905, 216, 33, 34, 35, 36, 37, 216, 1792);
    EXPECT(t, "<|im_start|>user", true, true, 1, 4093);
    EXPECT(t, "<|im_start|>user", true, false, 44, 108, 306, 79, 3738, 108, 46, 4093);
    fi_tokenizer_free(t);
    fi_gguf_close(g);
}

/* Bytes the vocabulary can spell: those whose GPT-2 character is a token of its own (SmolLM2 lacks a few,
 * e.g. 0x04 and the lead bytes 0xF2..0xF4; both engines drop such bytes). */
static void representable_bytes(const fi_tokenizer *t, bool has[256]) {
    for (int b = 0; b < 256; b++) {
        char s[4];
        ref_utf8(ref_byte_cp(b), s);
        has[b] = false;
        for (int64_t id = 0; id < fi_tokenizer_n_vocab(t) && !has[b]; id++)
            has[b] = fi_tokenizer_token_type(t, (int32_t)id) == FI_TOKEN_NORMAL && !strcmp(fi_tokenizer_token_text(t, (int32_t)id), s);
    }
}

static size_t encode_cp(uint32_t cp, char *out) {
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

/* Random valid UTF-8 of 1..4-byte characters (no surrogates), only of bytes the vocabulary spells. */
static size_t random_utf8(fi_test_rng *rng, const bool has[256], char *out, size_t max_chars) {
    size_t n = 0, chars = 1 + (size_t)fi_test_rng_int(rng, (int64_t)max_chars);
    static const char *const pool[] = {" ", "  ", "\n", "\t", "a", "Z", "7", "'s", "<|im_start|>", "<|im_end|>", "é", "中", "😀", "👍🏽"};
    for (size_t c = 0; c < chars; c++) {
        if (fi_test_rng_int(rng, 5) == 0) {
            const char *s = pool[fi_test_rng_int(rng, sizeof pool / sizeof pool[0])];
            memcpy(out + n, s, strlen(s));
            n += strlen(s);
            continue;
        }
        for (;;) {
            uint32_t cp;
            switch (fi_test_rng_int(rng, 4)) {
            case 0: cp = 0x20 + (uint32_t)fi_test_rng_int(rng, 0x5F); break;
            case 1: cp = 0x80 + (uint32_t)fi_test_rng_int(rng, 0x800 - 0x80); break;
            case 2: cp = 0x800 + (uint32_t)fi_test_rng_int(rng, 0xD800 - 0x800); break;
            default: cp = 0x10000 + (uint32_t)fi_test_rng_int(rng, 0x10FFFF - 0x10000); break;
            }
            char ch[4];
            size_t len = encode_cp(cp, ch), k = 0;
            while (k < len && has[(uint8_t)ch[k]]) k++;
            if (k < len) continue;
            memcpy(out + n, ch, len);
            n += len;
            break;
        }
    }
    return n;
}

/* Expected decoding of arbitrary bytes: a byte that does not start a lead + continuation sequence of
 * the right length reads as U+FFFD, a sequence reads as its code point (re-encoded in shortest form;
 * beyond U+10FFFF: U+FFFD); bytes the vocabulary cannot spell vanish. */
static size_t expected_from_bytes(const char *in, size_t n, const bool has[256], char *out) {
    size_t w = 0;
    for (size_t i = 0; i < n;) {
        uint8_t c = (uint8_t)in[i];
        size_t len = c < 0x80 ? 1 : c >= 0xC0 && c < 0xE0 ? 2 : c >= 0xE0 && c < 0xF0 ? 3 : c >= 0xF0 && c < 0xF8 ? 4 : 0;
        bool ok = len > 0 && i + len <= n;
        for (size_t k = 1; ok && k < len; k++) ok = ((uint8_t)in[i + k] & 0xC0) == 0x80;
        uint32_t cp = 0xFFFD;
        if (ok) {
            static const uint8_t lead_mask[5] = {0, 0x7F, 0x1F, 0x0F, 0x07};
            cp = c & lead_mask[len];
            for (size_t k = 1; k < len; k++) cp = (cp << 6) | ((uint8_t)in[i + k] & 0x3F);
            if (cp > 0x10FFFF) cp = 0xFFFD;
        }
        char ch[4];
        size_t m = encode_cp(cp, ch);
        for (size_t k = 0; k < m; k++)
            if (has[(uint8_t)ch[k]]) out[w++] = ch[k];
        i += ok ? len : 1;
    }
    return w;
}

static void test_real_model_round_trips(void **state) {
    (void)state;
    fi_gguf *g = open_model("test_real_model_round_trips");
    if (!g) skip();
    fi_tokenizer *t = NULL;
    fi_error err = {0};
    if (fi_tokenizer_from_gguf(g, &t, &err) != FI_OK) fail_msg("%s", err.msg);
    static const char *const fixed[] = {
        "", "Hello, world!", "  leading and trailing  ", "\n\n\ttabs\n", "café naïve Ångström", "中文分词测试 日本語",
        "😀👍🏽👨‍👩‍👧‍👦🇫🇷", "def f(x):\n    return x * 2\n", "1234567890 3.14159", "<|im_start|>user\nhi<|im_end|>\n",
    };
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++) {
        stream_and_check(t, fixed[i], strlen(fixed[i]), true);
    }
    bool has[256];
    representable_bytes(t, has);
    assert_true(has[' '] && has['a'] && has[0xC3] && has[0xF0]);
    fi_test_rng rng;
    fi_test_rng_init(&rng, fi_test_seed("test_real_model_round_trips"));
    char buf[64 * 16], want[64 * 16 * 3];
    for (int iter = 0; iter < 400; iter++) {
        size_t n = random_utf8(&rng, has, buf, 60);
        stream_and_check(t, buf, n, true);
    }
    /* Arbitrary bytes, invalid UTF-8 included. */
    for (int iter = 0; iter < 300; iter++) {
        size_t n = 1 + (size_t)fi_test_rng_int(&rng, 64);
        for (size_t i = 0; i < n; i++) buf[i] = (char)fi_test_rng_int(&rng, 256);
        size_t m = expected_from_bytes(buf, n, has, want);
        stream_and_check_want(t, buf, n, want, m, false);
    }
    /* parse_special: the control token text comes back from its piece. */
    int32_t *ids = NULL;
    size_t n = 0;
    const char *s = "a<|im_end|>b";
    assert_int_equal(fi_tokenizer_encode(t, s, strlen(s), false, true, &ids, &n, &err), FI_OK);
    char out[64] = "";
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        size_t len;
        const char *p = fi_tokenizer_piece(t, ids[i], &len);
        memcpy(out + at, p, len);
        at += len;
    }
    assert_int_equal(at, strlen(s));
    assert_memory_equal(out, s, at);
    free(ids);
    fi_tokenizer_free(t);
    fi_gguf_close(g);
}

/* Every pre-tokenizer on random bytes (invalid UTF-8, control characters, specials' text): decoding
 * gives the input back with malformed bytes read as U+FFFD (the tiny vocabulary spells every byte). */
static void test_all_pre_random_bytes(void **state) {
    (void)state;
    static const char *const pres[] = {"default", "gpt-2", "smollm", "llama-bpe", "dbrx", "qwen2", "gpt-4o"};
    bool has[256];
    for (int b = 0; b < 256; b++) has[b] = true;
    fi_test_rng rng;
    fi_test_rng_init(&rng, fi_test_seed("test_all_pre_random_bytes"));
    static const char alphabet[] = "aZ9 \n\t'sS<|x|>[U].,\xC3\xA9\xE4\xB8\xAD\xF0\x9F\x98\x80\x80\xFF";
    char buf[256], want[256 * 3];
    for (size_t p = 0; p < sizeof pres / sizeof pres[0]; p++) {
        fi_tokenizer *t = make_bpe(pres[p], false, false);
        for (int iter = 0; iter < 300; iter++) {
            size_t n = 1 + (size_t)fi_test_rng_int(&rng, 80);
            for (size_t i = 0; i < n; i++)
                buf[i] = iter % 2 ? (char)fi_test_rng_int(&rng, 256) : alphabet[fi_test_rng_int(&rng, sizeof alphabet - 1)];
            size_t m = expected_from_bytes(buf, n, has, want);
            stream_and_check_want(t, buf, n, want, m, false);
        }
        fi_tokenizer_free(t);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bpe_merges_by_hand),
        cmocka_unit_test(test_bpe_pretokenize),
        cmocka_unit_test(test_bpe_specials),
        cmocka_unit_test(test_bpe_pieces),
        cmocka_unit_test(test_unknown_pre_is_refused),
        cmocka_unit_test(test_spm_by_hand),
        cmocka_unit_test(test_spm_from_gguf),
        cmocka_unit_test(test_detok_holds_partial_utf8),
        cmocka_unit_test(test_all_pre_random_bytes),
        cmocka_unit_test(test_real_model_specials),
        cmocka_unit_test(test_real_model_round_trips),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
