/* pair_style mlpot: calls the exported model's `compute` (mlpot_plugins/contract.py) on the local and
   ghost atoms of this rank. Positions of ghosts are image positions, so shifts are zero; ghost forces,
   per-atom virials and member forces are summed into their owners by reverse communication. */

#include "pair_mlpot.h"

#include "atom.h"
#include "comm.h"
#include "compute.h"
#include "error.h"
#include "force.h"
#include "json.h"
#include "memory.h"
#include "modify.h"
#include "neigh_list.h"
#include "neighbor.h"
#include "platform.h"
#include "update.h"
#include "utils.h"

#include "mlpot_units.h"

#include <ATen/Parallel.h>
#include <torch/cuda.h>
#include <torch/script.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>

using namespace LAMMPS_NS;

#ifndef MLPOT_PRETRAINED_DIR
#define MLPOT_PRETRAINED_DIR ""
#endif

struct PairMLPot::Model {
  torch::jit::Module module;
  torch::Device device{torch::kCPU};
  torch::Dtype dtype{torch::kFloat64};
  std::vector<int> row_of_atom;     // LAMMPS local+ghost index -> model row (-1: not seen)
  std::vector<int> atom_of_row;     // model row -> LAMMPS index
  std::vector<int64_t> src, dst;    // edges of this step
  std::vector<int> accepted;        // neighbours of one centre within the cutoff
  torch::Tensor zero_shifts;        // [capacity, 3] zeros, reused: ghosts carry the image positions
  int n_local_rows = 0;
};

static std::string join(const std::vector<std::string> &words)
{
  std::string out;
  for (auto &w : words) out += (out.empty() ? "" : " ") + w;
  return out;
}

static std::string first_line(const std::string &text)
{
  auto pos = text.find('\n');
  return text.substr(0, pos == std::string::npos ? text.size() : pos);
}

PairMLPot::PairMLPot(LAMMPS *lmp) : Pair(lmp)
{
  single_enable = 0;
  restartinfo = 1;
  one_coeff = 1;
  manybody_flag = 1;
  no_virial_fdotr_compute = 1;    // the model returns the virial itself
  centroidstressflag = CENTROID_NOTAVAIL;
  ghostneigh = 0;
  cutoff_model = range_model = cut_lmp = range_lmp = 0.0;
  len_factor = eng_factor = 1.0;
  nmembers = 1;
  unc_every = devi_every = 0;
  devi_fp = nullptr;
  unc_step = -1;
  committee_evaluations = committee_on_demand = 0.0;
  time_evaluate = time_model = 0.0;
  nmax_unc = 0;
  unc = member_f = nullptr;
}

PairMLPot::~PairMLPot()
{
  if (getenv("MLPOT_TIMING") && comm->me == 0 && time_evaluate > 0.0)
    utils::logmesg(lmp, "mlpot timing (rank 0): {:.4f} s in pair_style mlpot, {:.4f} s of it in the model's "
                        "compute(); adapter overhead {:.2f}%\n", time_evaluate, time_model,
                   100.0 * (time_evaluate - time_model) / time_model);
  if (devi_fp) fclose(devi_fp);
  memory->destroy(unc);
  memory->destroy(member_f);
  if (allocated) {
    memory->destroy(setflag);
    memory->destroy(cutsq);
    memory->destroy(cutghost);
  }
}

void PairMLPot::allocate()
{
  allocated = 1;
  int n = atom->ntypes + 1;
  memory->create(setflag, n, n, "pair:setflag");
  memory->create(cutsq, n, n, "pair:cutsq");
  memory->create(cutghost, n, n, "pair:cutghost");
  for (int i = 0; i < n; i++)
    for (int j = 0; j < n; j++) setflag[i][j] = 0;
}

