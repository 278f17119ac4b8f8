// The CPU kernels (the AVX2 build where the CPU has AVX2 and F16C, and the baseline build) against
// the per-element definition that the CUDA kernel runs: merge_element with every choice read from
// the plan, one scalar Philox call per element, scalar magnitude keys and dtype conversions. Every
// output bit and every elected-sign count must be equal.
//
// Inputs are random with special values mixed in (NaN with payloads, signalling NaN, +-0, +-Inf,
// subnormals, values that overflow f16, deltas of exactly 0), at odd sizes and element offsets, for
// every input/output dtype, 1..9, 13 and 64 models, every method, sparsify, consensus, normalize and
// zero-sign choice, and thresholds inside, at and beyond the keys (ties, Inf, the NaN keys). Ranges
// are also merged in two calls split at an odd element. Philox draws are compared directly, across
// block boundaries and where the 64-bit block counter carries into its high word.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "../src/core/host_stats.h"
#include "../src/cpu/cpu_kernels.h"

namespace smelter {
[[noreturn]] void fail(smelter_status status, const std::string &message) { throw Error{status, message}; }
}  // namespace smelter

using namespace smelter;

namespace {

int failures = 0;
long checks = 0;

#define CHECK(cond, ...)                                                   \
    do {                                                                   \
        ++checks;                                                          \
        if (!(cond)) {                                                     \
            if (++failures <= 30) {                                        \
                std::fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);  \
                std::fprintf(stderr, __VA_ARGS__);                         \
                std::fprintf(stderr, "\n");                                \
            }                                                              \
        }                                                                  \
    } while (0)

std::mt19937_64 rng(20261123);

uint32_t bits32() { return static_cast<uint32_t>(rng()); }
int below(int n) { return static_cast<int>(rng() % static_cast<uint64_t>(n)); }
float uniform(float lo, float hi) { return lo + (hi - lo) * static_cast<float>(rng() >> 40) / 16777216.0f; }

size_t dtype_size(int dtype) { return dtype == SMELTER_F32 ? 4 : 2; }
const char *dtype_name(int dtype) { return dtype == SMELTER_F32 ? "f32" : dtype == SMELTER_F16 ? "f16" : "bf16"; }

float special_value() {
    switch (below(14)) {
        case 0: return bits_float(0x7FC00000u);                    // quiet NaN
        case 1: return bits_float(0xFFC12345u);                    // negative NaN with payload
        case 2: return bits_float(0x7F800001u);                    // signalling NaN
        case 3: return -0.0f;
        case 4: return 0.0f;
        case 5: return INFINITY;
        case 6: return -INFINITY;
        case 7: return bits_float(1u + bits32() % 0x7FFFFFu);     // f32 subnormal
        case 8: return uniform(-1.0f, 1.0f) * 6.1e-5f;            // f16 subnormal range
        case 9: return uniform(60000.0f, 70000.0f);                // around the f16 overflow
        case 10: return 3.0e38f;
        case 11: return bits_float(0x3F808000u);                   // a bf16 rounding tie
        case 12: return bits_float(0x3F818000u);                   // the other kind of tie
        default: return uniform(-2.0f, 2.0f);
    }
}

uint16_t special_half(int dtype) {
    static const uint16_t f16[] = {0x7C00, 0xFC00, 0x7E00, 0x7C01, 0xFD55, 0x0000, 0x8000, 0x0001, 0x83FF, 0x0400, 0x7BFF};
    static const uint16_t bf16[] = {0x7F80, 0xFF80, 0x7FC0, 0x7F81, 0xFFA5, 0x0000, 0x8000, 0x0001, 0x807F, 0x0080, 0x7F7F};
    return (dtype == SMELTER_F16 ? f16 : bf16)[below(11)];
}

