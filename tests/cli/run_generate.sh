#!/usr/bin/env bash
# `flexinfer run` / `chat` / `logits` end to end: exit codes and messages for bad input, the same
# text for the same seed across thread counts, stop strings, chat over a pipe.
set -u
bin=$1
src=${FI_SOURCE_DIR:-$(dirname "$0")/../..}
model=$src/models/SmolLM2-135M-Instruct.Q4_1.gguf
fail=0
check() { if ! eval "$2"; then echo "FAIL: $1"; fail=1; fi; }

out=$("$bin" run -p hi --temp -1 -m "$model" 2>&1); rc=$?
check "negative temp is refused with exit 2" '[ $rc -eq 2 ] && grep -q "bad value" <<<"$out"'
out=$("$bin" run -m "$model" 2>&1); rc=$?
check "missing -p is refused" '[ $rc -eq 2 ] && grep -q -- "-p PROMPT is required" <<<"$out"'
out=$("$bin" run -m /nonexistent.gguf -p hi 2>&1); rc=$?
check "missing model file gives exit 2" '[ $rc -eq 2 ]'
out=$("$bin" logits -m "$model" --tokens "1 x" --out /tmp/x.npy 2>&1); rc=$?
check "bad --tokens refused" '[ $rc -eq 2 ]'

if [ ! -f "$model" ]; then
  echo "SKIP (model parts): $model is missing (scripts/get_model.sh)"
  exit $fail
fi
out=$("$bin" run -m "$model" -p "Hello" -n 500 -c 64 2>&1); rc=$?
check "context limit message" '[ $rc -eq 2 ] && grep -q "prompt of 1 tokens plus -n 500 exceeds the context of 64 (-c)" <<<"$out"'
a=$("$bin" run -m "$model" -p "Write a poem about the sea." --chat -n 24 --seed 7 -t 1 2>/dev/null)
b=$("$bin" run -m "$model" -p "Write a poem about the sea." --chat -n 24 --seed 7 -t 2 2>/dev/null)
check "same seed, 1 vs 2 threads: same text" '[ -n "$a" ] && [ "$a" = "$b" ]'
g=$("$bin" run -m "$model" -p "The capital of France is" -n 24 --temp 0 2>/dev/null)
check "greedy continuation mentions Paris" 'grep -q "Paris" <<<"$g"'
s=$("$bin" run -m "$model" -p "The capital of France is" -n 24 --temp 0 --stop "Paris" 2>/dev/null)
check "stop string cuts before it" '! grep -q "Paris" <<<"$s" && [ ${#s} -lt ${#g} ]'
c=$(printf 'What is the capital of France?\n/reset\n/quit\nnever read\n' | "$bin" chat -m "$model" -n 16 --temp 0 2>&1)
check "chat over a pipe answers, resets and quits" '[ -n "$(head -n1 <<<"$c")" ] && grep -q "conversation reset" <<<"$c" && [ $(wc -l <<<"$c") -eq 2 ]'
tmp=$(mktemp -d)
"$bin" logits -m "$model" --tokens "1 504 3458 282" --out "$tmp/l.npy" && python3 - "$tmp" <<'PY' || fail=1
import sys, numpy as np
l = np.load(sys.argv[1] + "/l.npy"); t = np.load(sys.argv[1] + "/l.tokens.npy")
assert l.shape == (4, 49152) and l.dtype == np.float32 and list(t) == [1, 504, 3458, 282], (l.shape, t)
assert np.isfinite(l).all()
PY
rm -rf "$tmp"
exit $fail
