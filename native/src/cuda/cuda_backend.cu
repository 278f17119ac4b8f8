// The CUDA backend: one device and one non-blocking stream per context. Kernels are hand-written and
// call the same element functions as the CPU backend; only DELLA's per-row ranking uses CUB's
// segmented radix sort (a solved problem, shipped with the toolkit). Every CUDA error is
// turned into a status with its name and place; nothing here aborts the process.
#include <cub/device/device_segmented_radix_sort.cuh>
#include <cuda_runtime.h>
#include <mma.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "../common/merge_element.h"
#include "../common/stats.h"
#include "../core/backend.h"

namespace smelter {
namespace {

[[noreturn]] void cuda_fail(cudaError_t e, const char *expr, const char *file, int line) {
    smelter_status s = e == cudaErrorMemoryAllocation ? SMELTER_ERR_OUT_OF_MEMORY
                       : (e == cudaErrorNoDevice || e == cudaErrorInsufficientDriver) ? SMELTER_ERR_NO_DEVICE
                                                                                      : SMELTER_ERR_DEVICE;
    std::string where = std::string(file);
    where = where.substr(where.find_last_of('/') + 1);
    fail(s, std::string("CUDA error ") + cudaGetErrorName(e) + ": " + cudaGetErrorString(e) + " (in " + expr + " at " +
                where + ":" + std::to_string(line) + ")");
}

#define CUDA_CHECK(expr)                                                 \
    do {                                                                 \
        cudaError_t err_ = (expr);                                       \
        if (err_ != cudaSuccess) cuda_fail(err_, #expr, __FILE__, __LINE__); \
    } while (0)

constexpr int kThreads = 256;

// ---- kernels -------------------------------------------------------------------------------

template <int DT>
__device__ __forceinline__ float load(const void *p, int64_t i) {
    if (DT == SMELTER_F32) return __ldg(static_cast<const float *>(p) + i);
    uint16_t h = __ldg(static_cast<const unsigned short *>(p) + i);
    return DT == SMELTER_BF16 ? bf16_to_float(h) : f16_to_float(h);
}

template <int DT>
__device__ __forceinline__ void store(void *p, int64_t i, float v) {
    if (DT == SMELTER_F32) static_cast<float *>(p)[i] = v;
    else static_cast<uint16_t *>(p)[i] = DT == SMELTER_BF16 ? float_to_bf16(v) : float_to_f16(v);
}

__device__ __forceinline__ unsigned long long warp_sum(unsigned long long v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xFFFFFFFFu, v, o);
    return v;
}

// Each thread owns one aligned quad of global element indices (4q .. 4q+3), so one Philox call per
// model gives the random bits of all four elements.
template <int MAXN, int IN, int OUT>
__global__ void __launch_bounds__(kThreads) merge_kernel(const MergePlan p, const KernelInputs in, void *out,
                                                         unsigned long long *sign_counts) {
    const int64_t first_quad = p.element_offset >> 2;
    const int64_t last_quad = (p.element_offset + in.count - 1) >> 2;
    const bool random = p.sparsify == SMELTER_SPARSIFY_RANDOM, ranked = p.sparsify == SMELTER_SPARSIFY_RANKED;
    unsigned long long pos = 0, neg = 0, none = 0, bad = 0;
    for (int64_t q = first_quad + blockIdx.x * (int64_t)blockDim.x + threadIdx.x; q <= last_quad;
         q += (int64_t)gridDim.x * blockDim.x) {
        uint32_t bits[MAXN][4];
        if (random || ranked) {
#pragma unroll
            for (int i = 0; i < MAXN; ++i) {
                if (i >= p.n) break;
                Philox4 r = random_block(p.stream_key, (uint64_t)q, (uint32_t)i, ranked ? STREAM_DELLA : STREAM_DARE);
#pragma unroll
                for (int w = 0; w < 4; ++w) bits[i][w] = r.v[w] >> 8;
            }
        }
#pragma unroll
        for (int w = 0; w < 4; ++w) {
            const int64_t j = q * 4 + w - p.element_offset;  // local element index
            if (j < 0 || j >= in.count) continue;
            float xv[MAXN];
#pragma unroll
            for (int i = 0; i < MAXN; ++i) {
                if (i >= p.n) break;
                xv[i] = load<IN>(in.models[i], j);
            }
            const float x0 = in.base ? load<IN>(in.base, j) : 0.0f;
            const bool selected = p.has_select && select_keep(p, load_element(in.select, in.select_dtype, j));
            int e;
            float r = merge_element<MAXN, false>(
                p, x0, [&](int i) { return xv[i]; },
                [&](int i) { return ranked ? ranked_keep(p, i, bits[i][w], in.ranks[i][j]) : bits[i][w]; },
                [&](int i) { return p.has_element_weights ? load_element(in.element_weights[i], in.element_weight_dtype, j) : 1.0f; },
                selected, &e);
            if (out) store<OUT>(out, j, r);
            bad += (float_bits(r) & 0x7FFFFFFFu) >= p.nonfinite_bits && p.nonfinite_bits;
            pos += e > 0;
            neg += e < 0;
            none += e == 0;
        }
    }
    if (sign_counts) {
        pos = warp_sum(pos);
        neg = warp_sum(neg);
        none = warp_sum(none);
        bad = warp_sum(bad);
        if ((threadIdx.x & 31) == 0) {
            atomicAdd(sign_counts + 0, pos);
            atomicAdd(sign_counts + 1, neg);
            atomicAdd(sign_counts + 2, none);
            if (bad) atomicAdd(sign_counts + 3, bad);
        }
    }
}

// Level-0 histograms (32768 bins) are built in shared memory per block, then added to global.
template <int DT>
__global__ void __launch_bounds__(1024) histogram_shared_kernel(const KernelInputs in, int model, int32_t key_dtype,
                                                                unsigned long long *hist) {
    extern __shared__ unsigned int local[];
    for (int b = threadIdx.x; b < kLevel0Bins; b += blockDim.x) local[b] = 0;
    __syncthreads();
    for (int64_t j = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; j < in.count; j += (int64_t)gridDim.x * blockDim.x) {
        const float x0 = in.base ? load<DT>(in.base, j) : 0.0f;
        uint32_t bin;
        key_bin(magnitude_key(load<DT>(in.models[model], j) - x0, key_dtype), key_dtype, 0, 0, &bin);
        atomicAdd(local + bin, 1u);
    }
    __syncthreads();
    for (int b = threadIdx.x; b < kLevel0Bins; b += blockDim.x)
        if (local[b]) atomicAdd(hist + b, (unsigned long long)local[b]);
}

// Level-1 (f32 refinement) touches only the keys under one level-0 bin: few, so global atomics.
template <int DT>
__global__ void __launch_bounds__(kThreads) histogram_refine_kernel(const KernelInputs in, int model, uint32_t prefix,
                                                                    unsigned long long *hist) {
    for (int64_t j = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; j < in.count; j += (int64_t)gridDim.x * blockDim.x) {
        const float x0 = in.base ? load<DT>(in.base, j) : 0.0f;
        uint32_t bin;
        if (key_bin(magnitude_key(load<DT>(in.models[model], j) - x0, KEY_F32), KEY_F32, 1, prefix, &bin))
            atomicAdd(hist + bin, 1ull);
    }
}

template <int DT>
__global__ void __launch_bounds__(kThreads) l1_kernel(const MergePlan p, const KernelInputs in, int model,
                                                      unsigned long long *sums /* total[256], kept[256] */) {
    __shared__ unsigned long long local[2 * ExactSum::kBuckets];
    for (int b = threadIdx.x; b < 2 * ExactSum::kBuckets; b += blockDim.x) local[b] = 0;
    __syncthreads();
    const bool random = p.sparsify == SMELTER_SPARSIFY_RANDOM, ranked = p.sparsify == SMELTER_SPARSIFY_RANKED;
    for (int64_t j = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; j < in.count; j += (int64_t)gridDim.x * blockDim.x) {
        const float x0 = in.base ? load<DT>(in.base, j) : 0.0f;
        float d = load<DT>(in.models[model], j) - x0;
        if (p.has_select && !select_keep(p, load_element(in.select, in.select_dtype, j))) d = 0.0f;  // as the merge sees it
        const uint64_t g = (uint64_t)(p.element_offset + j);
        uint32_t rnd = (random || ranked)
            ? random_block(p.stream_key, g >> 2, (uint32_t)model, ranked ? STREAM_DELLA : STREAM_DARE).v[g & 3] >> 8 : 0u;
        if (ranked) rnd = ranked_keep(p, model, rnd, in.ranks[model][j]);
        uint32_t bucket, significand;
        exact_sum_split(d, &bucket, &significand);
        atomicAdd(local + bucket, (unsigned long long)significand);
        if (sparsify_keep(p, p.sparsify, model, d, rnd)) atomicAdd(local + ExactSum::kBuckets + bucket, (unsigned long long)significand);
    }
    __syncthreads();
    for (int b = threadIdx.x; b < 2 * ExactSum::kBuckets; b += blockDim.x)
        if (local[b]) atomicAdd(sums + b, local[b]);
}

// DELLA ranking: keys of |delta| and positions within the row, for CUB's segmented sort.
template <int DT>
__global__ void __launch_bounds__(kThreads) rank_keys_kernel(const KernelInputs in, int model, int32_t key_dtype,
                                                             int64_t first, int64_t count, int64_t row_length,
                                                             uint32_t *keys, uint32_t *positions) {
    for (int64_t t = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; t < count; t += (int64_t)gridDim.x * blockDim.x) {
        const int64_t j = first + t;
        const float x0 = in.base ? load<DT>(in.base, j) : 0.0f;
        keys[t] = magnitude_key(load<DT>(in.models[model], j) - x0, key_dtype);
        positions[t] = (uint32_t)(t % row_length);
    }
}

__global__ void __launch_bounds__(kThreads) row_offsets_kernel(int64_t rows, int64_t row_length, int64_t *offsets) {
    for (int64_t r = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; r <= rows; r += (int64_t)gridDim.x * blockDim.x)
        offsets[r] = r * row_length;
}

// Sorted slot t of a row holds the position with rank t % row_length.
__global__ void __launch_bounds__(kThreads) scatter_ranks_kernel(const uint32_t *sorted_positions, int64_t first,
                                                                 int64_t count, int64_t row_length, uint32_t *ranks) {
    for (int64_t t = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; t < count; t += (int64_t)gridDim.x * blockDim.x) {
        const int64_t row0 = first + (t / row_length) * row_length;
        ranks[row0 + sorted_positions[t]] = (uint32_t)(t % row_length);
    }
}

#include "analysis_kernels.cuh"

// ---- host side -------------------------------------------------------------------------------

class DeviceBuffer {
public:
    DeviceBuffer() = default;
    explicit DeviceBuffer(size_t bytes) {
        injected_allocation_fault(bytes);
        if (bytes) CUDA_CHECK(cudaMalloc(&ptr_, bytes));
    }
    ~DeviceBuffer() {
        if (ptr_) cudaFree(ptr_);
    }
    DeviceBuffer(const DeviceBuffer &) = delete;
    DeviceBuffer &operator=(const DeviceBuffer &) = delete;
    void *get() const { return ptr_; }

private:
    void *ptr_ = nullptr;
};

size_t bytes_of(int32_t dtype, int64_t count) { return static_cast<size_t>(count) * (dtype == SMELTER_F32 ? 4 : 2); }

class CudaBackend final : public Backend {
public:
    explicit CudaBackend(int device) : device_(device) {
        int count = 0;
        cudaError_t e = cudaGetDeviceCount(&count);
        if (e != cudaSuccess) {
            cudaGetLastError();
            fail(SMELTER_ERR_NO_DEVICE, std::string("no usable CUDA driver/device: ") + cudaGetErrorString(e));
        }
        if (device < 0 || device >= count)
            fail(SMELTER_ERR_NO_DEVICE, "CUDA device " + std::to_string(device) + " does not exist (" +
                                            std::to_string(count) + " visible)");
        CUDA_CHECK(cudaSetDevice(device_));
        CUDA_CHECK(cudaDeviceGetAttribute(&sms_, cudaDevAttrMultiProcessorCount, device_));
        int major = 0;
        CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device_));
        const char *product = std::getenv("SMELTER_CUDA_PRODUCT");
        tensor_core_products_ = major >= 8 && !(product && std::strcmp(product, "simt") == 0);
        CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
        CUDA_CHECK(cudaMalloc(&scratch_, sizeof(unsigned long long) * kLevel1Bins));
    }
    ~CudaBackend() override {
        cudaSetDevice(device_);
        if (stream_) cudaStreamSynchronize(stream_);
        if (scratch_) cudaFree(scratch_);
        if (stream_) cudaStreamDestroy(stream_);
    }

