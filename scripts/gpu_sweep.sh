#!/bin/bash
# GPU sweep of training levers (issue 11). Runs on the device machine from the repo root.
# Needs a carry folder gpu/ (listed in .git/info/exclude): gpu/whl with the wheels of
# transformers 5.23.0, peft 0.21.2 and emoji (pip download --no-deps ... -d gpu/whl) and
# gpu/shared = ../shared's models/gpt2-mini-zh plus data/{weibo_senti_100k,weibo2018,
# nlpcc_emotion,smp2020_usual} with each csv gzipped (64 MiB travel limit). Run through the
# device tool: run(command="bash scripts/gpu_sweep.sh", carry=["gpu"]).
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site gpu/whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2 HF_HUB_OFFLINE=1
for f in gpu/shared/data/*/*.gz; do gunzip -f "$f"; done
python3 -c "import torch, transformers, peft; print(torch.__version__, transformers.__version__, peft.__version__, torch.cuda.get_device_name())"
nvidia-smi --query-gpu=name,memory.used --format=csv
S="python3 scripts/recipe_sweep.py --shared gpu/shared --seeds 42 43 --runs /tmp/runs"
mkdir -p /tmp/rep
run() { name=$1; shift; $S --report /tmp/rep/$name "$@" > /tmp/rep/$name.log 2>&1; echo "done $name $?"; }
run base --methods lora adapter full &
run ls --methods lora --set "label_smoothing=0.1|0.2" &
run bs --methods lora --set "batch_size=8|32" &
run mlp --methods lora --set "lora_target_modules=[c_attn,c_proj,c_fc]" &
run p --methods lora --dropouts 0.7 0.3 &
run ldo --methods lora --set "lora_dropout=0.0|0.3" &
run full --methods full --lrs 1e-4 --set "label_smoothing=0.0|0.1" &
run adapter --methods adapter --lrs 3e-3 3e-4 &
wait
tail -3 /tmp/rep/*.log | tr '\r' '\n' | grep -v "it/s" | tail -60
python3 - <<'PY'
import json, glob, os
rows = []
for f in sorted(glob.glob("/tmp/rep/*.json")):
    for r in json.load(open(f))["rows"]:
        rows.append({"group": os.path.basename(f)[:-5], **r})
json.dump({"rows": rows}, open(os.environ["OUT"] + "/sweep.json", "w"), indent=1)
for r in rows:
    print(r["group"], r["method"], r.get("lr"), {k: r[k] for k in r if k in ("label_smoothing","batch_size","lora_dropout","emoticon_dropout","weight_decay")}, r["seed"], "dev %.4f human %.4f" % (r["dev"], r["human_mean"]), r["train_seconds"])
PY
