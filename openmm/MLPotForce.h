/* MLPotForce: an mlpot exported model (mlpot_plugins/contract.py, atomistic kind) as an OpenMM Force.

   Built on first use by mlpot_plugins/openmm/native.py, which also creates it: Python checks the model
   (metadata, species, ML region) and hands OpenMM the force's XML form (MLPotForceProxy), so no SWIG
   wrapper is needed. All numbers the kernels need are fields of the force, and serialization keeps them. */
#ifndef MLPOT_OPENMM_FORCE_H
#define MLPOT_OPENMM_FORCE_H

#include "openmm/Force.h"

#include <string>
#include <vector>

namespace MLPot {

class MLPotForce : public OpenMM::Force {
 public:
  MLPotForce() = default;
  // model file and the SHA-1 of its content (checked when a Context loads it)
  std::string modelPath, modelSha1;
  // ML region: system index of each particle the model sees, and its species index in the model
  std::vector<int> particles, types;
  bool periodic = false;
  bool boxKnownDefault = false;     // the Topology's own box was OpenMM's default 2 nm cube
  std::string precision = "float64";  // float32 | float64: the model is run in this dtype
  std::string device = "cpu";          // torch device of the Reference/CPU kernels (CUDA kernel: the context's)
  double cutoff = 0.0;                 // Angstrom, the model's (metadata)
  int ensembleSize = 1;
  int numSpecies = 0;                  // len(species) of the model: every type is below it
  std::string tag;                     // key of the committee statistics (mlpot_openmm_* C functions)

  bool usesPeriodicBoundaryConditions() const override { return periodic; }

 protected:
  OpenMM::ForceImpl *createImpl() const override;
};

}    // namespace MLPot

#endif