/* pair_style mlpot MODEL [device cpu|cuda] [uncertainty every N] [model_devi FILE every N] */
void PairMLPot::settings(int narg, char **arg)
{
  const char *usage = "expected: pair_style mlpot MODEL [device cpu|cuda] [uncertainty every N] "
                      "[model_devi FILE every N]";
  if (narg < 1) error->all(FLERR, "Illegal pair_style mlpot command: no model file; {}", usage);
  mlpot_units::Factors fac;
  if (!mlpot_units::lammps_factors(update->unit_style, fac))
    error->all(FLERR, "pair_style mlpot does not support units {}; use one of: {}", update->unit_style,
               mlpot_units::SUPPORTED);
  len_factor = fac.length;
  eng_factor = fac.energy;

  device_name = "cpu";
  unc_every = devi_every = 0;
  devi_file.clear();
  int iarg = 1;
  auto every = [&](int at, const char *what) {
    if (at + 1 >= narg || strcmp(arg[at], "every") != 0)
      error->all(FLERR, "Illegal pair_style mlpot {} option; {}", what, usage);
    int n = utils::inumeric(FLERR, arg[at + 1], false, lmp);
    if (n < 1) error->all(FLERR, "pair_style mlpot {} every N needs N >= 1, got {}", what, n);
    return n;
  };
  while (iarg < narg) {
    std::string word = arg[iarg];
    if (word == "device") {
      if (iarg + 1 >= narg) error->all(FLERR, "Illegal pair_style mlpot device option; {}", usage);
      device_name = arg[iarg + 1];
      if (device_name != "cpu" && device_name != "cuda")
        error->all(FLERR, "pair_style mlpot device must be cpu or cuda, got '{}'", device_name);
      iarg += 2;
    } else if (word == "uncertainty") {
      unc_every = every(iarg + 1, "uncertainty");
      iarg += 3;
    } else if (word == "model_devi") {
      if (iarg + 1 >= narg) error->all(FLERR, "Illegal pair_style mlpot model_devi option; {}", usage);
      devi_file = arg[iarg + 1];
      devi_every = every(iarg + 2, "model_devi");
      iarg += 4;
    } else {
      error->all(FLERR, "Unknown pair_style mlpot option '{}'; {}", word, usage);
    }
  }
  if (device_name == "cuda" && !torch::cuda::is_available())
    error->all(FLERR, "pair_style mlpot device cuda: CUDA is not available to libtorch on this machine "
                      "(no GPU or CPU-only torch); use device cpu");

  load_model(arg[0]);
  if ((unc_every || devi_every) && nmembers < 2)
    error->all(FLERR, "pair_style mlpot uncertainty/model_devi need a committee model, but {} has "
                      "ensemble_size 1; use a committee model or drop the option", model_path);
  if (devi_fp) {
    fclose(devi_fp);
    devi_fp = nullptr;
  }
  style_args.assign(arg, arg + narg);
  style_args[0] = std::filesystem::absolute(model_path).string();    // restart files may be read elsewhere

  // a re-issued pair_style keeps the pair_coeff mapping when the new model has the same elements
  if (allocated && !elements.empty()) {
    for (std::size_t t = 1; t < elements.size(); t++) {
      if (elements[t] == "NULL") continue;
      auto it = std::find(species.begin(), species.end(), elements[t]);
      if (it == species.end())
        error->all(FLERR, "pair_style mlpot: element {} of atom type {} is not in model {}; re-issue pair_coeff",
                   elements[t], t, model_path);
      type_map[t] = int(it - species.begin());
    }
  }
}

