/* The CUDA platform's kernel of MLPotForce (libMLPotPluginCUDA.so, built only where OpenMM's CUDA platform,
   a CUDA toolkit's cuda.h and a CUDA build of torch are installed; mlpot_plugins/openmm/native.py).

   Positions and forces stay on the GPU: a small CUDA kernel (compiled at run time by OpenMM, like OpenMM's own)
   gathers the ML region's positions from the context's posq array (atoms in OpenMM's sorted order, through
   its atom index array) straight into a torch tensor on the same device; the neighbour list is built with
   torch operations on the GPU (Model::neighbor_list_torch, the one tested on the CPU); the model's forces are
   added to the context's fixed-point force buffer by a second kernel. torch runs on OpenMM's CUDA stream,
   so no synchronisation or copy is needed between them. Only the energy (one number) and the neighbour list's
   sizes come back to the host. The Model class (loading, checks, statistics) is libMLPotPlugin.so's. */
#include "MLPotKernels.h"
#include "mlpot_model.h"
#include "mlpot_torch_util.h"

#include "openmm/OpenMMException.h"
#include "openmm/KernelFactory.h"
#include "openmm/common/ContextSelector.h"
#include "openmm/cuda/CudaArray.h"
#include "openmm/cuda/CudaContext.h"
#include "openmm/cuda/CudaPlatform.h"

#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <memory>

using namespace OpenMM;

namespace MLPot {

namespace {

const char *KERNELS = R"(
extern "C" __global__ void gatherPositions(const real4* __restrict__ posq, const real4* __restrict__ posqCorrection,
        const int* __restrict__ atomIndex, const int* __restrict__ regionOfAtom, POS_TYPE* __restrict__ out,
        int numAtoms, double scale) {
    for (int i = blockIdx.x*blockDim.x+threadIdx.x; i < numAtoms; i += blockDim.x*gridDim.x) {
        const int k = regionOfAtom[atomIndex[i]];
        if (k < 0) continue;
        real4 p = posq[i];
#ifdef USE_MIXED_PRECISION
        real4 c = posqCorrection[i];
        out[3*k] = (POS_TYPE) (((double) p.x + (double) c.x)*scale);
        out[3*k+1] = (POS_TYPE) (((double) p.y + (double) c.y)*scale);
        out[3*k+2] = (POS_TYPE) (((double) p.z + (double) c.z)*scale);
#else
        out[3*k] = (POS_TYPE) (p.x*scale);
        out[3*k+1] = (POS_TYPE) (p.y*scale);
        out[3*k+2] = (POS_TYPE) (p.z*scale);
#endif
    }
}

extern "C" __global__ void addForces(const FORCE_TYPE* __restrict__ forces, unsigned long long* __restrict__ forceBuffer,
        const int* __restrict__ atomIndex, const int* __restrict__ regionOfAtom, int numAtoms, int paddedNumAtoms,
        double scale) {
    for (int i = blockIdx.x*blockDim.x+threadIdx.x; i < numAtoms; i += blockDim.x*gridDim.x) {
        const int k = regionOfAtom[atomIndex[i]];
        if (k < 0) continue;
        forceBuffer[i] += (unsigned long long) ((long long) (forces[3*k]*scale*0x100000000));
        forceBuffer[i+paddedNumAtoms] += (unsigned long long) ((long long) (forces[3*k+1]*scale*0x100000000));
        forceBuffer[i+2*paddedNumAtoms] += (unsigned long long) ((long long) (forces[3*k+2]*scale*0x100000000));
    }
}
)";

class CudaCalcMLPotForceKernel : public CalcMLPotForceKernel {
 public:
  CudaCalcMLPotForceKernel(const std::string &name, const Platform &platform, CudaContext &cu)
      : CalcMLPotForceKernel(name, platform), cu(cu) {}

  ~CudaCalcMLPotForceKernel() override
  {
    if (model && context_owner) forget_uncertainty(model->force.tag, context_owner);
  }