    smelter_backend kind() const override { return SMELTER_BACKEND_CUDA; }

    void *alloc(smelter_memory memory, size_t bytes) override {
        CUDA_CHECK(cudaSetDevice(device_));
        void *p = nullptr;
        injected_allocation_fault(bytes);
        if (memory == SMELTER_MEMORY_DEVICE) CUDA_CHECK(cudaMalloc(&p, bytes));
        else CUDA_CHECK(cudaMallocHost(&p, bytes));
        return p;
    }
    void free(smelter_memory memory, void *ptr) override {
        CUDA_CHECK(cudaSetDevice(device_));
        if (memory == SMELTER_MEMORY_DEVICE) CUDA_CHECK(cudaFree(ptr));
        else CUDA_CHECK(cudaFreeHost(ptr));
    }
    void copy(void *dst, smelter_memory, const void *src, smelter_memory, size_t bytes) override {
        CUDA_CHECK(cudaSetDevice(device_));
        CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, stream_));
    }
    void synchronize() override {
        CUDA_CHECK(cudaSetDevice(device_));
        CUDA_CHECK(cudaStreamSynchronize(stream_));
    }
    // Four fifths of the free device memory: the rest leaves room for the row sort's temporary
    // storage, the histograms and the allocator's granularity.
    int64_t staging_budget() override {
        CUDA_CHECK(cudaSetDevice(device_));
        size_t free_bytes = 0, total_bytes = 0;
        CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
        return static_cast<int64_t>(free_bytes / 5 * 4);
    }

    struct CudaStaged : Staged {
        std::vector<std::unique_ptr<DeviceBuffer>> buffers;
    };

    void stage_extra(Staged &staged, const smelter_tensor *select, const smelter_tensor *element_weights, int n) override {
        CUDA_CHECK(cudaSetDevice(device_));
        auto &s = static_cast<CudaStaged &>(staged);
        if (select) {
            s.inputs.select = readable(s.buffers, *select);
            s.inputs.select_dtype = select->dtype;
        }
        if (element_weights) {
            for (int i = 0; i < n; ++i) s.inputs.element_weights[i] = readable(s.buffers, element_weights[i]);
            s.inputs.element_weight_dtype = element_weights[0].dtype;
        }
    }

    // Rows are sorted by (key, position) with CUB's stable segmented radix sort, in slices of at most
    // 2^30 elements (CUB counts items in int), then each position gets its slot in the row.
    void rank_rows(Staged &staged, int model, int32_t key_dtype, int64_t row_length) override {
        CUDA_CHECK(cudaSetDevice(device_));
        auto &s = static_cast<CudaStaged &>(staged);
        const int64_t count = s.inputs.count;
        s.buffers.push_back(std::make_unique<DeviceBuffer>(sizeof(uint32_t) * std::max<int64_t>(count, 1)));
        auto *ranks = static_cast<uint32_t *>(s.buffers.back()->get());
        s.inputs.ranks[model] = ranks;
        if (count == 0) return;
        const int64_t rows = count / row_length;
        const int64_t rows_per_slice = std::max<int64_t>(1, (int64_t{1} << 30) / row_length);
        const int64_t slice = std::min(rows, rows_per_slice) * row_length;
        DeviceBuffer keys(sizeof(uint32_t) * slice), keys_out(sizeof(uint32_t) * slice),
            positions(sizeof(uint32_t) * slice), positions_out(sizeof(uint32_t) * slice),
            offsets(sizeof(int64_t) * (std::min(rows, rows_per_slice) + 1));
        const int end_bit = key_dtype == KEY_F32 ? 31 : 15;
        size_t temp_bytes = 0;
        CUDA_CHECK(cub::DeviceSegmentedRadixSort::SortPairs(
            nullptr, temp_bytes, static_cast<const uint32_t *>(keys.get()), static_cast<uint32_t *>(keys_out.get()),
            static_cast<const uint32_t *>(positions.get()), static_cast<uint32_t *>(positions_out.get()),
            static_cast<int>(slice), static_cast<int>(slice / row_length), static_cast<const int64_t *>(offsets.get()),
            static_cast<const int64_t *>(offsets.get()) + 1, 0, end_bit, stream_));
        DeviceBuffer temp(std::max<size_t>(temp_bytes, 1));
        for (int64_t r0 = 0; r0 < rows; r0 += rows_per_slice) {
            const int64_t n_rows = std::min(rows_per_slice, rows - r0), first = r0 * row_length, n = n_rows * row_length;
            const int blocks = grid(n, kThreads, sms_ * 16);
            switch (s.inputs.dtype) {
                case SMELTER_F32: rank_keys_kernel<SMELTER_F32><<<blocks, kThreads, 0, stream_>>>(s.inputs, model, key_dtype, first, n, row_length, static_cast<uint32_t *>(keys.get()), static_cast<uint32_t *>(positions.get())); break;
                case SMELTER_F16: rank_keys_kernel<SMELTER_F16><<<blocks, kThreads, 0, stream_>>>(s.inputs, model, key_dtype, first, n, row_length, static_cast<uint32_t *>(keys.get()), static_cast<uint32_t *>(positions.get())); break;
                default: rank_keys_kernel<SMELTER_BF16><<<blocks, kThreads, 0, stream_>>>(s.inputs, model, key_dtype, first, n, row_length, static_cast<uint32_t *>(keys.get()), static_cast<uint32_t *>(positions.get())); break;
            }
            row_offsets_kernel<<<grid(n_rows + 1, kThreads, sms_ * 4), kThreads, 0, stream_>>>(n_rows, row_length, static_cast<int64_t *>(offsets.get()));
            CUDA_CHECK(cudaGetLastError());
            size_t bytes = temp_bytes;
            CUDA_CHECK(cub::DeviceSegmentedRadixSort::SortPairs(
                temp.get(), bytes, static_cast<const uint32_t *>(keys.get()), static_cast<uint32_t *>(keys_out.get()),
                static_cast<const uint32_t *>(positions.get()), static_cast<uint32_t *>(positions_out.get()),
                static_cast<int>(n), static_cast<int>(n_rows), static_cast<const int64_t *>(offsets.get()),
                static_cast<const int64_t *>(offsets.get()) + 1, 0, end_bit, stream_));
            scatter_ranks_kernel<<<blocks, kThreads, 0, stream_>>>(static_cast<const uint32_t *>(positions_out.get()), first, n, row_length, ranks);
            CUDA_CHECK(cudaGetLastError());
        }
        CUDA_CHECK(cudaStreamSynchronize(stream_));  // the slice buffers are freed on return
    }

    std::unique_ptr<Staged> stage(const smelter_tensor *base, const smelter_tensor *models, int n) override {
        CUDA_CHECK(cudaSetDevice(device_));
        auto s = std::make_unique<CudaStaged>();
        auto device_view = [&](const smelter_tensor &t) { return readable(s->buffers, t); };
        s->inputs.base = base ? device_view(*base) : nullptr;
        for (int i = 0; i < n; ++i) s->inputs.models[i] = device_view(models[i]);
        s->inputs.dtype = models[0].dtype;
        s->inputs.count = models[0].count;
        return s;
    }

    void key_histogram(const KernelInputs &in, int model, int32_t key_dtype, int level, uint32_t prefix,
                       uint64_t *hist) override {
        if (in.count == 0) return;
        CUDA_CHECK(cudaSetDevice(device_));
        const int bins = (key_dtype == SMELTER_F32 && level == 1) ? kLevel1Bins : kLevel0Bins;
        auto *d_hist = static_cast<unsigned long long *>(scratch_);
        CUDA_CHECK(cudaMemsetAsync(d_hist, 0, sizeof(unsigned long long) * bins, stream_));
        if (bins == kLevel0Bins) {
            const size_t shared = sizeof(unsigned int) * kLevel0Bins;
            const int blocks = grid(in.count, 1024, sms_);
            switch (in.dtype) {
                case SMELTER_F32: launch_hist<SMELTER_F32>(in, model, key_dtype, d_hist, blocks, shared); break;
                case SMELTER_F16: launch_hist<SMELTER_F16>(in, model, key_dtype, d_hist, blocks, shared); break;
                default: launch_hist<SMELTER_BF16>(in, model, key_dtype, d_hist, blocks, shared); break;
            }
        } else {
            const int blocks = grid(in.count, kThreads, sms_ * 8);
            switch (in.dtype) {
                case SMELTER_F32: histogram_refine_kernel<SMELTER_F32><<<blocks, kThreads, 0, stream_>>>(in, model, prefix, d_hist); break;
                case SMELTER_F16: histogram_refine_kernel<SMELTER_F16><<<blocks, kThreads, 0, stream_>>>(in, model, prefix, d_hist); break;
                default: histogram_refine_kernel<SMELTER_BF16><<<blocks, kThreads, 0, stream_>>>(in, model, prefix, d_hist); break;
            }
        }
        CUDA_CHECK(cudaGetLastError());
        std::vector<uint64_t> h(bins);
        CUDA_CHECK(cudaMemcpyAsync(h.data(), d_hist, sizeof(uint64_t) * bins, cudaMemcpyDeviceToHost, stream_));
        CUDA_CHECK(cudaStreamSynchronize(stream_));
        for (int b = 0; b < bins; ++b) hist[b] += h[b];
    }

    void l1_norms(const MergePlan &plan, const KernelInputs &in, int model, ExactSum *total, ExactSum *kept) override {
        if (in.count == 0) return;
        CUDA_CHECK(cudaSetDevice(device_));
        auto *d_sums = static_cast<unsigned long long *>(scratch_);
        CUDA_CHECK(cudaMemsetAsync(d_sums, 0, sizeof(unsigned long long) * 2 * ExactSum::kBuckets, stream_));
        const int blocks = grid(in.count, kThreads, sms_ * 8);
        switch (in.dtype) {
            case SMELTER_F32: l1_kernel<SMELTER_F32><<<blocks, kThreads, 0, stream_>>>(plan, in, model, d_sums); break;
            case SMELTER_F16: l1_kernel<SMELTER_F16><<<blocks, kThreads, 0, stream_>>>(plan, in, model, d_sums); break;
            default: l1_kernel<SMELTER_BF16><<<blocks, kThreads, 0, stream_>>>(plan, in, model, d_sums); break;
        }
        CUDA_CHECK(cudaGetLastError());
        std::vector<uint64_t> h(2 * ExactSum::kBuckets);
        CUDA_CHECK(cudaMemcpyAsync(h.data(), d_sums, sizeof(uint64_t) * h.size(), cudaMemcpyDeviceToHost, stream_));
        CUDA_CHECK(cudaStreamSynchronize(stream_));
        for (int b = 0; b < ExactSum::kBuckets; ++b) {
            total->bucket[b] += h[b];
            kept->bucket[b] += h[ExactSum::kBuckets + b];
        }
    }

    void merge(const MergePlan &plan, const KernelInputs &in, const smelter_tensor *out, int64_t counts[4]) override {
        if (in.count == 0) return;
        CUDA_CHECK(cudaSetDevice(device_));
        std::unique_ptr<DeviceBuffer> staged_out;
        void *d_out = nullptr;
        if (out) {
            if (out->memory == SMELTER_MEMORY_DEVICE) {
                d_out = out->data;
            } else {
                staged_out = std::make_unique<DeviceBuffer>(bytes_of(out->dtype, out->count));
                d_out = staged_out->get();
            }
        }
        auto *d_counts = static_cast<unsigned long long *>(scratch_);
        CUDA_CHECK(cudaMemsetAsync(d_counts, 0, sizeof(unsigned long long) * 4, stream_));
        const int64_t quads = ((plan.element_offset + in.count - 1) >> 2) - (plan.element_offset >> 2) + 1;
        const int blocks = grid(quads, kThreads, sms_ * 16);
        const int out_dtype = out ? out->dtype : SMELTER_F32;
        launch_merge(plan, in, d_out, out_dtype, d_counts, blocks);
        CUDA_CHECK(cudaGetLastError());
        unsigned long long h[4];
        CUDA_CHECK(cudaMemcpyAsync(h, d_counts, sizeof h, cudaMemcpyDeviceToHost, stream_));
        if (out && out->memory == SMELTER_MEMORY_HOST)
            CUDA_CHECK(cudaMemcpyAsync(out->data, d_out, bytes_of(out->dtype, out->count), cudaMemcpyDeviceToHost, stream_));
        CUDA_CHECK(cudaStreamSynchronize(stream_));
        for (int i = 0; i < 4; ++i) counts[i] += static_cast<int64_t>(h[i]);
    }

    void product(const ProductJob &j) override {
        CUDA_CHECK(cudaSetDevice(device_));
        std::vector<std::unique_ptr<DeviceBuffer>> keep;
        const int64_t shift_x = j.shift_on_k ? j.K : j.P, shift_y = j.shift_on_k ? j.K : j.Q;
        Operand a{readable(keep, *j.x), j.x_stride_k, j.x_stride_p, j.P,
                  static_cast<const float *>(upload(keep, j.x_shift, sizeof(float) * shift_x))};
        Operand b{readable(keep, *j.y), j.y_stride_k, j.y_stride_q, j.Q,
                  static_cast<const float *>(upload(keep, j.y_shift, sizeof(float) * shift_y))};
        const auto *weights = static_cast<const float *>(upload(keep, j.weights, sizeof(float) * j.K));
        const dim3 grid(static_cast<unsigned>((j.Q + kTile - 1) / kTile), static_cast<unsigned>((j.P + kTile - 1) / kTile));
        if (grid.y > 65535u) fail(SMELTER_ERR_UNSUPPORTED, "product has more than " + std::to_string(65535 * kTile) + " output rows");
        if (j.out_f64) {  // formed on the device, added to the caller's host array here
            const size_t n = static_cast<size_t>(j.P) * j.Q;
            keep.push_back(std::make_unique<DeviceBuffer>(sizeof(double) * n));
            auto *d_out = static_cast<double *>(keep.back()->get());
            launch_product(j.x->dtype, j.y->dtype, grid, a, b, j, weights, nullptr, d_out);
            CUDA_CHECK(cudaGetLastError());
            std::vector<double> h(n);
            CUDA_CHECK(cudaMemcpyAsync(h.data(), d_out, sizeof(double) * n, cudaMemcpyDeviceToHost, stream_));
            CUDA_CHECK(cudaStreamSynchronize(stream_));
            for (size_t i = 0; i < n; ++i) j.out_f64[i] = j.accumulate ? j.out_f64[i] + h[i] : h[i];
            return;
        }
        const size_t out_bytes = sizeof(float) * j.P * j.Q;
        float *out = static_cast<float *>(j.out->data);
        if (j.out->memory == SMELTER_MEMORY_HOST) {
            keep.push_back(std::make_unique<DeviceBuffer>(out_bytes));
            out = static_cast<float *>(keep.back()->get());
            if (j.accumulate) CUDA_CHECK(cudaMemcpyAsync(out, j.out->data, out_bytes, cudaMemcpyHostToDevice, stream_));
        }
        launch_product(j.x->dtype, j.y->dtype, grid, a, b, j, weights, out, nullptr);
        CUDA_CHECK(cudaGetLastError());
        if (j.out->memory == SMELTER_MEMORY_HOST)
            CUDA_CHECK(cudaMemcpyAsync(j.out->data, out, out_bytes, cudaMemcpyDeviceToHost, stream_));
        CUDA_CHECK(cudaStreamSynchronize(stream_));
    }

    void column_stats(const ColumnStatsJob &j) override {
        CUDA_CHECK(cudaSetDevice(device_));
        std::vector<std::unique_ptr<DeviceBuffer>> keep;
        const void *x = readable(keep, *j.x);
        const auto *shift = static_cast<const float *>(upload(keep, j.shift, sizeof(float) * j.cols));
        const auto *weights = static_cast<const float *>(upload(keep, j.weights, sizeof(float) * j.rows));
        // The row split depends on the shape only, so the summation order is the same on every GPU.
        const int64_t per_block = std::max<int64_t>(kStatsRowsPerBlock, (j.rows + kStatsMaxRowBlocks - 1) / kStatsMaxRowBlocks);
        const int row_blocks = static_cast<int>((j.rows + per_block - 1) / per_block);
        DeviceBuffer sums(sizeof(double) * row_blocks * j.cols), positive(sizeof(unsigned long long) * row_blocks * j.cols);
        auto *d_sums = static_cast<double *>(sums.get());
        auto *d_positive = static_cast<unsigned long long *>(positive.get());
        const dim3 grid(static_cast<unsigned>((j.cols + kStatsThreads - 1) / kStatsThreads), static_cast<unsigned>(row_blocks));
        switch (j.x->dtype) {
            case SMELTER_F32: column_stats_kernel<SMELTER_F32><<<grid, kStatsThreads, 0, stream_>>>(x, j.rows, j.cols, per_block, shift, weights, d_sums, d_positive); break;
            case SMELTER_F16: column_stats_kernel<SMELTER_F16><<<grid, kStatsThreads, 0, stream_>>>(x, j.rows, j.cols, per_block, shift, weights, d_sums, d_positive); break;
            default: column_stats_kernel<SMELTER_BF16><<<grid, kStatsThreads, 0, stream_>>>(x, j.rows, j.cols, per_block, shift, weights, d_sums, d_positive); break;
        }
        CUDA_CHECK(cudaGetLastError());
        column_stats_reduce_kernel<<<grid.x, kStatsThreads, 0, stream_>>>(j.cols, row_blocks, d_sums, d_positive);
        CUDA_CHECK(cudaGetLastError());
        std::vector<double> h_sums(j.cols);
        std::vector<unsigned long long> h_positive(j.cols);
        CUDA_CHECK(cudaMemcpyAsync(h_sums.data(), d_sums, sizeof(double) * j.cols, cudaMemcpyDeviceToHost, stream_));
        CUDA_CHECK(cudaMemcpyAsync(h_positive.data(), d_positive, sizeof(unsigned long long) * j.cols, cudaMemcpyDeviceToHost, stream_));
        CUDA_CHECK(cudaStreamSynchronize(stream_));
        for (int64_t c = 0; c < j.cols; ++c) {
            if (j.sums) j.sums[c] += h_sums[c];
            if (j.positive) j.positive[c] += static_cast<int64_t>(h_positive[c]);
        }
    }

    void pair_stats(const PairStatsJob &j, const KernelInputs &in) override {
        CUDA_CHECK(cudaSetDevice(device_));
        const int pairs = pair_count(j.n);
        const int64_t n_chunks = (in.count + kPairChunk - 1) / kPairChunk;
        PairList list{};
        list.count = pairs;
        for (int i = 0, q = 0; i < j.n; ++i)
            for (int k = i; k < j.n; ++k, ++q) {
                list.i[q] = static_cast<int8_t>(i);
                list.k[q] = static_cast<int8_t>(k);
            }
        std::vector<std::unique_ptr<DeviceBuffer>> keep;
        const auto *d_list = static_cast<const PairList *>(upload(keep, &list, sizeof list));
        const int64_t n_counts = 3 * static_cast<int64_t>(pairs) + j.n;
        // partial and total hold the dots in their first half, the squared distances in their second.
        DeviceBuffer partial(2 * sizeof(double) * kPairRoundChunks * pairs), total(2 * sizeof(double) * pairs),
            counts(sizeof(unsigned long long) * n_counts);
        auto *d_partial = static_cast<double *>(partial.get()), *d_partial_sq = d_partial + kPairRoundChunks * pairs;
        auto *d_total = static_cast<double *>(total.get()), *d_total_sq = d_total + pairs;
        auto *d_counts = static_cast<unsigned long long *>(counts.get());
        {  // the job's running sums, continued in chunk order (pieces of a tensor give one piece's bits)
            std::vector<double> start(2 * pairs, 0.0);
            for (int q = 0; q < pairs; ++q) {
                if (j.dots) start[q] = j.dots[q];
                if (j.squared_distances) start[pairs + q] = j.squared_distances[q];
            }
            CUDA_CHECK(cudaMemcpy(d_total, start.data(), 2 * sizeof(double) * pairs, cudaMemcpyHostToDevice));
        }
        CUDA_CHECK(cudaMemsetAsync(d_counts, 0, sizeof(unsigned long long) * n_counts, stream_));
        const unsigned groups = static_cast<unsigned>((pairs + kPairsPerBlock - 1) / kPairsPerBlock);
        for (int64_t r0 = 0; r0 < n_chunks; r0 += kPairRoundChunks) {
            const int round = static_cast<int>(std::min<int64_t>(kPairRoundChunks, n_chunks - r0));
            const dim3 grid(static_cast<unsigned>(round), groups);
            switch (in.dtype) {
                case SMELTER_F32: pair_stats_kernel<SMELTER_F32><<<grid, kPairLanes, 0, stream_>>>(in, j, d_list, r0, d_partial, d_partial_sq, d_counts); break;
                case SMELTER_F16: pair_stats_kernel<SMELTER_F16><<<grid, kPairLanes, 0, stream_>>>(in, j, d_list, r0, d_partial, d_partial_sq, d_counts); break;
                default: pair_stats_kernel<SMELTER_BF16><<<grid, kPairLanes, 0, stream_>>>(in, j, d_list, r0, d_partial, d_partial_sq, d_counts); break;
            }
            CUDA_CHECK(cudaGetLastError());
            if (j.dots) {
                pair_stats_reduce_kernel<<<(pairs + 255) / 256, 256, 0, stream_>>>(pairs, round, d_partial, d_total);
                CUDA_CHECK(cudaGetLastError());
            }
            if (j.squared_distances) {
                pair_stats_reduce_kernel<<<(pairs + 255) / 256, 256, 0, stream_>>>(pairs, round, d_partial_sq, d_total_sq);
                CUDA_CHECK(cudaGetLastError());
            }
        }
        std::vector<double> h_total(2 * pairs);
        std::vector<unsigned long long> h_counts(n_counts);
        CUDA_CHECK(cudaMemcpyAsync(h_total.data(), d_total, 2 * sizeof(double) * pairs, cudaMemcpyDeviceToHost, stream_));
        CUDA_CHECK(cudaMemcpyAsync(h_counts.data(), d_counts, sizeof(unsigned long long) * n_counts, cudaMemcpyDeviceToHost, stream_));
        CUDA_CHECK(cudaStreamSynchronize(stream_));
        for (int q = 0; q < pairs; ++q) {
            if (j.dots) j.dots[q] = h_total[q];
            if (j.squared_distances) j.squared_distances[q] = h_total[pairs + q];
            if (j.conflicts) j.conflicts[q] += static_cast<int64_t>(h_counts[q]);
            if (j.both_nonzero) j.both_nonzero[q] += static_cast<int64_t>(h_counts[pairs + q]);
            if (j.both_kept) j.both_kept[q] += static_cast<int64_t>(h_counts[2 * pairs + q]);
        }
        for (int i = 0; i < j.n && j.nonfinite; ++i) j.nonfinite[i] += static_cast<int64_t>(h_counts[3 * pairs + i]);
    }

