#!/usr/bin/python3
"""PyTorch oracle for `convkit run`.

Generates a fixed-seed set of small convolution problems (forward with bias and
post-ops, backward-data, backward-weights with bias gradient; 1D/2D/3D; groups and
depthwise; strides, dilations, asymmetric padding; both memory tags; f32, f64, bf16,
f16; dyadic and non-dyadic post-op parameters), and a third as many transposed
convolutions (`convkit run --op=deconv`: the same directions and variety plus
output_padding, checked against torch's conv_transpose and its autograd),
computes each one with PyTorch in float64 (the oracle), runs `convkit run` on the same
.npy inputs, and compares the two with a per-element error bound (see TOLERANCES).

Usage:
  /usr/bin/python3 tests/oracle/torch_oracle.py --convkit=build/convkit --engine=ref \
      [--seed=1234] [--cases=552] [--workdir=DIR] [--dtypes=f32,f64,bf16,f16] \
      [--filter=SUBSTR] [--jobs=2] [--keep] [--dry-run] [--self-test]

Output: one line per failing case, then a final line `N passed, M failed`.
Exit status 0 iff M == 0 and N > 0.

--dry-run   generate every case, compute the torch results, write the .npy files,
            print the coverage counts and the convkit command lines; convkit is not run.
--self-test check the comparison itself, without convkit: an independent numpy
            implementation at the compute precision must pass (positive control) and
            realistic bugs (off-by-one padding, flipped kernel, missing bias, wrong group,
            dropped post-op, layout mix-up, one wrong element, f64 post-op parameters
            rounded to float, f16 computed as bf16, transposed output_padding rows left
            unwritten, ...) must be rejected.
"""

import argparse
import itertools
import math
import os
import random
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
import torch.nn.functional as F

torch.set_num_threads(2)

# =====================================================================================
# TOLERANCES -- the one place where the comparison is defined.
#
# Every output element gets its own absolute error bound, built the way a rounding-error
# analysis would build it, and the check is |got - expected| <= SAFETY * bound.
#
# 1. Reduction (conv / backward-data / backward-weights / bias gradient).  A sum of K
#    products computed in floating point with unit roundoff u, in ANY order (naive loop,
#    blocked, parallel, FMA or not, GEMM-based), obeys the classic bound
#        |computed - exact| <= gamma_K * S,   gamma_K ~= K*u,   S = sum_i |a_i * b_i|,
#    where S is the same reduction done on absolute values (we compute it with torch on
#    |src|, |wei|, |diff_dst|, |bias|).  We use (K + ACC_EXTRA_TERMS) * u_acc.
#    Transposed convolutions carry the model over as they are: the forward is the
#    backward-data of the equivalent convolution, so S is conv_transpose on |src|, |wei|,
#    |bias| and K = IC/g * prod(k) (an upper bound on the products per output: each tap
#    meets at most one input), backward-data is a convolution of diff_dst (K = OC/g *
#    prod(k)), backward-weights sums over mb * prod(in) products (K), the bias gradient
#    over mb * prod(out); S of the backward ones comes from autograd on absolute values.  This never
#    fails a correct implementation, and it is still tight: a single missing/extra term is
#    ~S/K, and (K*u)*S << S/K whenever K^2*u << 1 (largest K here ~250: K^2*u ~ 4e-3 for
#    f32, ~7e-12 for f64), so one wrong product, a shifted pad or a flipped kernel is
#    many orders of magnitude above the bound (see --self-test).
#      u_acc: f64 2^-53, f32 2^-24, bf16 and f16 2^-24 (convkit accumulates both half types
#      in f32; the expected value uses the bf16/f16-rounded inputs, computed in float64).
# 2. Post-ops, applied to the exact value v with incoming bound B:
#      propagated = max over t in {-1,-1/2,1/2,1} |f(v + t*B) - f(v)|
#    (the actual sensitivity of the op over the uncertainty interval -- this is what lets
#    exp amplify, sqrt near 0 grow like sqrt(B), clip/relu kill errors), plus the op's own
#    rounding error  C_op * u_op * (|f(v)| + |v| + 1)  with C_op = OWN_ERR_SIMPLE for
#    arithmetic ops and OWN_ERR_TRANSCENDENTAL for exp/log/tanh/erf/sigmoid-based ops
#    (vectorised f32 approximations are a few ulp; composites such as gelu_tanh
#    0.5x(1+tanh(.)) cancel for negative x, giving an absolute error ~|x|*u, hence the
#    |v| term; the +1 is an absolute floor at the O(1) scale of the data).
#    u_op: f64 2^-53, f32, bf16 and f16 2^-24 (half-type post-ops run in f32 before the
#    final rounding).
# 3. Post-op parameters (eltwise alpha/beta, sum scale).  convkit parses them as double
#    and carries them as double; an f64 computation uses them as they are, an f32 one
#    (f32, bf16, f16) may round each one to float first: p~ = fl32(p), |p~ - p| <= 2^-24|p|.
#    The expected value always uses the exact double p (the number on the command line).
#    Allowance, added to the op's bound:
#      param = max over the corners p_i +- PARAM_U*|p_i| (each inexact parameter)
#              of |f(v; p~) - f(v; p)|,
#    i.e. relative 2^-24 of the parameter's contribution: 2^-24*|alpha*v| for a relu slope,
#    2^-24*(|alpha*v| + |beta|) for linear, 2^-24*|bound| for a clip that clamps,
#    2^-24*|alpha*expm1(v)| for elu, ~2^-24*|beta*v^2*s(1-s)| for swish, 2^-24*|scale*dst|
#    for sum (f is monotonic in each parameter, so the corners give the maximum).
#    PARAM_U = 2^-24 for f32/bf16/f16 and 0 for f64: an f64 computation that rounds
#    0.1 to 0.1f is off by ~1.5e-9 relative, orders of magnitude above the f64 bound, so the
#    cases with non-dyadic parameters (0.1, 0.3, 0.7, 1.1, ...) catch a float-parameter
#    regression.  Parameters exact in f32 (dyadic) get no allowance (fl32(p) == p).
# 4. Half-type output: convkit rounds its f32 result z (|z - y| <= B) once, RNE:
#      bf16: 8 significant bits,  |got - y| <= B + 2^-8  * (|y| + B);
#      f16: 11 significant bits, |got - y| <= B + 2^-11 * (|y| + B) + 2^-25,
#    the 2^-25 being half the spacing of f16 subnormals (|z| < 2^-14).  f16 overflows at
#    |z| >= 65520 (round-to-nearest of anything past 65504 + half an ulp): the expected
#    value is the float64 result rounded to f16, i.e. +-inf there, and an element whose
#    interval [|y| - 2B, |y| + 2B] straddles 65520 is ambiguous (the generator re-draws).
# 5. SAFETY = 2 covers the first-order nature of the post-op propagation.
#    ABS_FLOOR only keeps an exactly-zero bound from rejecting a signed zero.
# NaN/Inf positions must match exactly (the generator produces +-inf only in the f16
# cases that are meant to overflow, never NaN).
# =====================================================================================
U = {'f64': 2.0 ** -53, 'f32': 2.0 ** -24, 'bf16': 2.0 ** -24, 'f16': 2.0 ** -24}  # u_acc == u_op
PARAM_U = {'f64': 0.0, 'f32': 2.0 ** -24, 'bf16': 2.0 ** -24, 'f16': 2.0 ** -24}
OUT_U = {'bf16': 2.0 ** -8, 'f16': 2.0 ** -11}        # half-type output rounding, relative
OUT_ABS = {'bf16': 0.0, 'f16': 2.0 ** -25}            # ... and absolute (subnormals)
F16_OVERFLOW = 65520.0       # |z| >= this rounds to inf in f16 (RNE)
ACC_EXTRA_TERMS = 2          # bias add + final store
OWN_ERR_SIMPLE = 4
OWN_ERR_TRANSCENDENTAL = 16
SAFETY = 2.0
ABS_FLOOR = 1e-30
# --self-test: a perturbation is "meaningful" (must be rejected) when it moves some
# element by more than this fraction of (1 + max|expected|).  Smaller changes are reported
# but not required to be caught (e.g. a 1-term error inside bf16 output rounding noise).
MEANINGFUL = {'f64': 1e-9, 'f32': 1e-3, 'bf16': 3e-2, 'f16': 4e-3}
CASE_TIMEOUT_S = 60
# =====================================================================================

ELTWISE = ['relu', 'linear', 'clip', 'elu', 'swish', 'gelu_erf', 'gelu_tanh', 'logistic',
           'tanh', 'hardswish', 'mish', 'abs', 'square', 'sqrt', 'exp', 'log']
TRANSCENDENTAL = {'elu', 'swish', 'gelu_erf', 'gelu_tanh', 'logistic', 'tanh', 'mish',
                  'exp', 'log', 'sqrt'}
BINARY = ['add', 'mul', 'sub', 'div', 'max', 'min']
BKINDS_REQUIRED = ['scalar', 'channel', 'full', 'spatial']
BKINDS_EXTRA = ['mb', 'mb_channel']
DIRS = ['fwd', 'bwd_d', 'bwd_w']
DTYPES = ['f32', 'f64', 'bf16', 'f16']
HALF = ('bf16', 'f16')
MAX_SPATIAL = {1: 16, 2: 10, 3: 5}
MAX_SPATIAL_DECONV_IN = {1: 8, 2: 5, 3: 3}     # the transposed input; outputs grow by stride
MAX_FLOP = 5e6
HALF_SHARE = 0.13            # of the cases, for each of bf16 and f16
NONDYADIC_SHARE = 0.35       # of the forward cases: post-op parameters not exact in f32
DECONV_SHARE = 1.0 / 3      # of the cases: transposed convolutions (--op=deconv)
DEFAULT_CASES = 552          # 368 convolutions (the set before transposed ones existed) + 184


# ----------------------------------------------------------------------------- helpers
def bf16_round(a):
    """Round float values to bf16 (round-to-nearest-even), returned as float32."""
    a32 = np.ascontiguousarray(a, dtype=np.float32)
    bits = a32.view(np.uint32).astype(np.uint64)
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    return bits.astype(np.uint32).view(np.float32).reshape(a32.shape)


def f16_round(a):
    """Round float values to IEEE half (round-to-nearest-even, subnormals, +-inf past
    65504), returned as float32.  numpy converts float32/float64 to float16 in one RNE
    step (checked against torch in --self-test)."""
    with np.errstate(over='ignore'):
        return np.asarray(a).astype(np.float16).astype(np.float32)


HALF_ROUND = {'bf16': bf16_round, 'f16': f16_round}


def input_round(dt):
    """What convkit does to the src/wei/diff_dst values of an f32 .npy file for dt."""
    return HALF_ROUND.get(dt, lambda a: a)


