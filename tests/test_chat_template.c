/* Chat templates: each format rendered against strings written out by hand from the families'
 * published templates; detection on template snippets and on the real SmolLM2 template. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "model/chat_template.h"
#include "model/gguf.h"

static const fi_chat_message CONV[] = {
    {"system", "Be brief."},
    {"user", "Hi!"},
    {"assistant", "Hello."},
    {"user", "  What is 2+2?\n"},
};
#define N_CONV (sizeof CONV / sizeof CONV[0])

static void expect_render(fi_chat_template_kind kind, const char *default_system, const fi_chat_message *m, size_t n,
                          bool gen, const char *want) {
    char *out = NULL;
    fi_error err = {0};
    if (fi_chat_render_ex(kind, default_system, m, n, gen, &out, &err) != FI_OK)
        fail_msg("render %s: %s", fi_chat_template_name(kind), err.msg);
    if (strcmp(out, want) != 0) {
        printf("got:\n%s\n---\nwant:\n%s\n", out, want);
        free(out);
        fail_msg("render %s differs", fi_chat_template_name(kind));
    }
    free(out);
}

static void test_chatml(void **state) {
    (void)state;
    expect_render(FI_CHAT_CHATML, NULL, CONV, N_CONV, true,
                  "<|im_start|>system\nBe brief.<|im_end|>\n"
                  "<|im_start|>user\nHi!<|im_end|>\n"
                  "<|im_start|>assistant\nHello.<|im_end|>\n"
                  "<|im_start|>user\n  What is 2+2?\n<|im_end|>\n"
                  "<|im_start|>assistant\n");
    expect_render(FI_CHAT_CHATML, NULL, CONV + 1, 1, false, "<|im_start|>user\nHi!<|im_end|>\n");
    /* A default system message goes first only when the conversation has none. */
    expect_render(FI_CHAT_CHATML, "Default.", CONV + 1, 1, true,
                  "<|im_start|>system\nDefault.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n");
    expect_render(FI_CHAT_CHATML, "Default.", CONV, 2, false,
                  "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n");
    expect_render(FI_CHAT_CHATML, NULL, NULL, 0, true, "<|im_start|>assistant\n");
}

static void test_llama3(void **state) {
    (void)state;
    expect_render(FI_CHAT_LLAMA3, NULL, CONV, N_CONV, true,
                  "<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
                  "<|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|>"
                  "<|start_header_id|>assistant<|end_header_id|>\n\nHello.<|eot_id|>"
                  "<|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>"
                  "<|start_header_id|>assistant<|end_header_id|>\n\n");
}

static void test_llama2(void **state) {
    (void)state;
    expect_render(FI_CHAT_LLAMA2, NULL, CONV, N_CONV, true,
                  "[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi! [/INST] Hello. </s><s>[INST] What is 2+2? [/INST]");
    expect_render(FI_CHAT_LLAMA2, NULL, CONV + 1, 1, true, "[INST] Hi! [/INST]");
    /* Roles must alternate. */
    const fi_chat_message bad[] = {{"user", "a"}, {"user", "b"}};
    char *out = NULL;
    fi_error err = {0};
    assert_int_equal(fi_chat_render(FI_CHAT_LLAMA2, bad, 2, true, &out, &err), FI_ERR_INVALID);
    assert_null(out);
    assert_non_null(strstr(err.msg, "alternate"));
}

static void test_gemma(void **state) {
    (void)state;
    expect_render(FI_CHAT_GEMMA, NULL, CONV, N_CONV, true,
                  "<start_of_turn>user\nBe brief.\n\nHi!<end_of_turn>\n"
                  "<start_of_turn>model\nHello.<end_of_turn>\n"
                  "<start_of_turn>user\nWhat is 2+2?<end_of_turn>\n"
                  "<start_of_turn>model\n");
    expect_render(FI_CHAT_GEMMA, NULL, CONV + 1, 1, false, "<start_of_turn>user\nHi!<end_of_turn>\n");
}

static void test_bad_messages(void **state) {
    (void)state;
    const fi_chat_message bad[] = {{"user", NULL}};
    char *out = NULL;
    fi_error err = {0};
    assert_int_equal(fi_chat_render(FI_CHAT_CHATML, bad, 1, true, &out, &err), FI_ERR_INVALID);
    assert_null(out);
    assert_int_equal(fi_chat_render((fi_chat_template_kind)99, CONV, 1, true, &out, &err), FI_ERR_INVALID);
}

