// CUDA analysis kernels (smelter_product, smelter_column_stats), included by cuda_backend.cu.
// The product has two kernels over the same staging: operands are read, converted to f32, shifted
// and weighted, and stored in shared memory slices; 64 x 64 output tiles, 256 threads.
//  - product_tf32x3_kernel (default on sm_80 and newer): tensor cores. Each staged f32 value v is
//    split into big = tf32(v) and small = tf32(v - big), and every term is big*big + big*small +
//    small*big, accumulated in f32 ("3xTF32"): about 22 significant bits per operand, so the result
//    is as accurate as f32 SIMT products while running on the tensor cores. A plain TF32 product
//    (10-bit mantissa) would not be: it would undo the care taken with centering.
//  - product_kernel: SIMT, 4 x 4 accumulators per thread, explicit fused multiply-adds (so
//    --fmad=false does not apply). Used below sm_80, or with SMELTER_CUDA_PRODUCT=simt, e.g. to
//    compare the two.
constexpr int kTile = 64;
constexpr int kSlice = 16;
constexpr int kProductThreads = 256;  // 16 x 16 threads, 4 x 4 outputs each

// Reduction-major view of one operand: element (k, p) is data[k * stride_k + p * stride_p].
struct Operand {
    const void *data;
    int64_t stride_k, stride_p, extent_p;
    const float *shift;  // device, may be null; indexed by k or p
};

// Element (gk, gp) of an operand as both kernels stage it: converted to f32, shifted, weighted; 0
// outside the operand, and 0 without being read where mask[gk] is 0 (a left-out row may hold
// infinities or NaN, and 0 * inf is NaN). A column product passes its row weights as weights and mask
// for x, as the mask alone for y.
template <int DT>
__device__ __forceinline__ float staged_value(const Operand &op, int64_t K, int64_t gk, int64_t gp, bool shift_on_k,
                                              const float *weights, const float *mask) {
    if (gk >= K || gp >= op.extent_p) return 0.0f;
    if (mask && mask[gk] == 0.0f) return 0.0f;
    float v = load<DT>(op.data, gk * op.stride_k + gp * op.stride_p);
    if (op.shift) v -= op.shift[shift_on_k ? gk : gp];
    if (weights) v *= weights[gk];
    return v;
}

template <int DT>
__device__ __forceinline__ void stage_slice(const Operand op, int64_t K, int64_t k0, int64_t p0, bool shift_on_k,
                                            const float *weights, const float *mask, float (*slice)[kTile + 1]) {
    for (int idx = threadIdx.x; idx < kSlice * kTile; idx += blockDim.x) {
        // Consecutive threads walk the index that is contiguous in memory, so loads coalesce.
        int k, p;
        if (op.stride_p == 1) { p = idx % kTile; k = idx / kTile; }
        else { k = idx % kSlice; p = idx / kSlice; }
        slice[k][p] = staged_value<DT>(op, K, k0 + k, p0 + p, shift_on_k, weights, mask);
    }
}

template <int DTX, int DTY>
__global__ void __launch_bounds__(kProductThreads) product_kernel(const Operand a, const Operand b, int64_t K,
                                                                  bool shift_on_k, const float *weights, float *out,
                                                                  bool accumulate) {
    __shared__ float as[kSlice][kTile + 1];
    __shared__ float bs[kSlice][kTile + 1];
    const int64_t p0 = (int64_t)blockIdx.y * kTile, q0 = (int64_t)blockIdx.x * kTile;
    const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
    float c[4][4] = {};
    for (int64_t k0 = 0; k0 < K; k0 += kSlice) {
        stage_slice<DTX>(a, K, k0, p0, shift_on_k, weights, weights, as);
        stage_slice<DTY>(b, K, k0, q0, shift_on_k, nullptr, weights, bs);
        __syncthreads();
#pragma unroll
        for (int k = 0; k < kSlice; ++k) {
            float av[4], bv[4];
#pragma unroll
            for (int i = 0; i < 4; ++i) av[i] = as[k][ty + 16 * i];
#pragma unroll
            for (int j = 0; j < 4; ++j) bv[j] = bs[k][tx + 16 * j];
#pragma unroll
            for (int i = 0; i < 4; ++i)
#pragma unroll
                for (int j = 0; j < 4; ++j) c[i][j] = __fmaf_rn(av[i], bv[j], c[i][j]);
        }
        __syncthreads();
    }
    const int64_t Q = b.extent_p;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const int64_t p = p0 + ty + 16 * i;
        if (p >= a.extent_p) continue;
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const int64_t q = q0 + tx + 16 * j;
            if (q >= Q) continue;
            float *o = out + p * Q + q;
            *o = accumulate ? *o + c[i][j] : c[i][j];
        }
    }
}

