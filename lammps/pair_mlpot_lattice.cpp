/* pair_style mlpot with a lattice model (kind "lattice", mlpot_plugins/contract.py, Lattice section).

   A lattice site is an atom: site (i, j) sits at x = xlo + i a, y = ylo + j a (a = the metadata's
   extra.lattice.spacing, 1 if absent), its displacement Q is the atom's z coordinate, and the model's force
   acts along z only (F_x = F_y = 0). Each rank gathers the sites it owns (a rectangle of lattice indices)
   plus a halo of ghost sites (periodic images included, however often they wrap) into one open block and
   calls the model's compute_lattice_block(Q_block, halo, need_uncertainty), or with `fallback THRESHOLD`
   compute_lattice_block_fallback(Q_block, fallback_range, THRESHOLD). No neighbour list, no reverse
   communication: every rank computes the forces of exactly its own sites. */

#include "pair_mlpot_torch.h"

#include "atom.h"
#include "comm.h"
#include "domain.h"
#include "error.h"
#include "json.h"
#include "platform.h"
#include "update.h"

#include <cmath>
#include <cstring>

using namespace LAMMPS_NS;
using mlpot::MLPotError;
using mlpot::model_output;

namespace {
constexpr double SITE_TOLERANCE = 1e-4;    // a site may sit this many lattice spacings off its lattice point
constexpr const char *FALLBACK_METHOD = "compute_lattice_block_fallback";
constexpr const char *FALLBACK_EXPORT = "mlpot holstein export MODEL --fallback-radius 6 --out MODEL-fallback.pt";
}    // namespace

/* after load_model's common checks: halo, spacing and the fallback solver of a lattice model */
void PairMLPot::lattice_setup(const std::string &metadata_text)
{
  Model &m = *model;
  const json meta = json::parse(metadata_text);    // already checked to be a JSON object by load_model
  const std::string fix = "re-export the model with mlpot_plugins.export()";
  if (range_model != std::floor(range_model) || range_model < 0)
    error->all(FLERR, "pair_style mlpot: lattice model '{}' has interaction_range {} (must be a whole number "
                      "of sites); {}", model_path, range_model, fix);
  m.halo = (int) range_model;
  m.spacing = 1.0;
  if (meta.contains("extra") && meta["extra"].is_object() && meta["extra"].contains("lattice") &&
      meta["extra"]["lattice"].is_object() && meta["extra"]["lattice"].contains("spacing")) {
    const json &a = meta["extra"]["lattice"]["spacing"];
    if (!a.is_number() || !(a.get<double>() > 0.0))
      error->all(FLERR, "pair_style mlpot: lattice model '{}': extra.lattice.spacing must be a number > 0, got "
                        "{}; {}", model_path, a.dump(), fix);
    m.spacing = a.get<double>();
  }
  if (fallback_threshold > 0.0) {
    if (!m.module.find_method(FALLBACK_METHOD))
      error->all(FLERR, "pair_style mlpot fallback: lattice model '{}' carries no exact local solver ({}() "
                        "method), so no site can fall back to exact forces; export it with the solver (weights "
                        "unchanged): `{}` and use that file, or drop 'fallback {}'", model_path, FALLBACK_METHOD,
                 FALLBACK_EXPORT, fallback_threshold);
    if (!meta.contains("fallback_range") || !meta["fallback_range"].is_number_integer() ||
        meta["fallback_range"].get<int>() < m.halo)
      error->all(FLERR, "pair_style mlpot fallback: lattice model '{}' has no integer metadata fallback_range >= "
                        "interaction_range {} (the halo its solver needs); re-export it: `{}`", model_path, m.halo,
                 FALLBACK_EXPORT);
    m.halo = meta["fallback_range"].get<int>();
  }
  cut_lmp = range_lmp = m.halo * m.spacing;
  ghostneigh = 0;
  comm_reverse = 0;
  nextra = 1;    // compute ID all pair mlpot: c_ID[1] = sites that fell back this step (summed over ranks)
  pvector = lattice_extra;
  lattice_extra[0] = 0.0;
}

/* the ghost cutoff: every site up to `halo` spacings beyond a rank's own ones, with room for round-off */
double PairMLPot::lattice_cutoff() const
{
  return (model->halo + 0.5) * model->spacing;
}

