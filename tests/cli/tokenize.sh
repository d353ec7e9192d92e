#!/usr/bin/env bash
# flexinfer tokenize: output formats, --file batch mode with C escapes, and bad input (exit 2).
# The model-dependent checks are skipped when the default model is absent.
set -uo pipefail
bin="$1"
root="${FI_SOURCE_DIR:-$(dirname "$0")/../..}"
model="$root/models/SmolLM2-135M-Instruct.Q4_1.gguf"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0
fail() { echo "FAIL: $*" >&2; fails=$((fails + 1)); }

expect_bad() { # NAME STDERR-SUBSTRING ARGS...
  local name="$1" want="$2"
  shift 2
  "$bin" tokenize "$@" > "$tmp/stdout" 2> "$tmp/stderr"
  local rc=$?
  [ "$rc" -eq 2 ] || { fail "$name: exit code $rc, expected 2"; return; }
  grep -qF -- "$want" "$tmp/stderr" || fail "$name: stderr lacks '$want': $(cat "$tmp/stderr")"
  [ ! -s "$tmp/stdout" ] || fail "$name: unexpected stdout"
}

expect_bad "no text" "either TEXT or --file" -m "$model"
expect_bad "unknown option" "unknown option --bogus" --bogus x
expect_bad "missing model" "$tmp/none.gguf" -m "$tmp/none.gguf" hello
expect_bad "-m without value" "needs a value" -m
printf 'not a gguf file at all, just text padding padding padding\n' > "$tmp/bad.gguf"
expect_bad "not a gguf" "" -m "$tmp/bad.gguf" hello

if [ ! -f "$model" ]; then
  echo "skipped model checks: $model not found (run scripts/get_model.sh)"
  exit $((fails > 0))
fi

# Ids and pieces agree with each other: --ids-only prints the ids of the 'id<TAB>piece' lines.
"$bin" tokenize -m "$model" $'Hello world\n<|im_end|>' > "$tmp/pieces" || fail "pieces run"
"$bin" tokenize -m "$model" --ids-only $'Hello world\n<|im_end|>' > "$tmp/ids" || fail "ids run"
[ "$(cut -f1 "$tmp/pieces" | tr '\n' ' ' | sed 's/ $//')" = "$(cat "$tmp/ids")" ] || fail "ids differ between formats"
grep -qP '^2\t<\|im_end\|>$' "$tmp/pieces" || fail "<|im_end|> not parsed as token 2"
grep -qP '\t\\n$' "$tmp/pieces" || fail "newline piece not escaped as \\n"
# --no-special spells the control text in ordinary tokens.
[ "$("$bin" tokenize -m "$model" --ids-only '<|im_end|>')" = "2" ] || fail "<|im_end|> with specials"
[ "$("$bin" tokenize -m "$model" --ids-only --no-special '<|im_end|>')" != "2" ] || fail "--no-special still parsed"

# --file: one line of ids per input line, escapes decoded, same ids as the TEXT form.
printf 'Hello world\\n<|im_end|>\n\ncaf\\xc3\\xa9 \\\\ \\t end\n' > "$tmp/in.txt"
"$bin" tokenize -m "$model" --file "$tmp/in.txt" > "$tmp/batch" || fail "--file run"
[ "$(wc -l < "$tmp/batch")" -eq 3 ] || fail "--file printed $(wc -l < "$tmp/batch") lines, expected 3"
[ "$(sed -n 1p "$tmp/batch")" = "$(cat "$tmp/ids")" ] || fail "--file line 1 differs from the TEXT form"
[ -z "$(sed -n 2p "$tmp/batch")" ] || fail "empty line should give an empty id line"
[ "$(sed -n 3p "$tmp/batch")" = "$("$bin" tokenize -m "$model" --ids-only $'caf\xc3\xa9 \\ \t end')" ] || fail "--file escapes"
printf 'bad \\q escape\n' > "$tmp/bad.txt"
expect_bad "bad escape" "bad escape at column 5" -m "$model" --file "$tmp/bad.txt"
expect_bad "missing file" "cannot open" -m "$model" --file "$tmp/none.txt"

[ "$fails" -eq 0 ] && echo "tokenize CLI: all checks passed"
exit $((fails > 0))