// One input tensor: values near `base` (often exactly equal), with special values at `rate`.
void fill(std::vector<uint8_t> &buf, int dtype, int64_t n, const std::vector<uint8_t> *base, int rate, float spread) {
    buf.resize(dtype_size(dtype) * n + 64);
    for (int64_t j = 0; j < n; ++j) {
        const bool special = rate > 0 && below(rate) == 0;
        const bool same = base && below(5) == 0;
        if (dtype == SMELTER_F32) {
            float *d = reinterpret_cast<float *>(buf.data());
            float v = special ? special_value() : uniform(-spread, spread);
            if (same) v = reinterpret_cast<const float *>(base->data())[j];
            else if (base && !special) v = reinterpret_cast<const float *>(base->data())[j] + v;
            d[j] = v;
        } else {
            uint16_t *d = reinterpret_cast<uint16_t *>(buf.data());
            uint16_t h;
            if (same) h = reinterpret_cast<const uint16_t *>(base->data())[j];
            else if (special) h = special_half(dtype);
            else {
                float b = base ? load_element(base->data(), dtype, j) : 0.0f;
                float v = b + uniform(-spread, spread);
                h = dtype == SMELTER_BF16 ? float_to_bf16(v) : float_to_f16(v);
            }
            d[j] = h;
        }
    }
}

// What RANDOM and RANKED draw for model i at element j, as the CUDA kernel reads it.
uint32_t reference_draw(const MergePlan &p, const KernelInputs &in, int i, int64_t j) {
    const bool ranked = p.sparsify == SMELTER_SPARSIFY_RANKED;
    if (p.sparsify != SMELTER_SPARSIFY_RANDOM && !ranked) return 0u;
    const uint32_t bits =
        random24(p.stream_key, static_cast<uint64_t>(p.element_offset + j), i, ranked ? STREAM_DELLA : STREAM_DARE);
    return ranked ? ranked_keep(p, i, bits, in.ranks[i][j]) : bits;
}

// The definition: what the CUDA kernel computes for element j (see cuda_backend.cu, merge_kernel).
void reference_merge(const MergePlan &p, const KernelInputs &in, const smelter_tensor *out, int64_t begin, int64_t end,
                     int64_t counts[4]) {
    for (int64_t j = begin; j < end; ++j) {
        float xv[SMELTER_MAX_MODELS];
        uint32_t bits[SMELTER_MAX_MODELS];
        for (int i = 0; i < p.n; ++i) {
            xv[i] = load_element(in.models[i], in.dtype, j);
            bits[i] = reference_draw(p, in, i, j);
        }
        const float x0 = in.base ? load_element(in.base, in.dtype, j) : 0.0f;
        const bool selected = p.has_select && select_keep(p, load_element(in.select, in.select_dtype, j));
        int e;
        const float r = merge_element<SMELTER_MAX_MODELS, false>(
            p, x0, [&](int i) { return xv[i]; }, [&](int i) { return bits[i]; },
            [&](int i) {
                return p.has_element_weights ? load_element(in.element_weights[i], in.element_weight_dtype, j) : 1.0f;
            },
            selected, &e);
        if (out) store_element(out->data, out->dtype, j, r);
        if (out && p.nonfinite_bits) {  // by decoding what was stored, independently of nonfinite_bound
            const float stored = load_element(out->data, out->dtype, j);
            counts[3] += !(stored - stored == 0.0f);
        }
        counts[0] += e > 0;
        counts[1] += e < 0;
        counts[2] += e == 0;
    }
}

uint32_t reference_key(const KernelInputs &in, int model, int64_t j, int32_t key_dtype) {
    const float x0 = in.base ? load_element(in.base, in.dtype, j) : 0.0f;
    return magnitude_key(load_element(in.models[model], in.dtype, j) - x0, key_dtype);
}

// A threshold for model i: a key that occurs (ties), 0, keep-nothing, Inf's key, the NaN keys, or random.
uint32_t pick_threshold(const KernelInputs &in, int model, int32_t key_dtype) {
    const uint32_t inf_key = magnitude_key(INFINITY, key_dtype);
    const uint32_t nan_key = magnitude_key(bits_float(0x7FC00000u), key_dtype);
    switch (below(12)) {
        case 0: return 0u;
        case 1: return 0xFFFFFFFFu;
        case 2: return inf_key;
        case 3: return inf_key + 1;
        case 4: return nan_key;
        case 5: return nan_key + 1 + below(3);
        case 6: return key_dtype == KEY_F32 ? 1u + bits32() % 0x7FFFFFFFu : 1u + bits32() % 0x7FFFu;
        default: return in.count > 0 ? reference_key(in, model, below(static_cast<int>(in.count)), key_dtype) : 0u;
    }
}

struct Kernels {
    const char *name;
    const CpuKernels *k;
};

