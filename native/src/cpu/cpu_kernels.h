// CPU kernel table. The kernels are compiled twice from cpu_kernels.inc, for AVX2 (+F16C) and for
// baseline x86-64, and the backend picks one at start-up from the CPU's features.
#pragma once
#include <stdint.h>
#include <vector>
#include "../core/backend.h"

namespace smelter {

constexpr int kProductTile = 64;     // output tile edge of smelter_product
constexpr int kProductBlockK = 256;  // reduction rows packed at a time
constexpr int kProductBlockK64 = 128;  // the same for f64 products (panels of the same bytes)
constexpr int kColumnStripe = 256;   // columns converted at a time by smelter_column_stats
constexpr int kColumnRows = 512;     // rows per smelter_column_stats task: partial sums per block, added in block order
constexpr int kBlockElements = 256;  // elements the merge kernels convert and merge at a time

// Per-worker buffers of the product kernel (packed panels and the output tile), 64-byte aligned.
struct ProductScratch {
    alignas(64) float a[kProductBlockK * kProductTile];
    alignas(64) float b[kProductBlockK * kProductTile];
    alignas(64) float acc[kProductTile * kProductTile];
};

// The same for f64 products (smelter_product_params.out_f64).
struct ProductScratch64 {
    alignas(64) double a[kProductBlockK64 * kProductTile];
    alignas(64) double b[kProductBlockK64 * kProductTile];
    alignas(64) double acc[kProductTile * kProductTile];
};

// Per-worker buffers of the pair statistics kernel: one step of every vector, and the lane sums.
struct PairScratch {
    alignas(64) float d[SMELTER_MAX_MODELS][kPairLanes];
    alignas(64) float base[kPairLanes];
    alignas(64) int8_t sign[SMELTER_MAX_MODELS][kPairLanes];
    alignas(64) uint8_t keep[SMELTER_MAX_MODELS][kPairLanes];
    alignas(64) float select[kPairLanes];
    alignas(64) uint8_t selected[kPairLanes];
    std::vector<double> acc;  // pair_count(n) * kPairLanes
    std::vector<double> acc_squared;  // likewise, for squared differences
};

// One query of the CPU's sampled selection over a range of elements: keys of |model - base| above
// `high` are added to `above`, and n counts the keys in [low, high]. Narrow windows count them,
// hist[key - low] += 1, with found as a block's scratch (kBlockElements keys). Wide ones append them
// to found[n..]; n becomes -1 (and stays) when a block could take it past cap: the window holds too
// many keys to be worth collecting.
struct KeyWindow {
    int model;
    uint32_t low, high;
    int64_t above, n;
    uint32_t *found;
    int64_t cap;
    uint64_t *hist;
    uint32_t hist_low;   // the key counted in hist[0]
    int32_t key_of_bits; // -1: low, high and found are keys; else they are |delta| bits, counted as keys of this dtype
};

struct CpuKernels {
    const char *isa;
    // Merges elements [begin, end); adds elected-sign counts (+, -, none) to counts.
    void (*merge_range)(const MergePlan &plan, const KernelInputs &in, const smelter_tensor *out, int64_t begin,
                        int64_t end, int64_t counts[4]);
    // Adds keys of elements [begin, end) to hist (see key_bin).
    void (*histogram_range)(const KernelInputs &in, int model, int32_t key_dtype, int level, uint32_t prefix,
                            int64_t begin, int64_t end, uint64_t *hist);
    // Keys of elements [begin, end) of one model, in order.
    void (*keys_range)(const KernelInputs &in, int model, int32_t key_dtype, int64_t begin, int64_t end,
                       uint32_t *keys);
    // Adds to each window's `above` its model's keys of [begin, end) above `high`, and appends those
    // in [low, high] to its `found` (see KeyWindow).
    void (*count_key_windows)(const KernelInputs &in, int32_t key_dtype, KeyWindow *windows, int count,
                              int64_t begin, int64_t end);
    // Adds |delta| and kept |delta| of elements [begin, end) of one model.
    void (*l1_range)(const MergePlan &plan, const KernelInputs &in, int model, int64_t begin, int64_t end,
                     ExactSum *total, ExactSum *kept);
    // Computes the output tile at (p0, q0) of a product (host tensors).
    void (*product_tile)(const ProductJob &job, int64_t p0, int64_t q0, ProductScratch &scratch);
    // The same into job.out_f64, formed in f64.
    void (*product_tile_f64)(const ProductJob &job, int64_t p0, int64_t q0, ProductScratch64 &scratch);
    // Adds the column statistics of columns [c0, c1).
    // Rows [r0, r1) of every column, in row order, into sums / positive (cols values each; may be null).
    void (*column_stats_rows)(const ColumnStatsJob &job, int64_t r0, int64_t r1, double *sums, int64_t *positive);
    // Ranks of model's |delta| keys within rows [r0, r1) of row_length elements (see Backend::rank_rows).
    void (*rank_rows_range)(const KernelInputs &in, int model, int32_t key_dtype, int64_t row_length, int64_t r0,
                            int64_t r1, uint32_t *ranks);
    // Pair statistics of one chunk of kPairChunk elements (see common/pair_stats.h).
    void (*pair_stats_chunk)(const PairStatsJob &job, const KernelInputs &in, int64_t chunk, PairScratch &scratch,
                             double *dots, double *squared, int64_t *counts);
    // The 24 random bits of global elements [first, first + len) of one model in one random stream,
    // len <= kBlockElements: what RANDOM and RANKED sparsification draw (here for the tests).
    void (*random_bits)(uint64_t stream_key, int64_t first, int len, int model, uint32_t stream, uint32_t *bits);
};

namespace cpu_avx2 { extern const CpuKernels kernels; }
namespace cpu_generic { extern const CpuKernels kernels; }

}  // namespace smelter
