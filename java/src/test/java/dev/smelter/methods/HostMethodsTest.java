package dev.smelter.methods;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.smelter.Context;
import dev.smelter.DType;
import dev.smelter.Device;
import dev.smelter.Smelter;
import dev.smelter.Tensor;
import java.lang.foreign.Arena;
import java.math.BigDecimal;
import java.util.List;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;

/** Edge cases of the Java-computed methods: rounding, NaN, 3-D shapes, colinear vectors, thread independence. */
class HostMethodsTest {
    static Tensor tensor(Arena arena, DType dtype, double... values) {
        Tensor t = Tensor.allocate(arena, dtype, values.length);
        for (int i = 0; i < values.length; i++) t.setFloat(i, (float) values[i]);
        return t;
    }

    /** The one rounding: double to bf16 and f16 through f32 rounded to odd equals rounding the exact value directly. */
    @Test
    void storeRoundsOnceToNearestEven() {
        SplittableRandom r = new SplittableRandom(5);
        try (Arena arena = Arena.ofConfined()) {
            for (DType dtype : new DType[] {DType.BF16, DType.F16}) {
                Tensor out = Tensor.allocate(arena, dtype, 1);
                int bits = dtype == DType.BF16 ? 8 : 11;
                for (int k = 0; k < 200_000; k++) {
                    // Values just beside a tie of the 16-bit type, where rounding twice through f32 (nearest) fails.
                    double m = 1 + r.nextInt(1 << (bits - 1)) / (double) (1 << (bits - 1));
                    double tie = m + Math.scalb(1.0, -bits);
                    double v = (tie + (r.nextBoolean() ? 1 : -1) * Math.scalb(1.0, -30 - r.nextInt(20)))
                            * Math.scalb(1.0, r.nextInt(10) - 5) * (r.nextBoolean() ? 1 : -1);
                    HostArithmetic.store(out, 0, v);
                    double got = out.getFloat(0);
                    BigDecimal exact = new BigDecimal(v);
                    // The nearest representable value: neither neighbour of got is closer to v.
                    float g = (float) got;
                    double below = dtype == DType.BF16 ? bf16Next(g, -1) : f16Next(g, -1);
                    double above = dtype == DType.BF16 ? bf16Next(g, 1) : f16Next(g, 1);
                    BigDecimal e = exact.subtract(new BigDecimal(got)).abs();
                    assertTrue(e.compareTo(exact.subtract(new BigDecimal(below)).abs()) <= 0
                            && e.compareTo(exact.subtract(new BigDecimal(above)).abs()) <= 0, dtype + " " + v + " -> " + got);
                }
            }
        }
    }

    private static double bf16Next(float f, int dir) {
        int b = Float.floatToRawIntBits(f) >>> 16;
        int n = f == 0 ? (dir > 0 ? 1 : 0x8001) : ((f > 0) == (dir > 0) ? b + 1 : b - 1);
        return Float.intBitsToFloat(n << 16);
    }

    private static double f16Next(float f, int dir) {
        short h = Float.floatToFloat16(f);
        int n = f == 0 ? (dir > 0 ? 1 : 0x8001) : ((f > 0) == (dir > 0) ? h + 1 : h - 1);
        return Float.float16ToFloat((short) n);
    }

    @Test
    void nanInputsGiveNanWhereMergekitsDo() {
        try (Arena arena = Arena.ofConfined(); Context ctx = Smelter.open(Device.cpu())) {
            Tensor base = tensor(arena, DType.F32, 1, 2, 3, 4);
            Tensor a = tensor(arena, DType.F32, 1.5, Double.NaN, 3, 4), b = tensor(arena, DType.F32, 1, 2, 3.5, Double.POSITIVE_INFINITY);
            Tensor out = Tensor.allocate(arena, DType.F32, 4);
            // ram: a NaN delta is never dropped (NaN times its mask is NaN); an infinite one is NaN too (inf * 0).
            Context.MergeCounts c = RamMerge.ram(1e-5).merge(ctx, base, List.of(a, b), new long[] {4}, out);
            assertEquals(1.5, out.getFloat(0));
            assertTrue(Float.isNaN(out.getFloat(1)));
            assertEquals(3.5, out.getFloat(2));
            assertTrue(Float.isNaN(out.getFloat(3)));
            assertEquals(2, c.nonFinite());
            // nearswap: NaN where either input is NaN, elsewhere the formula.
            NearSwap.merge(0.25, base, List.of(a), out);
            assertEquals(1.25, out.getFloat(0));
            assertTrue(Float.isNaN(out.getFloat(1)));
            // arcee_fusion: a NaN anywhere makes the whole tensor NaN (its quantiles mean nothing).
            c = ArceeFusion.merge(ctx, base, List.of(a), new long[] {2, 2}, out);
            assertEquals(4, c.nonFinite());
            // model_stock rows: only the row holding the NaN.
            Tensor c2 = tensor(arena, DType.F32, 1.25, 2.5, 2.5, 4.25);
            c = ModelStockRows.of("x").merge(ctx, base, List.of(a, c2), new long[] {2, 2}, out);
            assertTrue(Float.isNaN(out.getFloat(0)) && Float.isNaN(out.getFloat(1)));
            assertTrue(Float.isFinite(out.getFloat(2)) && Float.isFinite(out.getFloat(3)));
            assertEquals(2, c.nonFinite());
        }
    }