void PairMLPot::load_model(const std::string &path_in)
{
  std::string path = path_in;
  if (!platform::file_is_readable(path)) {
    // a bare name may be a model shipped in the mlpot_plugins package
    std::string dir = getenv("MLPOT_PRETRAINED_DIR") ? getenv("MLPOT_PRETRAINED_DIR") : MLPOT_PRETRAINED_DIR;
    std::string shipped = dir + "/" + path + ".pt";
    if (!dir.empty() && path.find('/') == std::string::npos && platform::file_is_readable(shipped))
      path = shipped;
    else
      error->all(FLERR, "pair_style mlpot: model file '{}' does not exist or is not readable; give the "
                        "path of a model exported with mlpot_plugins.export() or a shipped model name "
                        "(list them with: mlpot models)", path_in);
  }
  {
    char magic[4] = {0, 0, 0, 0};
    std::ifstream in(path, std::ios::binary);
    in.read(magic, 4);
    if (!in || memcmp(magic, "PK\x03\x04", 4) != 0)
      error->all(FLERR, "pair_style mlpot: model file '{}' is corrupt: not a TorchScript archive (not a zip "
                        "file); re-export it with mlpot_plugins.export()", path);
  }
  auto m = std::make_unique<Model>();
  if (device_name == "cuda") {
    int ngpu = (int) torch::cuda::device_count();
    m->device = torch::Device(torch::kCUDA, comm->me % std::max(ngpu, 1));
  }
  // the edge count changes every step: specialise on dynamic shapes instead of recompiling for each new
  // one (same setting as mlpot_plugins.model_file.use_dynamic_shapes on the Python side)
  torch::jit::FusionStrategy strategy = {{torch::jit::FusionBehavior::DYNAMIC, 2}};
  torch::jit::setFusionStrategy(strategy);
  torch::jit::ExtraFilesMap extra{{"metadata.json", ""}};
  try {
    m->module = torch::jit::load(path, m->device, extra);
  } catch (const std::exception &e) {
    error->all(FLERR, "pair_style mlpot: model file '{}' is corrupt: torch cannot load it ({}); re-export it "
                      "with mlpot_plugins.export()", path, first_line(e.what()));
  }
  const std::string &text = extra["metadata.json"];
  if (text.empty())
    error->all(FLERR, "pair_style mlpot: model file '{}' has no metadata.json; it was not written by "
                      "mlpot_plugins.export(), re-export it", path);
  json meta;
  try {
    meta = json::parse(text);
    if (meta.at("format_version").get<int>() != 1)
      error->all(FLERR, "pair_style mlpot: model '{}' has format_version {}, this plugin reads 1; rebuild "
                        "the plugin (mlpot lammps-plugin) with the matching mlpot_plugins", path,
                 meta.at("format_version").dump());
    if (meta.at("kind").get<std::string>() != "atomistic")
      error->all(FLERR, "pair_style mlpot: model '{}' is of kind '{}'; pair_style mlpot needs an atomistic "
                        "model", path, meta.at("kind").get<std::string>());
    if (meta.at("length_unit").get<std::string>() != "angstrom" || meta.at("energy_unit").get<std::string>() != "eV")
      error->all(FLERR, "pair_style mlpot: model '{}' must use angstrom and eV", path);
    species = meta.at("species").get<std::vector<std::string>>();
    cutoff_model = meta.at("cutoff").get<double>();
    range_model = meta.at("interaction_range").get<double>();
    nmembers = meta.at("ensemble_size").get<int>();
    std::string dtype = meta.at("dtype").get<std::string>();
    if (dtype != "float64" && dtype != "float32")
      error->all(FLERR, "pair_style mlpot: model '{}' has dtype {}; use float32 or float64", path, dtype);
    m->dtype = dtype == "float64" ? torch::kFloat64 : torch::kFloat32;
  } catch (const json::exception &e) {
    error->all(FLERR, "pair_style mlpot: metadata.json of model '{}' is invalid ({}); re-export the model "
                      "with mlpot_plugins.export()", path, e.what());
  }
  if (species.empty() || !(cutoff_model > 0.0) || range_model < cutoff_model || nmembers < 1)
    error->all(FLERR, "pair_style mlpot: metadata.json of model '{}' has invalid species/cutoff/"
                      "interaction_range/ensemble_size; re-export the model", path);
  if (!m->module.find_method("compute"))
    error->all(FLERR, "pair_style mlpot: model '{}' has no exported compute() method; re-export it with "
                      "mlpot_plugins.export()", path);
  if (nmembers > 1 && !m->module.find_method("force_uncertainty"))
    error->all(FLERR, "pair_style mlpot: committee model '{}' has no force_uncertainty() method", path);
  model = std::move(m);
  model_path = path;
  cut_lmp = cutoff_model * len_factor;
  range_lmp = range_model * len_factor;
  ghostneigh = range_model > cutoff_model ? 1 : 0;
  comm_reverse = nmembers > 1 ? 3 * nmembers : 0;
}

