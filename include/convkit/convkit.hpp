// Umbrella header: everything a user of convkit needs.
#pragma once
#include "convkit/allocator.hpp"
#include "convkit/conv.hpp"
#include "convkit/error.hpp"
#include "convkit/post_ops.hpp"
#include "convkit/stream.hpp"
#include "convkit/tensor.hpp"