struct Case {
    int dtype, out_dtype, n;
    int64_t count;
    MergePlan plan;
    bool with_out;
    int select_dtype = SMELTER_F32, weight_dtype = SMELTER_F32;
};

std::string describe(const Case &c) {
    char s[320];
    const MergePlan &p = c.plan;
    std::snprintf(s, sizeof s,
                  "%s->%s n=%d count=%lld method=%d sparsify=%d consensus=%d normalize=%d zero_elect=%d key=%d "
                  "lambda=%g offset=%lld out=%d select=%d element_weights=%d ranked_inverse=%d min_divisor=%g",
                  dtype_name(c.dtype), dtype_name(c.out_dtype), c.n, static_cast<long long>(c.count), p.method,
                  p.sparsify, p.consensus, p.normalize, p.zero_elect, p.key_dtype, p.lambda,
                  static_cast<long long>(p.element_offset), c.with_out, p.has_select, p.has_element_weights,
                  p.ranked_inverse, p.min_divisor);
    return s;
}

bool output_is_nan(const uint8_t *out, int dtype, int64_t j) {
    const float v = load_element(out, dtype, j);
    return v != v;
}

void run_case(const std::vector<Kernels> &kernels, Case &c) {
    const int64_t n = c.count;
    std::vector<uint8_t> base;
    std::vector<std::vector<uint8_t>> models(c.n);
    const int rate = below(3) == 0 ? 0 : 2 + below(40);
    const float spread = c.dtype == SMELTER_F16 ? 4.0f : 1.0f;
    fill(base, c.dtype, n, nullptr, rate, spread);
    for (int i = 0; i < c.n; ++i) fill(models[i], c.dtype, n, &base, rate, spread * 0.25f);
    KernelInputs in;
    in.base = c.plan.method == SMELTER_METHOD_LINEAR ? nullptr : base.data();
    for (int i = 0; i < c.n; ++i) in.models[i] = models[i].data();
    in.dtype = c.dtype;
    in.count = n;
    MergePlan &p = c.plan;
    p.nonfinite_bits = c.with_out && below(4) != 0 ? nonfinite_bound(c.out_dtype) : 0u;
    if (p.sparsify == SMELTER_SPARSIFY_MAGNITUDE || p.sparsify == SMELTER_SPARSIFY_MAGNITUDE_OUTLIERS)
        for (int i = 0; i < c.n; ++i) p.thresholds[i] = pick_threshold(in, i, p.key_dtype);
    if (p.sparsify == SMELTER_SPARSIFY_MAGNITUDE_OUTLIERS)
        for (int i = 0; i < c.n; ++i) p.upper[i] = below(4) == 0 ? 0xFFFFFFFFu : pick_threshold(in, i, p.key_dtype);
    // Position-select scores, element weights, and RANKED ranks (any rank below the row length) with
    // the table of limits the CPU backend makes for them.
    std::vector<uint8_t> select;
    std::vector<std::vector<uint8_t>> element_weights(c.n);
    std::vector<std::vector<uint32_t>> ranks(c.n), limits(c.n);
    if (p.has_select) {
        fill(select, c.select_dtype, n, nullptr, rate, 1.0f);
        in.select = select.data();
        in.select_dtype = c.select_dtype;
        p.select_threshold = below(4) == 0 ? 0u : magnitude_key(uniform(0.0f, 1.0f), KEY_F32);
    }
    if (p.has_element_weights) {
        for (int i = 0; i < c.n; ++i) {
            fill(element_weights[i], c.weight_dtype, n, nullptr, rate, 2.0f);
            in.element_weights[i] = element_weights[i].data();
        }
        in.element_weight_dtype = c.weight_dtype;
    }
    if (p.sparsify == SMELTER_SPARSIFY_RANKED)
        for (int i = 0; i < c.n; ++i) {
            ranks[i].resize(static_cast<size_t>(n));
            for (auto &r : ranks[i]) r = static_cast<uint32_t>(below(static_cast<int>(p.row_length)));
            limits[i].resize(static_cast<size_t>(p.row_length));
            for (int64_t r = 0; r < p.row_length; ++r) limits[i][r] = ranked_limit(p, i, static_cast<uint32_t>(r));
            in.ranks[i] = ranks[i].data();
            in.rank_limits[i] = limits[i].data();
        }

    // Outputs 64-byte aligned (large ones are then written with non-temporal stores), or one element off.
    const size_t out_bytes = dtype_size(c.out_dtype) * n + 64;
    const size_t shift = below(3) == 0 ? dtype_size(c.out_dtype) : 0;
    std::vector<uint8_t> expected_buf(out_bytes + 128, 0x5A), actual_buf(out_bytes + 128);
    auto aligned = [&](std::vector<uint8_t> &v) {
        return v.data() + ((64 - reinterpret_cast<uintptr_t>(v.data()) % 64) % 64) + shift;
    };
    uint8_t *expected = aligned(expected_buf), *actual = aligned(actual_buf);
    smelter_tensor out_ref = {expected, n, c.out_dtype, SMELTER_MEMORY_HOST};
    int64_t ref_counts[4] = {0, 0, 0, 0};
    reference_merge(p, in, c.with_out ? &out_ref : nullptr, 0, n, ref_counts);

    for (const Kernels &k : kernels) {
        for (int split = 0; split < 2; ++split) {
            std::fill(actual_buf.begin(), actual_buf.end(), 0x5A);
            smelter_tensor out = {actual, n, c.out_dtype, SMELTER_MEMORY_HOST};
            int64_t counts[4] = {0, 0, 0, 0};
            // One call, or two calls split at an odd element (the CPU backend splits at chunk edges).
            const int64_t odd = std::min<int64_t>(n, 1 + 2 * below(static_cast<int>(n / 2 + 1)));
            const int64_t at = !split ? n : n > 200000 ? 65536 * (1 + below(static_cast<int>(n / 65536) - 1)) : odd;
            k.k->merge_range(p, in, c.with_out ? &out : nullptr, 0, at, counts);
            if (at < n) k.k->merge_range(p, in, c.with_out ? &out : nullptr, at, n, counts);
            int64_t first = -1;
            for (size_t b = 0; b < out_bytes && c.with_out; ++b)
                if (actual[b] != expected[b]) {
                    const int64_t j = static_cast<int64_t>(b / dtype_size(c.out_dtype));
                    // Infinite element weights make NaNs (inf * 0, inf - inf) of either sign, and
                    // which one an addition passes on depends on the order of its operands, which
                    // compilers may swap: there any NaN is as good as another (NaN inputs and NaN
                    // weights still give 0x7FC00000).
                    if (p.has_element_weights && j < n && output_is_nan(expected, c.out_dtype, j) &&
                        output_is_nan(actual, c.out_dtype, j)) {
                        b = (j + 1) * dtype_size(c.out_dtype) - 1;
                        continue;
                    }
                    first = j;
                    break;
                }
            CHECK(first < 0, "%s: %s split=%lld: element %lld differs", k.name, describe(c).c_str(),
                  static_cast<long long>(at), static_cast<long long>(first));
            CHECK(std::memcmp(counts, ref_counts, sizeof counts) == 0,
                  "%s: %s: sign and non-finite counts %lld/%lld/%lld/%lld, expected %lld/%lld/%lld/%lld", k.name,
                  describe(c).c_str(), static_cast<long long>(counts[0]), static_cast<long long>(counts[1]),
                  static_cast<long long>(counts[2]), static_cast<long long>(counts[3]),
                  static_cast<long long>(ref_counts[0]), static_cast<long long>(ref_counts[1]),
                  static_cast<long long>(ref_counts[2]), static_cast<long long>(ref_counts[3]));
        }
    }

    // The exact L1 sums (RESCALE_L1) and key histograms read the same draws, keys and conversions.
    if (p.method == SMELTER_METHOD_TASK_ARITHMETIC && p.sparsify != SMELTER_SPARSIFY_NONE) {
        const int model = below(c.n);
        std::vector<ExactSum> ref(2);
        std::memset(ref.data(), 0, sizeof(ExactSum) * 2);
        for (int64_t j = 0; j < n; ++j) {  // as cuda_backend.cu's l1_kernel
            const float x0 = load_element(in.base, in.dtype, j);
            float d = load_element(in.models[model], in.dtype, j) - x0;
            if (p.has_select && !select_keep(p, load_element(in.select, in.select_dtype, j))) d = 0.0f;
            uint32_t bucket, significand;
            exact_sum_split(d, &bucket, &significand);
            ref[0].bucket[bucket] += significand;
            if (sparsify_keep(p, p.sparsify, model, d, reference_draw(p, in, model, j))) ref[1].bucket[bucket] += significand;
        }
        for (const Kernels &k : kernels) {
            std::vector<ExactSum> got(2);
            std::memset(got.data(), 0, sizeof(ExactSum) * 2);
            k.k->l1_range(p, in, model, 0, n, &got[0], &got[1]);
            CHECK(std::memcmp(got.data(), ref.data(), sizeof(ExactSum) * 2) == 0, "%s: l1_range of model %d: %s", k.name,
                  model, describe(c).c_str());
        }
    }
    if (p.sparsify == SMELTER_SPARSIFY_MAGNITUDE) {
        const int model = below(c.n);
        std::vector<uint64_t> ref(kLevel0Bins, 0);
        for (int64_t j = 0; j < n; ++j) {
            uint32_t bin;
            if (key_bin(reference_key(in, model, j, p.key_dtype), p.key_dtype, 0, 0, &bin)) ++ref[bin];
        }
        for (const Kernels &k : kernels) {
            std::vector<uint64_t> got(kLevel0Bins, 0);
            k.k->histogram_range(in, model, p.key_dtype, 0, 0, 0, n, got.data());
            CHECK(got == ref, "%s: histogram_range of model %d: %s", k.name, model, describe(c).c_str());
        }
    }
}

