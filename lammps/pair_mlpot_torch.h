/* libtorch state of pair_style mlpot, shared by its translation units: pair_mlpot.cpp (atomistic models, the
   single-call path), pair_mlpot_layered.cpp (layer-wise message passing) and pair_mlpot_lattice.cpp (lattice
   models). Internal: only those include it (torch headers). */
#ifndef LMP_PAIR_MLPOT_TORCH_H
#define LMP_PAIR_MLPOT_TORCH_H

#include "json_fwd.h"
#include "pair_mlpot.h"

#include "fmt/format.h"

#include <torch/script.h>

#include <stdexcept>
#include <string>
#include <unordered_map>
#include <utility>
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
  std::vector<double> shifts;       // [E, 3] model-unit image shifts when periodic images are folded/merged
  std::vector<int> owner;           // [nall] folded/merged: the atom whose row each local/ghost atom shares
  std::unordered_map<tagint, int> first_of_tag;    // folded/merged: tag -> its first local (else ghost) index
  c10::IValue out;                  // the model's output dict of this evaluation
  int row(int a)                    // the row of LAMMPS atom a, given the next row if it has none yet
  {
    int &r = row_of_atom[a];
    if (r < 0) {
      r = (int) atom_of_row.size();
      atom_of_row.push_back(a);
    }
    return r;
  }
  // the inputs of this evaluation where the model runs (build_inputs, host or device edges): positions
  // [nrows, 3] and shifts [E, 3] in the model's dtype, types [nrows], edges [2, E]
  torch::Tensor in_pos, in_types, in_edges, in_shifts;
  // edges device: every pair of the neighbour list (cutoff + skin) as rows and LAMMPS indices, put on the
  // device once per neighbour-list build; each step then copies only the positions there
  bigint cand_ncalls = -1;          // neighbor->ncalls of the list the candidates come from
  const void *cand_list = nullptr;  // ... and that list, with the atom counts of that build
  int cand_nlocal = -1, cand_nall = -1;
  std::vector<int64_t> c_host;      // [C, 3] staging: centre row, neighbour row, neighbour's LAMMPS index
  torch::Tensor c_src, c_dst;       // [C] rows of the centre and of the neighbour (its owner's row when folded)
  torch::Tensor c_j;                // [C] LAMMPS index of the neighbour (an image of its row's atom when folded)
  torch::Tensor row_atom;           // [nrows] LAMMPS index of the atom of each row
  int n_local_rows = 0, nrows = 0;
  int64_t nedges = 0;

  // lattice kind (pair_mlpot_lattice.cpp): this rank's block of sites, rebuilt every step
  bool lattice = false;
  int halo = 0;                     // block halo in sites: interaction_range, or fallback_range with fallback
  int64_t L = 0;                    // the lattice is L x L sites (set by init_style from the box)
  double spacing = 1.0;             // lattice spacing a (LAMMPS length units)
  int64_t i0 = 0, j0 = 0;           // unwrapped site index of the block's first slot
  int64_t nx = 0, ny = 0;           // interior (owned rectangle) size; the block is (nx + 2 halo) x (ny + 2 halo)
  std::vector<int64_t> site;        // [nall, 2] unwrapped (i, j) of every local and ghost atom
  std::vector<int> slot_atom;       // [block sites] LAMMPS index of the atom in each block slot (-1: none)
  std::vector<double> qblock;       // [block sites] Q = z of each slot
  torch::Tensor fallback_mask;      // [nx, ny] of the last fallback evaluation
};

namespace mlpot {
// a problem found in the inputs or outputs of one evaluation, reported as is
struct MLPotError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// an output of the model as a contiguous CPU float64 tensor with the contract's shape
inline torch::Tensor model_output(const c10::IValue &result, const char *key, const std::string &path,
                                  std::vector<int64_t> shape)
{
  const auto out = result.toGenericDict();
  if (!out.contains(key))
    throw MLPotError(fmt::format("model {} did not return '{}' (see mlpot_plugins/contract.py); re-export it "
                                 "with mlpot_plugins.export()", path, key));
  auto t = out.at(key).toTensor().detach().to(torch::kCPU, torch::kFloat64).contiguous();
  if (!t.sizes().equals(shape))
    throw MLPotError(fmt::format("model {} returned '{}' of shape {}, the contract needs {}", path, key,
                                 c10::str(t.sizes()), c10::str(c10::IntArrayRef(shape))));
  return t;
}
}    // namespace mlpot

// metadata message_passing {layers, feature_dim} checked against the module (the rule of
// mlpot_plugins.model_file.check_module_against_metadata); {0, 0} for a model without the layer-wise methods
std::pair<int, int> layerwise_contract(class Error *error, const json &meta, torch::jit::Module &mod,
                                       const std::string &path);

}    // namespace LAMMPS_NS

#endif
