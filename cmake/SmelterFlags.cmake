# Compiler flags shared by every Smelter native target.
#
# Floating-point contraction (a*b+c fused into one FMA) is turned off for C++ and CUDA alike: the
# CPU and CUDA backends must execute the same IEEE operations in the same order to agree bit for
# bit. Division and square root stay IEEE-exact on CUDA (no --use_fast_math).
# -fno-trapping-math changes no result (Smelter never reads FP exception flags); it lets GCC turn
# the conditional arithmetic of the merge loops into vector selects. It must come after
# -fno-fast-math, which resets it to -ftrapping-math: with that order GCC if-converts no
# floating-point operation and the merge element loop does not vectorise ("control flow in loop").

set(SMELTER_CXX_FLAGS -O3 -ffp-contract=off -fno-fast-math -fno-trapping-math -fvisibility=hidden -Wall -Wextra -Wno-unused-parameter)
set(SMELTER_CUDA_FLAGS -O3 --fmad=false -prec-div=true -prec-sqrt=true -ftz=false -Xcompiler=-fvisibility=hidden
    --expt-relaxed-constexpr)

# Per-ISA flags for the CPU kernel translation units (chosen at run time by CPUID).
set(SMELTER_AVX2_FLAGS -mavx2 -mf16c -mfma)  # FMA only where written out (-ffp-contract=off): the product kernel

option(SMELTER_VECTORIZE_REPORT "Print the compiler's vectorisation report for the CPU kernels" OFF)
if(SMELTER_VECTORIZE_REPORT)
  list(APPEND SMELTER_AVX2_FLAGS -fopt-info-vec-optimized)
endif()