def f32_exact(p):
    return float(np.float32(p)) == p


def fmt_num(v):
    """Shortest %g text that reads back as the same double (0.1, not 0.10000000000000001)."""
    for prec in range(1, 18):
        s = '%.*g' % (prec, v)
        if float(s) == v:
            return s
    raise AssertionError(v)


def prod(xs):
    r = 1
    for x in xs:
        r *= x
    return r


def balanced(rng, values, n):
    """n items in which every value occurs at least floor(n/len(values)) times."""
    seq = (list(values) * (n // len(values) + 1))[:n]
    rng.shuffle(seq)
    return seq


class Case:
    """op 'conv': src [mb, C, isz] -> dst [mb, OC, osz] with weights [OC, icg, k].
    op 'deconv' (transposed): the same src and dst, weights [C, ocg, k] (PyTorch's layout),
    osz = (isz - 1) * stride - pl - pr + dil * (k - 1) + opad + 1."""

    def __init__(self, **kw):
        self.op = 'conv'
        self.__dict__.update(kw)
        nd = self.nd
        if not hasattr(self, 'opad'):
            self.opad = [0] * nd
        self.ext = [(self.k[i] - 1) * self.dil[i] + 1 for i in range(nd)]
        if self.op == 'deconv':
            self.osz = [(self.isz[i] - 1) * self.stride[i] - self.pl[i] - self.pr[i] + self.ext[i]
                        + self.opad[i] for i in range(nd)]
        else:
            self.osz = [(self.isz[i] + self.pl[i] + self.pr[i] - self.ext[i]) // self.stride[i] + 1
                        for i in range(nd)]
        self.C = self.groups * self.icg
        self.OC = self.groups * self.ocg
        self.src_shape = [self.mb, self.C] + list(self.isz)
        if self.op == 'deconv':
            self.wei_shape = [self.C, self.ocg] + list(self.k)
        else:
            self.wei_shape = [self.OC, self.icg] + list(self.k)
        self.dst_shape = [self.mb, self.OC] + list(self.osz)

    @property
    def opkind(self):
        """Transposed output_padding: none, below the stride, or >= the stride (dilation larger)."""
        if not any(self.opad):
            return 'none'
        if any(o >= s for o, s in zip(self.opad, self.stride)):
            return 'ge_stride'
        return 'yes'

    @property
    def dkey(self):
        """The direction as the coverage table counts it ('deconv:fwd' for transposed ones)."""
        return self.dir if self.op == 'conv' else 'deconv:' + self.dir

    @property
    def gkind(self):
        if self.groups == 1:
            return 'g1'
        if self.groups == self.C and self.icg == 1:
            return {1: 'dw', 2: 'dw2'}.get(self.ocg, 'dw_mult')
        return 'grouped'

    @property
    def padkind(self):
        if all(p == 0 for p in self.pl + self.pr):
            return 'zero'
        if any(a != b for a, b in zip(self.pl, self.pr)):
            return 'asym'
        return 'sym'

    def po_names(self):
        out = []
        for op in self.post_ops:
            if op['kind'] == 'binary':
                out.append('%s@%s' % (op['op'], op['bkind']))
            elif op['kind'] == 'sum':
                out.append('sum')
            else:
                out.append(op['name'])
        return out

    @property
    def cid(self):
        op = '' if self.op == 'conv' else 'deconv-'
        s = '%03d-%s-%s%s-%dd-%s-%s' % (self.idx, self.dt, op, self.dir, self.nd, self.tag, self.gkind)
        if self.opkind != 'none':
            s += '-opad' if self.opkind == 'yes' else '-opad_ge_stride'

        if self.dir == 'fwd' and self.bias:
            s += '-bias'
        if self.dir == 'bwd_w' and self.bias:
            s += '-dbias'
        if self.post_ops:
            s += '-po=' + '+'.join(self.po_names())
        if self.dst_init and not any(op['kind'] == 'sum' for op in self.post_ops):
            s += '-dstinit'
        if has_nondyadic(self.post_ops):
            s += '-nondyadic'
        if self.pinned == 'f16_overflow':
            s += '-overflow'
        return s


# ----------------------------------------------------------------------------- post-ops
# Parameters exact in f32 ("dyadic": float or double parsing agree) and parameters that
# are not (a float-parameter implementation differs from the double one by ~2^-24 relative).
PARAMS_DYADIC = {
    'relu': [[], [], [0.25], [-0.5], [0.125], [0.0]],
    'linear': ([0.5, -1.5, 2.0, 0.75], [0.0, 0.25, -1.0, 1.5]),
    'clip': ([-0.5, -1.0, 0.0], [0.5, 0.75, 1.25]),
    'elu': [0.5, 1.0, 1.5],
    'swish': [1.0, 0.5, 2.0],
    'sum': [1.0, 0.5, -1.5, 2.0, 0.25],
}
PARAMS_NONDYADIC = {
    'relu': [[0.1], [0.3], [-0.7], [1.1], [0.01]],
    'linear': ([0.1, -0.3, 0.7, 1.1, -1.3], [0.1, -0.3, 0.7, 1.1]),
    'clip': ([-0.3, -0.7, -1.1, 0.1], [0.3, 0.7, 1.1]),
    'elu': [0.3, 0.7, 1.1],
    'swish': [0.3, 0.7, 1.1, 1.7],
    'sum': [0.1, 0.3, -0.7, 1.1],
}


def eltwise_spec(rng, name, nondy=False):
    P = PARAMS_NONDYADIC if nondy else PARAMS_DYADIC
    p = []
    if name == 'relu':
        p = list(rng.choice(P['relu']))
    elif name in ('linear', 'clip'):
        p = [rng.choice(P[name][0]), rng.choice(P[name][1])]
    elif name in ('elu', 'swish'):
        p = [rng.choice(P[name])]
    return {'kind': 'eltwise', 'name': name, 'params': p}


def expand_item(rng, item, nondy=False):
    """A queue item -> list of post-ops (sqrt/log get a prefix that keeps them valid)."""
    if item[0] == 'eltwise':
        name = item[1]
        if name == 'sqrt':
            return [eltwise_spec(rng, rng.choice(['abs', 'square'])), eltwise_spec(rng, 'sqrt')]
        if name == 'log':
            return [eltwise_spec(rng, 'abs'),
                    {'kind': 'eltwise', 'name': 'linear', 'params': [1.0, 1.0]},
                    eltwise_spec(rng, 'log')]
        return [eltwise_spec(rng, name, nondy)]
    if item[0] == 'sum':
        return [{'kind': 'sum', 'scale': rng.choice((PARAMS_NONDYADIC if nondy
                                                      else PARAMS_DYADIC)['sum'])}]
    return [{'kind': 'binary', 'op': item[1], 'bkind': item[2]}]


def op_params(op):
    if op['kind'] == 'eltwise':
        return list(op['params'])
    if op['kind'] == 'sum':
        return [op['scale']]
    return []


def with_params(op, ps):
    op = dict(op)
    if op['kind'] == 'eltwise':
        op['params'] = list(ps)
    elif op['kind'] == 'sum':
        op['scale'] = ps[0]
    return op


def has_nondyadic(ops):
    return any(not f32_exact(p) for op in ops for p in op_params(op))


# Pinned chains.  relu:0.1+sum:0.5+add is the chain whose f64 forward differed from
# PyTorch by 1.4e-9 while convkit carried the scalars as float: one case per dtype.
# f16 overflow: y * 2^16 (exact in f32) is +-inf in f16 for |y| >= 0.99976 (~10% of the
# outputs), so the Inf positions of the f16 output are checked.
PINNED_RELU_SUM_ADD = [{'kind': 'eltwise', 'name': 'relu', 'params': [0.1]},
                       {'kind': 'sum', 'scale': 0.5},
                       {'kind': 'binary', 'op': 'add', 'bkind': None}]
PINNED_F16_OVERFLOW = [{'kind': 'eltwise', 'name': 'linear', 'params': [65536.0, 0.0]}]


def chain_ok(ops):
    names = [o.get('name') for o in ops]
    if names.count('exp') > 1:
        return False
    # max(min(y, a), b) can be independent of y: allow one max/min operand per chain
    if sum(1 for o in ops if o.get('op') in ('max', 'min')) > 1:
        return False
    for a, b in zip(names, names[1:]):
        if b == 'exp' and a in ('square', 'exp'):
            return False
    return True


def random_item(rng):
    r = rng.random()
    if r < 0.6:
        return ('eltwise', rng.choice(ELTWISE))
    if r < 0.75:
        return ('sum',)
    return ('binary', rng.choice(BINARY), rng.choice(BKINDS_REQUIRED + BKINDS_EXTRA))


def build_chain(rng, items, nondy=False):
    for _ in range(50):
        rng.shuffle(items)
        ops = []
        for it in items:
            ops += expand_item(rng, it, nondy)
        if chain_ok(ops):
            return ops
    return None


def binary_shape(c, bkind):
    nd = c.nd
    return {'scalar': [1, 1] + [1] * nd,
            'channel': [1, c.OC] + [1] * nd,
            'full': list(c.dst_shape),
            'spatial': [1, 1] + list(c.osz),
            'mb': [c.mb, 1] + [1] * nd,
            'mb_channel': [c.mb, c.OC] + [1] * nd}[bkind]


def eltwise_fn(name, p, x):
    if name == 'relu':
        a = p[0] if p else 0.0
        return torch.where(x > 0, x, a * x)
    if name == 'linear':
        return p[0] * x + p[1]
    if name == 'clip':
        return torch.clamp(x, p[0], p[1])
    if name == 'elu':
        return torch.where(x > 0, x, p[0] * torch.expm1(x))
    if name == 'swish':
        return x * torch.sigmoid(p[0] * x)
    if name == 'gelu_erf':
        return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))
    if name == 'gelu_tanh':
        return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x * x * x)))
    if name == 'logistic':
        return torch.sigmoid(x)
    if name == 'tanh':
        return torch.tanh(x)
    if name == 'hardswish':
        return x * torch.clamp(x + 3.0, 0.0, 6.0) / 6.0
    if name == 'mish':
        return x * torch.tanh(torch.logaddexp(x, torch.zeros_like(x)))
    if name == 'abs':
        return torch.abs(x)
    if name == 'square':
        return x * x
    if name == 'sqrt':
        return torch.sqrt(torch.clamp(x, min=0.0))
    if name == 'exp':
        return torch.exp(x)
    if name == 'log':
        return torch.log(torch.clamp(x, min=1e-300))
    raise ValueError(name)


