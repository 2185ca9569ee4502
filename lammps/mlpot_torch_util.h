/* Helpers shared by the libtorch code of the LAMMPS plugin (pair_mlpot.cpp) and the OpenMM plugin
   (openmm/mlpot_reference.cpp, which finds this header through the LAMMPS plugin's source folder). */
#ifndef MLPOT_TORCH_UTIL_H
#define MLPOT_TORCH_UTIL_H

#include <torch/script.h>

#include <string>
#include <vector>

namespace mlpot_torch {

// the useful line of a torch error: without the C++ backtrace, and for TorchScript interpreter errors
// (whose first line is generic) the last line, which holds the Python-level exception
inline std::string torch_message(const std::exception &e)
{
  const auto *c10e = dynamic_cast<const c10::Error *>(&e);
  std::string text = c10e ? c10e->what_without_backtrace() : e.what();
  std::vector<std::string> lines;
  std::size_t start = 0;
  while (start <= text.size()) {
    auto end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(start, end - start);
    if (line.find_first_not_of(" \t\r") != std::string::npos) lines.push_back(line);
    start = end + 1;
  }
  if (lines.empty()) return "unknown error";
  if (lines.front().find("failed in the TorchScript interpreter") != std::string::npos) {
    auto last = lines.back();
    return last.substr(last.find_first_not_of(" \t"));
  }
  return lines.front();
}

inline std::string dtype_name(torch::ScalarType t)
{
  switch (t) {
    case torch::kFloat64: return "float64";
    case torch::kFloat32: return "float32";
    case torch::kFloat16: return "float16";
    case torch::kBFloat16: return "bfloat16";
    default: return c10::toString(t);
  }
}

// the edge count changes every step: specialise on dynamic shapes instead of recompiling for each new
// one (same setting as mlpot_plugins.model_file.use_dynamic_shapes on the Python side)
inline void use_dynamic_shapes()
{
  torch::jit::FusionStrategy strategy = {{torch::jit::FusionBehavior::DYNAMIC, 2}};
  torch::jit::setFusionStrategy(strategy);
}

// cast the module's floating-point parameters and buffers to DTYPE and nothing else (the rule of Python's
// Module.to(dtype)): torch::jit::Module::to(dtype) casts integer buffers too (a committee's type maps, species
// numbers, index tables), which then fail as indices (index_select, one_hot)
inline void cast_floating(torch::jit::Module &module, torch::ScalarType dtype)
{
  torch::NoGradGuard no_grad;
  for (at::Tensor t : module.parameters(true))
    if (t.is_floating_point() && t.scalar_type() != dtype) t.set_data(t.to(dtype));
  for (at::Tensor t : module.buffers(true))
    if (t.is_floating_point() && t.scalar_type() != dtype) t.set_data(t.to(dtype));
}

}    // namespace mlpot_torch

#endif
