// The CPU backend: host memory only, kernels split over a thread pool in fixed-size chunks.
// Results do not depend on the thread count: each element is computed independently and the
// statistics are integer counts.
#include <sched.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <memory>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "../core/backend.h"
#include "cpu_kernels.h"
#include "thread_pool.h"

namespace smelter {
namespace {

constexpr int64_t kChunk = 1 << 16;  // elements per task

// Sampled selection (select_keys): tensors from 1 Mi elements; 1024 runs of 16 keys; bounds four
// standard deviations of the sample rank either side (the window then holds about 3 % of the keys
// at density 0.5); a wide f32 window (2^16 key values or more) that holds more than 1/8 of a
// chunk's keys gives up.
constexpr int64_t kSampledSelectMin = 1 << 20;
constexpr int kSampleRuns = 1024;
constexpr int kSampleRun = 16;
constexpr int kSampleRunsPerTask = 64;
constexpr double kSampleDeviations = 4.0;
constexpr int64_t kSelectWindowShare = 8;
constexpr int kMaxKeyWindows = 2 * SMELTER_MAX_MODELS;  // a threshold and an upper key per model
constexpr uint32_t kCountedWindow = 1u << 16;           // windows of fewer key values count them

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
        injected_allocation_fault(bytes);
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

    // Sampled exact selection: keys of a stratified sample give each query bounds [low, high] a few
    // standard deviations either side of its rank; one pass over the tensor (the base read once for
    // all queries) then counts the keys above high with vector compares, no histogram scatter, and
    // collects the few in [low, high], among which the k-th largest is picked. The result is exact.
    // A query whose bounds miss (a sample unlike the tensor) or whose window holds too many keys
    // (heavy ties) is left to the histograms.
    void select_keys(const KernelInputs &in, int32_t key_dtype, KeyQuery *queries, int count) override {
        const int64_t n = in.count;
        if (n < kSampledSelectMin) return;
        const uint32_t max_key = key_dtype == KEY_F32 ? 0x7FFFFFFFu : 0x7FFFu;
        const int64_t tasks = chunks(n), cap = kChunk / kSelectWindowShare;
        std::vector<uint32_t> sample(static_cast<size_t>(kSampleRuns) * kSampleRun);
        std::vector<KeyWindow> windows;
        std::vector<int> query_of;
        int sampled = -1;
        for (int q = 0; q < count; ++q) {
            const KeyQuery &query = queries[q];
            if (query.k < 1 || query.k > n) continue;
            if (query.model != sampled) {
                const int64_t spacing = n / kSampleRuns;
                pool_.run(kSampleRuns / kSampleRunsPerTask, [&](int64_t t, int) {
                    for (int64_t r = t * kSampleRunsPerTask; r < (t + 1) * kSampleRunsPerTask; ++r)
                        k_.keys_range(in, query.model, key_dtype, r * spacing, r * spacing + kSampleRun,
                                      sample.data() + r * kSampleRun);
                });
                sampled = query.model;
            }
            // Ranks, counted from the largest (0-based), of the sample keys that bound the k-th largest.
            const double size = static_cast<double>(sample.size());
            const double share = static_cast<double>(query.k) / static_cast<double>(n);
            const double mid = share * size, spread = kSampleDeviations * std::sqrt(size * share * (1.0 - share));
            const auto rank_high = static_cast<int64_t>(std::floor(mid - spread)) - 1;
            const auto rank_low = static_cast<int64_t>(std::ceil(mid + spread)) + 1;
            auto nth_largest = [&](int64_t rank) {
                std::nth_element(sample.begin(), sample.begin() + rank, sample.end(), std::greater<uint32_t>());
                return sample[static_cast<size_t>(rank)];
            };
            const uint32_t high = rank_high < 0 ? max_key : nth_largest(rank_high);
            const uint32_t low = rank_low >= static_cast<int64_t>(sample.size()) ? 0u : nth_largest(rank_low);
            windows.push_back({query.model, low, high, 0, 0, nullptr, cap, nullptr, low, -1});
            query_of.push_back(q);
        }
        const int nw = static_cast<int>(windows.size());
        if (nw == 0) return;
        // Narrow windows (every 16-bit one) count each key value per worker; wide ones collect keys
        // per chunk, with room for cap keys each (pages are only touched where keys land).
        std::vector<size_t> hist_at(static_cast<size_t>(nw));
        size_t hist_size = 0, collecting = 0;
        for (int i = 0; i < nw; ++i) {
            const bool narrow = windows[i].high - windows[i].low < kCountedWindow;
            hist_at[i] = narrow ? hist_size : SIZE_MAX;
            if (narrow) hist_size += windows[i].high - windows[i].low + 1;
            else ++collecting;
        }
        // 16-bit keys grow with the bits of |delta| up to infinity, so windows below it compare those
        // bits (as f32 keys) and skip rounding every delta; only the counted ones become keys.
        bool on_bits = key_dtype != KEY_F32;
        for (const KeyWindow &w : windows) on_bits = on_bits && w.high < magnitude_key(INFINITY, key_dtype);
        std::vector<KeyWindow> compare = windows;
        if (on_bits)
            for (KeyWindow &w : compare) {
                w.low = lowest_bits_with_key(w.low, key_dtype);
                w.high = lowest_bits_with_key(w.high + 1, key_dtype) - 1;
                w.key_of_bits = key_dtype;
            }
        std::vector<std::vector<uint64_t>> hists(static_cast<size_t>(pool_.size()));
        std::unique_ptr<uint32_t[]> found(new uint32_t[collecting * tasks * cap]);
        std::vector<KeyWindow> parts(static_cast<size_t>(nw) * tasks);
        pool_.run(tasks, [&](int64_t c, int worker) {
            alignas(64) uint32_t scratch[kBlockElements];
            std::vector<uint64_t> &hist = hists[worker];
            if (hist.empty()) hist.assign(hist_size, 0);
            KeyWindow local[kMaxKeyWindows];
            size_t collected = 0;
            for (int i = 0; i < nw; ++i) {
                local[i] = compare[i];
                if (hist_at[i] != SIZE_MAX) {
                    local[i].hist = hist.data() + hist_at[i];
                    local[i].found = scratch;
                } else {
                    local[i].found = found.get() + (collected++ * tasks + c) * cap;
                }
            }
            k_.count_key_windows(in, on_bits ? KEY_F32 : key_dtype, local, nw, c * kChunk, end(c, n));
            for (int i = 0; i < nw; ++i) parts[i * tasks + c] = local[i];
        });
        pool_.run(nw, [&](int64_t i, int) {
            KeyQuery &query = queries[query_of[i]];
            int64_t above = 0, in_window = 0;
            bool whole = true;
            for (int64_t c = 0; c < tasks; ++c) {
                const KeyWindow &part = parts[i * tasks + c];
                whole = whole && part.n >= 0;
                above += part.above;
                in_window += part.n;
            }
            if (!whole || query.k <= above || query.k > above + in_window) return;
            const KeyWindow &w = windows[i];
            std::vector<uint64_t> counts;
            if (hist_at[i] != SIZE_MAX) {
                counts.assign(w.high - w.low + 1, 0);
                for (const auto &h : hists)
                    if (!h.empty())
                        for (size_t v = 0; v < counts.size(); ++v) counts[v] += h[hist_at[i] + v];
                int64_t rank = query.k - above;
                query.key = w.low + bin_of_rank(counts, &rank);
            } else {
                query.key = pick_collected(w, parts.data() + i * tasks, tasks, query.k - above);
            }
            query.done = true;
        });
    }

