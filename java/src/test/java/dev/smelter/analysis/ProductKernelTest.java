package dev.smelter.analysis;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.smelter.Context;
import dev.smelter.DType;
import dev.smelter.Device;
import dev.smelter.Matrix;
import dev.smelter.Smelter;
import dev.smelter.SmelterException;
import dev.smelter.Tensor;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.SplittableRandom;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;

/** smelter_product and smelter_column_stats against float64 sums of the dtype-rounded inputs. */
class ProductKernelTest {
    static Stream<Arguments> shapes() {
        // rows, x cols, y cols: odd, at and across the 64-wide tiles and the 256-deep blocks
        return Stream.of(Arguments.of(1, 1, 1), Arguments.of(7, 3, 5), Arguments.of(257, 65, 63),
                Arguments.of(513, 130, 1), Arguments.of(300, 64, 128));
    }

    @ParameterizedTest
    @MethodSource("shapes")
    void columnAndRowProductsMatchFloat64(int rows, int dx, int dy) {
        for (DType tx : DType.values())
            for (DType ty : DType.values()) {
                if (tx != ty && tx != DType.F32) continue;  // mixed pairs: f32 with each
                check(rows, dx, dy, tx, ty, 1);
                check(rows, dx, dy, tx, ty, 2);
            }
    }

