#!/usr/bin/env bash
# A few steps of each stage on one GPU in bf16 (random-init backbone, synthetic data), first in a
# single process, then under DeepSpeed ZeRO-2; prints step times and peak memory, writes JSON.
#
#   bash benchmarks/gpu_smoke.sh [SHAPE] [TOKENIZER]
#
# SHAPE: smollm2-135m (default), qwen3-0.6b or tiny. TOKENIZER: a folder with tokenizer files (or a
# hub id); by default the embedded SmolLM2 tokenizer. Without a GPU it runs on the CPU in float32
# (DS_ACCELERATOR=cpu), which is how CI keeps it working.
set -euo pipefail
cd "$(dirname "$0")/.."
shape=${1:-smollm2-135m}
tokenizer=${2:-embedded:SmolLM2-135M-Instruct}
out=${GPU_SMOKE_OUT:-outputs/gpu_smoke}
if python -c "import sys, torch; sys.exit(not torch.cuda.is_available())"; then
  precision=bf16
else
  precision=no
  export DS_ACCELERATOR=cpu
fi
for config in single_process deepspeed_zero2; do
  accelerate launch --config_file "accelerate_configs/$config.yaml" --num_processes 1 --mixed_precision "$precision" \
    benchmarks/gpu_smoke.py --shape "$shape" --tokenizer "$tokenizer" --output_json "$out/$shape-$config.json"
done
