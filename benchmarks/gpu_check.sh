#!/usr/bin/env bash
# Issue 16's accelerator figures in one go, on a machine with a CUDA GPU (5 min on an H200):
#
#     bash benchmarks/gpu_check.sh            # results in $OUT (default reports/gpu_check)
#
# 1. the machine: GPU, driver, torch, the CPU's model and its bf16 flags;
# 2. the default recipe (`train`, configs/simple_cnn.yaml) seed 1 on the GPU in fp32, then in
#    bf16, each alone: the time of its training epochs and its test accuracy;
# 3. seeds 2 and 3 in both precisions, four runs at once (accuracy only: they share the GPU);
# 4. meanwhile, on two CPU cores with the GPU hidden: the seed project's loop next to ours
#    (seed_loop.py) and SimpleCNN's training step in fp32 and bf16 (network_speed.py --bf16),
#    which is how a CPU with native bf16 gets measured when this project's own machine has none.
# Needs the repository's dependencies importable (`make install`, or PYTHONPATH=src with them
# installed), MNIST in data/MNIST/raw, a CUDA GPU and at least 4 CPU cores. Each step goes on
# when another fails; the exit status is 1 when any did (their output is in $OUT).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-reports/gpu_check}
if [ -z "${PYTHON:-}" ] && [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; fi
PY=${PYTHON:-python3}
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
fail() { echo "error: $*" >&2; exit 2; }
"$PY" -c "import torch" 2> /dev/null || fail "$PY cannot import torch: run \`make install\` first (or set PYTHON)"
"$PY" -c "import torch, sys; sys.exit(not torch.cuda.is_available())" \
    || fail "no CUDA GPU visible to torch: this check is for a machine with one"
cores=$(nproc)
[ "$cores" -ge 4 ] || fail "$cores CPU cores: the check needs 4 (2 for the GPU runs, 2 for the CPU benchmarks)"
mkdir -p "$OUT"
command -v taskset > /dev/null || taskset() { shift 2; "$@"; }  # no pinning where util-linux is missing
gpu_cores="0-$((cores - 3))"
cpu_cores="$((cores - 2)),$((cores - 1))"
failed=0

{
    date -u
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
    "$PY" -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda, torch.cuda.get_device_name())"
    lscpu | grep -E '^(Model name|CPU\(s\))'
    echo "bf16-related CPU flags: $(grep -o -w -E 'avx512f|avx512_bf16|amx_bf16|amx_tile' /proc/cpuinfo | sort -u | tr '\n' ' ')"
} 2>&1 | tee "$OUT/machine.txt"

# The CPU benchmarks, on two cores of their own, with the GPU hidden so that ours runs on the CPU.
(
    export CUDA_VISIBLE_DEVICES="" OMP_NUM_THREADS=2
    status=0
    taskset -c "$cpu_cores" "$PY" benchmarks/network_speed.py --batches 128 --bf16 > "$OUT/cpu_network_speed.txt" 2>&1 \
        || status=1
    taskset -c "$cpu_cores" "$PY" benchmarks/seed_loop.py > "$OUT/cpu_seed_loop.txt" 2>&1 || status=1
    exit $status
) &
cpu_benchmarks=$!

seeds() {  # seeds.py with the default recipe; $1 precision, the rest seeds
    local precision=$1
    shift
    taskset -c "$gpu_cores" "$PY" benchmarks/seeds.py --model simple_cnn --precision "$precision" --seeds "$@"
}
for precision in fp32 bf16; do
    seeds "$precision" 1 > "$OUT/gpu_${precision}_seed1.txt" 2>&1 || failed=1
    tail -4 "$OUT/gpu_${precision}_seed1.txt"
done
runs=()
for precision in fp32 bf16; do
    for seed in 2 3; do
        OMP_NUM_THREADS=3 seeds "$precision" "$seed" > "$OUT/gpu_${precision}_seed${seed}.txt" 2>&1 &
        runs+=($!)
    done
done
for run in "${runs[@]}"; do wait "$run" || failed=1; done
for precision in fp32 bf16; do
    seeds "$precision" 1 2 3 2>&1 | tee "$OUT/gpu_${precision}_summary.txt" || failed=1
done
tar czf "$OUT/gpu_checkpoints.tgz" models/seeds/simple_cnn_mnist_*_seed[123]/simple_cnn_best.pth 2>/dev/null

wait "$cpu_benchmarks" || failed=1
cat "$OUT/cpu_network_speed.txt" "$OUT/cpu_seed_loop.txt"
[ "$failed" -eq 0 ] || echo "error: some steps failed: see their files in $OUT" >&2
exit "$failed"
