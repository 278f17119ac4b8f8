// The interface each backend implements. The exported C functions (abi.cpp) validate arguments,
// resolve a MergePlan and drive these primitives; backends only move bytes and run kernels.
#pragma once
#include <stdint.h>
#include <memory>
#include <string>
#include "../common/merge_element.h"
#include "../common/pair_stats.h"
#include "../common/stats.h"
#include "smelter.h"

namespace smelter {

// Thrown inside the library, turned into a status + thread-local message at the ABI boundary.
struct Error {
    smelter_status status;
    std::string message;
};
[[noreturn]] void fail(smelter_status status, const std::string &message);

// Fault injection for tests of the callers' error paths, on every backend and without a GPU: with
// SMELTER_FAULT_ALLOC_AT=N in the environment, the N-th memory allocation of the process (host or
// device, counted from 1) fails as out of memory; the ones after it succeed again.
void injected_allocation_fault(size_t bytes);

// Tensors a kernel can read directly (for CUDA: device memory; host inputs staged by the backend).
struct KernelInputs {
    const void *base = nullptr;  // nullptr for LINEAR
    const void *models[SMELTER_MAX_MODELS] = {};
    int32_t dtype = SMELTER_F32;
    int64_t count = 0;
    const void *select = nullptr;  // position-select scores (MergePlan::has_select), select_dtype
    int32_t select_dtype = SMELTER_F32;
    const void *element_weights[SMELTER_MAX_MODELS] = {};  // LINEAR per-element weights
    int32_t element_weight_dtype = SMELTER_F32;
    const uint32_t *ranks[SMELTER_MAX_MODELS] = {};  // RANKED: rank of |delta| within its row
    const uint32_t *rank_limits[SMELTER_MAX_MODELS] = {};  // RANKED, CPU: ranked_limit() of every rank
};

// smelter_product in one form for both kinds: out[p][q] = sum_k A(k, p) B(k, q) over k < K, with
// A(k, p) = (x[k * x_stride_k + p * x_stride_p] - x_shift[shift_on_k ? k : p]) * weights[k] and
// B likewise from y (no weights); k with weights[k] == 0 is not read. out is P x Q, row-major, f32;
// or, where out_f64 is set (host memory, out null), the same product formed in f64.
struct ProductJob {
    const smelter_tensor *x, *y;       // the caller's views (host or device)
    int64_t K, P, Q;
    int64_t x_stride_k, x_stride_p, y_stride_k, y_stride_q;
    bool shift_on_k;                   // ROWS: the shift is per feature, which is the k index
    const float *x_shift, *y_shift;    // host, may be null
    const float *weights;              // host, K values, may be null
    const smelter_tensor *out;
    double *out_f64;
    bool accumulate;
};

// smelter_column_stats after validation.
struct ColumnStatsJob {
    const smelter_tensor *x;
    int64_t rows, cols;
    const float *shift, *weights;      // host, may be null
    double *sums;                      // host, may be null; added to
    int64_t *positive;                 // host, may be null; added to
};

// smelter_pair_stats after validation and staging. Outputs are host arrays of pair_count(n)
// entries (pairs i <= j, see pair_index) or n entries; each may be null. The backend adds to them.
struct PairStatsJob {
    int n;
    int32_t key_dtype;
    uint32_t thresholds[SMELTER_MAX_MODELS];
    bool has_select;               // KernelInputs::select masks positions out
    uint32_t select_threshold;
    double *dots;
    double *squared_distances;     // sum (d_i - d_j)^2, in the order of dots (0 for i == j)
    int64_t *conflicts, *both_nonzero, *both_kept;  // both_kept only when thresholds were given
    int64_t *nonfinite;
    // Every output is a running total the backend continues: the dot sums go on from the values there, in the
    // documented chunk order, and the counts are added to. So a tensor taken in pieces of whole chunks
    // (smelter_pair_stats under a memory limit) gives the same bits as in one piece.
};

class Backend {
public:
    virtual ~Backend() = default;
    virtual smelter_backend kind() const = 0;

    virtual void *alloc(smelter_memory memory, size_t bytes) = 0;
    virtual void free(smelter_memory memory, void *ptr) = 0;
    virtual void copy(void *dst, smelter_memory dst_memory, const void *src, smelter_memory src_memory,
                      size_t bytes) = 0;
    virtual void synchronize() = 0;
    // Bytes a merge call may stage at once when the caller set no limit: unlimited where tensors are
    // used in place (CPU), the free device memory on CUDA.
    virtual int64_t staging_budget() { return INT64_MAX; }

    // Makes the given tensors readable by kernels; the returned object keeps staging buffers alive.
    struct Staged {
        KernelInputs inputs;
        virtual ~Staged() = default;
    };
    virtual std::unique_ptr<Staged> stage(const smelter_tensor *base, const smelter_tensor *models, int n) = 0;
    // Adds the optional select tensor and n element-weight tensors (either may be null) to `s`.
    virtual void stage_extra(Staged &s, const smelter_tensor *select, const smelter_tensor *element_weights, int n) = 0;
    // Fills s.inputs.ranks[model] (buffers owned by `s`): the rank of each key of |model - base| within
    // its row of row_length elements, 0 = smallest, ties by position.
    virtual void rank_rows(Staged &s, int model, int32_t key_dtype, int64_t row_length) = 0;

    // Adds the keys of |model - base| (base may be null) to a host histogram of kLevel0Bins or
    // kLevel1Bins counters (see key_bin). `model` indexes inputs.models.
    virtual void key_histogram(const KernelInputs &in, int model, int32_t key_dtype, int level,
                               uint32_t prefix, uint64_t *hist) = 0;

    // Exact k-th largest keys of |model - base| over all in.count elements (1 <= k <= in.count), for
    // backends with a faster way than key histograms: sets key and done of the queries it answers,
    // and the caller finds the others with key_histogram. The default answers none.
    struct KeyQuery {
        int model;
        int64_t k;
        uint32_t key;
        bool done;
    };
    virtual void select_keys(const KernelInputs &, int32_t /*key_dtype*/, KeyQuery * /*queries*/, int /*count*/) {}

    // Adds |delta| (total) and |delta| of kept elements (kept) of one model, with the plan's
    // sparsification and before any rescale, to the two exact sums.
    virtual void l1_norms(const MergePlan &plan, const KernelInputs &in, int model, ExactSum *total,
                          ExactSum *kept) = 0;

    // Runs the merge. out may be null (only sign counts). counts: elected signs +, -, none, and
    // (when plan.count_nonfinite) output elements NaN or infinite in out's dtype.
    virtual void merge(const MergePlan &plan, const KernelInputs &in, const smelter_tensor *out,
                       int64_t counts[4]) = 0;

    // Analysis primitives (see smelter.h); both synchronous.
    virtual void product(const ProductJob &job) = 0;
    virtual void column_stats(const ColumnStatsJob &job) = 0;
    // Fixed-order dot products and counts over staged inputs (see common/pair_stats.h).
    virtual void pair_stats(const PairStatsJob &job, const KernelInputs &in) = 0;
};

std::unique_ptr<Backend> make_cpu_backend(int threads);
int cpu_core_count();
const char *cpu_kernel_isa();  // the CPU kernels chosen for this machine ("avx2", "sse2")
// CUDA entry points; when built without CUDA they report SMELTER_ERR_UNSUPPORTED.
std::unique_ptr<Backend> make_cuda_backend(int device);
int cuda_device_count();
std::string cuda_device_name(int device);
const char *cuda_build_info();

}  // namespace smelter
