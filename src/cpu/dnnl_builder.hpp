// Builds one variant's step program (dnnl_program.hpp) for a problem: the convolution primitive
// of each direction, tried over the activation layouts in order, with the reorders around it and,
// for a widened 16-bit problem, the widen / narrow steps of the user's tensors. The 1x1-as-matmul
// path (dnnl_matmul) builds through the same Builder.
#pragma once
#include <cstddef>
#include <memory>
#include <oneapi/dnnl/dnnl.hpp>
#include <string>
#include <vector>

#include "cpu/dnnl_convert.hpp"
#include "cpu/dnnl_program.hpp"

namespace convkit::cpu {

struct Builder {
    const core::ConvProblem& p;
    Variant& v;
    ddt dt;   // the user's tensors
    ddt cdt;  // what the convolution computes in: dt, or f32 for a widened 16-bit problem
    mdesc u_src, u_dst, u_wei, u_bias;
    dnnl::memory::dims stride, dilation, padding_l, padding_r;  // dilation 0-based, as oneDNN's
    std::size_t scratch = 0;

    // dnnl::primitive_attr is a reference-counted handle: copying it shares the attributes, so
    // every primitive gets a fresh one.
    static dnnl::primitive_attr base_attr();

    Builder(const core::ConvProblem& prob, Variant& var, bool wide);

    // The activation descriptor handed to the convolution for a user tensor in a given mode.
    mdesc act_md(bool dst, ActLayout mode, ddt want_dt) const;
    mdesc wei_any(ddt d) const;
    bool wide() const { return cdt != dt; }

    // Creates the primitive; false where oneDNN accepted the descriptor but its kernel generator
    // then fails (seen for bf16 grouped 1D convolutions with some eltwise chains): the caller
    // moves on to its next candidate.
    template <typename Prim, typename PD> static bool jit(const PD& pd, dnnl::primitive& out) {
        try {
            out = Prim(pd);
            return true;
        } catch (const dnnl::error&) {
            return false;
        }
    }

    std::size_t note_scratch(const mdesc& md);
    void add_scratch(Step& s, const mdesc& sp);
    // A cached reorder step from one descriptor to another.
    void add_reorder(const mdesc& from, Bind src, const mdesc& to, Bind dst, bool weights = false);
    Bind temp_for(const mdesc& md);
    int add_map(const mdesc& blocked);
    // Where the steps find user tensor `kind` (src, wei, bias or dst); see the definition.
    Bind user_bind(Bind::Kind kind, bool read, bool write, bool weights = false);
    // An input of the convolution: the user's tensor `kind` as it is, or reordered into a
    // temporary in the layout oneDNN chose (weights: the reorder is cached with the plan).
    Bind input(const mdesc& md, const mdesc& user, Bind::Kind kind, bool weights = false);
    // The convolution's step, its implementation and layouts noted in the variant's PlanInfo.
    Step conv_step(const dnnl::primitive& prim, const std::string& impl, const mdesc& s, const mdesc& w,
                   const mdesc& d);

    // The convolution of each direction, over the activation layouts `modes` in order.
    void build_fwd(const std::vector<ActLayout>& modes);
    void build_bwd_d(const std::vector<ActLayout>& modes);
    void build_bwd_w(const std::vector<ActLayout>& modes);
    // Narrows what a widened problem wrote and lays out the workspace.
    void finish();

private:
    struct FwdChoice {
        dnnl::convolution_forward::primitive_desc pd;
        dnnl::primitive prim;
        bool fused = false;
        bool ok = false;
        bool make() { return ok && jit<dnnl::convolution_forward>(pd, prim); }
    };
    bool try_fwd(ActLayout mode, bool fuse, ddt dst_dt, ddt bias_dt, FwdChoice& out);
    dnnl::convolution_forward::primitive_desc hint(ActLayout mode, const mdesc& w, bool bias, ddt bias_dt);

    Bind wide_[4];
    bool have_wide_[4] = {}, read_wide_[4] = {}, write_wide_[4] = {};
};

// One variant of `p` at `nthr` threads, computed natively or (`wide`) widened to f32: the matmul
// path where it is a candidate and builds, else the convolution.
std::unique_ptr<Variant> build_variant_as(const core::ConvProblem& p, int nthr, bool wide);

}  // namespace convkit::cpu
