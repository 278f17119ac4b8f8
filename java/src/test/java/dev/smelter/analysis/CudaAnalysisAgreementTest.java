package dev.smelter.analysis;

import static dev.smelter.analysis.ProductKernelTest.matrix;
import static dev.smelter.analysis.ProductKernelTest.random;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.smelter.Context;
import dev.smelter.DType;
import dev.smelter.Device;
import dev.smelter.Matrix;
import dev.smelter.Smelter;
import dev.smelter.Tensor;
import dev.smelter.TestData;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.SplittableRandom;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

/**
 * The CUDA analysis kernels against the CPU ones. Products accumulate in a different order (and
 * with fused multiply-adds) on the GPU, so they agree to f32 rounding, not bit for bit; positive
 * counts are exact. Skipped, with the reason printed, where no GPU is visible.
 */
class CudaAnalysisAgreementTest {
    @BeforeEach
    void needsCuda() {
        TestData.assumeCuda();
    }

    @Test
    void productsAndColumnStatsAgreeWithTheCpu() {
        SplittableRandom r = new SplittableRandom(9);
        try (Arena arena = Arena.ofConfined(); Context cpu = Smelter.open(Device.cpu());
                Context gpu = Smelter.open(Device.cuda(0))) {
            for (DType dtype : DType.values())
                for (int[] s : new int[][] {{1, 1, 1}, {257, 65, 63}, {4099, 300, 129}}) {
                    int rows = s[0], dx = s[1], dy = s[2];
                    Matrix x = matrix(arena, dtype, random(r, rows, dx, 1.0, 2.0));
                    Matrix y = matrix(arena, dtype, random(r, rows, dy, -3.0, 1.0));
                    float[] w = new float[rows], sx = new float[dx];
                    for (int i = 0; i < rows; i++) w[i] = i % 5 == 0 ? 0 : 1 + (i % 3);
                    for (int i = 0; i < dx; i++) sx[i] = 1.0f + i * 1e-3f;
                    Tensor a = Tensor.allocate(arena, DType.F32, (long) dx * dy), b = Tensor.allocate(arena, DType.F32, (long) dx * dy);
                    cpu.columnProduct(x, sx, y, null, w, a, false);
                    gpu.columnProduct(x, sx, y, null, w, b, false);
                    assertAllClose(a, b, "column product " + dtype + " " + rows);
                    Tensor ga = Tensor.allocate(arena, DType.F32, (long) rows * rows), gb = Tensor.allocate(arena, DType.F32, (long) rows * rows);
                    cpu.rowProduct(x, sx, x, sx, ga, false);
                    gpu.rowProduct(x, sx, x, sx, gb, false);
                    assertAllClose(ga, gb, "gram " + dtype + " " + rows);
                    MemorySegment a64 = arena.allocate((long) dx * dy * 8, 8), b64 = arena.allocate((long) dx * dy * 8, 8);
                    cpu.columnProductF64(x, sx, y, null, w, a64, false);
                    gpu.columnProductF64(x, sx, y, null, w, b64, false);
                    assertAllClose64(a64, b64, "f64 column product " + dtype + " " + rows);
                    MemorySegment g64 = arena.allocate((long) rows * rows * 8, 8), h64 = arena.allocate((long) rows * rows * 8, 8);
                    cpu.rowProductF64(x, sx, x, sx, g64, false);
                    gpu.rowProductF64(x, sx, x, sx, h64, false);
                    assertAllClose64(g64, h64, "f64 gram " + dtype + " " + rows);
                    double[] sa = new double[dx], sb = new double[dx];
                    long[] pa = new long[dx], pb = new long[dx];
                    cpu.columnStats(x, sx, w, sa, pa);
                    gpu.columnStats(x, sx, w, sb, pb);
                    assertArrayEquals(pa, pb, "positive counts " + dtype);
                    for (int i = 0; i < dx; i++) assertEquals(sa[i], sb[i], 1e-12 * (1 + Math.abs(sa[i])), "sum " + i);
                }
            // device-resident operands and output, accumulating
            Matrix x = matrix(arena, DType.BF16, random(r, 1000, 64, 0.0, 1.0));
            Tensor dx = gpu.allocate(DType.BF16, x.tensor().count(), Tensor.Memory.DEVICE);
            Tensor dout = gpu.allocate(DType.F32, 64 * 64, Tensor.Memory.DEVICE);
            try {
                gpu.copy(dx, x.tensor());
                Matrix dm = new Matrix(dx, 1000, 64);
                gpu.columnProduct(dm, null, dm, null, null, dout, false);
                gpu.columnProduct(dm, null, dm, null, null, dout, true);
                Tensor back = Tensor.allocate(arena, DType.F32, 64 * 64), ref = Tensor.allocate(arena, DType.F32, 64 * 64);
                gpu.copy(back, dout);
                gpu.synchronize();
                cpu.columnProduct(x, null, x, null, null, ref, false);
                for (int i = 0; i < 64 * 64; i++) assertEquals(2 * ref.getFloat(i), back.getFloat(i), 1e-3 * (1 + Math.abs(ref.getFloat(i))));
                assertEquals(Cka.feature(cpu, x, x, null), Cka.feature(gpu, dm, dm, null), 1e-12);
            } finally {
                gpu.free(dx);
                gpu.free(dout);
            }
        }
    }

