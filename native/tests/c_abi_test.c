/* Uses libsmelter through its C header only, as a C or ctypes caller would: a TIES merge worked out
 * by hand, a DARE merge that must not depend on the thread count, a global top-k threshold, and
 * the errors that bad arguments must give. Exit status 0 means every check passed. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "smelter.h"

static int failures = 0;

#define CHECK(cond, ...)                                   \
    do {                                                   \
        if (!(cond)) {                                     \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
            fprintf(stderr, __VA_ARGS__);                  \
            fprintf(stderr, "\n");                         \
            failures++;                                    \
        }                                                  \
    } while (0)

static smelter_tensor host_f32(float *data, int64_t count) {
    smelter_tensor t = {data, count, SMELTER_F32, SMELTER_MEMORY_HOST};
    return t;
}

static void test_ties_by_hand(smelter_context *ctx) {
    /* base 0; three models; density 0.5 keeps the 2 largest |delta| of 4 per model. */
    float base[4] = {0, 0, 0, 0};
    float m0[4] = {1.0f, -4.0f, 0.5f, 2.0f};  /* keeps -4, 2 */
    float m1[4] = {-3.0f, 1.0f, 0.25f, 5.0f}; /* keeps -3, 5 */
    float m2[4] = {2.0f, 3.0f, -1.0f, 0.1f};  /* keeps 2, 3 */
    float out[4];
    smelter_tensor models[3] = {host_f32(m0, 4), host_f32(m1, 4), host_f32(m2, 4)};
    smelter_tensor b = host_f32(base, 4), o = host_f32(out, 4);
    float weights[3] = {1, 1, 1}, densities[3] = {0.5f, 0.5f, 0.5f};
    smelter_merge_params p;
    smelter_merge_params_init(&p);
    p.n_models = 3;
    p.models = models;
    p.base = &b;
    p.weights = weights;
    p.densities = densities;
    p.sparsify = SMELTER_SPARSIFY_MAGNITUDE;
    p.consensus = SMELTER_CONSENSUS_SUM;
    p.normalize = 1;
    int64_t counts[3];
    p.sign_counts = counts;
    smelter_status s = smelter_merge(ctx, &p, &o);
    CHECK(s == SMELTER_OK, "ties merge failed: %s", smelter_last_error());
    /* element 0: kept {0,-3,2} sum -1 -> elect -, mean of agreeing {-3} = -3
     * element 1: kept {-4,0,3} sum -1 -> -, mean {-4} = -4
     * element 2: nothing kept -> sum 0 -> + (mergekit), no agreeing delta -> 0
     * element 3: kept {2,5,0} -> +, mean of {2,5} = 3.5 */
    float expect[4] = {-3.0f, -4.0f, 0.0f, 3.5f};
    for (int i = 0; i < 4; i++) CHECK(out[i] == expect[i], "ties out[%d] = %g, expected %g", i, out[i], expect[i]);
    CHECK(counts[0] == 2 && counts[1] == 2 && counts[2] == 0, "sign counts %lld %lld %lld", (long long)counts[0],
          (long long)counts[1], (long long)counts[2]);
}

