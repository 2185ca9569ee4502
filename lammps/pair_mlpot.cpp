/* pair_style mlpot: calls the exported model's `compute` (mlpot_plugins/contract.py) on the local and
   ghost atoms of this rank. Positions of ghosts are image positions, so shifts are zero; ghost forces,
   per-atom virials and member forces are summed into their owners by reverse communication. */

#include "pair_mlpot.h"

#include "atom.h"
#include "comm.h"
#include "compute.h"
#include "error.h"
#include "exceptions.h"
#include "force.h"
#include "json.h"
#include "memory.h"
#include "modify.h"
#include "neigh_list.h"
#include "neighbor.h"
#include "platform.h"
#include "update.h"
#include "utils.h"

#include "mlpot_torch_util.h"
#include "mlpot_units.h"
#include "pair_mlpot_torch.h"

#include <ATen/Parallel.h>
#include <caffe2/serialize/inline_container.h>
#include <torch/cuda.h>
#include <torch/script.h>

#include <algorithm>
#include <cmath>
#include <climits>
#include <cstring>
#include <dlfcn.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <filesystem>
#include <fstream>
#include <limits>
#include <stdexcept>
#include <tuple>

using namespace LAMMPS_NS;
using mlpot_torch::dtype_name;
using mlpot_torch::torch_message;
using mlpot::MLPotError;
using mlpot::model_output;

#ifndef MLPOT_PRETRAINED_DIR
#define MLPOT_PRETRAINED_DIR ""
#endif
// the extension providers a model may ask to load, generated from mlpot_plugins.contract.TORCH_EXTENSIONS
// by the plugin build (mlpot_plugins.lammps.torch_extensions_literal): {module: {"libraries", "package"}}
#ifndef MLPOT_TORCH_EXTENSIONS
#define MLPOT_TORCH_EXTENSIONS "{}"
#endif


namespace {
std::string join(const std::vector<std::string> &words)
{
  std::string out;
  for (auto &w : words) out += (out.empty() ? "" : " ") + w;
  return out;
}

std::string first_line(const std::string &text)
{
  auto pos = text.find('\n');
  return text.substr(0, pos == std::string::npos ? text.size() : pos);
}

}    // namespace

// glibc would mmap every big edge tensor and unmap it on free, and trim the heap top: each model call then
// pays page faults on hundreds of MiB (2048 Cu atoms: 2.2-3.1x slower, issue 12). Once per process keep freed
// memory for the next call (no trimming: a 1 GiB threshold still re-faulted ~1.5 GB per step of a 9 GB call),
// as mlpot_plugins.engine_setup.tune_malloc does for the Python engines.
// Opt out: MLPOT_MALLOC=system, or any of glibc's own MALLOC_*_ variables (yours win).
// Returns false for a value of MLPOT_MALLOC it does not understand.
static bool tune_malloc()
{
  const char *opt = getenv("MLPOT_MALLOC");
  const std::string value = opt ? opt : "";
  if (value == "system" || value == "off" || value == "0" || value == "no") return true;
  if (!value.empty() && value != "tuned" && value != "on" && value != "1" && value != "yes") return false;
#ifdef __GLIBC__
  static bool done = false;
  if (done) return true;
  done = true;
  for (const char *v : {"MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_"})
    if (getenv(v)) return true;
  mallopt(M_MMAP_MAX, 0);
  mallopt(M_TRIM_THRESHOLD, -1);    // never trim: every step needs the same heap again
#endif
  return true;
}

PairMLPot::PairMLPot(LAMMPS *lmp) : Pair(lmp)
{
  threads_opt = 0;
  edges_opt = -1;
  edges_device = false;
  edges_flag = candidate_builds = 0.0;
  single_enable = 0;
  restartinfo = 1;
  one_coeff = 1;
  manybody_flag = 1;
  no_virial_fdotr_compute = 1;    // the model returns the virial itself
  centroidstressflag = CENTROID_NOTAVAIL;
  ghostneigh = 0;
  cutoff_model = range_model = cut_lmp = range_lmp = 0.0;
  len_factor = eng_factor = unc_scale = 1.0;
  nmembers = 1;
  unc_every = devi_every = devi_calibrated = devi_atomic = 0;
  devi_fp = nullptr;
  cutghost_user = cutghost_set = -1.0;
  unc_step = -1;
  committee_evaluations = committee_on_demand = 0.0;
  time_evaluate = time_model = time_exchange = time_exchange_mpi = 0.0;
  nmax_unc = k_alloc = 0;
  unc = unc_e = member_f = nullptr;
  have_member_virial = warned_member_virial = false;
  fallback_threshold = 0.0;
  fallback_until = -1;
  lattice_extra[0] = 0.0;
  layerwise_opt = -1;
  layered = false;
  layered_flag = 0.0;
  images_opt = 1;
  fold = fold_logged = merge = false;
  fold_flag = rows_flag = 0.0;
  mp_layers = mp_feature_dim = comm_stride = 0;
  comm_buf = nullptr;
}

