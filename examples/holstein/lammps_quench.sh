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
# Add --fallback 0.05 with a model exported with its exact solver to replace uncertain sites' forces.
mlpot holstein lammps --out "$OUT" --L "$L" --steps "$STEPS" --seed 0
cd "$OUT"
mpiexec -n "$NP" lmp -in in.holstein
# interrupted? continue from the newest checkpoint:  mpiexec -n 2 lmp -in in.holstein -var continue 1
cd ..
mlpot holstein analyze "$OUT" --t-min 5
# compare: mlpot holstein run --L $L --steps $STEPS --seed 0 --out holstein-run-L$L && mlpot holstein analyze holstein-run-L$L
