#!/usr/bin/env bash
# The built-in demo: set up, then track the flows of a capture shipped with the repo and
# print them as a table (one line per ended flow, then a summary).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$here/scripts/setup.sh"
cd "$here"
capture="${1:-tests/data/zeek__wikipedia.pcap}"
echo "flowscope pcap $capture" >&2
exec .venv/bin/flowscope pcap --format table "$capture"
