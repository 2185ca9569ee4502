/* pair_style mlpot internals shared by its torch translation units (pair_mlpot.cpp: loading, the single-call
   path, outputs; pair_mlpot_layered.cpp: layer-wise message passing). Includes libtorch: never include it from
   a header other translation units see. */
#ifndef LMP_PAIR_MLPOT_MODEL_H
#define LMP_PAIR_MLPOT_MODEL_H

#include "json_fwd.h"
#include "pair_mlpot.h"

#include <torch/script.h>

#include <stdexcept>
#include <string>
#include <vector>

namespace LAMMPS_NS {

struct PairMLPot::Model {
  torch::jit::Module module;
  torch::Device device{torch::kCPU};
  torch::Dtype dtype{torch::kFloat64};
  // buffers reused from step to step (capacity kept): no per-step allocation on the CPU side
  std::vector<int> row_of_atom;     // LAMMPS local+ghost index -> model row (-1: not seen)
  std::vector<int> atom_of_row;     // model row -> LAMMPS index
  std::vector<int64_t> edges;       // src of each edge, then (after build_inputs) dst: the [2, E] input
  std::vector<int64_t> dst;         // dst of each edge while the list is built
  std::vector<int> accepted;        // neighbours of one centre within the cutoff
  std::vector<double> accepted_rsq;
  std::vector<double> pos;          // [nrows, 3] model-unit positions
  std::vector<int64_t> types;       // [nrows]
  std::vector<double> local_f;      // [K, n_local_rows, 3] member forces after reverse communication
  std::vector<double> mp_buf;       // [nall, width] layer features or their gradients per LAMMPS atom (layered)
  torch::Tensor zero_shifts;        // [capacity, 3] zeros, reused: ghosts carry the image positions
  c10::IValue out;                  // the model's output dict of this evaluation
  int n_local_rows = 0, nrows = 0;
  int64_t nedges = 0;
};

// a problem found in the inputs or outputs of one evaluation, reported as is by PairMLPot::evaluate
struct MLPotError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// metadata message_passing {layers, feature_dim} checked against the module (the rule of
// mlpot_plugins.model_file.check_module_against_metadata); {0, 0} for a model without the layer-wise methods
std::pair<int, int> layerwise_contract(class Error *error, const json &meta, torch::jit::Module &mod,
                                       const std::string &path);

}    // namespace LAMMPS_NS

#endif
