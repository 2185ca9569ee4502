#!/usr/bin/env bash
# Regenerate the alanine-dipeptide GFN2-xTB sets (docs/molecules.md) into OUT (default out/xtb, git-ignored):
# train 200, val 50, test 50 frames (300-600 K) and ood 50 frames (1000 K, phi/psi started at +80/-60 deg),
# seeds 0/1/2/3, with the wall time of each set. Usage: benchmarks/make_xtb_sets.sh [OUT]
set -euo pipefail
out=${1:-out/xtb}
mkdir -p "$out"
seed=0
for spec in train:200 val:50 test:50 ood:50; do
    set_=${spec%%:*}; n=${spec##*:}
    start=$(date +%s.%N)
    mlpot data xtb --system ala2 --set "$set_" --frames "$n" --seed "$seed" --no-progress --out "$out/ala2-$set_.extxyz"
    echo "ala2 $set_ $n frames seed $seed: $(echo "$(date +%s.%N) - $start" | bc) s"
    seed=$((seed + 1))
done
