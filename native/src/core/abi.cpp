// The exported C ABI: argument validation, plan resolution and error translation. Nothing thrown
// inside the library crosses this file; every entry point returns a status.
#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cmath>
#include <cstring>
#include <new>
#include <string>
#include <vector>

#include "backend.h"
#include "host_stats.h"
#include "smelter.h"

struct smelter_context {
    std::unique_ptr<smelter::Backend> backend;
    int64_t memory_limit = 0;  // smelter_context_set_memory_limit; 0 = the backend's staging budget
};

struct smelter_topk {
    smelter_context *ctx;
    int32_t key_dtype;
    int level = 0;                 // 0, then 1 for the f32 refinement pass
    uint32_t prefix = 0;           // level-0 bin chosen for level 1
    int64_t k = -1;                // k of the first select, checked in the second
    uint64_t rank_in_prefix = 0;   // k restated inside the chosen bin
    int64_t count = 0;             // keys added in this pass
    int64_t first_pass_count = 0;
    std::vector<uint64_t> hist;
};

namespace smelter {

[[noreturn]] void fail(smelter_status status, const std::string &message) { throw Error{status, message}; }

void injected_allocation_fault(size_t bytes) {
    static const long long fail_at = [] {
        const char *v = std::getenv("SMELTER_FAULT_ALLOC_AT");
        return v ? std::atoll(v) : 0LL;
    }();
    static std::atomic<long long> count{0};
    if (fail_at > 0 && ++count == fail_at)
        fail(SMELTER_ERR_OUT_OF_MEMORY, "cannot allocate " + std::to_string(bytes) +
                                            " bytes (allocation " + std::to_string(fail_at) +
                                            " failed on purpose: SMELTER_FAULT_ALLOC_AT)");
}

namespace {

thread_local std::string g_last_error;

template <class F>
smelter_status guarded(F &&body) {
    try {
        body();
        g_last_error.clear();
        return SMELTER_OK;
    } catch (const Error &e) {
        g_last_error = e.message;
        return e.status;
    } catch (const std::bad_alloc &) {
        g_last_error = "out of host memory";
        return SMELTER_ERR_OUT_OF_MEMORY;
    } catch (const std::exception &e) {
        g_last_error = std::string("internal error: ") + e.what();
        return SMELTER_ERR_INTERNAL;
    } catch (...) {
        g_last_error = "internal error: unknown exception";
        return SMELTER_ERR_INTERNAL;
    }
}

void require(bool ok, const std::string &message) {
    if (!ok) fail(SMELTER_ERR_INVALID_ARGUMENT, message);
}

bool valid_dtype(int32_t d) { return d == SMELTER_F32 || d == SMELTER_F16 || d == SMELTER_BF16; }
size_t dtype_size(int32_t d) { return d == SMELTER_F32 ? 4 : 2; }
const char *dtype_name(int32_t d) { return d == SMELTER_F32 ? "f32" : d == SMELTER_F16 ? "f16" : d == SMELTER_BF16 ? "bf16" : "?"; }

void check_tensor(const smelter_context *ctx, const smelter_tensor *t, const std::string &what) {
    require(t != nullptr, what + " is NULL");
    require(valid_dtype(t->dtype), what + " has unknown dtype " + std::to_string(t->dtype));
    require(t->count >= 0, what + " has negative element count " + std::to_string(t->count));
    require(t->count == 0 || t->data != nullptr, what + " has NULL data");
    require(t->memory == SMELTER_MEMORY_HOST || t->memory == SMELTER_MEMORY_DEVICE,
            what + " has unknown memory kind " + std::to_string(t->memory));
    if (ctx->backend->kind() == SMELTER_BACKEND_CPU)
        require(t->memory == SMELTER_MEMORY_HOST, what + " is in device memory, which a CPU context cannot read");
}

// Output may alias an input only exactly (same bytes, same dtype): merging is element-wise.
void check_no_partial_overlap(const smelter_tensor &out, const smelter_tensor &in, const std::string &what) {
    if (out.memory != in.memory || out.count == 0) return;
    auto o0 = reinterpret_cast<uintptr_t>(out.data), i0 = reinterpret_cast<uintptr_t>(in.data);
    uintptr_t o1 = o0 + out.count * dtype_size(out.dtype), i1 = i0 + in.count * dtype_size(in.dtype);
    bool overlap = o0 < i1 && i0 < o1;
    require(!overlap || (o0 == i0 && out.dtype == in.dtype),
            "out partially overlaps " + what + " (only exact in-place aliasing is allowed)");
}

// Structs carry their size so fields can be appended; an older, smaller one is refused.
void check_struct_size(uint32_t given, size_t expected, const char *init) {
    require(given >= expected, "params.struct_size is " + std::to_string(given) + ", expected " +
                                   std::to_string(expected) + " (call " + init + ")");
}

std::string model_name(int i) { return "models[" + std::to_string(i) + "]"; }

// The inputs of smelter_merge and smelter_pair_stats: `array` names n (1..SMELTER_MAX_MODELS)
// tensors of one count and dtype, in the message as e.g. "models[2]" and "n_models".
void check_same_tensors(const smelter_context *ctx, const char *array, const smelter_tensor *tensors, int32_t n) {
    const std::string name = array;
    require(n >= 1 && n <= SMELTER_MAX_MODELS,
            "n_" + name + " must be in 1.." + std::to_string(SMELTER_MAX_MODELS) + ", got " + std::to_string(n));
    require(tensors != nullptr, name + " is NULL");
    auto at = [&](int i) { return name + "[" + std::to_string(i) + "]"; };
    for (int i = 0; i < n; ++i) check_tensor(ctx, &tensors[i], at(i));
    const smelter_tensor &first = tensors[0];
    for (int i = 1; i < n; ++i) {
        require(tensors[i].count == first.count, at(i) + " has " + std::to_string(tensors[i].count) + " elements, " +
                                                     at(0) + " has " + std::to_string(first.count));
        require(tensors[i].dtype == first.dtype,
                at(i) + " is " + dtype_name(tensors[i].dtype) + ", " + at(0) + " is " + dtype_name(first.dtype));
    }
}

// A base tensor that must match tensors[0] of `array` in count and dtype.
void check_base(const smelter_context *ctx, const smelter_tensor *base, const char *array, const smelter_tensor &first) {
    check_tensor(ctx, base, "base");
    const std::string other = std::string(array) + "[0]";
    require(base->count == first.count,
            "base has " + std::to_string(base->count) + " elements, " + other + " has " + std::to_string(first.count));
    require(base->dtype == first.dtype,
            std::string("base is ") + dtype_name(base->dtype) + ", " + other + " is " + dtype_name(first.dtype));
}

// An optional position-select tensor: readable and as long as the inputs (`first`, named `other`).
void check_select(const smelter_context *ctx, const smelter_tensor *select, const smelter_tensor &first,
                  const char *other) {
    if (select == nullptr) return;
    check_tensor(ctx, select, "select");
    require(select->count == first.count, "select has " + std::to_string(select->count) + " elements, " + other +
                                              " has " + std::to_string(first.count));
}

// Elements [begin, begin + len) of a tensor view.
smelter_tensor slice(const smelter_tensor &t, int64_t begin, int64_t len) {
    return {static_cast<char *>(t.data) + begin * static_cast<int64_t>(dtype_size(t.dtype)), len, t.dtype, t.memory};
}

// The bytes one call may stage at once: the context's memory limit, else the backend's staging budget.
int64_t staging_limit(const smelter_context *ctx) {
    return ctx->memory_limit > 0 ? ctx->memory_limit : ctx->backend->staging_budget();
}

// Elements per piece of a call over `count` elements of `per_element` staged bytes each: all of them where they fit
// `limit`, else as many whole units of `align` elements as fit (at least one unit).
int64_t piece_length(int64_t count, int64_t per_element, int64_t limit, int64_t align) {
    if (count == 0 || limit / per_element >= count) return count;
    return std::min(count, std::max(align, limit / per_element / align * align));
}

// A merge's inputs in pieces of whole rows that fit the context's memory limit (one piece when
// everything fits, staged once). Each pass over the tensor (thresholds, L1 sums, the merge) calls
// each(), which stages the pieces in order; since every pass only adds integer counts or writes
// elements that depend on their global index, the result is the same for any piece size.
class MergePieces {
public:
    MergePieces(Backend &b, const smelter_merge_params &p, const MergePlan &plan, const smelter_tensor *out,
                int64_t limit)
        : b_(b), p_(p), n_(p.n_models), linear_(p.method == SMELTER_METHOD_LINEAR),
          ranked_(p.sparsify == SMELTER_SPARSIFY_RANKED), key_dtype_(plan.key_dtype), row_length_(plan.row_length),
          count_(p.models[0].count) {
        int64_t per_element = static_cast<int64_t>(dtype_size(p.models[0].dtype)) * (n_ + (linear_ ? 0 : 1));
        if (out) per_element += static_cast<int64_t>(dtype_size(out->dtype));
        if (p.select) per_element += static_cast<int64_t>(dtype_size(p.select->dtype));
        if (p.element_weights) per_element += static_cast<int64_t>(dtype_size(p.element_weights[0].dtype)) * n_;
        if (ranked_) per_element += 4 * n_ + 16;  // ranks, and the row sort's keys and positions
        piece_ = piece_length(count_, per_element, limit, ranked_ ? row_length_ : 4096);  // RANKED rows are ranked whole
    }

