package dev.smelter.methods;

import dev.smelter.Context;
import dev.smelter.DType;
import dev.smelter.Tensor;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.List;
import java.util.stream.LongStream;

/**
 * The arithmetic of {@link HostMerge} methods: f64 values out of host tensors, the one rounding into the output
 * dtype, the layout of rows and columns, and a parallel loop over fixed blocks.
 */
final class HostArithmetic {
    private HostArithmetic() {}

    /** Elements per block of the parallel loops: fixed, so that a block's work never depends on the thread count. */
    static final long BLOCK = 1 << 15;

    static void requireHost(Tensor base, List<Tensor> models, Tensor out) {
        if (base != null && base.memory() != Tensor.Memory.HOST || out.memory() != Tensor.Memory.HOST
                || models.stream().anyMatch(m -> m.memory() != Tensor.Memory.HOST))
            throw new IllegalArgumentException("this merge method runs on host tensors");
        for (Tensor m : models)
            if (m.count() != out.count() || base != null && base.count() != out.count())
                throw new IllegalArgumentException("the inputs hold " + m.count() + " elements and the output "
                        + out.count());
    }

    /**
     * Stores {@code v} into element {@code i} of {@code out}, correctly rounded to nearest even in its dtype (for 16-bit
     * dtypes through f32 rounded to odd, which makes the second rounding exact); returns 1 if the stored value is
     * NaN or infinite, else 0.
     */
    static long store(Tensor out, long i, double v) {
        float f = out.dtype() == DType.F32 ? (float) v : roundToOdd(v);
        out.setFloat(i, f);
        return Float.isFinite(out.dtype() == DType.F32 ? f : out.getFloat(i)) ? 0 : 1;
    }

    /**
     * Arrays of {@link #BLOCK} elements for one block's loads and stores, kept per thread: a fresh set per block would
     * allocate gigabytes over a large tensor.
     */
    static final class Scratch {
        private static final ThreadLocal<Scratch> OF_THREAD = ThreadLocal.withInitial(Scratch::new);

        final short[] shorts = new short[(int) BLOCK];
        final double[] values = new double[(int) BLOCK];
        private float[][] floats = new float[0][];

        static Scratch get() {
            return OF_THREAD.get();
        }

        /** At least {@code count} float arrays of a block each. */
        float[][] floats(int count) {
            if (floats.length < count) {
                float[][] more = java.util.Arrays.copyOf(floats, count);
                for (int i = floats.length; i < count; i++) more[i] = new float[(int) BLOCK];
                floats = more;
            }
            return floats;
        }
    }

    /**
     * Elements [from, from + n) of a host tensor as floats into {@code dst} (exact for every dtype): one bulk copy out
     * of the segment and a conversion loop the JIT vectorises, where {@link Tensor#getFloat} per element is several
     * times slower.
     */
    static void load(Tensor t, long from, int n, float[] dst, short[] scratch) {
        switch (t.dtype()) {
            case F32 -> MemorySegment.copy(t.data(), ValueLayout.JAVA_FLOAT_UNALIGNED, from * 4, dst, 0, n);
            case BF16 -> {
                MemorySegment.copy(t.data(), ValueLayout.JAVA_SHORT_UNALIGNED, from * 2, scratch, 0, n);
                for (int i = 0; i < n; i++) dst[i] = Float.intBitsToFloat((scratch[i] & 0xFFFF) << 16);
            }
            case F16 -> {
                MemorySegment.copy(t.data(), ValueLayout.JAVA_SHORT_UNALIGNED, from * 2, scratch, 0, n);
                for (int i = 0; i < n; i++) dst[i] = Float.float16ToFloat(scratch[i]);
            }
        }
    }

    /**
     * {@link #store} of {@code v[0..n)} into elements [from, from + n) of {@code out}, the same rounding bit for bit,
     * converted in a loop and written with one bulk copy; returns how many stored values are NaN or infinite.
     */
    static long storeAll(Tensor out, long from, int n, double[] v, float[] f, short[] scratch) {
        long bad = 0;
        switch (out.dtype()) {
            case F32 -> {
                for (int i = 0; i < n; i++) {
                    f[i] = (float) v[i];
                    if (!Float.isFinite(f[i])) bad++;
                }
                MemorySegment.copy(f, 0, out.data(), ValueLayout.JAVA_FLOAT_UNALIGNED, from * 4, n);
            }
            case BF16 -> {
                for (int i = 0; i < n; i++) {
                    short h = DType.bfloat16Bits(roundToOdd(v[i]));
                    scratch[i] = h;
                    if ((h & 0x7F80) == 0x7F80) bad++;
                }
                MemorySegment.copy(scratch, 0, out.data(), ValueLayout.JAVA_SHORT_UNALIGNED, from * 2, n);
            }
            case F16 -> {
                for (int i = 0; i < n; i++) {
                    short h = Float.floatToFloat16(roundToOdd(v[i]));
                    scratch[i] = h;
                    if ((h & 0x7C00) == 0x7C00) bad++;
                }
                MemorySegment.copy(scratch, 0, out.data(), ValueLayout.JAVA_SHORT_UNALIGNED, from * 2, n);
            }
        }
        return bad;
    }

    /** {@code v} rounded to f32 by rounding to odd: the f32 neighbour with an odd significand when v lies between two. */
    static float roundToOdd(double v) {
        float f = (float) v;
        if (Double.isNaN(v) || Float.isInfinite(f) || f == v || (Float.floatToRawIntBits(f) & 1) != 0) return f;
        return v > f ? Math.nextUp(f) : Math.nextDown(f);
    }

    /** A body over the elements [from, to), returning its non-finite outputs. */
    @FunctionalInterface
    interface Range {
        long run(long from, long to);
    }

    /** A thread that never runs: a segment it may access is one any thread may (not confined to its owner). */
    private static final Thread ANY_THREAD = new Thread(() -> {});

    /**
     * Runs {@code body} over [0, n) in blocks of {@code block} units, in parallel where every tensor it touches may be
     * read by any thread (Smelter's buffers; a confined arena's are read by its owner only); the sum of what they
     * return. The blocks are the same either way, so the result does not depend on the threads.
     */
    static long parallel(List<Tensor> touched, long n, long block, Range body) {
        long blocks = (n + block - 1) / block;
        LongStream s = LongStream.range(0, blocks);
        boolean shared = touched.stream().allMatch(t -> t == null || t.data().isAccessibleBy(ANY_THREAD));
        return (shared ? s.parallel() : s).map(b -> body.run(b * block, Math.min(n, (b + 1) * block))).sum();
    }

    /** The tensors of a merge, for {@link #parallel}. */
    static List<Tensor> all(Tensor base, List<Tensor> models, Tensor... more) {
        List<Tensor> t = new java.util.ArrayList<>(models);
        t.add(base);
        t.addAll(java.util.Arrays.asList(more));
        return t;
    }

    /** The last dimension of {@code shape} (the whole tensor for a 1-D one): mergekit's {@code dim=-1} rows. */
    static long rowLength(long[] shape, long count) {
        return shape.length >= 2 ? shape[shape.length - 1] : count;
    }

    static Context.MergeCounts counts(long nonFinite) {
        return new Context.MergeCounts(0, 0, 0, nonFinite);
    }
}
