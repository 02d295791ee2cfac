// The oneDNN CPU backend: convkit::core::make_cpu_backend(). It owns the process-wide plan cache
// (one LRU of everything built per problem), turns oneDNN failures into convkit::Errors at the
// boundary, applies the thread-count override, and dispatches f32/bf16 to oneDNN plans and f64 to
// convkit's im2col + OpenBLAS path (oneDNN has no f64 convolutions).
#include <climits>
#include <omp.h>

#include <atomic>
#include <new>
#include <oneapi/dnnl/dnnl.hpp>

#include "core/lru_cache.hpp"
#include "cpu/cpu_internal.hpp"

namespace convkit {
namespace cpu {
namespace {

using core::ConvArgs;
using core::ConvProblem;

struct Plan {
    std::shared_ptr<DnnlPlan> dnnl;
    std::shared_ptr<F64Plan> f64;
    std::shared_ptr<SplitPlan> split;
    std::shared_ptr<TransposedPlan> transposed;  // wraps the plan of its base problem
    std::shared_ptr<CropPlan> crop;              // likewise
};

using PlanCache = core::LruCache<ConvProblem, Plan, core::ConvProblemHash>;

// Capacity from CONVKIT_CACHE_CAPACITY. Never destroyed: plans hold oneDNN primitives, whose
// engine is another function-local static, and static destruction order across files is not
// something to rely on at process exit.
PlanCache& plan_cache() {
    static PlanCache* cache = new PlanCache();
    return *cache;
}

std::atomic<int> g_threads{0};

// Below this much work a convolution finishes on one thread before a second OpenMP thread would
// have woken up (fork/join costs 2-10 us on the 2-core dev machine; 1 MFLOP is ~10-20 us of one
// core), so tiny problems run serially. Plans are built per thread count, so the serial plan is
// its own variant.
constexpr double kSerialFlops = 1e6;

class SerialScope {
public:
    explicit SerialScope(const ConvProblem& p) {
        if (p.flops() < kSerialFlops && omp_get_max_threads() > 1) {
            saved_ = omp_get_max_threads();
            omp_set_num_threads(1);
        }
    }
    ~SerialScope() {
        if (saved_) omp_set_num_threads(saved_);
    }
    SerialScope(const SerialScope&) = delete;
    SerialScope& operator=(const SerialScope&) = delete;

private:
    int saved_ = 0;
};

std::shared_ptr<Plan> get_plan(const ConvProblem& p) {
    return plan_cache().get_or_create(p, [&p] {
        auto plan = std::make_shared<Plan>();
        if (p.transposed)
            plan->transposed = make_transposed_plan(p);
        else if (wants_crop(p))
            plan->crop = make_crop_plan(p);
        else if (p.dt == DType::f64)
            plan->f64 = make_f64_plan(p);
        else if (!wants_split(p) || !(plan->split = make_split_plan(p)))
            plan->dnnl = make_dnnl_plan(p);
        return plan;
    });
}

Event run_plain(Plan& plan, const ConvProblem& p, const ConvArgs& args) {
    if (plan.crop)
        return run_crop_plan(*plan.crop, args, [](const ConvProblem& q, const ConvArgs& a) { run_plain(*get_plan(q), q, a); });
    if (plan.f64) {
        run_f64_plan(*plan.f64, p, args);
        return Event();
    }
    if (plan.split) return run_split_plan(*plan.split, args);
    return run_dnnl_plan(*plan.dnnl, p, args);
}

// Runs `fn`, translating oneDNN and allocation failures into convkit::Errors.
template <typename Fn> auto guarded(const ConvProblem& p, const char* what, Fn&& fn) -> decltype(fn()) {
    try {
        return fn();
    } catch (const dnnl::error& e) {
        if (e.status == dnnl_out_of_memory)
            throw Error(ErrorKind::out_of_memory, std::string("cpu backend: ") + what + " " + p.str() +
                                                      ": oneDNN ran out of memory: " + e.what());
        throw Error(ErrorKind::backend, std::string("cpu backend: ") + what + " " + p.str() + ": " + e.what());
    } catch (const std::bad_alloc&) {
        throw Error(ErrorKind::out_of_memory,
                    std::string("cpu backend: ") + what + " " + p.str() + ": out of host memory");
    }
}

class CpuBackend final : public core::Backend {
public:
    Engine engine() const override { return Engine::cpu; }
    DeviceType device_type() const override { return DeviceType::cpu; }

    std::string check(const ConvProblem& p) const override {
        if (!p.device.is_cpu()) return "the cpu engine runs host tensors only";
        // oneDNN 2.6 refuses descriptors with such values (found by fuzzing: a 2^62 stride over a
        // single window); the reference engine takes them. A 1-tap kernel's dilation is handed to
        // oneDNN as dense (dnnl_builder.cpp), so it may be anything.
        const int64_t lim = INT32_MAX;
        for (int i = 0; i < p.nsp; ++i)
            if (p.in[i] > lim || p.out[i] > lim || p.k[i] > lim || p.stride[i] > lim || p.padding_l[i] > lim ||
                p.padding_r[i] > lim || p.padding_r[i] < -lim || (p.k[i] > 1 && p.dilation[i] > lim))
                return "oneDNN 2.6 takes spatial sizes, strides, paddings and dilations below 2^31";
        return "";
    }

