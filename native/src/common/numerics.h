// Bit-exact scalar primitives shared by the CPU and CUDA backends: dtype conversions, magnitude
// keys, the counter-based random generator. Both backends call exactly these functions in the
// same order, which is what makes their results bit-identical (the build also turns off FMA
// contraction on both sides, see cmake/SmelterFlags.cmake).
#pragma once
#include <stdint.h>
#include <string.h>

#if defined(__CUDACC__)
#define SMELTER_HD __host__ __device__ __forceinline__
#else
#define SMELTER_HD inline __attribute__((always_inline))
#endif

namespace smelter {

SMELTER_HD uint32_t float_bits(float f) {
#if defined(__CUDA_ARCH__)
    return __float_as_uint(f);
#else
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
#endif
}

SMELTER_HD float bits_float(uint32_t u) {
#if defined(__CUDA_ARCH__)
    return __uint_as_float(u);
#else
    float f;
    memcpy(&f, &u, 4);
    return f;
#endif
}

// ---- bf16 ----------------------------------------------------------------------------------
SMELTER_HD float bf16_to_float(uint16_t h) { return bits_float(static_cast<uint32_t>(h) << 16); }

// Round to nearest, ties to even; NaN stays NaN (quietened).
SMELTER_HD uint16_t float_to_bf16(float f) {
    uint32_t u = float_bits(f);
    if ((u & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);
    return static_cast<uint16_t>((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

// ---- f16 (IEEE binary16) -------------------------------------------------------------------
SMELTER_HD float f16_to_float(uint16_t h) {
    const uint32_t shifted_exp = 0x7C00u << 13;
    uint32_t o = (static_cast<uint32_t>(h) & 0x7FFFu) << 13;
    uint32_t exp = shifted_exp & o;
    o += (127u - 15u) << 23;
    if (exp == shifted_exp) {
        o += (128u - 16u) << 23;  // Inf / NaN
    } else if (exp == 0) {        // zero / subnormal: renormalise through an exact subtraction
        o += 1u << 23;
        o = float_bits(bits_float(o) - bits_float(113u << 23));
    }
    return bits_float(o | ((static_cast<uint32_t>(h) & 0x8000u) << 16));
}

// Round to nearest, ties to even; overflow gives Inf; NaN gives the canonical quiet NaN 0x7E00.
SMELTER_HD uint16_t float_to_f16(float f) {
    uint32_t u = float_bits(f);
    uint32_t sign = (u >> 16) & 0x8000u;
    uint32_t a = u & 0x7FFFFFFFu;
    uint32_t o;
    if (a >= (143u << 23)) {                   // >= 65536: Inf, or NaN
        o = a > 0x7F800000u ? 0x7E00u : 0x7C00u;
    } else if (a < (113u << 23)) {             // below 2^-14: subnormal or zero
        // Adding 0.5 aligns the value so the FPU's own round-to-nearest-even does the work.
        const uint32_t denorm_magic = ((127u - 15u) + (23u - 10u) + 1u) << 23;
        o = float_bits(bits_float(a) + bits_float(denorm_magic)) - denorm_magic;
    } else {
        uint32_t mant_odd = (a >> 13) & 1u;
        a += ((15u - 127u) << 23) + 0xFFFu + mant_odd;
        o = a >> 13;  // carries into the exponent give the right result, up to Inf
    }
    return static_cast<uint16_t>(o | sign);
}

// ---- magnitude keys ------------------------------------------------------------------------
// The key of a delta is the magnitude bit pattern of the delta rounded to the key dtype:
// integers that order exactly as |delta| (NaN above Inf above every finite value).
enum KeyDtype : int32_t { KEY_F32 = 0, KEY_F16 = 1, KEY_BF16 = 2 };

SMELTER_HD uint32_t magnitude_key(float delta, int32_t key_dtype) {
    if (key_dtype == KEY_BF16) return float_to_bf16(delta) & 0x7FFFu;
    if (key_dtype == KEY_F16) return float_to_f16(delta) & 0x7FFFu;
    return float_bits(delta) & 0x7FFFFFFFu;
}

// ---- counter-based random numbers: Philox4x32-10 (Salmon et al., SC'11) ---------------------
struct Philox4 {
    uint32_t v[4];
};

SMELTER_HD void mul_hi_lo(uint32_t a, uint32_t b, uint32_t *hi, uint32_t *lo) {
    uint64_t p = static_cast<uint64_t>(a) * b;
    *hi = static_cast<uint32_t>(p >> 32);
    *lo = static_cast<uint32_t>(p);
}

SMELTER_HD Philox4 philox4x32_10(Philox4 c, uint32_t k0, uint32_t k1) {
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
    for (int r = 0; r < 10; ++r) {
        uint32_t hi0, lo0, hi1, lo1;
        mul_hi_lo(0xD2511F53u, c.v[0], &hi0, &lo0);
        mul_hi_lo(0xCD9E8D57u, c.v[2], &hi1, &lo1);
        Philox4 n = {{hi1 ^ c.v[1] ^ k0, lo1, hi0 ^ c.v[3] ^ k1, lo0}};
        c = n;
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
    return c;
}

SMELTER_HD uint64_t splitmix64(uint64_t x) {
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

// The Philox key for one (seed, tensor) pair.
SMELTER_HD uint64_t random_stream_key(uint64_t seed, uint64_t tensor_key) {
    return splitmix64(splitmix64(tensor_key) ^ seed);
}

// 24 random bits for element `index` of model `model` in stream `stream`.
SMELTER_HD uint32_t random24(uint64_t stream_key, uint64_t index, uint32_t model, uint32_t stream) {
    uint64_t block = index >> 2;
    Philox4 c = {{static_cast<uint32_t>(block), static_cast<uint32_t>(block >> 32), model, stream}};
    Philox4 r = philox4x32_10(c, static_cast<uint32_t>(stream_key), static_cast<uint32_t>(stream_key >> 32));
    return r.v[index & 3] >> 8;
}

}  // namespace smelter

namespace smelter {
// All four words of one Philox block: elements 4*block .. 4*block+3 of (model, stream).
SMELTER_HD Philox4 random_block(uint64_t stream_key, uint64_t block, uint32_t model, uint32_t stream) {
    Philox4 c = {{static_cast<uint32_t>(block), static_cast<uint32_t>(block >> 32), model, stream}};
    return philox4x32_10(c, static_cast<uint32_t>(stream_key), static_cast<uint32_t>(stream_key >> 32));
}
}  // namespace smelter
