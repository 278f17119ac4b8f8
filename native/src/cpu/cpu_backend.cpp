// The CPU backend: host memory only, kernels split over a thread pool in fixed-size chunks.
// Results do not depend on the thread count: each element is computed independently and the
// statistics are integer counts.
#include <sched.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "../core/backend.h"
#include "cpu_kernels.h"
#include "thread_pool.h"

namespace smelter {
namespace {

constexpr int64_t kChunk = 1 << 16;  // elements per task

const CpuKernels &select_kernels() {
    static const CpuKernels &k = (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c") &&
                                  __builtin_cpu_supports("fma"))
                                     ? cpu_avx2::kernels
                                     : cpu_generic::kernels;
    return k;
}

class CpuBackend final : public Backend {
public:
    explicit CpuBackend(int threads) : pool_(threads > 0 ? threads : cpu_core_count()), k_(select_kernels()) {}

    smelter_backend kind() const override { return SMELTER_BACKEND_CPU; }

    void *alloc(smelter_memory memory, size_t bytes) override {
        if (memory != SMELTER_MEMORY_HOST) fail(SMELTER_ERR_UNSUPPORTED, "a CPU context has no device memory");
        void *p = std::aligned_alloc(64, ((bytes + 63) / 64) * 64 + (bytes == 0 ? 64 : 0));
        if (!p) fail(SMELTER_ERR_OUT_OF_MEMORY, "cannot allocate " + std::to_string(bytes) + " bytes of host memory");
        return p;
    }
    void free(smelter_memory, void *ptr) override { std::free(ptr); }
    void copy(void *dst, smelter_memory dm, const void *src, smelter_memory sm, size_t bytes) override {
        if (dm != SMELTER_MEMORY_HOST || sm != SMELTER_MEMORY_HOST)
            fail(SMELTER_ERR_UNSUPPORTED, "a CPU context has no device memory");
        std::memmove(dst, src, bytes);
    }
    void synchronize() override {}

    struct CpuStaged : Staged {
        std::vector<uint32_t> ranks[SMELTER_MAX_MODELS];
    };

    std::unique_ptr<Staged> stage(const smelter_tensor *base, const smelter_tensor *models, int n) override {
        auto s = std::make_unique<CpuStaged>();
        s->inputs.base = base ? base->data : nullptr;
        for (int i = 0; i < n; ++i) s->inputs.models[i] = models[i].data;
        s->inputs.dtype = models[0].dtype;
        s->inputs.count = models[0].count;
        return s;
    }

    void stage_extra(Staged &s, const smelter_tensor *select, const smelter_tensor *element_weights, int n) override {
        if (select) {
            s.inputs.select = select->data;
            s.inputs.select_dtype = select->dtype;
        }
        if (element_weights) {
            for (int i = 0; i < n; ++i) s.inputs.element_weights[i] = element_weights[i].data;
            s.inputs.element_weight_dtype = element_weights[0].dtype;
        }
    }

    void rank_rows(Staged &staged, int model, int32_t key_dtype, int64_t row_length) override {
        auto &s = static_cast<CpuStaged &>(staged);
        const int64_t count = s.inputs.count;
        s.ranks[model].resize(static_cast<size_t>(count));
        s.inputs.ranks[model] = s.ranks[model].data();
        if (count == 0) return;
        const int64_t rows = count / row_length;
        const int64_t per_task = std::max<int64_t>(1, kChunk / row_length);
        pool_.run((rows + per_task - 1) / per_task, [&](int64_t t, int) {
            k_.rank_rows_range(s.inputs, model, key_dtype, row_length, t * per_task, std::min(rows, (t + 1) * per_task),
                               s.ranks[model].data());
        });
    }

