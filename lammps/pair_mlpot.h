/* pair_style mlpot: a TorchScript model exported by mlpot_plugins (see mlpot_plugins/contract.py).
   The pair style only translates: LAMMPS atoms/neighbours/units in, the model's `compute` out.
   No torch header here, so compute_mlpot_atom.cpp and plugin.cpp compile fast (torch state is in Model). */
#ifndef LMP_PAIR_MLPOT_H
#define LMP_PAIR_MLPOT_H

#include "pair.h"

#include <cstdio>
#include <memory>
#include <string>
#include <vector>

namespace LAMMPS_NS {

class PairMLPot : public Pair {
 public:
  PairMLPot(class LAMMPS *);
  ~PairMLPot() override;

  void compute(int, int) override;
  void settings(int, char **) override;
  void coeff(int, char **) override;
  void init_style() override;
  double init_one(int, int) override;
  void write_restart(FILE *) override;
  void read_restart(FILE *) override;
  int pack_reverse_comm(int, int, double *) override;
  void unpack_reverse_comm(int, int *, double *) override;
  int pack_forward_comm(int, int *, double *, int, int *) override;    // pair_mlpot_layered.cpp
  void unpack_forward_comm(int, int, double *) override;
  double memory_usage() override;
  void *extract(const char *, int &) override;

  // Committee statistics of the local atoms at the current step (LAMMPS units), for compute mlpot/atom;
  // the committee is evaluated now unless this step's force call already did.
  void uncertainty_now();
  const double *force_std() const { return unc; }       // [nlocal] calibrated per-atom force std
  const double *energy_std() const { return unc_e; }    // [nlocal] calibrated per-atom energy std
  double total_energy_std();                            // calibrated std of the total energy (collective)
  bool sees_type(int t) const { return type_map[t] >= 0; }
  bool has_uncertainty() const;
  int ensemble_size() const;

  struct Model;    // libtorch state (pair_mlpot_torch.h)
  bool lattice() const;    // the model is of kind lattice (sites on a square lattice, Q = z)

 protected:
  std::unique_ptr<Model> model;
  std::string model_path, device_name;
  std::vector<std::string> species;     // model species, in the model's type order
  std::vector<std::string> elements;    // per LAMMPS type (1-based; "NULL" if not seen by the model)
  std::vector<int> type_map;            // LAMMPS type -> model type index, -1 for NULL
  double cutoff_model, range_model;     // Angstrom
  double cut_lmp, range_lmp;            // LAMMPS length units
  double len_factor, eng_factor;        // LAMMPS units per model unit
  double unc_scale;                     // the model's uncertainty_scale (calibration factor)
  int nmembers;                         // committee size K (1: no uncertainty)
  int unc_every, devi_every;
  int devi_calibrated, devi_atomic;     // model_devi options
  std::string devi_file;
  FILE *devi_fp;
  double cutghost_user, cutghost_set;   // comm->cutghostuser before our raise / as we set it (-1: unset)