/* pair_coeff * * El1 El2 ... (one element or NULL per atom type) */
void PairMLPot::coeff(int narg, char **arg)
{
  if (!allocated) allocate();
  int ntypes = atom->ntypes;
  if (narg < 2 || strcmp(arg[0], "*") != 0 || strcmp(arg[1], "*") != 0)
    error->all(FLERR, "pair_coeff for pair_style mlpot must be: pair_coeff * * El1 ... El{} (one element "
                      "or NULL per atom type)", ntypes);
  if (narg - 2 != ntypes)
    error->all(FLERR, "pair_coeff * * for pair_style mlpot needs {} element names (one per atom type), got "
                      "{}; model {} knows: {}", ntypes, narg - 2, model_path, join(species));
  elements.assign(1, "");
  type_map.assign(ntypes + 1, -1);
  for (int t = 1; t <= ntypes; t++) {
    std::string el = arg[t + 1];
    elements.push_back(el);
    if (el == "NULL") continue;
    auto it = std::find(species.begin(), species.end(), el);
    if (it == species.end())
      error->all(FLERR, "pair_coeff mlpot: element {} (atom type {}) is not in model {}, whose species are: "
                        "{}; use one of them or NULL", el, t, model_path, join(species));
    type_map[t] = int(it - species.begin());
  }
  int count = 0;
  for (int i = 1; i <= ntypes; i++)
    for (int j = i; j <= ntypes; j++) {
      setflag[i][j] = (type_map[i] >= 0 && type_map[j] >= 0) ? 1 : 0;
      count += setflag[i][j];
    }
  if (count == 0) error->all(FLERR, "pair_coeff mlpot: every atom type is NULL; map at least one to an element");
  coeff_args.assign(arg, arg + narg);
}

void PairMLPot::init_style()
{
  mlpot_units::Factors fac;
  if (!mlpot_units::lammps_factors(update->unit_style, fac))
    error->all(FLERR, "pair_style mlpot does not support units {}; use one of: {}", update->unit_style,
               mlpot_units::SUPPORTED);
  if (fac.length != len_factor || fac.energy != eng_factor)
    error->all(FLERR, "pair_style mlpot: units changed after pair_style; re-issue pair_style");
  if (force->newton_pair == 0)
    error->all(FLERR, "pair_style mlpot requires newton_pair on (ghost forces are summed by reverse "
                      "communication); remove 'newton off' from the input");
  neighbor->add_request(this, NeighConst::REQ_FULL | (ghostneigh ? NeighConst::REQ_GHOST : 0));
  // message passing: ghost atoms up to interaction_range (+ skin, as atoms move between re-neighbouring)
  if (ghostneigh) comm->cutghostuser = std::max(comm->cutghostuser, range_lmp + neighbor->skin);
  // several ranks and no OMP_NUM_THREADS: one torch thread per rank, as LAMMPS does for OpenMP
  // (otherwise libtorch follows OMP_NUM_THREADS itself; a Python host process is left alone)
  if (comm->nprocs > 1 && !getenv("OMP_NUM_THREADS")) at::set_num_threads(std::max(1, comm->nthreads));
}