    int64_t count() const { return count_; }
    bool whole() const { return piece_ >= count_; }

    // Calls f(inputs, first element) for every piece.
    template <class F>
    void each(F &&f) {
        if (piece_ >= count_) {
            if (!whole_) whole_ = stage(0, count_);
            f(whole_->inputs, int64_t{0});
            return;
        }
        for (int64_t begin = 0; begin < count_; begin += piece_) {
            auto staged = stage(begin, std::min(piece_, count_ - begin));
            f(staged->inputs, begin);
        }
    }

private:
    std::unique_ptr<Backend::Staged> stage(int64_t begin, int64_t len) {
        smelter_tensor base, models[SMELTER_MAX_MODELS], select, weights[SMELTER_MAX_MODELS];
        if (!linear_) base = slice(*p_.base, begin, len);
        for (int i = 0; i < n_; ++i) models[i] = slice(p_.models[i], begin, len);
        if (p_.select) select = slice(*p_.select, begin, len);
        if (p_.element_weights)
            for (int i = 0; i < n_; ++i) weights[i] = slice(p_.element_weights[i], begin, len);
        auto staged = b_.stage(linear_ ? nullptr : &base, models, n_);
        b_.stage_extra(*staged, p_.select ? &select : nullptr, p_.element_weights ? weights : nullptr, n_);
        if (ranked_)
            for (int i = 0; i < n_; ++i) b_.rank_rows(*staged, i, key_dtype_, row_length_);
        return staged;
    }

