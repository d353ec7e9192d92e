#!/usr/bin/env bash
# Installs the llama.cpp peer used by the agreement tests and benchmarks: llama-cpp-python
# (pinned) into the system python3. Idempotent: does nothing when the pinned version imports.
# The first install compiles llama.cpp (several minutes on 2 cores); pip keeps the built wheel
# in its cache (~/.cache/pip, outside the repo), so later installs on the machine are quick.
#   usage: scripts/peer_setup.sh [--check]   (--check: exit 0 if installed, 1 if not; installs nothing)
set -euo pipefail
cd "$(dirname "$0")/.."

version=0.3.36
installed() {
  python3 -c "import llama_cpp, sys; sys.exit(0 if llama_cpp.__version__ == '$version' else 1)" 2>/dev/null
}

if installed; then
  echo "peer_setup: llama-cpp-python $version is installed"
  exit 0
fi
if [ "${1:-}" = "--check" ]; then
  echo "peer_setup: llama-cpp-python $version is not installed (run scripts/peer_setup.sh)" >&2
  exit 1
fi
command -v c++ >/dev/null || { echo "peer_setup: needs a C++ compiler (apt-get install build-essential)" >&2; exit 1; }
command -v cmake >/dev/null || { echo "peer_setup: needs cmake" >&2; exit 1; }
echo "peer_setup: installing llama-cpp-python==$version (builds llama.cpp once; minutes)"
pip_install() { python3 -m pip install -q "$@" || python3 -m pip install -q --break-system-packages "$@"; }
pip_install "llama-cpp-python==$version"
installed || { echo "peer_setup: llama_cpp $version still does not import" >&2; exit 1; }
echo "peer_setup: llama-cpp-python $version ready"