// ---- f64 product (smelter_product_params.out_f64) -----------------------------------------------

// staged_value in f64: value and shift converted to f64 before the subtraction, then weighted.
template <int DT>
__device__ __forceinline__ double staged_value_f64(const Operand &op, int64_t K, int64_t gk, int64_t gp,
                                                   bool shift_on_k, const float *weights, const float *mask) {
    if (gk >= K || gp >= op.extent_p) return 0.0;
    if (mask && mask[gk] == 0.0f) return 0.0;
    double v = (double)load<DT>(op.data, gk * op.stride_k + gp * op.stride_p);
    if (op.shift) v -= (double)op.shift[shift_on_k ? gk : gp];
    if (weights) v *= (double)weights[gk];
    return v;
}

template <int DT>
__device__ __forceinline__ void stage_slice_f64(const Operand op, int64_t K, int64_t k0, int64_t p0, bool shift_on_k,
                                                const float *weights, const float *mask, double (*slice)[kTile + 1]) {
    for (int idx = threadIdx.x; idx < kSlice * kTile; idx += blockDim.x) {
        int k, p;
        if (op.stride_p == 1) { p = idx % kTile; k = idx / kTile; }
        else { k = idx % kSlice; p = idx / kSlice; }
        slice[k][p] = staged_value_f64<DT>(op, K, k0 + k, p0 + p, shift_on_k, weights, mask);
    }
}

// product_kernel in f64 (SIMT, 4 x 4 f64 accumulators per thread, fused multiply-adds). Writes the
// tile to out (device, f64); the host adds it to the caller's array.
template <int DTX, int DTY>
__global__ void __launch_bounds__(kProductThreads) product_f64_kernel(const Operand a, const Operand b, int64_t K,
                                                                      bool shift_on_k, const float *weights,
                                                                      double *out) {
    __shared__ double as[kSlice][kTile + 1];
    __shared__ double bs[kSlice][kTile + 1];
    const int64_t p0 = (int64_t)blockIdx.y * kTile, q0 = (int64_t)blockIdx.x * kTile;
    const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
    double c[4][4] = {};
    for (int64_t k0 = 0; k0 < K; k0 += kSlice) {
        stage_slice_f64<DTX>(a, K, k0, p0, shift_on_k, weights, weights, as);
        stage_slice_f64<DTY>(b, K, k0, q0, shift_on_k, nullptr, weights, bs);
        __syncthreads();
#pragma unroll
        for (int k = 0; k < kSlice; ++k) {
            double av[4], bv[4];
#pragma unroll
            for (int i = 0; i < 4; ++i) av[i] = as[k][ty + 16 * i];
#pragma unroll
            for (int j = 0; j < 4; ++j) bv[j] = bs[k][tx + 16 * j];
#pragma unroll
            for (int i = 0; i < 4; ++i)
#pragma unroll
                for (int j = 0; j < 4; ++j) c[i][j] = __fma_rn(av[i], bv[j], c[i][j]);
        }
        __syncthreads();
    }
    const int64_t Q = b.extent_p;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const int64_t p = p0 + ty + 16 * i;
        if (p >= a.extent_p) continue;
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const int64_t q = q0 + tx + 16 * j;
            if (q < Q) out[p * Q + q] = c[i][j];
        }
    }
}

// ---- tensor-core product (3xTF32) --------------------------------------------------------------

constexpr int kTcSlice = 32;        // reduction depth per shared-memory stage
constexpr int kTcLd = kTile + 8;    // 72 floats a row: fragment pointers stay 32-byte aligned
constexpr int kTcPerThread = kTcSlice * kTile / kProductThreads;  // staged values per operand and thread

// Where staged value idx of a slice goes. Consecutive threads follow the operand's contiguous index:
// along p (a column product's rows) or along k in runs of 8 (a Gram product), which keeps the loads
// coalesced and the shared-memory stores at most 2-way conflicted.
__device__ __forceinline__ void tc_slot(const Operand &op, int idx, int &k, int &p) {
    if (op.stride_p == 1) { p = idx % kTile; k = idx / kTile; }
    else { p = (idx / 8) % kTile; k = (idx / (8 * kTile)) * 8 + idx % 8; }
}

