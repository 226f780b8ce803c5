#!/usr/bin/env bash
# A shipped encoder's card, end to end on 2 CPU cores: its release run, plain MAE with the same
# recipe and steps, then the card suite (probe + fine-tune on the PTB-XL test fold, CinC
# leave-one-source-out, random init, random kernels, supervised ResNet) and its report.
#   bash experiments/card.sh          # crema-mini-ecg12 (configs/pretrain/crema-release.json)
#   bash experiments/card.sh w128     # crema-w128-ecg12 (configs/pretrain/crema-w128-release.json)
# Corpora first: see the suite config. Each pretraining resumes if interrupted.
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-mini}" in
    mini) recipe=configs/pretrain/crema-release.json; crema_run=runs/pretrain/crema-mini-ecg12
          mae_run=runs/pretrain/mae-mini-8000; suite=configs/suite-card.json; out=runs/eval/card; also=() ;;
    w128) recipe=configs/pretrain/crema-w128-release.json; crema_run=runs/pretrain/crema-w128
          mae_run=runs/pretrain/mae-w128; suite=configs/suite-card-w128.json; out=runs/eval/card-w128
          also=(--reference crema-mini-ecg12) ;;   # paired against the small shipped model too
    *) echo "usage: bash experiments/card.sh [mini|w128]" >&2; exit 2 ;;
esac
run() { [ -f "$1/training_state.pt" ] && echo --resume || true; }
crema pretrain --config "$recipe" --out "$crema_run" --no-progress $(run "$crema_run")
crema pretrain --config "$recipe" --mode mae --lambda-con 0 --out "$mae_run" --no-progress $(run "$mae_run")
mkdir -p "$out/pretrain"
ln -sfn "$(realpath "$crema_run")" "$out/pretrain/crema"   # the suite resumes them at their
ln -sfn "$(realpath "$mae_run")" "$out/pretrain/mae"       # last step: nothing is retrained
crema evaluate --suite "$suite" --out "$out" --resume
crema report "$out" "${also[@]}"
