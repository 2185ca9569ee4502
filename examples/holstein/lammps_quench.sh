#!/bin/sh
# Holstein CDW quench in LAMMPS with the shipped lattice committee, then the same analysis as for
# `mlpot holstein run`: S(pi,pi,t)/N, L(t), growth exponent and PNGs.
#   sh examples/holstein/lammps_quench.sh [L] [steps] [ranks]
# 100x100 sites, 1000 steps (t = 50) on 2 ranks takes a few minutes on a 2-core CPU.
set -e
L=${1:-100}
STEPS=${2:-1000}
NP=${3:-2}
OUT=holstein-lammps-L$L
# data file (the t = 0 hot state of `mlpot holstein run --seed 0`) + deck: units lj, boundary p p f, site (i,j)
# at x = i, y = j, Q = z; fix langevin (damp = m/gamma) + fix setforce 0 0 NULL + fix nve; dump of Q and the
# per-site force std every 50 steps; write_restart every 500 steps.
# By default the deck carries the model's recommended hot phase (holstein-d4: `fallback 0.07 until 100`: sites
# whose calibrated std exceeds 0.07 get the exact KPM force for t < 5), which keeps the force error within 3%
# of the force std from t = 0 (docs/holstein.md, "Accuracy per regime"); --no-fallback: the ML committee alone.
mlpot holstein lammps --out "$OUT" --L "$L" --steps "$STEPS" --seed 0
cd "$OUT"
mpiexec -n "$NP" lmp -in in.holstein
# interrupted? continue from the newest checkpoint:  mpiexec -n 2 lmp -in in.holstein -var continue 1
cd ..
mlpot holstein analyze "$OUT" --t-min 5
# compare: mlpot holstein run --L $L --steps $STEPS --seed 0 --out holstein-run-L$L && mlpot holstein analyze holstein-run-L$L