PairMLPot::~PairMLPot()
{
  if (getenv("MLPOT_TIMING") && comm && comm->me == 0 && time_evaluate > 0.0)
    utils::logmesg(lmp, "mlpot timing (rank 0): {:.4f} s in pair_style mlpot, {:.4f} s of it in the model's "
                        "compute(); adapter overhead {:.2f}%\n", time_evaluate, time_model,
                   100.0 * (time_evaluate - time_model) / time_model);
  if (getenv("MLPOT_TIMING") && comm && time_exchange > 0.0)    // every rank: the waits differ between ranks
    fprintf(stderr, "mlpot timing (rank %d): %.4f s in pair_style mlpot, %.4f s in the model, %.4f s in the "
                    "layer-wise feature exchanges (%.4f s of it in LAMMPS/MPI communication); last evaluation: %d "
                    "model rows, %d of them owned atoms\n", comm->me, time_evaluate, time_model, time_exchange,
            time_exchange_mpi, (int) rows_flag, model ? model->n_local_rows : 0);
  // another pair style replaces ours: give back the ghost cutoff the user had before our raise
  if (comm && cutghost_set >= 0.0 && comm->cutghostuser == cutghost_set) comm->cutghostuser = cutghost_user;
  if (devi_fp) fclose(devi_fp);
  memory->destroy(unc);
  memory->destroy(unc_e);
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

/* pair_style mlpot MODEL [device cpu|cuda] [uncertainty every N]
                          [model_devi FILE every N [calibrated] [atomic]] [fallback THRESHOLD [until STEP]] [layerwise yes|no]
                          [images fold|ghosts] [dtype float32|float64] [threads N] [edges host|device] */
void PairMLPot::settings(int narg, char **arg)
{
  const char *usage = "expected: pair_style mlpot MODEL [device cpu|cuda] [uncertainty every N] "
                      "[model_devi FILE every N [calibrated] [atomic]] [fallback THRESHOLD [until STEP]] [layerwise yes|no] "
                      "[images fold|ghosts] [dtype float32|float64] [threads N] [edges host|device]";
  if (narg < 1) error->all(FLERR, "Illegal pair_style mlpot command: no model file; {}", usage);

  device_name = "cpu";
  unc_every = devi_every = devi_calibrated = devi_atomic = 0;
  fallback_threshold = 0.0;
  fallback_until = -1;
  layerwise_opt = -1;
  images_opt = 1;
  dtype_opt.clear();
  threads_opt = 0;
  edges_opt = -1;
  devi_file.clear();
  int iarg = 1;
  auto every = [&](int at, const char *what) {
    if (at + 1 >= narg || strcmp(arg[at], "every") != 0)
      error->all(FLERR, "pair_style mlpot {}: expected 'every N' after it, got '{}'; {}", what,
                 at < narg ? arg[at] : "end of line", usage);
    int n = utils::inumeric(FLERR, arg[at + 1], false, lmp);
    if (n < 1) error->all(FLERR, "pair_style mlpot {} every N needs N >= 1, got {}", what, n);
    return n;
  };
  while (iarg < narg) {
    std::string word = arg[iarg];
    if (word == "device") {
      if (iarg + 1 >= narg) error->all(FLERR, "pair_style mlpot device: expected cpu or cuda after it; {}", usage);
      device_name = arg[iarg + 1];
      if (device_name != "cpu" && device_name != "cuda")
        error->all(FLERR, "pair_style mlpot device must be cpu or cuda, got '{}'", device_name);
      iarg += 2;
    } else if (word == "fallback") {
      if (iarg + 1 >= narg)
        error->all(FLERR, "pair_style mlpot fallback: expected a threshold (force std, > 0) after it; {}", usage);
      fallback_threshold = utils::numeric(FLERR, arg[iarg + 1], false, lmp);
      if (!(fallback_threshold > 0.0) || !std::isfinite(fallback_threshold))
        error->all(FLERR, "pair_style mlpot fallback THRESHOLD must be a force std > 0 (model units, e.g. 0.05), "
                          "got {}", arg[iarg + 1]);
      iarg += 2;
      if (iarg < narg && strcmp(arg[iarg], "until") == 0) {    // the hot phase only: off from timestep STEP on
        if (iarg + 1 >= narg)
          error->all(FLERR, "pair_style mlpot fallback THRESHOLD until: expected a timestep STEP >= 0 after it; {}",
                     usage);
        fallback_until = utils::bnumeric(FLERR, arg[iarg + 1], false, lmp);
        if (fallback_until < 0)
          error->all(FLERR, "pair_style mlpot fallback ... until STEP needs STEP >= 0 (the timestep from which the "
                            "exact solver is off), got {}", arg[iarg + 1]);
        iarg += 2;
      }
    } else if (word == "until") {
      error->all(FLERR, "pair_style mlpot until: it belongs after 'fallback THRESHOLD' (fallback THRESHOLD until "
                        "STEP); {}", usage);
    } else if (word == "layerwise") {
      if (iarg + 1 >= narg) error->all(FLERR, "pair_style mlpot layerwise: expected yes or no after it; {}", usage);
      const std::string value = arg[iarg + 1];
      if (value != "yes" && value != "no")
        error->all(FLERR, "pair_style mlpot layerwise must be yes or no, got '{}' (no: run a message-passing model "
                          "as one call on a ghost shell of its interaction_range)", value);
      layerwise_opt = value == "yes" ? 1 : 0;
      iarg += 2;
    } else if (word == "images") {
      if (iarg + 1 >= narg) error->all(FLERR, "pair_style mlpot images: expected fold or ghosts after it; {}", usage);
      const std::string value = arg[iarg + 1];
      if (value != "fold" && value != "ghosts")
        error->all(FLERR, "pair_style mlpot images must be fold or ghosts, got '{}' (fold: on one rank, periodic "
                          "images are the atoms themselves with a shift; ghosts: images are separate ghost rows)",
                   value);
      images_opt = value == "fold" ? 1 : 0;
      iarg += 2;
    } else if (word == "dtype") {
      if (iarg + 1 >= narg) error->all(FLERR, "pair_style mlpot dtype: expected float32 or float64 after it; {}", usage);
      dtype_opt = arg[iarg + 1];
      if (dtype_opt != "float32" && dtype_opt != "float64")
        error->all(FLERR, "pair_style mlpot dtype must be float32 or float64, got '{}' (half precision is too "
                          "coarse for forces; drop the option to run the model file's own dtype)", dtype_opt);
      iarg += 2;
    } else if (word == "threads") {
      if (iarg + 1 >= narg) error->all(FLERR, "pair_style mlpot threads: expected a number N >= 1 after it; {}", usage);
      threads_opt = utils::inumeric(FLERR, arg[iarg + 1], false, lmp);
      if (threads_opt < 1)
        error->all(FLERR, "pair_style mlpot threads must be >= 1 (torch threads per MPI rank), got {}", threads_opt);
      iarg += 2;
    } else if (word == "edges") {
      if (iarg + 1 >= narg) error->all(FLERR, "pair_style mlpot edges: expected host or device after it; {}", usage);
      const std::string value = arg[iarg + 1];
      if (value != "host" && value != "device")
        error->all(FLERR, "pair_style mlpot edges must be host or device, got '{}' (device: the cutoff filter and "
                          "image shifts run where the model runs, only positions are copied each step; the default "
                          "with device cuda)", value);
      edges_opt = value == "device" ? 1 : 0;
      iarg += 2;
    } else if (word == "uncertainty") {
      unc_every = every(iarg + 1, "uncertainty");
      iarg += 3;
    } else if (word == "model_devi") {
      if (iarg + 1 >= narg) error->all(FLERR, "pair_style mlpot model_devi: expected a file name after it; {}", usage);
      devi_file = arg[iarg + 1];
      devi_every = every(iarg + 2, "model_devi");
      iarg += 4;
      for (; iarg < narg; iarg++) {
        if (strcmp(arg[iarg], "calibrated") == 0)
          devi_calibrated = 1;
        else if (strcmp(arg[iarg], "atomic") == 0)
          devi_atomic = 1;
        else
          break;
      }
    } else {
      error->all(FLERR, "Unknown pair_style mlpot option '{}'; {}", word, usage);
    }
  }
  if (device_name == "cuda" && !torch::cuda::is_available())
    error->all(FLERR, "pair_style mlpot device cuda: CUDA is not available to libtorch on this machine "
                      "(no GPU or CPU-only torch); use device cpu");

  load_model(arg[0]);
  if (edges_opt >= 0 && lattice())
    error->all(FLERR, "pair_style mlpot edges: lattice model {} has no edges (its sites are a block of the "
                      "lattice); drop 'edges {}'", model_path, edges_opt ? "device" : "host");
  edges_device = !lattice() && (edges_opt == 1 || (edges_opt < 0 && device_name == "cuda"));
  edges_flag = edges_device ? 1.0 : 0.0;
  if ((unc_every || devi_every) && nmembers < 2)
    error->all(FLERR, "pair_style mlpot uncertainty/model_devi need a committee model, but {} has "
                      "ensemble_size 1; use a committee model or drop the option", model_path);
  if (devi_fp) {
    fclose(devi_fp);
    devi_fp = nullptr;
  }
  unc_step = -1;
  warned_member_virial = false;
  style_args.assign(arg, arg + narg);
  std::error_code ec;
  auto absolute = std::filesystem::absolute(model_path, ec);    // restart files may be read elsewhere
  style_args[0] = ec ? model_path : absolute.string();

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

namespace {
/* torch_libraries of the metadata (contract): dlopen each listed library of an allowed extension provider
   (the rule of mlpot_plugins.contract.validate_metadata), in order, globally, never closed */
void load_torch_libraries(Error *error, const json &meta, const std::string &path)
{
  if (!meta.contains("torch_libraries")) return;
  const json &libs = meta["torch_libraries"];
  const json allowed = json::parse(MLPOT_TORCH_EXTENSIONS);
  const std::string fix = "re-import the model with `mlpot import`";
  auto is_entry = [](const json &e) {
    if (!e.is_object() || !e.contains("python_module") || !e["python_module"].is_string() ||
        !e.contains("shared_libraries") || !e["shared_libraries"].is_array())
      return false;
    const json &files = e["shared_libraries"];
    return std::all_of(files.begin(), files.end(), [](const json &p) { return p.is_string(); });
  };
  if (!libs.is_array() || !std::all_of(libs.begin(), libs.end(), is_entry))
    error->all(FLERR, "pair_style mlpot: metadata.json of model '{}': field 'torch_libraries' must be a list of "
                      "{{\"python_module\": string, \"shared_libraries\": [string, ...]}}, got {}; {}", path,
               libs.dump(), fix);
  for (const json &entry : libs) {
    const std::string module = entry["python_module"].get<std::string>();
    std::vector<std::string> odd;
    for (const json &p : entry["shared_libraries"]) {
      std::string file = p.get<std::string>();
      std::replace(file.begin(), file.end(), '\\', '/');
      file = file.substr(file.rfind('/') + 1);
      const bool known = allowed.contains(module) &&
          std::find(allowed[module]["libraries"].begin(), allowed[module]["libraries"].end(), file) !=
              allowed[module]["libraries"].end();
      if (!known) odd.push_back(p.get<std::string>());
    }
    if (!allowed.contains(module) || !odd.empty())
      error->all(FLERR, "pair_style mlpot: model '{}': torch_libraries asks to load '{}' [{}], which is not a "
                        "known extension provider ({}); loading it would run unknown native code; {}", path,
                 module, join(odd), allowed.dump(), fix);
    for (const json &p : entry["shared_libraries"]) {
      const std::string lib = p.get<std::string>();
      if (!dlopen(lib.c_str(), RTLD_NOW | RTLD_GLOBAL)) {  // never closed: torch keeps the classes
        const char *why = dlerror();
        error->all(FLERR, "pair_style mlpot: model '{}' needs the TorchScript extension library {} of Python "
                          "module '{}', which cannot be loaded ({}); install its package in this environment (pip "
                          "install {}) or re-import the model with `mlpot import` where it is installed",
                   path, lib, module, why ? why : "unknown dlopen error",
                   allowed[module]["package"].get<std::string>());
      }
    }
  }
}
}  // namespace

void PairMLPot::load_model(const std::string &path_in)
{
  std::string path = path_in;
  std::error_code ec;
  if (std::filesystem::is_directory(std::filesystem::path(path), ec))
    error->all(FLERR, "pair_style mlpot: model path '{}' is a directory, not a model file; give the path of "
                      "the exported .pt file (e.g. {}/model.pt)", path_in, path_in);
  if (!platform::file_is_readable(path)) {
    // a bare name may be a model shipped in the mlpot_plugins package
    const char *env = getenv("MLPOT_PRETRAINED_DIR");
    const bool env_set = env && *env;
    std::string dir = env_set ? env : MLPOT_PRETRAINED_DIR;
    if (env_set && path.find('/') == std::string::npos && !platform::path_is_directory(dir))
      error->all(FLERR, "pair_style mlpot: $MLPOT_PRETRAINED_DIR='{}' is not a directory, so shipped models "
                        "cannot be found by name ('{}'). Point MLPOT_PRETRAINED_DIR at a folder of .pt models, "
                        "or unset it to use {}", dir, path_in, MLPOT_PRETRAINED_DIR);
    std::string shipped = dir + "/" + path + ".pt";
    if (!dir.empty() && path.find('/') == std::string::npos && platform::file_is_readable(shipped))
      path = shipped;
    else if (std::any_of(path_in.begin(), path_in.end(), [](char c) { return (unsigned char) c >= 0x80; }))
      error->all(FLERR, "pair_style mlpot: model file '{}' does not exist or is not readable; its path has "
                        "non-ASCII characters, which LAMMPS rewrites in input lines: copy or link the model "
                        "to a path with ASCII characters only", path_in);
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
    // one GPU per rank of a node: the rank among the ranks sharing this node picks the device
    MPI_Comm node;
    MPI_Comm_split_type(world, MPI_COMM_TYPE_SHARED, comm->me, MPI_INFO_NULL, &node);
    int node_rank = 0;
    MPI_Comm_rank(node, &node_rank);
    MPI_Comm_free(&node);
    int ngpu = (int) torch::cuda::device_count();
    m->device = torch::Device(torch::kCUDA, node_rank % std::max(ngpu, 1));
  }
  mlpot_torch::use_dynamic_shapes();
  auto corrupt = [&](const std::exception &e) {
    error->all(FLERR, "pair_style mlpot: model file '{}' is corrupt: torch cannot load it ({}); re-export it "
                      "with mlpot_plugins.export()", path, torch_message(e));
  };
  // metadata.json is read before torch::jit::load: its torch_libraries must be loaded for the load to work
  std::string text;
  try {
    caffe2::serialize::PyTorchStreamReader reader(path);
    if (reader.hasRecord("extra/metadata.json")) {
      auto record = reader.getRecord("extra/metadata.json");
      text.assign(static_cast<const char *>(std::get<0>(record).get()), std::get<1>(record));
    }
  } catch (const std::exception &e) {
    corrupt(e);
  }
  if (text.empty())
    error->all(FLERR, "pair_style mlpot: model file '{}' has no metadata.json; it was not written by "
                      "mlpot_plugins.export(), re-export it", path);

  // metadata.json: each field checked for presence and type, errors name the field (never JSON-library text)
  const std::string fix = "re-export the model with mlpot_plugins.export()";
  json meta = json::parse(text, nullptr, false);
  if (meta.is_discarded() || !meta.is_object())
    error->all(FLERR, "pair_style mlpot: metadata.json of model '{}' is not a valid JSON object; {}", path, fix);
  auto field = [&](const char *key, const char *expected) -> const json & {
    bool ok = meta.contains(key);
    if (ok) {
      const json &v = meta[key];
      const std::string want = expected;
      if (want == "an integer") ok = v.is_number_integer();
      else if (want == "a number") ok = v.is_number();
      else if (want == "a string") ok = v.is_string();
      else ok = v.is_array() && std::all_of(v.begin(), v.end(), [](const json &s) { return s.is_string(); });
      if (!ok)
        error->all(FLERR, "pair_style mlpot: metadata.json of model '{}': field '{}' must be {}, got {} {}; {}",
                   path, key, expected, v.type_name(), v.dump(), fix);
    } else {
      error->all(FLERR, "pair_style mlpot: metadata.json of model '{}' has no field '{}' ({}); {}", path, key,
                 expected, fix);
    }
    return meta[key];
  };
  const int version = field("format_version", "an integer").get<int>();
  if (version != 1)
    error->all(FLERR, "pair_style mlpot: model '{}' has format_version {}, this plugin reads 1; rebuild "
                      "the plugin (mlpot lammps-plugin) with the matching mlpot_plugins", path, version);
  const std::string kind = field("kind", "a string").get<std::string>();
  m->lattice = kind == "lattice";
  if (kind != "atomistic" && !m->lattice)
    error->all(FLERR, "pair_style mlpot: model '{}' is of kind '{}'; pair_style mlpot needs an atomistic "
                      "or a lattice model", path, kind);
  const char *length_unit = m->lattice ? "lattice" : "angstrom", *energy_unit = m->lattice ? "t" : "eV";
  if (field("length_unit", "a string").get<std::string>() != length_unit ||
      field("energy_unit", "a string").get<std::string>() != energy_unit)
    error->all(FLERR, "pair_style mlpot: {} model '{}' must use {} and {} (metadata.json length_unit/"
                      "energy_unit); {}", kind, path, length_unit, energy_unit, fix);
  species = field("species", "a list of element names").get<std::vector<std::string>>();
  cutoff_model = field("cutoff", "a number").get<double>();
  range_model = field("interaction_range", "a number").get<double>();
  nmembers = field("ensemble_size", "an integer").get<int>();
  unc_scale = field("uncertainty_scale", "a number").get<double>();
  const std::string dtype = field("dtype", "a string").get<std::string>();
  if (dtype != "float64" && dtype != "float32")
    error->all(FLERR, "pair_style mlpot: model '{}' has dtype {}; use float32 or float64", path, dtype);
  m->dtype = dtype == "float64" ? torch::kFloat64 : torch::kFloat32;
  if (species.empty() || !(cutoff_model > 0.0) || !std::isfinite(cutoff_model) ||
      (range_model < cutoff_model && !m->lattice) ||
      nmembers < 1 || !(unc_scale > 0.0))
    error->all(FLERR, "pair_style mlpot: metadata.json of model '{}' has invalid values: species [{}], cutoff "
                      "{}, interaction_range {}, ensemble_size {}, uncertainty_scale {} (need species, cutoff "
                      "> 0, interaction_range >= cutoff, ensemble_size >= 1, uncertainty_scale > 0); {}",
               path, join(species), cutoff_model, range_model, nmembers, unc_scale, fix);

  load_torch_libraries(error, meta, path);
  try {
    m->module = torch::jit::load(path, m->device);
  } catch (const std::exception &e) {
    corrupt(e);
  }

  // the metadata against the module itself: the rule of mlpot_plugins.model_file.check_module_against_metadata
  torch::jit::Module &mod = m->module;
  auto agree = [&](const char *attr, double expected) {
    if (!mod.hasattr(attr)) return;
    c10::IValue v = mod.attr(attr);
    double got;
    if (v.isDouble())
      got = v.toDouble();
    else if (v.isInt())
      got = (double) v.toInt();
    else if (v.isBool())
      got = v.toBool() ? 1.0 : 0.0;
    else
      return;
    if (got != expected)
      error->all(FLERR, "pair_style mlpot: model '{}': metadata.json says {} = {} but the module has {} = {}; "
                        "the file's metadata does not describe its module, {}", path, attr, expected, attr,
                 got, fix);
  };
  agree("cutoff", cutoff_model);
  agree("ensemble_size", nmembers);
  agree("uncertainty_scale", unc_scale);
  agree("n_species", (double) species.size());
  auto same_dtype = [&](const std::string &name, const torch::Tensor &t) {
    if (t.is_floating_point() && t.scalar_type() != m->dtype)
      error->all(FLERR, "pair_style mlpot: model '{}': metadata.json says dtype {} but the module's tensor "
                        "'{}' is {}; {}", path, dtype, name, dtype_name(t.scalar_type()), fix);
  };
  for (const auto &p : mod.named_parameters(true)) same_dtype(p.name, p.value);
  for (const auto &b : mod.named_buffers(true)) same_dtype(b.name, b.value);
  if (m->lattice && !mod.find_method("compute_lattice_block"))
    error->all(FLERR, "pair_style mlpot: lattice model '{}' has no compute_lattice_block() method (it was "
                      "exported before LAMMPS could split lattices into blocks); re-export it, weights unchanged: "
                      "python -m mlpot_plugins.pretrained.reexport_holstein {}", path, path);
  if (!m->lattice && !mod.find_method("compute"))
    error->all(FLERR, "pair_style mlpot: model '{}' has no exported compute() method (needed by kind "
                      "atomistic); {}", path, fix);
  if (!m->lattice && nmembers > 1 && !mod.find_method("force_uncertainty"))
    error->all(FLERR, "pair_style mlpot: committee model '{}' (ensemble_size {}) has no exported "
                      "force_uncertainty() method; {}", path, nmembers, fix);
  if (m->lattice && !dtype_opt.empty() && dtype_opt != dtype)    // the rule of model_file.convert_dtype
    error->all(FLERR, "pair_style mlpot: dtype conversion is for atomistic models; lattice model '{}' runs in its "
                      "exported dtype {} (drop 'dtype {}')", path, dtype, dtype_opt);
  if (!dtype_opt.empty() && dtype_opt != dtype) {    // pair_style option dtype: cast its float tensors once
    m->dtype = dtype_opt == "float64" ? torch::kFloat64 : torch::kFloat32;
    mlpot_torch::cast_floating(mod, m->dtype);
  }
  std::tie(mp_layers, mp_feature_dim) = layerwise_contract(error, meta, mod, path);
  if (layerwise_opt == 1 && mp_layers == 0)
    error->all(FLERR, "pair_style mlpot layerwise yes: model '{}' does not export the layer-wise methods (mp_*, "
                      "see mlpot_plugins/contract.py); drop the option (it then runs on a ghost shell of "
                      "interaction_range) or re-export the model with mlpot_plugins.export()", path);
  model = std::move(m);
  model_path = path;
  check_units(true);
  if (lattice()) return lattice_setup(text);    // pair_mlpot_lattice.cpp
  if (fallback_threshold > 0.0)
    error->all(FLERR, "pair_style mlpot: the fallback keyword is for lattice models (exact local solver), model "
                      "'{}' is atomistic; drop 'fallback {}'", path, fallback_threshold);
  nextra = 0;
  pvector = nullptr;
  cut_lmp = cutoff_model * len_factor;
  range_lmp = range_model * len_factor;
  // layer by layer: ghosts one cutoff deep, their features forward- and gradients reverse-communicated
  layered = mp_layers > 0 && layerwise_opt != 0;
  ghostneigh = range_model > cutoff_model && !layered ? 1 : 0;
  layered_flag = layered ? 1.0 : 0.0;
  comm_forward = layered ? mp_feature_dim : 0;
  comm_reverse = std::max(nmembers > 1 ? 3 * nmembers : 0, layered ? mp_feature_dim : 0);
  if (comm->me == 0 && range_model > cutoff_model) {
    if (layered)
      utils::logmesg(lmp, "pair_style mlpot: {} runs layer by layer ({} layers, up to {} features per atom "
                          "exchanged between layers): ghost atoms one cutoff deep\n", path, mp_layers, mp_feature_dim);
    else
      utils::logmesg(lmp, "pair_style mlpot: {} runs as one call on ghost atoms up to its interaction_range {} "
                          "({}){}\n", path, range_model, mp_layers ? "layerwise no" : "no layer-wise methods",
                     mp_layers ? "" : "; re-export it with the layer-wise methods if its family has them");
  }
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
    if (el == "NULL" && lattice())
      error->all(FLERR, "pair_coeff mlpot: atom type {} is NULL, but every atom of a lattice deck is a site of "
                        "model {}; map every type to {} (pair_coeff * * {} ...)", t, model_path, species[0],
                 species[0]);
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

/* units of the model's kind: metal/real for atomistic models (set = true: take their factors), lj for
   lattice models; set = false (init): the unit style must not have changed since pair_style */
void PairMLPot::check_units(bool set)
{
  mlpot_units::Factors fac{1.0, 1.0};
  const bool ok = lattice() ? mlpot_units::lattice_units(update->unit_style)
                            : mlpot_units::lammps_factors(update->unit_style, fac);
  if (!ok && lattice())
    error->all(FLERR, "pair_style mlpot: lattice model {} needs units {} (lengths in lattice spacings, energies "
                      "in t, k_B = 1), not units {}; put 'units lj' before the box is defined", model_path,
               mlpot_units::LATTICE_SUPPORTED, update->unit_style);
  if (!ok)
    error->all(FLERR, "pair_style mlpot does not support units {} for atomistic model {}; use one of: {} (units "
                      "lj is for lattice models)", update->unit_style, model_path, mlpot_units::SUPPORTED);
  if (set) {
    len_factor = fac.length;
    eng_factor = fac.energy;
  } else if (fac.length != len_factor || fac.energy != eng_factor) {
    error->all(FLERR, "pair_style mlpot: units changed after pair_style; re-issue pair_style");
  }
}

bool PairMLPot::lattice() const { return model && model->lattice; }

void PairMLPot::init_style()
{
  check_units(false);
  // edges device: candidates belong to one neighbour-list build; a new run or minimisation starts the count of
  // builds again (and may have moved, sorted or exchanged the atoms), so they are made anew at its first step
  if (model) model->cand_ncalls = -1;
  if (!tune_malloc())
    error->all(FLERR, "MLPOT_MALLOC={} is not understood; use 'system' (leave glibc's malloc settings alone) or "
                      "unset it (keep freed tensors for the next call)", getenv("MLPOT_MALLOC"));
  if (lattice()) {
    lattice_init_style();    // pair_mlpot_lattice.cpp: needs no neighbour list, only ghost sites
  } else {
    if (force->newton_pair == 0)
      error->all(FLERR, "pair_style mlpot requires newton_pair on (ghost forces are summed by reverse "
                        "communication); remove 'newton off' from the input");
    // one rank: every ghost is a periodic image of a local atom, so the model sees only the local atoms and
    // edges with image shifts -- the ASE calculator's periodic graph: no ghost rows, no ghost shell beyond the
    // cutoff, no layer-by-layer exchange, one compute() call (any message-passing model, imported ones too)
    fold = images_opt == 1 && comm->nprocs == 1 && atom->tag_enable;
    // several ranks, layer by layer: a ghost that is a periodic image of a local atom (or of another ghost)
    // shares that atom's row, so only other ranks' atoms become ghost rows (the features are the same)
    const bool was_merged = merge;
    merge = images_opt == 1 && comm->nprocs > 1 && atom->tag_enable && layered;
    if (fold != (fold_flag > 0.0) || merge != was_merged || !fold_logged) {
      fold_logged = true;
      if (fold && comm->me == 0)
        utils::logmesg(lmp, "pair_style mlpot: one rank: periodic images folded onto their atoms (edges with image "
                            "shifts, one compute() call on the local atoms, no ghost rows)\n");
      if (merge && comm->me == 0)
        utils::logmesg(lmp, "pair_style mlpot: periodic images share one row per atom ID on each rank (edges with "
                            "image shifts; ghost rows only for other ranks' atoms)\n");
    }
    fold_flag = fold ? 1.0 : 0.0;
    neighbor->add_request(this, NeighConst::REQ_FULL | (ghostneigh && !fold ? NeighConst::REQ_GHOST : 0));
  }
  // message passing: ghost atoms up to interaction_range (+ skin, as atoms move between re-neighbouring).
  // The user's own comm_modify cutoff is remembered, so a re-issued pair_style with a smaller range (or
  // another pair style, see the destructor) gets it back instead of keeping our larger ghost shell.
  const bool ours = cutghost_set >= 0.0 && comm->cutghostuser == cutghost_set;
  if (!ours) cutghost_user = comm->cutghostuser;
  comm->cutghostuser = ghostneigh && !fold ? std::max(cutghost_user, range_lmp + neighbor->skin) : cutghost_user;
  cutghost_set = comm->cutghostuser;
  // torch threads per rank: option threads N, else MLPOT_THREADS, else OMP_NUM_THREADS (libtorch follows it
  // itself), else LAMMPS's own thread count (-sf omp / package omp; 1 by default). More threads than free
  // cores were 4-10x slower on a loaded machine (issue 12).
  int nthreads = threads_opt;
  const char *env = getenv("MLPOT_THREADS");
  if (!nthreads && env && *env) {
    nthreads = atoi(env);
    if (nthreads < 1) error->all(FLERR, "pair_style mlpot: MLPOT_THREADS={} must be a number >= 1", env);
  }
  if (!nthreads && !getenv("OMP_NUM_THREADS")) nthreads = std::max(1, comm->nthreads);
  if (nthreads && at::get_num_threads() != nthreads) at::set_num_threads(nthreads);
}

double PairMLPot::init_one(int i, int j)
{
  if (lattice()) return lattice_cutoff();
  if (ghostneigh && !fold) cutghost[i][j] = cutghost[j][i] = cut_lmp;
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
  const bigint step = update->ntimestep;
  const bool unc_now = uncertainty_wanted(step);
  const bool devi_now = unc_now && devi_every && step % devi_every == 0;
  evaluate(true, unc_now, devi_now);
  if (devi_now) write_model_devi();
}

void PairMLPot::uncertainty_now()
{
  if (nmembers < 2) error->all(FLERR, "pair_style mlpot: model {} is not a committee", model_path);
  if (unc_step != update->ntimestep) {
    if (!model || (!list && !lattice()))
      error->all(FLERR, "compute mlpot/atom was invoked before any run; use 'run 0' first");
    committee_on_demand += 1.0;
    evaluate(false, true, false);
  }
}

double PairMLPot::total_energy_std()
{
  const int K = nmembers;
  std::vector<double> all(K, 0.0);
  MPI_Allreduce(member_energy.data(), all.data(), K, MPI_DOUBLE, MPI_SUM, world);
  double mean = 0.0, var = 0.0;
  for (double e : all) mean += e / K;
  for (double e : all) var += (e - mean) * (e - mean) / K;
  return std::sqrt(var) * unc_scale * eng_factor;
}

/* The single place where exceptions become LAMMPS errors: every step of an evaluation (tensor
   allocation, the model call, output access, CUDA out-of-memory, ...) throws, never terminates. */
void PairMLPot::evaluate(bool write_forces, bool need_uncertainty, bool need_member_virial)
{
  const double t_start = platform::walltime();
  const bool need_unc = need_uncertainty && nmembers > 1;
  const char *stage = "building the model inputs";
  unc_step = -1;
  std::string fail;    // lattice models: this rank's error, made collective below
  try {
    if (lattice()) {
      try {
        lattice_evaluate(write_forces, need_unc, stage);    // pair_mlpot_lattice.cpp (no MPI calls inside)
      } catch (LAMMPSException &) {
        throw;
      } catch (const MLPotError &e) {
        fail = e.what();
      } catch (const std::exception &e) {
        fail = fmt::format("model {} failed in {}: {}", model_path, stage, torch_message(e));
      }
      collective_error(fail);
    } else {
      build_inputs();
      stage = layered && !fold ? "its layer-wise methods (mp_*)" : "its compute() method";
      const bool need_virial = (write_forces && (vflag_global || vflag_atom)) || (need_unc && need_member_virial);
      if (layered && !fold)
        call_model_layered(need_virial, need_unc);    // pair_mlpot_layered.cpp
      else
        call_model(need_virial, need_unc);
      stage = "reading its outputs";
      if (write_forces) scatter_outputs();
      stage = "the committee statistics";
      if (need_unc) committee_statistics();
    }
  } catch (LAMMPSException &) {
    throw;
  } catch (const MLPotError &e) {
    error->one(FLERR, "pair_style mlpot: {}", e.what());
  } catch (const std::exception &e) {
    const std::string msg = torch_message(e);
    const bool oom = msg.find("out of memory") != std::string::npos;
    error->one(FLERR, "pair_style mlpot: model {} failed in {}: {}{}", model_path, stage, msg,
               oom ? "; use fewer atoms per rank (more MPI ranks or GPUs) or device cpu" : "");
  }
  time_evaluate += platform::walltime() - t_start;
}

/* An error found by some ranks only (a doubled site, an atom off its lattice point in one sub-domain) stops every
   rank with the message of the lowest such rank through error->all, printed by rank 0: error->one's MPI_Abort
   can kill the job before another rank's message reaches the screen. One integer allreduce per evaluation. */
void PairMLPot::collective_error(const std::string &fail)
{
  int mine = fail.empty() ? INT_MAX : comm->me, first = INT_MAX;
  MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, world);
  if (first == INT_MAX) return;
  std::string msg = fail;
  int len = (int) msg.size();
  MPI_Bcast(&len, 1, MPI_INT, first, world);
  msg.resize(len);
  MPI_Bcast(&msg[0], len, MPI_CHAR, first, world);
  const bool oom = msg.find("out of memory") != std::string::npos;
  error->all(FLERR, "pair_style mlpot: {}{}{}", msg, comm->nprocs > 1 ? fmt::format(" (rank {})", first) : "",
             oom ? "; use fewer sites per rank (more MPI ranks or GPUs) or device cpu" : "");
}

/* the atom whose row each local/ghost atom shares, by tag: the local atom with that tag, else the first ghost with
   it (several ranks, merged images). One rank (fold): every ghost must be an image of a local atom. */
void PairMLPot::map_images()
{
  Model &m = *model;
  const int nlocal = atom->nlocal, nall = nlocal + atom->nghost;
  const tagint *tag = atom->tag;
  m.owner.resize(nall);
  auto &first = m.first_of_tag;
  first.clear();
  first.reserve(nall);
  for (int j = 0; j < nall; j++) {
    const int o = first.emplace(tag[j], j).first->second;    // locals come first
    if (fold && o >= nlocal)
      throw MLPotError(fmt::format("ghost atom with ID {} is not an image of an atom of this rank, although the run "
                                   "has one rank; use 'pair_style mlpot ... images ghosts' and report this", tag[j]));
    m.owner[j] = o;
  }
}

/* shifts of E edges whose ghosts are at their image positions: a view of zeros kept from step to step */
static torch::Tensor zero_shifts(PairMLPot::Model &m, int64_t nedges)
{
  if (!m.zero_shifts.defined() || m.zero_shifts.size(0) < nedges)
    m.zero_shifts = torch::zeros({nedges + nedges / 4 + 16, 3}, torch::TensorOptions().dtype(m.dtype).device(m.device));
  return m.zero_shifts.narrow(0, 0, nedges);
}

/* The model inputs of this evaluation as tensors where the model runs (Model::in_*). edges host: built here and
   copied over; edges device: only the positions are copied, the rest is done there. */
void PairMLPot::build_inputs()
{
  if (edges_device && build_inputs_device()) return;
  build_inputs_host();
  Model &m = *model;
  const auto topts = torch::TensorOptions().dtype(m.dtype).device(m.device);
  // the CPU buffers are wrapped, not copied (a copy happens only for float32 models or a GPU)
  m.in_pos = torch::from_blob(m.pos.data(), {m.nrows, 3}, torch::kFloat64).to(topts);
  m.in_types = torch::from_blob(m.types.data(), {m.nrows}, torch::kInt64).to(m.device);
  m.in_edges = torch::from_blob(m.edges.data(), {2, m.nedges}, torch::kInt64).to(m.device);
  if (fold || merge) {
    m.in_shifts = torch::from_blob(m.shifts.data(), {m.nedges, 3}, torch::kFloat64).to(topts);
  } else {
    m.in_shifts = zero_shifts(m, m.nedges);
  }
}


/* the first rows of an evaluation: the mapped local atoms; other rows are added by Model::row as edges reach them.
   Folded/merged images: which atom's row each ghost shares. Returns whether every atom type is mapped. */
bool PairMLPot::start_rows()
{
  Model &m = *model;
  const int nlocal = atom->nlocal;
  const int *type = atom->type;
  m.row_of_atom.assign(nlocal + atom->nghost, -1);
  m.atom_of_row.clear();
  for (int i = 0; i < nlocal; i++) {
    if (type_map[type[i]] < 0) continue;
    m.row_of_atom[i] = (int) m.atom_of_row.size();
    m.atom_of_row.push_back(i);
  }
  m.n_local_rows = (int) m.atom_of_row.size();
  if (fold || merge) map_images();
  bool all_mapped = true;
  for (int t = 1; t <= atom->ntypes; t++) all_mapped = all_mapped && type_map[t] >= 0;
  return all_mapped;
}

/* rows: the mapped local atoms, then only the ghosts that are an end of some edge (the ghost shell of
   cutoff + skin holds many more atoms than the model needs); edges within the model cutoff (the list
   has cutoff + skin), with ghost centres for message passing. */
void PairMLPot::build_inputs_host()
{
  Model &m = *model;
  const int nlocal = atom->nlocal;
  double **x = atom->x;
  const int *type = atom->type;

  const bool all_mapped = start_rows();
  auto row = [&m](int a) { return m.row(a); };
  const bool by_owner = fold || merge;    // images share their atom's row; edges carry the shifts

  const double cutsq_model = cut_lmp * cut_lmp;
  const double coincident = 1e-4 * len_factor;    // 1e-4 Angstrom: the same position, not a close contact
  const int ncentres = list->inum + (ghostneigh && !fold ? list->gnum : 0);
  m.edges.clear();
  m.dst.clear();
  m.shifts.clear();
  double min_rsq = std::numeric_limits<double>::max();
  for (int ii = 0; ii < ncentres; ii++) {
    const int i = list->ilist[ii];
    if (type_map[type[i]] < 0) continue;
    const double xi = x[i][0], yi = x[i][1], zi = x[i][2];
    const int *jlist = list->firstneigh[i];
    const int jnum = list->numneigh[i];
    if ((int) m.accepted.size() < jnum) {
      m.accepted.resize(jnum);
      m.accepted_rsq.resize(jnum);
    }
    int *acc = m.accepted.data();
    double *acc_rsq = m.accepted_rsq.data();
    int k = 0;    // branch-free: about half of the cutoff + skin candidates are within the cutoff
    for (int jj = 0; jj < jnum; jj++) {
      const int j = jlist[jj] & NEIGHMASK;
      const double dx = x[j][0] - xi, dy = x[j][1] - yi, dz = x[j][2] - zi;
      const double rsq = dx * dx + dy * dy + dz * dz;
      acc[k] = j;
      acc_rsq[k] = rsq;
      k += (rsq < cutsq_model) & (all_mapped | (type_map[type[j]] >= 0));
    }
    if (k == 0) continue;    // a ghost centre becomes a row only if it has an edge
    const int64_t ri = row(i);
    for (int a = 0; a < k; a++) {
      const int j = acc[a];
      min_rsq = std::min(min_rsq, acc_rsq[a]);
      m.edges.push_back(ri);
      if (by_owner) {    // the image's owner, and the shift that takes the owner to the image
        const int o = m.owner[j];
        m.dst.push_back(o < nlocal ? m.row_of_atom[o] : row(o));
        for (int d = 0; d < 3; d++) m.shifts.push_back((x[j][d] - x[o][d]) / len_factor);
      } else {
        m.dst.push_back(j < nlocal ? m.row_of_atom[j] : row(j));
      }
    }
    if (min_rsq < coincident * coincident) {
      for (int a = 0; a < k; a++)
        if (acc_rsq[a] < coincident * coincident)
          throw MLPotError(fmt::format(
              "atoms {} and {} are at the same position (distance {:.3g}): the model's forces would be NaN; "
              "remove the duplicate atom (e.g. overlapping create_atoms or read_data with repeated "
              "coordinates)", atom->tag[i], atom->tag[acc[a]], std::sqrt(acc_rsq[a])));
    }
  }
  m.nrows = (int) m.atom_of_row.size();
  m.nedges = (int64_t) m.dst.size();
  rows_flag = m.nrows;
  m.edges.insert(m.edges.end(), m.dst.begin(), m.dst.end());    // [2, E]: sources then destinations

  m.pos.resize(3 * (std::size_t) m.nrows);
  m.types.resize(m.nrows);
  for (int r = 0; r < m.nrows; r++) {
    const int a = m.atom_of_row[r];
    for (int d = 0; d < 3; d++) m.pos[3 * r + d] = x[a][d] / len_factor;
    m.types[r] = type_map[type[a]];
  }
}

/* edges device: the rows and every pair of the neighbour list (cutoff + skin) of the current list build, as
   the two rows and the neighbour's LAMMPS index, put where the model runs (the centre's and the owner's atoms are
   the atoms of their rows). Between list builds LAMMPS keeps its atoms' indices
   (local and ghost) and only moves them, so the same candidates hold until the next build. The rows are those of
   build_inputs_host, except that a ghost is a row if it ends a candidate (not only an edge within the cutoff):
   a few rows more, with no edge, the same results. */
void PairMLPot::build_candidates()
{
  Model &m = *model;
  const int nlocal = atom->nlocal, nall = nlocal + atom->nghost;
  const int *type = atom->type;
  const bool all_mapped = start_rows();
  auto row = [&m](int a) { return m.row(a); };
  const bool by_owner = fold || merge;
  const int ncentres = list->inum + (ghostneigh && !fold ? list->gnum : 0);
  std::vector<int64_t> &c = m.c_host;    // three columns, appended pair by pair, then split below
  c.clear();
  for (int ii = 0; ii < ncentres; ii++) {
    const int i = list->ilist[ii];
    if (type_map[type[i]] < 0) continue;
    const int *jlist = list->firstneigh[i];
    const int jnum = list->numneigh[i];
    for (int jj = 0; jj < jnum; jj++) {
      const int j = jlist[jj] & NEIGHMASK;
      if (!all_mapped && type_map[type[j]] < 0) continue;
      const int o = by_owner ? m.owner[j] : j;
      const int ri = row(i);
      const int rj = o < nlocal ? m.row_of_atom[o] : row(o);
      c.insert(c.end(), {(int64_t) ri, (int64_t) rj, (int64_t) j});
    }
  }
  m.nrows = (int) m.atom_of_row.size();
  m.types.resize(m.nrows);
  for (int r = 0; r < m.nrows; r++) m.types[r] = type_map[type[m.atom_of_row[r]]];
  const int64_t ncand = (int64_t) c.size() / 3;
  // one copy of the [C, 3] table; its columns are strided views there, made contiguous once
  auto table = torch::from_blob(c.data(), {ncand, 3}, torch::kInt64).to(m.device, false, true);
  m.c_src = table.select(1, 0).contiguous();
  m.c_dst = table.select(1, 1).contiguous();
  m.c_j = table.select(1, 2).contiguous();
  m.in_types = torch::from_blob(m.types.data(), {m.nrows}, torch::kInt64).to(m.device, false, true);
  std::vector<int64_t> rows(m.atom_of_row.begin(), m.atom_of_row.end());
  m.row_atom = torch::from_blob(rows.data(), {m.nrows}, torch::kInt64).to(m.device, false, true);
  m.cand_ncalls = neighbor->ncalls;
  m.cand_list = list;
  m.cand_nlocal = nlocal;
  m.cand_nall = nall;
  candidate_builds += 1.0;
}

/* edges device: per step, the positions of every local and ghost atom are copied to where the model runs (the one
   host-to-device copy); there the candidates are filtered by the cutoff, the model positions gathered and the
   image shifts of folded/merged images taken -- the same numbers build_inputs_host makes on the host. Returns false
   when two atoms may sit at the same position: build_inputs_host then builds this step (and names them). */
bool PairMLPot::build_inputs_device()
{
  Model &m = *model;
  const int nlocal = atom->nlocal, nall = nlocal + atom->nghost;
  // the atoms keep their indices until the next neighbour-list build (neighbor->ncalls counts them within a run;
  // init_style forgets the candidates between runs)
  if (neighbor->ncalls != m.cand_ncalls || (const void *) list != m.cand_list || nlocal != m.cand_nlocal ||
      nall != m.cand_nall)
    build_candidates();
  const auto f64 = torch::TensorOptions().dtype(torch::kFloat64).device(m.device);
  auto x = nall > 0 ? torch::from_blob(atom->x[0], {nall, 3}, torch::kFloat64).to(f64) : torch::zeros({0, 3}, f64);
  auto x_rows = x.index_select(0, m.row_atom);    // LAMMPS positions of the rows (centres, image owners)
  auto xj = x.index_select(0, m.c_j);
  auto d = xj - x_rows.index_select(0, m.c_src);
  auto rsq = (d * d).sum(1);
  auto within = rsq < cut_lmp * cut_lmp;
  const double coincident = 1e-4 * len_factor;    // as build_inputs_host
  if (m.c_j.size(0) > 0 &&
      torch::where(within, rsq, torch::full({}, INFINITY, f64)).min().item<double>() < coincident * coincident) {
    m.cand_ncalls = -1;    // build_inputs_host takes over the rows (candidates are made again next time)
    return false;
  }
  auto idx = within.nonzero().squeeze(1);
  m.nedges = idx.size(0);
  m.in_edges = torch::stack({m.c_src.index_select(0, idx), m.c_dst.index_select(0, idx)});
  m.in_pos = (x_rows / len_factor).to(m.dtype);
  if (fold || merge)    // the image's position minus its owner's (the atom of the neighbour's row)
    m.in_shifts = ((xj.index_select(0, idx) - x_rows.index_select(0, m.in_edges[1])) / len_factor).to(m.dtype);
  else
    m.in_shifts = zero_shifts(m, m.nedges);
  rows_flag = m.nrows;
  return true;
}

void PairMLPot::call_model(bool need_virial, bool need_uncertainty)
{
  Model &m = *model;
  std::vector<c10::IValue> inputs{m.in_pos, m.in_types, m.in_edges, m.in_shifts, (int64_t) m.n_local_rows,
                                  need_virial, need_uncertainty};
  const double t0 = platform::walltime();
  c10::IValue result = m.module.get_method("compute")(inputs);
  time_model += platform::walltime() - t0;
  if (!result.isGenericDict())
    throw MLPotError(fmt::format("compute() of model {} did not return a dict; re-export it with "
                                 "mlpot_plugins.export()", model_path));
  m.out = std::move(result);
}

void PairMLPot::scatter_outputs()
{
  Model &m = *model;
  const int nrows = m.nrows, nl = m.n_local_rows;
  const double ffac = eng_factor / len_factor;
  auto forces = model_output(m.out, "forces", model_path, {nrows, 3});
  const double *fp = forces.data_ptr<double>();
  double **f = atom->f;
  for (int r = 0; r < nrows; r++) {
    const int a = m.atom_of_row[r];
    for (int d = 0; d < 3; d++) f[a][d] += fp[3 * r + d] * ffac;
  }
  if (eflag_global) eng_vdwl += model_output(m.out, "energy", model_path, {}).item<double>() * eng_factor;
  if (eflag_atom) {
    auto e = model_output(m.out, "energies", model_path, {nl});
    const double *ep = e.data_ptr<double>();
    for (int r = 0; r < nl; r++) eatom[m.atom_of_row[r]] += ep[r] * eng_factor;
  }
  // contract: W[a][b] = sum x_a F_b; LAMMPS order xx yy zz xy xz yz
  static const int ia[6] = {0, 1, 2, 0, 0, 1}, ib[6] = {0, 1, 2, 1, 2, 2};
  if (vflag_global) {
    auto w = model_output(m.out, "virial", model_path, {3, 3});
    const double *wp = w.data_ptr<double>();
    for (int k = 0; k < 6; k++) virial[k] += wp[3 * ia[k] + ib[k]] * eng_factor;
  }
  if (vflag_atom) {
    auto w = model_output(m.out, "atom_virial", model_path, {nrows, 3, 3});
    const double *wp = w.data_ptr<double>();
    for (int r = 0; r < nrows; r++) {
      const int a = m.atom_of_row[r];
      for (int k = 0; k < 6; k++) vatom[a][k] += wp[9 * r + 3 * ia[k] + ib[k]] * eng_factor;
    }
  }
}

/* per-atom buffers sized by the current committee size K (a re-issued pair_style may change it) */
void PairMLPot::grow_uncertainty_buffers()
{
  if (atom->nmax <= nmax_unc && nmembers == k_alloc) return;
  nmax_unc = std::max(nmax_unc, atom->nmax);
  k_alloc = nmembers;
  memory->destroy(unc);
  memory->destroy(unc_e);
  memory->destroy(member_f);
  memory->create(unc, nmax_unc, "pair:mlpot_unc");
  memory->create(unc_e, nmax_unc, "pair:mlpot_unc_e");
  memory->create(member_f, (bigint) nmax_unc * 3 * k_alloc, "pair:mlpot_member_f");
}

/* member forces of ghost images are summed into their owners before taking the std */
void PairMLPot::committee_statistics()
{
  Model &m = *model;
  const int K = nmembers, stride = 3 * K, nrows = m.nrows, nl = m.n_local_rows;
  const int nlocal = atom->nlocal, nall = nlocal + atom->nghost;
  const double ffac = eng_factor / len_factor;
  grow_uncertainty_buffers();
  auto mf = model_output(m.out, "member_forces", model_path, {K, nrows, 3});
  auto es = model_output(m.out, "energies_std", model_path, {nl});
  auto me = model_output(m.out, "member_energy", model_path, {K});
  have_member_virial = m.out.toGenericDict().contains("member_virial");
  if (have_member_virial) {
    auto mv = model_output(m.out, "member_virial", model_path, {K, 3, 3});
    member_virial.assign(mv.data_ptr<double>(), mv.data_ptr<double>() + 9 * K);
  }
  member_energy.assign(me.data_ptr<double>(), me.data_ptr<double>() + K);

  std::fill(member_f, member_f + (bigint) nall * stride, 0.0);
  const double *mp = mf.data_ptr<double>();
  for (int k = 0; k < K; k++)
    for (int r = 0; r < nrows; r++) {
      double *dstp = member_f + (bigint) m.atom_of_row[r] * stride + 3 * k;
      const double *srcp = mp + ((bigint) k * nrows + r) * 3;
      dstp[0] = srcp[0];
      dstp[1] = srcp[1];
      dstp[2] = srcp[2];
    }
  comm_buf = member_f;
  comm_stride = stride;
  comm->reverse_comm(this);
  m.local_f.resize((std::size_t) K * nl * 3);
  double *lp = m.local_f.data();
  for (int k = 0; k < K; k++)
    for (int r = 0; r < nl; r++)
      for (int d = 0; d < 3; d++)
        lp[((bigint) k * nl + r) * 3 + d] = member_f[(bigint) m.atom_of_row[r] * stride + 3 * k + d];
  auto local = torch::from_blob(lp, {K, nl, 3}, torch::kFloat64);
  std::vector<c10::IValue> in{local.to(torch::TensorOptions().dtype(m.dtype).device(m.device))};
  auto std_t = m.module.get_method("force_uncertainty")(in).toTensor().detach().to(torch::kCPU, torch::kFloat64).contiguous();
  if (std_t.numel() != nl)
    throw MLPotError(fmt::format("force_uncertainty() of model {} returned {} values for {} atoms", model_path,
                                 std_t.numel(), nl));
  const double *sp = std_t.data_ptr<double>();
  const double *ep = es.data_ptr<double>();
  std::fill(unc, unc + nlocal, 0.0);
  std::fill(unc_e, unc_e + nlocal, 0.0);
  for (int r = 0; r < nl; r++) {
    unc[m.atom_of_row[r]] = sp[r] * ffac;
    unc_e[m.atom_of_row[r]] = ep[r] * eng_factor;
  }
  unc_step = update->ntimestep;
  committee_evaluations += 1.0;
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
  if (strcmp(name, "fallback_sites") == 0) return (void *) &lattice_extra[0];    // this rank's, last step
  if (strcmp(name, "layerwise") == 0) return (void *) &layered_flag;
  if (strcmp(name, "images_folded") == 0) return (void *) &fold_flag;
  if (strcmp(name, "model_rows") == 0) return (void *) &rows_flag;    // rows of the last evaluation (this rank)
  if (strcmp(name, "edges_device") == 0) return (void *) &edges_flag;
  if (strcmp(name, "candidate_builds") == 0) return (void *) &candidate_builds;
  return nullptr;
}

/* reverse communication of comm_buf (member forces, or layer feature gradients): ghost rows summed into owners */
int PairMLPot::pack_reverse_comm(int n, int first, double *buf)
{
  const std::size_t count = (std::size_t) n * comm_stride;
  std::memcpy(buf, comm_buf + (bigint) first * comm_stride, count * sizeof(double));
  return (int) count;
}

void PairMLPot::unpack_reverse_comm(int n, int *list_, double *buf)
{
  const int stride = comm_stride;
  int m = 0;
  for (int i = 0; i < n; i++) {
    double *row = comm_buf + (bigint) list_[i] * stride;
    for (int k = 0; k < stride; k++) row[k] += buf[m++];
  }
}

/* DeePMD/DP-GEN model_devi line (LAMMPS units): step, max/min/avg over the 9 components of the member
   virial std divided by the number of atoms the model sees, max/min/avg per-atom force std; with
   `atomic` the per-atom force std of every atom in id order. Uncalibrated (plain committee std, as
   DeePMD writes it) unless `calibrated` (times the model's uncertainty_scale). A file that already
   holds lines (a continued run) is appended to; the header is written only into an empty file. */
void PairMLPot::write_model_devi()
{
  const int K = nmembers;
  const double scale = devi_calibrated ? 1.0 : 1.0 / unc_scale;    // unc holds calibrated values
  double mx = 0.0, mn = std::numeric_limits<double>::max(), sum = 0.0, cnt = 0.0;
  for (int i = 0; i < atom->nlocal; i++) {
    if (type_map[atom->type[i]] < 0) continue;
    const double u = unc[i] * scale;
    mx = std::max(mx, u);
    mn = std::min(mn, u);
    sum += u;
    cnt += 1.0;
  }
  double gmx, gmn, gs[2], ls[2] = {sum, cnt};
  MPI_Allreduce(&mx, &gmx, 1, MPI_DOUBLE, MPI_MAX, world);
  MPI_Allreduce(&mn, &gmn, 1, MPI_DOUBLE, MPI_MIN, world);
  MPI_Allreduce(ls, gs, 2, MPI_DOUBLE, MPI_SUM, world);
  const double natoms_seen = gs[1];

  double vmax = 0.0, vmin = 0.0, vavg = 0.0;
  if (have_member_virial) {
    std::vector<double> all(9 * K, 0.0);
    MPI_Allreduce(member_virial.data(), all.data(), 9 * K, MPI_DOUBLE, MPI_SUM, world);
    vmin = std::numeric_limits<double>::max();
    const double vscale = eng_factor * (devi_calibrated ? unc_scale : 1.0) / std::max(natoms_seen, 1.0);
    for (int c = 0; c < 9; c++) {
      double mean = 0.0, var = 0.0;
      for (int k = 0; k < K; k++) mean += all[9 * k + c] / K;
      for (int k = 0; k < K; k++) var += (all[9 * k + c] - mean) * (all[9 * k + c] - mean) / K;
      const double dev = std::sqrt(var) * vscale;
      vmax = std::max(vmax, dev);
      vmin = std::min(vmin, dev);
      vavg += dev / 9.0;
    }
  } else if (!warned_member_virial && comm->me == 0) {
    error->warning(FLERR, "pair_style mlpot: model {} returns no member_virial (exported before mlpot_plugins "
                          "added it), so the model_devi virial columns are 0; re-export the model to get them",
                   model_path);
  }
  warned_member_virial = warned_member_virial || !have_member_virial;

  std::vector<double> per_atom;
  if (devi_atomic) {
    std::vector<double> mine(atom->natoms, 0.0);
    for (int i = 0; i < atom->nlocal; i++)
      if (type_map[atom->type[i]] >= 0) mine[atom->tag[i] - 1] = unc[i] * scale;
    if (comm->me == 0) per_atom.assign(atom->natoms, 0.0);
    MPI_Reduce(mine.data(), per_atom.data(), (int) atom->natoms, MPI_DOUBLE, MPI_SUM, 0, world);
  }
  if (comm->me != 0) return;
  if (!devi_fp) {
    devi_fp = fopen(devi_file.c_str(), "a");
    if (!devi_fp)
      error->one(FLERR, "pair_style mlpot: cannot open model_devi file {}: {}", devi_file, utils::getsyserror());
    fseek(devi_fp, 0, SEEK_END);
    if (ftell(devi_fp) == 0)
      fprintf(devi_fp, "#%13s %18s %18s %18s %18s %18s %18s%s\n", "step", "max_devi_v", "min_devi_v",
              "avg_devi_v", "max_devi_f", "min_devi_f", "avg_devi_f",
              devi_atomic ? "   devi_f of each atom in id order" : "");
  }
  fprintf(devi_fp, "%14ld %18.6e %18.6e %18.6e %18.6e %18.6e %18.6e", (long) update->ntimestep, vmax, vmin,
          vavg, gmx, natoms_seen > 0 ? gmn : 0.0, natoms_seen > 0 ? gs[0] / natoms_seen : 0.0);
  for (double u : per_atom) fprintf(devi_fp, " %18.6e", u);
  fprintf(devi_fp, "\n");
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
  bytes += (double) nmax_unc * (2 + 3 * k_alloc) * sizeof(double);
  if (model) {
    const Model &m = *model;
    bytes += (double) (m.row_of_atom.capacity() + m.atom_of_row.capacity() + m.accepted.capacity()) * sizeof(int);
    bytes += (double) (m.edges.capacity() + m.dst.capacity() + m.types.capacity() + m.c_host.capacity()) *
        sizeof(int64_t);
    bytes += (double) (m.pos.capacity() + m.local_f.capacity() + m.accepted_rsq.capacity()) * sizeof(double);
  }
  return bytes;
}