    void key_histogram(const KernelInputs &in, int model, int32_t key_dtype, int level, uint32_t prefix,
                       uint64_t *hist) override {
        const int bins = (key_dtype == SMELTER_F32 && level == 1) ? kLevel1Bins : kLevel0Bins;
        std::vector<std::vector<uint64_t>> local(pool_.size());
        pool_.run(chunks(in.count), [&](int64_t c, int w) {
            if (local[w].empty()) local[w].assign(bins, 0);
            k_.histogram_range(in, model, key_dtype, level, prefix, c * kChunk, end(c, in.count), local[w].data());
        });
        for (auto &l : local)
            for (int b = 0; b < static_cast<int>(l.size()); ++b) hist[b] += l[b];
    }

    // RANKED: the keep limit of every rank, once per call (the kernels look them up per element), for
    // every model or only `model`.
    struct RankLimits {
        KernelInputs in;
        std::vector<uint32_t> table[SMELTER_MAX_MODELS];
        RankLimits(const MergePlan &plan, const KernelInputs &inputs, int model = -1) : in(inputs) {
            if (plan.sparsify != SMELTER_SPARSIFY_RANKED) return;
            for (int i = 0; i < plan.n; ++i) {
                if (model >= 0 && i != model) continue;
                table[i].resize(static_cast<size_t>(plan.row_length));
                for (int64_t r = 0; r < plan.row_length; ++r)
                    table[i][r] = ranked_limit(plan, i, static_cast<uint32_t>(r));
                in.rank_limits[i] = table[i].data();
            }
        }
    };

    void l1_norms(const MergePlan &plan, const KernelInputs &inputs, int model, ExactSum *total, ExactSum *kept) override {
        const RankLimits limits(plan, inputs, model);
        const KernelInputs &in = limits.in;
        std::vector<ExactSum> t(pool_.size()), k(pool_.size());
        std::memset(t.data(), 0, sizeof(ExactSum) * t.size());
        std::memset(k.data(), 0, sizeof(ExactSum) * k.size());
        pool_.run(chunks(in.count), [&](int64_t c, int w) {
            k_.l1_range(plan, in, model, c * kChunk, end(c, in.count), &t[w], &k[w]);
        });
        for (size_t w = 0; w < t.size(); ++w)
            for (int b = 0; b < ExactSum::kBuckets; ++b) {
                total->bucket[b] += t[w].bucket[b];
                kept->bucket[b] += k[w].bucket[b];
            }
    }

    void merge(const MergePlan &plan, const KernelInputs &inputs, const smelter_tensor *out, int64_t counts[4]) override {
        const RankLimits limits(plan, inputs);
        const KernelInputs &in = limits.in;
        std::vector<int64_t> local(4 * pool_.size(), 0);
        pool_.run(chunks(in.count), [&](int64_t c, int w) {
            k_.merge_range(plan, in, out, c * kChunk, end(c, in.count), &local[4 * w]);
        });
        for (size_t w = 0; w < local.size(); ++w) counts[w % 4] += local[w];
    }

    void product(const ProductJob &job) override {
        const int64_t tp = (job.P + kProductTile - 1) / kProductTile, tq = (job.Q + kProductTile - 1) / kProductTile;
        std::vector<std::unique_ptr<ProductScratch>> scratch(pool_.size());
        pool_.run(tp * tq, [&](int64_t t, int w) {
            if (!scratch[w]) scratch[w] = std::make_unique<ProductScratch>();
            k_.product_tile(job, (t / tq) * kProductTile, (t % tq) * kProductTile, *scratch[w]);
        });
    }

    // Blocks of kColumnRows rows are summed in parallel a round at a time (each in row order), then
    // added to the totals in block order: the same order for any thread count.
    void column_stats(const ColumnStatsJob &job) override {
        const int64_t blocks = (job.rows + kColumnRows - 1) / kColumnRows, cols = job.cols;
        const int64_t round_blocks = std::max<int64_t>(1, std::min<int64_t>(64, (int64_t{1} << 24) / std::max<int64_t>(cols, 1)));
        std::vector<double> sums;
        std::vector<int64_t> positive;
        for (int64_t b0 = 0; b0 < blocks; b0 += round_blocks) {
            const int64_t round = std::min(round_blocks, blocks - b0);
            if (job.sums) sums.assign(static_cast<size_t>(round * cols), 0.0);
            if (job.positive) positive.assign(static_cast<size_t>(round * cols), 0);
            pool_.run(round, [&](int64_t i, int) {
                const int64_t r0 = (b0 + i) * kColumnRows;
                k_.column_stats_rows(job, r0, std::min(job.rows, r0 + kColumnRows), job.sums ? &sums[i * cols] : nullptr,
                                     job.positive ? &positive[i * cols] : nullptr);
            });
            for (int64_t i = 0; i < round; ++i)
                for (int64_t c = 0; c < cols; ++c) {
                    if (job.sums) job.sums[c] += sums[i * cols + c];
                    if (job.positive) job.positive[c] += positive[i * cols + c];
                }
        }
    }

