// Host-side reductions of the order-independent statistics in common/stats.h.
#pragma once
#include <stdint.h>
#include "../common/stats.h"

namespace smelter {

// Sum of an ExactSum as a double (deterministic: fixed order); Inf when any value was non-finite.
double exact_sum_value(const ExactSum &s);

// Finds the bin holding the k-th largest key (1 <= k <= total). Returns the bin and, through
// *rank_in_bin, k minus the count of keys in higher bins.
uint32_t select_bin(const uint64_t *hist, int bins, uint64_t k, uint64_t *rank_in_bin);

// k for a density over n elements: floor(density * n), computed in double.
int64_t kept_count(double density, int64_t n);

// Largest 24-bit draw that is still dropped: keep when draw < ceil(density * 2^24).
uint32_t keep_threshold24(double density);

}  // namespace smelter
