// Parser for benchdnn convolution and deconvolution problem descriptors and batch files (see
// desc.hpp).
//
// Reference: oneDNN tests/benchdnn/conv/conv_aux.cpp (str2desc, operator<<),
// tests/benchdnn/deconv/deconv_aux.cpp (its str2desc and desc_t::init_pad_r),
// tests/benchdnn/dnnl_common.cpp (sanitize_desc, print_dhw) and src/common/convolution.cpp
// (conv_desc_init). Rules taken from there:
//  - entries may come in any order; one '_' may follow any entry (so not leading, not
//    doubled); `n` starts the name, which runs to the end of the descriptor;
//  - defaults: g 1, mb 2, stride 1, pad 0 (unless derived), dilation 0 (0-based);
//  - a spatial dimension (d, h or w) exists when any of its i/o/k/dilation entries is
//    non-zero, its stride is not 1 or its pad is positive; an existing dimension needs its
//    input size and kernel size;
//  - no output size: out = (in - ext + 2 * pad) / stride + 1 with C++ truncating division
//    (ext = (k - 1) * (dilation + 1) + 1), which must be >= 1;
//  - output size but no pad: pad = ((out - 1) * stride - in + ext) / 2, truncating;
//  - ndims is 3 if d exists, else 2 if h exists, else 1 if w exists; in 3D the h and w
//    dimensions must both exist or both be absent, and if absent they copy every d value;
//    in 2D an absent w copies every h value (a partially given w is not completed from h);
//  - padding_r = (out - 1) * stride - in + ext - padding_l in every case (benchdnn's init_pad_r),
//    and oneDNN accepts padding_l >= 0 and padding_r > -stride.
//  - deconv: the same syntax, defaults and copies, with in and out swapped in the formulas: no
//    output size: out = (in - 1) * stride + ext - 2 * pad; output size but no pad:
//    pad = ((in - 1) * stride - out + ext) / 2, truncating; padding_r = (in - 1) * stride - out
//    + ext - padding_l.
// Deliberate differences, each rejecting input benchdnn would take:
//  - a repeated entry is an error (benchdnn keeps the last one silently);
//  - an explicit 0 for g, mb, ic, oc, an input, output or kernel size, or a stride is an
//    error (benchdnn treats most of these as "not given", and allows mb0);
//  - numbers are plain decimal digits: no '+', no spaces, no int64 overflow (benchdnn uses
//    strtol, which clamps);
//  - an entry that the copy from h (or d) would overwrite with a different value is an error
//    (benchdnn turns `kh3sh2sw1` into sw2 without a word);
//  - padding_r <= -stride is an error here already rather than at primitive creation;
//  - a name may not contain '"' (benchdnn keeps the quotes as part of the name; here they
//    are delimiters, so str() could not write such a name back);
//  - ic and oc must be divisible by g (benchdnn finds that out later, in the library);
//  - deconv: a negative padding_r (output rows past the last window: PyTorch's output_padding)
//    must be smaller in magnitude than the stride or the dilation (PyTorch's and convkit's
//    limit; oneDNN would take any).
#include "desc.hpp"

#include <convkit/error.hpp>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>