    @Test
    void nuslerpOfColinearVectorsIsLinearAndOfOrthogonalOnesIsSpherical() {
        try (Arena arena = Arena.ofConfined(); Context ctx = Smelter.open(Device.cpu())) {
            // Rows: [1, 0] with [2, 0] (colinear: linear), [0, 1] with [1, 0] (orthogonal: sin-weighted).
            Tensor x0 = tensor(arena, DType.F32, 1, 0, 0, 1), x1 = tensor(arena, DType.F32, 2, 0, 1, 0);
            Tensor out = Tensor.allocate(arena, DType.F32, 4);
            NuSlerp.perVector(0.25, false).merge(ctx, null, List.of(x0, x1), new long[] {2, 2}, out);
            assertEquals(1.25, out.getFloat(0), 1e-7);
            assertEquals(0, out.getFloat(1), 1e-7);
            assertEquals(Math.sin(Math.PI / 8), out.getFloat(2), 1e-7);
            assertEquals(Math.cos(Math.PI / 8), out.getFloat(3), 1e-7);
            // Zero vectors are not normalized (norm floor 1e-7): cos 0, theta pi/2.
            Tensor zero = tensor(arena, DType.F32, 0, 0, 0, 0);
            NuSlerp.perVector(0.5, false).merge(ctx, null, List.of(zero, x1), new long[] {4}, out);
            assertEquals(2 * Math.sin(Math.PI / 4), out.getFloat(0), 1e-7);
        }
    }

    /** A 3-D tensor: rows are the last dimension, row_wise vectors run along the first (torch's transpose(0, -1)). */
    @Test
    void nuslerpThreeDimensionalShapes() {
        SplittableRandom r = new SplittableRandom(11);
        long[] shape = {3, 4, 5};
        int n = 60;
        double[] v0 = new double[n], v1 = new double[n];
        for (int i = 0; i < n; i++) {
            v0[i] = (float) r.nextGaussian();
            v1[i] = (float) r.nextGaussian();
        }
        try (Arena arena = Arena.ofConfined(); Context ctx = Smelter.open(Device.cpu())) {
            Tensor x0 = tensor(arena, DType.F32, v0), x1 = tensor(arena, DType.F32, v1);
            Tensor out = Tensor.allocate(arena, DType.F32, n);
            for (boolean rowWise : new boolean[] {false, true}) {
                NuSlerp.perVector(0.3, rowWise).merge(ctx, null, List.of(x0, x1), shape, out);
                // Vector of element (i, j, k): (i, j) per row; (j, k) along the first dimension.
                for (int i = 0; i < 3; i++)
                    for (int j = 0; j < 4; j++)
                        for (int k = 0; k < 5; k++) {
                            int e = (i * 4 + j) * 5 + k;
                            double dot = 0, n0 = 0, n1 = 0;
                            for (int m = 0; m < (rowWise ? 3 : 5); m++) {
                                int f = rowWise ? (m * 4 + j) * 5 + k : (i * 4 + j) * 5 + m;
                                dot += v0[f] * v1[f];
                                n0 += v0[f] * v0[f];
                                n1 += v1[f] * v1[f];
                            }
                            double theta = Math.acos(dot / Math.sqrt(n0) / Math.sqrt(n1));
                            double expect = (Math.sin(0.7 * theta) * v0[e] + Math.sin(0.3 * theta) * v1[e]) / Math.sin(theta);
                            assertEquals(expect, out.getFloat(e), 1e-6 * (1 + Math.abs(expect)), "row_wise " + rowWise + " at " + e);
                        }
            }
        }
    }

    /** Blocks are fixed: the same output whatever the parallelism (here: a tensor of many blocks, run twice). */
    @Test
    void resultsDoNotDependOnTheThreads() throws Exception {
        int n = (int) HostArithmetic.BLOCK * 5 + 17;
        SplittableRandom r = new SplittableRandom(3);
        double[] b = new double[n], x = new double[n], y = new double[n];
        for (int i = 0; i < n; i++) {
            b[i] = r.nextGaussian() * 0.02;
            x[i] = b[i] + r.nextGaussian() * 0.001;
            y[i] = b[i] + r.nextGaussian() * 0.001;
        }
        try (Arena arena = Arena.ofShared(); Context ctx = Smelter.open(Device.cpu())) {  // any thread may read
            Tensor base = tensor(arena, DType.BF16, b), m0 = tensor(arena, DType.BF16, x), m1 = tensor(arena, DType.BF16, y);
            Tensor parallel = Tensor.allocate(arena, DType.BF16, n), single = Tensor.allocate(arena, DType.BF16, n);
            HostMerge ram = RamMerge.ramPlus(0.1, 0.2, 5e-4);
            ram.merge(ctx, base, List.of(m0, m1), new long[] {n}, parallel);
            java.util.concurrent.ForkJoinPool one = new java.util.concurrent.ForkJoinPool(1);
            one.submit(() -> ram.merge(ctx, base, List.of(m0, m1), new long[] {n}, single)).get();
            one.shutdown();
            assertEquals(-1, parallel.data().mismatch(single.data()));
        }
    }

    @Test
    void wrongModelCountsAreRefused() {
        try (Arena arena = Arena.ofConfined(); Context ctx = Smelter.open(Device.cpu())) {
            Tensor t = tensor(arena, DType.F32, 1, 2);
            assertThrows(IllegalArgumentException.class, () -> NearSwap.merge(0.1, t, List.of(t, t), t));
            assertThrows(IllegalArgumentException.class,
                    () -> NuSlerp.perVector(0.5, false).merge(ctx, null, List.of(t), new long[] {2}, t));
        }
    }
}
