"""Does the OpenMM side run under another torch? Run it with that environment's python:

    PYTHONPATH=$PWD /path/to/other-venv/bin/python benchmarks/openmm_other_torch.py

(a throwaway venv with e.g. torch 2.13 CPU, openmm, vesin-torch, ase, e3nn; never the project's own venv).
It prints one JSON line per check: import, each backend's availability and reason (openmm-torch absent or
ABI-incompatible -> unavailable), every available backend vs the ASE calculator (fp64, periodic cubic,
triclinic, cluster, an ML region; goal 1e-10 relative to the largest force), NVE drift, an XML round trip
of System + State continuing the run, and same-call uncertainty. Exit status 1 if any check failed.
"""
from __future__ import annotations

import json
import sys
import time
import traceback

import numpy as np

failed = []


def check(name, fn):
    t0 = time.perf_counter()
    try:
        out = fn()
        ok = bool(out.pop("pass", True)) if isinstance(out, dict) else True
    except Exception as exc:  # noqa: BLE001
        out, ok = {"error": f"{type(exc).__name__}: {exc}"[:1500], "where": traceback.format_exc().splitlines()[-3:]}, False
    if not ok:
        failed.append(name)
    print(json.dumps({name: out, "ok": ok, "s": round(time.perf_counter() - t0, 2)}, default=str), flush=True)


def main():
    import torch
    import openmm
    from ase.build import bulk

    import mlpot_plugins
    from mlpot_plugins import units
    from mlpot_plugins.ase import MLPotCalculator
    from mlpot_plugins.crystals import openmm_crystal
    from mlpot_plugins.openmm import BACKENDS, available_backends, backend_available, create_force

    torch.set_num_threads(1)
    check("versions", lambda: {"torch": torch.__version__, "openmm": openmm.__version__,
                               "mlpot_plugins": mlpot_plugins.__file__})
    check("backends", lambda: {b: list(backend_available(b)) for b in BACKENDS})
    backends = available_backends()

    def systems():
        cubic = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((3, 3, 3))
        cubic.symbols[[1, 6, 13]] = "Au"
        cubic.rattle(0.08, seed=1)
        tri = cubic.copy()
        tri.set_cell(tri.cell.array + np.array([[0, 0, 0], [2.0, 0, 0], [-1.5, 2.5, 0]]), scale_atoms=True)
        clus = cubic.copy()
        clus.pbc = False
        clus.cell = np.zeros((3, 3))
        return {"periodic": cubic, "triclinic": tri, "cluster": clus}

    def build(atoms, backend, model="morse-cuau", ml=None):
        import openmm.app as app

        if atoms.pbc.any():
            top, system = openmm_crystal(atoms)
        else:
            top, system = app.Topology(), openmm.System()
            chain = top.addChain()
            for s in atoms.get_chemical_symbols():
                top.addAtom(s, app.Element.getBySymbol(s), top.addResidue(s, chain))
                system.addParticle(app.Element.getBySymbol(s).mass)
        force = create_force(model, top, backend=backend, atoms=ml)
        system.addForce(force)
        return top, system, force

    def context(system, atoms, platform="Reference"):
        ctx = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName(platform))
        ctx.setPositions(atoms.positions * units.NM_PER_ANGSTROM)
        return ctx

    def agree(atoms, backend, ml=None):
        _, system, force = build(atoms, backend, ml=ml)
        st = context(system, atoms).getState(getEnergy=True, getForces=True)
        e = st.getPotentialEnergy()._value
        f = np.asarray(st.getForces(asNumpy=True)._value)
        ref = atoms.copy() if ml is None else atoms[ml]
        ref.calc = MLPotCalculator("morse-cuau")
        e_ref = ref.get_potential_energy() * units.OPENMM_ENERGY_FROM_MODEL
        f_ref = ref.get_forces() * units.OPENMM_FORCE_FROM_MODEL
        f = f if ml is None else f[ml]
        df = float(np.abs(f - f_ref).max() / np.abs(f_ref).max())
        de = abs(e - e_ref) / abs(e_ref)
        return {"backend": force.mlpot_backend, "energy_rel": de, "forces_rel": df, "pass": df < 1e-10 and de < 1e-10}

    for name, atoms in systems().items():
        for b in backends:
            check(f"ase/{name}/{b}", lambda: agree(atoms, b))
    for b in backends:
        check(f"ase/ml-region/{b}", lambda: agree(systems()["periodic"], b, ml=list(range(0, 108, 3))))

    def nve(backend):
        atoms = systems()["periodic"]
        _, system, _ = build(atoms, backend)
        ctx = context(system, atoms, "CPU")
        ctx.setVelocitiesToTemperature(300, 1)
        es = []
        for _ in range(10):
            st = ctx.getState(getEnergy=True)
            es.append((st.getPotentialEnergy() + st.getKineticEnergy())._value / len(atoms))
            ctx.getIntegrator().step(20)
        kin = st.getKineticEnergy()._value / len(atoms)
        return {"drift_kJ_per_mol_atom": abs(es[-1] - es[0]), "pass": abs(es[-1] - es[0]) < 0.005 * kin}

    def round_trip(backend):
        atoms = systems()["triclinic"]
        _, system, _ = build(atoms, backend)
        a = context(system, atoms)
        a.setVelocitiesToTemperature(600, 3)
        start = a.getState(getPositions=True, getVelocities=True)
        a.getIntegrator().step(10)
        b = context(openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(system)), atoms)
        b.setState(openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(start)))
        b.getIntegrator().step(10)
        d = np.abs(a.getState(getPositions=True).getPositions(asNumpy=True)._value
                   - b.getState(getPositions=True).getPositions(asNumpy=True)._value).max()
        return {"max_position_difference_nm": float(d), "pass": d < 1e-12}

    def same_call():
        import io

        import openmm.app as app

        from mlpot_plugins.openmm import UncertaintyReporter

        atoms = systems()["periodic"]
        top, system, _ = build(atoms, "python", model="morse-cuau-committee")
        sim = app.Simulation(top, system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("CPU"))
        sim.context.setPositions(atoms.positions * units.NM_PER_ANGSTROM)
        rep = UncertaintyReporter("morse-cuau-committee", io.StringIO(), 5)
        sim.reporters.append(rep)
        sim.step(10)
        return {"same_call": rep.same_call, "separate_evaluations": rep.separate_evaluations,
                "pass": rep.same_call and rep.separate_evaluations == 0}

    for b in backends:
        check(f"nve/{b}", lambda: nve(b))
    for b in [b for b in backends if b != "torch"]:
        check(f"xml-continue/{b}", lambda: round_trip(b))
    check("same-call-uncertainty", same_call)
    print(json.dumps({"failed": failed}))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
