#!/bin/bash
# CUDA-path checks: the adapter run that failed in the sweep, then the unit tests that train.
# Needs a carry folder gpu/ (listed in .git/info/exclude): gpu/whl with the wheels of
# transformers 5.23.0, peft 0.21.2 and emoji (pip download --no-deps ... -d gpu/whl) and
# gpu/shared = ../shared's models/gpt2-mini-zh plus data/{weibo_senti_100k,weibo2018,
# nlpcc_emotion,smp2020_usual} with each csv gzipped (64 MiB travel limit). Run through the
# device tool: run(command="bash scripts/gpu_check.sh", carry=["gpu"]).
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site gpu/whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1 OMP_NUM_THREADS=4 HF_HUB_OFFLINE=1
for f in gpu/shared/data/*/*.gz; do gunzip -f "$f"; done
python3 scripts/recipe_sweep.py --shared gpu/shared --seeds 42 --runs /tmp/runs --report /tmp/ad --methods adapter --train-rows 400 --epochs 1 2>&1 | tr "\r" "\n" | grep -v "it/s\]" | tail -4
python3 -m pytest -q -W ignore --tb=line -p no:cacheprovider tests/test_train.py tests/test_clients.py tests/test_modeling.py tests/test_calibrate.py tests/test_bank.py tests/test_explain.py 2>&1 | grep -v "LOAD REPORT\|MISSING\|^Key\|^---\|^Notes\|^$\|^score" | tail -40