def binary_fn(op, x, b):
    return {'add': lambda: x + b, 'mul': lambda: x * b, 'sub': lambda: x - b,
            'div': lambda: x / b, 'max': lambda: torch.maximum(x, b),
            'min': lambda: torch.minimum(x, b)}[op]()


def op_fn(op, x, data, k):
    """Apply post-op number k (its operand / dst-init come from data)."""
    if op['kind'] == 'eltwise':
        return eltwise_fn(op['name'], op['params'], x)
    if op['kind'] == 'sum':
        return x + op['scale'] * data['dst_init_t'].to(x.dtype)
    return binary_fn(op['op'], x, data['po%d_t' % k].to(x.dtype))


def apply_post_ops(c, v, data, upto=None, pround=None):
    """pround: maps each post-op parameter (e.g. to float32) -- the self-test's models."""
    ops = c.post_ops if upto is None else c.post_ops[:upto]
    for k, op in enumerate(ops):
        if pround is not None:
            op = with_params(op, [pround(p) for p in op_params(op)])
        v = op_fn(op, v, data, k)
    return v


def param_allowance(op, v, data, k, pu):
    """TOLERANCES 3: max |f(v; p~) - f(v; p)| over the corners p_i +- pu*|p_i| of the
    parameters that are not exact in f32 (None when there are none)."""
    ps = op_params(op)
    dp = [0.0 if f32_exact(p) else pu * abs(p) for p in ps]
    if not any(dp):
        return None
    f = op_fn(op, v, data, k)
    a = torch.zeros_like(f)
    for signs in itertools.product((-1.0, 1.0), repeat=len(ps)):
        q = [p + sg * d for p, sg, d in zip(ps, signs, dp)]
        a = torch.maximum(a, (op_fn(with_params(op, q), v, data, k) - f).abs())
    return a


def propagate_post_ops(c, v, B, data, u, pu=0.0):
    """Exact values v (float64) with error bound B -> through the chain (see TOLERANCES)."""
    for k, op in enumerate(c.post_ops):
        f = op_fn(op, v, data, k)
        prop = torch.zeros_like(f)
        for t in (-1.0, -0.5, 0.5, 1.0):
            prop = torch.maximum(prop, (op_fn(op, v + t * B, data, k) - f).abs())
        simple = op['kind'] != 'eltwise' or op['name'] not in TRANSCENDENTAL
        cown = OWN_ERR_SIMPLE if simple else OWN_ERR_TRANSCENDENTAL
        B = prop + cown * u * (f.abs() + v.abs() + 1.0)
        if pu:
            a = param_allowance(op, v, data, k, pu)
            if a is not None:
                B = B + a
        v = f
    return v, B


# ----------------------------------------------------------------------------- generation
def gen_geometry(rng, nd, direction, stride_v, dil_v, gkind, padkind, mb, pointwise=False):
    if pointwise:
        dil_v = 1
    for _ in range(5000):
        dims = list(range(nd))
        sdims = set(rng.sample(dims, rng.randint(1, nd)))
        ddims = set(rng.sample(dims, rng.randint(1, nd)))
        stride = [stride_v if i in sdims else rng.randint(1, stride_v) for i in dims]
        dil = [dil_v if i in ddims else rng.randint(1, dil_v) for i in dims]
        k = [1 if pointwise else rng.randint(2 if dil[i] > 1 else 1, 3) for i in dims]
        ext = [(k[i] - 1) * dil[i] + 1 for i in dims]
        if padkind == 'zero':
            pl = [0] * nd
            pr = [0] * nd
        elif padkind == 'sym':
            pl = [rng.randint(0, min(2, max(1, ext[i] - 1))) for i in dims]
            pr = list(pl)
            if all(p == 0 for p in pl):
                continue
        else:
            pl = [rng.randint(0, min(2, max(1, ext[i] - 1))) for i in dims]
            pr = [rng.randint(0, min(2, max(1, ext[i] - 1))) for i in dims]
            if pl == pr:
                continue
        lo = [max(1, ext[i] - pl[i] - pr[i]) for i in dims]
        if any(lo[i] > MAX_SPATIAL[nd] for i in dims):
            continue
        isz = [rng.randint(lo[i], MAX_SPATIAL[nd]) for i in dims]
        if gkind == 'g1':
            groups, icg, ocg = 1, rng.randint(1, 8), rng.randint(1, 8)
        elif gkind == 'grouped':
            groups, icg, ocg = rng.randint(2, 4), rng.randint(2, 6), rng.randint(1, 6)
        elif gkind == 'dw':
            groups, icg, ocg = rng.randint(2, 8), 1, 1
        else:  # dw2
            groups, icg, ocg = rng.randint(2, 8), 1, 2
        c = Case(nd=nd, mb=mb, groups=groups, icg=icg, ocg=ocg, isz=isz, k=k, stride=stride,
                 dil=dil, pl=pl, pr=pr)
        if min(c.osz) < 1:
            continue
        # padding and dilation are free to skip inputs, but some window must touch the
        # real input in every dimension, otherwise the whole result is bias / zeros
        if not all(any(0 <= o * stride[i] - pl[i] + t * dil[i] < isz[i]
                       for o in range(c.osz[i]) for t in range(k[i])) for i in dims):
            continue
        flop = 2.0 * prod(c.dst_shape) * icg * prod(k)
        if flop > MAX_FLOP:
            continue
        return dict(nd=nd, mb=mb, groups=groups, icg=icg, ocg=ocg, isz=isz, k=k,
                    stride=stride, dil=dil, pl=pl, pr=pr)
    raise RuntimeError('could not generate a valid geometry for %r' %
                       ((nd, direction, stride_v, dil_v, gkind, padkind),))


def gen_geometry_deconv(rng, nd, stride_v, dil_v, gkind, padkind, mb, opkind, pointwise=False):
    """A transposed convolution's geometry. opkind: 'none', 'op' (output_padding below
    max(stride, dilation) in some dims) or 'op_ge' (output_padding >= the stride in one dim,
    allowed because that dim's dilation is larger; needs dil_v >= 2, else 'op')."""
    if pointwise:
        dil_v = 1
    if opkind == 'op_ge' and dil_v < 2:
        opkind = 'op'
    if opkind == 'op' and stride_v == 1 and dil_v == 1:
        opkind = 'none'         # output_padding needs a stride or dilation above 1
    for _ in range(5000):
        dims = list(range(nd))
        sdims = set(rng.sample(dims, rng.randint(1, nd)))
        ddims = set(rng.sample(dims, rng.randint(1, nd)))
        stride = [stride_v if i in sdims else rng.randint(1, stride_v) for i in dims]
        dil = [dil_v if i in ddims else rng.randint(1, dil_v) for i in dims]
        k = [1 if pointwise else rng.randint(2 if dil[i] > 1 else 1, 3) for i in dims]
        ext = [(k[i] - 1) * dil[i] + 1 for i in dims]
        opad = [0] * nd
        if opkind == 'op':
            cand = [i for i in dims if max(stride[i], dil[i]) > 1]
            if not cand:
                continue
            for i in rng.sample(cand, rng.randint(1, len(cand))):
                opad[i] = rng.randint(1, max(stride[i], dil[i]) - 1)
        elif opkind == 'op_ge':
            i = rng.choice([i for i in dims if dil[i] >= 2])
            stride[i] = rng.randint(1, dil[i] - 1)
            opad[i] = rng.randint(stride[i], dil[i] - 1)
        # padding crops the output: up to 2 rows a side, as for the convolutions
        if padkind == 'zero':
            pl, pr = [0] * nd, [0] * nd
        elif padkind == 'sym':
            pl = [rng.randint(0, min(2, max(1, ext[i] - 1))) for i in dims]
            pr = list(pl)
            if all(p == 0 for p in pl):
                continue
        else:
            pl = [rng.randint(0, min(2, max(1, ext[i] - 1))) for i in dims]
            pr = [rng.randint(0, min(2, max(1, ext[i] - 1))) for i in dims]
            if pl == pr:
                continue
        isz = [rng.randint(1, MAX_SPATIAL_DECONV_IN[nd]) for i in dims]
        if gkind == 'g1':
            groups, icg, ocg = 1, rng.randint(1, 8), rng.randint(1, 8)
        elif gkind == 'grouped':
            groups, icg, ocg = rng.randint(2, 4), rng.randint(2, 6), rng.randint(1, 6)
        elif gkind == 'dw':
            groups, icg, ocg = rng.randint(2, 8), 1, 1
        else:  # dw2
            groups, icg, ocg = rng.randint(2, 8), 1, 2
        c = Case(op='deconv', nd=nd, mb=mb, groups=groups, icg=icg, ocg=ocg, isz=isz, k=k,
                 stride=stride, dil=dil, pl=pl, pr=pr, opad=opad)
        if min(c.osz) < 1:
            continue
        # some output must receive a product in every dimension (else it is all bias)
        if not all(any(0 <= i * stride[d] + t * dil[d] - pl[d] < c.osz[d]
                       for i in range(isz[d]) for t in range(k[d])) for d in dims):
            continue
        flop = 2.0 * prod(c.src_shape) * ocg * prod(k)
        if flop > MAX_FLOP or prod(c.osz) > MAX_SPATIAL[nd] ** nd * 4:
            continue
        return dict(op='deconv', nd=nd, mb=mb, groups=groups, icg=icg, ocg=ocg, isz=isz, k=k,
                    stride=stride, dil=dil, pl=pl, pr=pr, opad=opad)
    raise RuntimeError('could not generate a valid transposed geometry for %r' %
                       ((nd, stride_v, dil_v, gkind, padkind, opkind),))


def generate_cases(seed, n_cases):
    """The convolution cases come first, drawn exactly as before transposed cases existed
    (same ids and data for the same seed), then the transposed ones from their own stream."""
    n_deconv = int(round(DECONV_SHARE * n_cases))
    specs = generate_specs(random.Random(seed), n_cases - n_deconv, 'conv')
    specs += generate_specs(random.Random(seed * 7919 + 104729), n_deconv, 'deconv')
    cases = [Case(idx=i, **s) for i, s in enumerate(specs)]
    for c in cases:
        harden(c, seed)
    return cases