    private static void check(int rows, int dx, int dy, DType tx, DType ty, int threads) {
        SplittableRandom r = new SplittableRandom(rows * 31L + dx * 7L + dy + tx.ordinal() * 3L + ty.ordinal());
        try (Arena arena = Arena.ofConfined(); Context ctx = Smelter.openCpu(threads)) {
            double[][] x = random(r, rows, dx, 2.0, 0.5), y = random(r, rows, dy, -1.0, 3.0);
            Matrix mx = matrix(arena, tx, x), my = matrix(arena, ty, y);
            x = read(mx);
            y = read(my);
            float[] sx = floats(r, dx, 2.0), sy = floats(r, dy, -1.0), w = floats(r, rows, 0.0);
            for (int i = 0; i < w.length; i += 3) w[i] = 0;
            Tensor out = Tensor.allocate(arena, DType.F32, (long) dx * dy);
            ctx.columnProduct(mx, sx, my, sy, w, out, false);
            for (int i = 0; i < dx; i++)
                for (int j = 0; j < dy; j++) {
                    double e = 0, mag = 0;
                    for (int k = 0; k < rows; k++) {
                        double a = (float) ((float) x[k][i] - sx[i]) * w[k], b = (float) ((float) y[k][j] - sy[j]);
                        e += a * b;
                        mag += Math.abs(a * b);
                    }
                    assertClose(e, out.getFloat((long) i * dy + j), mag, "column product " + tx + "/" + ty + " [" + i + "][" + j + "]");
                }
            // in f64: shifted in f64 (exact here), multiplied and summed in f64
            MemorySegment out64 = arena.allocate((long) dx * dy * Double.BYTES, Double.BYTES);
            ctx.columnProductF64(mx, sx, my, sy, w, out64, false);
            for (int i = 0; i < dx; i++)
                for (int j = 0; j < dy; j++) {
                    double e = 0, mag = 0;
                    for (int k = 0; k < rows; k++) {
                        double a = (x[k][i] - sx[i]) * w[k], b = y[k][j] - sy[j];
                        e += a * b;
                        mag += Math.abs(a * b);
                    }
                    double got = out64.getAtIndex(ValueLayout.JAVA_DOUBLE, (long) i * dy + j);
                    assertTrue(Math.abs(e - got) <= 1e-13 * mag + 1e-300,
                            "f64 column product " + tx + "/" + ty + " [" + i + "][" + j + "]: " + got + " vs " + e);
                }
            double first = out64.getAtIndex(ValueLayout.JAVA_DOUBLE, 0);
            ctx.columnProductF64(mx, sx, my, sy, w, out64, true);
            assertEquals(2 * first, out64.getAtIndex(ValueLayout.JAVA_DOUBLE, 0), 0.0, "f64 accumulate");

            // accumulate adds to what is there
            float before = out.getFloat(0);
            ctx.columnProduct(mx, sx, my, sy, w, out, true);
            assertEquals(2 * before, out.getFloat(0), Math.abs(before) * 1e-6 + 1e-30);

            Tensor gram = Tensor.allocate(arena, DType.F32, (long) rows * rows);
            Matrix mxt = matrix(arena, tx, random(r, rows, dx, 1.0, 1.0));
            double[][] xt = read(mxt);
            ctx.rowProduct(mxt, sx, mxt, sx, gram, false);
            for (int a = 0; a < rows; a += Math.max(1, rows / 17))
                for (int b = 0; b < rows; b++) {
                    double e = 0, mag = 0;
                    for (int i = 0; i < dx; i++) {
                        double p = (float) ((float) xt[a][i] - sx[i]) * (double) (float) ((float) xt[b][i] - sx[i]);
                        e += p;
                        mag += Math.abs(p);
                    }
                    assertClose(e, gram.getFloat((long) a * rows + b), mag, "gram [" + a + "][" + b + "]");
                }
            MemorySegment gram64 = arena.allocate((long) rows * rows * Double.BYTES, Double.BYTES);
            ctx.rowProductF64(mxt, sx, mxt, sx, gram64, false);
            for (int a = 0; a < rows; a += Math.max(1, rows / 17))
                for (int b = 0; b < rows; b++) {
                    double e = 0, mag = 0;
                    for (int i = 0; i < dx; i++) {
                        double p = (xt[a][i] - sx[i]) * (xt[b][i] - sx[i]);
                        e += p;
                        mag += Math.abs(p);
                    }
                    double got = gram64.getAtIndex(ValueLayout.JAVA_DOUBLE, (long) a * rows + b);
                    assertTrue(Math.abs(e - got) <= 1e-13 * mag + 1e-300, "f64 gram [" + a + "][" + b + "]: " + got + " vs " + e);
                }

            double[] sums = new double[dx];
            long[] positive = new long[dx];
            ctx.columnStats(mx, sx, w, sums, positive);
            for (int i = 0; i < dx; i++) {
                double e = 0;
                long c = 0;
                for (int k = 0; k < rows; k++) {
                    if (w[k] == 0) continue;
                    e += (x[k][i] - sx[i]) * w[k];  // in f64, the shift exact
                    if (x[k][i] > 0) c++;
                }
                assertEquals(e, sums[i], 1e-13 * (1 + Math.abs(e)), "column sum " + i);
                assertEquals(c, positive[i], "positive count " + i);
            }
        }
    }

    @Test
    void resultsDoNotDependOnTheThreadCount() {
        SplittableRandom r = new SplittableRandom(5);
        try (Arena arena = Arena.ofConfined(); Context one = Smelter.openCpu(1);
                Context two = Smelter.openCpu(2)) {
            Matrix x = matrix(arena, DType.BF16, random(r, 1000, 200, 0.5, 1.0));
            Tensor a = Tensor.allocate(arena, DType.F32, 200 * 200), b = Tensor.allocate(arena, DType.F32, 200 * 200);
            one.columnProduct(x, null, x, null, null, a, false);
            two.columnProduct(x, null, x, null, null, b, false);
            assertArrayEquals(a.toFloatArray(), b.toFloatArray());
            MemorySegment a64 = arena.allocate(200 * 200 * 8, 8), b64 = arena.allocate(200 * 200 * 8, 8);
            one.columnProductF64(x, null, x, null, null, a64, false);
            two.columnProductF64(x, null, x, null, null, b64, false);
            assertArrayEquals(a64.toArray(ValueLayout.JAVA_DOUBLE), b64.toArray(ValueLayout.JAVA_DOUBLE));
            double[] s1 = new double[200], s2 = new double[200];
            one.columnStats(x, null, null, s1, null);
            two.columnStats(x, null, null, s2, null);
            assertArrayEquals(s1, s2);
        }
    }