  void initialize(const System &system, const MLPotForce &force) override
  {
    ContextSelector selector(cu);
    // the model runs on the context's own GPU, whatever device the force names
    model = std::make_unique<Model>(force, "cuda:" + std::to_string(cu.getDeviceIndex()));
    std::vector<int> region(system.getNumParticles(), -1);
    for (std::size_t k = 0; k < force.particles.size(); ++k) region[force.particles[k]] = (int) k;
    regionOfAtom.initialize<int>(cu, region.size(), "mlpotRegionOfAtom");
    regionOfAtom.upload(region);
    const bool f64 = model->dtype == torch::kFloat64;
    std::map<std::string, std::string> defines{{"POS_TYPE", f64 ? "double" : "float"},
                                               {"FORCE_TYPE", f64 ? "double" : "float"}};
    if (cu.getUseMixedPrecision()) defines["USE_MIXED_PRECISION"] = "1";
    CUmodule module = cu.createModule(KERNELS, defines);
    gatherKernel = cu.getKernel(module, "gatherPositions");
    forceKernel = cu.getKernel(module, "addForces");
  }

  double execute(ContextImpl &context, bool includeForces, bool) override
  {
    const MLPotForce &f = model->force;
    const int n = (int) f.particles.size();
    if (n == 0) return 0.0;
    ContextSelector selector(cu);
    // torch works on OpenMM's stream: the kernels below and the model are ordered without a sync
    auto stream = c10::cuda::getStreamFromExternal(cu.getCurrentStream(), cu.getDeviceIndex());
    c10::cuda::CUDAStreamGuard guard(stream);
    auto topts = torch::TensorOptions().dtype(model->dtype).device(model->device);
    int numAtoms = cu.getNumAtoms(), padded = cu.getPaddedNumAtoms();
    context_owner = &context.getOwner();
    auto inputs = [&]() {
      auto x = torch::empty({n, 3}, topts);
      void *xptr = x.data_ptr();
      double lengthScale = LENGTH_TO_MODEL;
      CUdeviceptr correction = cu.getUseMixedPrecision() ? cu.getPosqCorrection().getDevicePointer() : 0;
      void *gatherArgs[] = {&cu.getPosq().getDevicePointer(), &correction, &cu.getAtomIndexArray().getDevicePointer(),
                            &regionOfAtom.getDevicePointer(), &xptr, &numAtoms, &lengthScale};
      cu.executeKernel(gatherKernel, gatherArgs, numAtoms);
      torch::Tensor box;
      if (f.periodic) {
        Vec3 v[3];
        context.getPeriodicBoxVectors(v[0], v[1], v[2]);
        model->check_box(v);
        box = torch::tensor({v[0][0], v[0][1], v[0][2], v[1][0], v[1][1], v[1][2], v[2][0], v[2][1], v[2][2]},
                            torch::kFloat64).reshape({3, 3}).mul(LENGTH_TO_MODEL).to(topts);
      }
      torch::Tensor edges, shifts;
      model->neighbor_list_torch(x, box, edges, shifts);
      return std::make_tuple(x, edges, shifts);
    };
    auto add_forces = [&](const torch::Tensor &out) {
      auto forces = out.contiguous();
      void *fptr = forces.data_ptr();
      double forceScale = FORCE_FROM_MODEL;
      void *forceArgs[] = {&fptr, &cu.getForce().getDevicePointer(), &cu.getAtomIndexArray().getDevicePointer(),
                           &regionOfAtom.getDevicePointer(), &numAtoms, &padded, &forceScale};
      cu.executeKernel(forceKernel, forceArgs, numAtoms);
      keep = forces;    // alive until the kernel has read it (the next call replaces it)
    };
    return model->evaluate(context_owner, includeForces, inputs, add_forces, context.getStepCount());
  }

 private:
  CudaContext &cu;
  std::unique_ptr<Model> model;
  CudaArray regionOfAtom;
  CUfunction gatherKernel = nullptr, forceKernel = nullptr;
  torch::Tensor keep;
  const void *context_owner = nullptr;
};

class CudaKernelFactory : public KernelFactory {
 public:
  KernelImpl *createKernelImpl(std::string name, const Platform &platform, ContextImpl &context) const override
  {
    auto &data = *static_cast<CudaPlatform::PlatformData *>(context.getPlatformData());
    if (name == CalcMLPotForceKernel::Name()) return new CudaCalcMLPotForceKernel(name, platform, *data.contexts[0]);
    throw OpenMMException("MLPot: unknown kernel " + name);
  }
};

}    // namespace

}    // namespace MLPot

extern "C" OPENMM_EXPORT void registerPlatforms() {}

extern "C" OPENMM_EXPORT void registerKernelFactories()
{
  try {
    Platform &platform = Platform::getPlatformByName("CUDA");
    platform.registerKernelFactory(MLPot::CalcMLPotForceKernel::Name(), new MLPot::CudaKernelFactory());
  } catch (const std::exception &) {
    // no CUDA platform in this process: nothing to register
  }
}
