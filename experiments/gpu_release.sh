#!/usr/bin/env bash
# Longer and wider CREMA release runs on one GPU within a time budget (issue 21), with the GPU
# smoke checks beside them: bf16 (--amp auto), a run launched by torchrun, an NCCL process group.
#
#   python experiments/design_search.py pack runs/corpora .gpu/corpora --scale 32 \
#       --train-only ptbxl cinc challenge2011      # here: the corpora in ~35 MB
#   bash experiments/gpu_release.sh                # there, from the repository root
#
# Four runs share the GPU at once (each is launch-bound at this size): the w128 recipe for a GPU
# (configs/pretrain/gpu/w128-long.json) with seeds 0 and 1, the same as plain MAE (seed 0), and
# the tiny size (configs/pretrain/gpu/tiny-long.json, seed 0). A 60-step calibration of all four
# at once times a step of each; each run then gets the steps that fit the budget (rounded down to
# 100), so that its cosine schedule ends. Each run is stopped at the deadline regardless and keeps
# its last checkpoint. Back in $OUT: one tar per run (config.json with the steps used,
# model.safetensors, log.jsonl; no optimiser state) and logs.tar.
#
# Dry run on a CPU: DEVICE=cpu TOTAL_S=200 CAL_STEPS=4 EXTRA="--batch-size 8 --workers 0" bash experiments/gpu_release.sh
set -u
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2
python3 -c "import crema" 2>/dev/null || export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}
OUT=${OUT:-runs/gpu_release}; mkdir -p "$OUT"
. benchmarks/gpu_session.sh   # gpu_versions, cuda_ok (and DEVICE, default cuda)
TOTAL_S=${TOTAL_S:-470}; CAL_STEPS=${CAL_STEPS:-60}; EXTRA=${EXTRA:-}
RESERVE_S=${RESERVE_S:-45}   # process start, the final checkpoint and the collection
start=$(date +%s); L=/tmp/gpu_release/logs; R=/tmp/gpu_release/runs; mkdir -p "$L" "$R"
stamp() { echo "[$(( $(date +%s) - start ))s] $*"; }
collect() { tar -cf "$OUT/logs.tar" -C /tmp/gpu_release logs 2>/dev/null; return 0; }

# name | config | extra flags
RUNS=(
  "w128-s0|configs/pretrain/gpu/w128-long.json|--seed 0"
  "w128-s1|configs/pretrain/gpu/w128-long.json|--seed 1"
  "w128-mae-s0|configs/pretrain/gpu/w128-long.json|--seed 0 --mode mae"
  "tiny-s0|configs/pretrain/gpu/tiny-long.json|--seed 0"
)

main() {
stamp "versions"
{ gpu_versions; git log -1 --format='commit %H' 2>/dev/null; nproc; } | tee "$L/versions.txt"
cuda_ok || { stamp "CUDA does not work"; collect; exit 1; }
if [ -d .gpu/corpora ] && [ ! -e runs/corpora ]; then   # never over a local copy
  python3 experiments/design_search.py unpack .gpu/corpora runs/corpora || { collect; exit 1; }
fi
stamp "corpora: $(ls runs/corpora | tr '\n' ' ')"

stamp "calibration: $CAL_STEPS steps of every run at once"
for spec in "${RUNS[@]}"; do
  IFS='|' read -r name cfg flags <<< "$spec"
  timeout 150 python3 -m crema pretrain --config "$cfg" $flags --steps "$CAL_STEPS" --log-every $(( CAL_STEPS / 3 )) \
    --out "$R/cal-$name" --device "$DEVICE" --no-progress --overwrite $EXTRA > "$L/cal-$name.log" 2>&1 &
done
wait
collect

deadline=$(( TOTAL_S - RESERVE_S ))
stamp "release runs until ${deadline}s"
for spec in "${RUNS[@]}"; do
  IFS='|' read -r name cfg flags <<< "$spec"
  steps=$(python3 - "$R/cal-$name/log.jsonl" "$(( deadline - ($(date +%s) - start) - 30 ))" <<'EOF'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
per_step = (rows[-1]["elapsed_s"] - rows[0]["elapsed_s"]) / (rows[-1]["step"] - rows[0]["step"])
print(max(100, int(float(sys.argv[2]) / per_step) // 100 * 100))
EOF
  ) || { stamp "$name: calibration failed"; tail -5 "$L/cal-$name.log"; continue; }
  stamp "$name: $steps steps"
  launch="python3 -m crema"
  # the first run is launched by torchrun: the launcher's environment reaches the trainer
  [ "$name" = w128-s0 ] && [ "$DEVICE" = cuda ] && launch="python3 -m torch.distributed.run --standalone --nproc_per_node 1 -m crema"
  timeout $(( deadline - ($(date +%s) - start) )) $launch pretrain --config "$cfg" $flags --steps "$steps" \
    --out "$R/$name" --device "$DEVICE" --no-progress --overwrite $EXTRA > "$L/$name.log" 2>&1 &
done
if [ "$DEVICE" = cuda ]; then
  timeout 90 python3 -m torch.distributed.run --standalone --nproc_per_node 1 benchmarks/nccl_check.py \
    > "$L/nccl_check.log" 2>&1 || stamp "NCCL check FAILED"
fi
( while sleep 20; do collect; done ) & ticker=$!
wait $(jobs -rp | grep -v "^$ticker$") 2>/dev/null
kill $ticker 2>/dev/null
stamp "runs ended"
for spec in "${RUNS[@]}"; do
  IFS='|' read -r name cfg flags <<< "$spec"
  [ -e "$R/$name/model.safetensors" ] || { stamp "$name: no checkpoint"; tail -5 "$L/$name.log"; continue; }
  # a run stopped before its first log line has a checkpoint but no log.jsonl yet: tar what exists
  files=(); for f in config.json model.safetensors log.jsonl; do [ -e "$R/$name/$f" ] && files+=("$name/$f"); done
  [ -e "$R/$name/log.jsonl" ] && tail -1 "$R/$name/log.jsonl" || stamp "$name: no log.jsonl yet"
  tar -chf "$OUT/$name.tar" -C "$R" "${files[@]}"
done
nvidia-smi --query-gpu=memory.used --format=csv 2>/dev/null | tail -1
collect
stamp "all done; in $OUT: $(ls "$OUT" | tr '\n' ' ')"
}
main 2>&1 | tee "$OUT/session.log"