def generate_specs(rng, n_cases, op):
    n_half = int(round(HALF_SHARE * n_cases))
    n_f64 = (n_cases - 2 * n_half) // 2
    n_f32 = n_cases - 2 * n_half - n_f64
    specs = []
    for dt, n in (('f32', n_f32), ('f64', n_f64), ('bf16', n_half), ('f16', n_half)):
        n_fwd = n // 2
        n_bd = (n - n_fwd) // 2
        n_bw = n - n_fwd - n_bd
        for direction, m in (('fwd', n_fwd), ('bwd_d', n_bd), ('bwd_w', n_bw)):
            if m == 0:
                continue
            cyc = {
                'nd': balanced(rng, [1, 2, 3], m),
                'tag': balanced(rng, ['nchw', 'nhwc'], m),
                'mb': balanced(rng, [1, 2], m),
                'stride': balanced(rng, [1, 2, 3], m),
                'dil': balanced(rng, [1, 2, 3], m),
                'gkind': balanced(rng, ['g1', 'grouped', 'dw', 'dw2'], m),
                'pad': balanced(rng, ['zero', 'sym', 'asym'], m),
                'bias': balanced(rng, [True, False], m),
            }
            if op == 'deconv':
                cyc['opad'] = balanced(rng, ['none', 'op', 'op_ge'], m)
            chains = [([], [], False, False) for _ in range(m)]   # items, ops, nondy, pinned
            dst_init = [False] * m
            if direction == 'fwd':
                if dt in ('f32', 'f64') and op == 'conv':
                    queue = [('eltwise', e) for e in ELTWISE for _ in range(2)]
                    queue += [('sum',), ('sum',)]
                    queue += [('binary', b, k) for b in BINARY for k in BKINDS_REQUIRED]
                else:
                    queue = [('eltwise', e) for e in rng.sample(ELTWISE, 8)]
                    queue += [('sum',)]
                    queue += [('binary', rng.choice(BINARY), k) for k in BKINDS_REQUIRED]
                rng.shuffle(queue)
                pos = 0
                while queue:
                    take = rng.choice([1, 2, 2, 3])
                    items = queue[:take]
                    if any(it == ('eltwise', 'log') for it in items):
                        items = items[:2]
                    nondy = rng.random() < NONDYADIC_SHARE
                    ops = build_chain(rng, list(items), nondy)
                    if ops is None:
                        items = items[:1]
                        ops = build_chain(rng, list(items), nondy)
                    del queue[:len(items)]
                    if pos >= m:
                        raise SystemExit('too few cases (--cases=%d) for the post-op quota' % n_cases)
                    chains[pos] = (items, ops, nondy, False)
                    pos += 1
                # pinned chains (see PINNED_RELU_SUM_ADD), kept as they are by harden()
                pinned = [[dict(o) for o in PINNED_RELU_SUM_ADD]]
                pinned[0][2]['bkind'] = rng.choice(BKINDS_REQUIRED + BKINDS_EXTRA)
                if dt == 'f16' and op == 'conv':
                    pinned.append([dict(o) for o in PINNED_F16_OVERFLOW])
                for ops in pinned:
                    if pos >= m:
                        raise SystemExit('too few cases (--cases=%d) for the pinned chains' % n_cases)
                    kind = 'f16_overflow' if ops[0]['name'] == 'linear' else 'relu_sum_add'
                    chains[pos] = ([], ops, has_nondyadic(ops), kind)
                    pos += 1
                # the rest: random chains (some empty), a few with --dst-init but no sum
                nth = 0
                for j in range(pos, m):
                    items, ops, nondy = [], [], False
                    if rng.random() >= 0.3:
                        ops = None
                        nondy = rng.random() < NONDYADIC_SHARE
                        while ops is None:
                            items = [random_item(rng) for _ in range(rng.randint(1, 3))]
                            ops = build_chain(rng, list(items), nondy)
                    chains[j] = (items, ops, nondy, False)
                    if not any(o['kind'] == 'sum' for o in ops):
                        if nth % 6 == 0:
                            dst_init[j] = True
                        nth += 1
                order = list(range(m))
                rng.shuffle(order)
                chains = [chains[o] for o in order]
                dst_init = [dst_init[o] for o in order]
            n_dil1 = 0
            for j in range(m):
                pointwise = False
                if cyc['dil'][j] == 1:      # every third dense case is a 1x1(x1) kernel
                    pointwise = n_dil1 % 3 == 1
                    n_dil1 += 1
                if op == 'deconv':
                    geo = gen_geometry_deconv(rng, cyc['nd'][j], cyc['stride'][j], cyc['dil'][j],
                                              cyc['gkind'][j], cyc['pad'][j], cyc['mb'][j],
                                              cyc['opad'][j], pointwise)
                else:
                    geo = gen_geometry(rng, cyc['nd'][j], direction, cyc['stride'][j],
                                       cyc['dil'][j], cyc['gkind'][j], cyc['pad'][j],
                                       cyc['mb'][j], pointwise)
                items, ops, nondy, pin = chains[j]
                has_sum = any(o['kind'] == 'sum' for o in ops)
                specs.append(dict(geo, dt=dt, dir=direction, tag=cyc['tag'][j],
                                  bias=cyc['bias'][j] if direction in ('fwd', 'bwd_w') else False,
                                  post_ops=ops, items=items, attempt=0, nondy=nondy, pinned=pin,
                                  dst_init=has_sum or dst_init[j],
                                  compact_lists=rng.random() < 0.5))
    # interleave so that a prefix of the list is varied; ids are positions in this order
    rng.shuffle(specs)
    return specs


MIN_SENSITIVITY = 0.3


def sensitivity(c, data):
    """Fraction of dst elements whose value depends on the convolution result: a chain such
    as max(min(y, a), b) or a clip that the few outputs all fall outside tests nothing."""
    t = compute_inputs_f64(c, data)
    with torch.no_grad():
        y = torch_conv(c, t['src'], t['wei'], t['bia'] if c.bias else None)
        v = apply_post_ops(c, y, t)
        v2 = apply_post_ops(c, y + 1e-6 * (1.0 + y.abs()), t)
    return float(torch.mean(((v2 - v).abs() > 1e-12 * (1.0 + v.abs())).double()))


class F16Ambiguous(RuntimeError):
    """Some f16 output lies so close to the overflow threshold that inf or not is a toss-up."""


def harden(c, seed):
    """Re-draw the data and the post-op parameters/order (same post-op items, so the
    coverage is unchanged; a pinned chain keeps its ops and only gets new data) until the
    result depends on the convolution and, for f16, no output is ambiguous about overflow
    (the f16_overflow case must overflow in at least one and at most half the outputs)."""
    c.sensitivity = 1.0
    if c.dir != 'fwd' or not c.post_ops:
        return
    why = ''
    for attempt in range(40):
        if attempt:
            if c.pinned:
                c.attempt = attempt
            else:
                r = random.Random(seed * 1000003 + c.idx * 1009 + attempt)
                ops = build_chain(r, list(c.items), c.nondy)
                if ops is None:
                    continue
                c.post_ops, c.attempt = ops, attempt
        data = make_data(c, seed)
        c.sensitivity = sensitivity(c, data)
        if c.sensitivity < MIN_SENSITIVITY:
            why = 'stays insensitive to the convolution (%.2f)' % c.sensitivity
            continue
        if c.dt == 'f16':
            try:
                exp = expected_and_bound(c, compute_inputs_f64(c, data))
            except F16Ambiguous as e:
                why = str(e)
                continue
            v = exp[0][1]
            c.n_inf = int(np.sum(np.isinf(v)))
            if c.pinned == 'f16_overflow' and not 1 <= c.n_inf <= v.size // 2:
                why = 'overflows in %d of %d outputs' % (c.n_inf, v.size)
                continue
        return
    raise RuntimeError('generator: case %s %s' % (c.cid, why))


# ----------------------------------------------------------------------------- coverage
def categories(c):
    cats = {'dir:' + c.dir, 'nd:%d' % c.nd, 'tag:' + c.tag, 'mb:%d' % c.mb,
            'stride:%d' % max(c.stride), 'dil:%d' % max(c.dil), 'groups:' + c.gkind,
            'pad:' + c.padkind, 'k:%d' % max(c.k)}
    if c.dir == 'fwd':
        cats.add('bias:%s' % ('yes' if c.bias else 'no'))
        n = len(c.post_ops)
        cats.add('chain:%s' % (str(n) if n < 3 else '3+'))
        for op in c.post_ops:
            if op['kind'] == 'eltwise':
                cats.add('po:' + op['name'])
            elif op['kind'] == 'sum':
                cats.add('po:sum')
            else:
                cats.add('po:%s@%s' % (op['op'], op['bkind']))
                cats.add('po:binary')
        if any(op['kind'] == 'eltwise' for op in c.post_ops):
            cats.add('po:any_eltwise')
        if c.dst_init and not any(op['kind'] == 'sum' for op in c.post_ops):
            cats.add('dst_init_without_sum')
        if has_nondyadic(c.post_ops):
            cats.add('po:nondyadic')
            if any(not f32_exact(p) for op in c.post_ops
                   if op['kind'] == 'eltwise' for p in op['params']):
                cats.add('po:nondyadic_eltwise')
            if any(op['kind'] == 'sum' and not f32_exact(op['scale']) for op in c.post_ops):
                cats.add('po:nondyadic_sum')
        names = [(op.get('name'), op.get('op'), tuple(op_params(op))) for op in c.post_ops]
        if names[:3] == [('relu', None, (0.1,)), (None, None, (0.5,)), (None, 'add', ())]:
            cats.add('po:relu0.1+sum0.5+add')
        if c.pinned == 'f16_overflow':
            cats.add('f16_overflow')
    if c.dir == 'bwd_w':
        cats.add('bias_grad:%s' % ('yes' if c.bias else 'no'))
    if c.op == 'deconv':
        cats.add('opad:' + c.opkind)
        if c.opkind != 'none':
            cats.add('opad:any')
    return cats


def count_categories(cases):
    """counts[(dt, dir)][cat] and counts[(dt, '*')][cat] -- post-ops counted per op use."""
    counts = {}
    for c in cases:
        for key in ((c.dt, c.dkey), (c.dt, '*'), ('*', '*')):
            d = counts.setdefault(key, {})
            for cat in categories(c):
                d[cat] = d.get(cat, 0) + 1
            if c.dir == 'fwd':
                for op in c.post_ops:
                    nm = 'uses:' + ('%s@%s' % (op['op'], op['bkind']) if op['kind'] == 'binary'
                                    else op.get('name', 'sum'))
                    d[nm] = d.get(nm, 0) + 1
    return counts


