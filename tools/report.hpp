// `convkit bench --report=FILE`: each layer's time (beside PyTorch's, from a per-layer CSV of the
// comparison scripts) and a roofline of the layers against the compute and memory peaks measured
// on the benchmarked engine in the same run. FILE.html is a self-contained page rendered here
// (inline SVG, no scripts, no external assets); FILE.png is drawn by tools/bench_report.py with
// matplotlib from the same data. docs/cli.md describes what the pictures show.
#pragma once
#include <cmath>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "convkit/convkit.hpp"

namespace convkit::tools {

struct ReportLayer {
    std::string config;  // the bench loop's configuration, e.g. "fwd f32 nhwc"
    std::string name, descriptor, dir, dt, tag;
    int64_t mb = 0;
    std::string status;            // ok, unsupported, FAILED (as in bench's table)
    double ms = NAN;               // convkit's min time per call
    double flops = 0, bytes = 0;   // bytes: src + weights + dst at the dtype's size, each once
    double torch_ms = NAN;         // NaN: no PyTorch time for this layer
};

struct ComputePeak {
    std::string dt;
    double gflops = NAN;  // NaN: not measured; `note` says why
    std::string note;     // the problem that reached it
};

struct MemoryPeak {
    double gbs = NAN;
    std::string note;
};

struct ReportData {
    std::string engine;  // "cpu: oneDNN 2.6.3, isa avx512_core, 2 threads, ..."
    std::string command, host, date, torch_csv;
    std::size_t torch_rows = 0;
    MemoryPeak memory;
    std::vector<ComputePeak> compute;  // one per dtype benchmarked
    std::vector<ReportLayer> layers;   // in the bench loop's order
};

// PyTorch's per-layer times, from the --layers-csv file that bench/compare_torch_cpu.py and
// bench/compare_torch_gpu.py write (docs/cli.md: the columns). Rows match a layer by name, dir,
// dt and tag, and also by mb and tf32 when the file has those columns.
class TorchTimes {
public:
    TorchTimes() = default;
    // Reads and checks the whole file; errors (invalid_argument) name --torch-csv, the file and
    // the line.
    static TorchTimes read(const std::string& path);
    // NaN when no row matches. `tf32`: whether convkit's run of this layer uses TF32 math.
    double find(const std::string& name, const std::string& dir, const std::string& dt, const std::string& tag,
                int64_t mb, bool tf32) const;
    std::size_t rows() const { return ms_.size(); }
    const std::string& path() const { return path_; }

private:
    std::string key(const std::string& name, const std::string& dir, const std::string& dt, const std::string& tag,
                    const std::string& mb, const std::string& tf32) const;
    std::string path_;
    bool has_mb_ = false, has_tf32_ = false;
    std::map<std::string, double> ms_;
};

// The --report destination. The constructor checks everything that can be checked before any
// benchmarking: the extension, that the directory takes new files, and for .png the script,
// a python3 that imports matplotlib. write() replaces FILE through a temporary file and a
// rename, so a failure leaves an existing FILE as it was.
class ReportWriter {
public:
    explicit ReportWriter(const std::string& path);
    void write(const ReportData& data) const;
    const std::string& path() const { return path_; }
    bool png() const { return png_; }

private:
    std::string path_, python_, script_;
    bool png_ = false;
};

// Peaks of this machine for the roofline, measured through the engine being benchmarked.
MemoryPeak measure_memory_bandwidth(Engine engine);
ComputePeak measure_compute_peak(Engine engine, DType dt);

std::string render_html(const ReportData& data);
// The data for tools/bench_report.py.
std::string report_json(const ReportData& data);

}  // namespace convkit::tools