static void test_nonfinite_count(smelter_context *ctx) {
    /* Linear copies (weight 1) into bf16 and f16: 3.4e38 stays finite in f32 but not in either 16-bit
     * type; 65519 rounds to 65504 in f16 and 65520 to infinity; NaN and -Inf pass through. */
    float m[6] = {1.0f, 3.4e38f, 65519.0f, 65520.0f, NAN, -INFINITY};
    const int64_t expect_f32 = 2, expect_f16 = 4, expect_bf16 = 3;
    unsigned short out16[6];
    float out32[6];
    smelter_tensor model = host_f32(m, 6);
    float w = 1.0f;
    int64_t count = -1;
    smelter_merge_params p;
    smelter_merge_params_init(&p);
    p.method = SMELTER_METHOD_LINEAR;
    p.n_models = 1;
    p.models = &model;
    p.weights = &w;
    p.nonfinite_count = &count;
    smelter_tensor o32 = {out32, 6, SMELTER_F32, SMELTER_MEMORY_HOST};
    CHECK(smelter_merge(ctx, &p, &o32) == SMELTER_OK && count == expect_f32, "f32 out: %lld non-finite, expected %lld",
          (long long)count, (long long)expect_f32);
    smelter_tensor o16 = {out16, 6, SMELTER_F16, SMELTER_MEMORY_HOST};
    CHECK(smelter_merge(ctx, &p, &o16) == SMELTER_OK && count == expect_f16, "f16 out: %lld non-finite, expected %lld",
          (long long)count, (long long)expect_f16);
    CHECK(out16[2] == 0x7BFF && out16[3] == 0x7C00, "f16 65519 -> %04x, 65520 -> %04x", out16[2], out16[3]);
    smelter_tensor ob = {out16, 6, SMELTER_BF16, SMELTER_MEMORY_HOST};
    CHECK(smelter_merge(ctx, &p, &ob) == SMELTER_OK && count == expect_bf16, "bf16 out: %lld non-finite, expected %lld",
          (long long)count, (long long)expect_bf16);
}

static void test_breadcrumbs_and_variance_by_hand(smelter_context *ctx) {
    /* One model, |delta| = 1..10: gamma 0.2 drops the two largest (10, 9), density 0.3 keeps the next
     * three (8, 7, 6). */
    float base[10] = {0}, m[10] = {3, -10, 8, 1, -7, 2, 9, -6, 5, 4}, out[10];
    smelter_tensor model = host_f32(m, 10), b = host_f32(base, 10), o = host_f32(out, 10);
    float density = 0.3f, gamma = 0.2f;
    smelter_merge_params p;
    smelter_merge_params_init(&p);
    p.n_models = 1;
    p.models = &model;
    p.base = &b;
    p.densities = &density;
    p.gammas = &gamma;
    p.sparsify = SMELTER_SPARSIFY_MAGNITUDE_OUTLIERS;
    CHECK(smelter_merge(ctx, &p, &o) == SMELTER_OK, "breadcrumbs: %s", smelter_last_error());
    float expect[10] = {0, 0, 8, 0, -7, 0, 0, -6, 0, 0};
    for (int i = 0; i < 10; i++) CHECK(out[i] == expect[i], "breadcrumbs out[%d] = %g, expected %g", i, out[i], expect[i]);

    /* Population variance of the task vectors {1, 3} and {2, 2}: 1 and 0. */
    float x0[2] = {1, 2}, x1[2] = {3, 2}, zero[2] = {0, 0}, var[2];
    smelter_tensor two[2] = {host_f32(x0, 2), host_f32(x1, 2)}, z = host_f32(zero, 2), v = host_f32(var, 2);
    smelter_merge_params_init(&p);
    p.method = SMELTER_METHOD_VARIANCE;
    p.n_models = 2;
    p.models = two;
    p.base = &z;
    CHECK(smelter_merge(ctx, &p, &v) == SMELTER_OK, "variance: %s", smelter_last_error());
    CHECK(var[0] == 1.0f && var[1] == 0.0f, "variance %g %g, expected 1 0", var[0], var[1]);

    /* DELLA refuses an epsilon that takes a probability out of (0, 1]. */
    float eps = 0.4f;
    smelter_merge_params_init(&p);
    p.n_models = 1;
    p.models = &model;
    p.base = &b;
    p.densities = &density;
    p.epsilons = &eps;
    p.sparsify = SMELTER_SPARSIFY_RANKED;
    CHECK(smelter_merge(ctx, &p, &o) == SMELTER_ERR_INVALID_ARGUMENT, "epsilon 0.4 with density 0.3 accepted");
    CHECK(strstr(smelter_last_error(), "epsilons[0]") != NULL, "message: %s", smelter_last_error());
}

/* Keep counts from densities_f64 are floor(density * n) of the double, as mergekit's int(0.7 * 1000)
 * = 700; the float 0.7f (0.69999999) keeps 699. */
