#!/usr/bin/env bash
# The GPU check: the tests marked `gpu`, then the server-overhead benchmark on CUDA with three model sizes,
# results into benchmarks/results/<date>-<gpu>/ (and into $OUT when that is set, as on the device tool's machines).
#
#   bash benchmarks/gpu_prepare.sh                      # here, once: wheels, vocabulary, fixtures into .gpu/
#   bash benchmarks/gpu_check.sh                        # on the GPU machine, in the repository's root
#   bash benchmarks/gpu_check.sh --dry-run              # anywhere: GPU tests skip, one short CPU round
#   bash benchmarks/gpu_check.sh --smoke                # on the GPU machine: the tests, one short CUDA round
#
# Where torch sees no CUDA device it is a dry run whatever was asked: the tests skip cleanly and the benchmark
# makes one short round on the CPU, so that the script itself is tested (tests/unit/test_gpu_check.py, in CI).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ] && PY=.venv/bin/python
dry=${1:-}

if [ -d .gpu/wheels ] && ! "$PY" -c 'import zmq, fastapi, uvicorn, orjson, google_crc32c' 2>/dev/null; then
  # a machine without a package registry: the dependencies travel as wheels
  site=${TMPDIR:-/tmp}/bert-serving-site
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" \
      $(ls .gpu/wheels/*.whl | grep -v bert_serving_client)
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target "${TMPDIR:-/tmp}/stock-client" .gpu/wheels/bert_serving_client-*.whl
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
  export BERT_SERVING_STOCK_CLIENT="${TMPDIR:-/tmp}/stock-client"
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
[ -d .gpu/vocab ] && export BERT_SERVING_VOCAB_DIR="$PWD/.gpu/vocab"
[ -d .gpu/shared ] && export BERT_SERVING_SHARED="$PWD/.gpu/shared"

gpu=$("$PY" -c 'import torch; print(torch.cuda.get_device_name(0).replace(" ", "-") if torch.cuda.is_available() else "")')
if [ -z "$gpu" ] || [ "$dry" = "--dry-run" ]; then
  out=${OUT:-$(mktemp -d)}
  echo "dry run (${gpu:-no CUDA device}): results in $out"
  "$PY" -m pytest -q -m gpu tests/gpu -p no:cacheprovider 2>&1 | tee "$out/gpu-tests.txt"
  "$PY" benchmarks/overhead.py --quick --no-http --model negligible --out "$out"
  exit 0
fi

if [ "$dry" = "--smoke" ]; then
  out=${OUT:-$(mktemp -d)}
  "$PY" -m pytest -q -m gpu tests/gpu -p no:cacheprovider -rs -x 2>&1 | tee "$out/gpu-tests.txt" || true
  "$PY" benchmarks/overhead.py --device cuda --quick --model negligible --model minilm-shaped --out "$out" 2>&1 \
      | grep -v "Loading weights\|Writing model" | tee "$out/overhead.log"
  exit 0
fi

out=benchmarks/results/$(date +%Y-%m-%d)-$gpu
mkdir -p "$out"
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  "$PY" -c 'import torch, transformers; print("torch", torch.__version__, "cuda", torch.version.cuda, "transformers", transformers.__version__)'
  nproc
} > "$out/machine.txt" 2>&1
set +e
"$PY" -m pytest -q -m gpu tests/gpu -p no:cacheprovider -rs 2>&1 | tee "$out/gpu-tests.txt"
tests=${PIPESTATUS[0]}
# the server before it ran on every core, beside this one in the same rounds (gpu_prepare.sh exports it)
old=(); [ -d .gpu/old/src ] && old=(--variant "old=@$PWD/.gpu/old/src")
"$PY" benchmarks/overhead.py --device cuda --rounds 1 --seconds 2 --singles 200 \
    --model negligible --model minilm-shaped --model bert-base-shaped --clients 32 --clients 64 --clients 128 \
    "${old[@]}" --out "$out" 2>&1 | grep -v "Loading weights\|Writing model" | tee "$out/overhead.log"
bench=${PIPESTATUS[0]}
set -e
if [ -n "${OUT:-}" ]; then cp "$out"/* "$OUT"/; fi
echo "GPU tests exit $tests, benchmark exit $bench; results in $out"
exit $(( tests || bench ))
