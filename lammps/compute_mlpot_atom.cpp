/* The committee is evaluated only on steps this compute is invoked on: it sets timeflag, so
   thermo/dump/fix halt register those steps and pair_style mlpot adds the committee pass to that
   step's force call; on any other step the pair style evaluates it on demand. */

#include "compute_mlpot_atom.h"

#include "atom.h"
#include "error.h"
#include "force.h"
#include "memory.h"
#include "pair_mlpot.h"
#include "update.h"

#include <algorithm>

using namespace LAMMPS_NS;

ComputeMLPotAtom::ComputeMLPotAtom(LAMMPS *lmp, int narg, char **arg) :
    Compute(lmp, narg, arg), nmax(0), std_atom(nullptr), stats{0.0, 0.0, 0.0, 0.0}, pair(nullptr)
{
  if (narg != 3) error->all(FLERR, "Illegal compute mlpot/atom command: expected compute ID group mlpot/atom");
  peratom_flag = 1;
  size_peratom_cols = 2;
  vector_flag = 1;
  size_vector = 4;
  extvector = 0;
  vector = stats;
  timeflag = 1;
}

ComputeMLPotAtom::~ComputeMLPotAtom()
{
  memory->destroy(std_atom);
}

void ComputeMLPotAtom::init()
{
  pair = dynamic_cast<PairMLPot *>(force->pair_match("mlpot", 1));
  if (!pair) error->all(FLERR, "compute mlpot/atom requires pair_style mlpot");
  if (!pair->has_uncertainty())
    error->all(FLERR, "compute mlpot/atom needs a committee model (ensemble_size > 1); the pair_style "
                      "mlpot model has a single member");
}

// the pair style of now (a re-issued pair_style replaces the object) with this step's statistics
PairMLPot *ComputeMLPotAtom::current_pair()
{
  init();
  pair->uncertainty_now();
  return pair;
}

void ComputeMLPotAtom::compute_peratom()
{
  invoked_peratom = update->ntimestep;
  if (atom->nmax > nmax) {
    memory->destroy(std_atom);
    nmax = atom->nmax;
    memory->create(std_atom, nmax, 2, "mlpot/atom:std");
    array_atom = std_atom;
  }
  PairMLPot *p = current_pair();
  const double *uf = p->force_std(), *ue = p->energy_std();
  const int *mask = atom->mask;
  for (int i = 0; i < atom->nlocal; i++) {
    const bool in = mask[i] & groupbit;
    std_atom[i][0] = in ? uf[i] : 0.0;
    std_atom[i][1] = in ? ue[i] : 0.0;
  }
}

void ComputeMLPotAtom::compute_vector()
{
  invoked_vector = update->ntimestep;
  PairMLPot *p = current_pair();
  const double *uf = p->force_std(), *ue = p->energy_std();
  const int *mask = atom->mask, *type = atom->type;
  double mx[2] = {0.0, 0.0}, sum[2] = {0.0, 0.0};
  for (int i = 0; i < atom->nlocal; i++) {
    if (!(mask[i] & groupbit) || !p->sees_type(type[i])) continue;
    mx[0] = std::max(mx[0], uf[i]);
    mx[1] = std::max(mx[1], ue[i]);
    sum[0] += uf[i];
    sum[1] += 1.0;
  }
  double gmx[2], gsum[2];
  MPI_Allreduce(mx, gmx, 2, MPI_DOUBLE, MPI_MAX, world);
  MPI_Allreduce(sum, gsum, 2, MPI_DOUBLE, MPI_SUM, world);
  stats[0] = gmx[0];
  stats[1] = gsum[1] > 0 ? gsum[0] / gsum[1] : 0.0;
  stats[2] = gmx[1];
  stats[3] = p->total_energy_std();
}

double ComputeMLPotAtom::memory_usage()
{
  return (double) nmax * 2 * sizeof(double);
}