MergePlan random_plan(int method, int sparsify, int consensus, int normalize, int n, int dtype) {
    MergePlan p{};
    p.method = method;
    p.n = n;
    p.sparsify = sparsify;
    p.consensus = consensus;
    p.normalize = normalize;
    p.key_dtype = below(2) ? dtype : below(3);
    const int zero[] = {1, -1, 0};
    p.zero_elect = zero[below(3)];
    p.lambda = below(3) ? 1.0f : uniform(-2.0f, 2.0f);
    p.stream_key = rng();
    const int64_t offsets[] = {0, 1, 2, 3, 5, 255, 1001, (int64_t{1} << 34) - 37, static_cast<int64_t>(rng() >> 4)};
    p.element_offset = offsets[below(9)];
    float sum = 0.0f;
    for (int i = 0; i < n; ++i) {
        const int kind = below(8);
        p.weights[i] = kind == 0 ? 0.0f : kind < 4 ? 1.0f / static_cast<float>(n) : uniform(-1.5f, 1.5f);
        sum = sum + p.weights[i];
        p.scales[i] = below(3) ? 1.0f : uniform(0.5f, 4.0f);
        const uint32_t keeps[] = {0u, 1u, 1u << 23, 1u << 24, 1u + bits32() % (1u << 24)};
        p.keep24[i] = keeps[below(5)];
    }
    p.divisor = below(6) == 0 ? 1.0f : (sum == 0.0f ? 1.0f : sum);
    // Features of the plan: element weights (LINEAR), position select and a divisor floor (task
    // arithmetic), RANKED limits and their rescale.
    if (method == SMELTER_METHOD_LINEAR && below(3) == 0) {
        p.has_element_weights = 1;
        for (int i = 0; i < n; ++i) p.floors[i] = below(2) ? 0.0f : uniform(0.0f, 1.0f);
    }
    if (method == SMELTER_METHOD_TASK_ARITHMETIC) {
        p.has_select = below(4) == 0;
        if (consensus != SMELTER_CONSENSUS_NONE && below(4) == 0) p.min_divisor = uniform(0.1f, 2.0f);
    }
    if (sparsify == SMELTER_SPARSIFY_RANKED) {
        const int64_t rows[] = {1, 2, 3, 7, 64, 1000};
        p.row_length = rows[below(6)];
        p.ranked_inverse = below(2);
        for (int i = 0; i < n; ++i) {
            p.keep24[i] = 1u + bits32() % (1u << 23);
            p.span24[i] = bits32() % ((1u << 24) - p.keep24[i] + 1);
        }
    } else {
        p.row_length = 1;
    }
    return p;
}

