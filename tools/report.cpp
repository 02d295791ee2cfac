// `convkit bench --report`: the PyTorch CSV reader, the peak measurements, the HTML renderer,
// the data handed to tools/bench_report.py for PNGs, and the write through a temporary file.
#include "report.hpp"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <memory>
#include <set>
#include <sstream>
#include <system_error>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "cli_common.hpp"

extern char** environ;

namespace convkit::tools {

namespace {

[[noreturn]] void fail(const std::string& msg) { throw Error(ErrorKind::invalid_argument, msg); }

std::string errno_text(int e) { return std::strerror(e); }

double now_ms() {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

std::string fmt(const char* f, double v) {
    char buf[64];
    std::snprintf(buf, sizeof buf, f, v);
    return buf;
}

// 3 significant digits (all digits of integers from 100 up, so no exponents).
std::string fmt3(double v) {
    if (!std::isfinite(v)) return "n/a";
    return std::abs(v) >= 100 ? fmt("%.0f", v) : fmt("%.3g", v);
}

// Layer names and the command line come from the user: bytes that are not UTF-8 would make the
// page (declared UTF-8) and the JSON that Python decodes strictly unreadable.
std::string clean_utf8(const std::string& s) {
    std::string out;
    const auto* p = reinterpret_cast<const unsigned char*>(s.data());
    const std::size_t n = s.size();
    for (std::size_t i = 0; i < n;) {
        const unsigned char c = p[i];
        int len = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xe ? 3 : (c >> 3) == 0x1e ? 4 : 0;
        bool ok = len > 0 && i + len <= n && !(len == 2 && c < 0xc2);
        for (int k = 1; ok && k < len; ++k) ok = (p[i + k] & 0xc0) == 0x80;
        if (ok) {
            out.append(s, i, static_cast<std::size_t>(len));
            i += static_cast<std::size_t>(len);
        } else {
            out += "\xef\xbf\xbd";  // U+FFFD
            ++i;
        }
    }
    return out;
}

std::string esc(const std::string& raw) {
    std::string out;
    for (char c : clean_utf8(raw)) {
        switch (c) {
            case '&': out += "&amp;"; break;
            case '<': out += "&lt;"; break;
            case '>': out += "&gt;"; break;
            case '"': out += "&quot;"; break;
            case '\'': out += "&#39;"; break;
            default:
                if (static_cast<unsigned char>(c) < 0x20 && c != '\n' && c != '\t') out += ' ';
                else out += c;
        }
    }
    return out;
}

std::string lower(std::string s) {
    for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return s;
}

std::string trim(const std::string& s) {
    std::size_t b = 0, e = s.size();
    while (b < e && (s[b] == ' ' || s[b] == '\t')) ++b;
    while (e > b && (s[e - 1] == ' ' || s[e - 1] == '\t')) --e;
    return s.substr(b, e - b);
}

std::string parent_dir(const std::string& path) {
    const auto slash = path.find_last_of('/');
    if (slash == std::string::npos) return ".";
    if (slash == 0) return "/";
    return path.substr(0, slash);
}

// ---- the PyTorch CSV ----

// One line of RFC 4180 CSV (Python's csv module quotes fields holding commas or quotes).
std::vector<std::string> split_csv(const std::string& line, bool* ok) {
    std::vector<std::string> f(1);
    bool quoted = false;
    *ok = true;
    for (std::size_t i = 0; i < line.size(); ++i) {
        const char c = line[i];
        if (quoted) {
            if (c == '"' && i + 1 < line.size() && line[i + 1] == '"') f.back() += '"', ++i;
            else if (c == '"') quoted = false;
            else f.back() += c;
        } else if (c == '"' && f.back().empty()) {
            quoted = true;
        } else if (c == ',') {
            f.emplace_back();
        } else {
            f.back() += c;
        }
    }
    if (quoted) *ok = false;
    return f;
}

// The scripts write fwd/bwd_d/bwd_w; benchdnn's spellings are accepted too, as --dir takes them.
std::string canonical_dir(const std::string& s) {
    if (s == "fwd" || s == "FWD_B" || s == "FWD_D" || s == "FWD_I") return "fwd";
    if (s == "bwd_d" || s == "BWD_D") return "bwd_d";
    if (s == "bwd_w" || s == "BWD_W" || s == "BWD_WB") return "bwd_w";
    return "";
}

}  // namespace

std::string TorchTimes::key(const std::string& name, const std::string& dir, const std::string& dt,
                            const std::string& tag, const std::string& mb, const std::string& tf32) const {
    const char sep = '\x1f';
    return name + sep + dir + sep + dt + sep + tag + sep + (has_mb_ ? mb : "") + sep + (has_tf32_ ? tf32 : "");
}

TorchTimes TorchTimes::read(const std::string& path) {
    TorchTimes t;
    t.path_ = path;
    const std::string what = "--torch-csv '" + path + "'";
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) fail(what + ": " + errno_text(errno));
    if (S_ISDIR(st.st_mode)) fail(what + " is a directory, not a CSV file");
    std::ifstream in(path);
    if (!in) fail(what + ": cannot open for reading: " + errno_text(errno));
    std::string line;
    if (!std::getline(in, line)) fail(what + " is empty (expected a header line: name,dir,dt,tag,pytorch_ms,...)");
    if (line.compare(0, 3, "\xef\xbb\xbf") == 0) line.erase(0, 3);  // a BOM from spreadsheet exports
    if (!line.empty() && line.back() == '\r') line.pop_back();
    bool ok = true;
    std::vector<std::string> header = split_csv(line, &ok);
    std::map<std::string, std::size_t> col;
    for (std::size_t i = 0; i < header.size(); ++i) col[trim(header[i])] = i;
    for (const char* need : {"name", "dir", "dt", "tag", "pytorch_ms"})
        if (!col.count(need))
            fail(what + ": the header has no '" + need + "' column (expected name,dir,dt,tag,pytorch_ms; mb and " +
                 "tf32 optional: a --layers-csv file of bench/compare_torch_cpu.py or compare_torch_gpu.py)");
    t.has_mb_ = col.count("mb") > 0;
    t.has_tf32_ = col.count("tf32") > 0;
    std::map<std::string, int64_t> first_line;
    for (int64_t lineno = 2; std::getline(in, line); ++lineno) {
        if (!line.empty() && line.back() == '\r') line.pop_back();
        if (trim(line).empty()) continue;
        const std::string where = what + ", line " + std::to_string(lineno);
        std::vector<std::string> f = split_csv(line, &ok);
        if (!ok) fail(where + ": unterminated quoted field");
        if (f.size() != header.size())
            fail(where + ": " + std::to_string(f.size()) + " fields, the header has " + std::to_string(header.size()));
        auto get = [&](const char* c) { return trim(f[col.at(c)]); };
        const std::string dir = canonical_dir(get("dir"));
        if (dir.empty()) fail(where + ": dir '" + get("dir") + "' is not one of fwd, bwd_d, bwd_w");
        std::string dt;
        try {
            dt = to_string(dtype_from_string(get("dt")));
        } catch (const Error&) {
            fail(where + ": dt '" + get("dt") + "' is not one of f32, f64, bf16, f16");
        }
        const std::string tag = lower(get("tag"));
        std::string mb, tf32;
        if (t.has_mb_) {
            mb = get("mb");
            char* end = nullptr;
            const long long v = std::strtoll(mb.c_str(), &end, 10);
            if (mb.empty() || *end || v < 1) fail(where + ": mb '" + mb + "' is not a positive integer");
            mb = std::to_string(v);
        }
        if (t.has_tf32_) {
            tf32 = lower(get("tf32"));
            if (tf32 == "1" || tf32 == "true") tf32 = "1";
            else if (tf32 == "0" || tf32 == "false") tf32 = "0";
            else fail(where + ": tf32 '" + get("tf32") + "' is not 0 or 1");
        }
        // An empty or nan time: PyTorch could not run the layer (f16 convolutions on CPU, say).
        const std::string ms_text = lower(get("pytorch_ms"));
        if (ms_text.empty() || ms_text == "nan") continue;
        char* end = nullptr;
        const double ms = std::strtod(ms_text.c_str(), &end);
        if (*end || !std::isfinite(ms) || ms <= 0)
            fail(where + ": pytorch_ms '" + get("pytorch_ms") + "' is not a positive number of milliseconds");
        const std::string k = t.key(get("name"), dir, dt, tag, mb, tf32);
        auto [it, fresh] = first_line.emplace(k, lineno);
        if (!fresh)
            fail(where + ": layer '" + get("name") + "' " + dir + " " + dt + " " + tag +
                 (t.has_mb_ ? " mb " + mb : "") + " already has a time on line " + std::to_string(it->second));
        t.ms_[k] = ms;
    }
    if (in.bad()) fail(what + ": read error");
    return t;
}

double TorchTimes::find(const std::string& name, const std::string& dir, const std::string& dt,
                        const std::string& tag, int64_t mb, bool tf32) const {
    auto it = ms_.find(key(name, dir, dt, tag, std::to_string(mb), tf32 ? "1" : "0"));
    return it == ms_.end() ? NAN : it->second;
}

// ---- peaks ----

namespace {

// Dense tensors filled with values in [-1, 1): a repeated 1M-element block, copied in place, so
// filling a GPU tensor of hundreds of MB costs no host tensor of its size.
void fill(const Tensor& t, uint64_t seed) {
    const int64_t n = t.numel();
    const int64_t block = std::min<int64_t>(n, int64_t{1} << 20);
    Tensor h(t.dtype(), Dims{block}, Layout::channels_first, Device::cpu());
    from_host_f64(h.view(), random_values(block, -1, 1, seed, t.dtype()));
    char* base = static_cast<char*>(t.data());
    const std::size_t es = dtype_size(t.dtype());
    for (int64_t off = 0; off < n; off += block) {
        const int64_t len = std::min(block, n - off);
        copy(TensorView(base + static_cast<std::size_t>(off) * es, t.dtype(), Dims{len}, t.device()),
             TensorView(h.data(), t.dtype(), Dims{len}));
    }
}

bool recoverable(const Error& e) { return e.kind() == ErrorKind::unsupported || e.kind() == ErrorKind::out_of_memory; }

}  // namespace

ComputePeak measure_compute_peak(Engine engine, DType dt) {
    // 1x1 convolutions are GEMMs (M = mb*h*w, N = K = channels), the densest work a convolution
    // engine does. Sizes grow until one call takes long enough to time well; the peak is the best
    // rate seen, since the largest GEMM is not always the fastest: on a CPU the 256-channel ones,
    // whose weights stay in L2, beat 1024 channels; a GPU needs the largest to fill its SMs.
    struct Shape {
        int64_t c, mb, hw;
    };
    static const Shape shapes[] = {{256, 1, 14},  {256, 1, 28},  {256, 1, 56},   {512, 1, 28},
                                   {256, 4, 56},  {1024, 1, 28}, {512, 4, 56},   {1024, 4, 56},
                                   {1024, 16, 56}, {1024, 32, 56}, {2048, 32, 56}};
    const double long_enough_ms = 10, batch_ms = 5;
    const Device dev = engine == Engine::cuda ? Device::cuda(0) : Device::cpu();
    const Stream stream = dev.is_cuda() ? Stream::cuda(0) : Stream();
    ConvOptions opt;
    opt.engine = engine;
    ComputePeak best;
    best.dt = to_string(dt);
    for (const Shape& s : shapes) {
        double one = 0, tmin = INFINITY;
        try {
            Tensor src(dt, Dims{s.mb, s.c, s.hw, s.hw}, Layout::channels_last, dev);
            Tensor wei(dt, Dims{s.c, s.c, 1, 1}, Layout::channels_last, dev);
            Tensor dst(dt, Dims{s.mb, s.c, s.hw, s.hw}, Layout::channels_last, dev);
            fill(src, 11);
            fill(wei, 12);
            auto call = [&] {
                convolution_forward(dst, src, wei, TensorView(), ConvParams(), PostOps(), stream, {}, opt);
            };
            call();  // plan build, autotuning, reorders
            stream.synchronize();
            double t0 = now_ms();
            call();
            stream.synchronize();
            one = std::max(now_ms() - t0, 1e-3);
            // Back-to-back calls between syncs, as bench times layers, so launch gaps do not count.
            const int per_batch = std::max(1, static_cast<int>(batch_ms / one));
            for (int b = 0; b < 5; ++b) {
                t0 = now_ms();
                for (int i = 0; i < per_batch; ++i) call();
                stream.synchronize();
                tmin = std::min(tmin, (now_ms() - t0) / per_batch);
            }
        } catch (const Error& e) {
            if (!recoverable(e)) throw;
            if (best.note.empty()) best.note = std::string("not measured: ") + e.what();
            break;
        } catch (const std::bad_alloc&) {
            if (best.note.empty()) best.note = "not measured: out of host memory";
            break;
        }
        const double flops = 2.0 * s.mb * s.hw * s.hw * s.c * s.c;
        const double gflops = flops / (tmin * 1e6);
        if (!(gflops <= best.gflops)) {
            best.gflops = gflops;
            best.note = "fwd 1x1 mb" + std::to_string(s.mb) + "ic" + std::to_string(s.c) + "ih" +
                        std::to_string(s.hw) + "oc" + std::to_string(s.c) + " " + to_string(dt) +
                        (engine == Engine::cuda && dt == DType::f32 && allow_tf32() ? " (TF32)" : "") + " nhwc, " +
                        fmt3(tmin) + " ms per call";
        }
        if (one >= long_enough_ms) break;
    }
    return best;
}

MemoryPeak measure_memory_bandwidth(Engine engine) {
    MemoryPeak m;
    if (engine == Engine::cuda) {
        // A device-to-device copy() (cudaMemcpy) far larger than the L2 cache.
        for (int64_t mib : {1024, 256}) {
            try {
                const int64_t n = mib << 20;
                Tensor a(DType::f32, Dims{n / 4}, Layout::channels_first, Device::cuda(0));
                Tensor b(DType::f32, Dims{n / 4}, Layout::channels_first, Device::cuda(0));
                copy(b.view(), a.view());  // first touch
                double best = INFINITY;
                for (int i = 0; i < 10; ++i) {
                    const double t0 = now_ms();
                    copy(b.view(), a.view());
                    best = std::min(best, now_ms() - t0);
                }
                m.gbs = 2.0 * static_cast<double>(n) / (best * 1e6);
                m.note = "copy() of " + std::to_string(mib) + " MiB on cuda:0, read + write counted, best of 10";
                return m;
            } catch (const Error& e) {
                if (!recoverable(e)) throw;
                m.note = std::string("not measured: ") + e.what();
            }
        }
        return m;
    }
    // Host: memcpy split over the engine's threads, since one core cannot draw the bandwidth the
    // engine's threads do. Each buffer as large as the last-level cache (at least 128 MiB), so
    // the two together stream through twice its size and come from DRAM.
    long llc = ::sysconf(_SC_LEVEL3_CACHE_SIZE);
    if (llc <= 0) llc = ::sysconf(_SC_LEVEL2_CACHE_SIZE);
    const std::size_t n = std::min<std::size_t>(
            std::size_t{1} << 30, std::max<std::size_t>(std::size_t{128} << 20, static_cast<std::size_t>(std::max(llc, 0L))));
    std::unique_ptr<char[]> a, b;
    try {
        a.reset(new char[n]);
        b.reset(new char[n]);
    } catch (const std::bad_alloc&) {
        m.note = "not measured: no memory for two " + std::to_string(n >> 20) + " MiB buffers";
        return m;
    }
    const int threads = std::max(1, num_threads());
    auto parallel = [&](auto f) {
#pragma omp parallel num_threads(threads)
        {
#ifdef _OPENMP
            const int t = omp_get_thread_num(), nt = omp_get_num_threads();
#else
            const int t = 0, nt = 1;
#endif
            const std::size_t lo = n / nt * t, hi = t == nt - 1 ? n : n / nt * (t + 1);
            f(lo, hi);
        }
    };
    // Pages first touched by the thread that copies them (NUMA placement), and faulted in
    // before the timed copies.
    parallel([&](std::size_t lo, std::size_t hi) {
        std::memset(a.get() + lo, 1, hi - lo);
        std::memset(b.get() + lo, 0, hi - lo);
    });
    double best = INFINITY;
    for (int i = 0; i < 5; ++i) {
        const double t0 = now_ms();
        parallel([&](std::size_t lo, std::size_t hi) { std::memcpy(b.get() + lo, a.get() + lo, hi - lo); });
        best = std::min(best, now_ms() - t0);
    }
    m.gbs = 2.0 * static_cast<double>(n) / (best * 1e6);
    m.note = "memcpy of " + std::to_string(n >> 20) + " MiB on " + std::to_string(threads) +
             " thread" + (threads == 1 ? "" : "s") + ", read + write counted, best of 5";
    return m;
}

// ---- HTML ----

namespace {

const char* const kConvkitColor = "#1f77b4";
const char* const kTorchColor = "#ff7f0e";
const char* const kPalette[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                                "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};

std::string num(double v) { return fmt("%.2f", v); }  // SVG coordinates

// Text width estimate for layout (sans-serif averages about 0.6 em per character).
double text_w(const std::string& s, double font) { return 0.6 * font * static_cast<double>(s.size()); }

struct Ticks {
    double step, top;
};

Ticks linear_ticks(double vmax) {
    if (!(vmax > 0)) vmax = 1;
    const double raw = vmax / 5, mag = std::pow(10.0, std::floor(std::log10(raw)));
    double step = 10 * mag;
    for (double m : {1.0, 2.0, 2.5, 5.0})
        if (m * mag >= raw) {
            step = m * mag;
            break;
        }
    return {step, std::ceil(vmax / step - 1e-9) * step};
}

std::string tick_label(double v) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.6g", v);
    return buf;
}

// Plain numbers from 0.001 to 10000, "2e5" beyond (GPU rates run to 1e6 GFLOP/s).
std::string log_label(double v) {
    const int k = static_cast<int>(std::floor(std::log10(v) + 1e-9));
    if (k >= -3 && k <= 4) return tick_label(v);
    return tick_label(std::round(v / std::pow(10.0, k))) + "e" + std::to_string(k);
}

std::string display_name(const ReportLayer& l) { return l.name.empty() ? l.descriptor : l.name; }

double gflops_of(const ReportLayer& l) { return l.flops / (l.ms * 1e6); }

bool timed(const ReportLayer& l) { return std::isfinite(l.ms) && l.ms > 0 && l.status != "unsupported"; }

const ComputePeak* peak_for(const ReportData& d, const std::string& dt) {
    for (const auto& p : d.compute)
        if (p.dt == dt) return &p;
    return nullptr;
}

// One configuration's layers as horizontal bars: convkit's time, PyTorch's under it.
std::string bars_svg(const std::vector<const ReportLayer*>& rows, bool torch) {
    const double font = 12;
    std::size_t maxc = 4;
    for (const auto* l : rows) maxc = std::max(maxc, clean_utf8(display_name(*l)).size());
    const double label_w = std::clamp(text_w(std::string(maxc, 'x'), font) + 16, 80.0, 260.0);
    const std::size_t max_chars = static_cast<std::size_t>((label_w - 16) / (0.6 * font));
    const double x0 = label_w + 6, plot_w = 500, right = 170, top = 8, axis_h = 40;
    const double bar_h = torch ? 9 : 12, row_h = torch ? 25 : 18;
    const double W = x0 + plot_w + right, H = top + row_h * static_cast<double>(rows.size()) + axis_h;
    double vmax = 0;
    for (const auto* l : rows) {
        if (timed(*l)) vmax = std::max(vmax, l->ms);
        if (std::isfinite(l->torch_ms)) vmax = std::max(vmax, l->torch_ms);
    }
    const Ticks t = linear_ticks(vmax);
    auto X = [&](double v) { return x0 + v / t.top * plot_w; };
    std::ostringstream s;
    s << "<svg class=\"bars\" xmlns=\"http://www.w3.org/2000/svg\" width=\"" << num(W) << "\" height=\"" << num(H)
      << "\" viewBox=\"0 0 " << num(W) << " " << num(H) << "\" font-family=\"sans-serif\" font-size=\"" << font << "\">\n";
    const double y_axis = top + row_h * static_cast<double>(rows.size());
    for (int i = 0; i * t.step <= t.top * (1 + 1e-9); ++i) {
        const double v = i * t.step, x = X(v);
        s << "<line x1=\"" << num(x) << "\" y1=\"" << num(top) << "\" x2=\"" << num(x) << "\" y2=\"" << num(y_axis)
          << "\" stroke=\"#e0e0e0\"/>\n"
          << "<text x=\"" << num(x) << "\" y=\"" << num(y_axis + 15) << "\" text-anchor=\"middle\" fill=\"#444\">"
          << tick_label(v) << "</text>\n";
    }
    s << "<line x1=\"" << num(x0) << "\" y1=\"" << num(top) << "\" x2=\"" << num(x0) << "\" y2=\"" << num(y_axis)
      << "\" stroke=\"#444\"/>\n"
      << "<line x1=\"" << num(x0) << "\" y1=\"" << num(y_axis) << "\" x2=\"" << num(x0 + plot_w) << "\" y2=\""
      << num(y_axis) << "\" stroke=\"#444\"/>\n"
      << "<text x=\"" << num(x0 + plot_w / 2) << "\" y=\"" << num(y_axis + 32)
      << "\" text-anchor=\"middle\" fill=\"#222\">time per call, ms (convkit: min over batches of calls)</text>\n";
    for (std::size_t i = 0; i < rows.size(); ++i) {
        const ReportLayer& l = *rows[i];
        const double y0 = top + row_h * static_cast<double>(i);
        std::string label = clean_utf8(display_name(l));
        if (label.size() > max_chars) label = label.substr(0, max_chars - 1) + "\xe2\x80\xa6";  // ...
        s << "<text class=\"layer\" x=\"" << num(x0 - 6) << "\" y=\"" << num(y0 + row_h / 2 + 4)
          << "\" text-anchor=\"end\" fill=\"#222\"><title>" << esc(l.descriptor) << "</title>" << esc(label)
          << "</text>\n";
        const double yb = y0 + (row_h - (torch ? 2 * bar_h + 1 : bar_h)) / 2;
        if (!timed(l)) {
            s << "<text x=\"" << num(x0 + 4) << "\" y=\"" << num(yb + bar_h - 1) << "\" fill=\"#888\">" << esc(l.status)
              << "</text>\n";
        } else {
            const bool bad = l.status != "ok";
            s << "<rect class=\"bar convkit\" data-layer=\"" << esc(display_name(l)) << "\" data-ms=\""
              << fmt("%.6g", l.ms) << "\" x=\"" << num(x0) << "\" y=\"" << num(yb) << "\" width=\""
              << num(std::max(0.5, X(l.ms) - x0)) << "\" height=\"" << num(bar_h) << "\" fill=\"" << kConvkitColor
              << "\"><title>convkit " << esc(display_name(l)) << ": " << fmt("%.4f", l.ms) << " ms, "
              << fmt3(gflops_of(l)) << " GFLOP/s</title></rect>\n"
              << "<text x=\"" << num(X(l.ms) + 4) << "\" y=\"" << num(yb + bar_h - 1) << "\" font-size=\"10\" fill=\""
              << (bad ? "#c00" : "#222") << "\">" << fmt3(l.ms) << (bad ? " " + esc(l.status) : std::string())
              << "</text>\n";
        }
        if (torch && std::isfinite(l.torch_ms)) {
            const double yt = yb + bar_h + 1;
            const double ratio = timed(l) ? l.torch_ms / l.ms : NAN;
            s << "<rect class=\"bar pytorch\" data-layer=\"" << esc(display_name(l)) << "\" data-ms=\""
              << fmt("%.6g", l.torch_ms) << "\" data-ratio=\"" << fmt("%.4g", ratio) << "\" x=\"" << num(x0)
              << "\" y=\"" << num(yt) << "\" width=\"" << num(std::max(0.5, X(l.torch_ms) - x0)) << "\" height=\""
              << num(bar_h) << "\" fill=\"" << kTorchColor << "\"><title>PyTorch " << esc(display_name(l)) << ": "
              << fmt("%.4f", l.torch_ms) << " ms</title></rect>\n"
              << "<text x=\"" << num(X(l.torch_ms) + 4) << "\" y=\"" << num(yt + bar_h - 1)
              << "\" font-size=\"10\" fill=\"#222\">" << fmt3(l.torch_ms);
            if (std::isfinite(ratio))
                // Coloured by the printed value: 0.997 prints 1.00 and is a tie, not a loss.
                s << "  <tspan font-weight=\"bold\" fill=\""
                  << (ratio >= 1.005 ? "#1a7f37" : ratio < 0.995 ? "#c00" : "#444") << "\">"
                  << fmt("%.2f", ratio) << "\xc3\x97</tspan>";
            s << "</text>\n";
        }
    }
    s << "</svg>\n";
    return s.str();
}

struct Box {
    double x0, y0, x1, y1;
    bool overlaps(const Box& o) const { return x0 < o.x1 && o.x0 < x1 && y0 < o.y1 && o.y0 < y1; }
};

// Achieved GFLOP/s against FLOP per byte on log-log axes, under the two measured ceilings.
std::string roofline_svg(const ReportData& d, const std::string& dt, const std::vector<std::string>& configs) {
    struct Pt {
        const ReportLayer* l;
        double ai, gf;
        std::size_t color;
    };
    std::vector<Pt> pts;
    for (const auto& l : d.layers) {
        if (l.dt != dt || !timed(l) || !(l.bytes > 0) || !(l.flops > 0)) continue;
        const std::size_t ci = static_cast<std::size_t>(std::find(configs.begin(), configs.end(), l.config) - configs.begin());
        pts.push_back({&l, l.flops / l.bytes, gflops_of(l), ci % 10});
    }
    const ComputePeak* cp = peak_for(d, dt);
    const double P = cp ? cp->gflops : NAN, B = d.memory.gbs;
    if (pts.empty()) return "";
    double xlo = INFINITY, xhi = 0, ylo = INFINITY, yhi = 0;
    for (const auto& p : pts) {
        xlo = std::min(xlo, p.ai), xhi = std::max(xhi, p.ai);
        ylo = std::min(ylo, p.gf), yhi = std::max(yhi, p.gf);
    }
    const bool have_p = std::isfinite(P) && P > 0, have_b = std::isfinite(B) && B > 0;
    // The compute roof stays inside the plot even below every point: a peak measured on a busy
    // machine can come out under what the layers reached, and a plot starting above the roof
    // drew the memory ceiling backwards (a flaky cli_bench_report in CI).
    if (have_p) yhi = std::max(yhi, P), ylo = std::min(ylo, P);
    if (have_p && have_b) xlo = std::min(xlo, P / B), xhi = std::max(xhi, P / B);
    // Log bounds with a margin around the data and the ridge, at least a decade wide.
    auto bounds = [](double lo, double hi, double* l0, double* l1) {
        *l0 = std::log10(lo / 1.6), *l1 = std::log10(hi * 1.6);
        if (*l1 - *l0 < 1) {
            const double c = (*l0 + *l1) / 2;
            *l0 = c - 0.5, *l1 = c + 0.5;
        }
    };
    double lx0, lx1, ly0, ly1;
    bounds(xlo, xhi, &lx0, &lx1);
    bounds(ylo, yhi, &ly0, &ly1);
    const double ml = 64, mt = 14, pw = 600, ph = 380, mb = 48, legend_w = 230;
    const double W = ml + pw + 24 + legend_w, H = mt + ph + mb;
    auto X = [&](double v) { return ml + (std::log10(v) - lx0) / (lx1 - lx0) * pw; };
    auto Y = [&](double v) { return mt + ph - (std::log10(v) - ly0) / (ly1 - ly0) * ph; };
    const double xmin = std::pow(10.0, lx0), xmax = std::pow(10.0, lx1), ymin = std::pow(10.0, ly0);
    std::ostringstream s;
    const std::string clip = "plot-" + dt;
    s << "<svg class=\"roofline\" data-dt=\"" << esc(dt) << "\" xmlns=\"http://www.w3.org/2000/svg\" width=\"" << num(W)
      << "\" height=\"" << num(H) << "\" viewBox=\"0 0 " << num(W) << " " << num(H)
      << "\" font-family=\"sans-serif\" font-size=\"12\">\n"
      << "<defs><clipPath id=\"" << clip << "\"><rect x=\"" << num(ml) << "\" y=\"" << num(mt) << "\" width=\"" << num(pw)
      << "\" height=\"" << num(ph) << "\"/></clipPath></defs>\n"
      << "<rect x=\"" << num(ml) << "\" y=\"" << num(mt) << "\" width=\"" << num(pw) << "\" height=\"" << num(ph)
      << "\" fill=\"#fff\" stroke=\"#444\"/>\n";
    // Grid lines at 1..9 x 10^k; labels at the decades, and at 2 and 5 (and 3) too when the axis
    // spans few decades and would otherwise carry one or two numbers.
    auto grid = [&](double l0, double l1, bool horizontal) {
        const bool few = l1 - l0 <= 3.2, very_few = l1 - l0 <= 1.5;
        for (int k = static_cast<int>(std::floor(l0)); k <= static_cast<int>(std::ceil(l1)); ++k)
            for (int m = 1; m <= 9; ++m) {
                const double v = m * std::pow(10.0, k), lv = std::log10(v);
                if (lv < l0 - 1e-9 || lv > l1 + 1e-9) continue;
                const std::string stroke = m == 1 ? "#d0d0d0" : "#f0f0f0";
                const bool label = m == 1 || (few && (m == 2 || m == 5)) || (very_few && m == 3);
                const std::string text = log_label(v);
                const char* color = m == 1 ? "#444" : "#777";
                if (horizontal) {
                    const double y = Y(v);
                    s << "<line x1=\"" << num(ml) << "\" y1=\"" << num(y) << "\" x2=\"" << num(ml + pw) << "\" y2=\""
                      << num(y) << "\" stroke=\"" << stroke << "\"/>\n";
                    if (label)
                        s << "<text x=\"" << num(ml - 6) << "\" y=\"" << num(y + 4) << "\" text-anchor=\"end\" fill=\""
                          << color << "\">" << text << "</text>\n";
                } else {
                    const double x = X(v);
                    s << "<line x1=\"" << num(x) << "\" y1=\"" << num(mt) << "\" x2=\"" << num(x) << "\" y2=\""
                      << num(mt + ph) << "\" stroke=\"" << stroke << "\"/>\n";
                    if (label)
                        s << "<text x=\"" << num(x) << "\" y=\"" << num(mt + ph + 16)
                          << "\" text-anchor=\"middle\" fill=\"" << color << "\">" << text << "</text>\n";
                }
            }
    };
    grid(lx0, lx1, false);
    grid(ly0, ly1, true);
    s << "<rect x=\"" << num(ml) << "\" y=\"" << num(mt) << "\" width=\"" << num(pw) << "\" height=\"" << num(ph)
      << "\" fill=\"none\" stroke=\"#444\"/>\n";
    s << "<text x=\"" << num(ml + pw / 2) << "\" y=\"" << num(mt + ph + 36)
      << "\" text-anchor=\"middle\" fill=\"#222\">arithmetic intensity, FLOP per byte of src + weights + dst</text>\n"
      << "<text transform=\"translate(16 " << num(mt + ph / 2) << ") rotate(-90)\" text-anchor=\"middle\" fill=\"#222\">"
      << "achieved GFLOP/s (" << esc(dt) << ")</text>\n";
    // Ceilings: the solid roof is min(P, B * ai); each ceiling continues dashed past the ridge.
    const double ridge = have_p && have_b ? P / B : NAN;
    std::vector<Box> taken;
    s << "<g clip-path=\"url(#" << clip << ")\" fill=\"none\" stroke-width=\"2\">\n";
    if (have_b) {
        const double xs = std::max(xmin, ymin / B), xe = have_p ? ridge : xmax;
        s << "<line class=\"ceiling memory\" x1=\"" << num(X(xs)) << "\" y1=\"" << num(Y(B * xs)) << "\" x2=\""
          << num(X(xe)) << "\" y2=\"" << num(Y(B * xe)) << "\" stroke=\"#555\"/>\n";
        if (have_p)
            s << "<line x1=\"" << num(X(ridge)) << "\" y1=\"" << num(Y(P)) << "\" x2=\"" << num(X(xmax)) << "\" y2=\""
              << num(Y(B * xmax)) << "\" stroke=\"#bbb\" stroke-dasharray=\"4 4\"/>\n";
    }
    if (have_p) {
        const double xs = have_b ? ridge : xmin;
        s << "<line class=\"ceiling compute\" x1=\"" << num(X(xs)) << "\" y1=\"" << num(Y(P)) << "\" x2=\"" << num(X(xmax))
          << "\" y2=\"" << num(Y(P)) << "\" stroke=\"#555\"/>\n";
        if (have_b)
            s << "<line x1=\"" << num(X(xmin)) << "\" y1=\"" << num(Y(P)) << "\" x2=\"" << num(X(ridge)) << "\" y2=\""
              << num(Y(P)) << "\" stroke=\"#bbb\" stroke-dasharray=\"4 4\"/>\n";
    }
    s << "</g>\n";
    // Points, then names wherever one fits without covering another name or a point.
    for (const auto& p : pts) taken.push_back({X(p.ai) - 5, Y(p.gf) - 5, X(p.ai) + 5, Y(p.gf) + 5});
    for (const auto& p : pts) {
        const double roof = std::min(have_p ? P : INFINITY, have_b ? B * p.ai : INFINITY);
        s << "<circle class=\"point\" data-layer=\"" << esc(display_name(*p.l)) << "\" data-config=\"" << esc(p.l->config)
          << "\" data-ai=\"" << fmt("%.5g", p.ai) << "\" data-gflops=\"" << fmt("%.5g", p.gf) << "\" cx=\""
          << num(X(p.ai)) << "\" cy=\"" << num(Y(p.gf)) << "\" r=\"4.5\" fill=\"" << kPalette[p.color]
          << "\" fill-opacity=\"0.85\" stroke=\"#fff\" stroke-width=\"0.8\"><title>" << esc(display_name(*p.l)) << " ("
          << esc(p.l->config) << "): " << fmt3(p.ai) << " FLOP/B, " << fmt3(p.gf) << " GFLOP/s"
          << (std::isfinite(roof) ? ", " + fmt("%.0f", 100 * p.gf / roof) + "% of the roof" : std::string())
          << "</title></circle>\n";
    }
    // The ceilings' labels where they cover no point: the compute one above or under its line, at
    // the right end or just past the ridge; the memory one along its slope.
    if (have_p) {
        const std::string text = "compute peak " + fmt3(P) + " GFLOP/s";
        const double w = text_w(text, 12), xl = have_b ? X(ridge) + 8 : ml + 8, xc = (xl + ml + pw - 6 - w) / 2;
        const double cands[][2] = {{ml + pw - 6 - w, Y(P) - 6}, {ml + pw - 6 - w, Y(P) + 16}, {xl, Y(P) - 6},
                                   {xl, Y(P) + 16}, {xc, Y(P) - 6}, {xc, Y(P) + 16}};
        for (const auto& c : cands) {
            const Box b{c[0], c[1] - 12, c[0] + w, c[1] + 2};
            if (b.y0 < mt || b.y1 > mt + ph || b.x1 > ml + pw) continue;
            if (std::any_of(taken.begin(), taken.end(), [&](const Box& o) { return o.overlaps(b); })) continue;
            s << "<text class=\"ceiling-label\" x=\"" << num(c[0]) << "\" y=\"" << num(c[1]) << "\" fill=\"#333\">" << text
              << "</text>\n";
            taken.push_back(b);
            break;
        }
    }
    if (have_b) {
        const double ymax = std::pow(10.0, ly1);
        const double xs = std::max(xmin, ymin / B), xe = std::min(have_p ? ridge : xmax, ymax / B);
        if (xe > xs) {
            // Along the visible part of the line, just above it, at the first of a few places
            // where it covers no point; the boxes sample the rotated text for the names after it.
            const double slope = (ph / (ly1 - ly0)) / (pw / (lx1 - lx0));
            const double a = -std::atan(slope), ca = std::cos(a), sa = std::sin(a);
            const std::string text = "memory " + fmt3(B) + " GB/s";
            const double len = text_w(text, 12);
            std::vector<Box> boxes;
            double tx = 0, ty = 0;
            for (double f : {0.2, 0.08, 0.35, 0.5, 0.65, 0.2}) {
                const double xm = std::pow(10.0, std::log10(xs) + f * (std::log10(xe) - std::log10(xs)));
                tx = X(xm) + 6 * sa, ty = Y(B * xm) - 6 * ca;
                boxes.clear();
                for (double t = 0; t <= len; t += 8) {
                    const double bx = tx + t * ca + 6 * sa, by = ty + t * sa - 6 * ca;  // mid-height of the glyphs
                    boxes.push_back({bx - 5, by - 5, bx + 5, by + 5});
                }
                const bool clear = std::none_of(boxes.begin(), boxes.end(), [&](const Box& b) {
                    return std::any_of(taken.begin(), taken.end(), [&](const Box& o) { return o.overlaps(b); });
                });
                if (clear) break;
            }
            taken.insert(taken.end(), boxes.begin(), boxes.end());
            s << "<text class=\"ceiling-label\" transform=\"translate(" << num(tx) << " " << num(ty) << ") rotate("
              << num(a * 180 / M_PI) << ")\" fill=\"#333\">" << text << "</text>\n";
        }
    }
    const Box plot{ml, mt, ml + pw, mt + ph};
    for (const auto& p : pts) {
        const std::string name = clean_utf8(display_name(*p.l));
        const double w = text_w(name, 10), cx = X(p.ai), cy = Y(p.gf);
        struct Cand {
            double x, y;
            const char* anchor;
            Box box;
        };
        const Cand cands[] = {{cx + 7, cy + 3.5, "start", {cx + 7, cy - 5, cx + 7 + w, cy + 5}},
                              {cx - 7, cy + 3.5, "end", {cx - 7 - w, cy - 5, cx - 7, cy + 5}},
                              {cx - w / 2, cy - 8, "start", {cx - w / 2, cy - 17, cx + w / 2, cy - 7}},
                              {cx - w / 2, cy + 15, "start", {cx - w / 2, cy + 6, cx + w / 2, cy + 16}}};
        for (const auto& c : cands) {
            if (c.box.x0 < plot.x0 || c.box.x1 > plot.x1 || c.box.y0 < plot.y0 || c.box.y1 > plot.y1) continue;
            bool clash = false;
            for (const auto& b : taken) {
                const bool own = b.x0 == cx - 5 && b.y0 == cy - 5;
                if (!own && c.box.overlaps(b)) clash = true;
            }
            if (clash) continue;
            s << "<text class=\"point-label\" x=\"" << num(c.x) << "\" y=\"" << num(c.y) << "\" text-anchor=\"" << c.anchor
              << "\" font-size=\"10\" fill=\"#333\">" << esc(name) << "</text>\n";
            taken.push_back(c.box);
            break;
        }
    }
    // Legend: the configurations that have points here, and the ceilings.
    double ly = mt + 8;
    const double lx = ml + pw + 24;
    std::set<std::size_t> shown;
    for (const auto& p : pts) shown.insert(static_cast<std::size_t>(
            std::find(configs.begin(), configs.end(), p.l->config) - configs.begin()));
    for (std::size_t ci : shown) {
        s << "<circle cx=\"" << num(lx + 6) << "\" cy=\"" << num(ly) << "\" r=\"4.5\" fill=\"" << kPalette[ci % 10]
          << "\"/><text x=\"" << num(lx + 16) << "\" y=\"" << num(ly + 4) << "\" fill=\"#222\">" << esc(configs[ci])
          << "</text>\n";
        ly += 18;
    }
    ly += 6;
    s << "<line x1=\"" << num(lx) << "\" y1=\"" << num(ly) << "\" x2=\"" << num(lx + 14) << "\" y2=\"" << num(ly)
      << "\" stroke=\"#555\" stroke-width=\"2\"/><text x=\"" << num(lx + 20) << "\" y=\"" << num(ly + 4)
      << "\" fill=\"#222\">measured roof</text>\n";
    // The peaks here too: the labels on the lines give way to points where the chart is crowded.
    for (const std::string& line : {std::string("compute ") + (have_p ? fmt3(P) + " GFLOP/s" : "n/a"),
                                    std::string("memory ") + (have_b ? fmt3(B) + " GB/s" : "n/a")}) {
        ly += 16;
        s << "<text x=\"" << num(lx + 20) << "\" y=\"" << num(ly + 4) << "\" font-size=\"11\" fill=\"#444\">" << line
          << "</text>\n";
    }
    ly += 18;
    s << "<line x1=\"" << num(lx) << "\" y1=\"" << num(ly) << "\" x2=\"" << num(lx + 14) << "\" y2=\"" << num(ly)
      << "\" stroke=\"#bbb\" stroke-width=\"2\" stroke-dasharray=\"4 4\"/><text x=\"" << num(lx + 20) << "\" y=\""
      << num(ly + 4) << "\" fill=\"#222\">ceiling past the ridge</text>\n";
    for (const char* missing : {have_p ? nullptr : "no compute peak measured", have_b ? nullptr : "no memory peak measured"}) {
        if (!missing) continue;
        ly += 20;
        s << "<text x=\"" << num(lx) << "\" y=\"" << num(ly) << "\" fill=\"#c00\">" << missing << "</text>\n";
    }
    s << "</svg>\n";
    return s.str();
}

std::vector<std::string> configs_of(const ReportData& d) {
    std::vector<std::string> c;
    for (const auto& l : d.layers)
        if (std::find(c.begin(), c.end(), l.config) == c.end()) c.push_back(l.config);
    return c;
}

std::string id_safe(const std::string& s) {
    std::string out;
    for (char c : s) out += std::isalnum(static_cast<unsigned char>(c)) ? c : '-';
    return out;
}

}  // namespace

std::string render_html(const ReportData& d) {
    const std::vector<std::string> configs = configs_of(d);
    std::size_t with_torch = 0;
    for (const auto& l : d.layers) with_torch += std::isfinite(l.torch_ms) ? 1 : 0;
    std::ostringstream h;
    h << "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>convkit bench report: "
      << esc(d.engine) << "</title>\n<style>\n"
      << "body{font-family:sans-serif;margin:1.5em;color:#222;max-width:1400px}\n"
      << "h1{font-size:1.4em;margin-bottom:.2em} h2{font-size:1.15em;margin-top:1.6em} h3{font-size:1em;margin:1.2em 0 .3em}\n"
      << "code{background:#f4f4f4;padding:.1em .3em;word-break:break-all}\n"
      << "dl.peaks{display:grid;grid-template-columns:max-content auto;gap:.2em 1em} dl.peaks dt{font-weight:bold}\n"
      << "dl.peaks dd{margin:0} .note{color:#666;font-size:.9em}\n"
      << ".legend span{display:inline-block;width:1em;height:.8em;margin:0 .3em 0 1em;vertical-align:middle}\n"
      << "table{border-collapse:collapse;font-size:.85em} td,th{border:1px solid #ddd;padding:.15em .5em;text-align:right}\n"
      << "td.l,th.l{text-align:left} tr.bad td{color:#c00} svg{display:block;max-width:100%;height:auto}\n"
      << "</style>\n</head>\n<body>\n<h1>convkit bench report</h1>\n"
      << "<p id=\"engine\">engine " << esc(d.engine) << "</p>\n"
      << "<p>command: <code id=\"command\">" << esc(d.command) << "</code></p>\n"
      << "<p class=\"note\">" << esc(d.date) << (d.host.empty() ? "" : " on " + esc(d.host)) << "</p>\n"
      << "<h2>Measured peaks</h2>\n<dl class=\"peaks\">\n"
      << "<dt>memory bandwidth</dt><dd id=\"peak-memory\" data-gbs=\"" << fmt("%.6g", d.memory.gbs) << "\">"
      << fmt3(d.memory.gbs) << " GB/s <span class=\"note\">(" << esc(d.memory.note) << ")</span></dd>\n";
    for (const auto& p : d.compute)
        h << "<dt>compute " << esc(p.dt) << "</dt><dd class=\"peak-compute\" id=\"peak-compute-" << id_safe(p.dt)
          << "\" data-dt=\"" << esc(p.dt) << "\" data-gflops=\"" << fmt("%.6g", p.gflops) << "\">" << fmt3(p.gflops)
          << " GFLOP/s <span class=\"note\">(" << esc(p.note) << ")</span></dd>\n";
    h << "</dl>\n";
    if (!d.torch_csv.empty())
        h << "<p id=\"torch\">PyTorch times from <code>" << esc(d.torch_csv) << "</code> (" << d.torch_rows
          << " rows with a time): " << with_torch << " of " << d.layers.size() << " layers matched (by name, dir, dt, tag; mb and tf32 when the file has them); "
          << "ratio = PyTorch / convkit, above 1 = convkit faster.</p>\n";

    h << "<h2>Time per layer</h2>\n<p class=\"legend\"><span style=\"background:" << kConvkitColor
      << "\"></span>convkit";
    if (with_torch) h << "<span style=\"background:" << kTorchColor << "\"></span>PyTorch (ratio PyTorch / convkit)";
    h << "</p>\n";
    for (const auto& c : configs) {
        std::vector<const ReportLayer*> rows;
        double ck = 0, ck_matched = 0, pt = 0;
        bool torch = false;
        for (const auto& l : d.layers) {
            if (l.config != c) continue;
            rows.push_back(&l);
            if (timed(l)) ck += l.ms;
            if (std::isfinite(l.torch_ms)) {
                torch = true;
                pt += l.torch_ms;
                if (timed(l)) ck_matched += l.ms;
            }
        }
        h << "<section class=\"config\" data-config=\"" << esc(c) << "\">\n<h3>" << esc(c) << ": " << rows.size()
          << " layers, convkit total " << fmt3(ck) << " ms";
        if (torch)
            h << ", PyTorch " << fmt3(pt) << " ms over the layers it has (" << fmt("%.2f", pt / ck_matched)
              << "\xc3\x97)";
        h << "</h3>\n" << bars_svg(rows, torch) << "</section>\n";
    }

    h << "<h2>Roofline</h2>\n<p class=\"note\">Each point is one layer: its FLOPs over the bytes of src, weights "
         "and dst (each counted once, at the dtype's size), against the GFLOP/s it reached. The roof is min(compute "
         "peak, memory bandwidth &times; intensity), both measured above on this engine; layers whose tensors fit "
         "in cache can sit above the memory line.</p>\n";
    std::vector<std::string> dts;
    for (const auto& l : d.layers)
        if (std::find(dts.begin(), dts.end(), l.dt) == dts.end()) dts.push_back(l.dt);
    for (const auto& dt : dts) {
        const std::string svg = roofline_svg(d, dt, configs);
        if (svg.empty()) continue;
        h << "<h3>" << esc(dt) << "</h3>\n" << svg;
    }

    h << "<h2>All layers</h2>\n<table id=\"layers\">\n<tr><th class=\"l\">configuration</th><th class=\"l\">layer</th>"
         "<th class=\"l\">descriptor</th><th>mb</th><th class=\"l\">status</th><th>convkit ms</th><th>PyTorch ms</th>"
         "<th>PyTorch / convkit</th><th>GFLOP/s</th><th>FLOP/byte</th><th>% of roof</th></tr>\n";
    for (const auto& l : d.layers) {
        const ComputePeak* cp = peak_for(d, l.dt);
        const double ai = l.bytes > 0 ? l.flops / l.bytes : NAN, gf = timed(l) ? gflops_of(l) : NAN;
        const double roof = std::min(cp && std::isfinite(cp->gflops) ? cp->gflops : INFINITY,
                                     std::isfinite(d.memory.gbs) ? d.memory.gbs * ai : INFINITY);
        h << "<tr" << (l.status == "ok" ? "" : " class=\"bad\"") << "><td class=\"l\">" << esc(l.config)
          << "</td><td class=\"l\">" << esc(l.name) << "</td><td class=\"l\">" << esc(l.descriptor) << "</td><td>" << l.mb
          << "</td><td class=\"l\">" << esc(l.status) << "</td><td>" << (timed(l) ? fmt("%.4f", l.ms) : "")
          << "</td><td>" << (std::isfinite(l.torch_ms) ? fmt("%.4f", l.torch_ms) : "") << "</td><td>"
          << (std::isfinite(l.torch_ms) && timed(l) ? fmt("%.2f", l.torch_ms / l.ms) : "") << "</td><td>"
          << (std::isfinite(gf) ? fmt("%.1f", gf) : "") << "</td><td>" << fmt3(ai) << "</td><td>"
          << (std::isfinite(gf) && std::isfinite(roof) ? fmt("%.0f", 100 * gf / roof) : "") << "</td></tr>\n";
    }
    h << "</table>\n</body>\n</html>\n";
    return h.str();
}

// ---- JSON for tools/bench_report.py ----

namespace {

std::string jstr(const std::string& raw) {
    std::string out = "\"";
    for (char c : clean_utf8(raw)) {
        if (c == '"' || c == '\\') {
            out += '\\';
            out += c;
        } else if (static_cast<unsigned char>(c) < 0x20) {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\u%04x", c);
            out += buf;
        } else {
            out += c;
        }
    }
    return out + "\"";
}

std::string jnum(double v) { return std::isfinite(v) ? fmt("%.9g", v) : "null"; }

}  // namespace

std::string report_json(const ReportData& d) {
    std::ostringstream j;
    j << "{\"engine\": " << jstr(d.engine) << ", \"command\": " << jstr(d.command) << ", \"host\": " << jstr(d.host)
      << ", \"date\": " << jstr(d.date) << ", \"torch_csv\": " << jstr(d.torch_csv) << ",\n \"memory\": {\"gbs\": "
      << jnum(d.memory.gbs) << ", \"note\": " << jstr(d.memory.note) << "},\n \"compute\": [";
    for (std::size_t i = 0; i < d.compute.size(); ++i)
        j << (i ? ", " : "") << "{\"dt\": " << jstr(d.compute[i].dt) << ", \"gflops\": " << jnum(d.compute[i].gflops)
          << ", \"note\": " << jstr(d.compute[i].note) << "}";
    j << "],\n \"layers\": [";
    for (std::size_t i = 0; i < d.layers.size(); ++i) {
        const ReportLayer& l = d.layers[i];
        j << (i ? ",\n  " : "\n  ") << "{\"config\": " << jstr(l.config) << ", \"name\": " << jstr(display_name(l))
          << ", \"descriptor\": " << jstr(l.descriptor) << ", \"dir\": " << jstr(l.dir) << ", \"dt\": " << jstr(l.dt)
          << ", \"tag\": " << jstr(l.tag) << ", \"mb\": " << l.mb << ", \"status\": " << jstr(l.status)
          << ", \"ms\": " << jnum(timed(l) ? l.ms : NAN) << ", \"flops\": " << jnum(l.flops) << ", \"bytes\": "
          << jnum(l.bytes) << ", \"torch_ms\": " << jnum(l.torch_ms) << "}";
    }
    j << "]}\n";
    return j.str();
}

// ---- writing FILE ----

namespace {

// The name of the temporary file while it exists under that name, for the signal handler: a run
// interrupted in that window removes it rather than leave it beside FILE.
char g_temp_name[PATH_MAX + 64];
volatile sig_atomic_t g_temp_live = 0;
const int kCleanupSignals[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGXFSZ};

extern "C" void remove_temp_and_reraise(int sig) {
    if (g_temp_live) ::unlink(g_temp_name);
    ::signal(sig, SIG_DFL);
    ::raise(sig);
}

// Handlers installed, and the signals blocked while the temporary's name and g_temp_live change
// together.
class TempGuard {
public:
    TempGuard() {
        struct sigaction sa {};
        sa.sa_handler = remove_temp_and_reraise;
        sigemptyset(&sa.sa_mask);
        for (std::size_t i = 0; i < std::size(kCleanupSignals); ++i) {
            // A signal the caller ignores (nohup's SIGHUP) stays ignored.
            ::sigaction(kCleanupSignals[i], nullptr, &old_[i]);
            installed_[i] = old_[i].sa_handler != SIG_IGN;
            if (installed_[i]) ::sigaction(kCleanupSignals[i], &sa, nullptr);
        }
        sigemptyset(&set_);
        for (int s : kCleanupSignals) sigaddset(&set_, s);
    }
    ~TempGuard() {
        block();
        if (g_temp_live) ::unlink(g_temp_name);
        g_temp_live = 0;
        unblock();
        for (std::size_t i = 0; i < std::size(kCleanupSignals); ++i)
            if (installed_[i]) ::sigaction(kCleanupSignals[i], &old_[i], nullptr);
    }
    void block() { ::sigprocmask(SIG_BLOCK, &set_, &saved_); }
    void unblock() { ::sigprocmask(SIG_SETMASK, &saved_, nullptr); }

private:
    struct sigaction old_[std::size(kCleanupSignals)];
    bool installed_[std::size(kCleanupSignals)] = {};
    sigset_t set_, saved_;
};

void write_all(int fd, const std::string& bytes, const std::string& what) {
    std::size_t done = 0;
    while (done < bytes.size()) {
        const ssize_t w = ::write(fd, bytes.data() + done, bytes.size() - done);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) fail(what + ": write error: " + errno_text(errno));
        done += static_cast<std::size_t>(w);
    }
    if (::fsync(fd) != 0) fail(what + ": fsync failed: " + errno_text(errno));
}

bool no_tmpfile_support(int e) { return e == EOPNOTSUPP || e == EISDIR || e == EINVAL; }

// FILE replaced in one rename. The new contents are written to an unnamed file (O_TMPFILE) that
// gets a name only once complete, or, where the file system has no unnamed files, to a named one.
void write_atomically(const std::string& path, const std::string& bytes) {
    const std::string what = "--report '" + path + "'";
    static std::atomic<unsigned long> counter{0};
    const std::string temp = path + ".tmp." + std::to_string(static_cast<long>(::getpid())) + "." +
                             std::to_string(counter.fetch_add(1));
    if (temp.size() >= sizeof g_temp_name) fail(what + ": the file name is too long");
    TempGuard guard;
    bool named = true;  // still to be written under the temporary name
    int fd = ::open(parent_dir(path).c_str(), O_TMPFILE | O_WRONLY | O_CLOEXEC, 0666);
    if (fd >= 0) {
        try {
            write_all(fd, bytes, what);
        } catch (...) {
            ::close(fd);
            throw;
        }
        const std::string proc = "/proc/self/fd/" + std::to_string(fd);
        guard.block();
        std::strcpy(g_temp_name, temp.c_str());
        const bool linked = ::linkat(AT_FDCWD, proc.c_str(), AT_FDCWD, temp.c_str(), AT_SYMLINK_FOLLOW) == 0;
        g_temp_live = linked;
        guard.unblock();
        ::close(fd);
        named = !linked;  // no /proc to link through: write it again under a name
    } else if (!no_tmpfile_support(errno)) {
        fail(what + ": cannot create a file in '" + parent_dir(path) + "': " + errno_text(errno));
    }
    if (named) {
        guard.block();
        std::strcpy(g_temp_name, temp.c_str());
        fd = ::open(temp.c_str(), O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0666);
        const int err = errno;
        g_temp_live = fd >= 0;
        guard.unblock();
        if (fd < 0) fail(what + ": cannot create the temporary file '" + temp + "': " + errno_text(err));
        try {
            write_all(fd, bytes, what);
        } catch (...) {
            ::close(fd);
            throw;
        }
        if (::close(fd) != 0) fail(what + ": closing '" + temp + "' failed: " + errno_text(errno));
    }
    guard.block();
    const bool renamed = ::rename(temp.c_str(), path.c_str()) == 0;
    const int err = errno;
    if (renamed) g_temp_live = 0;
    guard.unblock();
    if (!renamed) fail(what + ": renaming the temporary file '" + temp + "' over it failed: " + errno_text(err));
}

// Whether new files can be made in FILE's directory, without leaving one there.
void check_writable_dir(const std::string& path) {
    const std::string what = "--report '" + path + "'";
    const std::string dir = parent_dir(path);
    struct stat st {};
    if (::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) fail(what + " is a directory");
    if (::stat(dir.c_str(), &st) != 0) fail(what + ": directory '" + dir + "': " + errno_text(errno));
    if (!S_ISDIR(st.st_mode)) fail(what + ": '" + dir + "' is not a directory");
    int fd = ::open(dir.c_str(), O_TMPFILE | O_WRONLY | O_CLOEXEC, 0666);
    if (fd >= 0) {
        ::close(fd);
        return;
    }
    if (!no_tmpfile_support(errno)) fail(what + ": cannot create a file in '" + dir + "': " + errno_text(errno));
    const std::string probe = path + ".probe." + std::to_string(static_cast<long>(::getpid()));
    if (probe.size() >= sizeof g_temp_name) fail(what + ": the file name is too long");
    TempGuard guard;
    guard.block();
    std::strcpy(g_temp_name, probe.c_str());
    fd = ::open(probe.c_str(), O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0666);
    const int err = errno;
    g_temp_live = fd >= 0;
    guard.unblock();
    if (fd < 0) fail(what + ": cannot create a file in '" + dir + "': " + errno_text(err));
    ::close(fd);
}

// ---- running tools/bench_report.py ----

struct ChildResult {
    int status = -1;  // waitpid status
    std::string out, err;
};

std::string slurp(FILE* f) {
    std::string s;
    std::rewind(f);
    char buf[65536];
    std::size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) s.append(buf, n);
    return s;
}

