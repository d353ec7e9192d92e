/* flexinfer run: generate text from a prompt, streaming tokens to stdout as they come. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "commands.h"
#include "decode/generate.h"
#include "gen_common.h"
#include "model/chat_template.h"
#include "model/llama.h"
#include "model/tokenizer.h"

static void usage(FILE *f) {
    fprintf(f, "usage: flexinfer run [-m MODEL] -p PROMPT [options]\n"
               "  -p PROMPT              the prompt (with --chat: the user message)\n"
               "  --chat                 wrap the prompt in the model's chat template\n");
    gen_options_usage(f);
}

static bool emit_stdout(const char *text, size_t len, void *ctx) {
    (void)ctx;
    fwrite(text, 1, len, stdout);
    fflush(stdout);
    return true;
}

static void progress(int64_t done, int64_t total, void *ctx) {
    (void)ctx;
    fprintf(stderr, "\rprefill %lld/%lld", (long long)done, (long long)total);
    if (done == total) fprintf(stderr, "\r\033[K");
}

int cmd_run(int argc, char **argv) {
    gen_options o;
    gen_options_init(&o);
    for (int i = 1; i < argc;) {
        int r = gen_options_parse(&o, argc, argv, &i, "run");
        if (r < 0) return 2;
        if (r > 0) continue;
        if (!strcmp(argv[i], "-p") || !strcmp(argv[i], "--prompt")) {
            if (i + 1 >= argc) {
                fprintf(stderr, "flexinfer run: option -p needs a value\n");
                return 2;
            }
            o.prompt = argv[i + 1];
            i += 2;
        } else if (!strcmp(argv[i], "--chat")) {
            o.chat = true;
            i++;
        } else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "flexinfer run: unknown option '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if (!o.prompt) {
        fprintf(stderr, "flexinfer run: -p PROMPT is required\n");
        usage(stderr);
        return 2;
    }
    if (!o.seed_given) o.sp.seed = (uint64_t)time(NULL) ^ ((uint64_t)clock() << 32);

    fi_model *model = NULL;
    fi_session *sess = NULL;
    fi_sampler *smp = NULL;
    int32_t *ids = NULL;
    float *logits = NULL;
    char *text = NULL, *def_system = NULL;
    double load_ms = 0;
    int rc = gen_load(&o, "run", &model, &load_ms);
    if (rc) return rc;
    const fi_tokenizer *tok = fi_llama_tokenizer(model);
    fi_error err = {0};
    rc = 1;

    const char *prompt = o.prompt;
    if (o.chat) {
        fi_chat_template_kind kind;
        int r = gen_template(&o, model, "run", &kind, &def_system);
        if (r) {
            rc = r;
            goto done;
        }
        fi_chat_message msgs[2];
        size_t nm = 0;
        const char *sys = o.system ? o.system : def_system;
        if (sys) msgs[nm++] = (fi_chat_message){"system", sys};
        msgs[nm++] = (fi_chat_message){"user", o.prompt};
        if (fi_chat_render(kind, msgs, nm, true, &text, &err) != FI_OK) {
            fprintf(stderr, "flexinfer run: %s\n", err.msg);
            goto done;
        }
        prompt = text;
    }
    size_t n_ids = 0;
    if (fi_tokenizer_encode(tok, prompt, strlen(prompt), true, true, &ids, &n_ids, &err) != FI_OK) {
        fprintf(stderr, "flexinfer run: %s\n", err.msg);
        goto done;
    }
    if (n_ids == 0) {
        fprintf(stderr, "flexinfer run: the prompt has no tokens\n");
        rc = 2;
        goto done;
    }
    if (gen_session(&o, model, "run", &sess)) goto done;
    if (fi_sampler_create(&o.sp, fi_model_n_vocab(model), &smp, &err) != FI_OK) {
        fprintf(stderr, "flexinfer run: %s\n", err.msg);
        rc = 2;
        goto done;
    }
    logits = malloc((size_t)fi_model_n_vocab(model) * sizeof(float));
    if (!logits) goto done;

    fi_logits_source src = fi_logits_source_session(sess, model);
    fi_generate_params gp = {.max_tokens = o.n_predict, .stop = o.stop, .n_stop = (size_t)o.n_stop,
                             .stop_at_eog = true};
    if (gen_stderr_tty() && (int64_t)n_ids > o.n_batch) {
        gp.prefill_chunk = o.n_batch;
        gp.progress = progress;
    }
    fi_generate_stats stats;
    fi_status st = fi_generate(&src, smp, tok, ids, n_ids, &gp, logits, emit_stdout, NULL, &stats, &err);
    if (st != FI_OK) {
        fprintf(stderr, "\nflexinfer run: %s\n", err.msg);
        rc = st == FI_ERR_INVALID ? 2 : 1;
        goto done;
    }
    printf("\n");
    fflush(stdout);
    if (o.verbose) {
        static const char *reasons[] = {"none", "end of generation", "stop string", "max tokens", "context full", "caller"};
        fprintf(stderr, "load: %.1f ms\n", load_ms);
        fprintf(stderr, "prefill: %lld tokens in %.1f ms (%.1f tok/s)\n", (long long)stats.n_prompt,
                stats.prefill_ms, stats.prefill_ms > 0 ? stats.n_prompt * 1e3 / stats.prefill_ms : 0.0);
        fprintf(stderr, "decode: %lld tokens in %.1f ms (%.1f tok/s)\n", (long long)stats.n_generated,
                stats.decode_ms, stats.decode_ms > 0 ? stats.n_generated * 1e3 / stats.decode_ms : 0.0);
        fprintf(stderr, "stopped: %s; seed %llu; threads %d; context %lld\n", reasons[stats.reason],
                (unsigned long long)o.sp.seed, o.threads, (long long)fi_session_n_ctx(sess));
        fprintf(stderr, "peak RSS: %.1f MiB\n", gen_peak_rss_mib());
    }
    rc = 0;
done:
    free(logits);
    free(ids);
    free(text);
    free(def_system);
    fi_sampler_free(smp);
    fi_session_free(sess);
    fi_model_free(model);
    return rc;
}
