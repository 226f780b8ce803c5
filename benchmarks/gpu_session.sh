#!/usr/bin/env bash
# One command for a machine with a GPU, about 9 minutes in all:
#
#   bash benchmarks/gpu_session.sh
#
# 1. versions: nvidia-smi, Python, torch, CUDA; a CUDA check;
# 2. the shipped PTB-XL sample (500 ECGs) prepared as a corpus;
# 3. smoke: a few steps of `python -m crema pretrain` in bf16 on the GPU (one process);
# 4. DDP: the same under `torchrun --standalone --nproc_per_node 1`, and benchmarks/nccl_check.py
#    under it (an NCCL process group, all_reduce, DDP bf16 steps: crema joins no group for one
#    process);
# 5. `benchmarks/mfu.py --device cuda --sizes tiny mini small` (fp32, bf16, bf16 + torch.compile;
#    it starts no new workload once its budget is spent and saves its JSON after every workload).
#
# Each stage runs under `timeout`; the whole run stays within TOTAL_S (default 540 s). Everything
# lands in $OUT when set (keep it to a few files: a remote runner may bring back only those):
# session.log, gpu_bench.tar (every stage's log and the runs' log.jsonl), mfu-cuda.json and
# mfu-gpu-table.md. Without $OUT: runs/gpu_bench. Afterwards, on any machine:
#
#   python benchmarks/mfu.py --render mfu-cuda.json --doc docs/BENCHMARKS.md   # fills the GPU table
#
# Dry run on a CPU (no benchmark, two steps each): DEVICE=cpu SMOKE_STEPS=2 SMOKE_ARGS="--batch-size 4
# --window 250" bash benchmarks/gpu_session.sh
#
# Sourcing the file (`. benchmarks/gpu_session.sh`) only defines the functions (gpu_versions,
# cuda_ok, sample_corpus, smoke_pretrain, smoke_ddp, ddp_nccl_check), for other GPU scripts.
set -u

PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}

gpu_versions() {  # name, memory and driver of each GPU; Python, torch and CUDA versions
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
  timeout 120 "$PY" -c "import sys, torch; print('python', sys.version.split()[0], 'torch', torch.__version__,
      'cuda', torch.version.cuda, 'available', torch.cuda.is_available(),
      'bf16', torch.cuda.is_available() and torch.cuda.is_bf16_supported(),
      'nccl', torch.cuda.nccl.version() if torch.cuda.is_available() else None)"
}

cuda_ok() {  # true when a CUDA kernel runs (always true for DEVICE=cpu)
  [ "$DEVICE" != cuda ] || timeout 60 "$PY" -c "import torch; torch.ones(1).cuda().sum().item()"
}

sample_corpus() {  # DIR: the package's PTB-XL sample prepared as a corpus in DIR
  timeout 120 "$PY" -m crema prepare src/crema/sample/ptbxl --out "$1" --quiet
}

smoke_pretrain() {  # CORPUS RUN_DIR [extra flags]: a few bf16 steps of tiny in one process
  local corpus=$1 run=$2; shift 2
  timeout "${SMOKE_TIMEOUT:-120}" "$PY" -m crema pretrain --corpus "$corpus" --out "$run" --size tiny \
    --steps "${SMOKE_STEPS:-30}" --batch-size 64 --amp bf16 --device "$DEVICE" --no-progress \
    --log-every 10 --overwrite ${SMOKE_ARGS:-} "$@"
}

smoke_ddp() {  # CORPUS RUN_DIR [extra flags]: the same launched by torchrun, one process (the
  # device is auto: cuda:LOCAL_RANK on a GPU). With one process crema joins no process group, so
  # NCCL itself is checked by benchmarks/nccl_check.py (ddp_nccl_check).
  local corpus=$1 run=$2; shift 2
  timeout "${SMOKE_TIMEOUT:-120}" "$PY" -m torch.distributed.run --standalone --nproc_per_node 1 \
    -m crema pretrain --corpus "$corpus" --out "$run" --size tiny --steps "${SMOKE_STEPS:-30}" \
    --batch-size 64 --amp bf16 --no-progress --log-every 10 --overwrite ${SMOKE_ARGS:-} "$@"
}

