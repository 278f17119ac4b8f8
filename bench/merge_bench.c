/*
 * merge_bench.c - times smelter_merge on the CPU backend from plain C, without the JVM: the merge
 * pass alone (TIES with its thresholds given), next to a copy floor measured the same way; and
 * `ties_tensor`, TIES finding its per-tensor thresholds itself (the key histogram passes included), and
 * `dare_l1`, DARE-TIES with the L1 rescale (one L1 pass per model first), as the CLI's `dare_ties` runs.
 *
 *   cc -O2 -I native/include bench/merge_bench.c -L native/target/cmake -lsmelter -lpthread \
 *      -Wl,-rpath,native/target/cmake -o /tmp/merge_bench
 *   /tmp/merge_bench [elements] [threads] [reps] [filter]
 *
 * Defaults: 8Mi elements, 2 threads, 9 repetitions. Each case prints the median and the best time
 * of its repetitions and the GB/s of minimal bytes (each input read once, the output written once)
 * of the median, with its share of the copy floor. The copy floor is the best of two-thread
 * memcpy of 256 MiB (bytes read + written). Inputs as in the JMH suite: base uniform in +-0.02,
 * models the base plus a task vector ten times smaller; weights 1/N, density 0.5.
 * `filter` runs only the cases whose name contains it (e.g. "bf16", "dare", "n=4").
 * MERGE_BENCH_NO_FLOOR=1 skips the copy measurement and takes 21.9 GB/s as the floor.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "smelter.h"

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec * 1e-6;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static float uniform(void) { /* xorshift64*, in [-1, 1) */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (float)((rng_state * 2685821657736338717ull) >> 40) / 8388608.0f - 1.0f;
}

