// ConvProblem: dims, hashing, equality and its printable form.
#include <cstring>
#include <functional>
#include <utility>

#include "core/problem.hpp"

namespace convkit::core {

Spatial3 ConvProblem::spatial3() const {
    Spatial3 s;
    for (int j = 0; j < 3; ++j) {
        s.in[j] = s.out[j] = s.k[j] = s.stride[j] = s.dilation[j] = 1;
        s.padding_l[j] = s.padding_r[j] = 0;
    }
    for (int i = 0; i < nsp; ++i) {
        const int j = Spatial3::at(nsp, i);
        s.in[j] = in[i];
        s.out[j] = out[i];
        s.k[j] = k[i];
        s.stride[j] = stride[i];
        s.padding_l[j] = padding_l[i];
        s.padding_r[j] = padding_r[i];
        s.dilation[j] = dilation[i];
    }
    return s;
}

void spatial3_view(const TensorView& t, int nsp, int64_t sizes[5], int64_t strides[5]) {
    for (int d = 0; d < 2; ++d) sizes[d] = t.sizes[d], strides[d] = t.strides[d];
    for (int j = 0; j < 3; ++j) sizes[2 + j] = 1, strides[2 + j] = 0;
    for (int i = 0; i < nsp; ++i) {
        sizes[2 + Spatial3::at(nsp, i)] = t.sizes[2 + i];
        strides[2 + Spatial3::at(nsp, i)] = t.strides[2 + i];
    }
}


const char* to_string(Direction d) {
    switch (d) {
        case Direction::fwd: return "fwd";
        case Direction::bwd_d: return "bwd_d";
        case Direction::bwd_w: return "bwd_w";
    }
    return "?";
}

bool PostOpDesc::operator==(const PostOpDesc& o) const {
    // Bitwise comparison: the key must tell -0.f from 0.f and treat equal bits as equal.
    return kind == o.kind && alg == o.alg && std::memcmp(&alpha, &o.alpha, sizeof alpha) == 0 &&
           std::memcmp(&beta, &o.beta, sizeof beta) == 0 &&
           std::memcmp(&scale, &o.scale, sizeof scale) == 0 && operand_sizes == o.operand_sizes &&
           operand_layout == o.operand_layout;
}

Dims ConvProblem::src_dims() const {
    Dims d{mb, ic};
    for (int i = 0; i < nsp; ++i) d.push_back(in[i]);
    return d;
}

Dims ConvProblem::wei_dims() const {
    Dims d{oc, icg()};
    for (int i = 0; i < nsp; ++i) d.push_back(k[i]);
    return d;
}

Dims ConvProblem::dst_dims() const {
    Dims d{mb, oc};
    for (int i = 0; i < nsp; ++i) d.push_back(out[i]);
    return d;
}

double ConvProblem::flops() const {
    double f = 2.0 * static_cast<double>(mb) * static_cast<double>(oc) * static_cast<double>(icg());
    for (int i = 0; i < nsp; ++i) f *= static_cast<double>(out[i]) * static_cast<double>(k[i]);
    return f;
}

ConvProblem ConvProblem::epilogue_view() const {
    if (!transposed) return *this;
    ConvProblem v = *this;
    v.dir = Direction::fwd;
    v.transposed = false;
    std::swap(v.ic, v.oc);
    std::swap(v.src_layout, v.dst_layout);
    for (int i = 0; i < 3; ++i) std::swap(v.in[i], v.out[i]);
    return v;
}

bool ConvProblem::has_sum() const {
    for (int i = 0; i < n_post_ops; ++i)
        if (post_ops[i].kind == PostOp::Kind::sum) return true;
    return false;
}

namespace {

struct Hasher {
    std::size_t h = 1469598103934665603ull;
    void add(uint64_t v) {
        h ^= v + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
    }
    void add_f(double f) {
        uint64_t u;
        std::memcpy(&u, &f, 8);
        add(u);
    }
};

}  // namespace

std::size_t ConvProblem::hash() const {
    Hasher hs;
    hs.add(static_cast<uint64_t>(dir));
    hs.add(static_cast<uint64_t>(dt));
    hs.add(static_cast<uint64_t>(device.type) * 1024 + static_cast<uint64_t>(device.index));
    hs.add(static_cast<uint64_t>(nsp));
    hs.add(static_cast<uint64_t>(mb));
    hs.add(static_cast<uint64_t>(g));
    hs.add(static_cast<uint64_t>(ic));
    hs.add(static_cast<uint64_t>(oc));
    for (int i = 0; i < 3; ++i) {
        hs.add(static_cast<uint64_t>(in[i]));
        hs.add(static_cast<uint64_t>(out[i]));
        hs.add(static_cast<uint64_t>(k[i]));
        hs.add(static_cast<uint64_t>(stride[i]));
        hs.add(static_cast<uint64_t>(padding_l[i]));
        hs.add(static_cast<uint64_t>(padding_r[i]));
        hs.add(static_cast<uint64_t>(dilation[i]));
    }
    hs.add(static_cast<uint64_t>(src_layout) | static_cast<uint64_t>(wei_layout) << 4 |
           static_cast<uint64_t>(dst_layout) << 8 | static_cast<uint64_t>(with_bias) << 12 |
           static_cast<uint64_t>(deterministic) << 13 | static_cast<uint64_t>(allow_tf32) << 14 |
           static_cast<uint64_t>(packed_weights) << 15 | static_cast<uint64_t>(transposed) << 16);
    hs.add(static_cast<uint64_t>(n_post_ops));
    for (int i = 0; i < n_post_ops; ++i) {
        const auto& p = post_ops[i];
        hs.add(static_cast<uint64_t>(p.kind) * 64 + static_cast<uint64_t>(p.alg));
        hs.add_f(p.alpha);
        hs.add_f(p.beta);
        hs.add_f(p.scale);
        for (int64_t s : p.operand_sizes) hs.add(static_cast<uint64_t>(s));
        hs.add(static_cast<uint64_t>(p.operand_layout));
    }
    return hs.h;
}

bool ConvProblem::operator==(const ConvProblem& o) const {
    if (dir != o.dir || dt != o.dt || device != o.device || nsp != o.nsp || mb != o.mb || g != o.g ||
        ic != o.ic || oc != o.oc || src_layout != o.src_layout || wei_layout != o.wei_layout ||
        dst_layout != o.dst_layout || with_bias != o.with_bias || deterministic != o.deterministic ||
        allow_tf32 != o.allow_tf32 || packed_weights != o.packed_weights || n_post_ops != o.n_post_ops ||
        transposed != o.transposed)
        return false;
    for (int i = 0; i < 3; ++i)
        if (in[i] != o.in[i] || out[i] != o.out[i] || k[i] != o.k[i] || stride[i] != o.stride[i] ||
            padding_l[i] != o.padding_l[i] || padding_r[i] != o.padding_r[i] || dilation[i] != o.dilation[i])
            return false;
    for (int i = 0; i < n_post_ops; ++i)
        if (!(post_ops[i] == o.post_ops[i])) return false;
    return true;
}

std::string ConvProblem::str() const {
    static const char* kSp[3] = {"d", "h", "w"};
    const int first = 3 - nsp;  // benchdnn letters: 1D uses w, 2D h and w, 3D d, h and w
    std::string s = std::string(transposed ? "transposed-as-" : "") + to_string(dir) + " " + to_string(dt) + " ";
    s += (src_layout == Layout::channels_last ? "nhwc " : "nchw ");
    if (g != 1) s += "g" + std::to_string(g);
    s += "mb" + std::to_string(mb) + "ic" + std::to_string(ic);
    for (int i = 0; i < nsp; ++i) s += std::string("i") + kSp[first + i] + std::to_string(in[i]);
    s += "oc" + std::to_string(oc);
    for (int i = 0; i < nsp; ++i) s += std::string("o") + kSp[first + i] + std::to_string(out[i]);
    for (int i = 0; i < nsp; ++i) s += std::string("k") + kSp[first + i] + std::to_string(k[i]);
    for (int i = 0; i < nsp; ++i)
        if (stride[i] != 1) s += std::string("s") + kSp[first + i] + std::to_string(stride[i]);
    for (int i = 0; i < nsp; ++i) s += std::string("p") + kSp[first + i] + std::to_string(padding_l[i]);
    for (int i = 0; i < nsp; ++i)
        if (dilation[i] != 1) s += std::string("d") + kSp[first + i] + std::to_string(dilation[i] - 1);
    return s;
}

}  // namespace convkit::core
