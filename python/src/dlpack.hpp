// DLPack capsule layer: DLManagedTensor <-> convkit views, and the owners that keep the memory
// of either side alive.
#pragma once
#include <dlpack/dlpack.h>

#include "common.hpp"

namespace ckpy {

// Keeps an imported tensor's memory alive for a convkit.Tensor view (and for anything that the
// view is exported to in turn). Releases it with the GIL held, from whichever thread drops the
// last reference (a consumer's deleter may run on a thread without the GIL).
struct ImportOwner {
    DLManagedTensor* managed = nullptr;  // the producer's deleter is called exactly once
    PyObject* object = nullptr;          // or a strong reference to the owning Python object
    ImportOwner() = default;
    ImportOwner(const ImportOwner&) = delete;
    ImportOwner& operator=(const ImportOwner&) = delete;
    ~ImportOwner();
};

// The view a DLTensor describes (ndim <= 5; a 0-d tensor gives an undefined view with the data
// pointer set and ndim = 0). Throws TypeError / ValueError naming `fn` and `name`.
void view_from_dltensor(ArgTensor& out, const DLTensor& t, const char* fn, const char* name);

// Two cudaStream_t values naming the same stream (0 and 1 are both the legacy default stream).
inline bool same_stream(void* a, void* b) {
    auto norm = [](void* s) { return s == reinterpret_cast<void*>(1) ? nullptr : s; };
    return norm(a) == norm(b);
}

}  // namespace ckpy