static void test_decimal_density_counts(smelter_context *ctx) {
    enum { N = 1000 };
    static float base[N], m[N], out[N];
    for (int i = 0; i < N; i++) m[i] = (float)(i + 1) * 1e-3f;
    smelter_tensor model = host_f32(m, N), b = host_f32(base, N), o = host_f32(out, N);
    const float density_f = 0.7f;
    const double density = 0.7;
    for (int exact = 0; exact < 2; exact++) {
        smelter_merge_params p;
        smelter_merge_params_init(&p);
        p.n_models = 1;
        p.models = &model;
        p.base = &b;
        p.sparsify = SMELTER_SPARSIFY_MAGNITUDE;
        if (exact) p.densities_f64 = &density;
        else p.densities = &density_f;
        CHECK(smelter_merge(ctx, &p, &o) == SMELTER_OK, "density counts: %s", smelter_last_error());
        int kept = 0;
        for (int i = 0; i < N; i++) kept += out[i] != 0.0f;
        CHECK(kept == (exact ? 700 : 699), "%s density 0.7 kept %d of 1000", exact ? "double" : "float", kept);
    }
}

static void test_dare_thread_independent(void) {
    enum { N = 100003 };
    static float base[N], a[N], c[N], out1[N], out2[N];
    for (int i = 0; i < N; i++) {
        base[i] = sinf((float)i);
        a[i] = base[i] + 0.01f * cosf((float)i * 0.7f);
        c[i] = base[i] - 0.02f * sinf((float)i * 1.3f);
    }
    smelter_tensor models[2] = {host_f32(a, N), host_f32(c, N)};
    smelter_tensor b = host_f32(base, N), o1 = host_f32(out1, N), o2 = host_f32(out2, N);
    float densities[2] = {0.3f, 0.6f};
    smelter_merge_params p;
    smelter_merge_params_init(&p);
    p.n_models = 2;
    p.models = models;
    p.base = &b;
    p.densities = densities;
    p.sparsify = SMELTER_SPARSIFY_RANDOM;
    p.rescale = SMELTER_RESCALE_INVERSE_DENSITY;
    p.seed = 42;
    p.tensor_key = smelter_tensor_key("model.layers.0.mlp.up_proj.weight", 33);
    smelter_context *one = NULL, *two = NULL;
    CHECK(smelter_context_create(SMELTER_BACKEND_CPU, 0, 1, &one) == SMELTER_OK, "ctx1: %s", smelter_last_error());
    CHECK(smelter_context_create(SMELTER_BACKEND_CPU, 0, 2, &two) == SMELTER_OK, "ctx2: %s", smelter_last_error());
    CHECK(smelter_merge(one, &p, &o1) == SMELTER_OK, "dare 1 thread: %s", smelter_last_error());
    CHECK(smelter_merge(two, &p, &o2) == SMELTER_OK, "dare 2 threads: %s", smelter_last_error());
    CHECK(memcmp(out1, out2, sizeof out1) == 0, "DARE differs between 1 and 2 threads");
    /* The same elements again as a chunk starting at element 1001 must give the same values. */
    smelter_tensor cm[2] = {host_f32(a + 1001, 5000), host_f32(c + 1001, 5000)};
    smelter_tensor cb = host_f32(base + 1001, 5000), co = host_f32(out2, 5000);
    p.models = cm;
    p.base = &cb;
    p.element_offset = 1001;
    CHECK(smelter_merge(two, &p, &co) == SMELTER_OK, "dare chunk: %s", smelter_last_error());
    CHECK(memcmp(out1 + 1001, out2, 5000 * sizeof(float)) == 0, "DARE chunk differs from the whole tensor");
    int kept = 0;
    for (int i = 0; i < N; i++) kept += out1[i] != base[i];
    CHECK(kept > N / 2 && kept < N * 9 / 10, "implausible number of changed elements: %d", kept);
    smelter_context_destroy(one);
    smelter_context_destroy(two);
}

