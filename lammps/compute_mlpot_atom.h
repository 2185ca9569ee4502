/* compute ID group mlpot/atom: committee uncertainty of pair_style mlpot (calibrated, LAMMPS units).
   Per-atom array (dump c_ID[1], c_ID[2]; compute reduce):
     column 1 = per-atom force std (force units), column 2 = per-atom energy std (energy units).
   Global vector (thermo c_ID[1..4], variables, fix halt, no compute reduce needed):
     [1] max force std over the group, [2] mean force std over the group's atoms the model sees,
     [3] max per-atom energy std over the group, [4] std of the total energy of all atoms the model sees. */
#ifndef LMP_COMPUTE_MLPOT_ATOM_H
#define LMP_COMPUTE_MLPOT_ATOM_H

#include "compute.h"

namespace LAMMPS_NS {

class ComputeMLPotAtom : public Compute {
 public:
  ComputeMLPotAtom(class LAMMPS *, int, char **);
  ~ComputeMLPotAtom() override;
  void init() override;
  void compute_peratom() override;
  void compute_vector() override;
  double memory_usage() override;

 private:
  int nmax;
  double **std_atom;
  double stats[4];
  class PairMLPot *pair;
  class PairMLPot *current_pair();
};

}    // namespace LAMMPS_NS

#endif