static void test_by_name(void **state) {
    (void)state;
    static const char *const names[] = {"chatml", "llama3", "llama2", "gemma"};
    static const fi_chat_template_kind kinds[] = {FI_CHAT_CHATML, FI_CHAT_LLAMA3, FI_CHAT_LLAMA2, FI_CHAT_GEMMA};
    for (int i = 0; i < 4; i++) {
        fi_chat_template_kind k;
        fi_error err = {0};
        assert_int_equal(fi_chat_template_by_name(names[i], &k, &err), FI_OK);
        assert_int_equal(k, kinds[i]);
        assert_string_equal(fi_chat_template_name(k), names[i]);
    }
    fi_chat_template_kind k;
    fi_error err = {0};
    assert_int_equal(fi_chat_template_by_name("vicuna", &k, &err), FI_ERR_INVALID);
    assert_non_null(strstr(err.msg, "vicuna"));
    for (int i = 0; i < 4; i++) assert_non_null(strstr(err.msg, names[i]));
}

/* Snippets in the style of each family's published template. */
static void test_detect_snippets(void **state) {
    (void)state;
    static const struct { const char *jinja; fi_chat_template_kind kind; } cases[] = {
        {"{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
         "'<|im_end|>' + '\\n'}}{% endfor %}",
         FI_CHAT_CHATML},
        {"{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ "
         "message['content'] | trim + '<|eot_id|>' %}",
         FI_CHAT_LLAMA3},
        {"{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
         "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
         "{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}",
         FI_CHAT_LLAMA2},
        {"{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}", FI_CHAT_GEMMA},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        fi_chat_template_kind k = (fi_chat_template_kind)-1;
        fi_error err = {0};
        assert_int_equal(fi_chat_template_detect(cases[i].jinja, &k, &err), FI_OK);
        assert_int_equal(k, cases[i].kind);
    }
    fi_chat_template_kind k;
    fi_error err = {0};
    assert_int_equal(fi_chat_template_detect("{{ 'USER: ' + message['content'] }}", &k, &err), FI_ERR_UNSUPPORTED);
    assert_non_null(strstr(err.msg, "chatml"));
    assert_non_null(strstr(err.msg, "gemma"));
    /* Mistral's [INST] format without <<SYS>> is not Llama 2's: refused rather than rendered wrongly. */
    assert_int_equal(fi_chat_template_detect("{{ '[INST] ' + message['content'] + ' [/INST]' }}{{ message['content'] + "
                                             "eos_token }}",
                                             &k, &err),
                     FI_ERR_UNSUPPORTED);
    assert_int_equal(fi_chat_template_detect(NULL, &k, &err), FI_ERR_UNSUPPORTED);
    assert_int_equal(fi_chat_template_detect("", &k, &err), FI_ERR_UNSUPPORTED);
    /* Default system extraction: written raw or with a "\n" escape; none for a plain template. */
    char *sys = fi_chat_default_system("{{ '<|im_start|>system\\nYou are X<|im_end|>\\n' }}");
    assert_non_null(sys);
    assert_string_equal(sys, "You are X");
    free(sys);
    assert_null(fi_chat_default_system(cases[0].jinja));
}

static void test_real_smollm2_template(void **state) {
    (void)state;
    char path[1024];
    const char *env = getenv("FI_MODEL");
    const char *data = getenv("FI_TEST_DATA");
    if (env) snprintf(path, sizeof path, "%s", env);
    else snprintf(path, sizeof path, "%s/../../models/SmolLM2-135M-Instruct.Q4_1.gguf", data ? data : "tests/data");
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        printf("[test_real_smollm2_template] skipped: %s not found (run scripts/get_model.sh)\n", path);
        skip();
    }
    fclose(fp);
    fi_gguf *g = NULL;
    fi_error err = {0};
    if (fi_gguf_open(path, &g, &err) != FI_OK) fail_msg("%s", err.msg);
    fi_gguf_str s;
    assert_true(fi_gguf_get_str(g, "tokenizer.chat_template", &s));
    char *jinja = malloc(s.len + 1);
    memcpy(jinja, s.data, s.len);
    jinja[s.len] = 0;
    fi_chat_template_kind k;
    assert_int_equal(fi_chat_template_detect(jinja, &k, &err), FI_OK);
    assert_int_equal(k, FI_CHAT_CHATML);
    char *sys = fi_chat_default_system(jinja);
    assert_non_null(sys);
    assert_string_equal(sys, "You are a helpful AI assistant named SmolLM, trained by Hugging Face");
    /* What the template itself produces for one user message (worked out from its text). */
    expect_render(k, sys, CONV + 1, 1, true,
                  "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
                  "<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n");
    free(sys);
    free(jinja);
    fi_gguf_close(g);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_chatml),         cmocka_unit_test(test_llama3),
        cmocka_unit_test(test_llama2),         cmocka_unit_test(test_gemma),
        cmocka_unit_test(test_bad_messages),   cmocka_unit_test(test_by_name),
        cmocka_unit_test(test_detect_snippets), cmocka_unit_test(test_real_smollm2_template),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