    // oneDNN pads the channels of its blocked layouts to 16 and indexes some kernels with 32-bit
    // offsets: a bf16 channels-first backward-weights with 2 channels crashed (SIGSEGV in jit
    // code) at 1x2x16400x16400 (5.4e8 elements, 4.3e9 once padded; tests/large). Tiles keep the
    // padded size below 2^31.
    int64_t max_tensor_elements(const ConvProblem& p) const override {
        auto padded = [](int64_t c) { return (c + 15) / 16 * 16; };
        const double grow = std::max(static_cast<double>(padded(p.icg())) / static_cast<double>(p.icg()),
                                     static_cast<double>(padded(p.ocg())) / static_cast<double>(p.ocg()));
        return static_cast<int64_t>(static_cast<double>(INT32_MAX) / grow);
    }

    Event execute(const ConvProblem& p, const ConvArgs& args, const Stream&, const std::vector<Event>& deps) override {
        core::wait_all(deps);
        apply_threads();
        SerialScope serial(p);
        return guarded(p, "running", [&] {
            std::shared_ptr<Plan> plan = get_plan(p);
            if (plan->transposed)
                return run_transposed_plan(*plan->transposed, args,
                                           [](const ConvProblem& q, const ConvArgs& a) { run_plain(*get_plan(q), q, a); });
            return run_plain(*plan, p, args);
        });
    }

    CacheStats cache_stats() const override { return plan_cache().stats(); }
    void clear_cache() override { plan_cache().clear(); }

    std::shared_ptr<void> prepack(const ConvProblem& p, const TensorView& weights) override {
        if (p.dt == DType::f64) return nullptr;  // the f64 path reads plain weights
        apply_threads();
        SerialScope serial(p);
        return guarded(p, "prepacking weights for", [&] {
            // Pack for the plan the packed forward call will look up (the core marks such calls
            // packed_weights with channels-first weights), so its layout is the one it reads.
            ConvProblem packed = p;
            packed.packed_weights = true;
            packed.wei_layout = Layout::channels_first;
            std::shared_ptr<Plan> plan = get_plan(packed);
            return dnnl_prepack(*plan->dnnl, p, weights);
        });
    }

    void set_num_threads(int n) override { g_threads.store(n > 0 ? n : 0, std::memory_order_relaxed); }
    std::string describe() const override { return cpu::describe(); }
    std::string trace_impl(const ConvProblem& p) override;
};

}  // namespace

int requested_threads() { return g_threads.load(std::memory_order_relaxed); }

int apply_threads() {
    const int n = requested_threads();
    // omp_set_num_threads only sets the calling thread's ICV: threads other than the one that
    // called convkit::set_num_threads pick the override up here.
    if (n > 0 && omp_get_max_threads() != n) omp_set_num_threads(n);
    return omp_get_max_threads();
}

namespace {

// What `plan` runs; `lookup` finds the plans it wraps (null: not cached).
template <typename Lookup> PlanInfo info_of(Plan& plan, Lookup&& lookup) {
    std::shared_ptr<Plan> base;
    if (plan.transposed) {
        if (!(base = lookup(transposed_base(*plan.transposed)))) return PlanInfo();
        return transposed_plan_info(*plan.transposed, info_of(*base, lookup));
    }
    if (plan.crop) {
        if (!(base = lookup(crop_base(*plan.crop)))) return PlanInfo();
        return info_of(*base, lookup);
    }
    if (plan.f64) return f64_plan_info(*plan.f64);
    return plan.split ? split_plan_info(*plan.split) : dnnl_plan_info(*plan.dnnl);
}

}  // namespace

PlanInfo plan_info(const ConvProblem& p) {
    apply_threads();
    SerialScope serial(p);
    return guarded(p, "planning", [&] { return info_of(*get_plan(p), get_plan); });
}

std::string CpuBackend::trace_impl(const ConvProblem& p) {
    SerialScope serial(p);
    auto peek = [](const ConvProblem& q) { return plan_cache().peek(q); };
    std::shared_ptr<Plan> plan = peek(p);
    const PlanInfo info = plan ? info_of(*plan, peek) : PlanInfo();
    if (info.impl.empty()) return "cpu";
    std::string s = info.impl;
    if (info.widened) s += "+widened_f32";
    if (info.own_epilogue) s += "+convkit_epilogue";
    return s;
}

}  // namespace cpu

namespace core {
std::unique_ptr<Backend> make_cpu_backend() { return std::make_unique<cpu::CpuBackend>(); }
}  // namespace core
}  // namespace convkit