ddp_nccl_check() {  # [flags]: NCCL process group, all_reduce and DDP bf16 steps under torchrun
  timeout "${SMOKE_TIMEOUT:-120}" "$PY" -m torch.distributed.run --standalone --nproc_per_node 1 \
    benchmarks/nccl_check.py "$@"
}

# Sourced: the functions only.
[ "${BASH_SOURCE[0]}" = "$0" ] || return 0

export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
TOTAL_S=${TOTAL_S:-540}
OUT=${OUT:-runs/gpu_bench}; mkdir -p "$OUT"
W=$(mktemp -d /tmp/crema_gpu_bench.XXXXXX); L=$W/logs; mkdir -p "$L"
start=$(date +%s)
left() { echo $(( TOTAL_S - ($(date +%s) - start) )); }
stamp() { echo "[$(( $(date +%s) - start ))s] $*"; }
collect() {  # everything so far into $OUT (called after each stage: a run cut off keeps it)
  tar -cf "$OUT/gpu_bench.tar" -C "$W" logs 2>/dev/null
  [ -f "$W/mfu-cuda.json" ] && cp "$W/mfu-cuda.json" "$OUT/"
  [ -f "$L/mfu-gpu-table.md" ] && cp "$L/mfu-gpu-table.md" "$OUT/"
  return 0
}
main() {
stamp "versions"
gpu_versions | tee "$L/versions.txt"
git log -1 --format='commit %H %s' 2>/dev/null | tee -a "$L/versions.txt"
cuda_ok || { stamp "CUDA does not work"; collect; exit 1; }

stamp "corpus: the shipped PTB-XL sample"
sample_corpus "$W/corpus" > "$L/prepare.log" 2>&1 || { tail -5 "$L/prepare.log"; collect; exit 1; }
tail -1 "$L/prepare.log"

stamp "smoke: bf16 pretraining, one process"
if smoke_pretrain "$W/corpus" "$W/smoke" > "$L/smoke_bf16.log" 2>&1; then
  cp "$W/smoke/log.jsonl" "$L/smoke_bf16_log.jsonl"; tail -1 "$L/smoke_bf16_log.jsonl"
else stamp "smoke FAILED (exit $?)"; tail -20 "$L/smoke_bf16.log"; fi
collect

stamp "DDP: torchrun --nproc_per_node 1 (NCCL on a GPU)"
if smoke_ddp "$W/corpus" "$W/ddp" > "$L/smoke_ddp.log" 2>&1; then
  cp "$W/ddp/log.jsonl" "$L/smoke_ddp_log.jsonl"; tail -1 "$L/smoke_ddp_log.jsonl"
else stamp "DDP FAILED (exit $?)"; tail -20 "$L/smoke_ddp.log"; fi
stamp "DDP: NCCL process group under torchrun (benchmarks/nccl_check.py)"
ddp_nccl_check ${NCCL_ARGS:-} > "$L/nccl_check.log" 2>&1 || stamp "NCCL check FAILED (exit $?)"
grep -E "backend|Error|error" "$L/nccl_check.log" | tail -5
collect

if [ "$DEVICE" = cuda ] && [ "$(left)" -gt 90 ]; then
  # No new workload after BUDGET (a compile of the small CREMA step can take a minute); the
  # timeout leaves 15 s to collect.
  budget=$(( $(left) - ${MFU_RESERVE_S:-100} )); [ "$budget" -lt 30 ] && budget=30
  stamp "benchmark: mfu.py --device cuda (budget ${budget}s, timeout $(( $(left) - 15 ))s)"
  timeout $(( $(left) - 15 )) "$PY" benchmarks/mfu.py --device cuda --sizes ${MFU_SIZES:-tiny mini small} \
    --budget-s "$budget" --out "$W/mfu-cuda.json" ${MFU_ARGS:-} > "$L/mfu.log" 2>&1
  stamp "benchmark exit $?"; grep -v '^$' "$L/mfu.log" | tail -60
  [ -f "$W/mfu-cuda.json" ] && "$PY" benchmarks/mfu.py --render "$W/mfu-cuda.json" > "$L/mfu-gpu-table.md" 2>&1
else
  stamp "benchmark skipped (DEVICE=$DEVICE, $(left)s left)"
fi
collect
stamp "all done; in $OUT: $(ls "$OUT" | tr '\n' ' ')"
}
main 2>&1 | tee "$OUT/session.log"
