#!/usr/bin/env bash
# flexinfer attn against attention computed in float64 numpy with independently
# implemented mask and score semantics (tests/cli/attn_numpy_check.py; seed printed,
# tolerances stated there). Needs numpy (scripts/setup.sh installs it).
set -euo pipefail
bin="$1"
here="$(cd "$(dirname "$0")" && pwd)"
exec python3 "$here/attn_numpy_check.py" "$bin"