double PairMLPot::init_one(int i, int j)
{
  if (ghostneigh) cutghost[i][j] = cutghost[j][i] = cut_lmp;
  return cut_lmp;
}

bool PairMLPot::has_uncertainty() const { return nmembers > 1; }
int PairMLPot::ensemble_size() const { return nmembers; }

bool PairMLPot::uncertainty_wanted(bigint step)
{
  if (nmembers < 2) return false;
  if (unc_every && step % unc_every == 0) return true;
  if (devi_every && step % devi_every == 0) return true;
  // compute mlpot/atom has timeflag set: output/fix halt tell it the steps it will be invoked on
  for (auto c : modify->get_compute_by_style("mlpot/atom"))
    if (c->matchstep(step)) return true;
  return false;
}

void PairMLPot::compute(int eflag, int vflag)
{
  ev_init(eflag, vflag);
  bigint step = update->ntimestep;
  bool unc_now = uncertainty_wanted(step);
  evaluate(true, unc_now);
  if (unc_now && devi_every && step % devi_every == 0) write_model_devi();
}

const double *PairMLPot::uncertainty_peratom()
{
  if (nmembers < 2) error->all(FLERR, "pair_style mlpot: model {} is not a committee", model_path);
  if (unc_step != update->ntimestep) {
    if (!list || !model) error->all(FLERR, "compute mlpot/atom was invoked before any run; use 'run 0' first");
    committee_on_demand += 1.0;
    evaluate(false, true);
  }
  return unc;
}

