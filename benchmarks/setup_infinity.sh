#!/usr/bin/env bash
# A venv with infinity-emb (michaelfeil/infinity), for `bench.py --infinity benchmarks/.venv-infinity`.
# Kept apart: it pins transformers 4 and sentence-transformers 3. CPU torch first, as everywhere.
set -euo pipefail
venv="${1:-$(dirname "$0")/.venv-infinity}"
test -x "$venv/bin/python" || python3 -m venv "$venv"
"$venv/bin/pip" install -q torch==2.13.0
"$venv/bin/pip" install -q "infinity-emb[server,torch]==0.0.78"
echo "infinity-emb installed in $venv"
