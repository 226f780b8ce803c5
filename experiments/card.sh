#!/usr/bin/env bash
# The shipped model's card, end to end on 2 CPU cores: the release run (crema-mini-ecg12), plain
# MAE at the same budget, then the card suite (probe + fine-tune on the PTB-XL test fold,
# CinC leave-one-source-out, random init, random kernels, supervised ResNet) and its report.
# Corpora first: see configs/suite-card.json. Each pretraining resumes if interrupted.
set -euo pipefail
cd "$(dirname "$0")/.."
run() { [ -f "$1/training_state.pt" ] && echo --resume || true; }
crema pretrain --config configs/pretrain/crema-release.json --no-progress $(run runs/pretrain/crema-mini-ecg12)
crema pretrain --config configs/pretrain/crema-release.json --mode mae --lambda-con 0 \
    --out runs/pretrain/mae-mini-8000 --no-progress $(run runs/pretrain/mae-mini-8000)
mkdir -p runs/eval/card/pretrain
ln -sfn ../../../pretrain/crema-mini-ecg12 runs/eval/card/pretrain/crema   # the suite resumes them at their
ln -sfn ../../../pretrain/mae-mini-8000 runs/eval/card/pretrain/mae        # last step: nothing is retrained
crema evaluate --suite configs/suite-card.json --out runs/eval/card --resume
crema report runs/eval/card
