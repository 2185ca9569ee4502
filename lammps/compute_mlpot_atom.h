/* compute ID group mlpot/atom: calibrated per-atom force std of the pair_style mlpot committee
   (force units: eV/Angstrom in metal, kcal/mol/Angstrom in real). */
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
  double memory_usage() override;

 private:
  int nmax;
  double *std_atom;
  class PairMLPot *pair;
};

}    // namespace LAMMPS_NS

#endif
