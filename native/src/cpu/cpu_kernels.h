// CPU kernel table. The kernels are compiled twice from cpu_kernels.inc, for AVX2 (+F16C) and for
// baseline x86-64, and the backend picks one at start-up from the CPU's features.
#pragma once
#include <stdint.h>
#include "../core/backend.h"

namespace smelter {

struct CpuKernels {
    const char *isa;
    // Merges elements [begin, end); adds elected-sign counts (+, -, none) to counts.
    void (*merge_range)(const MergePlan &plan, const KernelInputs &in, const smelter_tensor *out, int64_t begin,
                        int64_t end, int64_t counts[3]);
    // Adds keys of elements [begin, end) to hist (see key_bin).
    void (*histogram_range)(const KernelInputs &in, int model, int32_t key_dtype, int level, uint32_t prefix,
                            int64_t begin, int64_t end, uint64_t *hist);
    // Adds |delta| and kept |delta| of elements [begin, end) of one model.
    void (*l1_range)(const MergePlan &plan, const KernelInputs &in, int model, int64_t begin, int64_t end,
                     ExactSum *total, ExactSum *kept);
};

namespace cpu_avx2 { extern const CpuKernels kernels; }
namespace cpu_generic { extern const CpuKernels kernels; }

}  // namespace smelter
