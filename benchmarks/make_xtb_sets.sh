#!/usr/bin/env bash
# Regenerate the alanine-dipeptide GFN2-xTB sets (docs/molecules.md) into OUT (default out/xtb, git-ignored):
# train 200, val 50, test 50 frames (300-600 K) and ood 50 frames (1000 K, phi/psi started at +80/-60 deg),
# seeds 0/1/2/3, with the wall time of each set; ood-torsion 50 frames (phi > 0 at 450 K, seed 21). Usage: benchmarks/make_xtb_sets.sh [OUT]
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
# the unseen torsion without the heat: phi/psi started at +80/-60 deg, MD at 450 K (an OOD set of
# benchmarks/active_vs_random.py --system ala2)
mlpot data xtb --system ala2 --set ood --temperature 450 --frames 50 --seed 21 --no-progress --out "$out/ala2-ood-torsion.extxyz"