// The child's stdin, stdout and stderr are unnamed temporary files, so nothing needs draining
// while it runs and an interrupted run leaves no file behind. Throws if it cannot be started.
ChildResult run_child(const std::vector<std::string>& argv, const std::string& input) {
    struct Closer {
        void operator()(FILE* f) const { std::fclose(f); }
    };
    std::unique_ptr<FILE, Closer> in(std::tmpfile()), out(std::tmpfile()), err(std::tmpfile());
    if (!in || !out || !err) fail(std::string("--report: cannot create a temporary file for python: ") + errno_text(errno));
    if (!input.empty() && std::fwrite(input.data(), 1, input.size(), in.get()) != input.size())
        fail(std::string("--report: cannot write python's input: ") + errno_text(errno));
    std::fflush(in.get());
    std::rewind(in.get());
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, ::fileno(in.get()), 0);
    posix_spawn_file_actions_adddup2(&fa, ::fileno(out.get()), 1);
    posix_spawn_file_actions_adddup2(&fa, ::fileno(err.get()), 2);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    pid_t pid = 0;
    const int rc = posix_spawnp(&pid, args[0], &fa, nullptr, args.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) throw std::system_error(rc, std::generic_category(), "cannot run '" + argv[0] + "'");
    ChildResult r;
    while (::waitpid(pid, &r.status, 0) < 0) {
        if (errno != EINTR) throw std::system_error(errno, std::generic_category(), "waitpid");
    }
    r.out = slurp(out.get());
    r.err = slurp(err.get());
    return r;
}

