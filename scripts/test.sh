#!/usr/bin/env bash
# Set up (idempotent) and run the whole test suite. Root tests (BPF, netns) run when root;
# with FLOWSCOPE_REQUIRE_BPF=1 a missing BPF capability fails them instead of skipping.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$here/scripts/setup.sh"
cd "$here"
exec .venv/bin/python -m pytest -q "$@"
