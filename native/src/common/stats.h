// Order-independent statistics: exact sums of |x| and key histograms. Backends fill them in any
// order or thread split; the host turns them into scales and thresholds with one shared function,
// so both backends get identical results.
#pragma once
#include <stdint.h>
#include "numerics.h"

namespace smelter {

// Exact sum of magnitudes: the 24-bit significands of f32 values added as integers, one bucket per
// exponent. Integer addition is associative, so the result does not depend on the order of adds.
struct ExactSum {
    static constexpr int kBuckets = 256;  // bucket 255 counts Inf/NaN
    uint64_t bucket[kBuckets];
};

SMELTER_HD void exact_sum_split(float v, uint32_t *bucket, uint32_t *significand) {
    uint32_t a = float_bits(v) & 0x7FFFFFFFu;
    uint32_t e = a >> 23;
    *bucket = e == 0 ? 1u : e;
    *significand = e == 255 ? 1u : (a & 0x7FFFFFu) | (e ? 0x800000u : 0u);
}

// Histogram layout for exact k-th largest key search (see smelter_topk_select).
constexpr int kLevel0Bins = 1 << 15;  // 16-bit keys: the whole key; f32 keys: bits 30..16
constexpr int kLevel1Bins = 1 << 16;  // f32 keys only: bits 15..0 under the chosen level-0 bin

SMELTER_HD bool key_bin(uint32_t key, int32_t key_dtype, int level, uint32_t prefix, uint32_t *bin) {
    if (key_dtype != KEY_F32) { *bin = key; return true; }
    if (level == 0) { *bin = key >> 16; return true; }
    *bin = key & 0xFFFFu;
    return (key >> 16) == prefix;
}

}  // namespace smelter
