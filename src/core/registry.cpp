// The backend registry and the global switches. Backends are created on first use, in the
// preference order src/backends.cpp gives (the oneDNN CPU backend before the reference for host
// tensors, cuDNN for GPU tensors); the core knows them only through core::Backend.
#include <omp.h>

#include <atomic>
#include <cstdlib>
#include <mutex>

#include "core/backend.hpp"
#include "core/env.hpp"

namespace convkit {
namespace core {

namespace {

struct Registry {
    BackendSet set = compiled_backends();
    std::vector<Backend*> ordered;
    Registry() {
        for (auto& b : set.backends) ordered.push_back(b.get());
    }
};

Registry& registry() {
    static Registry r;
    return r;
}

}  // namespace

const std::vector<Backend*>& backends() { return registry().ordered; }

Backend* find_backend(Engine e) {
    for (Backend* b : backends())
        if (b->engine() == e) return b;
    return nullptr;
}

DeviceRuntime* runtime(DeviceType t) {
    for (auto& rt : registry().set.runtimes)
        if (rt->device_type() == t) return rt.get();
    return nullptr;
}

}  // namespace core

const char* to_string(Engine e) {
    switch (e) {
        case Engine::automatic: return "auto";
        case Engine::ref: return "ref";
        case Engine::cpu: return "cpu";
        case Engine::cuda: return "cuda";
    }
    return "?";
}

Engine engine_from_string(const std::string& s) {
    if (s == "auto" || s.empty()) return Engine::automatic;
    if (s == "ref") return Engine::ref;
    if (s == "cpu") return Engine::cpu;
    if (s == "cuda") return Engine::cuda;
    throw Error(ErrorKind::invalid_argument,
                "unknown engine '" + s + "' (expected one of auto, ref, cpu, cuda)");
}

std::vector<Engine> available_engines() {
    std::vector<Engine> out;
    for (core::Backend* b : core::backends()) {
        if (b->device_type() == DeviceType::cuda) {
            core::DeviceRuntime* rt = core::runtime(DeviceType::cuda);
            if (!rt || rt->device_count() == 0) continue;
        }
        out.push_back(b->engine());
    }
    return out;
}

Engine best_engine(Device device) {
    for (core::Backend* b : core::backends())
        if (b->device_type() == device.type) return b->engine();
    throw Error(ErrorKind::unsupported, "no backend for device " + device.str() + " in this build");
}

namespace {
// CONVKIT_DETERMINISTIC / CONVKIT_ALLOW_TF32 / CONVKIT_CUDA_AUTOTUNE = 0|1 seed the switches (handy
// for benchmarks that compare against PyTorch settings without code changes).
std::atomic<bool> g_deterministic{core::env::flag("CONVKIT_DETERMINISTIC", false)};
std::atomic<bool> g_allow_tf32{core::env::flag("CONVKIT_ALLOW_TF32", true)};
std::atomic<bool> g_autotune{core::env::flag("CONVKIT_CUDA_AUTOTUNE", false)};

struct TunePath {
    std::mutex mu;
    std::string path;
    TunePath() {
        const char* v = core::env::text("CONVKIT_CUDA_TUNE_FILE");
        path = v ? v : "";
    }
};
TunePath& tune_path() {
    static TunePath* t = new TunePath;  // never destroyed: read from static destructors too
    return *t;
}
}  // namespace

void set_deterministic(bool on) { g_deterministic = on; }
bool deterministic() { return g_deterministic; }
void set_allow_tf32(bool on) { g_allow_tf32 = on; }
bool allow_tf32() { return g_allow_tf32; }
void set_autotune(bool on) { g_autotune = on; }
bool autotune() { return g_autotune; }

void set_tune_file(const std::string& path) {
    TunePath& t = tune_path();
    std::lock_guard<std::mutex> lock(t.mu);
    t.path = path;
}

std::string core::tune_file() {
    TunePath& t = tune_path();
    std::lock_guard<std::mutex> lock(t.mu);
    return t.path;
}

void set_num_threads(int n) {
    if (n < 1) throw Error(ErrorKind::invalid_argument, "set_num_threads: n must be >= 1, got " + std::to_string(n));
    omp_set_num_threads(n);
    for (core::Backend* b : core::backends()) b->set_num_threads(n);
}

int num_threads() { return omp_get_max_threads(); }

CacheStats cache_stats(Engine e) {
    core::Backend* b = core::find_backend(e);
    return b ? b->cache_stats() : CacheStats{};
}

void clear_cache(Engine e) {
    if (core::Backend* b = core::find_backend(e)) b->clear_cache();
}

std::string engine_info(Engine e) {
    core::Backend* b = core::find_backend(e);
    return b ? b->describe() : std::string();
}

}  // namespace convkit
