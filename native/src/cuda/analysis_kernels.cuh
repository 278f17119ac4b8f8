// CUDA analysis kernels (smelter_product, smelter_column_stats), included by cuda_backend.cu.
// The product is a tiled SIMT matrix product: 64 x 64 output tiles, 16-deep reduction slices staged
// in shared memory already converted to f32, shifted and weighted; each thread keeps a 4 x 4 tile
// of accumulators and adds with fused multiply-adds (explicit, so --fmad=false does not apply).

constexpr int kTile = 64;
constexpr int kSlice = 16;
constexpr int kProductThreads = 256;  // 16 x 16 threads, 4 x 4 outputs each

// Reduction-major view of one operand: element (k, p) is data[k * stride_k + p * stride_p].
struct Operand {
    const void *data;
    int64_t stride_k, stride_p, extent_p;
    const float *shift;  // device, may be null; indexed by k or p
};

template <int DT>
__device__ __forceinline__ void stage_slice(const Operand op, int64_t K, int64_t k0, int64_t p0, bool shift_on_k,
                                            const float *weights, float (*slice)[kTile + 1]) {
    for (int idx = threadIdx.x; idx < kSlice * kTile; idx += blockDim.x) {
        // Consecutive threads walk the index that is contiguous in memory, so loads coalesce.
        int k, p;
        if (op.stride_p == 1) { p = idx % kTile; k = idx / kTile; }
        else { k = idx % kSlice; p = idx / kSlice; }
        const int64_t gk = k0 + k, gp = p0 + p;
        float v = 0.0f;
        if (gk < K && gp < op.extent_p) {
            v = load<DT>(op.data, gk * op.stride_k + gp * op.stride_p);
            if (op.shift) v -= op.shift[shift_on_k ? gk : gp];
            if (weights) v *= weights[gk];
        }
        slice[k][p] = v;
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
        stage_slice<DTX>(a, K, k0, p0, shift_on_k, weights, as);
        stage_slice<DTY>(b, K, k0, q0, shift_on_k, nullptr, bs);
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
        sum += (double)((v - s) * w);
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

template <int DT>
__global__ void __launch_bounds__(kPairLanes) pair_stats_kernel(const KernelInputs in, const PairStatsJob job,
                                                                const PairList *pairs, int64_t chunk0,
                                                                double *partial, unsigned long long *counts) {
    __shared__ double lanes[kPairLanes];
    const int t = threadIdx.x, n_pairs = pairs->count;
    const int q0 = blockIdx.y * kPairsPerBlock, qn = min(kPairsPerBlock, n_pairs - q0);
    const int64_t begin = (chunk0 + blockIdx.x) * kPairChunk, end = min(in.count, begin + kPairChunk);
    double acc[kPairsPerBlock];
    unsigned conflicts[kPairsPerBlock], nonzero[kPairsPerBlock], kept[kPairsPerBlock], bad[kPairsPerBlock];
#pragma unroll
    for (int g = 0; g < kPairsPerBlock; ++g) { acc[g] = 0.0; conflicts[g] = nonzero[g] = kept[g] = bad[g] = 0; }
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