/* the deck against the conventions (issue 13): every problem names its fix */
void PairMLPot::lattice_init_style()
{
  Model &m = *model;
  const double a = m.spacing;
  const std::string conv = fmt::format("lattice decks put site (i, j) at x = xlo + i*a, y = ylo + j*a (a = {}), "
                                       "Q = z, in a box L*a wide in x and y", a);
  if (domain->triclinic)
    error->all(FLERR, "pair_style mlpot: lattice model {} needs an orthogonal box (square lattice), this one is "
                      "triclinic; {}", model_path, conv);
  if (!domain->xperiodic || !domain->yperiodic || domain->zperiodic)
    error->all(FLERR, "pair_style mlpot: lattice model {} needs boundary p p f (or p p m): periodic in x and y, "
                      "not periodic in z, which holds Q; got boundary {} {} {}", model_path,
               domain->xperiodic ? "p" : "non-periodic", domain->yperiodic ? "p" : "non-periodic",
               domain->zperiodic ? "p" : "f/m");
  int64_t n[2];
  for (int d = 0; d < 2; d++) {
    const double width = domain->prd[d] / a;
    n[d] = (int64_t) std::llround(width);
    if (n[d] < 1 || std::fabs(width - (double) n[d]) > SITE_TOLERANCE)
      error->all(FLERR, "pair_style mlpot: the box is {} wide in {}, which is not a whole number of lattice "
                        "spacings a = {} ({} a); make it L*a wide (e.g. {} {} {}); {}", domain->prd[d],
                 d ? "y" : "x", a, width, domain->boxlo[d], domain->boxlo[d] + std::max<int64_t>(n[d], 1) * a,
                 d ? "ylo yhi" : "xlo xhi", conv);
  }
  if (n[0] != n[1])
    error->all(FLERR, "pair_style mlpot: lattice model {} is for a square L x L lattice, the box holds {} x {} "
                      "sites; make x and y equally wide (L*a each)", model_path, n[0], n[1]);
  m.L = n[0];
  if (atom->natoms != (bigint) (m.L * m.L))
    error->all(FLERR, "pair_style mlpot: a {} x {} lattice has {} sites but there are {} atoms; give exactly one "
                      "atom per site (missing or doubled sites); {}", m.L, m.L, m.L * m.L, atom->natoms, conv);
  if (comm->style == Comm::BRICK && comm->procgrid[2] > 1)
    error->all(FLERR, "pair_style mlpot: LAMMPS split z among {} ranks, but a lattice model needs each rank "
                      "to own whole columns of sites (z holds Q); add 'processors * * 1' before the box is "
                      "defined", comm->procgrid[2]);
  // lattice decks have no use for the atomistic model_devi virial columns: no warning about them
  warned_member_virial = true;
}

/* one evaluation of a lattice model, inside evaluate()'s single try/catch; `stage` names the failing step */
void PairMLPot::lattice_evaluate(bool write_forces, bool need_uncertainty, const char *&stage)
{
  if (eflag_atom || vflag_atom)
    throw MLPotError(fmt::format("lattice model {} gives no per-site {} (compute pe/atom or stress/atom); remove "
                                 "that compute (the global energy is in pe for energy-based models)", model_path,
                                 eflag_atom ? "energies" : "virials"));
  lattice_build_block();
  stage = fallback_active() ? "its compute_lattice_block_fallback() method"
                                   : "its compute_lattice_block() method";
  lattice_call_model(need_uncertainty);
  stage = "reading its outputs";
  lattice_scatter_outputs(write_forces, need_uncertainty);
}

/* owned sites -> their rectangle of (unwrapped) lattice indices; owned and ghost sites -> the block's slots.
   A site is owned by one rank, its periodic images are ghosts wherever they fall, so every slot of the block
   holds exactly one atom; a slot held by a ghost inside the rectangle (a site a hair across a sub-domain
   edge) is computed here and applied by its owner. */
