#!/usr/bin/env bash
# Run here, before a GPU session: fill .gpu/ (git-ignored) with what benchmarks/gpu_check.sh needs on a
# GPU machine that reaches no package registry and gets the checkout alone:
#   .gpu/wheels/   the server's dependencies that machine's image lacks (CPython 3.12, manylinux x86-64), and the
#                  unmodified bert-serving-client 1.10.0 (the benchmark's load generator);
#   .gpu/vocab/    all-MiniLM-L6-v2's tokenizer files (its weights stay behind: the benchmark builds random models);
#   .gpu/shared/   the tiny-bert fixtures the GPU tests use (../shared does not travel);
#   .gpu/old/src/  the server before it ran on every core (commit accb208): the benchmark measures it beside this one.
# The device tool then carries it: run(..., carry=[".gpu"]).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
rm -rf .gpu && mkdir -p .gpu/wheels .gpu/vocab .gpu/shared/fixtures
# the versions this venv runs, so the GPU machine runs what the tests here passed with
pins=$($PY -m pip freeze --disable-pip-version-check | grep -iE '^(pyzmq|fastapi|starlette|pydantic|pydantic[-_]core|annotated[-_]types|annotated[-_]doc|typing[-_]inspection|typing[-_]extensions|opentelemetry[-_]api|uvicorn|h11|click|anyio|idna|orjson|google[-_]crc32c|cramjam|swagger[-_]ui[-_]bundle|httptools|setproctitle)==')
platforms=""
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 \
         manylinux_2_5_x86_64 manylinux1_x86_64; do platforms="$platforms --platform $p"; done
# shellcheck disable=SC2086
$PY -m pip download --disable-pip-version-check -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp $platforms -d .gpu/wheels $pins bert-serving-client==1.10.0
vocab=$($PY -c 'from bert_serving.model.loading import default_model_dir; print(default_model_dir())')
for f in vocab.txt tokenizer.json tokenizer_config.json special_tokens_map.json; do cp "$vocab/$f" .gpu/vocab/; done
cp -r ../shared/fixtures/tiny-bert .gpu/shared/fixtures/
mkdir -p .gpu/old && git archive accb208 src | tar -x -C .gpu/old
du -sh .gpu
ls .gpu/wheels