static void test_topk(smelter_context *ctx) {
    float x[7] = {0.5f, -7.0f, 3.0f, 3.0f, -0.25f, 1.0f, 2.0f};
    smelter_tensor t = host_f32(x, 7);
    smelter_topk *topk = NULL;
    CHECK(smelter_topk_create(ctx, SMELTER_F32, &topk) == SMELTER_OK, "topk create: %s", smelter_last_error());
    int32_t more = 0;
    uint32_t threshold = 0;
    int passes = 0;
    do {
        CHECK(smelter_topk_add(topk, NULL, &t) == SMELTER_OK, "topk add: %s", smelter_last_error());
        CHECK(smelter_topk_select(topk, 3, &more, &threshold) == SMELTER_OK, "select: %s", smelter_last_error());
    } while (more && ++passes < 3);
    float as_float;
    memcpy(&as_float, &threshold, 4);
    CHECK(as_float == 3.0f, "3rd largest |x| = %g, expected 3", as_float);
    smelter_topk_destroy(topk);
}


/* ---- per-tensor thresholds of large tensors ----------------------------------------------------
 * From 1 Mi elements the CPU finds per-tensor thresholds by sampled selection instead of key
 * histograms. Its thresholds must be exactly the histogram ones (smelter_topk), so a merge that finds
 * them itself must equal, bit for bit, one given them. Distributions: smooth, heavy ties (70 % of
 * deltas zero), deltas sorted by position, a decoy that puts large deltas exactly where the sample
 * looks (the first 16 elements of each 1/1024 of the tensor), NaN and infinity. */
static uint64_t rng = 0x2545F4914F6CDD1DULL;
static double uniform01(void) {
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return (double)((rng * 0x2545F4914F6CDD1DULL) >> 11) * (1.0 / 9007199254740992.0);
}

/* Stores v in dtype: bf16 and f16 by truncation (values stay in f16's normal range or are 0/NaN/inf). */
static void put(smelter_dtype dtype, void *buf, int64_t i, float v) {
    uint32_t u;
    memcpy(&u, &v, 4);
    if (dtype == SMELTER_F32) ((float *)buf)[i] = v;
    else if (dtype == SMELTER_BF16) ((uint16_t *)buf)[i] = (uint16_t)(u >> 16);
    else {
        uint32_t sign = (u >> 16) & 0x8000u, a = u & 0x7FFFFFFFu, h;
        if (a > 0x7F800000u) h = 0x7E00u;
        else if (a >= 0x477FE000u) h = 0x7C00u; /* inf (and beyond f16) */
        else if (a < 0x38800000u) h = 0;        /* below f16's normal range */
        else h = ((a >> 23) - 127 + 15) << 10 | (a >> 13 & 0x3FFu);
        ((uint16_t *)buf)[i] = (uint16_t)(sign | h);
    }
}

static void fill_case(int dist, smelter_dtype dtype, int64_t n, void *base, void *model) {
    const int64_t spacing = n / 1024;
    for (int64_t i = 0; i < n; i++) {
        double golden = (double)i * 0.6180339887498949;  /* the base depends on i alone */
        float b = (float)((i % 3 ? -1 : 1) * (0.01 + (golden - floor(golden))));
        float d = (float)((uniform01() - 0.5) * 0.02);
        if (dist == 1 && uniform01() < 0.7) d = 0.0f;
        if (dist == 2) b = 0.5f, d = (float)(0.01 * (double)i / (double)n);
        if (dist == 3) d = (i % spacing < 16) ? 0.5f : d * 0.1f;
        float m = b + d;
        if (dist == 4 && i % 1000 == 7) m = NAN;
        if (dist == 4 && i % 1777 == 3) m = (i % 2) ? INFINITY : -INFINITY;
        put(dtype, base, i, b);
        put(dtype, model, i, m);
    }
}