    /**
     * Rows a zero weight leaves out are not read into the arithmetic: infinities and NaNs there (an f16 dump's
     * BOS rows) leave the column product and the column statistics exactly those of the kept rows alone.
     */
    @Test
    void rowsWithZeroWeightAreNotRead() {
        SplittableRandom r = new SplittableRandom(23);
        int rows = 700, dx = 70, dy = 5;
        try (Arena arena = Arena.ofConfined(); Context ctx = Smelter.open(Device.cpu())) {
            for (DType dtype : DType.values()) {
                double[][] x = random(r, rows, dx, 1.0, 1.0), y = random(r, rows, dy, -2.0, 1.0);
                float[] w = new float[rows];
                int kept = 0;
                for (int i = 0; i < rows; i++) {
                    w[i] = i % 10 < 3 ? 1 + (i % 2) : 0;
                    if (w[i] != 0) kept++;
                }
                double[][] xk = new double[kept][], yk = new double[kept][];
                float[] wk = new float[kept];
                for (int i = 0, k = 0; i < rows; i++)
                    if (w[i] != 0) {
                        xk[k] = x[i];
                        yk[k] = y[i];
                        wk[k++] = w[i];
                    } else {  // what an excluded row may hold
                        double bad = i % 3 == 0 ? Double.POSITIVE_INFINITY : i % 3 == 1 ? Double.NEGATIVE_INFINITY : Double.NaN;
                        x[i][i % dx] = bad;
                        y[i][i % dy] = bad;
                        x[i][(i + 1) % dx] = 1e30;  // infinite in f16 and bf16 once squared
                    }
                Matrix mx = matrix(arena, dtype, x), my = matrix(arena, dtype, y);
                Matrix kx = matrix(arena, dtype, xk), ky = matrix(arena, dtype, yk);
                float[] sx = floats(r, dx, 1.0), sy = floats(r, dy, -2.0);
                Tensor all = Tensor.allocate(arena, DType.F32, (long) dx * dy), only = Tensor.allocate(arena, DType.F32, (long) dx * dy);
                ctx.columnProduct(mx, sx, my, sy, w, all, false);
                ctx.columnProduct(kx, sx, ky, sy, wk, only, false);
                assertArrayEquals(only.toFloatArray(), all.toFloatArray(), "column product, " + dtype);
                Tensor self = Tensor.allocate(arena, DType.F32, (long) dx * dx), selfOnly = Tensor.allocate(arena, DType.F32, (long) dx * dx);
                ctx.columnProduct(mx, sx, mx, sx, w, self, false);
                ctx.columnProduct(kx, sx, kx, sx, wk, selfOnly, false);
                assertArrayEquals(selfOnly.toFloatArray(), self.toFloatArray(), "x with itself, " + dtype);
                MemorySegment all64 = arena.allocate((long) dx * dy * 8, 8), only64 = arena.allocate((long) dx * dy * 8, 8);
                ctx.columnProductF64(mx, sx, my, sy, w, all64, false);
                ctx.columnProductF64(kx, sx, ky, sy, wk, only64, false);
                assertArrayEquals(only64.toArray(ValueLayout.JAVA_DOUBLE), all64.toArray(ValueLayout.JAVA_DOUBLE), "f64, " + dtype);
                double[] sums = new double[dx], sumsOnly = new double[dx];
                long[] pos = new long[dx], posOnly = new long[dx];
                ctx.columnStats(mx, sx, w, sums, pos);
                ctx.columnStats(kx, sx, wk, sumsOnly, posOnly);
                for (int i = 0; i < dx; i++)  // rows are summed in blocks, so the order (not the terms) differs
                    assertEquals(sumsOnly[i], sums[i], 1e-12 * (1 + Math.abs(sumsOnly[i])), "column sum " + i + ", " + dtype);
                assertArrayEquals(posOnly, pos, "positive counts, " + dtype);
            }
        }
    }

