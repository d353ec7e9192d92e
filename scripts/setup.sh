#!/usr/bin/env bash
# One-time (idempotent) set-up on a fresh Debian machine:
#   1. installs the Debian packages the build needs, when missing (as root or via sudo);
#   2. installs the Python packages the tests and benchmarks use (numpy), when missing;
#   3. builds flexinfer (Release) into build/;
#   4. fetches the default model (SmolLM2-135M-Instruct Q4_1) into models/ unless --no-model.
set -euo pipefail
cd "$(dirname "$0")/.."

want_model=1
for arg in "$@"; do
  case "$arg" in
    --no-model) want_model=0 ;;
    *) echo "setup.sh: unknown option '$arg' (known: --no-model)" >&2; exit 2 ;;
  esac
done

packages=(build-essential cmake pkg-config libcmocka-dev libpcre2-dev python3 python3-pip unzip)
missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  if [ "$(id -u)" -eq 0 ]; then sudo=""; elif command -v sudo >/dev/null; then sudo="sudo"; else
    echo "setup: need root or sudo to install: ${missing[*]}" >&2; exit 1; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! python3 -c "import numpy" 2>/dev/null; then
  echo "setup: installing numpy"
  python3 -m pip install -q numpy 2>/dev/null || python3 -m pip install -q --break-system-packages numpy
fi

cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)" >/dev/null
echo "setup: built build/flexinfer"

if [ "$want_model" = 1 ]; then
  bash scripts/get_model.sh
fi
