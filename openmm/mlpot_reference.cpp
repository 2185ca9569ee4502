/* The libtorch translation unit of the OpenMM plugin: model loading, neighbour lists, the committee
   statistics registry (read from Python through the extern "C" mlpot_openmm_* functions below) and the
   kernel of the Reference and CPU platforms. */
#include "MLPotKernels.h"
#include "mlpot_model.h"
#include "mlpot_torch_util.h"

#include "openmm/OpenMMException.h"
#include "openmm/KernelFactory.h"
#include "openmm/reference/ReferencePlatform.h"

#include <c10/util/hash.h>
#include <torch/cuda.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>

#ifndef MLPOT_PRETRAINED_DIR
#define MLPOT_PRETRAINED_DIR ""
#endif

using namespace OpenMM;
using mlpot_torch::dtype_name;
using mlpot_torch::torch_message;

namespace MLPot {

namespace {

std::string file_sha1(const std::string &path)
{
  std::ifstream in(path, std::ios::binary);
  std::ostringstream buf;
  buf << in.rdbuf();
  return c10::sha1(buf.str()).str();
}

// the recorded model file if it still has its content, else a file of the same name and content in
// $MLPOT_MODEL_DIR or among the shipped models (the search of mlpot_plugins.openmm.python_force.find_model)
std::string find_model(const MLPotForce &f)
{
  namespace fs = std::filesystem;
  std::vector<fs::path> candidates{fs::path(f.modelPath)};
  const fs::path name = fs::path(f.modelPath).filename();
  if (const char *dirs = std::getenv("MLPOT_MODEL_DIR")) {
    std::stringstream ss(dirs);
    std::string d;
    while (std::getline(ss, d, ':'))
      if (!d.empty()) candidates.push_back(fs::path(d) / name);
  }
  if (std::strlen(MLPOT_PRETRAINED_DIR)) candidates.push_back(fs::path(MLPOT_PRETRAINED_DIR) / name);
  std::vector<std::string> changed;
  for (const auto &c : candidates) {
    std::error_code ec;
    if (!fs::is_regular_file(c, ec)) continue;
    if (file_sha1(c.string()) == f.modelSha1) return c.string();
    changed.push_back(c.string());
  }
  const char *env = std::getenv("MLPOT_MODEL_DIR");
  std::string why = changed.empty()
      ? "model file '" + f.modelPath + "' no longer exists (also looked in $MLPOT_MODEL_DIR='" + (env ? env : "") + "')"
      : "model file(s) '" + changed.front() + "'" + (changed.size() > 1 ? " (and others)" : "") +
        " changed since the force was created";
  throw OpenMMException("mlpot: " + why + " (content SHA-1 " + f.modelSha1 + "). Put the model file back at '" +
                        f.modelPath + "', or set MLPOT_MODEL_DIR to a folder holding a copy of it, or re-create "
                        "the force with mlpot_plugins.openmm.create_force(...)");
}

struct Registry {
  std::mutex lock;
  std::map<std::pair<std::string, const void *>, Uncertainty> stats;
  std::map<std::pair<std::string, const void *>, int> requests;    // 1: next evaluation, 2: every evaluation
  std::map<std::pair<std::string, const void *>, long long> armed;    // the evaluation at this step count
};

Registry &registry()
{
  static Registry r;
  return r;
}

}    // namespace

bool uncertainty_requested(const std::string &tag, const void *context, long long step)
{
  auto &r = registry();
  std::lock_guard<std::mutex> g(r.lock);
  auto at = r.armed.find({tag, context});
  if (at != r.armed.end() && at->second == step) {
    r.armed.erase(at);
    return true;
  }
  auto it = r.requests.find({tag, context});
  if (it == r.requests.end()) return false;
  if (it->second == 1) r.requests.erase(it);
  return true;
}

bool uncertainty_pending(const std::string &tag, const void *context, long long step)
{
  auto &r = registry();
  std::lock_guard<std::mutex> g(r.lock);
  auto at = r.armed.find({tag, context});
  return (at != r.armed.end() && at->second == step) || r.requests.count({tag, context}) > 0;
}

void store_uncertainty(const std::string &tag, const void *context, Uncertainty &&u)
{
  auto &r = registry();
  std::lock_guard<std::mutex> g(r.lock);
  r.stats[{tag, context}] = std::move(u);
}

void forget_uncertainty(const std::string &tag, const void *context)
{
  auto &r = registry();
  std::lock_guard<std::mutex> g(r.lock);
  r.stats.erase({tag, context});
  r.requests.erase({tag, context});
  r.armed.erase({tag, context});
}

[[noreturn]] void rethrow_evaluation_error(const std::exception &e, const MLPotForce &force)
{
  if (dynamic_cast<const OpenMMException *>(&e)) throw OpenMMException(e.what());
  throw OpenMMException("mlpot: model '" + force.modelPath + "' failed: " + torch_message(e));
}

Model::Model(const MLPotForce &f, const std::string &device_name) : force(f)
{
  try {
    device = torch::Device(device_name);
  } catch (const std::exception &e) {
    throw OpenMMException("mlpot: device '" + device_name + "' is not a torch device (" + torch_message(e) +
                          "); use 'cpu' or 'cuda'");
  }
  if (device.is_cuda() && !torch::cuda::is_available())
    throw OpenMMException("mlpot: device '" + device_name + "' was asked for but this torch sees no CUDA GPU; "
                          "use device='cpu'");
  const std::string path = find_model(f);
  mlpot_torch::use_dynamic_shapes();
  try {
    module = torch::jit::load(path, device);
  } catch (const std::exception &e) {
    throw OpenMMException("mlpot: model file '" + path + "' cannot be loaded by torch (" + torch_message(e) +
                          "); re-export it with mlpot_plugins.export()");
  }
  module.eval();
  if (!module.find_method("compute"))
    throw OpenMMException("mlpot: model '" + path + "' has no compute method (not an atomistic mlpot model); "
                          "use an atomistic model");
  if (f.ensembleSize > 1 && !module.find_method("force_uncertainty"))
    throw OpenMMException("mlpot: model '" + path + "' is a committee without force_uncertainty; re-export it");
  dtype = f.precision == "float32" ? torch::kFloat32 : torch::kFloat64;
  mlpot_torch::cast_floating(module, dtype);
  types = torch::tensor(std::vector<int64_t>(f.types.begin(), f.types.end()), torch::kInt64).to(device);
}

void Model::check_box(const Vec3 box[3]) const
{
  bool is_default = true;
  for (int i = 0; i < 3; i++)
    for (int j = 0; j < 3; j++) is_default = is_default && box[i][j] == (i == j ? OPENMM_DEFAULT_BOX_NM : 0.0);
  if (is_default && !force.boxKnownDefault)
    throw OpenMMException("mlpot: the force is periodic but the System's box is OpenMM's default 2 nm cube, i.e. "
                          "no box was set; call system.setDefaultPeriodicBoxVectors(...) (or "
                          "context.setPeriodicBoxVectors) with the real box, or use periodic=False (a box that "
                          "really is a 2 nm cube: pass a Topology with that box)");
  for (int i = 0; i < 3; i++)
    for (int j = 0; j < 3; j++)
      if (!std::isfinite(box[i][j]))
        throw OpenMMException("mlpot: the periodic cell is not finite (NaN or inf); give a valid cell");
  // heights: volume / area of the face spanned by the other two vectors
  const Vec3 a = box[0] * LENGTH_TO_MODEL, b = box[1] * LENGTH_TO_MODEL, c = box[2] * LENGTH_TO_MODEL;
  const double volume = std::fabs(a.dot(b.cross(c)));
  const Vec3 faces[3] = {b.cross(c), c.cross(a), a.cross(b)};
  for (int k = 0; k < 3; k++) {
    const double area = std::sqrt(faces[k].dot(faces[k]));
    const double h = area > 0 ? volume / area : 0.0;
    if (h < MIN_CELL_HEIGHT)
      throw OpenMMException("mlpot: the periodic cell is flat or degenerate: its height along lattice vector " +
                            std::to_string(k) + " is " + std::to_string(h) + " A (minimum 0.1 A); give a proper "
                            "cell or use periodic=False");
  }
}

namespace {
void inverse3(const double m[9], double inv[9])
{
  const double det = m[0] * (m[4] * m[8] - m[5] * m[7]) - m[1] * (m[3] * m[8] - m[5] * m[6]) +
                     m[2] * (m[3] * m[7] - m[4] * m[6]);
  inv[0] = (m[4] * m[8] - m[5] * m[7]) / det;
  inv[1] = (m[2] * m[7] - m[1] * m[8]) / det;
  inv[2] = (m[1] * m[5] - m[2] * m[4]) / det;
  inv[3] = (m[5] * m[6] - m[3] * m[8]) / det;
  inv[4] = (m[0] * m[8] - m[2] * m[6]) / det;
  inv[5] = (m[2] * m[3] - m[0] * m[5]) / det;
  inv[6] = (m[3] * m[7] - m[4] * m[6]) / det;
  inv[7] = (m[1] * m[6] - m[0] * m[7]) / det;
  inv[8] = (m[0] * m[4] - m[1] * m[3]) / det;
}

// at most a few cells per atom (a sparse cluster or a huge box would otherwise allocate and visit
// billions of empty cells): halve the largest count until it fits; cells only get larger, so the search
// reach (computed afterwards) stays correct
void limit_cells(int nc[3], int n)
{
  const long long most = std::max(64LL, 4LL * n);
  while ((long long) nc[0] * nc[1] * nc[2] > most) {
    int k = nc[0] >= nc[1] && nc[0] >= nc[2] ? 0 : (nc[1] >= nc[2] ? 1 : 2);
    nc[k] = std::max(1, nc[k] / 2);
  }
}

[[noreturn]] void coincident(int i, int j, double d)
{
  const std::string what = i == j ? "an atom and its own periodic image" : "two atoms";
  throw OpenMMException("mlpot: coincident atoms: " + what + " (ML-region indices " + std::to_string(i) + " and " +
                        std::to_string(j) + ") are " + std::to_string(d) + " A apart (minimum 0.0001 A); remove "
                        "the duplicate atom or fix the coordinates");
}
}    // namespace

void Model::neighbor_list(std::vector<double> &x, const double *box, std::vector<int64_t> &edges,
                          std::vector<double> &shifts) const
{
  const int n = (int) (x.size() / 3);
  const double rc = force.cutoff, rc2 = rc * rc;
  for (int i = 0; i < n; i++)
    for (int d = 0; d < 3; d++)
      if (!std::isfinite(x[3 * i + d]))
        throw OpenMMException("mlpot: position of ML-region atom " + std::to_string(i) + " is not finite (NaN or "
                              "inf): the simulation has blown up or was given bad coordinates; use a smaller time "
                              "step or check the input structure");
  // a cell H (rows: lattice vectors) and origin: the box, or (open) the bounding box, at least a cutoff wide
  double H[9] = {0}, origin[3] = {0, 0, 0};
  const bool periodic = box != nullptr;
  if (periodic) {
    std::copy(box, box + 9, H);
  } else {
    double lo[3] = {0, 0, 0}, hi[3] = {0, 0, 0};
    for (int d = 0; d < 3; d++) {
      lo[d] = hi[d] = n ? x[d] : 0.0;
      for (int i = 1; i < n; i++) lo[d] = std::min(lo[d], x[3 * i + d]), hi[d] = std::max(hi[d], x[3 * i + d]);
      origin[d] = lo[d];
      H[4 * d] = std::max(hi[d] - lo[d], rc) * (1 + 1e-12) + 1e-12;
    }
  }
  double Hinv[9];
  inverse3(H, Hinv);
  // cells per direction (each at least a cutoff high) and the cell offsets to search
  int nc[3], reach[3];
  double height[3];
  for (int k = 0; k < 3; k++) {
    height[k] = 1.0 / std::sqrt(Hinv[k] * Hinv[k] + Hinv[3 + k] * Hinv[3 + k] + Hinv[6 + k] * Hinv[6 + k]);
    nc[k] = (int) std::max(1.0, std::min(1024.0, std::floor(height[k] / rc)));
  }
  limit_cells(nc, n);
  for (int k = 0; k < 3; k++) {
    reach[k] = (int) std::ceil(rc * nc[k] / height[k] - 1e-12);
    if (!periodic) reach[k] = std::min(reach[k], nc[k] - 1);
  }
  // wrap (periodic) and bin
  std::vector<int> cell_of(n);
  const int ncells = nc[0] * nc[1] * nc[2];
  std::vector<int> start(ncells + 1, 0), order(n);
  for (int i = 0; i < n; i++) {
    double s[3];
    int c[3];
    for (int k = 0; k < 3; k++) {
      s[k] = 0;
      for (int d = 0; d < 3; d++) s[k] += (x[3 * i + d] - origin[d]) * Hinv[3 * d + k];
      if (periodic) s[k] -= std::floor(s[k]);
      c[k] = std::min(nc[k] - 1, std::max(0, (int) std::floor(s[k] * nc[k])));
    }
    if (periodic)
      for (int d = 0; d < 3; d++) x[3 * i + d] = s[0] * H[d] + s[1] * H[3 + d] + s[2] * H[6 + d];
    cell_of[i] = (c[0] * nc[1] + c[1]) * nc[2] + c[2];
    start[cell_of[i] + 1]++;
  }
  for (int c = 0; c < ncells; c++) start[c + 1] += start[c];
  {
    std::vector<int> fill(start.begin(), start.end() - 1);
    for (int i = 0; i < n; i++) order[fill[cell_of[i]]++] = i;
  }
  std::vector<int64_t> src, dst;
  shifts.clear();
  src.reserve(edges.capacity() / 2);
  dst.reserve(edges.capacity() / 2);
  for (int cx = 0; cx < nc[0]; cx++)
    for (int cy = 0; cy < nc[1]; cy++)
      for (int cz = 0; cz < nc[2]; cz++) {
        const int c = (cx * nc[1] + cy) * nc[2] + cz;
        if (start[c] == start[c + 1]) continue;
        for (int dx = -reach[0]; dx <= reach[0]; dx++)
          for (int dy = -reach[1]; dy <= reach[1]; dy++)
            for (int dz = -reach[2]; dz <= reach[2]; dz++) {
              int m[3] = {cx + dx, cy + dy, cz + dz}, image[3] = {0, 0, 0};
              bool outside = false;
              for (int k = 0; k < 3; k++) {
                if (periodic) {
                  image[k] = (int) std::floor((double) m[k] / nc[k]);
                  m[k] -= image[k] * nc[k];
                } else if (m[k] < 0 || m[k] >= nc[k]) {
                  outside = true;
                }
              }
              if (outside) continue;
              const int c2 = (m[0] * nc[1] + m[1]) * nc[2] + m[2];
              const bool self_image = image[0] == 0 && image[1] == 0 && image[2] == 0;
              double sh[3];
              for (int d = 0; d < 3; d++) sh[d] = image[0] * H[d] + image[1] * H[3 + d] + image[2] * H[6 + d];
              for (int a = start[c]; a < start[c + 1]; a++) {
                const int i = order[a];
                const double *xi = &x[3 * i];
                for (int b = start[c2]; b < start[c2 + 1]; b++) {
                  const int j = order[b];
                  if (j == i && self_image) continue;
                  const double *xj = &x[3 * j];
                  const double rx = xj[0] + sh[0] - xi[0], ry = xj[1] + sh[1] - xi[1], rz = xj[2] + sh[2] - xi[2];
                  const double r2 = rx * rx + ry * ry + rz * rz;
                  if (r2 < rc2) {
                    if (r2 < MIN_DISTANCE * MIN_DISTANCE) coincident(i, j, std::sqrt(r2));
                    src.push_back(i);
                    dst.push_back(j);
                    shifts.insert(shifts.end(), sh, sh + 3);
                  }
                }
              }
            }
      }
  edges.clear();
  edges.reserve(2 * src.size());
  edges.insert(edges.end(), src.begin(), src.end());
  edges.insert(edges.end(), dst.begin(), dst.end());
}

void Model::neighbor_list_torch(torch::Tensor &x, const torch::Tensor &box, torch::Tensor &edge_index,
                                torch::Tensor &shifts) const
{
  // padded cell list in torch operations (any device, no host copy of the positions):
  // atoms are binned, every atom is paired with the atoms of the cells within reach, pairs within the cutoff kept
  const double rc = force.cutoff;
  auto opts = x.options();
  const int64_t n = x.size(0);
  if (!torch::isfinite(x).all().item<bool>())
    throw OpenMMException("mlpot: a position in the ML region is not finite (NaN or inf): the simulation has "
                          "blown up or was given bad coordinates; use a smaller time step or check the input");
  const bool periodic = box.defined();
  torch::Tensor H, origin;
  if (periodic) {
    H = box.to(opts);
    origin = torch::zeros({3}, opts);
  } else {
    auto lo = std::get<0>(x.min(0)), hi = std::get<0>(x.max(0));
    origin = lo;
    H = torch::diag(torch::clamp(hi - lo, rc) * (1 + 1e-12) + 1e-12);
  }
  auto Hinv = torch::linalg_inv(H);
  auto heights = 1.0 / Hinv.norm(2, 0);    // column norms
  auto hcpu = heights.to(torch::kCPU, torch::kFloat64);
  int nci[3];
  int64_t nc[3], reach[3];
  for (int k = 0; k < 3; k++) nci[k] = (int) std::max(1.0, std::min(1024.0, std::floor(hcpu[k].item<double>() / rc)));
  limit_cells(nci, (int) n);
  for (int k = 0; k < 3; k++) {
    nc[k] = nci[k];
    reach[k] = (int64_t) std::ceil(rc * nc[k] / hcpu[k].item<double>() - 1e-12);
    if (!periodic) reach[k] = std::min(reach[k], nc[k] - 1);
  }
  auto s = torch::matmul(x - origin, Hinv);
  if (periodic) {
    s = s - torch::floor(s);
    x = torch::matmul(s, H);
  }
  auto ncv = torch::tensor({nc[0], nc[1], nc[2]}, torch::TensorOptions().dtype(torch::kInt64).device(x.device()));
  auto c = torch::minimum(torch::clamp(torch::floor(s * ncv.to(opts)).to(torch::kInt64), 0), ncv - 1);
  auto cell = (c.select(1, 0) * nc[1] + c.select(1, 1)) * nc[2] + c.select(1, 2);
  // atoms sorted by cell, padded table [ncells, max per cell]
  auto sorted = torch::sort(cell);
  auto cell_sorted = std::get<0>(sorted), order = std::get<1>(sorted);
  const int64_t ncells = nc[0] * nc[1] * nc[2];
  auto counts = torch::bincount(cell, {}, ncells);
  const int64_t maxc = n ? counts.max().item<int64_t>() : 0;
  auto first = torch::cumsum(counts, 0) - counts;
  auto slot = torch::arange(n, cell.options()) - first.index_select(0, cell_sorted);
  auto table = torch::full({ncells, std::max<int64_t>(maxc, 1)}, -1, cell.options());
  table.index_put_({cell_sorted, slot}, order);
  std::vector<torch::Tensor> src_all, dst_all, img_all;
  for (int64_t dx = -reach[0]; dx <= reach[0]; dx++)
    for (int64_t dy = -reach[1]; dy <= reach[1]; dy++)
      for (int64_t dz = -reach[2]; dz <= reach[2]; dz++) {
        auto m = c + torch::tensor({dx, dy, dz}, c.options());
        auto image = torch::floor_divide(m, ncv);
        auto valid = torch::ones({n}, c.options().dtype(torch::kBool));
        if (periodic) {
          m = m - image * ncv;
        } else {
          valid = ((m >= 0) & (m < ncv)).all(1);
          m = torch::minimum(torch::clamp(m, 0), ncv - 1);
          image = torch::zeros_like(image);
        }
        auto c2 = (m.select(1, 0) * nc[1] + m.select(1, 1)) * nc[2] + m.select(1, 2);
        auto cand = table.index_select(0, c2);    // [n, maxc]
        auto ok = (cand >= 0) & valid.unsqueeze(1);
        auto idx = torch::nonzero(ok);
        auto i = idx.select(1, 0), j = cand.index({idx.select(1, 0), idx.select(1, 1)});
        src_all.push_back(i);
        dst_all.push_back(j);
        img_all.push_back(image.index_select(0, i));
      }
  auto i = torch::cat(src_all), j = torch::cat(dst_all);
  auto sh = torch::matmul(torch::cat(img_all).to(opts), H);
  auto r = x.index_select(0, j) + sh - x.index_select(0, i);
  auto d2 = (r * r).sum(1);
  auto self = (i == j) & (sh.abs().sum(1) == 0);
  auto keep = (d2 < rc * rc) & ~self;
  i = i.masked_select(keep);
  j = j.masked_select(keep);
  sh = sh.index({keep});
  d2 = d2.masked_select(keep);
  if (d2.numel() && d2.min().item<double>() < MIN_DISTANCE * MIN_DISTANCE) {
    auto k = d2.argmin().item<int64_t>();
    coincident((int) i[k].item<int64_t>(), (int) j[k].item<int64_t>(), std::sqrt(d2[k].item<double>()));
  }
  edge_index = torch::stack({i, j});
  shifts = sh;
}

c10::impl::GenericDict Model::compute(const torch::Tensor &x, const torch::Tensor &edge_index,
                                      const torch::Tensor &shifts, bool need_uncertainty)
{
  std::vector<c10::IValue> inputs{x, types, edge_index, shifts, (int64_t) x.size(0), false, need_uncertainty};
  c10::IValue result = module.get_method("compute")(inputs);
  if (!result.isGenericDict())
    throw OpenMMException("mlpot: compute() of model '" + force.modelPath + "' did not return a dict; re-export it "
                          "with mlpot_plugins.export()");
  evaluations++;
  return result.toGenericDict();
}

torch::Tensor Model::output(const c10::impl::GenericDict &out, const char *key, std::vector<int64_t> shape) const
{
  if (!out.contains(key))
    throw OpenMMException("mlpot: model '" + force.modelPath + "' did not return '" + key +
                          "' (see mlpot_plugins/contract.py); re-export it with mlpot_plugins.export()");
  auto t = out.at(key).toTensor().detach();
  if (!t.sizes().equals(shape))
    throw OpenMMException("mlpot: model '" + force.modelPath + "' returned '" + key + "' of shape " +
                          c10::str(t.sizes()) + ", the contract needs " + c10::str(c10::IntArrayRef(shape)));
  return t;
}

void Model::record_uncertainty(const c10::impl::GenericDict &out, const void *context, long long step)
{
  const int64_t n = types.size(0);
  Uncertainty u;
  u.evaluation = evaluations;
  u.step = step;
  auto fs = output(out, "forces_std", {n}).to(torch::kCPU, torch::kFloat64).contiguous();
  auto es = output(out, "energies_std", {n}).to(torch::kCPU, torch::kFloat64).contiguous();
  u.forces_std.assign(fs.data_ptr<double>(), fs.data_ptr<double>() + n);
  u.energies_std.assign(es.data_ptr<double>(), es.data_ptr<double>() + n);
  u.energy_std = output(out, "energy_std", {}).to(torch::kCPU, torch::kFloat64).item<double>();
  store_uncertainty(force.tag, context, std::move(u));
}

namespace {

class ReferenceCalcMLPotForceKernel : public CalcMLPotForceKernel {
 public:
  using CalcMLPotForceKernel::CalcMLPotForceKernel;
  ~ReferenceCalcMLPotForceKernel() override
  {
    if (model && context_owner) forget_uncertainty(model->force.tag, context_owner);    // a new Context may get
  }                                                                                     // this address
  void initialize(const System &, const MLPotForce &force) override
  {
    model = std::make_unique<Model>(force, force.device);
    // the CUDA kernel's neighbour list (torch operations), here on the CPU: how the tests check it
    const char *nl = std::getenv("MLPOT_OPENMM_TORCH_NEIGHBORS");
    torch_neighbors = nl != nullptr && std::strcmp(nl, "1") == 0;
  }
  double execute(ContextImpl &context, bool includeForces, bool) override
  {
    auto *data = reinterpret_cast<ReferencePlatform::PlatformData *>(context.getPlatformData());
    const std::vector<Vec3> &pos = *data->positions;
    std::vector<Vec3> &frc = *data->forces;
    const MLPotForce &f = model->force;
    const int n = (int) f.particles.size();
    if (n == 0) return 0.0;
    x.resize(3 * (std::size_t) n);
    for (int k = 0; k < n; k++)
      for (int d = 0; d < 3; d++) x[3 * k + d] = pos[f.particles[k]][d] * LENGTH_TO_MODEL;
    double box[9] = {0, 0, 0, 0, 0, 0, 0, 0, 0};
    if (f.periodic) {
      Vec3 v[3];
      context.getPeriodicBoxVectors(v[0], v[1], v[2]);
      model->check_box(v);
      for (int i = 0; i < 3; i++)
        for (int d = 0; d < 3; d++) box[3 * i + d] = v[i][d] * LENGTH_TO_MODEL;
    }
    context_owner = &context.getOwner();
    const long long step = context.getStepCount();
    // the same positions and box as the last evaluation (a State's energy at a report step, then the
    // integrator's next step): its result stands, unless statistics are wanted now
    if (have_last && x == last_x && std::equal(box, box + 9, last_box) &&
        !uncertainty_pending(f.tag, context_owner, step)) {
      if (includeForces)
        for (int k = 0; k < n; k++)
          for (int d = 0; d < 3; d++) frc[f.particles[k]][d] += last_f[3 * k + d] * FORCE_FROM_MODEL;
      return last_energy;
    }
    have_last = false;
    last_x = x;
    std::copy(box, box + 9, last_box);
    if (!torch_neighbors) model->neighbor_list(x, f.periodic ? box : nullptr, edges, shifts);
    auto inputs = [&]() {
      auto topts = torch::TensorOptions().dtype(model->dtype).device(model->device);
      // the CPU buffers are wrapped, not copied (a copy happens only for float32 models or a GPU)
      auto xt = torch::from_blob(x.data(), {n, 3}, torch::kFloat64).to(topts);
      torch::Tensor et, st;
      if (torch_neighbors) {
        xt = xt.clone();
        torch::Tensor bt;
        if (f.periodic) bt = torch::from_blob(box, {3, 3}, torch::kFloat64).to(topts);
        model->neighbor_list_torch(xt, bt, et, st);
      } else {
        const int64_t ne = (int64_t) edges.size() / 2;
        et = torch::from_blob(edges.data(), {2, ne}, torch::kInt64).to(model->device);
        st = torch::from_blob(shifts.data(), {ne, 3}, torch::kFloat64).to(topts);
      }
      return std::make_tuple(xt, et, st);
    };
    auto add_forces = [&](const torch::Tensor &forces) {    // always called: the forces are kept for reuse
      auto ft = forces.to(torch::kCPU, torch::kFloat64).contiguous();
      const double *fp = ft.data_ptr<double>();
      last_f.assign(fp, fp + 3 * (std::size_t) n);
      if (includeForces)
        for (int k = 0; k < n; k++)
          for (int d = 0; d < 3; d++) frc[f.particles[k]][d] += fp[3 * k + d] * FORCE_FROM_MODEL;
    };
    last_energy = model->evaluate(context_owner, true, inputs, add_forces, step);
    have_last = true;
    return last_energy;
  }