std::string last_line(const std::string& s) {
    std::string t = s;
    while (!t.empty() && (t.back() == '\n' || t.back() == '\r' || t.back() == ' ')) t.pop_back();
    const auto nl = t.find_last_of('\n');
    return nl == std::string::npos ? t : t.substr(nl + 1);
}

std::string exit_text(int status) {
    if (WIFEXITED(status)) return "exit status " + std::to_string(WEXITSTATUS(status));
    if (WIFSIGNALED(status)) return std::string("killed by signal ") + strsignal(WTERMSIG(status));
    return "status " + std::to_string(status);
}

bool is_file(const std::string& p) {
    struct stat st {};
    return ::stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

std::string exe_dir() {
    char buf[PATH_MAX];
    const ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
    if (n <= 0) return "";
    buf[n] = '\0';
    return parent_dir(buf);
}

// The installed copy (cmake --install puts it under DATADIR/convkit), else the source tree's.
std::string find_script() {
    if (const char* env = std::getenv("CONVKIT_REPORT_SCRIPT"); env && *env) {
        if (!is_file(env)) fail(std::string("CONVKIT_REPORT_SCRIPT='") + env + "' is not a file (it names the " +
                                "bench_report.py that draws --report=FILE.png)");
        return env;
    }
#ifndef CONVKIT_REPORT_SCRIPT_REL
#define CONVKIT_REPORT_SCRIPT_REL "../share/convkit/bench_report.py"
#endif
#ifdef CONVKIT_REPORT_SCRIPT_SOURCE
    const std::string source = CONVKIT_REPORT_SCRIPT_SOURCE;
#else
    // The build passes sources by absolute path, so this file's directory is tools/.
    const std::string source = parent_dir(__FILE__) + "/bench_report.py";
#endif
    std::vector<std::string> tried;
    const std::string dir = exe_dir();
    if (!dir.empty()) tried.push_back(dir + "/" + CONVKIT_REPORT_SCRIPT_REL);
    tried.push_back(source);
    for (const auto& p : tried)
        if (is_file(p)) return p;
    std::string list;
    for (const auto& p : tried) list += (list.empty() ? "" : ", ") + p;
    fail("--report=FILE.png is drawn by bench_report.py, which is not at " + list +
         " (set CONVKIT_REPORT_SCRIPT=PATH, or write --report=FILE.html, which needs no Python)");
}

}  // namespace

