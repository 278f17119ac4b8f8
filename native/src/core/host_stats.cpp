#include "host_stats.h"
#include <cmath>

namespace smelter {

double exact_sum_value(const ExactSum &s) {
    if (s.bucket[255] != 0) return INFINITY;
    double total = 0.0;
    for (int e = 1; e < 255; ++e)
        if (s.bucket[e]) total += std::ldexp(static_cast<double>(s.bucket[e]), e - 150);
    return total;
}

uint32_t select_bin(const uint64_t *hist, int bins, uint64_t k, uint64_t *rank_in_bin) {
    uint64_t above = 0;
    for (int b = bins - 1; b >= 0; --b) {
        if (above + hist[b] >= k) {
            *rank_in_bin = k - above;
            return static_cast<uint32_t>(b);
        }
        above += hist[b];
    }
    *rank_in_bin = 0;
    return 0;  // unreachable when 1 <= k <= total
}

int64_t kept_count(double density, int64_t n) {
    return static_cast<int64_t>(std::floor(density * static_cast<double>(n)));
}

uint32_t keep_threshold24(double density) {
    return static_cast<uint32_t>(std::ceil(density * 16777216.0));
}

}  // namespace smelter