 private:
  std::unique_ptr<Model> model;
  std::vector<double> x, shifts;
  std::vector<int64_t> edges;
  bool torch_neighbors = false;
  const void *context_owner = nullptr;
  // the last evaluation (model units), reused for identical positions and box
  bool have_last = false;
  std::vector<double> last_x, last_f;
  double last_box[9] = {0, 0, 0, 0, 0, 0, 0, 0, 0};
  double last_energy = 0.0;
};

class ReferenceKernelFactory : public KernelFactory {
 public:
  KernelImpl *createKernelImpl(std::string name, const Platform &platform, ContextImpl &) const override
  {
    if (name == CalcMLPotForceKernel::Name()) return new ReferenceCalcMLPotForceKernel(name, platform);
    throw OpenMMException("MLPot: unknown kernel " + name);
  }
};

}    // namespace

KernelFactory *newReferenceKernelFactory() { return new ReferenceKernelFactory(); }

}    // namespace MLPot

/* Committee statistics for Python (mlpot_plugins/openmm/native.py, through ctypes). `context` is the address of
   the OpenMM::Context (int(context.this) in Python), `tag` the force's tag.
   mlpot_openmm_request_uncertainty: mode 1 = the next evaluation computes them, 2 = every evaluation, 0 = off.
   mlpot_openmm_get_uncertainty: copies the last statistics (eV/A, eV) into forces_std[n] and energies_std[n]
   and *energy_std; returns the evaluation number (>= 1), 0 when none were computed yet, -n_ml when n differs. */