// Reads this thread's values of slice k0 into registers, so the loads overlap the previous slice's
// tensor-core work.
template <int DT>
__device__ __forceinline__ void tc_fetch(const Operand &op, int64_t K, int64_t k0, int64_t p0, bool shift_on_k,
                                         const float *weights, const float *mask, float (&v)[kTcPerThread]) {
#pragma unroll
    for (int i = 0; i < kTcPerThread; ++i) {
        int k, p;
        tc_slot(op, threadIdx.x + i * kProductThreads, k, p);
        v[i] = staged_value<DT>(op, K, k0 + k, p0 + p, shift_on_k, weights, mask);
    }
}

__device__ __forceinline__ void tc_put(const Operand &op, const float (&v)[kTcPerThread], float (*slice)[kTcLd]) {
#pragma unroll
    for (int i = 0; i < kTcPerThread; ++i) {
        int k, p;
        tc_slot(op, threadIdx.x + i * kProductThreads, k, p);
        slice[k][p] = v[i];
    }
}

// big <- tf32(v), small <- tf32(v - big). The fragment's element order does not matter here: the
// same operation is applied to every element. Non-finite values keep small = 0, so an infinity
// stays an infinity instead of becoming inf - inf.
template <class Fragment>
__device__ __forceinline__ void split_tf32(Fragment &big, Fragment &small) {
#pragma unroll
    for (int t = 0; t < big.num_elements; ++t) {
        const float v = big.x[t];
        const float hi = nvcuda::wmma::__float_to_tf32(v);
        big.x[t] = hi;
        small.x[t] = isfinite(hi) ? nvcuda::wmma::__float_to_tf32(v - hi) : 0.0f;
    }
}

// Same contract as product_kernel. Warp w owns rows 16 (w % 4) .. +16 and columns 32 (w / 4) .. +32
// of the tile: one A fragment and two B fragments per 8-deep step, three mma each.
template <int DTX, int DTY>
__global__ void __launch_bounds__(kProductThreads) product_tf32x3_kernel(const Operand a, const Operand b, int64_t K,
                                                                         bool shift_on_k, const float *weights,
                                                                         float *out, bool accumulate) {
    namespace wmma = nvcuda::wmma;
    using FragA = wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, wmma::col_major>;
    using FragB = wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, wmma::row_major>;
    __shared__ __align__(32) float as[kTcSlice][kTcLd];  // as[k][p]: A (p x k) column-major
    __shared__ __align__(32) float bs[kTcSlice][kTcLd];  // bs[k][q]: B (k x q) row-major
    __shared__ __align__(32) float cs[kTile][kTcLd];     // the finished tile, for bounded writes
    const int64_t p0 = (int64_t)blockIdx.y * kTile, q0 = (int64_t)blockIdx.x * kTile;
    const int warp = threadIdx.x / 32, wm = (warp % 4) * 16, wn = (warp / 4) * 32;
    wmma::fragment<wmma::accumulator, 16, 16, 8, float> acc[2];
    wmma::fill_fragment(acc[0], 0.0f);
    wmma::fill_fragment(acc[1], 0.0f);
    float va[kTcPerThread], vb[kTcPerThread];
    tc_fetch<DTX>(a, K, 0, p0, shift_on_k, weights, weights, va);
    tc_fetch<DTY>(b, K, 0, q0, shift_on_k, nullptr, weights, vb);
    for (int64_t k0 = 0; k0 < K; k0 += kTcSlice) {
        tc_put(a, va, as);
        tc_put(b, vb, bs);
        __syncthreads();
        if (k0 + kTcSlice < K) {
            tc_fetch<DTX>(a, K, k0 + kTcSlice, p0, shift_on_k, weights, weights, va);
            tc_fetch<DTY>(b, K, k0 + kTcSlice, q0, shift_on_k, nullptr, weights, vb);
        }
#pragma unroll
        for (int kk = 0; kk < kTcSlice; kk += 8) {
            FragA a_big, a_small;
            wmma::load_matrix_sync(a_big, &as[kk][wm], kTcLd);
            split_tf32(a_big, a_small);
#pragma unroll
            for (int j = 0; j < 2; ++j) {
                FragB b_big, b_small;
                wmma::load_matrix_sync(b_big, &bs[kk][wn + 16 * j], kTcLd);
                split_tf32(b_big, b_small);
                // The small terms first: they are added while the accumulator is still small.
                wmma::mma_sync(acc[j], a_small, b_big, acc[j]);
                wmma::mma_sync(acc[j], a_big, b_small, acc[j]);
                wmma::mma_sync(acc[j], a_big, b_big, acc[j]);
            }
        }
        __syncthreads();
    }
    wmma::store_matrix_sync(&cs[wm][wn], acc[0], kTcLd, wmma::mem_row_major);
    wmma::store_matrix_sync(&cs[wm][wn + 16], acc[1], kTcLd, wmma::mem_row_major);
    __syncthreads();
    const int64_t Q = b.extent_p;
    for (int idx = threadIdx.x; idx < kTile * kTile; idx += kProductThreads) {
        const int i = idx / kTile, j = idx % kTile;
        const int64_t p = p0 + i, q = q0 + j;
        if (p >= a.extent_p || q >= Q) continue;
        float *o = out + p * Q + q;
        *o = accumulate ? *o + cs[i][j] : cs[i][j];
    }
}

