/* Chat templates: recognition of a model's jinja template and rendering of the known formats.
 *
 * Rendering follows each family's published template. The beginning-of-sequence token those
 * templates start with is left out: the tokenizer adds it (add_bos), and adding it twice would
 * change the prompt. Tokens inside the text (<|im_start|>, [INST], <s> between Llama 2 turns...)
 * are meant to be encoded with parse_special. */
#include "model/chat_template.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"

static const struct {
    fi_chat_template_kind kind;
    const char *name;
} NAMES[] = {
    {FI_CHAT_CHATML, "chatml"},
    {FI_CHAT_LLAMA3, "llama3"},
    {FI_CHAT_LLAMA2, "llama2"},
    {FI_CHAT_GEMMA, "gemma"},
};
#define N_NAMES (sizeof NAMES / sizeof NAMES[0])
#define SUPPORTED "chatml, llama3, llama2, gemma"

const char *fi_chat_template_name(fi_chat_template_kind kind) {
    for (size_t i = 0; i < N_NAMES; i++)
        if (NAMES[i].kind == kind) return NAMES[i].name;
    return "?";
}

fi_status fi_chat_template_by_name(const char *name, fi_chat_template_kind *out, fi_error *err) {
    for (size_t i = 0; name && i < N_NAMES; i++)
        if (!strcmp(NAMES[i].name, name)) {
            *out = NAMES[i].kind;
            return FI_OK;
        }
    return fi_error_set(err, FI_ERR_INVALID, "unknown chat template '%s' (supported: " SUPPORTED ")",
                        name ? name : "(null)");
}

/* Each family is recognised by markers no other family's template uses. */
fi_status fi_chat_template_detect(const char *jinja, fi_chat_template_kind *out, fi_error *err) {
    if (!jinja || !*jinja)
        return fi_error_set(err, FI_ERR_UNSUPPORTED,
                            "the model has no chat template (tokenizer.chat_template); choose one with "
                            "--chat-template NAME (supported: " SUPPORTED ")");
    if (strstr(jinja, "<|im_start|>")) *out = FI_CHAT_CHATML;
    else if (strstr(jinja, "<|start_header_id|>") && strstr(jinja, "<|end_header_id|>")) *out = FI_CHAT_LLAMA3;
    else if (strstr(jinja, "<start_of_turn>")) *out = FI_CHAT_GEMMA;
    /* [INST] alone also marks Mistral's format, which differs in spaces and BOS placement. */
    else if (strstr(jinja, "[INST]") && strstr(jinja, "<<SYS>>")) *out = FI_CHAT_LLAMA2;
    else
        return fi_error_set(err, FI_ERR_UNSUPPORTED,
                            "the model's chat template is not one this build recognises (supported: " SUPPORTED
                            "); choose one with --chat-template NAME");
    return FI_OK;
}

/* Extracts "<|im_start|>system\n...<|im_end|>" written as a literal in the template (SmolLM2 adds it
 * when the conversation has no system message). The newline may be written raw or as "\n". */
char *fi_chat_default_system(const char *jinja) {
    static const char open[] = "<|im_start|>system";
    if (!jinja) return NULL;
    for (const char *p = strstr(jinja, open); p; p = strstr(p + 1, open)) {
        const char *s = p + sizeof open - 1;
        if (*s == '\n') s += 1;
        else if (s[0] == '\\' && s[1] == 'n') s += 2;
        else continue;
        const char *e = strstr(s, "<|im_end|>");
        if (!e || e == s) continue;
        /* A literal has no template syntax or string concatenation inside. */
        bool literal = true;
        for (const char *q = s; q < e; q++)
            if (*q == '{' || *q == '}' || *q == '\'' || *q == '"' || *q == '+') literal = false;
        if (!literal) continue;
        size_t n = (size_t)(e - s);
        char *out = malloc(n + 1);
        if (!out) return NULL;
        /* Decode the escapes a jinja string literal may carry. */
        size_t w = 0;
        for (size_t i = 0; i < n; i++) {
            if (s[i] == '\\' && i + 1 < n && (s[i + 1] == 'n' || s[i + 1] == 't' || s[i + 1] == '\\')) {
                out[w++] = s[i + 1] == 'n' ? '\n' : s[i + 1] == 't' ? '\t' : '\\';
                i++;
            } else {
                out[w++] = s[i];
            }
        }
        out[w] = 0;
        return out;
    }
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* A growable string                                                         */
/* ------------------------------------------------------------------------ */

typedef struct sbuf {
    char *data;
    size_t n, cap;
    bool oom;
} sbuf;

static void sb_addn(sbuf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1) cap *= 2;
        char *p = realloc(b->data, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->data = p;
        b->cap = cap;
    }
    memcpy(b->data + b->n, s, n);
    b->n += n;
    b->data[b->n] = 0;
}

static void sb_add(sbuf *b, const char *s) { sb_addn(b, s, strlen(s)); }

static bool is_ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

/* Appends s without leading/trailing whitespace (jinja's trim, Python's strip on ASCII space). */
static void sb_add_trimmed(sbuf *b, const char *s) {
    size_t n = strlen(s), i = 0;
    while (i < n && is_ws(s[i])) i++;
    while (n > i && is_ws(s[n - 1])) n--;
    sb_addn(b, s + i, n - i);
}

/* ------------------------------------------------------------------------ */
/* Formats                                                                   */
/* ------------------------------------------------------------------------ */

static void render_chatml(sbuf *b, const fi_chat_message *m, size_t n, bool gen) {
    for (size_t i = 0; i < n; i++) {
        sb_add(b, "<|im_start|>");
        sb_add(b, m[i].role);
        sb_add(b, "\n");
        sb_add(b, m[i].content);
        sb_add(b, "<|im_end|>\n");
    }
    if (gen) sb_add(b, "<|im_start|>assistant\n");
}

