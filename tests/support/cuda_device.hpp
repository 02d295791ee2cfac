// Whether the cuda engine is compiled in and sees a device: the GPU suites skip (GTEST_SKIP)
// without one, so that CI, which builds the CUDA backend but has no GPU, runs them as skipped.
#pragma once
#include "convkit/conv.hpp"

namespace convkit::test {

inline bool has_gpu() {
    for (Engine e : available_engines())
        if (e == Engine::cuda) return true;
    return false;
}

}  // namespace convkit::test
