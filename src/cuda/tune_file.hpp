// Persistence of tuned engine choices (CONVKIT_CUDA_TUNE_FILE): one entry per key, holding the
// plan's JSON and, as a fallback when the JSON no longer loads, the engine's global index and knobs.
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace convkit::cuda {

struct TunedChoice {
    int64_t engine_index = -1;
    std::vector<std::pair<int64_t, int64_t>> knobs;
    std::string json;
    // false: heuristics' pick, kept for its plan (a runtime-compiled one), not a timed choice.
    bool tuned = true;
};

// Looks `key` up in the current tune file (read once per file name); false if absent or no file.
bool tune_lookup(const std::string& key, TunedChoice* out);
// Adds or replaces `key` and rewrites the file (atomically, through a temporary and a rename).
// Failures to write are ignored: tuning results are a cache, not data.
void tune_store(const std::string& key, const TunedChoice& choice);
// One line on stderr about the tune file ("convkit: tune file '<path>': <what>"); the file is a
// cache, so what is wrong with it is reported and worked around, never fatal.
void tune_warn(const std::string& what);

}  // namespace convkit::cuda