static void render_llama3(sbuf *b, const fi_chat_message *m, size_t n, bool gen) {
    for (size_t i = 0; i < n; i++) {
        sb_add(b, "<|start_header_id|>");
        sb_add(b, m[i].role);
        sb_add(b, "<|end_header_id|>\n\n");
        sb_add_trimmed(b, m[i].content);
        sb_add(b, "<|eot_id|>");
    }
    if (gen) sb_add(b, "<|start_header_id|>assistant<|end_header_id|>\n\n");
}

/* Llama 2: "[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{user} [/INST] {answer} </s><s>[INST] {user} [/INST]".
 * The template ends every user turn with [/INST], so the generation prompt adds nothing. */
static fi_status render_llama2(sbuf *b, const fi_chat_message *m, size_t n, fi_error *err) {
    size_t first = 0;
    const char *system = NULL;
    if (n > 0 && !strcmp(m[0].role, "system")) {
        system = m[0].content;
        first = 1;
    }
    for (size_t i = first; i < n; i++) {
        bool user_turn = (i - first) % 2 == 0;
        const char *role = m[i].role;
        if (user_turn ? strcmp(role, "user") != 0 : strcmp(role, "assistant") != 0)
            return fi_error_set(err, FI_ERR_INVALID,
                                "llama2 chat template: message %zu has role '%s'; after an optional first system "
                                "message, roles must alternate user/assistant",
                                i, role);
        if (user_turn) {
            if (i > first) sb_add(b, "<s>");
            sb_add(b, "[INST] ");
            if (i == first && system) {
                /* The template strips the combined text, so an all-blank user turn eats into it. */
                sbuf c = {0};
                sb_add(&c, "<<SYS>>\n");
                sb_add(&c, system);
                sb_add(&c, "\n<</SYS>>\n\n");
                sb_add(&c, m[i].content);
                if (c.oom) b->oom = true;
                else sb_add_trimmed(b, c.data);
                free(c.data);
            } else {
                sb_add_trimmed(b, m[i].content);
            }
            sb_add(b, " [/INST]");
        } else {
            sb_add(b, " ");
            sb_add_trimmed(b, m[i].content);
            sb_add(b, " </s>");
        }
    }
    return FI_OK;
}

/* Gemma: no system role; the system text opens the first user turn. The assistant is "model". */
static void render_gemma(sbuf *b, const fi_chat_message *m, size_t n, bool gen) {
    sbuf system = {0};
    for (size_t i = 0; i < n; i++) {
        if (!strcmp(m[i].role, "system")) {
            sb_add_trimmed(&system, m[i].content);
            continue;
        }
        bool model = !strcmp(m[i].role, "assistant") || !strcmp(m[i].role, "model");
        sb_add(b, "<start_of_turn>");
        sb_add(b, model ? "model" : m[i].role);
        sb_add(b, "\n");
        if (system.n && !model) {
            sb_addn(b, system.data, system.n);
            sb_add(b, "\n\n");
            system.n = 0;
        }
        sb_add_trimmed(b, m[i].content);
        sb_add(b, "<end_of_turn>\n");
    }
    if (system.oom) b->oom = true;
    free(system.data);
    if (gen) sb_add(b, "<start_of_turn>model\n");
}

fi_status fi_chat_render_ex(fi_chat_template_kind kind, const char *default_system, const fi_chat_message *msgs,
                            size_t n, bool add_generation_prompt, char **out, fi_error *err) {
    *out = NULL;
    if (n && !msgs) return fi_error_set(err, FI_ERR_INVALID, "chat template: NULL messages");
    for (size_t i = 0; i < n; i++)
        if (!msgs[i].role || !msgs[i].content || !msgs[i].role[0])
            return fi_error_set(err, FI_ERR_INVALID, "chat template: message %zu has no role or no content", i);
    /* The default system message goes first when the conversation does not open with one. */
    fi_chat_message *all = NULL;
    if (default_system && (n == 0 || strcmp(msgs[0].role, "system") != 0)) {
        all = malloc((n + 1) * sizeof *all);
        if (!all) return fi_error_set(err, FI_ERR_NOMEM, "chat template: out of memory");
        all[0] = (fi_chat_message){"system", default_system};
        if (n) memcpy(all + 1, msgs, n * sizeof *msgs);
        msgs = all;
        n++;
    }
    sbuf b = {0};
    sb_add(&b, "");
    fi_status st = FI_OK;
    switch (kind) {
    case FI_CHAT_CHATML: render_chatml(&b, msgs, n, add_generation_prompt); break;
    case FI_CHAT_LLAMA3: render_llama3(&b, msgs, n, add_generation_prompt); break;
    case FI_CHAT_LLAMA2: st = render_llama2(&b, msgs, n, err); break;
    case FI_CHAT_GEMMA: render_gemma(&b, msgs, n, add_generation_prompt); break;
    default: st = fi_error_set(err, FI_ERR_INVALID, "chat template: unknown kind %d", (int)kind);
    }
    free(all);
    if (st == FI_OK && b.oom) st = fi_error_set(err, FI_ERR_NOMEM, "chat template: out of memory");
    if (st != FI_OK) {
        free(b.data);
        return st;
    }
    *out = b.data;
    return FI_OK;
}

fi_status fi_chat_render(fi_chat_template_kind kind, const fi_chat_message *msgs, size_t n,
                         bool add_generation_prompt, char **out, fi_error *err) {
    return fi_chat_render_ex(kind, NULL, msgs, n, add_generation_prompt, out, err);
}
