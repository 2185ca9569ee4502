/* MLPotForce, its ForceImpl, its serialization proxy and the plugin's registration functions.
   No libtorch here (mlpot_reference.cpp is the one translation unit that includes it). */
#include "MLPotForce.h"
#include "MLPotKernels.h"

#include "openmm/OpenMMException.h"
#include "openmm/Platform.h"
#include "openmm/internal/ContextImpl.h"
#include "openmm/internal/ForceImpl.h"
#include "openmm/reference/ReferencePlatform.h"
#include "openmm/serialization/SerializationNode.h"
#include "openmm/serialization/SerializationProxy.h"

#include <map>
#include <set>
#include <string>
#include <vector>

using namespace OpenMM;

namespace MLPot {

namespace {

class MLPotForceImpl : public ForceImpl {
 public:
  explicit MLPotForceImpl(const MLPotForce &owner) : owner(owner) {}
  void initialize(ContextImpl &context) override
  {
    const System &system = context.getSystem();
    const int n = system.getNumParticles();
    if (owner.particles.size() != owner.types.size())
      throw OpenMMException("MLPotForce: " + std::to_string(owner.particles.size()) + " particles but " +
                            std::to_string(owner.types.size()) + " types; create the force with "
                            "mlpot_plugins.openmm.create_force(..., backend='native')");
    std::set<int> seen;
    for (std::size_t k = 0; k < owner.particles.size(); ++k) {
      const int p = owner.particles[k];
      if (p < 0 || p >= n)
        throw OpenMMException("MLPotForce: the ML region refers to particle " + std::to_string(p) +
                              " but the System has " + std::to_string(n) + " particles (0.." +
                              std::to_string(n - 1) + "); create the force for this System's Topology");
      if (!seen.insert(p).second)
        throw OpenMMException("MLPotForce: particle " + std::to_string(p) + " is listed twice in the ML "
                              "region; list each particle once");
      if (owner.types[k] < 0 || owner.types[k] >= owner.numSpecies)
        throw OpenMMException("MLPotForce: particle " + std::to_string(p) + " has species index " +
                              std::to_string(owner.types[k]) + " but the model has " +
                              std::to_string(owner.numSpecies) + " species; create the force with "
                              "mlpot_plugins.openmm.create_force");
      if (system.isVirtualSite(p))
        throw OpenMMException("MLPotForce: particle " + std::to_string(p) + " is a virtual site; leave it "
                              "out of the ML region (atoms=[...])");
    }
    kernel = context.getPlatform().createKernel(CalcMLPotForceKernel::Name(), context);
    kernel.getAs<CalcMLPotForceKernel>().initialize(system, owner);
  }
  const Force &getOwner() const override { return owner; }
  void updateContextState(ContextImpl &, bool &) override {}
  double calcForcesAndEnergy(ContextImpl &context, bool includeForces, bool includeEnergy, int groups) override
  {
    if ((groups & (1 << owner.getForceGroup())) == 0) return 0.0;
    return kernel.getAs<CalcMLPotForceKernel>().execute(context, includeForces, includeEnergy);
  }
  std::map<std::string, double> getDefaultParameters() override { return {}; }
  std::vector<std::string> getKernelNames() override { return {CalcMLPotForceKernel::Name()}; }

