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

using namespace LAMMPS_NS;

ComputeMLPotAtom::ComputeMLPotAtom(LAMMPS *lmp, int narg, char **arg) :
    Compute(lmp, narg, arg), nmax(0), std_atom(nullptr), pair(nullptr)
{
  if (narg != 3) error->all(FLERR, "Illegal compute mlpot/atom command: expected compute ID group mlpot/atom");
  peratom_flag = 1;
  size_peratom_cols = 0;
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

void ComputeMLPotAtom::compute_peratom()
{
  invoked_peratom = update->ntimestep;
  if (!pair) init();    // invoked through the library before any run initialised it
  if (atom->nmax > nmax) {
    memory->destroy(std_atom);
    nmax = atom->nmax;
    memory->create(std_atom, nmax, "mlpot/atom:std");
    vector_atom = std_atom;
  }
  const double *u = pair->uncertainty_peratom();
  const int *mask = atom->mask;
  for (int i = 0; i < atom->nlocal; i++) std_atom[i] = (mask[i] & groupbit) ? u[i] : 0.0;
}

double ComputeMLPotAtom::memory_usage()
{
  return (double) nmax * sizeof(double);
}