    Backend &b_;
    const smelter_merge_params &p_;
    const int n_;
    const bool linear_, ranked_;
    const int32_t key_dtype_;
    const int64_t row_length_, count_;
    int64_t piece_;
    std::unique_ptr<Backend::Staged> whole_;
};

// Model i's density and breadcrumbs gamma: the double arrays where given, else the float ones.
double density_at(const smelter_merge_params &p, int i) {
    return p.densities_f64 ? p.densities_f64[i] : p.densities ? p.densities[i] : 1.0;
}

double gamma_at(const smelter_merge_params &p, int i) {
    return p.gammas_f64 ? p.gammas_f64[i] : p.gammas ? p.gammas[i] : 0.01;
}

// Thresholds for per-tensor trimming: the exact k-th largest key of each model's deltas. Where the
// tensor is staged whole, the backend may select them itself (the CPU's sampled selection); the rest
// come from one level-0 histogram per model (one pass over the pieces for all models), refined for
// f32 keys in one level-1 pass under each chosen bin. Breadcrumbs (MAGNITUDE_OUTLIERS) also gets the
// upper key, the (top + 1)-th largest, the same way.
void per_tensor_thresholds(Backend &b, MergePieces &pieces, const smelter_merge_params &p, MergePlan &plan) {
    const bool outliers = plan.sparsify == SMELTER_SPARSIFY_MAGNITUDE_OUTLIERS;
    const int64_t count = pieces.count();
    struct Wanted {
        int model;
        int64_t k;
        uint32_t *key;
        uint32_t bin = 0;
        uint64_t rank = 0;
    };
    std::vector<Wanted> wanted;
    for (int i = 0; i < plan.n; ++i) {
        const int64_t k = kept_count(density_at(p, i), count);
        if (outliers) plan.upper[i] = 0xFFFFFFFFu;  // no cut unless something large is dropped
        if (k == 0) {  // keep nothing: an empty key range
            plan.thresholds[i] = 0xFFFFFFFFu;
            plan.upper[i] = 0;
            continue;
        }
        const int64_t top = outliers ? std::min(kept_count(gamma_at(p, i), count), count - k) : 0;
        wanted.push_back({i, top + k, &plan.thresholds[i]});
        if (top > 0) wanted.push_back({i, top + 1, &plan.upper[i]});
    }
    if (pieces.whole()) {  // the backend's own selection where it has one
        std::vector<Backend::KeyQuery> queries;
        for (const Wanted &w : wanted) queries.push_back({w.model, w.k, 0u, false});
        pieces.each([&](const KernelInputs &in, int64_t) {
            b.select_keys(in, plan.key_dtype, queries.data(), static_cast<int>(queries.size()));
        });
        std::vector<Wanted> left;
        for (size_t q = 0; q < wanted.size(); ++q) {
            if (queries[q].done) *wanted[q].key = queries[q].key;
            else left.push_back(wanted[q]);
        }
        wanted.swap(left);
    }
    if (wanted.empty()) return;
    std::vector<std::vector<uint64_t>> level0(plan.n);
    for (const Wanted &w : wanted) level0[w.model].assign(kLevel0Bins, 0);
    pieces.each([&](const KernelInputs &in, int64_t) {
        for (int i = 0; i < plan.n; ++i)
            if (!level0[i].empty()) b.key_histogram(in, i, plan.key_dtype, 0, 0, level0[i].data());
    });
    for (Wanted &w : wanted) {
        w.bin = select_bin(level0[w.model].data(), kLevel0Bins, static_cast<uint64_t>(w.k), &w.rank);
        *w.key = w.bin;
    }
    if (plan.key_dtype != KEY_F32) return;
    std::vector<std::vector<uint64_t>> level1(wanted.size(), std::vector<uint64_t>(kLevel1Bins, 0));
    pieces.each([&](const KernelInputs &in, int64_t) {
        for (size_t q = 0; q < wanted.size(); ++q)
            b.key_histogram(in, wanted[q].model, KEY_F32, 1, wanted[q].bin, level1[q].data());
    });
    for (size_t q = 0; q < wanted.size(); ++q) {
        Wanted &w = wanted[q];
        *w.key = (w.bin << 16) | select_bin(level1[q].data(), kLevel1Bins, w.rank, &w.rank);
    }
}

// The plan as piece `begin` sees it: random draws are indexed by the element's place in the tensor.
MergePlan piece_plan(const MergePlan &plan, int64_t begin) {
    MergePlan p = plan;
    p.element_offset += begin;
    return p;
}

void l1_scales(Backend &b, MergePieces &pieces, MergePlan &plan) {
    std::vector<ExactSum> total(plan.n), kept(plan.n);
    std::memset(total.data(), 0, sizeof(ExactSum) * total.size());
    std::memset(kept.data(), 0, sizeof(ExactSum) * kept.size());
    pieces.each([&](const KernelInputs &in, int64_t begin) {
        const MergePlan p = piece_plan(plan, begin);
        for (int i = 0; i < plan.n; ++i) b.l1_norms(p, in, i, &total[i], &kept[i]);
    });
    for (int i = 0; i < plan.n; ++i) {
        double t = exact_sum_value(total[i]), k = exact_sum_value(kept[i]);
        // mergekit leaves the kept deltas unscaled when either norm is below its eps of 1e-7.
        constexpr double kEps = 1e-7;
        plan.scales[i] = (t >= kEps && k >= kEps && std::isfinite(t) && std::isfinite(k)) ? static_cast<float>(t / k) : 1.0f;
    }
}

void check_params(const smelter_context *ctx, const smelter_merge_params *p, const smelter_tensor *out) {
    require(p->method >= SMELTER_METHOD_LINEAR && p->method <= SMELTER_METHOD_VARIANCE,
            "unknown method " + std::to_string(p->method));
    const bool linear = p->method == SMELTER_METHOD_LINEAR;
    check_same_tensors(ctx, "models", p->models, p->n_models);
    const int n = p->n_models;
    const smelter_tensor &first = p->models[0];
    if (!linear) check_base(ctx, p->base, "models", first);
    if (out != nullptr) {
        check_tensor(ctx, out, "out");
        require(out->count == first.count,
                "out has " + std::to_string(out->count) + " elements, models[0] has " + std::to_string(first.count));
        for (int i = 0; i < n; ++i) check_no_partial_overlap(*out, p->models[i], model_name(i));
        if (!linear) check_no_partial_overlap(*out, *p->base, "base");
    } else {
        require(p->sign_counts != nullptr, "out is NULL and no sign_counts requested: nothing to do");
    }
    require(p->sparsify >= SMELTER_SPARSIFY_NONE && p->sparsify <= SMELTER_SPARSIFY_RANKED,
            "unknown sparsify " + std::to_string(p->sparsify));
    require(p->consensus >= SMELTER_CONSENSUS_NONE && p->consensus <= SMELTER_CONSENSUS_SUM_UNWEIGHTED,
            "unknown consensus " + std::to_string(p->consensus));
    require(p->zero_sign >= SMELTER_ZERO_SIGN_POSITIVE && p->zero_sign <= SMELTER_ZERO_SIGN_NONE,
            "unknown zero_sign " + std::to_string(p->zero_sign));
    require(p->rescale >= SMELTER_RESCALE_NONE && p->rescale <= SMELTER_RESCALE_L1,
            "unknown rescale " + std::to_string(p->rescale));
    require(p->key_dtype == -1 || valid_dtype(p->key_dtype), "unknown key_dtype " + std::to_string(p->key_dtype));
    if (p->method != SMELTER_METHOD_TASK_ARITHMETIC) {
        const char *name = linear ? "LINEAR" : "VARIANCE";
        require(p->sparsify == SMELTER_SPARSIFY_NONE && p->consensus == SMELTER_CONSENSUS_NONE,
                std::string(name) + " takes no sparsify or consensus (they act on task vectors: use TASK_ARITHMETIC)");
        require(p->select == nullptr, std::string(name) + " takes no select tensor (use TASK_ARITHMETIC)");
    }
    require(p->element_weights == nullptr || linear, "element_weights are for LINEAR only");
    require(p->rescale == SMELTER_RESCALE_NONE || p->sparsify != SMELTER_SPARSIFY_NONE,
            "rescale needs a sparsify method");
    const bool magnitude = p->sparsify == SMELTER_SPARSIFY_MAGNITUDE || p->sparsify == SMELTER_SPARSIFY_MAGNITUDE_OUTLIERS;
    require(p->thresholds == nullptr || magnitude, "thresholds are given but sparsify is not MAGNITUDE(_OUTLIERS)");
    require(p->upper_thresholds == nullptr || p->sparsify == SMELTER_SPARSIFY_MAGNITUDE_OUTLIERS,
            "upper_thresholds are given but sparsify is not MAGNITUDE_OUTLIERS");
    require((p->thresholds == nullptr) == (p->upper_thresholds == nullptr) ||
                p->sparsify != SMELTER_SPARSIFY_MAGNITUDE_OUTLIERS,
            "MAGNITUDE_OUTLIERS needs thresholds and upper_thresholds together (or neither: per tensor)");
    require(std::isfinite(p->lambda), "lambda must be finite");
    require(std::isfinite(p->min_divisor) && p->min_divisor >= 0.0f, "min_divisor must be finite and >= 0");
    require(p->element_offset >= 0, "element_offset must be >= 0");
    for (int i = 0; i < n; ++i) {
        const std::string at = "[" + std::to_string(i) + "]";
        const double g = gamma_at(*p, i);
        require(g >= 0.0 && g <= 1.0, "gammas" + at + " must be in [0, 1], got " + std::to_string(g));
        if (p->element_weight_floors) require(std::isfinite(p->element_weight_floors[i]),
                                              "element_weight_floors" + at + " is not finite");
    }
    if (p->sparsify == SMELTER_SPARSIFY_RANKED) {
        const int64_t row = p->row_length == 0 ? first.count : p->row_length;
        require(p->row_length >= 0, "row_length must be >= 0");
        require(row < (int64_t{1} << 32), "a RANKED row has " + std::to_string(row) + " elements, at most 2^32 - 1 are supported");
        require(row == 0 || first.count % row == 0, "the element count " + std::to_string(first.count) +
                                                        " is not a multiple of row_length " + std::to_string(row));
    }
    check_select(ctx, p->select, first, "models[0]");
    if (p->element_weights) {
        for (int i = 0; i < n; ++i) {
            const std::string at = "element_weights[" + std::to_string(i) + "]";
            check_tensor(ctx, &p->element_weights[i], at);
            require(p->element_weights[i].count == first.count,
                    at + " has " + std::to_string(p->element_weights[i].count) + " elements, models[0] has " +
                        std::to_string(first.count));
            require(p->element_weights[i].dtype == p->element_weights[0].dtype,
                    at + " is " + dtype_name(p->element_weights[i].dtype) + ", element_weights[0] is " +
                        dtype_name(p->element_weights[0].dtype));
        }
    }
}

void merge_impl(smelter_context *ctx, const smelter_merge_params *p, const smelter_tensor *out) {
    require(ctx != nullptr, "context is NULL");
    require(p != nullptr, "params is NULL");
    check_struct_size(p->struct_size, sizeof(smelter_merge_params), "smelter_merge_params_init");
    check_params(ctx, p, out);
    const bool linear = p->method == SMELTER_METHOD_LINEAR;
    const int n = p->n_models;
    const smelter_tensor &first = p->models[0];

    MergePlan plan{};
    plan.method = p->method;
    plan.n = n;
    plan.sparsify = p->sparsify;
    plan.consensus = p->consensus;
    plan.zero_elect = p->zero_sign == SMELTER_ZERO_SIGN_POSITIVE ? 1 : p->zero_sign == SMELTER_ZERO_SIGN_NEGATIVE ? -1 : 0;
    plan.normalize = p->normalize != 0;
    plan.key_dtype = p->key_dtype < 0 ? first.dtype : p->key_dtype;
    plan.lambda = p->lambda;
    plan.min_divisor = p->min_divisor;
    plan.stream_key = random_stream_key(p->seed, p->tensor_key);
    plan.element_offset = p->element_offset;
    plan.has_select = p->select != nullptr;
    plan.select_threshold = p->select_threshold;
    plan.nonfinite_bits = p->nonfinite_count && out ? nonfinite_bound(out->dtype) : 0u;
    plan.has_element_weights = p->element_weights != nullptr;
    const bool ranked = p->sparsify == SMELTER_SPARSIFY_RANKED;
    plan.row_length = ranked ? (p->row_length == 0 ? std::max<int64_t>(first.count, 1) : p->row_length) : 1;
    plan.ranked_inverse = ranked && p->rescale == SMELTER_RESCALE_INVERSE_DENSITY;
    float weight_sum = 0.0f;
    for (int i = 0; i < n; ++i) {
        const std::string at = "[" + std::to_string(i) + "]";
        float w = p->weights ? p->weights[i] : 1.0f;
        require(std::isfinite(w), "weights" + at + " is not finite");
        const double d = density_at(*p, i);
        require(d > 0.0 && d <= 1.0, "densities" + at + " must be in (0, 1], got " + std::to_string(d));
        plan.weights[i] = w;
        weight_sum = weight_sum + w;
        plan.scales[i] = p->rescale == SMELTER_RESCALE_INVERSE_DENSITY && !ranked ? static_cast<float>(1.0 / d) : 1.0f;
        plan.keep24[i] = keep_threshold24(d);
        plan.thresholds[i] = p->thresholds ? p->thresholds[i] : 0u;
        plan.upper[i] = p->upper_thresholds ? p->upper_thresholds[i] : 0xFFFFFFFFu;
        plan.floors[i] = p->element_weight_floors ? p->element_weight_floors[i] : 0.0f;
        if (ranked) {
            const double e = p->epsilons ? p->epsilons[i] : 0.15f;
            if (d < 1.0) {
                require(std::isfinite(e) && e >= 0.0 && d - e > 0.0 && d + e <= 1.0,
                        "epsilons" + at + " = " + std::to_string(e) + " with density " + std::to_string(d) +
                            ": density +/- epsilon must lie in (0, 1]");
                plan.keep24[i] = keep_threshold24(d - e);
                plan.span24[i] = keep_threshold24(d + e) - plan.keep24[i];
            } else {
                plan.keep24[i] = 1u << 24;  // density 1 keeps everything (mergekit), whatever epsilon
                plan.span24[i] = 0;
            }
        }
    }
    if (linear) {
        require(!plan.normalize || weight_sum != 0.0f || plan.has_element_weights,
                "LINEAR with normalize needs weights that do not sum to 0");
        plan.divisor = weight_sum;
    } else {
        // mergekit: a divisor of (almost) zero is replaced by 1.
        plan.divisor = std::fabs(weight_sum) < 1e-8f ? 1.0f : weight_sum;
    }

    Backend &b = *ctx->backend;
    MergePieces pieces(b, *p, plan, out, staging_limit(ctx));
    const bool magnitude = plan.sparsify == SMELTER_SPARSIFY_MAGNITUDE || plan.sparsify == SMELTER_SPARSIFY_MAGNITUDE_OUTLIERS;
    if (magnitude && p->thresholds == nullptr) per_tensor_thresholds(b, pieces, *p, plan);
    if (p->rescale == SMELTER_RESCALE_L1) l1_scales(b, pieces, plan);
    int64_t counts[4] = {0, 0, 0, 0};
    pieces.each([&](const KernelInputs &in, int64_t begin) {
        const smelter_tensor piece_out = out ? slice(*out, begin, in.count) : smelter_tensor{};
        b.merge(piece_plan(plan, begin), in, out ? &piece_out : nullptr, counts);
    });
    if (p->sign_counts) std::memcpy(p->sign_counts, counts, 3 * sizeof(int64_t));
    if (p->nonfinite_count) *p->nonfinite_count = counts[3];
}

// A matrix view must hold exactly rows * cols elements.
void check_matrix(const smelter_context *ctx, const smelter_tensor *t, int64_t rows, int64_t cols, const std::string &what) {
    check_tensor(ctx, t, what);
    require(rows >= 0 && cols >= 0, what + " has negative shape [" + std::to_string(rows) + ", " + std::to_string(cols) + "]");
    int64_t n = 0;
    require(!__builtin_mul_overflow(rows, cols, &n), what + " shape overflows");
    require(t->count == n, what + " has " + std::to_string(t->count) + " elements, its shape [" + std::to_string(rows) +
                               ", " + std::to_string(cols) + "] needs " + std::to_string(n));
}

void check_f32_out(const smelter_context *ctx, const smelter_tensor *out, int64_t count, const std::string &shape) {
    check_tensor(ctx, out, "out");
    require(out->dtype == SMELTER_F32, std::string("out must be f32, is ") + dtype_name(out->dtype));
    require(out->count == count, "out has " + std::to_string(out->count) + " elements, the product is " + shape);
}

// ---- products and column statistics in blocks of the output, under a memory limit ----
// Every entry of a product is summed over the whole reduction in its backend's fixed order, whichever block
// of the output it lies in, and every column's statistics likewise. So blocks of the output (whole 64-wide
// product tiles, or columns), each with every row of the reduction, give one piece's result bit for bit. A
// split of the reduction would not: f32 running sums cannot be resumed from their rounded totals.
constexpr int64_t kProductBlockAlign = 64;    // the output tile edge of both backends' product kernels
constexpr int64_t kStatsColumnOverhead = 4096;  // the backends' partial sums per column (CUDA: 256 row blocks x 16 B)

// Elements A(k, p) = data[k * stride_k + p * stride_p], k < K, p in [p0, p0 + np), readable by the backend. Rows
// of a row product (stride_k 1) are contiguous: a view. Columns of device memory: a view with the original
// strides (the kernels take strides). Columns of host memory: gathered into a compact copy, since a backend
// that stages host memory would otherwise copy everything between the first and last element; rows a zero
// weight leaves out are zeros there and not read.
struct OperandBlock {
    smelter_tensor view{};
    int64_t stride_k = 0, stride_p = 0;
    std::vector<char> gathered;
};

OperandBlock operand_block(const smelter_tensor &t, int64_t K, int64_t stride_k, int64_t stride_p, int64_t p0,
                           int64_t np, const float *weights) {
    OperandBlock o;
    if (stride_k == 1) {
        o.view = slice(t, p0 * stride_p, np * stride_p);
        o.stride_k = 1;
        o.stride_p = stride_p;
    } else if (t.memory == SMELTER_MEMORY_DEVICE) {
        o.view = slice(t, p0, (K - 1) * stride_k + np);
        o.stride_k = stride_k;
        o.stride_p = 1;
    } else {
        const size_t es = dtype_size(t.dtype), run = static_cast<size_t>(np) * es;
        o.gathered.assign(static_cast<size_t>(K) * run, 0);
        for (int64_t k = 0; k < K; ++k)
            if (!(weights && weights[k] == 0.0f))
                std::memcpy(o.gathered.data() + k * run, static_cast<const char *>(t.data) + (k * stride_k + p0) * es, run);
        o.view = {o.gathered.data(), K * np, t.dtype, SMELTER_MEMORY_HOST};
        o.stride_k = np;
        o.stride_p = 1;
    }
    return o;
}

// Bytes a backend stages for a product block of pb x qb outputs: host operands, the output where it is not
// device memory, shifts and weights. In double: a long reduction times a wide block may exceed int64.
double product_block_bytes(const ProductJob &j, int64_t pb, int64_t qb) {
    const double K = static_cast<double>(j.K);
    double bytes = K * sizeof(float) + 2.0 * (j.shift_on_k ? K : static_cast<double>(pb + qb)) * sizeof(float);
    if (j.x->memory == SMELTER_MEMORY_HOST) bytes += K * pb * dtype_size(j.x->dtype);
    if (j.y->memory == SMELTER_MEMORY_HOST) bytes += K * qb * dtype_size(j.y->dtype);
    if (j.out_f64) bytes += static_cast<double>(pb) * qb * sizeof(double);
    else if (j.out->memory == SMELTER_MEMORY_HOST) bytes += static_cast<double>(pb) * qb * sizeof(float);
    return bytes;
}

// One product block: its output rows [p0, p0 + np) x columns [q0, q0 + nq) in a compact buffer (holding the
// caller's values where the product accumulates), computed, then copied into place.
void product_block(Backend &b, const ProductJob &j, const OperandBlock &a, const OperandBlock &y, int64_t p0,
                   int64_t np, int64_t q0, int64_t nq) {
    ProductJob s = j;
    s.x = &a.view;
    s.y = &y.view;
    s.P = np;
    s.Q = nq;
    s.x_stride_k = a.stride_k;
    s.x_stride_p = a.stride_p;
    s.y_stride_k = y.stride_k;
    s.y_stride_q = y.stride_p;
    if (!j.shift_on_k) {
        s.x_shift = j.x_shift ? j.x_shift + p0 : nullptr;
        s.y_shift = j.y_shift ? j.y_shift + q0 : nullptr;
    }
    if (j.out_f64) {
        std::vector<double> block(static_cast<size_t>(np * nq));
        for (int64_t r = 0; r < np && j.accumulate; ++r)
            std::memcpy(&block[r * nq], j.out_f64 + (p0 + r) * j.Q + q0, sizeof(double) * nq);
        s.out_f64 = block.data();
        b.product(s);
        for (int64_t r = 0; r < np; ++r) std::memcpy(j.out_f64 + (p0 + r) * j.Q + q0, &block[r * nq], sizeof(double) * nq);
        return;
    }
    const auto memory = static_cast<smelter_memory>(j.out->memory);
    const size_t row_bytes = sizeof(float) * nq;
    std::vector<float> host;
    void *data;
    if (memory == SMELTER_MEMORY_HOST) {
        host.resize(static_cast<size_t>(np * nq));
        data = host.data();
    } else {
        data = b.alloc(memory, row_bytes * np);
    }
    struct Release {
        Backend &b;
        smelter_memory memory;
        void *data;
        ~Release() { if (memory != SMELTER_MEMORY_HOST) b.free(memory, data); }
    } release{b, memory, data};
    auto *out = static_cast<float *>(j.out->data);
    for (int64_t r = 0; r < np && j.accumulate; ++r)
        b.copy(static_cast<char *>(data) + r * row_bytes, memory, out + (p0 + r) * j.Q + q0, memory, row_bytes);
    const smelter_tensor block{data, np * nq, SMELTER_F32, memory};
    s.out = &block;
    b.product(s);
    for (int64_t r = 0; r < np; ++r)
        b.copy(out + (p0 + r) * j.Q + q0, memory, static_cast<char *>(data) + r * row_bytes, memory, row_bytes);
    b.synchronize();
}

// The product in one piece where it fits the memory limit, else in blocks of whole tiles of the output (the
// larger side halved until a block fits), each block with the whole reduction.
void run_product(smelter_context *ctx, const ProductJob &j) {
    Backend &b = *ctx->backend;
    const double limit = static_cast<double>(staging_limit(ctx));
    int64_t pb = j.P, qb = j.Q;
    if (product_block_bytes(j, pb, qb) <= limit) {
        b.product(j);
        return;
    }
    auto halve = [](int64_t n) { return std::max(kProductBlockAlign, ((n + 1) / 2 + kProductBlockAlign - 1) / kProductBlockAlign * kProductBlockAlign); };
    while (product_block_bytes(j, pb, qb) > limit) {
        if (pb <= kProductBlockAlign && qb <= kProductBlockAlign)
            fail(SMELTER_ERR_OUT_OF_MEMORY, "the product's reduction over " + std::to_string(j.K) + " rows needs " +
                 std::to_string(static_cast<int64_t>(product_block_bytes(j, pb, qb))) + " bytes for even one block of " +
                 std::to_string(kProductBlockAlign) + " x " + std::to_string(kProductBlockAlign) + " outputs, over the memory limit of " +
                 std::to_string(static_cast<int64_t>(limit)) + " bytes; split the rows into several calls (accumulate) or raise the limit");
        if (pb > kProductBlockAlign && (pb >= qb || qb <= kProductBlockAlign)) pb = halve(pb);
        else qb = halve(qb);
    }
    const float *row_mask = j.shift_on_k ? nullptr : j.weights;  // a column product's left-out rows
    for (int64_t p0 = 0; p0 < j.P; p0 += pb) {
        const int64_t np = std::min(pb, j.P - p0);
        const OperandBlock a = operand_block(*j.x, j.K, j.x_stride_k, j.x_stride_p, p0, np, row_mask);
        for (int64_t q0 = 0; q0 < j.Q; q0 += qb) {
            const int64_t nq = std::min(qb, j.Q - q0);
            const OperandBlock y = operand_block(*j.y, j.K, j.y_stride_k, j.y_stride_q, q0, nq, row_mask);
            product_block(b, j, a, y, p0, np, q0, nq);
        }
    }
}

// Column statistics in one piece where x fits the memory limit, else in blocks of columns (host x only: the
// staging is what the limit bounds), each with every row.
void run_column_stats(smelter_context *ctx, const ColumnStatsJob &j) {
    Backend &b = *ctx->backend;
    const double limit = static_cast<double>(staging_limit(ctx));
    const double per_column = static_cast<double>(j.rows) * dtype_size(j.x->dtype) + kStatsColumnOverhead + sizeof(float);
    const double fixed = static_cast<double>(j.rows) * sizeof(float);
    if (j.x->memory != SMELTER_MEMORY_HOST || fixed + per_column * j.cols <= limit) {
        b.column_stats(j);
        return;
    }
    const int64_t cb = static_cast<int64_t>(std::min<double>(static_cast<double>(j.cols), (limit - fixed) / per_column));
    if (cb < 1)
        fail(SMELTER_ERR_OUT_OF_MEMORY, "column statistics over " + std::to_string(j.rows) + " rows need " +
             std::to_string(static_cast<int64_t>(fixed + per_column)) + " bytes for even one column, over the memory limit of " +
             std::to_string(static_cast<int64_t>(limit)) + " bytes; split the rows into several calls or raise the limit");
    for (int64_t c0 = 0; c0 < j.cols; c0 += cb) {
        const int64_t nc = std::min(cb, j.cols - c0);
        const OperandBlock x = operand_block(*j.x, j.rows, j.cols, 1, c0, nc, j.weights);
        ColumnStatsJob s = j;
        s.x = &x.view;
        s.cols = nc;
        s.shift = j.shift ? j.shift + c0 : nullptr;
        s.sums = j.sums ? j.sums + c0 : nullptr;
        s.positive = j.positive ? j.positive + c0 : nullptr;
        b.column_stats(s);
    }
}

void product_impl(smelter_context *ctx, const smelter_product_params *p, const smelter_tensor *out) {
    require(ctx != nullptr, "context is NULL");
    require(p != nullptr, "params is NULL");
    check_struct_size(p->struct_size, sizeof(smelter_product_params), "smelter_product_params_init");
    require(p->kind == SMELTER_PRODUCT_COLUMNS || p->kind == SMELTER_PRODUCT_ROWS, "unknown product kind " + std::to_string(p->kind));
    check_matrix(ctx, p->x, p->x_rows, p->x_cols, "x");
    check_matrix(ctx, p->y, p->y_rows, p->y_cols, "y");
    ProductJob j{};
    j.x = p->x;
    j.y = p->y;
    j.x_shift = p->x_shift;
    j.y_shift = p->y_shift;
    j.out = p->out_f64 ? nullptr : out;
    j.out_f64 = p->out_f64;
    j.accumulate = p->accumulate != 0;
    if (p->kind == SMELTER_PRODUCT_COLUMNS) {
        require(p->x_rows == p->y_rows, "x has " + std::to_string(p->x_rows) + " rows, y has " + std::to_string(p->y_rows) +
                                            " (a column product pairs rows)");
        j.K = p->x_rows;
        j.P = p->x_cols;
        j.Q = p->y_cols;
        j.x_stride_k = p->x_cols;
        j.x_stride_p = 1;
        j.y_stride_k = p->y_cols;
        j.y_stride_q = 1;
        j.shift_on_k = false;
        j.weights = p->row_weights;
    } else {
        require(p->x_cols == p->y_cols, "x has " + std::to_string(p->x_cols) + " columns, y has " +
                                            std::to_string(p->y_cols) + " (a row product pairs columns)");
        require(p->row_weights == nullptr, "row_weights apply to column products only");
        j.K = p->x_cols;
        j.P = p->x_rows;
        j.Q = p->y_rows;
        j.x_stride_k = 1;
        j.x_stride_p = p->x_cols;
        j.y_stride_k = 1;
        j.y_stride_q = p->y_cols;
        j.shift_on_k = true;
    }
    int64_t n = 0;
    require(!__builtin_mul_overflow(j.P, j.Q, &n), "the product's shape overflows");
    if (p->out_f64) {
        require(out == nullptr, "out and out_f64 are both given; the product goes to one of them");
        for (const smelter_tensor *t : {p->x, p->y}) {
            if (t->memory != SMELTER_MEMORY_HOST) continue;
            const auto o0 = reinterpret_cast<uintptr_t>(p->out_f64), i0 = reinterpret_cast<uintptr_t>(t->data);
            const uintptr_t o1 = o0 + static_cast<uintptr_t>(n) * sizeof(double), i1 = i0 + t->count * dtype_size(t->dtype);
            require(!(o0 < i1 && i0 < o1), std::string("out_f64 overlaps ") + (t == p->x ? "x" : "y"));
        }
    } else {
        check_f32_out(ctx, out, n, "[" + std::to_string(j.P) + ", " + std::to_string(j.Q) + "]");
        check_no_partial_overlap(*out, *p->x, "x");
        check_no_partial_overlap(*out, *p->y, "y");
        require(out->count == 0 || (out->data != p->x->data && out->data != p->y->data), "out must not be x or y");
    }
    if (n == 0) return;
    run_product(ctx, j);
}

void column_stats_impl(smelter_context *ctx, const smelter_column_stats_params *p) {
    require(ctx != nullptr, "context is NULL");
    require(p != nullptr, "params is NULL");
    check_struct_size(p->struct_size, sizeof(smelter_column_stats_params), "smelter_column_stats_params_init");
    check_matrix(ctx, p->x, p->rows, p->cols, "x");
    if ((p->sums == nullptr && p->positive == nullptr) || p->rows == 0 || p->cols == 0) return;
    ColumnStatsJob j{p->x, p->rows, p->cols, p->shift, p->row_weights, p->sums, p->positive};
    run_column_stats(ctx, j);
}

void pair_stats_impl(smelter_context *ctx, const smelter_pair_stats_params *p) {
    require(ctx != nullptr, "context is NULL");
    require(p != nullptr, "params is NULL");
    check_struct_size(p->struct_size, sizeof(smelter_pair_stats_params), "smelter_pair_stats_params_init");
    check_same_tensors(ctx, "vectors", p->vectors, p->n_vectors);
    const int n = p->n_vectors;
    const smelter_tensor &first = p->vectors[0];
    if (p->base != nullptr) check_base(ctx, p->base, "vectors", first);
    require(p->both_kept == nullptr || p->thresholds != nullptr, "both_kept needs thresholds");
    check_select(ctx, p->select, first, "vectors[0]");
    require(p->key_dtype == -1 || valid_dtype(p->key_dtype), "unknown key_dtype " + std::to_string(p->key_dtype));
    if (!p->dots && !p->squared_distances && !p->sign_conflicts && !p->both_nonzero && !p->both_kept && !p->nonfinite) return;
    if (first.count == 0) return;

    const int pairs = pair_count(n);
    std::vector<double> dots(pairs, 0.0), squared(pairs, 0.0);
    std::vector<int64_t> conflicts(pairs, 0), nonzero(pairs, 0), kept(pairs, 0), nonfinite(n, 0);
    PairStatsJob j{};
    j.n = n;
    j.key_dtype = p->key_dtype < 0 ? first.dtype : p->key_dtype;
    for (int i = 0; i < n; ++i) j.thresholds[i] = p->thresholds ? p->thresholds[i] : 0u;
    j.has_select = p->select != nullptr;
    j.select_threshold = p->select_threshold;
    j.dots = p->dots ? dots.data() : nullptr;
    j.squared_distances = p->squared_distances ? squared.data() : nullptr;
    j.conflicts = p->sign_conflicts ? conflicts.data() : nullptr;
    j.both_nonzero = p->both_nonzero ? nonzero.data() : nullptr;
    j.both_kept = p->both_kept ? kept.data() : nullptr;
    j.nonfinite = p->nonfinite ? nonfinite.data() : nullptr;
    // In pieces of whole chunks when the inputs exceed the memory limit (a 70B embedding on a 24 GB card): the
    // backend continues the running sums in chunk order, so the result is the one piece's, bit for bit.
    Backend &b = *ctx->backend;
    const int64_t count = first.count;
    int64_t per_element = static_cast<int64_t>(dtype_size(first.dtype)) * (n + (p->base ? 1 : 0));
    if (p->select) per_element += static_cast<int64_t>(dtype_size(p->select->dtype));
    const int64_t piece = piece_length(count, per_element, staging_limit(ctx), kPairChunk);
    for (int64_t begin = 0; begin < count; begin += piece) {
        const int64_t len = std::min(piece, count - begin);
        smelter_tensor vectors[SMELTER_MAX_MODELS], base, select;
        for (int i = 0; i < n; ++i) vectors[i] = slice(p->vectors[i], begin, len);
        if (p->base) base = slice(*p->base, begin, len);
        if (p->select) select = slice(*p->select, begin, len);
        auto staged = b.stage(p->base ? &base : nullptr, vectors, n);
        b.stage_extra(*staged, p->select ? &select : nullptr, nullptr, n);
        b.pair_stats(j, staged->inputs);
    }
    for (int i = 0; i < n; ++i) {
        if (p->nonfinite) p->nonfinite[i] += nonfinite[i];
        for (int k = i; k < n; ++k) {
            const int q = pair_index(n, i, k);
            for (int mirror = 0; mirror < (i == k ? 1 : 2); ++mirror) {
                const int at = mirror ? k * n + i : i * n + k;
                if (p->dots) p->dots[at] += dots[q];
                if (p->squared_distances) p->squared_distances[at] += squared[q];
                if (p->sign_conflicts) p->sign_conflicts[at] += conflicts[q];
                if (p->both_nonzero) p->both_nonzero[at] += nonzero[q];
                if (p->both_kept) p->both_kept[at] += kept[q];
            }
        }
    }
}

}  // namespace
}  // namespace smelter

