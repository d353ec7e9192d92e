/* flexinfer tokenize: the token ids (and pieces) of a text, with the model's own tokenizer.
 * --file mode tokenizes each line separately (lines are C-escaped), one line of ids per input line:
 * the batch form used to compare with other engines. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "model/gguf.h"
#include "model/tokenizer.h"

#define TOKENIZE_DEFAULT_MODEL "models/SmolLM2-135M-Instruct.Q4_1.gguf"

static void usage(FILE *f) {
    fprintf(f,
            "usage: flexinfer tokenize [-m MODEL] [--ids-only] [--no-special] [--no-add-special] (--file F | TEXT)\n"
            "  -m MODEL          GGUF file (default " TOKENIZE_DEFAULT_MODEL ", see scripts/get_model.sh)\n"
            "  --ids-only        one line of space-separated ids instead of 'id<TAB>piece' lines\n"
            "  --no-special      treat special-token text such as <|im_start|> as plain text\n"
            "  --no-add-special  do not add BOS/EOS even where the model asks for them\n"
            "  --file F          tokenize each line of F (C escapes \\n \\t \\\\ \\xHH decoded);\n"
            "                    prints one line of ids per input line\n");
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Decodes C escapes in place; returns the new length, or -1 (with *bad_at) on a malformed escape. */
static long unescape(char *s, size_t n, size_t *bad_at) {
    size_t w = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '\\') {
            s[w++] = s[i];
            continue;
        }
        if (i + 1 >= n) {
            *bad_at = i;
            return -1;
        }
        char c = s[++i];
        switch (c) {
        case 'n': s[w++] = '\n'; break;
        case 't': s[w++] = '\t'; break;
        case 'r': s[w++] = '\r'; break;
        case '\\': s[w++] = '\\'; break;
        case 'x': {
            int hi = i + 1 < n ? hexval(s[i + 1]) : -1, lo = i + 2 < n ? hexval(s[i + 2]) : -1;
            if (hi < 0 || lo < 0) {
                *bad_at = i - 1;
                return -1;
            }
            s[w++] = (char)(hi * 16 + lo);
            i += 2;
            break;
        }
        default: *bad_at = i - 1; return -1;
        }
    }
    return (long)w;
}

static bool valid_utf8(const unsigned char *s, size_t n) {
    for (size_t i = 0; i < n;) {
        unsigned char c = s[i];
        size_t len = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 0;
        if (!len || i + len > n) return false;
        for (size_t k = 1; k < len; k++)
            if ((s[i + k] & 0xC0) != 0x80) return false;
        i += len;
    }
    return true;
}

/* A piece on one line: escapes for control bytes, and for all high bytes unless the piece is UTF-8. */
static void print_piece(const char *p, size_t n) {
    bool utf8 = valid_utf8((const unsigned char *)p, n);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c == '\\') fputs("\\\\", stdout);
        else if (c == '\n') fputs("\\n", stdout);
        else if (c == '\t') fputs("\\t", stdout);
        else if (c == '\r') fputs("\\r", stdout);
        else if (c < 0x20 || c == 0x7f || (c >= 0x80 && !utf8)) printf("\\x%02x", c);
        else putchar(c);
    }
}

static void print_ids(const int32_t *ids, size_t n) {
    for (size_t i = 0; i < n; i++) printf(i ? " %d" : "%d", ids[i]);
    putchar('\n');
}

static int tokenize_file(const fi_tokenizer *tok, const char *path, bool add_special, bool parse_special) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "flexinfer tokenize: cannot open %s\n", path);
        return 2;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t got;
    long lineno = 0;
    int rc = 0;
    while ((got = getline(&line, &cap, f)) >= 0) {
        lineno++;
        size_t n = (size_t)got;
        if (n && line[n - 1] == '\n') n--;
        if (n && line[n - 1] == '\r') n--;
        size_t bad_at = 0;
        long len = unescape(line, n, &bad_at);
        if (len < 0) {
            fprintf(stderr, "flexinfer tokenize: %s:%ld: bad escape at column %zu\n", path, lineno, bad_at + 1);
            rc = 2;
            break;
        }
        int32_t *ids = NULL;
        size_t n_ids = 0;
        fi_error err = {0};
        if (fi_tokenizer_encode(tok, line, (size_t)len, add_special, parse_special, &ids, &n_ids, &err) != FI_OK) {
            fprintf(stderr, "flexinfer tokenize: %s:%ld: %s\n", path, lineno, err.msg);
            rc = 1;
            break;
        }
        print_ids(ids, n_ids);
        free(ids);
    }
    free(line);
    fclose(f);
    return rc;
}

int cmd_tokenize(int argc, char **argv) {
    const char *model = TOKENIZE_DEFAULT_MODEL, *file = NULL, *text = NULL;
    bool ids_only = false, parse_special = true, add_special = true;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "-m") || !strcmp(a, "--model") || !strcmp(a, "--file")) {
            if (i + 1 >= argc) {
                fprintf(stderr, "flexinfer tokenize: %s needs a value\n", a);
                return 2;
            }
            if (!strcmp(a, "--file")) file = argv[++i];
            else model = argv[++i];
        } else if (!strcmp(a, "--ids-only")) {
            ids_only = true;
        } else if (!strcmp(a, "--no-special")) {
            parse_special = false;
        } else if (!strcmp(a, "--no-add-special")) {
            add_special = false;
        } else if (a[0] == '-' && a[1] != 0 && strcmp(a, "--")) {
            fprintf(stderr, "flexinfer tokenize: unknown option %s\n", a);
            usage(stderr);
            return 2;
        } else {
            if (!strcmp(a, "--")) {
                if (++i >= argc) break;
                a = argv[i];
            }
            if (text) {
                fprintf(stderr, "flexinfer tokenize: give one TEXT (quote it)\n");
                return 2;
            }
            text = a;
        }
    }
    if (!!text == !!file) {
        fprintf(stderr, "flexinfer tokenize: give either TEXT or --file F\n");
        usage(stderr);
        return 2;
    }
    fi_error err = {0};
    fi_gguf *g = NULL;
    if (fi_gguf_open(model, &g, &err) != FI_OK) {
        fprintf(stderr, "flexinfer tokenize: %s\n", err.msg);
        return 2;
    }
    fi_tokenizer *tok = NULL;
    if (fi_tokenizer_from_gguf(g, &tok, &err) != FI_OK) {
        fprintf(stderr, "flexinfer tokenize: %s: %s\n", model, err.msg);
        fi_gguf_close(g);
        return 2;
    }
    int rc = 0;
    if (file) {
        rc = tokenize_file(tok, file, add_special, parse_special);
    } else {
        int32_t *ids = NULL;
        size_t n = 0;
        if (fi_tokenizer_encode(tok, text, strlen(text), add_special, parse_special, &ids, &n, &err) != FI_OK) {
            fprintf(stderr, "flexinfer tokenize: %s\n", err.msg);
            rc = 1;
        } else if (ids_only) {
            print_ids(ids, n);
        } else {
            for (size_t i = 0; i < n; i++) {
                size_t len;
                const char *p = fi_tokenizer_piece(tok, ids[i], &len);
                printf("%d\t", ids[i]);
                print_piece(p, len);
                putchar('\n');
            }
        }
        free(ids);
    }
    fi_tokenizer_free(tok);
    fi_gguf_close(g);
    if (fflush(stdout) != 0 && rc == 0) rc = 1;
    return rc;
}