    /** Rows a zero weight leaves out hold infinities and NaN (an f16 dump's BOS): the GPU does not read them either. */
    @Test
    void rowsWithZeroWeightAreNotRead() {
        SplittableRandom r = new SplittableRandom(12);
        try (Arena arena = Arena.ofConfined(); Context cpu = Smelter.open(Device.cpu());
                Context gpu = Smelter.open(Device.cuda(0))) {
            for (DType dtype : DType.values()) {
                int rows = 3001, dx = 70, dy = 33;
                double[][] x0 = random(r, rows, dx, 1.0, 2.0), y0 = random(r, rows, dy, -3.0, 1.0);
                float[] w = new float[rows];
                for (int i = 0; i < rows; i++) {
                    w[i] = i % 5 == 0 ? 0 : 1;
                    if (w[i] == 0) {
                        x0[i][i % dx] = Double.POSITIVE_INFINITY;
                        y0[i][i % dy] = Double.NaN;
                    }
                }
                Matrix x = matrix(arena, dtype, x0), y = matrix(arena, dtype, y0);
                Tensor a = Tensor.allocate(arena, DType.F32, (long) dx * dy), b = Tensor.allocate(arena, DType.F32, (long) dx * dy);
                cpu.columnProduct(x, null, y, null, w, a, false);
                gpu.columnProduct(x, null, y, null, w, b, false);
                for (long i = 0; i < a.count(); i++) assertTrue(Float.isFinite(b.getFloat(i)), "cuda [" + i + "]: " + b.getFloat(i));
                assertAllClose(a, b, "masked column product " + dtype);
                assertEquals(Cka.feature(cpu, x, y, w), Cka.feature(gpu, x, y, w), 1e-12, "masked CKA " + dtype);
            }
        }
    }

    // f64 products: the GPU sums in another order, so they agree to f64 rounding of the largest entries.
    private static void assertAllClose64(MemorySegment a, MemorySegment b, String what) {
        double[] x = a.toArray(ValueLayout.JAVA_DOUBLE), y = b.toArray(ValueLayout.JAVA_DOUBLE);
        double scale = 0;
        for (double v : x) scale = Math.max(scale, Math.abs(v));
        for (int i = 0; i < x.length; i++)
            assertTrue(Math.abs(x[i] - y[i]) <= 1e-12 * scale + 1e-300, what + " [" + i + "]: cpu " + x[i] + ", cuda " + y[i]);
    }

    private static void assertAllClose(Tensor a, Tensor b, String what) {
        double scale = 0;
        for (long i = 0; i < a.count(); i++) scale = Math.max(scale, Math.abs(a.getFloat(i)));
        for (long i = 0; i < a.count(); i++)
            assertTrue(Math.abs(a.getFloat(i) - b.getFloat(i)) <= 1e-5 * scale + 1e-30,
                    what + " [" + i + "]: cpu " + a.getFloat(i) + ", cuda " + b.getFloat(i));
    }
}
