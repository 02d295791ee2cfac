// The tune file: a small text format that survives plan JSON containing any byte.
//   convkit-cuda-tune 1
//   K <key, to end of line>
//   E <engine index> <knob count> <type> <value> ...
//   T 0                (heuristics' pick kept for its plan; absent: a tuned choice)
//   J <byte count>
//   <that many bytes of plan JSON>
// Keys already carry the cuDNN version, GPU name and compute capability (see engine_choice.cpp), so a
// file copied to another machine or kept across a cuDNN upgrade is simply not matched.
#include "cuda/tune_file.hpp"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>

#include "core/backend.hpp"

namespace convkit::cuda {
namespace {

struct TuneState {
    std::mutex mu;
    std::string loaded_from;  // the file `entries` were read from
    bool loaded = false;
    bool foreign = false;  // the path holds a file that is not a tune file: never overwritten
    std::map<std::string, TunedChoice> entries;
};

TuneState& state() {
    static TuneState* s = new TuneState;  // never destroyed: may be used from static destructors
    return *s;
}

// The path is the core's setting (convkit::set_tune_file, CONVKIT_CUDA_TUNE_FILE); a change of
// it is seen here on the next lookup and reloads the entries.
std::string current_path(TuneState&) { return core::tune_file(); }

// A file that is not ours, truncated or garbled is reported once and its bad part ignored:
// entries read before the damage are kept, the problem behind a lost entry is chosen again.
void load(TuneState& s) {
    const std::string path = current_path(s);
    if (s.loaded && s.loaded_from == path) return;
    s.entries.clear();
    s.loaded = true;
    s.foreign = false;
    s.loaded_from = path;
    if (path.empty()) return;
    std::ifstream f(path, std::ios::binary);
    if (!f) return;  // no file yet: the first store creates it
    f.seekg(0, std::ios::end);
    const std::streamoff size = f.tellg();
    f.seekg(0, std::ios::beg);
    std::string line;
    if (!std::getline(f, line) || line != "convkit-cuda-tune 1") {
        if (size > 0) {
            s.foreign = true;
            tune_warn("not a convkit tune file (version 1): ignored, and left as it is (nothing is saved to it)");
        }
        return;
    }
    std::string key;
    TunedChoice c;
    int64_t line_no = 1;
    auto bad = [&](const std::string& why) {
        tune_warn("line " + std::to_string(line_no) + ": " + why + "; the rest of the file is ignored");
    };
    while (std::getline(f, line)) {
        ++line_no;
        if (line.size() >= 2 && line[0] == 'K' && line[1] == ' ') {
            key = line.substr(2);
            c = TunedChoice();
        } else if (line.size() >= 2 && line[0] == 'E' && line[1] == ' ') {
            std::istringstream in(line.substr(2));
            int64_t n = -1;
            in >> c.engine_index >> n;
            if (!in || n < 0 || n > 64) return bad("a malformed engine line");
            for (int64_t i = 0; i < n; ++i) {
                int64_t t = 0, v = 0;
                if (!(in >> t >> v)) return bad("a malformed engine line");
                c.knobs.emplace_back(t, v);
            }
        } else if (line == "T 0") {
            c.tuned = false;
        } else if (line.size() >= 2 && line[0] == 'J' && line[1] == ' ') {
            char* end = nullptr;
            const unsigned long long n = std::strtoull(line.c_str() + 2, &end, 10);
            const std::streamoff left = size - f.tellg();
            if (end == line.c_str() + 2 || *end != '\0' || static_cast<long double>(n) > static_cast<long double>(left))
                return bad("a plan of " + line.substr(2) + " bytes where " + std::to_string(left) + " are left");
            c.json.assign(static_cast<std::size_t>(n), '\0');
            if (n && !f.read(&c.json[0], static_cast<std::streamsize>(n))) return bad("a truncated plan");
            std::getline(f, line);  // the newline after the JSON
            if (key.empty()) return bad("a plan without a key");
            s.entries[key] = c;
            key.clear();
        } else if (!line.empty()) {
            return bad("an unknown line");
        }
    }
}

}  // namespace

bool tune_lookup(const std::string& key, TunedChoice* out) {
    TuneState& s = state();
    std::lock_guard<std::mutex> lock(s.mu);
    if (current_path(s).empty()) return false;
    load(s);
    auto it = s.entries.find(key);
    if (it == s.entries.end()) return false;
    *out = it->second;
    return true;
}

void tune_store(const std::string& key, const TunedChoice& choice) {
    TuneState& s = state();
    std::lock_guard<std::mutex> lock(s.mu);
    const std::string path = current_path(s);
    if (path.empty()) return;
    load(s);
    if (s.foreign) return;
    s.entries[key] = choice;
    const std::string tmp = path + ".tmp" + std::to_string(getpid());
    {
        std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
        if (!f) return;
        f << "convkit-cuda-tune 1\n";
        for (const auto& kv : s.entries) {
            f << "K " << kv.first << "\n";
            f << "E " << kv.second.engine_index << " " << kv.second.knobs.size();
            for (const auto& k : kv.second.knobs) f << " " << k.first << " " << k.second;
            if (!kv.second.tuned) f << "\nT 0";
            f << "\nJ " << kv.second.json.size() << "\n";
            f.write(kv.second.json.data(), static_cast<std::streamsize>(kv.second.json.size()));
            f << "\n";
        }
        if (!f) {
            std::remove(tmp.c_str());
            return;
        }
    }
    std::rename(tmp.c_str(), path.c_str());
}

void tune_warn(const std::string& what) {
    std::fprintf(stderr, "convkit: tune file '%s': %s\n", core::tune_file().c_str(), what.c_str());
}

}  // namespace convkit::cuda