    // Chunks are computed in parallel a round at a time, then added to the totals in chunk order.
    void pair_stats(const PairStatsJob &job, const KernelInputs &in) override {
        const int pairs = pair_count(job.n);
        const int64_t n_chunks = (in.count + kPairChunk - 1) / kPairChunk;
        const int64_t per_worker = 3 * static_cast<int64_t>(pairs) + job.n;
        std::vector<std::unique_ptr<PairScratch>> scratch(pool_.size());
        std::vector<int64_t> counts(per_worker * pool_.size(), 0);
        std::vector<double> partial(job.dots ? static_cast<size_t>(kPairRoundChunks) * pairs : 0);
        std::vector<double> total(pairs, 0.0);
        for (int64_t r0 = 0; r0 < n_chunks; r0 += kPairRoundChunks) {
            const int64_t round = std::min<int64_t>(kPairRoundChunks, n_chunks - r0);
            pool_.run(round, [&](int64_t c, int w) {
                if (!scratch[w]) {
                    scratch[w] = std::make_unique<PairScratch>();
                    scratch[w]->acc.resize(static_cast<size_t>(pairs) * kPairLanes);
                }
                k_.pair_stats_chunk(job, in, r0 + c, *scratch[w], job.dots ? &partial[c * pairs] : nullptr,
                                    &counts[w * per_worker]);
            });
            if (job.dots)
                for (int64_t c = 0; c < round; ++c)
                    for (int q = 0; q < pairs; ++q) total[q] += partial[c * pairs + q];
        }
        for (int q = 0; q < pairs; ++q) {
            if (job.dots) job.dots[q] = total[q];
            int64_t conflicts = 0, nonzero = 0, kept = 0;
            for (int w = 0; w < pool_.size(); ++w) {
                conflicts += counts[w * per_worker + q];
                nonzero += counts[w * per_worker + pairs + q];
                kept += counts[w * per_worker + 2 * pairs + q];
            }
            if (job.conflicts) job.conflicts[q] = conflicts;
            if (job.both_nonzero) job.both_nonzero[q] = nonzero;
            if (job.both_kept) job.both_kept[q] = kept;
        }
        for (int i = 0; i < job.n && job.nonfinite; ++i) {
            int64_t bad = 0;
            for (int w = 0; w < pool_.size(); ++w) bad += counts[w * per_worker + 3 * pairs + i];
            job.nonfinite[i] = bad;
        }
    }

private:
    static int64_t chunks(int64_t count) { return (count + kChunk - 1) / kChunk; }
    static int64_t end(int64_t chunk, int64_t count) { return std::min(count, (chunk + 1) * kChunk); }

    ThreadPool pool_;
    const CpuKernels &k_;
};

}  // namespace

int cpu_core_count() {
    cpu_set_t set;  // the cores this process may run on (containers and taskset narrow it)
    if (sched_getaffinity(0, sizeof set, &set) == 0) return CPU_COUNT(&set) > 0 ? CPU_COUNT(&set) : 1;
    unsigned n = std::thread::hardware_concurrency();
    return n == 0 ? 1 : static_cast<int>(n);
}

const char *cpu_kernel_isa() { return select_kernels().isa; }

std::unique_ptr<Backend> make_cpu_backend(int threads) { return std::make_unique<CpuBackend>(threads); }

}  // namespace smelter