def quota_requirements():
    req = []   # (dt, dir, category, minimum)
    structural = (['nd:1', 'nd:2', 'nd:3', 'tag:nchw', 'tag:nhwc', 'mb:1', 'mb:2',
                   'stride:1', 'stride:2', 'stride:3', 'dil:1', 'dil:2', 'dil:3',
                   'groups:g1', 'groups:grouped', 'groups:dw', 'groups:dw2',
                   'pad:zero', 'pad:sym', 'pad:asym', 'k:1', 'k:2', 'k:3'])
    for dt in ('f32', 'f64'):
        for d in DIRS:
            for cat in structural:
                req.append((dt, d, cat, 2))
        req += [(dt, 'fwd', 'bias:yes', 2), (dt, 'fwd', 'bias:no', 2),
                (dt, 'bwd_w', 'bias_grad:yes', 2), (dt, 'bwd_w', 'bias_grad:no', 2)]
        for e in ELTWISE:
            req.append((dt, 'fwd', 'uses:' + e, 2))
        req.append((dt, 'fwd', 'uses:sum', 2))
        for b in BINARY:
            for k in BKINDS_REQUIRED:
                req.append((dt, 'fwd', 'uses:%s@%s' % (b, k), 1))
        req += [(dt, 'fwd', 'chain:0', 2), (dt, 'fwd', 'chain:1', 2), (dt, 'fwd', 'chain:2', 2),
                (dt, 'fwd', 'chain:3+', 2), (dt, 'fwd', 'dst_init_without_sum', 1)]
    for dt in HALF:
        for d in DIRS:
            for cat in ('nd:1', 'nd:2', 'nd:3', 'tag:nchw', 'tag:nhwc', 'pad:asym'):
                req.append((dt, d, cat, 1))
        req += [(dt, 'fwd', 'bias:yes', 1), (dt, 'fwd', 'po:any_eltwise', 3),
                (dt, 'fwd', 'po:sum', 1), (dt, 'fwd', 'po:binary', 2),
                (dt, 'bwd_w', 'bias_grad:yes', 1), (dt, 'fwd', 'dst_init_without_sum', 1)]
    # non-dyadic post-op parameters in every dtype; in f64 they are what catches a
    # float-parameter regression (TOLERANCES 3)
    for dt, mn in (('f32', 4), ('f64', 4), ('bf16', 2), ('f16', 2)):
        req += [(dt, 'fwd', 'po:nondyadic', mn), (dt, 'fwd', 'po:relu0.1+sum0.5+add', 1)]
    for dt in ('f32', 'f64'):
        req += [(dt, 'fwd', 'po:nondyadic_eltwise', 2), (dt, 'fwd', 'po:nondyadic_sum', 1)]
    req.append(('f16', 'fwd', 'f16_overflow', 1))
    # transposed convolutions: the same variety at a third of the cases, so one case of each
    # (two of the ones that matter most) per dtype and direction
    for dt in ('f32', 'f64'):
        for d in DIRS:
            dd = 'deconv:' + d
            for cat in structural:
                req.append((dt, dd, cat, 1))
            req += [(dt, dd, 'pad:asym', 2), (dt, dd, 'opad:none', 2), (dt, dd, 'opad:yes', 2),
                    (dt, dd, 'opad:ge_stride', 1)]
        req += [(dt, 'deconv:fwd', 'bias:yes', 2), (dt, 'deconv:fwd', 'bias:no', 2),
                (dt, 'deconv:bwd_w', 'bias_grad:yes', 2), (dt, 'deconv:bwd_w', 'bias_grad:no', 1),
                (dt, 'deconv:fwd', 'po:any_eltwise', 3), (dt, 'deconv:fwd', 'po:sum', 1),
                (dt, 'deconv:fwd', 'po:binary', 2), (dt, 'deconv:fwd', 'chain:0', 1),
                (dt, 'deconv:fwd', 'po:relu0.1+sum0.5+add', 1)]
    for dt in HALF:
        for d in DIRS:
            for cat in ('nd:1', 'nd:2', 'nd:3', 'tag:nchw', 'tag:nhwc', 'opad:any'):
                req.append((dt, 'deconv:' + d, cat, 1))
        req += [(dt, 'deconv:fwd', 'bias:yes', 1), (dt, 'deconv:fwd', 'po:any_eltwise', 2),
                (dt, 'deconv:fwd', 'po:binary', 1), (dt, 'deconv:bwd_w', 'bias_grad:yes', 1)]
    return req


def check_quotas(cases):
    counts = count_categories(cases)
    missing = []
    for dt, d, cat, mn in quota_requirements():
        have = counts.get((dt, d), {}).get(cat, 0)
        if have < mn:
            missing.append('%s/%s %s: %d < %d' % (dt, d, cat, have, mn))
    n = len(cases)
    for dt in HALF:
        nb = sum(1 for c in cases if c.dt == dt)
        if not (0.10 <= nb / max(n, 1) <= 0.20):
            missing.append('%s share %d/%d outside [10%%, 20%%]' % (dt, nb, n))
    if n < 300:
        missing.append('only %d cases (< 300)' % n)
    return counts, missing


def print_coverage(counts, out=sys.stdout):
    keys = sorted(set(k for d in counts.values() for k in d))
    cols = [(dt, d) for dt in DTYPES for d in DIRS + ['deconv:' + d for d in DIRS]]
    out.write('coverage (cases per category; uses:X counts post-op uses)\n')
    out.write('%-28s' % 'category' + ''.join('%11s' % ('%s/%s' % (dt, d.replace('deconv:', 't')))
                                            for dt, d in cols) +
              '%8s\n' % 'all')
    for k in keys:
        row = [counts.get(col, {}).get(k, 0) for col in cols]
        out.write('%-28s' % k + ''.join('%11d' % v for v in row) +
                  '%8d\n' % counts.get(('*', '*'), {}).get(k, 0))


# ----------------------------------------------------------------------------- data
def file_dtype(dt):
    return np.float64 if dt == 'f64' else np.float32


def make_data(c, seed):
    r = np.random.default_rng([seed, c.idx, c.attempt])
    fd = file_dtype(c.dt)
    exact = HALF_ROUND[c.dt] if c.dt in HALF else (lambda a: a.astype(fd))
    kf = c.icg * prod(c.k)
    d = {}
    d['src'] = r.uniform(-1, 1, c.src_shape).astype(fd)
    d['wei'] = (r.uniform(-1, 1, c.wei_shape) * (2.0 / math.sqrt(kf))).astype(fd)
    d['diff_dst'] = r.uniform(-1, 1, c.dst_shape).astype(fd)
    # values whose interpretation could be ambiguous for bf16/f16 (is the bias / operand /
    # dst-init rounded to the half type?) are made exact in it so that both readings agree
    d['bia'] = exact(r.uniform(-0.5, 0.5, [c.OC]))
    if c.dst_init:
        d['dst_init'] = exact(r.uniform(-1, 1, c.dst_shape))
    for k, op in enumerate(c.post_ops):
        if op['kind'] == 'binary':
            shp = binary_shape(c, op['bkind'])
            if op['op'] == 'div':
                v = r.uniform(0.5, 2.0, shp) * r.choice([-1.0, 1.0], shp)
            else:
                v = r.uniform(-1, 1, shp)
            d['po%d' % k] = exact(v)
    return d


def compute_inputs_f64(c, data):
    """The values the computation is defined on, as float64 (bf16/f16: rounded inputs)."""
    rnd = input_round(c.dt)
    t = {}
    for name in ('src', 'wei', 'diff_dst', 'bia'):
        t[name] = torch.from_numpy(np.asarray(rnd(data[name]), dtype=np.float64))
    if 'dst_init' in data:
        t['dst_init_t'] = torch.from_numpy(data['dst_init'].astype(np.float64))
    for k in range(len(c.post_ops)):
        if 'po%d' % k in data:
            t['po%d_t' % k] = torch.from_numpy(data['po%d' % k].astype(np.float64))
    return t


def torch_conv(c, x, w, b):
    if c.op == 'deconv':
        return torch_deconv(c, x, w, b)
    pad = []
    for i in reversed(range(c.nd)):
        pad += [c.pl[i], c.pr[i]]
    xp = F.pad(x, pad)
    fn = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[c.nd]
    return fn(xp, w, b, stride=c.stride, padding=0, dilation=c.dil, groups=c.groups)


def torch_deconv(c, x, w, b):
    """Transposed convolution with asymmetric padding: torch pads symmetrically only, so
    compute it unpadded (with output_padding) and crop pl rows from the front, pr from the
    back."""
    fn = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}[c.nd]
    y = fn(x, w, b, stride=c.stride, padding=0, output_padding=c.opad, dilation=c.dil,
           groups=c.groups)
    crop = tuple(slice(c.pl[i], y.shape[2 + i] - c.pr[i]) for i in range(c.nd))
    return y[(slice(None), slice(None)) + crop]


def reduction_length(c):
    """K of TOLERANCES 1 for the case's main output (the bias gradient's is mb * prod(osz))."""
    if c.dir == 'fwd':
        return c.icg * prod(c.k)
    if c.dir == 'bwd_d':
        return c.ocg * prod(c.k)
    return c.mb * prod(c.isz if c.op == 'deconv' else c.osz)


def expected_and_bound(c, t):
    """Exact (float64) result(s) and per-element error bound(s): list of (name, exp, tol)."""
    u = U[c.dt]
    x, w, dd, b = t['src'], t['wei'], t['diff_dst'], t['bia']
    res = []
    if c.dir == 'fwd':
        with torch.no_grad():
            y = torch_conv(c, x, w, b if c.bias else None)
            S = torch_conv(c, x.abs(), w.abs(), b.abs() if c.bias else None)
        K = reduction_length(c)
        B = (K + ACC_EXTRA_TERMS) * u * S
        with torch.no_grad():
            v, B = propagate_post_ops(c, y, B, t, u, PARAM_U[c.dt])
        res.append(('dst', v, B))
    elif c.dir == 'bwd_d':
        xr = x.clone().requires_grad_(True)
        torch_conv(c, xr, w, None).backward(dd)
        xa = x.clone().requires_grad_(True)
        torch_conv(c, xa, w.abs(), None).backward(dd.abs())
        K = reduction_length(c)
        res.append(('diff_src', xr.grad.detach(), (K + ACC_EXTRA_TERMS) * u * xa.grad.detach()))
    else:
        wr = w.clone().requires_grad_(True)
        torch_conv(c, x, wr, None).backward(dd)
        wa = w.clone().requires_grad_(True)
        torch_conv(c, x.abs(), wa, None).backward(dd.abs())
        K = reduction_length(c)
        res.append(('diff_wei', wr.grad.detach(), (K + ACC_EXTRA_TERMS) * u * wa.grad.detach()))
        if c.bias:
            K = c.mb * prod(c.osz)
            dims = [0] + list(range(2, 2 + c.nd))
            db = dd.sum(dim=dims)
            Sb = dd.abs().sum(dim=dims)
            res.append(('diff_bia', db, (K + ACC_EXTRA_TERMS) * u * Sb))
    out = []
    for name, v, B in res:
        v = v.numpy().astype(np.float64)
        B = B.numpy().astype(np.float64)
        if not np.all(np.isfinite(v)) or np.max(np.abs(v), initial=0) > 1e8:
            raise RuntimeError('generator bug: case %s has non-finite/huge expected values' % c.cid)
        if c.dt == 'f16':
            # overflow (TOLERANCES 4): the f32 result z with |z - v| <= SAFETY*B must land
            # on the same side of the threshold as v
            a = np.abs(v)
            amb = (a - SAFETY * B < F16_OVERFLOW) & (a + SAFETY * B >= F16_OVERFLOW)
            if np.any(amb):
                raise F16Ambiguous('has an f16 output within its bound of the overflow '
                                   'threshold (%.6g)' % a[amb].flat[0])
        if c.dt in HALF:
            B = B + OUT_U[c.dt] * (np.abs(v) + B) + OUT_ABS[c.dt]
        tol = SAFETY * B + ABS_FLOOR
        if c.dt == 'f16':
            # float64 result rounded to f16: +-inf where it overflows, as convkit's z does
            v = np.where(np.abs(v) >= F16_OVERFLOW, np.copysign(np.inf, v), v)
        out.append((name, v, tol))
    return out


