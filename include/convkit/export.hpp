// CONVKIT_API marks what libconvkit.so exports. The shared library is compiled with
// -fvisibility=hidden, so everything else (the core, the backends, oneDNN/cuDNN wrappers) stays
// inside it; a linker version script then keeps only convkit's own names (see CMakeLists.txt).
// Marking the public classes also exports their typeinfo, so a convkit::Error thrown inside the
// library is caught by type in a program linked against it.
#pragma once

#if defined(__GNUC__) || defined(__clang__)
#define CONVKIT_API __attribute__((visibility("default")))
#else
#define CONVKIT_API
#endif
