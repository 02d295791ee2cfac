// The tune file: a small text format that survives plan JSON containing any byte.
//   convkit-cuda-tune 1
//   K <key, to end of line>
//   E <engine index> <knob count> <type> <value> ...
//   J <byte count>
//   <that many bytes of plan JSON>
// Keys already carry the cuDNN version, GPU name and compute capability (see engine_choice.cpp), so a
// file copied to another machine or kept across a cuDNN upgrade is simply not matched.
#include "cuda/tune_file.hpp"

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
    std::map<std::string, TunedChoice> entries;
};

TuneState& state() {
    static TuneState* s = new TuneState;  // never destroyed: may be used from static destructors
    return *s;
}

// The path is the core's setting (convkit::set_tune_file, CONVKIT_CUDA_TUNE_FILE); a change of
// it is seen here on the next lookup and reloads the entries.
std::string current_path(TuneState&) { return core::tune_file(); }

void load(TuneState& s) {
    const std::string path = current_path(s);
    if (s.loaded && s.loaded_from == path) return;
    s.entries.clear();
    s.loaded = true;
    s.loaded_from = path;
    if (path.empty()) return;
    std::ifstream f(path, std::ios::binary);
    if (!f) return;
    std::string line;
    if (!std::getline(f, line) || line != "convkit-cuda-tune 1") return;
    std::string key;
    TunedChoice c;
    while (std::getline(f, line)) {
        if (line.size() >= 2 && line[0] == 'K' && line[1] == ' ') {
            key = line.substr(2);
            c = TunedChoice();
        } else if (line.size() >= 2 && line[0] == 'E' && line[1] == ' ') {
            std::istringstream in(line.substr(2));
            int64_t n = 0;
            in >> c.engine_index >> n;
            for (int64_t i = 0; i < n && in; ++i) {
                int64_t t = 0, v = 0;
                in >> t >> v;
                c.knobs.emplace_back(t, v);
            }
        } else if (line.size() >= 2 && line[0] == 'J' && line[1] == ' ') {
            std::size_t n = std::strtoull(line.c_str() + 2, nullptr, 10);
            c.json.assign(n, '\0');
            if (n && !f.read(&c.json[0], static_cast<std::streamsize>(n))) return;  // truncated: keep what was read
            std::getline(f, line);  // the newline after the JSON
            if (!key.empty()) s.entries[key] = c;
            key.clear();
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
    s.entries[key] = choice;
    const std::string tmp = path + ".tmp" + std::to_string(reinterpret_cast<uintptr_t>(&s));
    {
        std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
        if (!f) return;
        f << "convkit-cuda-tune 1\n";
        for (const auto& kv : s.entries) {
            f << "K " << kv.first << "\n";
            f << "E " << kv.second.engine_index << " " << kv.second.knobs.size();
            for (const auto& k : kv.second.knobs) f << " " << k.first << " " << k.second;
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

}  // namespace convkit::cuda