private:
    // Copies host bytes into a new device buffer kept alive by `keep` (queued on the stream);
    // nullptr for no data.
    const void *upload(std::vector<std::unique_ptr<DeviceBuffer>> &keep, const void *host, size_t bytes) {
        if (!host || bytes == 0) return nullptr;
        keep.push_back(std::make_unique<DeviceBuffer>(bytes));
        CUDA_CHECK(cudaMemcpyAsync(keep.back()->get(), host, bytes, cudaMemcpyHostToDevice, stream_));
        return keep.back()->get();
    }

    // A pointer kernels can read: device tensors as they are, host tensors staged through `keep`.
    const void *readable(std::vector<std::unique_ptr<DeviceBuffer>> &keep, const smelter_tensor &t) {
        if (t.memory == SMELTER_MEMORY_DEVICE || t.count == 0) return t.data;
        return upload(keep, t.data, bytes_of(t.dtype, t.count));
    }

    // Into out (f32), or into out64 (f64) where that is given.
    template <int DTX, int DTY>
    void launch_product_xy(dim3 grid, const Operand &a, const Operand &b, const ProductJob &j, const float *weights,
                           float *out, double *out64) {
        if (out64)
            product_f64_kernel<DTX, DTY><<<grid, kProductThreads, 0, stream_>>>(a, b, j.K, j.shift_on_k, weights, out64);
        else if (tensor_core_products_)
            product_tf32x3_kernel<DTX, DTY><<<grid, kProductThreads, 0, stream_>>>(a, b, j.K, j.shift_on_k, weights, out, j.accumulate);
        else
            product_kernel<DTX, DTY><<<grid, kProductThreads, 0, stream_>>>(a, b, j.K, j.shift_on_k, weights, out, j.accumulate);
    }

    template <int DTX>
    void launch_product_x(int32_t dty, dim3 grid, const Operand &a, const Operand &b, const ProductJob &j,
                          const float *weights, float *out, double *out64) {
        if (dty == SMELTER_F32) launch_product_xy<DTX, SMELTER_F32>(grid, a, b, j, weights, out, out64);
        else if (dty == SMELTER_F16) launch_product_xy<DTX, SMELTER_F16>(grid, a, b, j, weights, out, out64);
        else launch_product_xy<DTX, SMELTER_BF16>(grid, a, b, j, weights, out, out64);
    }

    void launch_product(int32_t dtx, int32_t dty, dim3 grid, const Operand &a, const Operand &b, const ProductJob &j,
                        const float *weights, float *out, double *out64) {
        if (dtx == SMELTER_F32) launch_product_x<SMELTER_F32>(dty, grid, a, b, j, weights, out, out64);
        else if (dtx == SMELTER_F16) launch_product_x<SMELTER_F16>(dty, grid, a, b, j, weights, out, out64);
        else launch_product_x<SMELTER_BF16>(dty, grid, a, b, j, weights, out, out64);
    }

    static int grid(int64_t work, int threads, int cap) {
        int64_t blocks = (work + threads - 1) / threads;
        return static_cast<int>(blocks < cap ? (blocks < 1 ? 1 : blocks) : cap);
    }

    template <int DT>
    void launch_hist(const KernelInputs &in, int model, int32_t key_dtype, unsigned long long *d_hist, int blocks,
                     size_t shared) {
        CUDA_CHECK(cudaFuncSetAttribute(histogram_shared_kernel<DT>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        static_cast<int>(shared)));
        histogram_shared_kernel<DT><<<blocks, 1024, shared, stream_>>>(in, model, key_dtype, d_hist);
    }

    template <int MAXN, int IN>
    void launch_merge_out(const MergePlan &p, const KernelInputs &in, void *out, int out_dtype,
                          unsigned long long *counts, int blocks) {
        if (out_dtype == SMELTER_F32) merge_kernel<MAXN, IN, SMELTER_F32><<<blocks, kThreads, 0, stream_>>>(p, in, out, counts);
        else if (out_dtype == SMELTER_F16) merge_kernel<MAXN, IN, SMELTER_F16><<<blocks, kThreads, 0, stream_>>>(p, in, out, counts);
        else merge_kernel<MAXN, IN, SMELTER_BF16><<<blocks, kThreads, 0, stream_>>>(p, in, out, counts);
    }

    template <int MAXN>
    void launch_merge_in(const MergePlan &p, const KernelInputs &in, void *out, int out_dtype,
                         unsigned long long *counts, int blocks) {
        if (in.dtype == SMELTER_F32) launch_merge_out<MAXN, SMELTER_F32>(p, in, out, out_dtype, counts, blocks);
        else if (in.dtype == SMELTER_F16) launch_merge_out<MAXN, SMELTER_F16>(p, in, out, out_dtype, counts, blocks);
        else launch_merge_out<MAXN, SMELTER_BF16>(p, in, out, out_dtype, counts, blocks);
    }

    void launch_merge(const MergePlan &p, const KernelInputs &in, void *out, int out_dtype, unsigned long long *counts,
                      int blocks) {
        if (p.n <= 4) launch_merge_in<4>(p, in, out, out_dtype, counts, blocks);
        else if (p.n <= 16) launch_merge_in<16>(p, in, out, out_dtype, counts, blocks);
        else launch_merge_in<SMELTER_MAX_MODELS>(p, in, out, out_dtype, counts, blocks);
    }

    int device_;
    int sms_ = 1;
    bool tensor_core_products_ = false;  // smelter_product on tensor cores (3xTF32), see analysis_kernels.cuh
    cudaStream_t stream_ = nullptr;
    void *scratch_ = nullptr;  // histogram / sums / sign counts, sized for the largest (kLevel1Bins u64)
};

}  // namespace

std::unique_ptr<Backend> make_cuda_backend(int device) { return std::make_unique<CudaBackend>(device); }

int cuda_device_count() {
    int count = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    return count;
}

std::string cuda_device_name(int device) {
    int count = cuda_device_count();
    if (device < 0 || device >= count)
        fail(SMELTER_ERR_NO_DEVICE, "CUDA device " + std::to_string(device) + " does not exist (" + std::to_string(count) +
                                        " visible)");
    cudaDeviceProp prop;
    CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
    return std::string(prop.name) + ", " + std::to_string(prop.multiProcessorCount) + " SMs, " +
           std::to_string(prop.totalGlobalMem >> 30) + " GiB, sm_" + std::to_string(prop.major) + std::to_string(prop.minor);
}

const char *cuda_build_info() { return "cuda " SMELTER_CUDA_ARCHS; }

}  // namespace smelter