/* The k-th largest key of |model - base| by the histogram route (k >= 1). */
static uint32_t topk_key(smelter_context *ctx, const smelter_tensor *b, const smelter_tensor *m, int64_t k) {
    smelter_topk *topk = NULL;
    CHECK(smelter_topk_create(ctx, m->dtype, &topk) == SMELTER_OK, "topk create: %s", smelter_last_error());
    int32_t more = 0;
    uint32_t key = 0;
    int passes = 0;
    do {
        CHECK(smelter_topk_add(topk, b, m) == SMELTER_OK, "topk add: %s", smelter_last_error());
        CHECK(smelter_topk_select(topk, k, &more, &key) == SMELTER_OK, "select: %s", smelter_last_error());
    } while (more && ++passes < 3);
    smelter_topk_destroy(topk);
    return key;
}

static void test_sampled_thresholds(smelter_context *ctx) {
    const int64_t n = (1 << 20) + 12345;
    static const char *names[] = {"smooth", "ties", "sorted", "decoy", "nonfinite"};
    const smelter_dtype dtypes[3] = {SMELTER_F32, SMELTER_F16, SMELTER_BF16};
    const float densities[4] = {0.5f, 0.1f, 0.999f, 1e-6f};
    void *buf[3];
    for (int t = 0; t < 3; t++) buf[t] = malloc((size_t)n * 4);
    float *out_found = malloc((size_t)n * 4), *out_given = malloc((size_t)n * 4);
    for (int di = 0; di < 3; di++)
        for (int dist = 0; dist < 5; dist++) {
            smelter_dtype dt = dtypes[di];
            fill_case(dist, dt, n, buf[0], buf[1]);
            fill_case(dist, dt, n, buf[0], buf[2]); /* the same base, other deltas */
            smelter_tensor b = {buf[0], n, dt, SMELTER_MEMORY_HOST};
            smelter_tensor models[2] = {{buf[1], n, dt, SMELTER_MEMORY_HOST}, {buf[2], n, dt, SMELTER_MEMORY_HOST}};
            smelter_tensor of = host_f32(out_found, n), og = host_f32(out_given, n);
            for (int de = 0; de < 4; de++)
                for (int outliers = 0; outliers < 2; outliers++) {
                    if (outliers && de != 0) continue;
                    float weights[2] = {0.7f, 0.6f}, dens[2] = {densities[de], densities[de]}, gammas[2] = {0.01f, 0.02f};
                    smelter_merge_params p;
                    smelter_merge_params_init(&p);
                    p.n_models = 2;
                    p.models = models;
                    p.base = &b;
                    p.weights = weights;
                    p.densities = dens;
                    p.sparsify = outliers ? SMELTER_SPARSIFY_MAGNITUDE_OUTLIERS : SMELTER_SPARSIFY_MAGNITUDE;
                    p.consensus = outliers ? SMELTER_CONSENSUS_NONE : SMELTER_CONSENSUS_SUM;
                    if (outliers) p.gammas = gammas;
                    CHECK(smelter_merge(ctx, &p, &of) == SMELTER_OK, "merge: %s", smelter_last_error());
                    uint32_t thresholds[2], upper[2];
                    for (int i = 0; i < 2; i++) {
                        const int64_t k = (int64_t)floor((double)dens[i] * (double)n);
                        int64_t top = outliers ? (int64_t)floor((double)gammas[i] * (double)n) : 0;
                        if (top > n - k) top = n - k;
                        thresholds[i] = k == 0 ? 0xFFFFFFFFu : topk_key(ctx, &b, &models[i], top + k);
                        upper[i] = top > 0 ? topk_key(ctx, &b, &models[i], top + 1) : 0xFFFFFFFFu;
                    }
                    p.thresholds = thresholds;
                    if (outliers) p.upper_thresholds = upper;
                    CHECK(smelter_merge(ctx, &p, &og) == SMELTER_OK, "merge: %s", smelter_last_error());
                    int64_t differ = 0;
                    for (int64_t e = 0; e < n; e++) differ += memcmp(&out_found[e], &out_given[e], 4) != 0;
                    CHECK(differ == 0, "%s %s density %g%s: %lld elements differ from the histogram thresholds",
                          names[dist], dt == SMELTER_F32 ? "f32" : dt == SMELTER_F16 ? "f16" : "bf16", densities[de],
                          outliers ? " (breadcrumbs)" : "", (long long)differ);
                }
        }
    /* k at the edges of a key's run of ties: the last element with key t, and the first after it. */
    for (int di = 0; di < 3; di++) {
        smelter_dtype dt = dtypes[di];
        fill_case(0, dt, n, buf[0], buf[1]);
        smelter_tensor b = {buf[0], n, dt, SMELTER_MEMORY_HOST}, m = {buf[1], n, dt, SMELTER_MEMORY_HOST};
        const uint32_t t = topk_key(ctx, &b, &m, n / 3);
        int64_t lo = n / 3, hi = n; /* the last k whose key is t */
        while (lo < hi) {
            int64_t mid = lo + (hi - lo + 1) / 2;
            if (topk_key(ctx, &b, &m, mid) == t) lo = mid;
            else hi = mid - 1;
        }
        for (int64_t k = lo; k <= lo + 1; k++) {
            float density = (float)(((double)k + 0.5) / (double)n), weight = 1.0f;
            CHECK((int64_t)floor((double)density * (double)n) == k, "density for k = %lld", (long long)k);
            uint32_t given = topk_key(ctx, &b, &m, k);
            smelter_tensor of = host_f32(out_found, n), og = host_f32(out_given, n);
            smelter_merge_params p;
            smelter_merge_params_init(&p);
            p.n_models = 1;
            p.models = &m;
            p.base = &b;
            p.weights = &weight;
            p.densities = &density;
            p.sparsify = SMELTER_SPARSIFY_MAGNITUDE;
            CHECK(smelter_merge(ctx, &p, &of) == SMELTER_OK, "merge: %s", smelter_last_error());
            p.thresholds = &given;
            CHECK(smelter_merge(ctx, &p, &og) == SMELTER_OK, "merge: %s", smelter_last_error());
            int64_t differ = 0;
            for (int64_t e = 0; e < n; e++) differ += memcmp(&out_found[e], &out_given[e], 4) != 0;
            CHECK(differ == 0, "dtype %d, k = %lld at the edge of key %u's ties: %lld elements differ", (int)dt,
                  (long long)k, t, (long long)differ);
        }
    }
    for (int t = 0; t < 3; t++) free(buf[t]);
    free(out_found);
    free(out_given);
}

