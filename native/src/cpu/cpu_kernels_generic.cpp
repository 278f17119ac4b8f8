// Baseline x86-64 build of the CPU kernels, for machines without AVX2.
#define SMELTER_CPU_NS cpu_generic
#define SMELTER_CPU_ISA "sse2"
#include "cpu_kernels.inc"