void test_merges(const std::vector<Kernels> &kernels) {
    const int counts[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 13, 64};
    const int64_t sizes[] = {1, 2, 3, 4, 5, 7, 17, 255, 256, 257, 511, 1000, 1031, 2049};
    int cases = 0;
    // LINEAR (normalize off, on), VARIANCE, task arithmetic: 5 sparsify x 4 consensus x normalize.
    for (int dtype : {SMELTER_F32, SMELTER_F16, SMELTER_BF16})
        for (int n : counts)
            for (int combo = 0; combo < 3 + 5 * 4 * 2; ++combo) {
                Case c;
                c.dtype = dtype;
                c.out_dtype = below(3) ? dtype : below(3);
                c.n = n;
                c.count = n == 64 ? sizes[below(9)] : sizes[below(14)];
                c.with_out = below(8) != 0;
                c.select_dtype = below(3);
                c.weight_dtype = below(3);
                if (combo < 2) {
                    c.plan = random_plan(SMELTER_METHOD_LINEAR, SMELTER_SPARSIFY_NONE, SMELTER_CONSENSUS_NONE, combo, n, dtype);
                } else if (combo == 2) {
                    c.plan = random_plan(SMELTER_METHOD_VARIANCE, SMELTER_SPARSIFY_NONE, SMELTER_CONSENSUS_NONE, 0, n, dtype);
                } else {
                    const int k = combo - 3;
                    c.plan = random_plan(SMELTER_METHOD_TASK_ARITHMETIC, k / 8, (k / 2) % 4, k % 2, n, dtype);
                }
                run_case(kernels, c);
                ++cases;
            }
    std::printf("merge: %d cases\n", cases);
}

