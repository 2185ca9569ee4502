/* pair_style mlpot, layer-wise message passing (mlpot_plugins/contract.py, "Message passing layer by layer";
   mlpot_plugins/message_passing.py is the Python reference of the same scheme).

   Ghost atoms are one model cutoff (+ skin) deep, and only owned atoms are edge centres. Each layer runs on the
   owned rows; between layers the owners' new features are forward-communicated to their ghost images (never
   recomputed). With images folded (the default) all periodic images of one atom ID share one row -- an own
   atom's, or one ghost's for another rank's atom -- and the edges carry the image shifts. The backward pass goes
   layer by layer with torch autograd: the feature gradients of ghost rows are reverse-communicated (summed into
   their owners) before the layer below uses them. The model's mp_outputs() then turns the edge gradients into the
   same outputs as compute(), whose ghost rows (forces, member forces, per-atom virials) PairMLPot
   reverse-communicates as for compute(). */

#include "pair_mlpot_torch.h"

#include "atom.h"
#include "comm.h"
#include "error.h"
#include "json.h"
#include "platform.h"

#include <torch/autograd.h>

#include <algorithm>
#include <cstring>
#include <utility>

using namespace LAMMPS_NS;
using mlpot::MLPotError;

namespace {
const char *const METHODS[] = {"mp_copies", "mp_edges", "mp_embed", "mp_layer", "mp_readout", "mp_outputs"};
}

std::pair<int, int> LAMMPS_NS::layerwise_contract(Error *error, const json &meta, torch::jit::Module &mod,
                                                  const std::string &path)
{
  const std::string fix = "re-export the model with mlpot_plugins.export()";
  std::string have, missing;
  for (const char *name : METHODS) {
    std::string &list = mod.find_method(name) ? have : missing;
    list += (list.empty() ? "" : " ") + std::string(name);
  }
  const bool in_meta = meta.contains("message_passing") && meta["message_passing"].is_object() &&
      !meta["message_passing"].empty();
  if (have.empty() && !in_meta) return {0, 0};
  if (have.empty())
    error->all(FLERR, "pair_style mlpot: metadata.json of model '{}' has a message_passing field but the module "
                      "exports none of the layer-wise methods ({}); {}", path, missing, fix);
  if (!missing.empty() || !in_meta)
    error->all(FLERR, "pair_style mlpot: model '{}' is half a layer-wise model: it exports [{}]{}; {}", path, have,
               missing.empty() ? ", but its metadata.json has no message_passing field" : " but not [" + missing + "]",
               fix);
  const json &mp = meta["message_passing"];
  int values[2] = {0, 0};
  const char *keys[2] = {"layers", "feature_dim"}, *attrs[2] = {"mp_layers", "mp_feature_dim"};
  for (int k = 0; k < 2; k++) {
    if (!mp.contains(keys[k]) || !mp[keys[k]].is_number_integer() || mp[keys[k]].get<int>() < 1)
      error->all(FLERR, "pair_style mlpot: metadata.json of model '{}': message_passing.{} must be an integer >= 1, "
                        "got {}; {}", path, keys[k], mp.contains(keys[k]) ? mp[keys[k]].dump() : "nothing", fix);
    values[k] = mp[keys[k]].get<int>();
    if (!mod.hasattr(attrs[k]) || !mod.attr(attrs[k]).isInt() || mod.attr(attrs[k]).toInt() != values[k])
      error->all(FLERR, "pair_style mlpot: model '{}': metadata.json says message_passing.{} = {} but the module's "
                        "{} is {}; {}", path, keys[k], values[k], attrs[k],
                 mod.hasattr(attrs[k]) ? c10::str(mod.attr(attrs[k])) : "missing", fix);
  }
  return {values[0], values[1]};
}

/* forward communication of the layer features in comm_buf ([nall, comm_stride], owners' rows filled) */
int PairMLPot::pack_forward_comm(int n, int *list_, double *buf, int /*pbc_flag*/, int * /*pbc*/)
{
  // features are invariant under the translations that make periodic images: copied as they are
  const int stride = comm_stride;
  for (int i = 0; i < n; i++)
    std::memcpy(buf + (bigint) i * stride, comm_buf + (bigint) list_[i] * stride, stride * sizeof(double));
  return n * stride;
}