void PairMLPot::evaluate(bool write_forces, bool need_uncertainty)
{
  const double t_start = platform::walltime();
  Model &m = *model;
  const int nlocal = atom->nlocal;
  const int nall = nlocal + atom->nghost;
  double **x = atom->x;
  const int *type = atom->type;
  unc_step = -1;

  // rows: the mapped local atoms, then only the ghosts that are an end of some edge (the ghost shell
  // of cutoff + skin holds many more atoms than the model needs)
  m.row_of_atom.assign(nall, -1);
  m.atom_of_row.clear();
  for (int i = 0; i < nlocal; i++) {
    if (type_map[type[i]] < 0) continue;
    m.row_of_atom[i] = (int) m.atom_of_row.size();
    m.atom_of_row.push_back(i);
  }
  m.n_local_rows = (int) m.atom_of_row.size();
  auto row = [&m](int a) {
    int &r = m.row_of_atom[a];
    if (r < 0) {
      r = (int) m.atom_of_row.size();
      m.atom_of_row.push_back(a);
    }
    return r;
  };

  // edges within the model cutoff (the list has cutoff + skin); ghost centres for message passing
  const double cutsq_model = cut_lmp * cut_lmp;
  const int ncentres = list->inum + (ghostneigh ? list->gnum : 0);
  m.src.clear();
  m.dst.clear();
  bool all_mapped = true;
  for (int t = 1; t <= atom->ntypes; t++) all_mapped = all_mapped && type_map[t] >= 0;
  for (int ii = 0; ii < ncentres; ii++) {
    const int i = list->ilist[ii];
    if (type_map[type[i]] < 0) continue;
    const double xi = x[i][0], yi = x[i][1], zi = x[i][2];
    const int *jlist = list->firstneigh[i];
    const int jnum = list->numneigh[i];
    if ((int) m.accepted.size() < jnum) m.accepted.resize(jnum);
    int *acc = m.accepted.data();
    int k = 0;    // branch-free: about half of the cutoff + skin candidates are within the cutoff
    for (int jj = 0; jj < jnum; jj++) {
      const int j = jlist[jj] & NEIGHMASK;
      const double dx = x[j][0] - xi, dy = x[j][1] - yi, dz = x[j][2] - zi;
      acc[k] = j;
      k += (dx * dx + dy * dy + dz * dz < cutsq_model) & (all_mapped | (type_map[type[j]] >= 0));
    }
    if (k == 0) continue;    // a ghost centre becomes a row only if it has an edge
    const int64_t ri = row(i);
    for (int a = 0; a < k; a++) {
      const int j = acc[a];
      m.src.push_back(ri);
      m.dst.push_back(j < nlocal ? m.row_of_atom[j] : row(j));
    }
  }
  const int nrows = (int) m.atom_of_row.size();
  const int64_t nedges = (int64_t) m.src.size();

  auto pos = torch::empty({nrows, 3}, torch::kFloat64);
  auto typ = torch::empty({nrows}, torch::kInt64);
  double *p = pos.data_ptr<double>();
  int64_t *tp = typ.data_ptr<int64_t>();
  for (int r = 0; r < nrows; r++) {
    const int a = m.atom_of_row[r];
    for (int d = 0; d < 3; d++) p[3 * r + d] = x[a][d] / len_factor;
    tp[r] = type_map[type[a]];
  }
  auto edges = torch::empty({2, nedges}, torch::kInt64);
  std::copy(m.src.begin(), m.src.end(), edges.data_ptr<int64_t>());
  std::copy(m.dst.begin(), m.dst.end(), edges.data_ptr<int64_t>() + nedges);
  auto topts = torch::TensorOptions().dtype(m.dtype).device(m.device);
  if (!m.zero_shifts.defined() || m.zero_shifts.size(0) < nedges)
    m.zero_shifts = torch::zeros({nedges + nedges / 4 + 16, 3}, topts);
  const bool need_virial = write_forces && (vflag_global || vflag_atom);
  const bool need_unc = need_uncertainty && nmembers > 1;

  c10::IValue result;
  try {
    std::vector<c10::IValue> inputs{pos.to(topts), typ.to(m.device), edges.to(m.device),
                                    m.zero_shifts.narrow(0, 0, nedges), (int64_t) m.n_local_rows,
                                    need_virial, need_unc};
    const double t0 = platform::walltime();
    result = m.module.get_method("compute")(inputs);
    time_model += platform::walltime() - t0;
  } catch (const std::exception &e) {
    error->one(FLERR, "pair_style mlpot: model {} failed in compute(): {}", model_path, first_line(e.what()));
  }
  if (!result.isGenericDict())
    error->one(FLERR, "pair_style mlpot: compute() of model {} did not return a dict", model_path);
  auto out = result.toGenericDict();
  auto get = [&](const char *key) {
    if (!out.contains(key))
      error->one(FLERR, "pair_style mlpot: model {} did not return '{}'", model_path, key);
    return out.at(key).toTensor().detach().to(torch::kCPU, torch::kFloat64).contiguous();
  };
  const double ffac = eng_factor / len_factor;

  if (write_forces) {
    auto forces = get("forces");
    const double *fp = forces.data_ptr<double>();
    double **f = atom->f;
    for (int r = 0; r < nrows; r++) {
      const int a = m.atom_of_row[r];
      for (int d = 0; d < 3; d++) f[a][d] += fp[3 * r + d] * ffac;
    }
    if (eflag_global) eng_vdwl += get("energy").item<double>() * eng_factor;
    if (eflag_atom) {
      auto e = get("energies");
      const double *ep = e.data_ptr<double>();
      for (int r = 0; r < m.n_local_rows; r++) eatom[m.atom_of_row[r]] += ep[r] * eng_factor;
    }
    // contract: W[a][b] = sum x_a F_b; LAMMPS order xx yy zz xy xz yz
    static const int ia[6] = {0, 1, 2, 0, 0, 1}, ib[6] = {0, 1, 2, 1, 2, 2};
    if (vflag_global) {
      auto w = get("virial");
      const double *wp = w.data_ptr<double>();
      for (int k = 0; k < 6; k++) virial[k] += wp[3 * ia[k] + ib[k]] * eng_factor;
    }
    if (vflag_atom) {
      auto w = get("atom_virial");
      const double *wp = w.data_ptr<double>();
      for (int r = 0; r < nrows; r++) {
        const int a = m.atom_of_row[r];
        for (int k = 0; k < 6; k++) vatom[a][k] += wp[9 * r + 3 * ia[k] + ib[k]] * eng_factor;
      }
    }
  }

  if (need_unc) {
    // member forces of ghost images are summed into their owners before taking the std
    if (atom->nmax > nmax_unc) {
      nmax_unc = atom->nmax;
      memory->destroy(unc);
      memory->destroy(member_f);
      memory->create(unc, nmax_unc, "pair:mlpot_unc");
      memory->create(member_f, (bigint) nmax_unc * 3 * nmembers, "pair:mlpot_member_f");
    }
    const int K = nmembers, stride = 3 * K;
    std::fill(member_f, member_f + (bigint) nall * stride, 0.0);
    auto mf = get("member_forces");    // [K, nrows, 3]
    const double *mp = mf.data_ptr<double>();
    for (int k = 0; k < K; k++)
      for (int r = 0; r < nrows; r++) {
        double *dstp = member_f + (bigint) m.atom_of_row[r] * stride + 3 * k;
        const double *srcp = mp + ((bigint) k * nrows + r) * 3;
        dstp[0] = srcp[0];
        dstp[1] = srcp[1];
        dstp[2] = srcp[2];
      }
    comm->reverse_comm(this);
    const int nl = m.n_local_rows;
    auto local = torch::empty({K, nl, 3}, torch::kFloat64);
    double *lp = local.data_ptr<double>();
    for (int k = 0; k < K; k++)
      for (int r = 0; r < nl; r++)
        for (int d = 0; d < 3; d++)
          lp[((bigint) k * nl + r) * 3 + d] = member_f[(bigint) m.atom_of_row[r] * stride + 3 * k + d];
    torch::Tensor std_t;
    try {
      std::vector<c10::IValue> in{local.to(topts)};
      std_t = m.module.get_method("force_uncertainty")(in).toTensor().detach().to(torch::kCPU, torch::kFloat64).contiguous();
    } catch (const std::exception &e) {
      error->one(FLERR, "pair_style mlpot: model {} failed in force_uncertainty(): {}", model_path,
                 first_line(e.what()));
    }
    const double *sp = std_t.data_ptr<double>();
    std::fill(unc, unc + nlocal, 0.0);
    for (int r = 0; r < nl; r++) unc[m.atom_of_row[r]] = sp[r] * ffac;
    unc_step = update->ntimestep;
    committee_evaluations += 1.0;
  }
  time_evaluate += platform::walltime() - t_start;
}