extern "C" OPENMM_EXPORT int mlpot_openmm_request_uncertainty(const char *tag, const void *context, int mode)
{
  auto &r = MLPot::registry();
  std::lock_guard<std::mutex> g(r.lock);
  if (mode == 0)
    r.requests.erase({tag, context});
  else
    r.requests[{tag, context}] = mode;
  return 0;
}

/* mlpot_openmm_request_uncertainty_at: the evaluation at this step count (Context.getStepCount()) computes them
   (the uncertainty reporter arms its report step); mlpot_openmm_uncertainty_step: the step count of the last
   statistics, -1 when none. */
extern "C" OPENMM_EXPORT int mlpot_openmm_request_uncertainty_at(const char *tag, const void *context,
                                                                 long long step)
{
  auto &r = MLPot::registry();
  std::lock_guard<std::mutex> g(r.lock);
  r.armed[{tag, context}] = step;
  return 0;
}

extern "C" OPENMM_EXPORT long long mlpot_openmm_uncertainty_step(const char *tag, const void *context)
{
  auto &r = MLPot::registry();
  std::lock_guard<std::mutex> g(r.lock);
  auto it = r.stats.find({tag, context});
  return it == r.stats.end() ? -1 : it->second.step;
}

extern "C" OPENMM_EXPORT long long mlpot_openmm_get_uncertainty(const char *tag, const void *context, int n,
                                                                double *forces_std, double *energies_std,
                                                                double *energy_std)
{
  auto &r = MLPot::registry();
  std::lock_guard<std::mutex> g(r.lock);
  auto it = r.stats.find({tag, context});
  if (it == r.stats.end()) return 0;
  const auto &u = it->second;
  if ((int) u.forces_std.size() != n) return -(long long) u.forces_std.size();
  std::copy(u.forces_std.begin(), u.forces_std.end(), forces_std);
  std::copy(u.energies_std.begin(), u.energies_std.end(), energies_std);
  *energy_std = u.energy_std;
  return u.evaluation;
}
