/* Chat templates: the model's jinja template text (tokenizer.chat_template) is recognised as one of a few
 * known formats by distinctive substrings, then rendered by C code (no jinja interpreter). */
#ifndef FI_MODEL_CHAT_TEMPLATE_H
#define FI_MODEL_CHAT_TEMPLATE_H

#include <stdbool.h>
#include <stddef.h>

#include "flexinfer.h"

typedef enum fi_chat_template_kind { FI_CHAT_CHATML, FI_CHAT_LLAMA3, FI_CHAT_LLAMA2, FI_CHAT_GEMMA } fi_chat_template_kind;
typedef struct fi_chat_message { const char *role; const char *content; } fi_chat_message;

/* Names accepted by fi_chat_template_by_name: "chatml", "llama3", "llama2", "gemma". */
const char *fi_chat_template_name(fi_chat_template_kind kind);
fi_status fi_chat_template_detect(const char *jinja, fi_chat_template_kind *out, fi_error *err);
fi_status fi_chat_template_by_name(const char *name, fi_chat_template_kind *out, fi_error *err); /* error lists names */
/* Renders messages (+ the assistant prefix if add_generation_prompt) into a malloc'd string, exactly the
 * messages given. The BOS token the templates open with is not written: encode the result with
 * add_special (the tokenizer adds BOS per the model's add_bos) and parse_special.
 * chatml:  <|im_start|>ROLE\nCONTENT<|im_end|>\n ...            gen: <|im_start|>assistant\n
 * llama3:  <|start_header_id|>ROLE<|end_header_id|>\n\nTRIMMED<|eot_id|> ...
 *                                           gen: <|start_header_id|>assistant<|end_header_id|>\n\n
 * llama2:  [INST] <<SYS>>\nSYS\n<</SYS>>\n\nUSER [/INST] ANSWER </s><s>[INST] USER [/INST]  (gen: nothing;
 *          roles must alternate user/assistant after an optional first system message)
 * gemma:   <start_of_turn>user\nSYS\n\nUSER<end_of_turn>\n<start_of_turn>model\n...  (system folded
 *          into the first user turn; "assistant" is "model")   gen: <start_of_turn>model\n */
fi_status fi_chat_render(fi_chat_template_kind kind, const fi_chat_message *msgs, size_t n,
                         bool add_generation_prompt, char **out, fi_error *err);
/* Same, with a default system message put first when msgs does not start with a "system" one (the
 * behaviour of templates such as SmolLM2's; see fi_chat_default_system). default_system may be NULL. */
fi_status fi_chat_render_ex(fi_chat_template_kind kind, const char *default_system, const fi_chat_message *msgs,
                            size_t n, bool add_generation_prompt, char **out, fi_error *err);
/* The default system prompt a template inserts when the conversation has none, extracted from the jinja
 * text (malloc'd, caller frees), or NULL if the template has none. */
char *fi_chat_default_system(const char *jinja);

#endif