    // The smallest |delta| bit pattern whose key is at least `key` (a key up to that of infinity).
    static uint32_t lowest_bits_with_key(uint32_t key, int32_t key_dtype) {
        uint32_t lo = 0, hi = 0x7F800000u;  // magnitude_key grows with the bits over [0, inf]
        while (lo < hi) {
            const uint32_t mid = lo + (hi - lo) / 2;
            if (magnitude_key(bits_float(mid), key_dtype) >= key) hi = mid;
            else lo = mid + 1;
        }
        return lo;
    }

    // The bin holding the *rank-th largest (1 = largest) of the counted values; *rank becomes the
    // rank within that bin.
    static uint32_t bin_of_rank(const std::vector<uint64_t> &counts, int64_t *rank) {
        size_t bin = counts.size() - 1;
        while (static_cast<uint64_t>(*rank) > counts[bin]) *rank -= static_cast<int64_t>(counts[bin--]);
        return static_cast<uint32_t>(bin);
    }

    // The rank-th largest (1 = largest) of the keys the parts of a wide window collected: a histogram
    // of their top 16 bits over [low, high], then the keys of the chosen bin alone.
    static uint32_t pick_collected(const KeyWindow &w, const KeyWindow *parts, int64_t count, int64_t rank) {
        int shift = 0;
        while (((w.high - w.low) >> shift) >= kCountedWindow) ++shift;
        std::vector<uint64_t> counts(static_cast<size_t>((w.high - w.low) >> shift) + 1, 0);
        for (int64_t c = 0; c < count; ++c)
            for (int64_t j = 0; j < parts[c].n; ++j) ++counts[(parts[c].found[j] - w.low) >> shift];
        const uint32_t bin = bin_of_rank(counts, &rank);
        std::vector<uint32_t> keys;
        for (int64_t c = 0; c < count; ++c)
            for (int64_t j = 0; j < parts[c].n; ++j)
                if (((parts[c].found[j] - w.low) >> shift) == bin) keys.push_back(parts[c].found[j]);
        std::nth_element(keys.begin(), keys.begin() + (rank - 1), keys.end(), std::greater<uint32_t>());
        return keys[static_cast<size_t>(rank - 1)];
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
        if (job.out_f64) {
            std::vector<std::unique_ptr<ProductScratch64>> scratch(pool_.size());
            pool_.run(tp * tq, [&](int64_t t, int w) {
                if (!scratch[w]) scratch[w] = std::make_unique<ProductScratch64>();
                k_.product_tile_f64(job, (t / tq) * kProductTile, (t % tq) * kProductTile, *scratch[w]);
            });
            return;
        }
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
        std::vector<double> partial_sq(job.squared_distances ? static_cast<size_t>(kPairRoundChunks) * pairs : 0);
        std::vector<double> total(pairs, 0.0), total_sq(pairs, 0.0);  // continuing the job's running sums
        for (int q = 0; q < pairs; ++q) {
            if (job.dots) total[q] = job.dots[q];
            if (job.squared_distances) total_sq[q] = job.squared_distances[q];
        }
        for (int64_t r0 = 0; r0 < n_chunks; r0 += kPairRoundChunks) {
            const int64_t round = std::min<int64_t>(kPairRoundChunks, n_chunks - r0);
            pool_.run(round, [&](int64_t c, int w) {
                if (!scratch[w]) {
                    scratch[w] = std::make_unique<PairScratch>();
                    scratch[w]->acc.resize(static_cast<size_t>(pairs) * kPairLanes);
                    scratch[w]->acc_squared.resize(static_cast<size_t>(pairs) * kPairLanes);
                }
                k_.pair_stats_chunk(job, in, r0 + c, *scratch[w], job.dots ? &partial[c * pairs] : nullptr,
                                    job.squared_distances ? &partial_sq[c * pairs] : nullptr, &counts[w * per_worker]);
            });
            for (int64_t c = 0; c < round; ++c)
                for (int q = 0; q < pairs; ++q) {
                    if (job.dots) total[q] += partial[c * pairs + q];
                    if (job.squared_distances) total_sq[q] += partial_sq[c * pairs + q];
                }
        }
        for (int q = 0; q < pairs; ++q) {
            if (job.dots) job.dots[q] = total[q];
            if (job.squared_distances) job.squared_distances[q] = total_sq[q];
            int64_t conflicts = 0, nonzero = 0, kept = 0;
            for (int w = 0; w < pool_.size(); ++w) {
                conflicts += counts[w * per_worker + q];
                nonzero += counts[w * per_worker + pairs + q];
                kept += counts[w * per_worker + 2 * pairs + q];
            }
            if (job.conflicts) job.conflicts[q] += conflicts;
            if (job.both_nonzero) job.both_nonzero[q] += nonzero;
            if (job.both_kept) job.both_kept[q] += kept;
        }
        for (int i = 0; i < job.n && job.nonfinite; ++i) {
            int64_t bad = 0;
            for (int w = 0; w < pool_.size(); ++w) bad += counts[w * per_worker + 3 * pairs + i];
            job.nonfinite[i] += bad;
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
