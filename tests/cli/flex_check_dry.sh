#!/usr/bin/env bash
# scripts/flex_check.py --dry-run: the FlexAttention cross-check's own logic without torch
# (array generation, flexinfer runs, the float64 reference, the markdown table), so the
# script that runs once on the GPU machine keeps working. Every case must agree.
set -euo pipefail
bin="$1"
here="$(cd "$(dirname "$0")" && pwd)"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 "$here/../../scripts/flex_check.py" --dry-run --flexinfer "$bin" --threads 2 --out "$tmp/flex_check.md"
grep -qF '| causal & (document \| generated) |' "$tmp/flex_check.md"
grep -qE "^- result: ([0-9]+) of \1 cases pass" "$tmp/flex_check.md"