    @Test
    void badShapesAreRejectedWithTheReason() {
        try (Arena arena = Arena.ofConfined(); Context ctx = Smelter.open(Device.cpu())) {
            Matrix x = matrix(arena, DType.F32, random(new SplittableRandom(1), 4, 3, 0, 1));
            Matrix y = matrix(arena, DType.F32, random(new SplittableRandom(2), 5, 3, 0, 1));
            Tensor out = Tensor.allocate(arena, DType.F32, 9);
            SmelterException e = assertThrows(SmelterException.class, () -> ctx.columnProduct(x, null, y, null, null, out, false));
            assertTrue(e.getMessage().contains("x has 4 rows, y has 5"), e.getMessage());
            Tensor small = Tensor.allocate(arena, DType.F32, 8);
            e = assertThrows(SmelterException.class, () -> ctx.columnProduct(x, null, x, null, null, small, false));
            assertTrue(e.getMessage().contains("out has 8 elements"), e.getMessage());
            Tensor half = Tensor.allocate(arena, DType.BF16, 9);
            e = assertThrows(SmelterException.class, () -> ctx.columnProduct(x, null, x, null, null, half, false));
            assertTrue(e.getMessage().contains("out must be f32"), e.getMessage());
            assertThrows(IllegalArgumentException.class, () -> ctx.columnProduct(x, new float[2], x, null, null, out, false));
        }
    }

    static void assertClose(double expected, float actual, double magnitude, String what) {
        // f32 accumulation: error grows with the sum of |terms|, not with the (possibly cancelled) result
        double tol = 2e-6 * magnitude + 1e-30;
        assertTrue(Math.abs(expected - actual) <= tol, what + ": " + actual + " vs " + expected + " (tol " + tol + ")");
    }

    static double[][] random(SplittableRandom r, int rows, int cols, double mean, double std) {
        double[][] a = new double[rows][cols];
        for (double[] row : a)
            for (int j = 0; j < cols; j++) row[j] = mean + std * (r.nextDouble() * 2 - 1) * 1.7;
        return a;
    }

    static float[] floats(SplittableRandom r, int n, double mean) {
        float[] a = new float[n];
        for (int i = 0; i < n; i++) a[i] = (float) (mean + r.nextDouble() - 0.5);
        return a;
    }

    static Matrix matrix(Arena arena, DType dtype, double[][] a) {
        int rows = a.length, cols = rows == 0 ? 0 : a[0].length;
        Tensor t = Tensor.allocate(arena, dtype, (long) rows * cols);
        for (int i = 0; i < rows; i++)
            for (int j = 0; j < cols; j++) {
                long at = (long) i * cols + j;
                float v = (float) a[i][j];
                switch (dtype) {
                    case F32 -> t.data().setAtIndex(ValueLayout.JAVA_FLOAT, at, v);
                    case F16 -> t.data().setAtIndex(ValueLayout.JAVA_SHORT, at, Float.floatToFloat16(v));
                    case BF16 -> t.data().setAtIndex(ValueLayout.JAVA_SHORT, at, (short) bf16(v));
                }
            }
        return new Matrix(t, rows, cols);
    }

    static double[][] read(Matrix m) {
        double[][] a = new double[(int) m.rows()][(int) m.cols()];
        for (int i = 0; i < a.length; i++)
            for (int j = 0; j < a[i].length; j++) a[i][j] = m.tensor().getFloat((long) i * m.cols() + j);
        return a;
    }

    private static int bf16(float f) {  // round to nearest even
        int b = Float.floatToRawIntBits(f);
        return (b + 0x7FFF + ((b >>> 16) & 1)) >>> 16;
    }
}
