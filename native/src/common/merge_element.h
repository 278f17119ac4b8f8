// The per-element merge arithmetic, shared verbatim by the CPU and CUDA backends.
#pragma once
#include "numerics.h"
#include "smelter.h"

namespace smelter {

// Everything a merge kernel needs, resolved on the host from smelter_merge_params.
// Passed to CUDA kernels by value (about 1.3 KB, under the 4 KB parameter limit).
struct MergePlan {
    int32_t method;
    int32_t n;
    int32_t sparsify;
    int32_t consensus;
    int32_t normalize;
    int32_t key_dtype;
    int32_t zero_elect;      // what a zero vote elects: +1, -1 or 0 (from zero_sign)
    int32_t has_select;      // a position-select tensor is given (KernelInputs::select)
    int32_t has_element_weights;  // LINEAR with per-element weights (KernelInputs::element_weights)
    int32_t ranked_inverse;  // RANKED with INVERSE_DENSITY: kept deltas scale by 2^24 / keep limit
    float lambda;
    float divisor;           // normalisation divisor when there is no consensus (LINEAR and TA)
    float min_divisor;       // consensus normalisation: lower bound of the divisor (0: none)
    uint32_t select_threshold;
    uint32_t nonfinite_bits; // count outputs whose |f32 bits| >= this (nonfinite_bound of out's dtype; 0: none)
    uint64_t stream_key;     // Philox key for RANDOM and RANKED
    int64_t element_offset;  // global index of element 0
    int64_t row_length;      // RANKED: elements per ranked row (>= 1)
    float weights[SMELTER_MAX_MODELS];
    float scales[SMELTER_MAX_MODELS];       // rescale of kept deltas (1 = none)
    float floors[SMELTER_MAX_MODELS];       // element-weight floors
    uint32_t thresholds[SMELTER_MAX_MODELS];  // MAGNITUDE(_OUTLIERS): keep key >= threshold
    uint32_t upper[SMELTER_MAX_MODELS];       // MAGNITUDE_OUTLIERS: keep key <= upper
    uint32_t keep24[SMELTER_MAX_MODELS];      // RANDOM: keep when 24 random bits < keep24; RANKED: lowest limit
    uint32_t span24[SMELTER_MAX_MODELS];      // RANKED: limit of the largest rank minus keep24
};

// The smallest |f32 bits| that is NaN or infinite once rounded to nearest even into `dtype`: the
// f32 infinity, bf16's halfway point above its largest value (0x7F7F8000 rounds to 0x7F80), and
// 65520 for f16 (halfway between 65504 and 65536, which rounds to the even, infinite side).
SMELTER_HD uint32_t nonfinite_bound(int32_t dtype) {
    return dtype == SMELTER_BF16 ? 0x7F7F8000u : dtype == SMELTER_F16 ? 0x477FF000u : 0x7F800000u;
}

// Internal sparsify mode: the keep decision was made beforehand (rnd(i) != 0 keeps). The CPU
// kernels compute keys or random draws in separate vectorised loops and merge with this.
constexpr int kSparsifyPrecomputed = 100;
// Internal sparsify mode: MAGNITUDE decided by the bits of |delta| against a bound per model,
// rnd(i) (keep where they are greater as int32; see magnitude_bound in the CPU kernels).
constexpr int kSparsifyBound = 101;

// Random stream ids (the fourth Philox counter word); later methods take new ids.
enum RandomStream : uint32_t { STREAM_DARE = 0, STREAM_DELLA = 1 };

// RANKED: the keep limit of rank r (0 = smallest |delta|) in a row of p.row_length elements, in
// integers so both backends agree: keep24 + floor(span24 * r / (L - 1)), the midpoint for L = 1.
// The quotient comes from a double division (a 64-bit integer division costs tens of cycles on a CPU
// and far more on a GPU), corrected in integers to the exact floor: the double is off by at most one.
SMELTER_HD uint32_t ranked_limit(const MergePlan &p, int i, uint32_t rank) {
    const uint64_t last = static_cast<uint64_t>(p.row_length) - 1;
    if (last == 0) return p.keep24[i] + p.span24[i] / 2;
    const uint64_t num = static_cast<uint64_t>(p.span24[i]) * rank;
    uint64_t q = static_cast<uint64_t>(static_cast<double>(num) / static_cast<double>(last));
    if (q * last > num) --q;
    else if ((q + 1) * last <= num) ++q;
    return p.keep24[i] + static_cast<uint32_t>(q);
}

// RANKED: what the merge reads for model i at one element: its keep limit when its 24 random bits
// (stream STREAM_DELLA) fall below it, else 0 (dropped). A limit is never 0 for a density > 0.
SMELTER_HD uint32_t ranked_keep(const MergePlan &p, int i, uint32_t bits24, uint32_t rank) {
    const uint32_t limit = ranked_limit(p, i, rank);
    return bits24 < limit ? limit : 0u;
}

SMELTER_HD int sign_of(float v) { return (v > 0.0f) - (v < 0.0f); }
SMELTER_HD float quiet_nan() { return bits_float(0x7FC00000u); }

// Whether model i keeps its delta d at this element (rnd: its 24 random bits for RANDOM, its
// ranked_keep() value for RANKED, its keep flag for kSparsifyPrecomputed).
SMELTER_HD bool sparsify_keep(const MergePlan &p, int sparsify, int i, float d, uint32_t rnd) {
    if (sparsify == SMELTER_SPARSIFY_MAGNITUDE) return magnitude_key(d, p.key_dtype) >= p.thresholds[i];
    if (sparsify == SMELTER_SPARSIFY_MAGNITUDE_OUTLIERS) {
        const uint32_t key = magnitude_key(d, p.key_dtype);
        return (key >= p.thresholds[i]) & (key <= p.upper[i]);
    }
    if (sparsify == SMELTER_SPARSIFY_RANDOM) return rnd < p.keep24[i];
    if (sparsify == kSparsifyPrecomputed || sparsify == SMELTER_SPARSIFY_RANKED) return rnd != 0;
    if (sparsify == kSparsifyBound)
        return static_cast<int32_t>(float_bits(d) & 0x7FFFFFFFu) > static_cast<int32_t>(rnd);
    return true;
}

// Whether the position-select score keeps this element (SCE): f32 key of |score| >= threshold.
SMELTER_HD bool select_keep(const MergePlan &p, float score) {
    return magnitude_key(score, KEY_F32) >= p.select_threshold;
}

// The population variance of the n deltas (SMELTER_METHOD_VARIANCE), sums in model order.
template <int MAXN, bool EXACT, class ModelValues>
SMELTER_HD float delta_variance(const MergePlan &p, float x0, ModelValues x) {
    const int n = EXACT ? MAXN : p.n;
    float sum = 0.0f;
    for (int i = 0; i < MAXN; ++i) {
        if (!EXACT && i >= n) break;
        sum = sum + (x(i) - x0);
    }
    const float mean = sum / static_cast<float>(n);
    float sq = 0.0f;
    for (int i = 0; i < MAXN; ++i) {
        if (!EXACT && i >= n) break;
        const float c = (x(i) - x0) - mean;
        sq = sq + c * c;
    }
    return sq / static_cast<float>(n);
}

// Merges one element. x0: base value (unused by LINEAR); x(i): model i's value; rnd(i): 24 random
// bits for model i (RANDOM), its ranked_keep() value (RANKED) or its keep flag (kSparsifyPrecomputed,
// which stands for any sparsify whose decisions the caller made; a keep flag of RANKED is its limit);
// ew(i): model i's element weight (plan.has_element_weights); selected: the position-select verdict
// (plan.has_select). MAXN bounds the model count
// at compile time so the per-model arrays stay in registers; EXACT means n == MAXN. Writes the
// elected sign (+1, -1, 0; 0 without consensus) and returns the f32 result. The order of every floating-point operation here is the contract
// that makes the CPU and CUDA backends agree bit for bit; change it on both or neither.
//
// METHOD, SPARSIFY and CONSENSUS fix those choices at compile time (the CPU kernels instantiate
// each combination so the element loop has no branches and vectorises); -1 reads them from the
// plan (the CUDA kernel, where uniform branches cost nothing).
template <int MAXN, bool EXACT, int METHOD = -1, int SPARSIFY = -1, int CONSENSUS = -1, class ModelValues,
          class RandomBits, class ElementWeights>
SMELTER_HD float merge_element(const MergePlan &p, float x0, ModelValues x, RandomBits rnd, ElementWeights ew,
                               bool selected, int *elected) {
    const int n = EXACT ? MAXN : p.n;
    const int method = METHOD >= 0 ? METHOD : p.method;
    const int sparsify = SPARSIFY >= 0 ? SPARSIFY : p.sparsify;
    const int consensus = CONSENSUS >= 0 ? CONSENSUS : p.consensus;
    bool nan_input = x0 != x0;
    *elected = 0;
    if (method == SMELTER_METHOD_LINEAR) {
        float acc = -0.0f;  // the exact additive identity: a single -0.0 input stays -0.0
        float div = 0.0f;   // with element weights: their sum here
        for (int i = 0; i < MAXN; ++i) {
            if (!EXACT && i >= n) break;
            nan_input |= x(i) != x(i);
            float w = p.weights[i];
            if (p.has_element_weights) {
                const float e = ew(i);
                nan_input |= e != e;  // a NaN weight gives the canonical NaN, as a NaN value does
                w = w * (e < p.floors[i] ? p.floors[i] : e);
                div = div + w;
            }
            acc = acc + w * x(i);
        }
        acc = p.normalize ? acc / (p.has_element_weights ? div : p.divisor) : acc;
        return nan_input ? quiet_nan() : acc;
    }
    if (method == SMELTER_METHOD_VARIANCE) {
        for (int i = 0; i < MAXN; ++i) {
            if (!EXACT && i >= n) break;
            nan_input |= x(i) != x(i);
        }
        const float v = delta_variance<MAXN, EXACT>(p, x0, x);
        return nan_input ? quiet_nan() : v;
    }
    float wd[MAXN] = {};
    float dk[MAXN] = {};  // kept deltas before weighting (SUM_UNWEIGHTED votes on them)
    for (int i = 0; i < MAXN; ++i) {
        if (!EXACT && i >= n) break;
        nan_input |= x(i) != x(i);
        float d = x(i) - x0;
        const bool drawn = sparsify == SMELTER_SPARSIFY_RANDOM || sparsify == SMELTER_SPARSIFY_RANKED ||
                           sparsify == kSparsifyPrecomputed || sparsify == kSparsifyBound;
        const uint32_t r = drawn ? rnd(i) : 0u;
        const bool keep = sparsify_keep(p, sparsify, i, d, r) & (!p.has_select | selected);
        float scale = p.scales[i];
        const float weight = p.weights[i];  // unconditional loads vectorise
        if (p.ranked_inverse) scale = 16777216.0f / static_cast<float>(r == 0u ? 1u : r);  // 1 / keep probability
        d = keep ? d * scale : 0.0f;
        dk[i] = d;
        wd[i] = d * weight;
    }
    float mixed = 0.0f;
    if (consensus == SMELTER_CONSENSUS_NONE) {
        for (int i = 0; i < MAXN; ++i) {
            if (!EXACT && i >= n) break;
            mixed = mixed + wd[i];
        }
        mixed = p.normalize ? mixed / p.divisor : mixed;
    } else {
        float vote = 0.0f;
        for (int i = 0; i < MAXN; ++i) {
            if (!EXACT && i >= n) break;
            vote = vote + (consensus == SMELTER_CONSENSUS_SUM              ? wd[i]
                           : consensus == SMELTER_CONSENSUS_SUM_UNWEIGHTED ? dk[i]
                                                                           : static_cast<float>(sign_of(wd[i])));
        }
        int e = sign_of(vote);
        e = e == 0 ? p.zero_elect : e;
        float div = 0.0f;
        for (int i = 0; i < MAXN; ++i) {
            if (!EXACT && i >= n) break;
            const float weight = p.weights[i];
            const bool agree = (e != 0) & (sign_of(wd[i]) == e);
            mixed = mixed + (agree ? wd[i] : 0.0f);
            div = div + (agree ? weight : 0.0f);
        }
        div = (p.min_divisor > 0.0f) & (div < p.min_divisor) ? p.min_divisor : div;  // SCE's clamp
        mixed = p.normalize ? mixed / (div == 0.0f ? 1.0f : div) : mixed;
        *elected = e;
    }
    // No surviving delta leaves the base bit for bit (x0 + 0 would turn a -0.0 base into +0.0).
    float r = mixed == 0.0f ? x0 : x0 + p.lambda * mixed;
    return nan_input ? quiet_nan() : r;
}

// Loads and stores by dtype.
SMELTER_HD float load_element(const void *data, int32_t dtype, int64_t i) {
    if (dtype == SMELTER_F32) return static_cast<const float *>(data)[i];
    uint16_t h = static_cast<const uint16_t *>(data)[i];
    return dtype == SMELTER_BF16 ? bf16_to_float(h) : f16_to_float(h);
}

SMELTER_HD void store_element(void *data, int32_t dtype, int64_t i, float v) {
    if (dtype == SMELTER_F32) static_cast<float *>(data)[i] = v;
    else if (dtype == SMELTER_BF16) static_cast<uint16_t *>(data)[i] = float_to_bf16(v);
    else static_cast<uint16_t *>(data)[i] = float_to_f16(v);
}

}  // namespace smelter