constexpr int kStatsThreads = 256;   // one thread per column
constexpr int64_t kStatsRowsPerBlock = 1024;
constexpr int kStatsMaxRowBlocks = 256;

// Partial column statistics of one row range; the partials are added in a fixed order afterwards,
// so results do not depend on scheduling.
template <int DT>
__global__ void __launch_bounds__(kStatsThreads) column_stats_kernel(const void *x, int64_t rows, int64_t cols,
                                                                     int64_t rows_per_block, const float *shift,
                                                                     const float *weights, double *part_sums,
                                                                     unsigned long long *part_positive) {
    const int64_t col = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (col >= cols) return;
    const int64_t r0 = (int64_t)blockIdx.y * rows_per_block;
    const int64_t r1 = min(rows, r0 + rows_per_block);
    const float s = shift ? shift[col] : 0.0f;
    double sum = 0.0;
    unsigned long long positive = 0;
    for (int64_t r = r0; r < r1; ++r) {
        const float w = weights ? weights[r] : 1.0f;
        if (w == 0.0f) continue;
        const float v = load<DT>(x, r * cols + col);
        sum += ((double)v - (double)s) * (double)w;  // in f64, as the f64 products shift
        positive += v > 0.0f;
    }
    part_sums[blockIdx.y * cols + col] = sum;
    part_positive[blockIdx.y * cols + col] = positive;
}

__global__ void column_stats_reduce_kernel(int64_t cols, int row_blocks, double *part_sums,
                                           unsigned long long *part_positive) {
    const int64_t col = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (col >= cols) return;
    double sum = 0.0;
    unsigned long long positive = 0;
    for (int b = 0; b < row_blocks; ++b) {
        sum += part_sums[b * cols + col];
        positive += part_positive[b * cols + col];
    }
    part_sums[col] = sum;
    part_positive[col] = positive;
}

// smelter_pair_stats in the order of common/pair_stats.h: block c of a round handles chunk
// chunk0 + c; thread t is lane t and walks the chunk's elements t, t + 256, ...; each block does up
// to kPairsPerBlock pairs (blockIdx.y picks which), keeping their f64 lane sums in registers.
constexpr int kPairsPerBlock = 8;
static_assert(kPairLanes == 256, "one thread per lane");

struct PairList {
    int count;                    // pairs in this launch
    int8_t i[SMELTER_MAX_MODELS * (SMELTER_MAX_MODELS + 1) / 2];
    int8_t k[SMELTER_MAX_MODELS * (SMELTER_MAX_MODELS + 1) / 2];
};

template <int DT>
__device__ __forceinline__ float pair_delta(const KernelInputs &in, int v, int64_t e) {
    const float x = load<DT>(in.models[v], e);
    return in.base ? x - load<DT>(in.base, e) : x;
}

