// smelter_pair_stats: the summation order both backends follow, so their f64 dot products are
// bit-identical. Products of two f32 values are exact in f64; only the additions round, and they
// happen in this fixed order:
//   - elements are split into chunks of kPairChunk; element e of a chunk belongs to lane
//     e % kPairLanes, and each lane adds its products in element order (a CUDA thread per lane);
//   - the lanes of a chunk are added by a fixed halving tree (lane[t] += lane[t + s], s = 128..1);
//   - chunk results are added to a running total in chunk order.
// Sums of squared differences (d_i - d_j)^2, the difference taken in f64, follow the same order.
// Counts (sign conflicts, non-zeros, kept elements) are integers and need no order.
#pragma once
#include <stdint.h>
#include "numerics.h"

namespace smelter {

constexpr int kPairLanes = 256;
constexpr int64_t kPairChunk = int64_t{kPairLanes} * 256;  // elements per chunk
constexpr int kPairRoundChunks = 256;                       // chunks whose partial sums are kept at once

// Pairs (i, j) with i <= j, numbered row by row: (0,0), (0,1), .., (0,n-1), (1,1), ..
SMELTER_HD int pair_count(int n) { return n * (n + 1) / 2; }
SMELTER_HD int pair_index(int n, int i, int j) { return i * n - i * (i - 1) / 2 + (j - i); }

// What one pair contributes at one element.
struct PairCounts {
    int64_t conflicts = 0, both_nonzero = 0, both_kept = 0;
};

SMELTER_HD bool is_finite_value(float v) { return (float_bits(v) & 0x7F800000u) != 0x7F800000u; }

}  // namespace smelter
