"""Holstein-model lattice dynamics: exact (ED, KPM) reference, Langevin dynamics, CDW observables and a
D4-equivariant ML force field exported through the lattice contract. See docs/holstein.md."""
from .params import HolsteinParams

__all__ = ["HolsteinParams"]
