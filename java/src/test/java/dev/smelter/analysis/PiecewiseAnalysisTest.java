package dev.smelter.analysis;

import static dev.smelter.analysis.ProductKernelTest.floats;
import static dev.smelter.analysis.ProductKernelTest.matrix;
import static dev.smelter.analysis.ProductKernelTest.random;
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
import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;

/**
 * Products and column statistics over a memory limit run in blocks of the output (whole 64-wide tiles of
 * columns, every row of the reduction): each output entry is then summed exactly as in one piece, so the
 * bits must be the same. On CUDA this is how an activation file larger than device memory is analysed.
 */
class PiecewiseAnalysisTest {
    static final int ROWS = 301, DX = 200, DY = 131;  // odd; several 64-wide tiles each way

    static List<Device> devices() {
        List<Device> d = new ArrayList<>(List.of(Device.cpu()));
        if (Smelter.cudaDeviceCount() > 0) d.add(Device.cuda(0));
        return d;
    }

    @Test
    void productsInPiecesAreBitIdenticalToOnePiece() {
        for (Device device : devices())
            for (DType tx : DType.values())
                for (DType ty : new DType[] {tx, DType.F32}) {
                    SplittableRandom r = new SplittableRandom(tx.ordinal() * 7L + ty.ordinal());
                    try (Arena arena = Arena.ofConfined(); Context ctx = Smelter.open(device)) {
                        Matrix x = matrix(arena, tx, random(r, ROWS, DX, 2.0, 1.0));
                        Matrix y = matrix(arena, ty, random(r, ROWS, DY, -1.0, 2.0));
                        float[] sx = floats(r, DX, 2.0), sy = floats(r, DY, -1.0), w = floats(r, ROWS, 1.0);
                        for (int i = 0; i < ROWS; i += 5) w[i] = 0;
                        // Inputs and output of one piece are about 500 KB: a limit of 250 KB needs 4 x 3 blocks
                        // of 64 (the last ones partial); the row products' 300 KB need 2 x 1 to 4 x 2.
                        long limit = 250_000;
                        String what = device + " " + tx + "/" + ty;

                        float[][] f32 = new float[2][];
                        double[][] f64 = new double[2][];
                        float[][] gram = new float[2][];
                        double[][] gram64 = new double[2][];
                        float[][] self = new float[2][];
                        for (int pass = 0; pass < 2; pass++) {
                            ctx.setMemoryLimit(pass == 0 ? 0 : limit);
                            Tensor out = Tensor.allocate(arena, DType.F32, (long) DX * DY);
                            ctx.columnProduct(x, sx, y, sy, w, out, false);
                            ctx.columnProduct(x, sx, y, sy, null, out, true);  // accumulate: added block by block
                            f32[pass] = out.toFloatArray();

                            MemorySegment out64 = arena.allocate((long) DX * DY * 8, 8);
                            ctx.columnProductF64(x, sx, y, sy, w, out64, false);
                            ctx.columnProductF64(x, null, y, sy, null, out64, true);
                            f64[pass] = out64.toArray(ValueLayout.JAVA_DOUBLE);

                            Tensor xx = Tensor.allocate(arena, DType.F32, (long) DX * DX);
                            ctx.columnProduct(x, sx, x, sx, w, xx, false);  // x with itself
                            self[pass] = xx.toFloatArray();

                            Matrix xt = matrix(arena, tx, random(new SplittableRandom(9), 400, 70, 0.5, 1.0));
                            Matrix yt = matrix(arena, ty, random(new SplittableRandom(10), 97, 70, 0.5, 1.0));
                            float[] st = floats(new SplittableRandom(11), 70, 0.5);
                            Tensor g = Tensor.allocate(arena, DType.F32, 400L * 97);
                            ctx.rowProduct(xt, st, yt, null, g, false);
                            ctx.rowProduct(xt, null, yt, st, g, true);
                            gram[pass] = g.toFloatArray();
                            MemorySegment g64 = arena.allocate(400L * 97 * 8, 8);
                            ctx.rowProductF64(xt, st, yt, st, g64, false);
                            gram64[pass] = g64.toArray(ValueLayout.JAVA_DOUBLE);
                        }
                        assertArrayEquals(f32[0], f32[1], what + ": f32 column product in pieces");
                        assertArrayEquals(f64[0], f64[1], what + ": f64 column product in pieces");
                        assertArrayEquals(self[0], self[1], what + ": x with itself in pieces");
                        assertArrayEquals(gram[0], gram[1], what + ": f32 row product in pieces");
                        assertArrayEquals(gram64[0], gram64[1], what + ": f64 row product in pieces");
                    }
                }
    }

    @Test
    void columnStatisticsInPiecesAreBitIdenticalToOnePiece() {
        for (Device device : devices())
            for (DType dtype : DType.values()) {
                SplittableRandom r = new SplittableRandom(40 + dtype.ordinal());
                int rows = 3001, cols = 333;
                try (Arena arena = Arena.ofConfined(); Context ctx = Smelter.open(device)) {
                    Matrix x = matrix(arena, dtype, random(r, rows, cols, 0.1, 1.0));
                    float[] shift = floats(r, cols, 0.1), w = floats(r, rows, 1.0);
                    for (int i = 0; i < rows; i += 7) w[i] = 0;
                    double[][] sums = new double[2][cols];
                    long[][] positive = new long[2][cols];
                    for (int pass = 0; pass < 2; pass++) {
                        ctx.setMemoryLimit(pass == 0 ? 0 : (long) rows * 2 * 64 * dtype.byteSize());
                        sums[pass][0] = 1.5;  // the statistics are added to what is there
                        ctx.columnStats(x, shift, w, sums[pass], positive[pass]);
                        ctx.columnStats(x, null, null, sums[pass], null);
                    }
                    assertArrayEquals(sums[0], sums[1], device + " " + dtype + ": column sums in pieces");
                    assertArrayEquals(positive[0], positive[1], device + " " + dtype + ": positive counts in pieces");
                    assertTrue(positive[0][cols - 1] > 0, "the last column is counted");
                }
            }
    }

    /** A reduction too long for even one block (64 columns of a product, one column of statistics) is refused. */
    @Test
    void aLimitBelowOneBlockIsRefusedWithTheReason() {
        try (Arena arena = Arena.ofConfined(); Context ctx = Smelter.open(Device.cpu())) {
            Matrix x = matrix(arena, DType.F32, random(new SplittableRandom(3), 4000, 300, 0, 1));
            Tensor out = Tensor.allocate(arena, DType.F32, 300L * 300);
            ctx.setMemoryLimit(10_000);
            SmelterException e = assertThrows(SmelterException.class, () -> ctx.columnProduct(x, null, x, null, null, out, false));
            assertTrue(e.getMessage().contains("memory limit"), e.getMessage());
            double[] sums = new double[300];
            e = assertThrows(SmelterException.class, () -> ctx.columnStats(x, null, null, sums, null));
            assertTrue(e.getMessage().contains("memory limit"), e.getMessage());
            ctx.setMemoryLimit(0);
            ctx.columnProduct(x, null, x, null, null, out, false);  // the context still works
            assertEquals(out.getFloat(1), out.getFloat(300), 0.0f, "symmetric");
        }
    }
}