 private:
  const MLPotForce &owner;
  Kernel kernel;
};

constexpr int XML_VERSION = 1;

class MLPotForceProxy : public SerializationProxy {
 public:
  MLPotForceProxy() : SerializationProxy("MLPotForce") {}
  void serialize(const void *object, SerializationNode &node) const override
  {
    const auto &f = *static_cast<const MLPotForce *>(object);
    node.setIntProperty("version", XML_VERSION);
    node.setIntProperty("forceGroup", f.getForceGroup());
    node.setStringProperty("name", f.getName());
    node.setStringProperty("modelPath", f.modelPath);
    node.setStringProperty("modelSha1", f.modelSha1);
    node.setBoolProperty("periodic", f.periodic);
    node.setBoolProperty("boxKnownDefault", f.boxKnownDefault);
    node.setStringProperty("precision", f.precision);
    node.setStringProperty("device", f.device);
    node.setDoubleProperty("cutoff", f.cutoff);
    node.setIntProperty("ensembleSize", f.ensembleSize);
    node.setIntProperty("numSpecies", f.numSpecies);
    node.setStringProperty("tag", f.tag);
    auto &particles = node.createChildNode("Particles");
    for (std::size_t k = 0; k < f.particles.size(); ++k)
      particles.createChildNode("Particle").setIntProperty("index", f.particles[k]).setIntProperty("type", f.types[k]);
  }
  void *deserialize(const SerializationNode &node) const override
  {
    const int version = node.getIntProperty("version");
    if (version != XML_VERSION)
      throw OpenMMException("MLPotForce: XML version " + std::to_string(version) + " is not supported by this "
                            "mlpot_plugins (it reads version " + std::to_string(XML_VERSION) +
                            "); upgrade mlpot_plugins or re-create the force");
    auto *f = new MLPotForce();
    try {
      f->setForceGroup(node.getIntProperty("forceGroup", 0));
      f->setName(node.getStringProperty("name", "MLPotForce"));
      f->modelPath = node.getStringProperty("modelPath");
      f->modelSha1 = node.getStringProperty("modelSha1");
      f->periodic = node.getBoolProperty("periodic");
      f->boxKnownDefault = node.getBoolProperty("boxKnownDefault", false);
      f->precision = node.getStringProperty("precision");
      f->device = node.getStringProperty("device", "cpu");
      f->cutoff = node.getDoubleProperty("cutoff");
      f->ensembleSize = node.getIntProperty("ensembleSize");
      f->numSpecies = node.getIntProperty("numSpecies");
      f->tag = node.getStringProperty("tag", "");
      for (const auto &p : node.getChildNode("Particles").getChildren()) {
        f->particles.push_back(p.getIntProperty("index"));
        f->types.push_back(p.getIntProperty("type"));
      }
      if (f->precision != "float32" && f->precision != "float64")
        throw OpenMMException("precision must be float32 or float64, got '" + f->precision + "'");
      if (!(f->cutoff > 0.0)) throw OpenMMException("cutoff must be positive");
      if (f->ensembleSize < 1 || f->numSpecies < 1)
        throw OpenMMException("ensembleSize and numSpecies must be >= 1");
    } catch (const OpenMMException &e) {
      delete f;
      throw OpenMMException(std::string("MLPotForce XML: ") + e.what() +
                            "; create the force with mlpot_plugins.openmm.create_force(..., backend='native')");
    }
    return f;
  }
};

}    // namespace

ForceImpl *MLPotForce::createImpl() const { return new MLPotForceImpl(*this); }

}    // namespace MLPot

extern "C" OPENMM_EXPORT void registerPlatforms() {}

extern "C" OPENMM_EXPORT void registerKernelFactories()
{
  // the CPU platform derives from the Reference one: one kernel for both (positions/forces in Vec3 arrays)
  for (int i = 0; i < Platform::getNumPlatforms(); i++) {
    Platform &platform = Platform::getPlatform(i);
    if (dynamic_cast<ReferencePlatform *>(&platform) != nullptr)
      platform.registerKernelFactory(MLPot::CalcMLPotForceKernel::Name(), MLPot::newReferenceKernelFactory());
  }
}

extern "C" OPENMM_EXPORT void registerMLPotSerializationProxies()
{
  SerializationProxy::registerProxy(typeid(MLPot::MLPotForce), new MLPot::MLPotForceProxy());
}

// runs when the library is loaded (Platform.loadPluginLibrary): XmlSerializer then knows MLPotForce
__attribute__((constructor)) static void mlpotRegisterProxiesOnLoad() { registerMLPotSerializationProxies(); }
