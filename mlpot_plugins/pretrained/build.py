"""Rebuild the shipped reference models deterministically: ``python -m mlpot_plugins.pretrained.build``."""
from pathlib import Path

from ..model_file import export
from ..models.reference import MorsePotential

HERE = Path(__file__).resolve().parent
REFERENCE = ("Cu", "Au")
REFERENCES = ["L. A. Girifalco and V. G. Weizer, Phys. Rev. 114, 687 (1959)"]


def build_reference(out_dir: Path = HERE) -> None:
    export(MorsePotential(list(REFERENCE), cutoff=6.0), out_dir / "morse-cuau.pt", name="morse-cuau",
           description="Reference Cu/Au Morse pair potential (analytic, fp64, cutoff 6 A) for engine tests",
           references=REFERENCES)
    export(MorsePotential(list(REFERENCE), cutoff=6.0, ensemble_size=4, spread=0.03, seed=7),
           out_dir / "morse-cuau-committee.pt", name="morse-cuau-committee",
           description="Committee of 4 perturbed Cu/Au Morse potentials (per-atom force std) for engine tests",
           references=REFERENCES)


if __name__ == "__main__":
    build_reference()
    print("wrote", sorted(p.name for p in HERE.glob("morse-*.pt")))