static void test_errors(smelter_context *ctx) {
    float a[3] = {1, 2, 3}, c[2] = {1, 2}, out[3];
    smelter_tensor models[2] = {host_f32(a, 3), host_f32(c, 2)};
    smelter_tensor o = host_f32(out, 3);
    smelter_merge_params p;
    smelter_merge_params_init(&p);
    p.method = SMELTER_METHOD_LINEAR;
    p.models = models;
    p.n_models = 2;
    CHECK(smelter_merge(ctx, &p, &o) == SMELTER_ERR_INVALID_ARGUMENT, "size mismatch accepted");
    CHECK(strstr(smelter_last_error(), "models[1] has 2 elements") != NULL, "message: %s", smelter_last_error());
    p.n_models = 0;
    CHECK(smelter_merge(ctx, &p, &o) == SMELTER_ERR_INVALID_ARGUMENT, "n_models 0 accepted");
    CHECK(smelter_merge(NULL, &p, &o) == SMELTER_ERR_INVALID_ARGUMENT, "NULL context accepted");
    CHECK(smelter_merge(ctx, NULL, &o) == SMELTER_ERR_INVALID_ARGUMENT, "NULL params accepted");
    p.n_models = 1;
    float bad_density = 1.5f;
    p.densities = &bad_density;
    CHECK(smelter_merge(ctx, &p, &o) == SMELTER_ERR_INVALID_ARGUMENT, "density 1.5 accepted");
    CHECK(strstr(smelter_last_error(), "densities[0]") != NULL, "message: %s", smelter_last_error());
    smelter_context *none = NULL;
    smelter_status s = smelter_context_create(SMELTER_BACKEND_CUDA, 99, 0, &none);
    CHECK(s == SMELTER_ERR_NO_DEVICE || s == SMELTER_ERR_UNSUPPORTED, "CUDA device 99 gave %s", smelter_status_string(s));
    CHECK(none == NULL, "failed create left a context");
}

