// Compiled with -mavx2 -mf16c (see CMakeLists.txt); used only where the CPU has both.
#define SMELTER_CPU_NS cpu_avx2
#define SMELTER_CPU_ISA "avx2"
#include "cpu_kernels.inc"
