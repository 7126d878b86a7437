#!/usr/bin/env bash
# The GPU path, checked and measured on a machine with NVIDIA GPUs, in under 8 minutes:
#
#   bash benchmarks/gpu_check.sh            # from the repository root
#
# 1. the README's set-up line 2 (a venv with Lettucify), unless `lettucify` already imports;
# 2. benchmarks/train_throughput.py on CUDA (mixed precision, channels_last, pinned memory):
#    efficientnet_lite0 at 224 and cnn16 at 64, pipelines a/b/c, target b/c >= 0.8;
# 3. a short `compute=local_gpu` training of efficientnet_lite0;
# 4. a short `compute=torchrun compute.device=cuda` training, one process per GPU (NCCL).
#
# The photos come from $LETTUCIFY_DATA_DIR/food16 (else ../shared/datasets/food16, else
# the download). Everything it prints goes to ${OUT:-benchmarks/results/gpu}/, with a
# summary.txt of the figures at the end.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-benchmarks/results/gpu}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg
export LETTUCIFY_DATA_DIR="${LETTUCIFY_DATA_DIR:-$(cd .. && pwd)/shared/datasets}"
export LETTUCIFY_CACHE_DIR="${LETTUCIFY_CACHE_DIR:-$(mktemp -d)}"
started=$SECONDS

step() {  # step NAME SECONDS COMMAND...: run it under a time limit, its output in $out/NAME.log
    local name=$1 limit=$2
    shift 2
    echo "== $name (limit ${limit}s)"
    timeout "$limit" "$@" 2>&1 | tee "$out/$name.log"
    local status=${PIPESTATUS[0]}
    echo "$name: exit $status after $((SECONDS - started)) s in all" | tee -a "$out/status.txt"
}

if ! python3 -c "import lettucify" 2>/dev/null; then
    setup_line="$(.ci/setup-lines | grep -m1 'venv')"
    step setup 240 bash -c "$setup_line"
    . .venv/bin/activate
fi
nvidia-smi > "$out/nvidia-smi.txt" 2>&1
gpus="$(python -c 'import torch; print(torch.cuda.device_count())')"
python -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda, "NCCL", torch.cuda.nccl.version())' \
    | tee "$out/versions.txt"

# Batches of 128: a step of Lite0 on one large GPU is a few ms at batch 32.
step throughput 210 python benchmarks/train_throughput.py --device cuda --batch-size 128 --steps 40 --repeats 3
step local_gpu 75 python -m lettucify compute=local_gpu model=efficientnet_lite0 trainer.epochs=2 logger=none \
    "hydra.run.dir=$out/runs/local_gpu"
step torchrun_cuda 90 python -m lettucify compute=torchrun compute.device=cuda compute.amp=true \
    "compute.nproc_per_node=$gpus" model=efficientnet_lite0 trainer.epochs=2 logger=none \
    "hydra.run.dir=$out/runs/torchrun_cuda"

{
    cat "$out/versions.txt"
    sed -n '/^training images\/s/,$p' "$out/throughput.log"
    for run in local_gpu torchrun_cuda; do
        echo "$run:"
        grep -iE "data loading|epoch [0-9]+/|test top-1|error" "$out/$run.log" | tail -6
    done
    cat "$out/status.txt"
} > "$out/summary.txt"
cat "$out/summary.txt"
# Any step that failed fails the check.
! grep -v "exit 0 " "$out/status.txt" | grep -q .
