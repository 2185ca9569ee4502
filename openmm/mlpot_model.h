/* The libtorch side of MLPotForce, shared by the Reference/CPU kernel (mlpot_reference.cpp, where it is
   defined) and the CUDA kernel (mlpot_cuda.cpp): the loaded model, the neighbour lists, unit factors and the
   committee statistics that Python reads through the mlpot_openmm_* C functions. */
#ifndef MLPOT_OPENMM_MODEL_H
#define MLPOT_OPENMM_MODEL_H

#include "MLPotForce.h"

#include "openmm/OpenMMException.h"
#include "openmm/Vec3.h"

#include <torch/script.h>

#include <string>
#include <tuple>
#include <vector>

// nm <-> Angstrom and eV <-> kJ/mol: mlpot_plugins/units.py (OPENMM_*), its one source, passed by the build
#ifndef MLPOT_OPENMM_LENGTH_TO_MODEL
#error "build with -DMLPOT_OPENMM_LENGTH_TO_MODEL=... (mlpot_plugins/openmm/native.py passes the units.py factors)"
#endif

namespace MLPot {

constexpr double LENGTH_TO_MODEL = MLPOT_OPENMM_LENGTH_TO_MODEL;    // nm -> Angstrom
constexpr double ENERGY_FROM_MODEL = MLPOT_OPENMM_ENERGY_FROM_MODEL;    // eV -> kJ/mol
constexpr double FORCE_FROM_MODEL = MLPOT_OPENMM_FORCE_FROM_MODEL;    // eV/A -> kJ/mol/nm
constexpr double OPENMM_DEFAULT_BOX_NM = 2.0;
constexpr double MIN_DISTANCE = 1e-4;       // Angstrom (mlpot_plugins/neighbors.py)
constexpr double MIN_CELL_HEIGHT = 0.1;     // Angstrom (mlpot_plugins/neighbors.py)

// the per-atom committee statistics of one evaluation (model units: eV/A, eV)
struct Uncertainty {
  long long evaluation = 0;          // which evaluation of this force in this context (1, 2, ...)
  long long step = -1;               // the Context's step count at that evaluation
  std::vector<double> forces_std;    // [n_ml]
  std::vector<double> energies_std;  // [n_ml]
  double energy_std = 0.0;
};

// the committee statistics registry: keyed by the force's tag and the OpenMM::Context that evaluated it
// requested for this evaluation: "next" (consumed), "always", or armed for this step count (consumed)
bool uncertainty_requested(const std::string &tag, const void *context, long long step);
// the same question without consuming anything (may a cached evaluation stand in for this one?)
bool uncertainty_pending(const std::string &tag, const void *context, long long step);
void store_uncertainty(const std::string &tag, const void *context, Uncertainty &&u);
void forget_uncertainty(const std::string &tag, const void *context);    // when the kernel goes

// the OpenMMException for a torch error during an evaluation
[[noreturn]] void rethrow_evaluation_error(const std::exception &e, const MLPotForce &force);

class Model {
 public:
  // loads and checks the model file of `force` onto `device`; OpenMMException naming the fix otherwise
  Model(const MLPotForce &force, const std::string &device);
  // box checks (default 2 nm box, flat cell); box_nm rows; throws OpenMMException
  void check_box(const OpenMM::Vec3 box_nm[3]) const;
  // host neighbour list (cell list, triclinic or open) of region positions x_A [n,3] (Angstrom), replaced by
  // their wrapped copies; fills edges [2,E] (sources, then destinations) and Cartesian shifts [E,3]
  void neighbor_list(std::vector<double> &x_A, const double *box_A /* 9 or nullptr */,
                     std::vector<int64_t> &edges, std::vector<double> &shifts) const;
  // the same list with torch operations on the positions' device (the CUDA kernel's: no host copy)
  void neighbor_list_torch(torch::Tensor &x_A, const torch::Tensor &box_A /* undefined: open */,
                           torch::Tensor &edge_index, torch::Tensor &shifts) const;
  // the contract's compute; returns the output dict
  c10::impl::GenericDict compute(const torch::Tensor &x_A, const torch::Tensor &edge_index,
                                 const torch::Tensor &shifts, bool need_uncertainty);
  // energy (eV) and forces [n,3] (eV/A, model device) of an output dict, shapes checked
  torch::Tensor output(const c10::impl::GenericDict &out, const char *key, std::vector<int64_t> shape) const;
  // record the committee statistics of `out` for (tag, context)
  void record_uncertainty(const c10::impl::GenericDict &out, const void *context, long long step);
  // one evaluation of the kernels: inputs() -> (positions A, edge_index, shifts) on the model's device; the
  // committee statistics when requested for this context; add_forces(forces [n,3], model device and dtype)
  // when forces are wanted; returns the energy in kJ/mol. Torch errors become OpenMMExceptions naming the model.
  template <class Inputs, class AddForces>
  double evaluate(const void *context, bool include_forces, Inputs &&inputs, AddForces &&add_forces,
                  long long step = -1)
  {
    try {
      torch::Tensor x, edge_index, shifts;
      std::tie(x, edge_index, shifts) = inputs();
      const bool unc = force.ensembleSize > 1 && uncertainty_requested(force.tag, context, step);
      auto out = compute(x, edge_index, shifts, unc);
      const double energy = output(out, "energy", {}).to(torch::kCPU, torch::kFloat64).item<double>();
      if (include_forces) add_forces(output(out, "forces", {x.size(0), 3}));
      if (unc) record_uncertainty(out, context, step);
      return energy * ENERGY_FROM_MODEL;
    } catch (const OpenMM::OpenMMException &) {
      throw;
    } catch (const std::exception &e) {
      rethrow_evaluation_error(e, force);
    }
  }

  const MLPotForce force;    // a copy: the System may go before the Context
  torch::jit::Module module;
  torch::Device device{torch::kCPU};
  torch::Dtype dtype{torch::kFloat64};
  torch::Tensor types;    // [n_ml] int64 on device
  long long evaluations = 0;
};

}    // namespace MLPot

#endif