# ----------------------------------------------------------------------------- compare
def compare(got, exp, tol):
    """-> dict(ok, msg, max_err, tol_at_max, worst_idx, ...)."""
    if got is None:
        return dict(ok=False, msg='no output')
    if tuple(got.shape) != tuple(exp.shape):
        return dict(ok=False, msg='shape %s, expected %s' % (list(got.shape), list(exp.shape)))
    g = got.astype(np.float64)
    nan_g, nan_e = np.isnan(g), np.isnan(exp)
    if np.any(nan_g != nan_e):
        i = tuple(int(a) for a in np.argwhere(nan_g != nan_e)[0])
        return dict(ok=False, msg='NaN mismatch at %s: got=%r expected=%r' % (list(i), g[i], exp[i]),
                    max_err=float('nan'), tol_at_max=float(tol[i]))
    inf_g, inf_e = np.isinf(g), np.isinf(exp)
    if np.any(inf_g != inf_e) or np.any(g[inf_e] != exp[inf_e]):
        i = tuple(int(a) for a in np.argwhere((inf_g != inf_e) | (inf_e & (g != exp)))[0])
        return dict(ok=False, msg='Inf mismatch at %s: got=%r expected=%r' % (list(i), g[i], exp[i]),
                    max_err=float('inf'), tol_at_max=float(tol[i]))
    fin = ~(nan_e | inf_e)
    err = np.where(fin, np.abs(g - np.where(fin, exp, 0.0)), 0.0)
    if err.size == 0:
        return dict(ok=True, max_err=0.0, tol_at_max=0.0, ratio=0.0)
    ratio = err / tol
    im = np.unravel_index(int(np.argmax(err)), err.shape)
    iw = np.unravel_index(int(np.argmax(ratio)), err.shape)
    nbad = int(np.sum(err > tol))
    r = dict(ok=nbad == 0, max_err=float(err[im]), tol_at_max=float(tol[im]),
             ratio=float(ratio[iw]), nbad=nbad, size=err.size)
    if nbad:
        r['msg'] = ('%d/%d elements out of tolerance; worst at %s: got=%.9g expected=%.9g '
                    'err=%.3e tol=%.3e' % (nbad, err.size, [int(a) for a in iw], g[iw], exp[iw],
                                          err[iw], tol[iw]))
    return r


# ----------------------------------------------------------------------------- convkit run
def list_arg(vals, compact):
    if compact and all(v == vals[0] for v in vals):
        return str(vals[0])
    return ','.join(str(v) for v in vals)


def write_case(c, data, expected, cdir):
    os.makedirs(cdir, exist_ok=True)
    paths = {}
    for name in ('src', 'wei', 'bia', 'diff_dst', 'dst_init'):
        if name in data:
            paths[name] = os.path.join(cdir, name + '.npy')
            np.save(paths[name], np.ascontiguousarray(data[name]))
    for k in range(len(c.post_ops)):
        if 'po%d' % k in data:
            paths['po%d' % k] = os.path.join(cdir, 'po%d.npy' % k)
            np.save(paths['po%d' % k], np.ascontiguousarray(data['po%d' % k]))
    for name, v, tol in expected:
        np.save(os.path.join(cdir, 'expected_%s.npy' % name), v)
        np.save(os.path.join(cdir, 'tol_%s.npy' % name), tol)
    paths['out'] = os.path.join(cdir, 'out.npy')
    paths['out_bia'] = os.path.join(cdir, 'out_bia.npy')
    return paths


def build_cmd(c, paths, convkit, engine):
    L = lambda v: list_arg(v, c.compact_lists)
    cmd = [convkit, 'run', '--dir=' + c.dir, '--engine=' + engine, '--dt=' + c.dt,
           '--tag=' + c.tag, '--stride=' + L(c.stride), '--pad-l=' + L(c.pl),
           '--pad-r=' + L(c.pr), '--dilation=' + L(c.dil), '--groups=%d' % c.groups]
    if c.op == 'deconv':
        cmd.insert(2, '--op=deconv')
        if any(c.opad) or c.compact_lists:
            cmd.append('--output-padding=' + L(c.opad))
    if c.dir == 'fwd':
        cmd += ['--src=' + paths['src'], '--wei=' + paths['wei']]
        if c.bias:
            cmd.append('--bia=' + paths['bia'])
        if c.post_ops:
            spell = []
            for k, op in enumerate(c.post_ops):
                if op['kind'] == 'eltwise':
                    spell.append(':'.join([op['name']] + [fmt_num(p) for p in op['params']]))
                elif op['kind'] == 'sum':
                    spell.append('sum:' + fmt_num(op['scale']))
                else:
                    spell.append('%s:%s' % (op['op'], paths['po%d' % k]))
            cmd.append('--post-ops=' + '+'.join(spell))
        if c.dst_init:
            cmd.append('--dst-init=' + paths['dst_init'])
        cmd.append('--out=' + paths['out'])
    elif c.dir == 'bwd_d':
        cmd += ['--diff-dst=' + paths['diff_dst'], '--wei=' + paths['wei'],
                '--src-shape=' + ','.join(map(str, c.src_shape)), '--out=' + paths['out']]
    else:
        cmd += ['--diff-dst=' + paths['diff_dst'], '--src=' + paths['src'],
                '--wei-shape=' + ','.join(map(str, c.wei_shape)), '--out=' + paths['out']]
        if c.bias:
            cmd.append('--out-bia=' + paths['out_bia'])
    return cmd


def run_one(c, paths, cmd, expected):
    """-> (ok, message lines)."""
    qcmd = shlex.join(cmd)
    for p in (paths['out'], paths['out_bia']):
        if os.path.exists(p):
            os.remove(p)
    try:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=CASE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return False, ['FAIL %s: timeout after %ds | %s' % (c.cid, CASE_TIMEOUT_S, qcmd)]
    except OSError as e:
        return False, ['FAIL %s: cannot run convkit: %s | %s' % (c.cid, e, qcmd)]
    stderr = p.stderr.decode('utf-8', 'replace').rstrip()
    if p.returncode != 0:
        lines = ['FAIL %s: convkit exited with status %d | %s' % (c.cid, p.returncode, qcmd)]
        lines += ['    stderr: ' + l for l in (stderr.splitlines() or ['(empty)'])[-20:]]
        return False, lines
    fails = []
    worst = None
    want_dtype = np.dtype('<f8') if c.dt == 'f64' else np.dtype('<f4')
    for name, v, tol in expected:
        path = paths['out_bia'] if name == 'diff_bia' else paths['out']
        try:
            got = np.load(path, allow_pickle=False)
        except Exception as e:  # noqa: BLE001 -- any unreadable output is a failure
            fails.append('%s: cannot read %s (%s)' % (name, path, e))
            continue
        if got.dtype != want_dtype:
            fails.append('%s: file dtype %s, expected %s' % (name, got.dtype.str, want_dtype.str))
            continue
        r = compare(got, v, tol)
        if not r['ok']:
            fails.append('%s: %s' % (name, r.get('msg', '')))
            if 'max_err' in r and (worst is None or not r['max_err'] <= worst[0]):
                worst = (r['max_err'], r['tol_at_max'])
    if not fails:
        return True, []
    we = 'max_abs_err=%.3e tol=%.3e' % worst if worst else 'max_abs_err=n/a tol=n/a'
    return False, ['FAIL %s: %s [%s] | %s' % (c.cid, we, '; '.join(fails), qcmd)]


# ----------------------------------------------------------------------------- self-test
def np_pad(x, pl, pr):
    return np.pad(x, [(0, 0), (0, 0)] + list(zip(pl, pr)))


def tap_slices(c, tap):
    return tuple(slice(tap[i] * c.dil[i], tap[i] * c.dil[i] + (c.osz[i] - 1) * c.stride[i] + 1,
                       c.stride[i]) for i in range(c.nd))


def np_fwd(c, x, w, b, pl, pr, group_shift=0):
    xp = np_pad(x, pl, pr)
    y = np.zeros(c.dst_shape, dtype=x.dtype)
    G = c.groups
    for g in range(G):
        gw = (g + group_shift) % G
        for tap in np.ndindex(*c.k):
            xs = xp[(slice(None), slice(g * c.icg, (g + 1) * c.icg)) + tap_slices(c, tap)]
            wt = w[(slice(gw * c.ocg, (gw + 1) * c.ocg), slice(None)) + tap]
            y[:, g * c.ocg:(g + 1) * c.ocg] += np.moveaxis(np.tensordot(wt, xs, axes=([1], [1])), 0, 1)
    if b is not None:
        y += b.reshape([1, -1] + [1] * c.nd)
    return y


def np_bwd_d(c, dd, w, pl, pr, group_shift=0):
    padded = [c.mb, c.C] + [c.isz[i] + pl[i] + pr[i] for i in range(c.nd)]
    dxp = np.zeros(padded, dtype=dd.dtype)
    G = c.groups
    for g in range(G):
        gw = (g + group_shift) % G
        for tap in np.ndindex(*c.k):
            wt = w[(slice(gw * c.ocg, (gw + 1) * c.ocg), slice(None)) + tap]
            ddg = dd[:, g * c.ocg:(g + 1) * c.ocg]
            contrib = np.moveaxis(np.tensordot(wt, ddg, axes=([0], [1])), 0, 1)
            dxp[(slice(None), slice(g * c.icg, (g + 1) * c.icg)) + tap_slices(c, tap)] += contrib
    crop = tuple(slice(pl[i], pl[i] + c.isz[i]) for i in range(c.nd))
    return np.ascontiguousarray(dxp[(slice(None), slice(None)) + crop])