ReportWriter::ReportWriter(const std::string& path) : path_(path) {
    if (path.empty()) fail("--report: empty file name (expected FILE.html or FILE.png)");
    const auto dot = path.find_last_of('.');
    const auto slash = path.find_last_of('/');
    const std::string ext = dot == std::string::npos || (slash != std::string::npos && dot < slash) ? "" : lower(path.substr(dot));
    if (ext == ".png") png_ = true;
    else if (ext != ".html")
        fail("--report '" + path + "': the extension " + (ext.empty() ? std::string("is missing") : "'" + ext + "' is not supported") +
             " (FILE.html: a self-contained page, FILE.png: an image drawn with matplotlib)");
    check_writable_dir(path);
    if (!png_) return;
    script_ = find_script();
    // CONVKIT_PYTHON picks the interpreter; otherwise python3 on PATH, then Debian's, which has
    // python3-matplotlib where PATH's (a virtualenv, pyenv) may not.
    std::vector<std::string> pythons;
    if (const char* env = std::getenv("CONVKIT_PYTHON"); env && *env) pythons = {env};
    else pythons = {"python3", "/usr/bin/python3"};
    std::string why;
    for (const auto& py : pythons) {
        try {
            ChildResult r = run_child({py, script_, "--check"}, "");
            if (WIFEXITED(r.status) && WEXITSTATUS(r.status) == 0) {
                python_ = py;
                return;
            }
            const std::string msg = last_line(r.err);
            why += "; '" + py + "': " + (msg.empty() ? exit_text(r.status) : msg);
        } catch (const std::system_error& e) {
            why += "; '" + py + "': " + e.what();
        }
    }
    fail("--report '" + path + "' needs python3 with matplotlib (Debian: python3-matplotlib) to run " + script_ +
         why + (std::getenv("CONVKIT_PYTHON") ? "" : " (CONVKIT_PYTHON=PATH picks the interpreter)"));
}

void ReportWriter::write(const ReportData& data) const {
    std::string bytes;
    if (!png_) {
        bytes = render_html(data);
    } else {
        ChildResult r;
        try {
            r = run_child({python_, script_}, report_json(data));
        } catch (const std::system_error& e) {
            throw Error(ErrorKind::backend, "--report '" + path_ + "': " + e.what());
        }
        const std::string what = "--report '" + path_ + "': " + python_ + " " + script_;
        if (!WIFEXITED(r.status) || WEXITSTATUS(r.status) != 0) {
            const std::string msg = last_line(r.err);
            throw Error(ErrorKind::backend, what + " failed (" + exit_text(r.status) + ")" + (msg.empty() ? "" : ": " + msg));
        }
        static const char kPngMagic[] = "\x89PNG\r\n\x1a\n";
        if (r.out.size() < 8 || r.out.compare(0, 8, kPngMagic, 8) != 0)
            throw Error(ErrorKind::backend, what + " wrote " + std::to_string(r.out.size()) +
                                                " bytes that are not a PNG (no PNG signature)");
        bytes = std::move(r.out);
    }
    write_atomically(path_, bytes);
}

}  // namespace convkit::tools
