#!/bin/bash
# Bulk scoring on the GPU machine: the local engine on 200,000 posts at several batch sizes.
# Carry folder gpu/ as for gpu_sweep.sh, plus gpu/run/<a lora run> and gpu/posts-200k.csv.gz
# (scripts/bulk_bench.py writes the CSV). run(command="bash scripts/gpu_bulk.sh", carry=["gpu"])
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site gpu/whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 WEIBO_SENTI_NO_PROGRESS=1
gunzip -f gpu/posts-200k.csv.gz
RUN=$(ls -d gpu/run/*/ | head -1)
nvidia-smi --query-gpu=name --format=csv,noheader
for bs in 16 64 256; do
  python3 -m weibo_senti.cli predict "$RUN" --base-model gpu/shared/models/gpt2-mini-zh \
    --input gpu/posts-200k.csv --output /tmp/o-$bs.csv --batch-size $bs 2>&1 | tail -1
done
python3 -m weibo_senti.cli predict "$RUN" --base-model gpu/shared/models/gpt2-mini-zh \
  --input gpu/posts-200k.csv --output /tmp/o-fp32.csv --batch-size 256 --precision fp32 2>&1 | tail -1
python3 - <<'PY'
import csv
a = list(csv.DictReader(open("/tmp/o-256.csv", encoding="utf-8")))
b = list(csv.DictReader(open("/tmp/o-fp32.csv", encoding="utf-8")))
same = sum(x["pred_label"] == y["pred_label"] for x, y in zip(a, b))
print(f"bf16 vs fp32 labels agree on {same}/{len(a)} rows")
PY