def np_bwd_w(c, dd, x, pl, pr):
    xp = np_pad(x, pl, pr)
    dw = np.zeros(c.wei_shape, dtype=dd.dtype)
    sp = list(range(2, 2 + c.nd))
    for g in range(c.groups):
        for tap in np.ndindex(*c.k):
            xs = xp[(slice(None), slice(g * c.icg, (g + 1) * c.icg)) + tap_slices(c, tap)]
            ddg = dd[:, g * c.ocg:(g + 1) * c.ocg]
            dw[(slice(g * c.ocg, (g + 1) * c.ocg), slice(None)) + tap] = \
                np.tensordot(ddg, xs, axes=([0] + sp, [0] + sp))
    return dw


# Transposed convolutions in scatter form (each input element adds its kernel-weighted copy
# to the output), independent of the gather-form convolutions above: out on the uncropped
# grid of (isz - 1) * stride + ext + opad rows, then pl rows cropped from the front, pr from
# the back.
def deconv_tap_slices(c, tap):
    return tuple(slice(tap[i] * c.dil[i], tap[i] * c.dil[i] + (c.isz[i] - 1) * c.stride[i] + 1,
                       c.stride[i]) for i in range(c.nd))


def deconv_full(c):
    return [(c.isz[i] - 1) * c.stride[i] + c.ext[i] + c.opad[i] for i in range(c.nd)]


def np_deconv_fwd(c, x, w, b, pl, pr, group_shift=0):
    full = np.zeros([c.mb, c.OC] + deconv_full(c), dtype=x.dtype)
    G = c.groups
    for g in range(G):
        gw = (g + group_shift) % G
        xg = x[:, g * c.icg:(g + 1) * c.icg]
        for tap in np.ndindex(*c.k):
            wt = w[(slice(gw * c.icg, (gw + 1) * c.icg), slice(None)) + tap]     # [icg, ocg]
            contrib = np.moveaxis(np.tensordot(xg, wt, axes=([1], [0])), -1, 1)
            full[(slice(None), slice(g * c.ocg, (g + 1) * c.ocg)) + deconv_tap_slices(c, tap)] += contrib
    crop = tuple(slice(pl[i], full.shape[2 + i] - pr[i]) for i in range(c.nd))
    y = np.ascontiguousarray(full[(slice(None), slice(None)) + crop])
    if b is not None:
        y += b.reshape([1, -1] + [1] * c.nd)
    return y


def np_deconv_bwd_d(c, dd, w, pl, pr, group_shift=0):
    ddf = np_pad(dd, pl, pr)       # back on the uncropped grid
    dx = np.zeros(c.src_shape, dtype=dd.dtype)
    G = c.groups
    for g in range(G):
        gw = (g + group_shift) % G
        for tap in np.ndindex(*c.k):
            wt = w[(slice(gw * c.icg, (gw + 1) * c.icg), slice(None)) + tap]     # [icg, ocg]
            ds = ddf[(slice(None), slice(g * c.ocg, (g + 1) * c.ocg)) + deconv_tap_slices(c, tap)]
            dx[:, g * c.icg:(g + 1) * c.icg] += np.moveaxis(np.tensordot(ds, wt, axes=([1], [1])), -1, 1)
    return dx


def np_deconv_bwd_w(c, dd, x, pl, pr):
    ddf = np_pad(dd, pl, pr)
    dw = np.zeros(c.wei_shape, dtype=dd.dtype)
    sp = list(range(2, 2 + c.nd))
    for g in range(c.groups):
        xg = x[:, g * c.icg:(g + 1) * c.icg]
        for tap in np.ndindex(*c.k):
            ds = ddf[(slice(None), slice(g * c.ocg, (g + 1) * c.ocg)) + deconv_tap_slices(c, tap)]
            dw[(slice(g * c.icg, (g + 1) * c.icg), slice(None)) + tap] = \
                np.tensordot(xg, ds, axes=([0] + sp, [0] + sp))
    return dw


def past_last_window(c):
    """Mask of the dst elements that no input reaches (rows output_padding adds past the
    last window) -- None if there are none."""
    mask = np.zeros(c.dst_shape, dtype=bool)
    for i in range(c.nd):
        last = (c.isz[i] - 1) * c.stride[i] + c.ext[i] - c.pl[i]
        if last < c.osz[i]:
            idx = [slice(None)] * (2 + c.nd)
            idx[2 + i] = slice(last, None)
            mask[tuple(idx)] = True
    return mask if mask.any() else None


def np_compute(c, data, prec, bug=None, round_out=True):
    """Independent implementation at compute precision prec (float32/float64) with an
    optional injected bug. Returns list of (name, array as float64).  Post-op parameters
    are rounded to float32 when prec is float32 (what an f32 kernel does) and used as
    double otherwise, unless the bug is f32_params."""
    rnd = input_round(c.dt)
    out_rnd = HALF_ROUND.get(c.dt)
    if bug == 'as_bf16':            # an f16 problem dispatched to the bf16 conversions
        if c.dt != 'f16':
            return None
        rnd = out_rnd = bf16_round
    pround = None
    if prec == np.float32 or bug == 'f32_params':
        pround = lambda p: float(np.float32(p))
    if bug == 'f32_params' and (c.dt != 'f64' or not has_nondyadic(c.post_ops)):
        return None
    x = np.asarray(rnd(data['src']), dtype=prec)
    w = np.asarray(rnd(data['wei']), dtype=prec)
    dd = np.asarray(rnd(data['diff_dst']), dtype=prec)
    b = np.asarray(data['bia'], dtype=prec)
    pl, pr = list(c.pl), list(c.pr)
    if bug == 'pad_shift':
        for i in range(c.nd):
            if pr[i] > 0:
                pl[i] += 1
                pr[i] -= 1
                break
            if pl[i] > 0:
                pl[i] -= 1
                pr[i] += 1
                break
        else:
            return None
    if bug == 'flip_kernel':
        w = np.ascontiguousarray(np.flip(w, axis=tuple(range(2, 2 + c.nd))))
    if bug == 'drop_last_post_op' and c.dir != 'fwd':
        return None
    if bug == 'opad_unwritten' and (c.op != 'deconv' or c.dir != 'fwd' or past_last_window(c) is None):
        return None
    fwd_fn, bwd_d_fn, bwd_w_fn = ((np_deconv_fwd, np_deconv_bwd_d, np_deconv_bwd_w) if c.op == 'deconv'
                                  else (np_fwd, np_bwd_d, np_bwd_w))
    gs = 1 if bug == 'group_shift' else 0
    if gs and c.groups == 1:
        return None
    out = []
    if c.dir == 'fwd':
        y = fwd_fn(c, x, w, None if (not c.bias or bug == 'no_bias') else b, pl, pr, gs)
        if bug == 'no_bias' and not c.bias:
            return None
        tt = {}
        if 'dst_init' in data:
            tt['dst_init_t'] = torch.from_numpy(np.asarray(data['dst_init'], dtype=prec))
        for k in range(len(c.post_ops)):
            if 'po%d' % k in data:
                tt['po%d_t' % k] = torch.from_numpy(np.asarray(data['po%d' % k], dtype=prec))
        upto = None
        if bug == 'drop_last_post_op':
            if not c.post_ops:
                return None
            upto = len(c.post_ops) - 1
        with torch.no_grad():
            y = apply_post_ops(c, torch.from_numpy(y), tt, upto, pround).numpy()
        if bug == 'opad_unwritten':     # rows past the last window keep dst's prior contents
            prior = np.asarray(data['dst_init'], dtype=prec) if c.dst_init else np.zeros_like(y)
            y = np.where(past_last_window(c), prior, y)
        out.append(('dst', y))
    elif c.dir == 'bwd_d':
        if bug == 'no_bias':
            return None
        out.append(('diff_src', bwd_d_fn(c, dd, w, pl, pr, gs)))
    else:
        if bug == 'group_shift':
            return None
        dw = bwd_w_fn(c, dd, x, pl, pr)
        if bug == 'flip_kernel':
            dw = np.ascontiguousarray(np.flip(dw, axis=tuple(range(2, 2 + c.nd))))
        out.append(('diff_wei', dw))
        if c.bias:
            sp = tuple([0] + list(range(2, 2 + c.nd)))
            if bug == 'no_bias':     # bias gradient forgets the minibatch or the last column
                if c.mb > 1:
                    db = dd[:1].sum(axis=sp)
                elif c.osz[-1] > 1:
                    db = dd[..., :-1].sum(axis=sp)
                else:
                    return None
            else:
                db = dd.sum(axis=sp)
            out.append(('diff_bia', db))
        elif bug == 'no_bias':
            return None
    res = []
    for name, a in out:
        a = np.asarray(a)
        if out_rnd is not None and round_out:
            a = out_rnd(a)
        res.append((name, a.astype(np.float64)))
    return res


def post_bug(c, data, base, bug, rng):
    """Bugs applied to a correct result: shift_out, layout, one_elem."""
    res = []
    for name, a in base:
        a = a.copy()
        if name == 'diff_bia':
            res.append((name, a))
            continue
        if bug == 'shift_out':
            if a.shape[-1] < 2:
                return None
            a[..., 1:] = a[..., :-1].copy()
            a[..., 0] = 0.0
        elif bug == 'layout':
            # channels-first buffer read back as channels-last
            if a.shape[1] < 2 or prod(a.shape[2:]) < 2:
                return None
            shp = a.shape
            a = np.moveaxis(a.reshape((shp[0],) + tuple(shp[2:]) + (shp[1],)), -1, 1).copy()
        elif bug == 'one_elem':
            # one element off by one typical product term (a missing or extra tap)
            if c.dir == 'fwd':
                delta = np.mean(np.abs(data['src'])) * np.mean(np.abs(data['wei']))
            elif c.dir == 'bwd_d':
                delta = np.mean(np.abs(data['diff_dst'])) * np.mean(np.abs(data['wei']))
            else:
                delta = np.mean(np.abs(data['diff_dst'])) * np.mean(np.abs(data['src']))
            i = tuple(rng.randrange(s) for s in a.shape)
            a[i] += delta
        elif bug == 'nan_elem':
            a[tuple(rng.randrange(s) for s in a.shape)] = np.nan
        res.append((name, a))
    return res


