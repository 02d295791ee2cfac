// Memory for owning Tensors, workspaces and temporaries. Each device type has one allocator;
// convkit's default ones cache freed blocks (no malloc/cudaMalloc per call in steady state).
// A framework replaces them with its own (e.g. to share its caching allocator).
#pragma once
#include <cstddef>
#include <memory>

#include "convkit/tensor.hpp"

namespace convkit {

class CONVKIT_API Allocator {
public:
    virtual ~Allocator() = default;
    // `stream` is the native stream the memory will be used on (cudaStream_t or nullptr).
    // Must return memory aligned to at least 64 bytes, or throw.
    virtual void* allocate(std::size_t bytes, Device device, void* stream) = 0;
    virtual void deallocate(void* ptr, std::size_t bytes, Device device, void* stream) = 0;
};

CONVKIT_API void set_allocator(DeviceType type, std::shared_ptr<Allocator> allocator);  // nullptr = default
CONVKIT_API std::shared_ptr<Allocator> get_allocator(DeviceType type);

}  // namespace convkit
