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
    float lambda;
    float divisor;           // normalisation divisor when there is no consensus (LINEAR and TA)
    uint64_t stream_key;     // Philox key for RANDOM
    int64_t element_offset;  // global index of element 0
    float weights[SMELTER_MAX_MODELS];
    float scales[SMELTER_MAX_MODELS];       // rescale of kept deltas (1 = none)
    uint32_t thresholds[SMELTER_MAX_MODELS];  // MAGNITUDE: keep key >= threshold
    uint32_t keep24[SMELTER_MAX_MODELS];      // RANDOM: keep when 24 random bits < keep24
};

// Internal sparsify mode: the keep decision was made beforehand (rnd(i) != 0 keeps). The CPU
// kernels compute keys or random draws in separate vectorised loops and merge with this.
constexpr int kSparsifyPrecomputed = 100;

// Random stream ids (the fourth Philox counter word); later methods take new ids.
enum RandomStream : uint32_t { STREAM_DARE = 0 };

SMELTER_HD int sign_of(float v) { return (v > 0.0f) - (v < 0.0f); }
SMELTER_HD float quiet_nan() { return bits_float(0x7FC00000u); }

// Whether model i keeps its delta d at this element (rnd: its 24 random bits, RANDOM only).
SMELTER_HD bool sparsify_keep(const MergePlan &p, int sparsify, int i, float d, uint32_t rnd) {
    if (sparsify == SMELTER_SPARSIFY_MAGNITUDE) return magnitude_key(d, p.key_dtype) >= p.thresholds[i];
    if (sparsify == SMELTER_SPARSIFY_RANDOM) return rnd < p.keep24[i];
    if (sparsify == kSparsifyPrecomputed) return rnd != 0;
    return true;
}

// Merges one element. x0: base value (unused by LINEAR); x(i): model i's value; rnd(i): 24 random
// bits for model i (RANDOM) or its keep flag (kSparsifyPrecomputed). MAXN bounds the model count
// at compile time so the per-model arrays stay in registers; EXACT means n == MAXN. Writes the
// elected sign (+1, -1, 0; 0 without consensus) and returns the f32 result. The order of every floating-point operation here is the contract
// that makes the CPU and CUDA backends agree bit for bit; change it on both or neither.
//
// METHOD, SPARSIFY and CONSENSUS fix those choices at compile time (the CPU kernels instantiate
// each combination so the element loop has no branches and vectorises); -1 reads them from the
// plan (the CUDA kernel, where uniform branches cost nothing).
template <int MAXN, bool EXACT, int METHOD = -1, int SPARSIFY = -1, int CONSENSUS = -1, class ModelValues,
          class RandomBits>
SMELTER_HD float merge_element(const MergePlan &p, float x0, ModelValues x, RandomBits rnd, int *elected) {
    const int n = EXACT ? MAXN : p.n;
    const int method = METHOD >= 0 ? METHOD : p.method;
    const int sparsify = SPARSIFY >= 0 ? SPARSIFY : p.sparsify;
    const int consensus = CONSENSUS >= 0 ? CONSENSUS : p.consensus;
    bool nan_input = x0 != x0;
    *elected = 0;
    if (method == SMELTER_METHOD_LINEAR) {
        float acc = -0.0f;  // the exact additive identity: a single -0.0 input stays -0.0
        for (int i = 0; i < MAXN; ++i) {
            if (!EXACT && i >= n) break;
            nan_input |= x(i) != x(i);
            acc = acc + p.weights[i] * x(i);
        }
        acc = p.normalize ? acc / p.divisor : acc;
        return nan_input ? quiet_nan() : acc;
    }
    float wd[MAXN] = {};
    for (int i = 0; i < MAXN; ++i) {
        if (!EXACT && i >= n) break;
        nan_input |= x(i) != x(i);
        float d = x(i) - x0;
        const bool drawn = sparsify == SMELTER_SPARSIFY_RANDOM || sparsify == kSparsifyPrecomputed;
        const bool keep = sparsify_keep(p, sparsify, i, d, drawn ? rnd(i) : 0u);
        const float scale = p.scales[i], weight = p.weights[i];  // unconditional loads vectorise
        d = keep ? d * scale : 0.0f;
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
            vote = vote + (consensus == SMELTER_CONSENSUS_SUM ? wd[i] : static_cast<float>(sign_of(wd[i])));
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