/* A 3x2 and a 3x3 matrix: the co-moment about a shift and the Gram matrix, against sums by hand. */
static void test_product(smelter_context *ctx) {
    float x[6] = {1, 2, 3, 5, -1, 4}, y[9] = {0.5f, 1, 2, -1, 3, 0, 2, 2, 1};
    float shift[2] = {1, 1}, w[3] = {1, 0, 2}, out[9];
    smelter_tensor tx = host_f32(x, 6), ty = host_f32(y, 9), to = host_f32(out, 6);
    smelter_product_params p;
    smelter_product_params_init(&p);
    p.x = &tx; p.y = &ty;
    p.x_rows = 3; p.x_cols = 2; p.y_rows = 3; p.y_cols = 3;
    p.x_shift = shift; p.row_weights = w;
    CHECK(smelter_product(ctx, &p, &to) == SMELTER_OK, "column product: %s", smelter_last_error());
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 3; j++) {
            double e = 0;
            for (int r = 0; r < 3; r++) e += w[r] * (x[r * 2 + i] - shift[i]) * y[r * 3 + j];
            CHECK(fabs(out[i * 3 + j] - e) < 1e-6, "column product [%d][%d] = %g, expected %g", i, j, out[i * 3 + j], e);
        }
    /* the same in f64, added to what is there; a row of weight 0 holding an infinity is not read */
    float xi[6] = {1, 2, INFINITY, NAN, -1, 4};
    smelter_tensor txi = host_f32(xi, 6);
    double out64[6];
    for (int i = 0; i < 6; i++) out64[i] = 1;
    p.x = &txi;
    p.out_f64 = out64;
    p.accumulate = 1;
    CHECK(smelter_product(ctx, &p, &to) == SMELTER_ERR_INVALID_ARGUMENT, "out and out_f64 both accepted");
    CHECK(smelter_product(ctx, &p, NULL) == SMELTER_OK, "f64 column product: %s", smelter_last_error());
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 3; j++) {
            double e = 1;
            for (int r = 0; r < 3; r += 2) e += w[r] * ((double)x[r * 2 + i] - shift[i]) * y[r * 3 + j];
            CHECK(out64[i * 3 + j] == e, "f64 column product [%d][%d] = %.17g, expected %.17g", i, j, out64[i * 3 + j], e);
        }
    smelter_product_params g;
    smelter_product_params_init(&g);
    g.kind = SMELTER_PRODUCT_ROWS;
    g.x = &tx; g.y = &tx;
    g.x_rows = g.y_rows = 3; g.x_cols = g.y_cols = 2;
    g.x_shift = g.y_shift = shift;
    smelter_tensor tg = host_f32(out, 9);
    CHECK(smelter_product(ctx, &g, &tg) == SMELTER_OK, "gram: %s", smelter_last_error());
    for (int r = 0; r < 3; r++)
        for (int s = 0; s < 3; s++) {
            double e = 0;
            for (int i = 0; i < 2; i++) e += (x[r * 2 + i] - shift[i]) * (x[s * 2 + i] - shift[i]);
            CHECK(fabs(out[r * 3 + s] - e) < 1e-6, "gram [%d][%d] = %g, expected %g", r, s, out[r * 3 + s], e);
        }
    g.row_weights = w;
    CHECK(smelter_product(ctx, &g, &tg) == SMELTER_ERR_INVALID_ARGUMENT, "weights on a row product accepted");
    double sums[2] = {0, 0};
    int64_t positive[2] = {0, 0};
    smelter_column_stats_params c;
    smelter_column_stats_params_init(&c);
    c.x = &tx; c.rows = 3; c.cols = 2; c.row_weights = w; c.sums = sums; c.positive = positive;
    CHECK(smelter_column_stats(ctx, &c) == SMELTER_OK, "column stats: %s", smelter_last_error());
    CHECK(sums[0] == 1 + 2 * -1 && sums[1] == 2 + 2 * 4, "column sums %g %g", sums[0], sums[1]);
    CHECK(positive[0] == 1 && positive[1] == 2, "positive counts %lld %lld", (long long)positive[0], (long long)positive[1]);
}

