#!/usr/bin/env bash
# The GPU figures a CPU machine cannot give, in one run (about 2 minutes on one H200):
#   1. the paper preset's training step: hrnet_w48, 768x768 crops, 3 images x 7 datasets, 448 labels,
#      N = 231, AMP; stage 1 against the stage-2 GNN and SEG phases and stage 3 (bench/train.py);
#   2. embed-labels with a random-init model of llama-2-7b's shape in bf16 (bench/embed.py);
#   3. the stages on CUDA against their CPU contracts (tests/stages/test_cuda.py).
# Uses the machine's own python3 and packages (torch, timm, transformers, ...); the repository is put on
# PYTHONPATH, nothing is installed. Results go to $OUT (default /tmp/gpu_check) as JSON and logs.
#
#   bash bench/gpu_check.sh
set -u
OUT=${OUT:-/tmp/gpu_check}
PY=${PY:-python3}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 UNISEG_NO_PROGRESS=1
export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  $PY -c "import sys, torch, transformers, timm; print('python', sys.version.split()[0], 'torch', torch.__version__,
'transformers', transformers.__version__, 'timm', timm.__version__)"; } 2>&1 | tee "$OUT/machine.txt"

step() {  # name, seconds, command...
    local name=$1 secs=$2; shift 2
    local t0=$SECONDS
    timeout "$secs" "$@" >"$OUT/$name.out" 2>"$OUT/$name.err"
    local rc=$?
    echo "== $name: rc $rc in $((SECONDS - t0)) s"
    cat "$OUT/$name.out"
    [ $rc -eq 0 ] || tail -n 25 "$OUT/$name.err"
}

step train 270 $PY bench/train.py --preset paper --iters 10 --warmup 3 --json
step embed 240 $PY bench/embed.py --random-init llama-2-7b --device cuda --dtype bf16 --batch-size 16 --repeats 2 --json
step tests 150 $PY -m pytest -q -p no:cacheprovider tests/stages/test_cuda.py