void PairMLPot::unpack_forward_comm(int n, int first, double *buf)
{
  std::memcpy(comm_buf + (bigint) first * comm_stride, buf, (std::size_t) n * comm_stride * sizeof(double));
}

namespace {
// the features (or feature gradients) of a layer as a CPU float64 [rows, width] tensor, width checked
torch::Tensor host_rows(const torch::Tensor &t, int64_t rows, int max_width, const std::string &path,
                        const char *what)
{
  if (t.dim() != 2 || t.size(0) != rows || t.size(1) < 1 || t.size(1) > max_width)
    throw MLPotError(fmt::format("model {}: {} has shape {}, the layer-wise contract needs [{}, width <= {}] "
                                 "(metadata message_passing.feature_dim); re-export the model with "
                                 "mlpot_plugins.export()", path, what, c10::str(t.sizes()), rows, max_width));
  return t.detach().to(torch::kCPU, torch::kFloat64).contiguous();
}
}    // namespace

void PairMLPot::call_model_layered(bool need_virial, bool need_uncertainty)
{
  Model &m = *model;
  torch::AutoGradMode grad_on(true);    // the backward pass below; a host may have switched it off
  const double t0 = platform::walltime();
  double t_comm = 0.0;
  const int nl = m.n_local_rows, nrows = m.nrows;
  const int nall = atom->nlocal + atom->nghost;
  auto topts = torch::TensorOptions().dtype(m.dtype).device(m.device);
  const auto &pos = m.in_pos, &typ = m.in_types, &edges = m.in_edges;
  auto typ_local = typ.narrow(0, 0, nl);
  torch::jit::Module &mod = m.module;

  // one LAMMPS-atom-indexed buffer for both directions
  auto exchange = [&](const torch::Tensor &rows_t, bool forward) {
    const double tc = platform::walltime();
    const int64_t width = rows_t.size(1), nr = rows_t.size(0);
    if (m.mp_buf.size() < (std::size_t) nall * width) m.mp_buf.resize((std::size_t) nall * width);
    double *b = m.mp_buf.data();
    // reverse: every row not set below must add zero; forward: ghost rows are overwritten by the communication
    if (!forward) std::fill(b, b + (std::size_t) nall * width, 0.0);
    const double *src = rows_t.data_ptr<double>();
    for (int64_t r = 0; r < nr; r++)
      std::memcpy(b + (bigint) m.atom_of_row[r] * width, src + r * width, width * sizeof(double));
    comm_buf = b;
    comm_stride = (int) width;
    const int64_t out_rows = forward ? nrows : nl;    // forward: every row from its owner; reverse: owned sums
    const double tm = platform::walltime();
    if (forward)
      comm->forward_comm(this);
    else
      comm->reverse_comm(this);
    time_exchange_mpi += platform::walltime() - tm;
    auto out = torch::empty({out_rows, width}, torch::kFloat64);
    double *dst = out.data_ptr<double>();
    for (int64_t r = 0; r < out_rows; r++)
      std::memcpy(dst + r * width, b + (bigint) m.atom_of_row[r] * width, width * sizeof(double));
    t_comm += platform::walltime() - tc;
    return out.to(topts);
  };

  const int64_t copies = mod.run_method("mp_copies", need_uncertainty).toInt();
  // ghost rows at their image positions; merged images: one row per atom ID, the edge carries the image shift
  auto r = pos.index_select(0, edges[1]) - pos.index_select(0, edges[0]);
  if (merge) r = r + m.in_shifts;
  auto rk = r.unsqueeze(0).expand({copies, -1, -1}).clone().requires_grad_(true);
  // mp_edges returns a list of tensors, or one tensor (layer-wise files exported before stop 26); mp_layer gets
  // detached leaves of them in the same form
  c10::IValue geometry = mod.run_method("mp_edges", rk);
  const bool one_tensor = geometry.isTensor();
  if (!one_tensor && !geometry.isTensorList())
    throw MLPotError(fmt::format("mp_edges() of model {} returned {}, the contract needs a tensor or a list of "
                                 "tensors; re-export it with mlpot_plugins.export()", model_path,
                                 geometry.tagKind()));
  std::vector<torch::Tensor> attr_graph = one_tensor ? std::vector<torch::Tensor>{geometry.toTensor()}
                                                     : geometry.toTensorVector();
  std::vector<torch::Tensor> attr;
  for (const auto &a : attr_graph) attr.push_back(a.detach().requires_grad_(true));
  c10::IValue attr_arg = one_tensor ? c10::IValue(attr[0]) : c10::IValue(c10::List<torch::Tensor>(attr));
  const std::size_t n_attr = attr.size();
  auto h = mod.run_method("mp_embed", typ, copies).toTensor();
  std::vector<torch::Tensor> ins(mp_layers), outs(mp_layers);
  for (int t = 0; t < mp_layers; t++) {
    ins[t] = t == 0 ? h : h.detach().requires_grad_(true);
    outs[t] = mod.run_method("mp_layer", (int64_t) t, ins[t], attr_arg, edges, typ, (int64_t) nl).toTensor();
    if (t + 1 < mp_layers)
      h = exchange(host_rows(outs[t], nl, mp_feature_dim, model_path, "the features of a layer"), true);
  }
  auto energies = mod.run_method("mp_readout", outs[mp_layers - 1], typ_local).toTensor();
  if (energies.dim() != 2 || energies.size(0) != nmembers || energies.size(1) != nl)
    throw MLPotError(fmt::format("model {}: mp_readout returned shape {}, the contract needs [{}, {}]; re-export it "
                                 "with mlpot_plugins.export()", model_path, c10::str(energies.sizes()), nmembers, nl));
  auto target = copies == nmembers ? energies.sum() : energies.sum(1).mean();

  // backward, layer by layer: d target / d (edge geometry, input features); ghost rows summed into owners
  std::vector<torch::Tensor> g_attr(n_attr);
  torch::Tensor g_owned;
  for (int t = mp_layers - 1; t >= 0; t--) {
    std::vector<torch::Tensor> wrt(attr);
    if (t > 0) wrt.push_back(ins[t]);
    auto grads = t == mp_layers - 1
        ? torch::autograd::grad({target}, wrt, {}, false, false, true)
        : torch::autograd::grad({outs[t]}, wrt, {g_owned}, false, false, true);
    for (std::size_t a = 0; a < n_attr; a++)
      if (grads[a].defined()) g_attr[a] = g_attr[a].defined() ? g_attr[a] + grads[a] : grads[a];
    if (t > 0) {
      auto g_rows = grads[n_attr].defined() ? grads[n_attr] : torch::zeros_like(ins[t]);
      g_owned = exchange(host_rows(g_rows, nrows, mp_feature_dim, model_path, "a feature gradient"), false);
    }
  }
  // d attr / d r applied to the accumulated attr gradients (pieces that do not depend on r add nothing)
  std::vector<torch::Tensor> geo_out, geo_grad;
  for (std::size_t a = 0; a < n_attr; a++)
    if (attr_graph[a].requires_grad()) {
      geo_out.push_back(attr_graph[a]);
      geo_grad.push_back(g_attr[a].defined() ? g_attr[a] : torch::zeros_like(attr[a]));
    }
  torch::Tensor g_r;
  if (!geo_out.empty()) g_r = torch::autograd::grad(geo_out, {rk}, geo_grad, false, false, true)[0];
  if (!g_r.defined()) g_r = torch::zeros_like(rk);
  c10::IValue result = mod.run_method("mp_outputs", r, g_r, edges, (int64_t) nrows, energies.detach(),
                                      need_virial, need_uncertainty);
  time_model += platform::walltime() - t0 - t_comm;
  time_exchange += t_comm;
  if (!result.isGenericDict())
    throw MLPotError(fmt::format("mp_outputs() of model {} did not return a dict; re-export it with "
                                 "mlpot_plugins.export()", model_path));
  m.out = std::move(result);
}
