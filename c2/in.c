plugin load /root/.cache/mlpot_plugins/lammps-2025.7.22.4.0-torch2.9.1-e8e2796ae8/mlpotplugin.so
units metal
atom_style atomic
lattice fcc 3.61
region box block 0 15 0 15 0 7.5
create_box 1 box
create_atoms 1 box
mass 1 63.546
pair_style mlpot /work/main/mlpot_plugins/pretrained/cu-emt.pt 
pair_coeff * * Cu
velocity all create 300 4928459
fix nve all nve
timestep 0.002
thermo 1000
run 8
run 4
run 4
run 4