static uint16_t to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return (uint16_t)((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

static uint16_t to_f16(float f) { /* inputs are small and normal or tiny: truncation is good enough here */
    uint32_t u;
    memcpy(&u, &f, 4);
    uint32_t sign = (u >> 16) & 0x8000u, e = (u >> 23) & 0xFF;
    if (e < 103) return (uint16_t)sign;
    if (e < 113) return (uint16_t)(sign | ((0x800000u | (u & 0x7FFFFFu)) >> (126 - e)));
    return (uint16_t)(sign | ((e - 112) << 10) | ((u >> 13) & 0x3FF));
}

static void fill(void *data, int dtype, int64_t n, const float *base, float scale) {
    for (int64_t j = 0; j < n; ++j) {
        float v = base ? base[j] + scale * uniform() : scale * uniform();
        if (dtype == SMELTER_F32) ((float *)data)[j] = v;
        else if (dtype == SMELTER_BF16) ((uint16_t *)data)[j] = to_bf16(v);
        else ((uint16_t *)data)[j] = to_f16(v);
    }
}

static size_t dtype_size(int dtype) { return dtype == SMELTER_F32 ? 4 : 2; }

/* ---- copy floor: memcpy split over threads ---- */
struct copy_job { char *dst; const char *src; size_t bytes; };
static void *copy_part(void *arg) {
    struct copy_job *j = arg;
    memcpy(j->dst, j->src, j->bytes);
    return NULL;
}

static double copy_floor(int threads, int reps) {
    const size_t bytes = (size_t)256 << 20;
    char *a = aligned_alloc(64, bytes), *b = aligned_alloc(64, bytes);
    memset(a, 1, bytes);
    memset(b, 2, bytes);
    double best = 1e30;
    for (int r = 0; r < reps; ++r) {
        pthread_t t[64];
        struct copy_job jobs[64];
        double t0 = now_ms();
        for (int i = 0; i < threads; ++i) {
            size_t part = bytes / threads;
            jobs[i] = (struct copy_job){b + i * part, a + i * part, part};
            pthread_create(&t[i], NULL, copy_part, &jobs[i]);
        }
        for (int i = 0; i < threads; ++i) pthread_join(t[i], NULL);
        double ms = now_ms() - t0;
        if (ms < best) best = ms;
    }
    free(a);
    free(b);
    return 2.0 * bytes / (best * 1e6); /* GB/s */
}

enum { LINEAR, TA, TIES, DARE, DARE_LINEAR, TIES_TENSOR, DARE_L1 };
static const char *method_name[] = {"linear", "ta", "ties", "dare", "dare_linear", "ties_tensor", "dare_l1"};
static const char *dtype_name[] = {"f32", "f16", "bf16"};

int main(int argc, char **argv) {
    int64_t n = argc > 1 ? atoll(argv[1]) : (int64_t)8 << 20;
    int threads = argc > 2 ? atoi(argv[2]) : 2;
    int reps = argc > 3 ? atoi(argv[3]) : 9;
    const char *filter = argc > 4 ? argv[4] : "";
    smelter_context *ctx;
    if (smelter_context_create(SMELTER_BACKEND_CPU, 0, threads, &ctx) != SMELTER_OK) {
        fprintf(stderr, "context: %s\n", smelter_last_error());
        return 1;
    }
    const char *no_floor = getenv("MERGE_BENCH_NO_FLOOR");
    double floor_gbs = no_floor && *no_floor ? 21.9 : copy_floor(threads, 7);
    printf("%s; %lld elements, %d threads, %d reps; copy floor %.1f GB/s\n", smelter_build_info(), (long long)n,
           threads, reps, floor_gbs);
    printf("%-28s %9s %9s %8s %6s\n", "case", "median ms", "best ms", "GB/s", "floor");

    float *ref = malloc(sizeof(float) * n);
    const int dtypes[] = {SMELTER_BF16, SMELTER_F32, SMELTER_F16};
    const int counts[] = {1, 2, 4, 8};
    for (int di = 0; di < 3; ++di) {
        const int dt = dtypes[di];
        const size_t es = dtype_size(dt);
        void *data[9];
        rng_state = 0x9E3779B97F4A7C15ull;
        for (int64_t j = 0; j < n; ++j) ref[j] = 0.02f * uniform();
        data[0] = aligned_alloc(64, es * n);
        fill(data[0], dt, n, NULL, 0.02f);
        for (int i = 1; i <= 8; ++i) {
            data[i] = aligned_alloc(64, es * n);
            fill(data[i], dt, n, ref, 0.002f);
        }
        void *out = aligned_alloc(64, es * n);
        for (int ci = 0; ci < 4; ++ci) {
            const int models = counts[ci];
            for (int m = LINEAR; m <= DARE_L1; ++m) {
                char name[64];
                snprintf(name, sizeof name, "%s %s n=%d", method_name[m], dtype_name[dt], models);
                if (!strstr(name, filter)) continue;
                smelter_tensor base = {data[0], n, dt, SMELTER_MEMORY_HOST}, o = {out, n, dt, SMELTER_MEMORY_HOST};
                smelter_tensor xs[8];
                float w[8], d[8];
                uint32_t th[8];
                for (int i = 0; i < models; ++i) {
                    xs[i] = (smelter_tensor){data[i + 1], n, dt, SMELTER_MEMORY_HOST};
                    w[i] = 1.0f / models;
                    d[i] = 0.5f;
                }
                smelter_merge_params p;
                smelter_merge_params_init(&p);
                p.n_models = models;
                p.models = xs;
                p.weights = w;
                if (m == LINEAR) {
                    p.method = SMELTER_METHOD_LINEAR;
                    p.normalize = 1;
                } else {
                    p.base = &base;
                }
                if (m == TIES) {
                    /* the thresholds a per-tensor trim finds, computed once outside the timing */
                    for (int i = 0; i < models; ++i) {
                        smelter_topk *t;
                        int32_t more = 1;
                        smelter_topk_create(ctx, dt, &t);
                        while (more) {
                            smelter_topk_add(t, &base, &xs[i]);
                            smelter_topk_select(t, n / 2, &more, &th[i]);
                        }
                        smelter_topk_destroy(t);
                    }
                    p.densities = d;
                    p.sparsify = SMELTER_SPARSIFY_MAGNITUDE;
                    p.consensus = SMELTER_CONSENSUS_SUM;
                    p.normalize = 1;
                    p.thresholds = th;
                }
                if (m == TIES_TENSOR) {  /* per-tensor trimming as the CLI runs it: thresholds found in the call */
                    p.densities = d;
                    p.sparsify = SMELTER_SPARSIFY_MAGNITUDE;
                    p.consensus = SMELTER_CONSENSUS_SUM;
                    p.normalize = 1;
                }
                if (m == DARE || m == DARE_LINEAR || m == DARE_L1) {
                    p.densities = d;
                    p.sparsify = SMELTER_SPARSIFY_RANDOM;
                    p.rescale = m == DARE_L1 ? SMELTER_RESCALE_L1 : SMELTER_RESCALE_INVERSE_DENSITY;
                    p.consensus = m == DARE_LINEAR ? SMELTER_CONSENSUS_NONE : SMELTER_CONSENSUS_SUM;
                    p.seed = 42;
                    p.tensor_key = smelter_tensor_key("bench", 5);
                }
                double *ms = malloc(sizeof(double) * (reps + 1));
                for (int r = -1; r < reps; ++r) {
                    double t0 = now_ms();
                    if (smelter_merge(ctx, &p, &o) != SMELTER_OK) {
                        fprintf(stderr, "%s: %s\n", name, smelter_last_error());
                        return 1;
                    }
                    if (r >= 0) ms[r] = now_ms() - t0;
                }
                qsort(ms, reps, sizeof(double), cmp_double);
                const double med = ms[reps / 2];
                const double bytes = (double)(models + (m == LINEAR ? 1 : 2)) * es * n;
                const double gbs = bytes / (med * 1e6);
                printf("%-28s %9.3f %9.3f %8.2f %5.0f%%\n", name, med, ms[0], gbs, 100.0 * gbs / floor_gbs);
                fflush(stdout);
                free(ms);
            }
        }
        for (int i = 0; i <= 8; ++i) free(data[i]);
        free(out);
    }
    free(ref);
    smelter_context_destroy(ctx);
    return 0;
}