/* counters for tests/diagnostics (Python: lmp.extract_pair("committee_evaluations")) */
void *PairMLPot::extract(const char *name, int &dim)
{
  dim = 0;
  if (strcmp(name, "committee_evaluations") == 0) return (void *) &committee_evaluations;
  if (strcmp(name, "committee_on_demand") == 0) return (void *) &committee_on_demand;
  if (strcmp(name, "time_evaluate") == 0) return (void *) &time_evaluate;
  if (strcmp(name, "time_model") == 0) return (void *) &time_model;
  if (strcmp(name, "cutoff") == 0) return (void *) &cut_lmp;
  if (strcmp(name, "interaction_range") == 0) return (void *) &range_lmp;
  return nullptr;
}

int PairMLPot::pack_reverse_comm(int n, int first, double *buf)
{
  const int stride = 3 * nmembers;
  int m = 0;
  for (int i = first; i < first + n; i++)
    for (int k = 0; k < stride; k++) buf[m++] = member_f[(bigint) i * stride + k];
  return m;
}

void PairMLPot::unpack_reverse_comm(int n, int *list_, double *buf)
{
  const int stride = 3 * nmembers;
  int m = 0;
  for (int i = 0; i < n; i++) {
    const int j = list_[i];
    for (int k = 0; k < stride; k++) member_f[(bigint) j * stride + k] += buf[m++];
  }
}

