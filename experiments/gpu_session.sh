#!/usr/bin/env bash
# The design search on one GPU machine within a time budget (screen on validation fold 9 -> final
# stage on the test fold -> release training of the winner and MAE at tiny size), with a GPU smoke
# test (bf16, torchrun/NCCL) beside it and benchmarks (compile on/off) at the end. Run from the
# repository root. Needs the packed corpora in .gpu/corpora (python experiments/design_search.py
# pack runs/corpora .gpu/corpora). Everything to bring back is under $OUT, in a few files:
# results.tar, search.log, release_*.tar.
set -u
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
# The installed package (pip install -e .); a machine that has torch but cannot install this
# package (no network) runs it from the source tree instead.
python3 -c "import crema" 2>/dev/null || export PYTHONPATH=$PWD/src
OUT=${OUT:-runs/gpu_out}; mkdir -p "$OUT"
SCREEN_S=${SCREEN_S:-300}; RELEASE_S=${RELEASE_S:-120}; JOBS=${JOBS:-14}; TOTAL_S=${TOTAL_S:-540}
DEVICE=${DEVICE:-cuda}; EXTRA_ARGS=${EXTRA_ARGS:-}   # DEVICE=cpu EXTRA_ARGS="--steps 5 ..." for a dry run
start=$(date +%s); L=/tmp/logs; mkdir -p $L
left() { echo $(( TOTAL_S - ($(date +%s) - start) )); }
stamp() { echo "[$(( $(date +%s) - start ))s] $*"; }
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null
  python3 -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__)"; } | tee $L/gpu.txt
cuda_ok() { [ "$DEVICE" != cuda ] || timeout 60 python3 -c "import torch; torch.ones(1).cuda().sum().item()"; }
# MPS lets the small runs' kernels share the GPU at once; keep it only if CUDA still works under it
if [ "$DEVICE" = cuda ] && nvidia-cuda-mps-control -d 2>/dev/null; then
  if cuda_ok; then stamp "MPS daemon on"; else echo quit | nvidia-cuda-mps-control; sleep 2; stamp "MPS off (CUDA failed under it)"; fi
else stamp "MPS not used"; fi
cuda_ok || { stamp "CUDA does not work"; exit 1; }
python3 experiments/design_search.py unpack .gpu/corpora /tmp/corpora || exit 1
stamp "corpora unpacked"
C=/tmp/corpora S=/tmp/search
mkdir -p $S
stamp "smoke: bf16 pretrain (amp auto) alone on the GPU"
timeout 60 python3 -m crema.cli pretrain --corpus $C/unlabeled --out /tmp/smoke/bf16 --size tiny --window 1250 \
    --steps ${SMOKE_STEPS:-60} --batch-size 64 --device $DEVICE --no-progress --log-every 20 > $L/smoke_bf16.log 2>&1
cp /tmp/smoke/bf16/log.jsonl $L/smoke_bf16_log.jsonl; tail -1 $L/smoke_bf16_log.jsonl
( stamp "smoke: torchrun with NCCL on 1 GPU (beside the screen)"
  timeout 60 torchrun --standalone --nproc_per_node 1 -m crema pretrain --corpus $C/unlabeled \
      --out /tmp/smoke/ddp --size tiny --window 1250 --steps ${SMOKE_STEPS:-30} --batch-size 64 --no-progress --log-every 10 \
      && tail -1 /tmp/smoke/ddp/log.jsonl ) > $L/smoke.log 2>&1 &
( while sleep 15; do tar -cf "$OUT/results.tar" -C / tmp/logs $(cd / && ls tmp/search/*.json* 2>/dev/null) 2>/dev/null; done ) &
python3 experiments/design_search.py run --corpora $C --out $S --jobs "$JOBS" --device $DEVICE \
    --screen-budget-s "$SCREEN_S" --final --release-budget-s "$RELEASE_S" $EXTRA_ARGS 2>&1 | tee "$OUT/search.log"
stamp "search done"
for r in $S/release/*; do
  [ -f "$r/model.safetensors" ] && tar -cf "$OUT/release_$(basename $r).tar" -C $S/release \
      --exclude training_state.pt --exclude features.npz "$(basename $r)"
done
if [ "$(left)" -gt 50 ]; then
  stamp "benchmarks: pretrain step tiny/small, fp32 vs bf16"
  timeout $(( $(left) - 15 )) python3 benchmarks/pretrain_throughput.py --sizes tiny small --device $DEVICE \
      --batch-size 64 --steps 5 --out $L/bench_pretrain_cuda.json > $L/bench.log 2>&1
fi
if [ "$(left)" -gt 40 ]; then
  stamp "compile: 60 steps with --compile"
  timeout $(( $(left) - 10 )) python3 -m crema.cli pretrain --corpus $C/unlabeled --out /tmp/smoke/compile --size tiny \
      --window 1250 --steps 60 --batch-size 64 --device $DEVICE --compile --no-progress --log-every 20 > $L/compile.log 2>&1
  cp /tmp/smoke/compile/log.jsonl $L/compile_log.jsonl 2>/dev/null
fi
tar -cf "$OUT/results.tar" -C / tmp/logs $(cd / && ls tmp/search/*.json* 2>/dev/null)
stamp "all done"