namespace convkit::tools {
namespace {

constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
constexpr int64_t kMin = std::numeric_limits<int64_t>::min();

// Keys 0..3 are g, mb, ic, oc; then six per spatial dimension (d, h, w), in the kind order
// below, so that key = 4 + 6 * dim + kind.
enum Kind { kIn, kOut, kKer, kStr, kPad, kDil, kNumKinds };
constexpr int kG = 0, kMb = 1, kIc = 2, kOc = 3, kNumKeys = 4 + 3 * kNumKinds;
constexpr const char* kDimNames = "dhw";
constexpr const char* kKindNames = "iokspd";

std::string key_name(int key) {
    static const char* const top[] = {"g", "mb", "ic", "oc"};
    if (key < 4) return top[key];
    const int dim = (key - 4) / kNumKinds, kind = (key - 4) % kNumKinds;
    return std::string(1, kKindNames[kind]) + kDimNames[dim];
}

int spatial_key(int dim, int kind) { return 4 + kNumKinds * dim + kind; }

struct Entry {
    bool given = false;
    int64_t value = 0;
};

struct Dim {
    int64_t in = 1, out = 1, k = 1, s = 1, p = 0, d = 0;
};

[[noreturn]] void fail(const std::string& text, const std::string& what) {
    throw Error(ErrorKind::invalid_argument, "conv descriptor '" + text + "': " + what);
}

// All sizes are user-controlled int64 values, so derived sizes are computed with checks
// instead of risking signed overflow.
int64_t add(int64_t a, int64_t b, const std::string& text) {
    if ((b > 0 && a > kMax - b) || (b < 0 && a < kMin - b))
        fail(text, "sizes too large: deriving output size or padding overflows int64");
    return a + b;
}
int64_t mul(int64_t a, int64_t b, const std::string& text) {  // a, b >= 0
    if (a != 0 && b > kMax / a)
        fail(text, "sizes too large: deriving output size or padding overflows int64");
    return a * b;
}

bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

// The text an error should point at: a letters-then-number entry, or a single character.
std::string token_at(const std::string& text, size_t pos) {
    size_t end = pos;
    while (end < text.size() && is_alpha(text[end])) ++end;
    if (end == pos) return text.substr(pos, 1);
    if (end < text.size() && text[end] == '-') ++end;
    while (end < text.size() && is_digit(text[end])) ++end;
    return text.substr(pos, end - pos);
}

int match_key(const std::string& text, size_t pos) {
    for (int key = 0; key < kNumKeys; ++key) {
        const std::string name = key_name(key);
        if (text.compare(pos, name.size(), name) == 0) return key;
    }
    return -1;
}

std::string parse_name(const std::string& text, size_t pos) {
    if (pos < text.size() && text[pos] == '"') {
        const size_t close = text.find('"', pos + 1);
        if (close == std::string::npos) fail(text, "unterminated quoted name");
        if (close + 1 != text.size())
            fail(text, "unexpected text '" + text.substr(close + 1) + "' after the quoted name");
        return text.substr(pos + 1, close - pos - 1);
    }
    std::string name = text.substr(pos);
    if (name.find('"') != std::string::npos)
        fail(text, "name '" + name + "' contains '\"' (quote the whole name: n\"...\")");
    return name;
}

std::string entry_text(int key, int64_t value) { return key_name(key) + std::to_string(value); }

// ext = (k - 1) * (d + 1) + 1: the span of input one dilated kernel window covers.
int64_t extent(const Dim& r, const std::string& text) {
    return add(mul(r.k - 1, add(r.d, 1, text), text), 1, text);
}

// Fills one existing spatial dimension from its entries, deriving out or pad like benchdnn's
// conv or deconv driver.
Dim derive_dim(const Entry* e, int dim, const std::string& text, DescKind desc_kind) {
    const bool deconv = desc_kind == DescKind::deconv;
    const char dn = kDimNames[dim];
    const std::string i_name = std::string("i") + dn, k_name = std::string("k") + dn;
    for (int kind : {kIn, kKer}) {
        if (!e[kind].given)
            fail(text, "missing " + (kind == kIn ? i_name : k_name) + ": the " + dn +
                               " dimension is used, so both " + i_name + " and " + k_name +
                               " are required");
    }
    Dim r;
    r.in = e[kIn].value;
    r.k = e[kKer].value;
    if (e[kStr].given) r.s = e[kStr].value;
    if (e[kDil].given) r.d = e[kDil].value;
    const int64_t ext = extent(r, text);
    const std::string suffix = std::string(1, dn);
    if (e[kOut].given) {
        r.out = e[kOut].value;
        if (e[kPad].given) {
            r.p = e[kPad].value;
        } else {
            // The strided side is the output for conv and the input for deconv.
            const int64_t strided = deconv ? r.in : r.out, plain = deconv ? r.out : r.in;
            r.p = add(add(mul(strided - 1, r.s, text), -plain, text), ext, text) / 2;
            if (r.p < 0)
                fail(text, "p" + suffix + " derived from o" + suffix + " would be negative (" +
                                   std::to_string(r.p) + "): o" + suffix + " " +
                                   std::to_string(r.out) + " is too " + (deconv ? "large" : "small") +
                                   " for i" + suffix + " " + std::to_string(r.in) +
                                   ", kernel extent " + std::to_string(ext) + ", s" + suffix + " " +
                                   std::to_string(r.s));
        }
    } else if (deconv) {
        if (e[kPad].given) r.p = e[kPad].value;
        r.out = add(add(mul(r.in - 1, r.s, text), ext, text), -mul(2, r.p, text), text);
        if (r.out < 1)
            fail(text, "o" + suffix + " would be " + std::to_string(r.out) + " = (i" + suffix + " " +
                               std::to_string(r.in) + " - 1) * s" + suffix + " " + std::to_string(r.s) +
                               " + kernel extent " + std::to_string(ext) + " - 2 * p" + suffix + " " +
                               std::to_string(r.p) + ": the padding removes more than the deconvolution produces");
    } else {
        if (e[kPad].given) r.p = e[kPad].value;
        const int64_t span = add(r.in - ext, mul(2, r.p, text), text);
        r.out = add(span / r.s, 1, text);
        if (r.out < 1)
            fail(text, "o" + suffix + " would be " + std::to_string(r.out) +
                               ": kernel extent " + std::to_string(ext) + " does not fit in i" +
                               suffix + " " + std::to_string(r.in) + " with p" + suffix + " " +
                               std::to_string(r.p) + " on each side");
    }
    return r;
}

// An absent dimension takes all values of `src`; an entry the user did give for it (only a
// stride of 1, pad 0 or dilation 0 can be given without making the dimension exist) must
// not be overwritten with something else.
void copy_dim(const Entry* e, int dim, const Dim& src, int src_dim, const std::string& text) {
    const int64_t src_vals[kNumKinds] = {src.in, src.out, src.k, src.s, src.p, src.d};
    for (int kind : {kStr, kPad, kDil}) {
        if (e[kind].given && e[kind].value != src_vals[kind]) {
            fail(text, entry_text(spatial_key(dim, kind), e[kind].value) + " conflicts with " +
                               entry_text(spatial_key(src_dim, kind), src_vals[kind]) +
                               ": without i" + kDimNames[dim] + "/k" + kDimNames[dim] + " the " +
                               kDimNames[dim] + " dimension copies all values from " +
                               kDimNames[src_dim]);
        }
    }
}

bool dim_used(const Entry* e) {
    return e[kIn].given || e[kOut].given || e[kKer].given || (e[kDil].given && e[kDil].value > 0) ||
           (e[kStr].given && e[kStr].value != 1) || (e[kPad].given && e[kPad].value > 0);
}

ConvDesc parse_desc(const std::string& text, DescKind kind) {
    if (text.empty()) fail(text, "empty descriptor");

    Entry e[kNumKeys];
    std::string name;
    bool after_entry = false;  // '_' is only allowed right after an entry
    size_t pos = 0;
    while (pos < text.size()) {
        const char c = text[pos];
        if (c == '_') {
            if (!after_entry)
                fail(text, pos == 0 ? "leading '_'" : "'_' at position " + std::to_string(pos) +
                                                          " does not follow an entry");
            after_entry = false;
            ++pos;
            continue;
        }
        if (c == 'n') {
            name = parse_name(text, pos + 1);
            break;
        }
        const int key = match_key(text, pos);
        if (key < 0)
            fail(text, "unrecognized entry '" + token_at(text, pos) +
                               "' (expected g, mb, ic, oc, i/o/k/s/p/d + d/h/w, or n\"name\")");
        const std::string kname = key_name(key);
        const size_t after_key = pos + kname.size();
        size_t p = after_key;
        const bool negative = p < text.size() && text[p] == '-';
        if (negative) ++p;
        const size_t digits = p;
        uint64_t magnitude = 0;
        bool overflow = false;
        for (; p < text.size() && is_digit(text[p]); ++p) {
            const uint64_t digit = static_cast<uint64_t>(text[p] - '0');
            if (magnitude > (static_cast<uint64_t>(kMax) - digit) / 10) overflow = true;
            if (!overflow) magnitude = magnitude * 10 + digit;
        }
        const std::string token = text.substr(pos, p - pos);
        if (p == digits)
            fail(text, "'" + kname + "' must be followed by a number, got " +
                               (after_key < text.size() ? "'" + text.substr(after_key, 8) + "'"
                                                         : std::string("the end")));
        if (overflow) fail(text, "value of '" + token + "' does not fit in int64");
        if (e[key].given)
            fail(text, "duplicate entry '" + token + "' (already given as '" +
                               entry_text(key, e[key].value) + "')");
        const int64_t value = negative ? -static_cast<int64_t>(magnitude) : static_cast<int64_t>(magnitude);
        const bool pad_or_dil = key >= 4 && ((key - 4) % kNumKinds == kPad || (key - 4) % kNumKinds == kDil);
        const int64_t min_value = pad_or_dil ? 0 : 1;
        if (value < min_value)
            fail(text, kname + " must be >= " + std::to_string(min_value) + " (got " +
                               std::to_string(value) + ")");
        e[key] = {true, value};
        after_entry = true;
        pos = p;
    }

    ConvDesc d;
    d.kind = kind;
    d.name = name;
    if (!e[kIc].given) fail(text, "missing ic");
    if (!e[kOc].given) fail(text, "missing oc");
    d.ic = e[kIc].value;
    d.oc = e[kOc].value;
    if (e[kG].given) d.g = e[kG].value;
    if (e[kMb].given) d.mb = e[kMb].value;
    if (d.ic % d.g != 0)
        fail(text, "ic " + std::to_string(d.ic) + " is not divisible by g " + std::to_string(d.g));
    if (d.oc % d.g != 0)
        fail(text, "oc " + std::to_string(d.oc) + " is not divisible by g " + std::to_string(d.g));

    const Entry* dim_entries[3] = {&e[spatial_key(0, 0)], &e[spatial_key(1, 0)], &e[spatial_key(2, 0)]};
    bool used[3];
    Dim dims[3];
    for (int x = 0; x < 3; ++x) {
        used[x] = dim_used(dim_entries[x]);
        if (used[x]) dims[x] = derive_dim(dim_entries[x], x, text, kind);
    }
    if (used[0]) {
        d.ndims = 3;
        if (!used[1] && !used[2]) {
            copy_dim(dim_entries[1], 1, dims[0], 0, text);
            copy_dim(dim_entries[2], 2, dims[0], 0, text);
            dims[1] = dims[2] = dims[0];
        } else if (used[1] != used[2]) {
            fail(text, std::string("3D descriptor gives ") + (used[1] ? "h" : "w") +
                               " entries but no " + (used[1] ? "w" : "h") +
                               " entries: give both, or neither to copy them from d");
        }
    } else if (used[1]) {
        d.ndims = 2;
        if (!used[2]) {
            copy_dim(dim_entries[2], 2, dims[1], 1, text);
            dims[2] = dims[1];
        }
    } else if (used[2]) {
        d.ndims = 1;
    } else {
        fail(text, "no spatial size: give iw and kw (1D), ih and kh (2D) or id and kd (3D)");
    }

    for (int x = 3 - d.ndims; x < 3; ++x) {
        const Dim& r = dims[x];
        const bool deconv = kind == DescKind::deconv;
        const int64_t strided = deconv ? r.in : r.out, plain = deconv ? r.out : r.in;
        const int64_t padding_r =
                add(add(add(mul(strided - 1, r.s, text), -plain, text), extent(r, text), text), -r.p, text);
        if (deconv && padding_r < 0 && -padding_r >= r.s && -padding_r >= r.d + 1) {
            const std::string dn(1, kDimNames[x]);
            fail(text, "o" + dn + " " + std::to_string(r.out) + " is too large for i" + dn + " " +
                               std::to_string(r.in) + ", k" + dn + " " + std::to_string(r.k) +
                               ", s" + dn + " " + std::to_string(r.s) + ", p" + dn + " " +
                               std::to_string(r.p) + ", d" + dn + " " + std::to_string(r.d) +
                               ": the derived end padding would be " + std::to_string(padding_r) +
                               ", i.e. output_padding " + std::to_string(-padding_r) +
                               ", which must be smaller than s" + dn + " or the dilation (d" + dn + " + 1 = " +
                               std::to_string(r.d + 1) + ")");
        }
        // oneDNN's conv_desc_init requires padding_r + stride > 0; below that the output is so
        // small that whole strides of input are never read, which is almost always a typo.
        if (!deconv && padding_r <= -r.s) {
            const std::string dn(1, kDimNames[x]);
            fail(text, "o" + dn + " " + std::to_string(r.out) + " is too small for i" + dn + " " +
                               std::to_string(r.in) + ", k" + dn + " " + std::to_string(r.k) +
                               ", s" + dn + " " + std::to_string(r.s) + ", p" + dn + " " +
                               std::to_string(r.p) + ", d" + dn + " " + std::to_string(r.d) +
                               ": the derived end padding would be " + std::to_string(padding_r) +
                               " (must be > -s" + dn + ")");
        }
        d.in[x] = r.in;
        d.out[x] = r.out;
        d.k[x] = r.k;
        d.stride[x] = r.s;
        d.padding_l[x] = r.p;
        d.padding_r[x] = padding_r;
        d.dilation[x] = r.d + 1;  // benchdnn's d is 0-based; convkit's dilation is 1-based
    }
    return d;
}

}  // namespace

ConvDesc parse_conv_desc(const std::string& text, DescKind kind) {
    if (kind == DescKind::conv) return parse_desc(text, kind);
    // Every message is built as "conv descriptor '...': ..."; a deconv one says so.
    try {
        return parse_desc(text, kind);
    } catch (const Error& e) {
        throw Error(e.kind(), "de" + std::string(e.what()));
    }
}

std::string ConvDesc::str() const {
    const int nd = ndims < 1 ? 1 : ndims > 3 ? 3 : ndims;
    const int first = 3 - nd;
    auto same = [this](int a, int b) {
        return in[a] == in[b] && out[a] == out[b] && k[a] == k[b] && stride[a] == stride[b] &&
               padding_l[a] == padding_l[b] && dilation[a] == dilation[b];
    };
    // Like benchdnn's print_dhw: only write what a re-parse would not copy from d or h.
    bool print[3] = {false, false, false};
    print[first] = true;
    if (nd == 3 && !(same(0, 1) && same(1, 2))) print[1] = print[2] = true;
    if (nd == 2 && !same(1, 2)) print[2] = true;

    std::ostringstream s;
    auto spatial = [&](char letter, const std::array<int64_t, 3>& v) {
        for (int x = 0; x < 3; ++x)
            if (print[x]) s << letter << kDimNames[x] << v[x];
    };
    bool strided = false, dilated = false;
    for (int x = first; x < 3; ++x) {
        strided = strided || stride[x] != 1;
        dilated = dilated || dilation[x] != 1;
    }
    if (g != 1) s << "g" << g;
    if (mb != 2) s << "mb" << mb;
    s << "ic" << ic;
    spatial('i', in);
    s << "oc" << oc;
    spatial('o', out);
    spatial('k', k);
    if (strided) spatial('s', stride);
    spatial('p', padding_l);
    if (dilated) spatial('d', {dilation[0] - 1, dilation[1] - 1, dilation[2] - 1});
    if (!name.empty()) s << "n\"" << name << "\"";
    return s.str();
}

double ConvDesc::flops() const {
    // Every point of the strided side meets every tap once: conv's output, deconv's input.
    const bool deconv = kind == DescKind::deconv;
    const int64_t reduced = deconv ? ic : oc, per_group = deconv ? oc : ic;
    const std::array<int64_t, 3>& strided = deconv ? in : out;
    double f = 2.0 * static_cast<double>(mb) * static_cast<double>(reduced) *
               static_cast<double>(g > 0 ? per_group / g : per_group);
    for (int x = 0; x < 3; ++x) f *= static_cast<double>(strided[x]) * static_cast<double>(k[x]);
    return f;
}

namespace {

// Splits a line into descriptors at whitespace, keeping quoted names whole and dropping
// everything from an unquoted '#'.
std::vector<std::string> split_line(const std::string& line) {
    std::vector<std::string> tokens;
    std::string cur;
    bool quoted = false;
    for (char c : line) {
        if (c == '"') quoted = !quoted;
        if (!quoted && c == '#') break;
        if (!quoted && (c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f')) {
            if (!cur.empty()) tokens.push_back(cur);
            cur.clear();
            continue;
        }
        cur += c;
    }
    if (!cur.empty()) tokens.push_back(cur);
    return tokens;
}

}  // namespace

std::vector<ConvDesc> read_batch_file(const std::string& path, DescKind kind) {
    std::error_code ec;
    if (std::filesystem::is_directory(path, ec))
        throw Error(ErrorKind::invalid_argument, "batch file '" + path + "' is a directory");
    std::ifstream file(path);
    if (!file) throw Error(ErrorKind::invalid_argument, "cannot open batch file '" + path + "'");

    std::vector<ConvDesc> descs;
    std::string line;
    for (int64_t lineno = 1; std::getline(file, line); ++lineno) {
        const std::string where = "batch file '" + path + "', line " + std::to_string(lineno) + ": ";
        for (const std::string& token : split_line(line)) {
            // benchdnn batch files may carry driver options; convkit's take options on the
            // command line only, so say so instead of "unrecognized entry '-'".
            if (token.compare(0, 2, "--") == 0)
                throw Error(ErrorKind::invalid_argument,
                            where + "driver option '" + token +
                                    "' is not supported in batch files (pass it on the command line)");
            try {
                descs.push_back(parse_conv_desc(token, kind));
            } catch (const Error& err) {
                throw Error(err.kind(), where + err.what());
            }
        }
    }
    if (file.bad()) throw Error(ErrorKind::invalid_argument, "error reading batch file '" + path + "'");
    return descs;
}

}  // namespace convkit::tools