  double committee_evaluations, committee_on_demand;    // diagnostics, see extract()
  double time_evaluate, time_model;                      // seconds in evaluate() / in the model call
  double time_exchange, time_exchange_mpi;               // layer-wise: in the feature exchanges / of it in MPI
  bigint unc_step;                // step whose statistics are in unc/unc_e (-1: none)
  int nmax_unc, k_alloc;          // rows and committee size the per-atom buffers were sized for
  double *unc;                    // [nmax] per-atom calibrated force std (local atoms valid)
  double *unc_e;                  // [nmax] per-atom calibrated energy std (local atoms valid)
  double *member_f;               // [nmax * 3K] member forces, ghost rows reverse-communicated
  std::vector<double> member_energy;    // [K] this rank's member energies (model units)
  std::vector<double> member_virial;    // [K * 9] this rank's member virials (model units)
  bool have_member_virial, warned_member_virial;
  std::vector<std::string> style_args;    // pair_style / pair_coeff words, kept for write_restart
  std::vector<std::string> coeff_args;
  double fallback_threshold;            // pair_style ... fallback THRESHOLD (lattice models), 0: off
  bigint fallback_until;                // ... fallback THRESHOLD until STEP: off from timestep STEP on; -1: always
  void collective_error(const std::string &fail);    // lattice: any rank's error -> error->all everywhere
  bool fallback_active() const;         // fallback asked for and the timestep before its 'until'
  double lattice_extra[1];              // pvector (compute pair mlpot): [sites of this rank that fell back]
  // layer-wise message passing (contract "Message passing layer by layer"; pair_mlpot_layered.cpp)
  int layerwise_opt;              // pair_style option layerwise yes|no (-1: not given: yes when the model can)
  std::string dtype_opt;          // pair_style option dtype float32|float64 (empty: the model file's own)
  int threads_opt;                // pair_style option threads N (0: MLPOT_THREADS, OMP_NUM_THREADS, else 1)
  int edges_opt;                  // pair_style option edges host|device (-1: not given: device with device cuda)
  bool edges_device;              // this model's edges are filtered where it runs (see build_inputs_device)
  double edges_flag;              // the same, for extract("edges_device")
  double candidate_builds;        // edges device: times the pair candidates were put on the device
  bool layered;                   // this model runs layer by layer on a one-cutoff ghost shell
  double layered_flag;            // the same, for extract("layerwise")
  int images_opt;                 // pair_style option images fold|ghosts (1: fold, the default)
  bool fold, fold_logged;         // this run: ghosts are this rank's own periodic images, folded onto their
                                  // owners (edges carry shifts; one compute() call on the local atoms)
  bool merge;                     // this run: several ranks, layer by layer, images folded: all images of one
                                  // atom ID share one row (a local atom's, or one ghost's); edges carry shifts
  double fold_flag, rows_flag;    // extract("images_folded"), extract("model_rows") of the last evaluation
  int mp_layers, mp_feature_dim;  // metadata message_passing (0: the model does not export the methods)
  double *comm_buf;               // what pack/unpack_*_comm move: [nall, comm_stride] per LAMMPS atom
  int comm_stride;

  void allocate();
  void load_model(const std::string &path);
  bool uncertainty_wanted(bigint step);
  // one evaluation = build_inputs -> call_model -> scatter_outputs -> committee_statistics, inside the
  // single try/catch of evaluate() that turns any exception into a LAMMPS error naming the step
  void evaluate(bool write_forces, bool need_uncertainty, bool need_member_virial);
  void build_inputs();         // the model inputs as tensors where it runs: host or device edge building
  void build_inputs_host();    // edges within the cutoff, rows and positions on the host, copied over
  bool build_inputs_device();  // only positions copied; cutoff filter, image shifts and rows where the model runs
  void build_candidates();     // (edges device) the pairs of the current neighbour list, once per list build
  bool start_rows();           // rows of the mapped local atoms (and image owners); whether all types are mapped
  void map_images();
  void call_model(bool need_virial, bool need_uncertainty);
  void call_model_layered(bool need_virial, bool need_uncertainty);    // pair_mlpot_layered.cpp
  void scatter_outputs();
  void committee_statistics();
  void grow_uncertainty_buffers();
  void write_model_devi();
  void check_units(bool set);

  // lattice models (pair_mlpot_lattice.cpp): one block of owned + ghost sites per rank
  void lattice_setup(const std::string &metadata_text);
  void lattice_init_style();
  double lattice_cutoff() const;
  void lattice_evaluate(bool write_forces, bool need_uncertainty, const char *&stage);
  void lattice_build_block();
  void lattice_call_model(bool need_uncertainty);
  void lattice_scatter_outputs(bool write_forces, bool need_uncertainty);
};

}    // namespace LAMMPS_NS

#endif
