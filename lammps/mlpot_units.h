/* Unit factors from model units (Angstrom, eV) to LAMMPS unit styles.
   C++ copy of mlpot_plugins/units.py (LAMMPS_UNITS); tests/test_lammps_units.py checks they agree. */
#ifndef MLPOT_UNITS_H
#define MLPOT_UNITS_H

#include <cstring>

namespace mlpot_units {

constexpr double ELEMENTARY_CHARGE = 1.602176634e-19;    // C (exact, SI 2019)
constexpr double AVOGADRO = 6.02214076e23;               // 1/mol (exact, SI 2019)
constexpr double KCAL_IN_KJ = 4.184;                     // thermochemical calorie
constexpr double KJ_PER_MOL_PER_EV = ELEMENTARY_CHARGE * AVOGADRO / 1000.0;
constexpr double KCAL_PER_MOL_PER_EV = KJ_PER_MOL_PER_EV / KCAL_IN_KJ;

struct Factors {
  double length;    // LAMMPS length per model length (Angstrom)
  double energy;    // LAMMPS energy per model energy (eV)
};

// false for unit styles mlpot does not support
inline bool lammps_factors(const char *style, Factors &out)
{
  if (std::strcmp(style, "metal") == 0) {
    out = {1.0, 1.0};
    return true;
  }
  if (std::strcmp(style, "real") == 0) {
    out = {1.0, KCAL_PER_MOL_PER_EV};
    return true;
  }
  return false;
}

constexpr const char *SUPPORTED = "metal, real";

// lattice models (kind lattice): lengths in lattice units, energies in the hopping t, masses in the model's m
// units: LAMMPS `units lj` with sigma = 1 lattice unit, epsilon = t, k_B = 1 (no conversion)
constexpr const char *LATTICE_SUPPORTED = "lj";
inline bool lattice_units(const char *style)
{
  return std::strcmp(style, "lj") == 0;
}

}    // namespace mlpot_units

#endif