using namespace smelter;

extern "C" {

SMELTER_API uint32_t smelter_abi_version(void) { return SMELTER_ABI_VERSION; }

SMELTER_API const char *smelter_build_info(void) {
    static const std::string info =
        std::string("smelter " SMELTER_VERSION " (cpu ") + cpu_kernel_isa() + ", " + cuda_build_info() + ")";
    return info.c_str();
}

SMELTER_API const char *smelter_status_string(smelter_status status) {
    switch (status) {
        case SMELTER_OK: return "SMELTER_OK";
        case SMELTER_ERR_INVALID_ARGUMENT: return "SMELTER_ERR_INVALID_ARGUMENT";
        case SMELTER_ERR_UNSUPPORTED: return "SMELTER_ERR_UNSUPPORTED";
        case SMELTER_ERR_OUT_OF_MEMORY: return "SMELTER_ERR_OUT_OF_MEMORY";
        case SMELTER_ERR_NO_DEVICE: return "SMELTER_ERR_NO_DEVICE";
        case SMELTER_ERR_DEVICE: return "SMELTER_ERR_DEVICE";
        case SMELTER_ERR_INTERNAL: return "SMELTER_ERR_INTERNAL";
    }
    return "SMELTER_ERR_UNKNOWN";
}

SMELTER_API const char *smelter_last_error(void) { return g_last_error.c_str(); }

SMELTER_API smelter_status smelter_device_count(smelter_backend backend, int32_t *count) {
    return guarded([&] {
        require(count != nullptr, "count is NULL");
        if (backend == SMELTER_BACKEND_CPU) *count = 1;
        else if (backend == SMELTER_BACKEND_CUDA) *count = cuda_device_count();
        else fail(SMELTER_ERR_INVALID_ARGUMENT, "unknown backend " + std::to_string(backend));
    });
}

SMELTER_API smelter_status smelter_device_name(smelter_backend backend, int32_t device, char *buffer,
                                               size_t capacity) {
    return guarded([&] {
        require(buffer != nullptr && capacity > 0, "buffer is NULL or empty");
        std::string name;
        if (backend == SMELTER_BACKEND_CPU) name = "CPU, " + std::to_string(cpu_core_count()) + " threads";
        else if (backend == SMELTER_BACKEND_CUDA) name = cuda_device_name(device);
        else fail(SMELTER_ERR_INVALID_ARGUMENT, "unknown backend " + std::to_string(backend));
        size_t len = name.size() < capacity - 1 ? name.size() : capacity - 1;
        std::memcpy(buffer, name.data(), len);
        buffer[len] = '\0';
    });
}

SMELTER_API smelter_status smelter_context_create(smelter_backend backend, int32_t device, int32_t threads,
                                                  smelter_context **out) {
    return guarded([&] {
        require(out != nullptr, "out is NULL");
        *out = nullptr;
        require(threads >= 0, "threads must be >= 0");
        auto ctx = std::make_unique<smelter_context>();
        if (backend == SMELTER_BACKEND_CPU) ctx->backend = make_cpu_backend(threads);
        else if (backend == SMELTER_BACKEND_CUDA) ctx->backend = make_cuda_backend(device);
        else fail(SMELTER_ERR_INVALID_ARGUMENT, "unknown backend " + std::to_string(backend));
        *out = ctx.release();
    });
}

SMELTER_API smelter_status smelter_context_destroy(smelter_context *ctx) {
    if (ctx == nullptr) return SMELTER_OK;
    smelter_status s = guarded([&] { ctx->backend->synchronize(); });
    std::string message = g_last_error;
    smelter_status d = guarded([&] { delete ctx; });
    if (s != SMELTER_OK) g_last_error = message;
    return s != SMELTER_OK ? s : d;
}

SMELTER_API smelter_status smelter_context_set_memory_limit(smelter_context *ctx, int64_t bytes) {
    return guarded([&] {
        require(ctx != nullptr, "context is NULL");
        require(bytes >= 0, "memory limit must be >= 0, got " + std::to_string(bytes));
        ctx->memory_limit = bytes;
    });
}

SMELTER_API smelter_status smelter_synchronize(smelter_context *ctx) {
    return guarded([&] {
        require(ctx != nullptr, "context is NULL");
        ctx->backend->synchronize();
    });
}

SMELTER_API smelter_status smelter_alloc(smelter_context *ctx, smelter_memory memory, size_t bytes, void **out) {
    return guarded([&] {
        require(ctx != nullptr && out != nullptr, "context or out is NULL");
        *out = nullptr;
        require(memory == SMELTER_MEMORY_HOST || memory == SMELTER_MEMORY_DEVICE, "unknown memory kind");
        *out = ctx->backend->alloc(memory, bytes);
    });
}

SMELTER_API smelter_status smelter_free(smelter_context *ctx, smelter_memory memory, void *ptr) {
    return guarded([&] {
        require(ctx != nullptr, "context is NULL");
        require(memory == SMELTER_MEMORY_HOST || memory == SMELTER_MEMORY_DEVICE, "unknown memory kind");
        if (ptr) ctx->backend->free(memory, ptr);
    });
}

SMELTER_API smelter_status smelter_copy(smelter_context *ctx, void *dst, smelter_memory dst_memory, const void *src,
                                        smelter_memory src_memory, size_t bytes) {
    return guarded([&] {
        require(ctx != nullptr, "context is NULL");
        require(bytes == 0 || (dst != nullptr && src != nullptr), "dst or src is NULL");
        require((dst_memory == SMELTER_MEMORY_HOST || dst_memory == SMELTER_MEMORY_DEVICE) &&
                    (src_memory == SMELTER_MEMORY_HOST || src_memory == SMELTER_MEMORY_DEVICE),
                "unknown memory kind");
        if (bytes) ctx->backend->copy(dst, dst_memory, src, src_memory, bytes);
    });
}

SMELTER_API void smelter_merge_params_init(smelter_merge_params *params) {
    if (params == nullptr) return;
    std::memset(params, 0, sizeof *params);
    params->struct_size = sizeof *params;
    params->method = SMELTER_METHOD_TASK_ARITHMETIC;
    params->lambda = 1.0f;
    params->key_dtype = -1;
}

SMELTER_API smelter_status smelter_merge(smelter_context *ctx, const smelter_merge_params *params,
                                         const smelter_tensor *out) {
    return guarded([&] { merge_impl(ctx, params, out); });
}

SMELTER_API uint64_t smelter_tensor_key(const char *name, size_t length) {
    uint64_t h = 0xCBF29CE484222325ull;  // FNV-1a 64
    for (size_t i = 0; name != nullptr && i < length; ++i) {
        h ^= static_cast<unsigned char>(name[i]);
        h *= 0x100000001B3ull;
    }
    return h;
}

SMELTER_API smelter_status smelter_topk_create(smelter_context *ctx, smelter_dtype key_dtype, smelter_topk **out) {
    return guarded([&] {
        require(ctx != nullptr && out != nullptr, "context or out is NULL");
        *out = nullptr;
        require(valid_dtype(key_dtype), "unknown key_dtype " + std::to_string(key_dtype));
        auto t = std::make_unique<smelter_topk>();
        t->ctx = ctx;
        t->key_dtype = key_dtype;
        t->hist.assign(kLevel0Bins, 0);
        *out = t.release();
    });
}

SMELTER_API smelter_status smelter_topk_destroy(smelter_topk *topk) {
    delete topk;
    return SMELTER_OK;
}

SMELTER_API smelter_status smelter_topk_add(smelter_topk *topk, const smelter_tensor *base, const smelter_tensor *model) {
    return guarded([&] {
        require(topk != nullptr, "topk is NULL");
        check_tensor(topk->ctx, model, "model");
        if (base) {
            check_tensor(topk->ctx, base, "base");
            require(base->count == model->count, "base has " + std::to_string(base->count) + " elements, model has " +
                                                     std::to_string(model->count));
            require(base->dtype == model->dtype,
                    std::string("base is ") + dtype_name(base->dtype) + ", model is " + dtype_name(model->dtype));
        }
        if (model->count == 0) return;
        // Histograms are counts: a tensor larger than the memory limit is added in pieces with the same result.
        Backend &b = *topk->ctx->backend;
        const int64_t count = model->count;
        const int64_t per_element = static_cast<int64_t>(dtype_size(model->dtype)) * (base ? 2 : 1);
        const int64_t piece = piece_length(count, per_element, staging_limit(topk->ctx), 4096);
        for (int64_t begin = 0; begin < count; begin += piece) {
            const int64_t len = std::min(piece, count - begin);
            const smelter_tensor m = slice(*model, begin, len);
            smelter_tensor bs;
            if (base) bs = slice(*base, begin, len);
            auto staged = b.stage(base ? &bs : nullptr, &m, 1);
            b.key_histogram(staged->inputs, 0, topk->key_dtype, topk->level, topk->prefix, topk->hist.data());
        }
        topk->count += count;
    });
}

SMELTER_API smelter_status smelter_topk_count(smelter_topk *topk, int64_t *count) {
    return guarded([&] {
        require(topk != nullptr && count != nullptr, "topk or count is NULL");
        *count = topk->count;
    });
}

SMELTER_API smelter_status smelter_topk_select(smelter_topk *topk, int64_t k, int32_t *more_passes, uint32_t *threshold) {
    return guarded([&] {
        require(topk != nullptr && more_passes != nullptr && threshold != nullptr, "topk, more_passes or threshold is NULL");
        if (topk->level == 1) {
            require(k == topk->k, "k changed between passes (" + std::to_string(topk->k) + " then " + std::to_string(k) + ")");
            require(topk->count == topk->first_pass_count,
                    "the second pass added " + std::to_string(topk->count) + " elements, the first " +
                        std::to_string(topk->first_pass_count) + ": add the same tensors in both passes");
        }
        require(k >= 0 && k <= topk->count,
                "k must be in 0.." + std::to_string(topk->count) + " (elements added), got " + std::to_string(k));
        *more_passes = 0;
        if (k == 0) { *threshold = 0xFFFFFFFFu; return; }
        if (topk->level == 0) {
            uint64_t rank;
            uint32_t bin = select_bin(topk->hist.data(), kLevel0Bins, static_cast<uint64_t>(k), &rank);
            if (topk->key_dtype != SMELTER_F32) { *threshold = bin; return; }
            topk->level = 1;
            topk->prefix = bin;
            topk->rank_in_prefix = rank;
            topk->k = k;
            topk->first_pass_count = topk->count;
            topk->count = 0;
            topk->hist.assign(kLevel1Bins, 0);
            *more_passes = 1;
            return;
        }
        uint64_t rank;
        uint32_t low = select_bin(topk->hist.data(), kLevel1Bins, topk->rank_in_prefix, &rank);
        *threshold = (topk->prefix << 16) | low;
    });
}

SMELTER_API void smelter_product_params_init(smelter_product_params *params) {
    if (params == nullptr) return;
    std::memset(params, 0, sizeof *params);
    params->struct_size = sizeof *params;
    params->kind = SMELTER_PRODUCT_COLUMNS;
}

SMELTER_API smelter_status smelter_product(smelter_context *ctx, const smelter_product_params *params,
                                           const smelter_tensor *out) {
    return guarded([&] { product_impl(ctx, params, out); });
}

SMELTER_API void smelter_column_stats_params_init(smelter_column_stats_params *params) {
    if (params == nullptr) return;
    std::memset(params, 0, sizeof *params);
    params->struct_size = sizeof *params;
}

SMELTER_API smelter_status smelter_column_stats(smelter_context *ctx, const smelter_column_stats_params *params) {
    return guarded([&] { column_stats_impl(ctx, params); });
}

}  // extern "C"

SMELTER_API void smelter_pair_stats_params_init(smelter_pair_stats_params *params) {
    if (params == nullptr) return;
    std::memset(params, 0, sizeof *params);
    params->struct_size = sizeof *params;
    params->key_dtype = -1;
}

SMELTER_API smelter_status smelter_pair_stats(smelter_context *ctx, const smelter_pair_stats_params *params) {
    return guarded([&] { pair_stats_impl(ctx, params); });
}