/* Two task vectors by hand: d0 = (1, -2, 0, 3), d1 = (2, 2, 5, 0) about base 1. */
static void test_pair_stats(smelter_context *ctx) {
    float base[4] = {1, 1, 1, 1}, a[4] = {2, -1, 1, 4}, b[4] = {3, 3, 6, 1};
    smelter_tensor v[2] = {host_f32(a, 4), host_f32(b, 4)}, tb = host_f32(base, 4);
    double dots[4] = {0, 0, 0, 0}, squared[4] = {0, 0, 0, 0};
    int64_t conflicts[4] = {0}, nonzero[4] = {0}, kept[4] = {0}, bad[2] = {0};
    uint32_t thresholds[2];
    float two = 2.0f;
    memcpy(&thresholds[0], &two, 4);  /* f32 keys are the magnitude bits: keep |d| >= 2 */
    thresholds[1] = thresholds[0];
    smelter_pair_stats_params p;
    smelter_pair_stats_params_init(&p);
    p.n_vectors = 2; p.vectors = v; p.base = &tb;
    p.dots = dots; p.sign_conflicts = conflicts; p.both_nonzero = nonzero;
    p.both_kept = kept; p.thresholds = thresholds; p.nonfinite = bad; p.squared_distances = squared;
    CHECK(smelter_pair_stats(ctx, &p) == SMELTER_OK, "pair stats: %s", smelter_last_error());
    /* d0 - d1 = (-1, -4, -5, 3) */
    CHECK(squared[0] == 0 && squared[1] == 51 && squared[2] == 51 && squared[3] == 0, "squared distances %g %g %g %g",
          squared[0], squared[1], squared[2], squared[3]);
    CHECK(dots[0] == 14 && dots[1] == -2 && dots[2] == -2 && dots[3] == 33, "dots %g %g %g %g", dots[0], dots[1], dots[2], dots[3]);
    CHECK(conflicts[1] == 1 && conflicts[0] == 0, "sign conflicts %lld", (long long)conflicts[1]);
    CHECK(nonzero[0] == 3 && nonzero[1] == 2 && nonzero[3] == 3, "non-zeros %lld %lld", (long long)nonzero[0], (long long)nonzero[1]);
    CHECK(kept[0] == 2 && kept[1] == 1 && kept[3] == 3, "kept %lld %lld %lld", (long long)kept[0], (long long)kept[1], (long long)kept[3]);
    CHECK(bad[0] == 0 && bad[1] == 0, "non-finite counts");
    p.thresholds = NULL;
    CHECK(smelter_pair_stats(ctx, &p) == SMELTER_ERR_INVALID_ARGUMENT, "both_kept without thresholds accepted");
}

int main(void) {
    CHECK(smelter_abi_version() == SMELTER_ABI_VERSION, "ABI version %u", smelter_abi_version());
    printf("%s\n", smelter_build_info());
    CHECK(smelter_tensor_key("a", 1) == 0xAF63DC4C8601EC8CULL, "FNV-1a of \"a\"");
    smelter_context *ctx = NULL;
    CHECK(smelter_context_create(SMELTER_BACKEND_CPU, 0, 0, &ctx) == SMELTER_OK, "cpu ctx: %s", smelter_last_error());
    test_ties_by_hand(ctx);
    test_breadcrumbs_and_variance_by_hand(ctx);
    test_decimal_density_counts(ctx);
    test_nonfinite_count(ctx);
    test_dare_thread_independent();
    test_topk(ctx);
    test_sampled_thresholds(ctx);
    test_errors(ctx);
    test_product(ctx);
    test_pair_stats(ctx);
    smelter_context_destroy(ctx);
    printf("c_abi_test: %s\n", failures ? "FAILED" : "ok");
    return failures ? 1 : 0;
}