void PairMLPot::lattice_build_block()
{
  Model &m = *model;
  const int nlocal = atom->nlocal, nall = nlocal + atom->nghost;
  double **x = atom->x;
  const double a = m.spacing, xlo = domain->boxlo[0], ylo = domain->boxlo[1];
  if (comm->style != Comm::BRICK &&
      (domain->sublo[2] > domain->boxlo[2] || domain->subhi[2] < domain->boxhi[2]))
    throw MLPotError("LAMMPS split z among ranks, but a lattice model needs each rank to own whole columns of "
                     "sites (z holds Q); balance in x and y only (e.g. processors * * 1, comm_style brick)");
  m.site.resize(2 * (std::size_t) nall);
  int64_t imin = INT64_MAX, imax = INT64_MIN, jmin = INT64_MAX, jmax = INT64_MIN;
  for (int k = 0; k < nall; k++) {
    const double u = (x[k][0] - xlo) / a, v = (x[k][1] - ylo) / a;
    const int64_t i = (int64_t) std::llround(u), j = (int64_t) std::llround(v);
    if (std::fabs(u - (double) i) > SITE_TOLERANCE || std::fabs(v - (double) j) > SITE_TOLERANCE)
      throw MLPotError(fmt::format(
          "atom {} at x = {:.10g}, y = {:.10g} is off the lattice: the nearest site ({}, {}) is at x = {:.10g}, "
          "y = {:.10g} (tolerance {} a, a = {}); sites must sit at x = xlo + i*a, y = ylo + j*a and move along z "
          "only: give x/y no velocity and cancel x/y forces of thermostats (fix setforce 0.0 0.0 NULL after "
          "fix langevin)", atom->tag[k], x[k][0], x[k][1], (i % m.L + m.L) % m.L, (j % m.L + m.L) % m.L,
          xlo + i * a, ylo + j * a, SITE_TOLERANCE, a));
    m.site[2 * k] = i;
    m.site[2 * k + 1] = j;
    if (k < nlocal) {
      imin = std::min(imin, i);
      imax = std::max(imax, i);
      jmin = std::min(jmin, j);
      jmax = std::max(jmax, j);
    }
  }
  if (nlocal == 0) {    // a rank without sites (more ranks than rows of sites): nothing to compute
    m.nx = m.ny = 0;
    return;
  }
  const int64_t h = m.halo;
  m.nx = imax - imin + 1;
  m.ny = jmax - jmin + 1;
  m.i0 = imin - h;
  m.j0 = jmin - h;
  const int64_t bx = m.nx + 2 * h, by = m.ny + 2 * h;
  m.slot_atom.assign(bx * by, -1);
  auto doubled = [&](int k, int other) {
    const int64_t i = m.site[2 * k], j = m.site[2 * k + 1];
    return MLPotError(fmt::format("atoms {} and {} sit on the same lattice site ({}, {}) (x = {:.10g}, y = {:.10g}): "
                                  "a doubled site; give exactly one atom per site", atom->tag[other], atom->tag[k],
                                  (i % m.L + m.L) % m.L, (j % m.L + m.L) % m.L, x[k][0], x[k][1]));
  };
  for (int k = 0; k < nall; k++) {
    const int64_t bi = m.site[2 * k] - m.i0, bj = m.site[2 * k + 1] - m.j0;
    if (bi < 0 || bi >= bx || bj < 0 || bj >= by) continue;    // a ghost beyond the halo
    int &s = m.slot_atom[bi * by + bj];
    if (s < 0)
      s = k;
    else if (k < nlocal || s < nlocal || atom->tag[s] != atom->tag[k])    // an image of the same atom twice
      throw doubled(k, s);                                                   // (never seen) is harmless
  }
  m.qblock.resize(bx * by);
  for (int64_t s = 0; s < bx * by; s++) {
    const int k = m.slot_atom[s];
    if (k < 0) {
      const int64_t i = s / by + m.i0, j = s % by + m.j0;
      throw MLPotError(fmt::format(
          "no atom on lattice site ({}, {}) (x = {:.10g}, y = {:.10g}), which the forces of this rank's sites "
          "need: a missing site (or one moved to another, or an atom lost through a fixed z boundary when its |Q| "
          "outgrew the box: the dynamics ran away; use a thermostat, a smaller timestep or boundary p p m); give "
          "exactly one atom per site at x = xlo + i*a, "
          "y = ylo + j*a", (i % m.L + m.L) % m.L, (j % m.L + m.L) % m.L, xlo + ((i % m.L + m.L) % m.L) * a,
          ylo + ((j % m.L + m.L) % m.L) * a));
    }
    m.qblock[s] = x[k][2];
  }
}

/* `fallback THRESHOLD [until STEP]`: the exact solver runs for the forces of timesteps before STEP (the hot phase
   of a quench, where the committee is least accurate), then the plain block method on the same block */
