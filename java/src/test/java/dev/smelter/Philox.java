package dev.smelter;

/**
 * An independent Java implementation of Philox4x32-10 (Salmon et al., SC'11) and of Smelter's
 * random-stream definition (smelter.h, SMELTER_SPARSIFY_RANDOM), for the float64 reference.
 */
final class Philox {
    private Philox() {}

    static int[] block(int[] counter, int k0, int k1) {
        int c0 = counter[0], c1 = counter[1], c2 = counter[2], c3 = counter[3];
        for (int round = 0; round < 10; round++) {
            long p0 = (0xD2511F53L & 0xFFFFFFFFL) * (c0 & 0xFFFFFFFFL);
            long p1 = (0xCD9E8D57L & 0xFFFFFFFFL) * (c2 & 0xFFFFFFFFL);
            int hi0 = (int) (p0 >>> 32), lo0 = (int) p0, hi1 = (int) (p1 >>> 32), lo1 = (int) p1;
            int n0 = hi1 ^ c1 ^ k0, n2 = hi0 ^ c3 ^ k1;
            c0 = n0;
            c1 = lo1;
            c2 = n2;
            c3 = lo0;
            k0 += 0x9E3779B9;
            k1 += 0xBB67AE85;
        }
        return new int[] {c0, c1, c2, c3};
    }

    static long splitmix64(long x) {
        x += 0x9E3779B97F4A7C15L;
        x = (x ^ (x >>> 30)) * 0xBF58476D1CE4E5B9L;
        x = (x ^ (x >>> 27)) * 0x94D049BB133111EBL;
        return x ^ (x >>> 31);
    }

    /** The 24 random bits of element {@code index} of model {@code model} (DARE stream 0). */
    static int draw24(long seed, long tensorKey, long index, int model) {
        return draw24(seed, tensorKey, index, model, 0);
    }

    /** The 24 random bits in a stream (0: DARE, 1: DELLA). */
    static int draw24(long seed, long tensorKey, long index, int model, int stream) {
        long key = splitmix64(splitmix64(tensorKey) ^ seed);
        long blk = index >>> 2;
        int[] r = block(new int[] {(int) blk, (int) (blk >>> 32), model, stream}, (int) key, (int) (key >>> 32));
        return r[(int) (index & 3)] >>> 8;
    }

    /** Keep decision: draw < ceil(density * 2^24). */
    static boolean keep(long seed, long tensorKey, long index, int model, double density) {
        long limit = (long) Math.ceil(density * 16777216.0);
        return draw24(seed, tensorKey, index, model) < limit;
    }
}