// Tensors large enough that the output is written with non-temporal stores, split over chunks as
// the backend splits them.
void test_large_merges(const std::vector<Kernels> &kernels) {
    for (int dtype : {SMELTER_F32, SMELTER_F16, SMELTER_BF16}) {
        Case c;
        c.dtype = dtype;
        c.out_dtype = dtype;
        c.n = 4;
        c.count = 3000017;
        c.with_out = true;
        c.plan = random_plan(SMELTER_METHOD_TASK_ARITHMETIC, below(3), SMELTER_CONSENSUS_SUM, 1, c.n, dtype);
        run_case(kernels, c);
    }
    std::printf("large merges: 3 cases\n");
}

// Philox draws of random_bits against random24, one element at a time.
void test_random_bits(const std::vector<Kernels> &kernels) {
    const int64_t starts[] = {0, 1, 2, 3, 4, 5, 250, 1023, (int64_t{1} << 34) - 9, (int64_t{1} << 34) - 300,
                              (int64_t{1} << 40) + 3, static_cast<int64_t>(rng() >> 2)};
    alignas(64) uint32_t got[kBlockElements];
    int runs = 0;
    for (const Kernels &k : kernels)
        for (int64_t g0 : starts)
            for (int len : {1, 2, 3, 4, 5, 7, 8, 9, 31, 32, 33, 63, 64, 65, 127, 128, 200, 255, 256})
                for (int model : {0, 1, 7, 63}) {
                    const uint64_t key = rng();
                    const uint32_t stream = model == 1 ? STREAM_DELLA : STREAM_DARE;
                    std::memset(got, 0xEE, sizeof got);
                    k.k->random_bits(key, g0, len, model, stream, got);
                    int bad = -1;
                    for (int j = 0; j < len; ++j)
                        if (got[j] != random24(key, static_cast<uint64_t>(g0 + j), model, stream)) {
                            bad = j;
                            break;
                        }
                    CHECK(bad < 0, "%s: random_bits(g0=%lld, len=%d, model=%d): element %d differs", k.name,
                          static_cast<long long>(g0), len, model, bad);
                    for (int j = len; j < kBlockElements; ++j)
                        if (got[j] != 0xEEEEEEEEu) {
                            CHECK(false, "%s: random_bits(len=%d) wrote element %d", k.name, len, j);
                            break;
                        }
                    ++runs;
                }
    std::printf("random_bits: %d runs\n", runs);
}

}  // namespace

int main() {
    std::vector<Kernels> kernels = {{"sse2", &cpu_generic::kernels}};
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c")) kernels.push_back({"avx2", &cpu_avx2::kernels});
    else std::printf("no AVX2/F16C on this CPU: the baseline kernels only\n");
    test_random_bits(kernels);
    for (int round = 0; round < 4; ++round) test_merges(kernels);  // each round draws new sizes and choices
    test_large_merges(kernels);
    std::printf("%ld checks, %d failures\n", checks, failures);
    return failures == 0 ? 0 : 1;
}