/* DeePMD-style model_devi line: step, virial deviation (not provided by the contract: 0), then
   max/min/avg calibrated per-atom force std over all atoms the model sees. */
void PairMLPot::write_model_devi()
{
  double mx = 0.0, mn = std::numeric_limits<double>::max(), sum = 0.0, cnt = 0.0;
  for (int i = 0; i < atom->nlocal; i++) {
    if (type_map[atom->type[i]] < 0) continue;
    mx = std::max(mx, unc[i]);
    mn = std::min(mn, unc[i]);
    sum += unc[i];
    cnt += 1.0;
  }
  double gmx, gmn, gs[2], ls[2] = {sum, cnt};
  MPI_Allreduce(&mx, &gmx, 1, MPI_DOUBLE, MPI_MAX, world);
  MPI_Allreduce(&mn, &gmn, 1, MPI_DOUBLE, MPI_MIN, world);
  MPI_Allreduce(ls, gs, 2, MPI_DOUBLE, MPI_SUM, world);
  if (comm->me != 0) return;
  if (!devi_fp) {
    devi_fp = fopen(devi_file.c_str(), "w");
    if (!devi_fp) error->one(FLERR, "pair_style mlpot: cannot open model_devi file {}: {}", devi_file, utils::getsyserror());
    fprintf(devi_fp, "#%13s %18s %18s %18s %18s %18s %18s\n", "step", "max_devi_v", "min_devi_v", "avg_devi_v",
            "max_devi_f", "min_devi_f", "avg_devi_f");
  }
  fprintf(devi_fp, "%14ld %18.6e %18.6e %18.6e %18.6e %18.6e %18.6e\n", (long) update->ntimestep, 0.0, 0.0,
          0.0, gmx, gs[1] > 0 ? gmn : 0.0, gs[1] > 0 ? gs[0] / gs[1] : 0.0);
  fflush(devi_fp);
}

/* restart files keep the pair_style and pair_coeff words; read_restart re-applies them */
void PairMLPot::write_restart(FILE *fp)
{
  for (auto *args : {&style_args, &coeff_args}) {
    int n = (int) args->size();
    fwrite(&n, sizeof(int), 1, fp);
    for (auto &s : *args) {
      int len = (int) s.size();
      fwrite(&len, sizeof(int), 1, fp);
      fwrite(s.data(), 1, len, fp);
    }
  }
}

void PairMLPot::read_restart(FILE *fp)
{
  std::vector<std::string> got[2];
  for (auto &args : got) {
    int n = 0;
    if (comm->me == 0) utils::sfread(FLERR, &n, sizeof(int), 1, fp, nullptr, error);
    MPI_Bcast(&n, 1, MPI_INT, 0, world);
    for (int i = 0; i < n; i++) {
      int len = 0;
      if (comm->me == 0) utils::sfread(FLERR, &len, sizeof(int), 1, fp, nullptr, error);
      MPI_Bcast(&len, 1, MPI_INT, 0, world);
      std::string s(len, ' ');
      if (comm->me == 0 && len) utils::sfread(FLERR, &s[0], 1, len, fp, nullptr, error);
      MPI_Bcast(&s[0], len, MPI_CHAR, 0, world);
      args.push_back(s);
    }
  }
  for (int which = 0; which < 2; which++) {
    std::vector<char *> argv;
    for (auto &s : got[which]) argv.push_back(&s[0]);
    if (which == 0)
      settings((int) argv.size(), argv.data());
    else
      coeff((int) argv.size(), argv.data());
  }
}

double PairMLPot::memory_usage()
{
  double bytes = Pair::memory_usage();
  bytes += (double) nmax_unc * (1 + 3 * nmembers) * sizeof(double);
  return bytes;
}