// Lane sums of the squared differences go through the same tree into partial_sq.
template <int DT>
__global__ void __launch_bounds__(kPairLanes) pair_stats_kernel(const KernelInputs in, const PairStatsJob job,
                                                                const PairList *pairs, int64_t chunk0,
                                                                double *partial, double *partial_sq,
                                                                unsigned long long *counts) {
    __shared__ double lanes[kPairLanes];
    const int t = threadIdx.x, n_pairs = pairs->count;
    const int q0 = blockIdx.y * kPairsPerBlock, qn = min(kPairsPerBlock, n_pairs - q0);
    const int64_t begin = (chunk0 + blockIdx.x) * kPairChunk, end = min(in.count, begin + kPairChunk);
    double acc[kPairsPerBlock], acc_sq[kPairsPerBlock];
    unsigned conflicts[kPairsPerBlock], nonzero[kPairsPerBlock], kept[kPairsPerBlock], bad[kPairsPerBlock];
#pragma unroll
    for (int g = 0; g < kPairsPerBlock; ++g) { acc[g] = acc_sq[g] = 0.0; conflicts[g] = nonzero[g] = kept[g] = bad[g] = 0; }
    for (int64_t e = begin + t; e < end; e += kPairLanes) {
        // Unselected positions count as zero deltas.
        const bool selected = !job.has_select ||
                              magnitude_key(load_element(in.select, in.select_dtype, e), KEY_F32) >= job.select_threshold;
#pragma unroll
        for (int g = 0; g < kPairsPerBlock; ++g) {
            if (g >= qn) break;
            const int i = pairs->i[q0 + g], k = pairs->k[q0 + g];
            float di = pair_delta<DT>(in, i, e), dk = i == k ? di : pair_delta<DT>(in, k, e);
            di = selected ? di : 0.0f;
            dk = selected ? dk : 0.0f;
            acc[g] += (double)di * (double)dk;
            if (i != k) {  // the diagonal stays 0, NaN or not
                const double t = (double)di - (double)dk;
                acc_sq[g] += t * t;
            }
            const int prod = sign_of(di) * sign_of(dk);
            conflicts[g] += prod < 0;
            nonzero[g] += prod != 0;
            if (job.both_kept)
                kept[g] += (magnitude_key(di, job.key_dtype) >= job.thresholds[i]) &&
                           (magnitude_key(dk, job.key_dtype) >= job.thresholds[k]);
            if (i == k) bad[g] += !is_finite_value(di);
        }
    }
    const int64_t n_all = pair_count(job.n);
#pragma unroll
    for (int g = 0; g < kPairsPerBlock; ++g) {
        if (g >= qn) break;  // qn is the same for the whole block, so the barriers below stay uniform
        const int q = q0 + g;
        if (job.dots) {
            lanes[t] = acc[g];
            __syncthreads();
            for (int half = kPairLanes / 2; half >= 1; half /= 2) {
                if (t < half) lanes[t] += lanes[t + half];
                __syncthreads();
            }
            if (t == 0) partial[blockIdx.x * n_all + q] = lanes[0];
            __syncthreads();
        }
        if (job.squared_distances) {
            lanes[t] = acc_sq[g];
            __syncthreads();
            for (int half = kPairLanes / 2; half >= 1; half /= 2) {
                if (t < half) lanes[t] += lanes[t + half];
                __syncthreads();
            }
            if (t == 0) partial_sq[blockIdx.x * n_all + q] = lanes[0];
            __syncthreads();
        }
        // Integer counts: any order. One atomic per warp and counter.
        const unsigned c = __reduce_add_sync(0xFFFFFFFFu, conflicts[g]), z = __reduce_add_sync(0xFFFFFFFFu, nonzero[g]),
                       b = __reduce_add_sync(0xFFFFFFFFu, kept[g]), f = __reduce_add_sync(0xFFFFFFFFu, bad[g]);
        if ((t & 31) == 0) {
            if (c) atomicAdd(&counts[q], (unsigned long long)c);
            if (z) atomicAdd(&counts[n_all + q], (unsigned long long)z);
            if (b) atomicAdd(&counts[2 * n_all + q], (unsigned long long)b);
            if (f) atomicAdd(&counts[3 * n_all + pairs->i[q]], (unsigned long long)f);
        }
    }
}

// Adds a round's chunk sums to the running totals, in chunk order (one thread per pair).
__global__ void pair_stats_reduce_kernel(int pairs, int chunks, const double *partial, double *total) {
    const int q = blockIdx.x * blockDim.x + threadIdx.x;
    if (q >= pairs) return;
    double s = total[q];
    for (int c = 0; c < chunks; ++c) s += partial[c * pairs + q];
    total[q] = s;
}
