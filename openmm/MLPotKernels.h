/* Kernel API of MLPotForce: one kernel, implemented by the Reference/CPU kernel (mlpot_reference.cpp)
   and the CUDA kernel (mlpot_cuda.cpp). */
#ifndef MLPOT_OPENMM_KERNELS_H
#define MLPOT_OPENMM_KERNELS_H

#include "MLPotForce.h"

#include "openmm/KernelImpl.h"
#include "openmm/Platform.h"
#include "openmm/System.h"
#include "openmm/internal/ContextImpl.h"

#include <string>

namespace MLPot {

class CalcMLPotForceKernel : public OpenMM::KernelImpl {
 public:
  static std::string Name() { return "CalcMLPotForce"; }
  CalcMLPotForceKernel(const std::string &name, const OpenMM::Platform &platform) : KernelImpl(name, platform) {}
  // load the model; an OpenMMException naming the problem and the fix when it cannot be used
  virtual void initialize(const OpenMM::System &system, const MLPotForce &force) = 0;
  // add the forces (kJ/mol/nm) and return the energy (kJ/mol)
  virtual double execute(OpenMM::ContextImpl &context, bool includeForces, bool includeEnergy) = 0;
};

// kernel factory of the Reference and CPU platforms (defined in the libtorch translation unit)
OpenMM::KernelFactory *newReferenceKernelFactory();

}    // namespace MLPot

#endif