def check_half_rounding():
    """f16_round (numpy) and bf16_round against torch's conversions, ties and subnormals
    included, plus the overflow threshold.  -> list of problems."""
    r = np.random.default_rng(7)
    h = r.integers(0, 0x7C00, 20000).astype(np.uint16).view(np.float16).astype(np.float64)
    mids = (h + np.nextafter(h.astype(np.float16), np.float16(np.inf)).astype(np.float64)) / 2
    vals = np.concatenate([r.uniform(-7e4, 7e4, 20000), r.uniform(-1e-4, 1e-4, 20000),
                           r.standard_normal(20000), mids, -mids,
                           [65504.0, 65519.99, 65520.0, -65520.0, 2.0 ** -25, 3 * 2.0 ** -26]])
    vals = vals.astype(np.float32)
    out = []
    got = f16_round(vals)
    ref = torch.from_numpy(vals).half().float().numpy()
    if not np.array_equal(got.view(np.uint32), ref.view(np.uint32)):
        out.append('f16_round disagrees with torch .half() on %d values'
                   % int(np.sum(got.view(np.uint32) != ref.view(np.uint32))))
    if not (f16_round(np.float32(65519.99)) == 65504 and np.isinf(f16_round(np.float32(65520)))):
        out.append('f16 overflow threshold is not 65520')
    vals = vals[np.abs(vals) < 1e38]
    got = bf16_round(vals)
    ref = torch.from_numpy(vals).bfloat16().float().numpy()
    if not np.array_equal(got.view(np.uint32), ref.view(np.uint32)):
        out.append('bf16_round disagrees with torch .bfloat16() on %d values'
                   % int(np.sum(got.view(np.uint32) != ref.view(np.uint32))))
    return out


# Bugs with their own "meaningful" threshold.  f32_params (f64 post-op parameters rounded
# to float) changes nothing where a clip bound is never reached or a relu slope only meets
# positive values; elsewhere it moves the result by ~1e-9 relative, and the pinned
# relu:0.1+sum:0.5+add f64 case must catch it in any case.  as_bf16 (an f16 problem run
# through the bf16 conversions) moves the result by up to 2^-9 relative.
MEANINGFUL_BUG = {'f32_params': 1e-12, 'as_bf16': 1e-3}


def self_test(cases, seed, verbose=False):
    prec_of = {'f64': np.float64, 'f32': np.float32, 'bf16': np.float32, 'f16': np.float32}
    bugs_direct = ['pad_shift', 'flip_kernel', 'no_bias', 'group_shift', 'drop_last_post_op',
                   'f32_params', 'as_bf16', 'opad_unwritten']
    bugs_post = ['shift_out', 'layout', 'one_elem', 'nan_elem']
    stats = {}
    problems = check_half_rounding()
    rng = random.Random(seed + 1)
    npass, nfail = (1, 0) if not problems else (0, len(problems))
    for c in cases:
        data = make_data(c, seed)
        t = compute_inputs_f64(c, data)
        exp = expected_and_bound(c, t)
        # oracle sanity: independent float64 numpy implementation vs torch float64
        cross = np_compute(c, data, np.float64, round_out=False)
        for (n1, v, tol), (n2, a) in zip(exp, cross):
            fin = np.isfinite(v)
            scale = 1.0 + np.max(np.abs(v[fin]), initial=0)
            if (np.max(np.abs(a - v)[fin], initial=0) > 1e-11 * scale
                    or not np.all(np.abs(a[~fin]) >= F16_OVERFLOW)):
                nfail += 1
                problems.append('oracle disagreement numpy vs torch (f64) on %s/%s' % (c.cid, n1))
        # positive control: an independent implementation at the compute precision
        pos = np_compute(c, data, prec_of[c.dt])
        ok = True
        for (n1, v, tol), (n2, a) in zip(exp, pos):
            r = compare(a, v, tol)
            if not r['ok']:
                ok = False
                problems.append('positive control rejected: %s %s: %s' % (c.cid, n1, r.get('msg')))
        st = stats.setdefault(('positive', c.dt), [0, 0, 0, 0.0])
        st[0] += 1
        st[1] += ok
        st[3] = max(st[3], max(compare(a, v, tol).get('ratio', np.inf)
                               for (_, v, tol), (_, a) in zip(exp, pos)))
        npass += ok
        nfail += not ok
        # negative controls
        for bug in bugs_direct + bugs_post:
            if bug in bugs_direct:
                got = np_compute(c, data, prec_of[c.dt], bug)
            else:
                got = post_bug(c, data, pos, bug, rng)
            if got is None:
                continue
            change = 0.0
            rejected = False
            for (n1, v, tol), (n2, a) in zip(exp, got):
                with np.errstate(invalid='ignore'):
                    d = np.where(a == v, 0.0, np.abs(a - v))     # equal infinities: no change
                d[np.isnan(d)] = np.inf
                fin = np.isfinite(v)
                change = max(change, np.max(d, initial=0) /
                             (1.0 + np.max(np.abs(v[fin]), initial=0)))
                rejected |= not compare(a, v, tol)['ok']
            thr = MEANINGFUL_BUG.get(bug, MEANINGFUL[c.dt])
            meaningful = change > thr
            if bug == 'f32_params' and c.pinned == 'relu_sum_add' and not rejected:
                nfail += 1
                problems.append('bug f32_params NOT rejected on the pinned case %s' % c.cid)
            st = stats.setdefault((bug, c.dt), [0, 0, 0, 0])   # meaningful, rejected, small, small rejected
            if meaningful:
                st[0] += 1
                st[1] += rejected
                if rejected:
                    npass += 1
                else:
                    nfail += 1
                    problems.append('bug %s NOT rejected on %s (relative change %.2e)' % (bug, c.cid, change))
            else:
                st[2] += 1
                st[3] += rejected
                if verbose:
                    print('  (below threshold: bug %s on %s: relative change %.2e, %s)'
                          % (bug, c.cid, change, 'rejected' if rejected else 'accepted'))
    if any(c.dt == 'f64' and c.dir == 'fwd' and has_nondyadic(c.post_ops) for c in cases):
        if stats.get(('f32_params', 'f64'), [0, 0])[1] == 0:
            nfail += 1
            problems.append('bug f32_params (f64 with float32-rounded post-op parameters) is '
                            'rejected by no f64 case')
    print('self-test over %d cases' % len(cases))
    for dt in DTYPES:
        s = stats.get(('positive', dt))
        if s:
            print('  positive control %-5s: %d/%d pass (worst err/tol = %.3f)' % (dt, s[1], s[0], s[3]))
    for bug in bugs_direct + bugs_post:
        for dt in DTYPES:
            s = stats.get((bug, dt))
            if s:
                thr = MEANINGFUL_BUG.get(bug, MEANINGFUL[dt])
                print('  bug %-18s %-5s: rejected %d/%d meaningful; %d/%d below the %.0e threshold rejected'
                      % (bug, dt, s[1], s[0], s[3], s[2], thr))
    for p in problems[:50]:
        print('  PROBLEM: ' + p)
    if len(problems) > 50:
        print('  ... %d more problems' % (len(problems) - 50))
    return npass, nfail


# ----------------------------------------------------------------------------- main
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--convkit', help='path to the convkit binary')
    ap.add_argument('--engine', default='ref', choices=['ref', 'cpu', 'cuda'])
    ap.add_argument('--seed', type=int, default=1234)
    ap.add_argument('--cases', type=int, default=DEFAULT_CASES)
    ap.add_argument('--workdir', help='parent directory for the temporary case files')
    ap.add_argument('--dtypes', default=','.join(DTYPES))
    ap.add_argument('--filter', default='', help='run only cases whose id contains SUBSTR')
    ap.add_argument('--jobs', type=int, default=2)
    ap.add_argument('--keep', action='store_true', help='keep the work directory')
    ap.add_argument('--dry-run', action='store_true')
    ap.add_argument('--self-test', action='store_true')
    ap.add_argument('--verbose', action='store_true', help='--self-test: list every perturbation too small to count')
    args = ap.parse_args(argv)

    dtypes = [d.strip() for d in args.dtypes.split(',') if d.strip()]
    for d in dtypes:
        if d not in DTYPES:
            ap.error('unknown dtype %r (supported: %s)' % (d, ','.join(DTYPES)))
    if not (args.dry_run or args.self_test):
        if not args.convkit:
            ap.error('--convkit is required (or use --dry-run / --self-test)')
        if not os.path.isfile(args.convkit) or not os.access(args.convkit, os.X_OK):
            ap.error('convkit binary not found or not executable: %s' % args.convkit)
        args.convkit = os.path.abspath(args.convkit)

    cases = generate_cases(args.seed, args.cases)
    counts, missing = check_quotas(cases)
    if missing:
        print_coverage(counts)
        print('COVERAGE QUOTA NOT MET:')
        for m in missing:
            print('  ' + m)
        print('0 passed, %d failed' % len(missing))
        return 1

    selected = [c for c in cases if c.dt in dtypes and args.filter in c.cid]
    if args.self_test:
        npass, nfail = self_test(selected, args.seed, args.verbose)
        print('%d passed, %d failed' % (npass, nfail))
        return 0 if (nfail == 0 and npass > 0) else 1

    parent = args.workdir
    if parent:
        os.makedirs(parent, exist_ok=True)
    work = tempfile.mkdtemp(prefix='convkit_oracle_', dir=parent)
    if '+' in work or ':' in work:
        print('work directory %r contains "+" or ":", which would break --post-ops' % work)
        return 2
    try:
        prepared = []
        for c in selected:
            data = make_data(c, args.seed)
            exp = expected_and_bound(c, compute_inputs_f64(c, data))
            paths = write_case(c, data, exp, os.path.join(work, 'case_%03d' % c.idx))
            cmd = build_cmd(c, paths, args.convkit or 'convkit', args.engine)
            prepared.append((c, paths, cmd, exp))
        if args.dry_run:
            print_coverage(counts)
            fwd_po = [c for c in cases if c.dir == 'fwd' and c.post_ops]
            print('post-op cases: %d; smallest fraction of outputs that depend on the conv: %.2f'
                  % (len(fwd_po), min([c.sensitivity for c in fwd_po] or [1.0])))
            for c, paths, cmd, exp in prepared:
                print('CMD %s | %s' % (c.cid, shlex.join(cmd)))
            print('dry run: %d of %d cases prepared in %s%s' % (
                len(prepared), len(cases), work, '' if args.keep else ' (removed)'))
            return 0 if prepared else 1
        print('convkit oracle: seed=%d engine=%s cases=%d selected=%d workdir=%s' % (
            args.seed, args.engine, len(cases), len(selected), work))
        sys.stdout.flush()
        lock = threading.Lock()

        def job(item):
            c, paths, cmd, exp = item
            return run_one(c, paths, cmd, exp)

        npass = nfail = 0
        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as ex:
            for ok, lines in ex.map(job, prepared):
                with lock:
                    if ok:
                        npass += 1
                    else:
                        nfail += 1
                        for l in lines:
                            print(l)
                        sys.stdout.flush()
        if args.keep:
            print('work directory kept: %s' % work)
        print('%d passed, %d failed' % (npass, nfail))
        return 0 if (nfail == 0 and npass > 0) else 1
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == '__main__':
    sys.exit(main())