bool PairMLPot::fallback_active() const
{
  return fallback_threshold > 0.0 && (fallback_until < 0 || update->ntimestep < fallback_until);
}

void PairMLPot::lattice_call_model(bool need_uncertainty)
{
  Model &m = *model;
  if (m.nx == 0) return;
  const int64_t bx = m.nx + 2 * m.halo, by = m.ny + 2 * m.halo;
  auto topts = torch::TensorOptions().dtype(m.dtype).device(m.device);
  auto q = torch::from_blob(m.qblock.data(), {bx, by}, torch::kFloat64).to(topts);
  std::vector<c10::IValue> inputs{q, (int64_t) m.halo};
  const bool fallback = fallback_active();
  if (fallback)
    inputs.emplace_back(fallback_threshold);
  else
    inputs.emplace_back(need_uncertainty);
  const double t0 = platform::walltime();
  c10::IValue result = m.module.get_method(fallback ? FALLBACK_METHOD : "compute_lattice_block")(inputs);
  time_model += platform::walltime() - t0;
  if (!result.isGenericDict())
    throw MLPotError(fmt::format("the block method of model {} did not return a dict; re-export it", model_path));
  m.out = std::move(result);
}

/* F_z of the owned sites; with a committee their calibrated std; with fallback the count of sites that fell
   back (pvector, compute pair mlpot) */
void PairMLPot::lattice_scatter_outputs(bool write_forces, bool need_uncertainty)
{
  Model &m = *model;
  const int nlocal = atom->nlocal;
  const bool fallback = fallback_active();
  const bool with_std = (need_uncertainty || fallback) && nmembers > 1;
  if (with_std) grow_uncertainty_buffers();
  lattice_extra[0] = 0.0;
  if (m.nx == 0) {
    if (with_std) {
      member_energy.assign(nmembers, 0.0);
      unc_step = update->ntimestep;
    }
    return;
  }
  const int64_t h = m.halo, nx = m.nx, ny = m.ny, by = ny + 2 * h;
  const std::vector<int64_t> shape{nx, ny};
  auto forces = model_output(m.out, "forces", model_path, shape);
  const double *fp = forces.data_ptr<double>();
  torch::Tensor std_t, mask_t;
  if (with_std) std_t = model_output(m.out, "forces_std", model_path, shape);
  if (fallback) mask_t = model_output(m.out, "fallback_mask", model_path, shape);
  const double *sp = with_std ? std_t.data_ptr<double>() : nullptr;
  const double *mp = fallback ? mask_t.data_ptr<double>() : nullptr;
  double **f = atom->f;
  double nfell = 0.0;
  int64_t ghosts_inside = 0;
  if (with_std) {
    std::fill(unc, unc + nlocal, 0.0);
    std::fill(unc_e, unc_e + nlocal, 0.0);    // a lattice model gives no per-site energy std
  }
  for (int64_t i = 0; i < nx; i++)
    for (int64_t j = 0; j < ny; j++) {
      const int k = m.slot_atom[(i + h) * by + j + h];
      if (k >= nlocal) {    // a ghost inside the rectangle: its owner applies it
        ghosts_inside++;
        continue;
      }
      const int64_t r = i * ny + j;
      if (write_forces) f[k][2] += fp[r] * eng_factor / len_factor;
      if (with_std) unc[k] = sp[r] * eng_factor / len_factor;
      if (fallback) nfell += mp[r];
    }
  lattice_extra[0] = nfell;
  if (write_forces && eflag_global && m.out.toGenericDict().contains("energy") && !fallback) {
    if (ghosts_inside)    // the block's energy share would count those sites on two ranks
      throw MLPotError(fmt::format("{} sites in this rank's rectangle are owned by a neighbouring rank (x or y a "
                                   "hair across the sub-domain edge), so the energy cannot be split between ranks; "
                                   "put every site of a column at the same x (x = xlo + i*a exactly)",
                                   ghosts_inside));
    eng_vdwl += model_output(m.out, "energy", model_path, {}).item<double>() * eng_factor;
  }
  if (with_std) {
    member_energy.assign(nmembers, 0.0);    // no member energies: compute mlpot/atom's total energy std is 0
    have_member_virial = false;
    unc_step = update->ntimestep;
    committee_evaluations += 1.0;
  }
}
