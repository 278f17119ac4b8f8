package dev.smelter;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.lang.foreign.Arena;
import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;

/**
 * smelter_pair_stats against an independent Java computation: counts exactly, dot products against a float64
 * reference and, bit for bit, against a Java replay of the documented summation order (the order the CUDA
 * kernel follows too).
 */
class PairStatsTest {
    static final int LANES = 256, CHUNK = 256 * 256;

    /** Task vectors in f32 exactly as the kernel forms them. */
    static float[][] deltas(List<Tensor> vectors, Tensor base) {
        float[][] d = new float[vectors.size()][];
        for (int i = 0; i < d.length; i++) {
            float[] v = vectors.get(i).toFloatArray();
            if (base != null) {
                float[] b = base.toFloatArray();
                for (int e = 0; e < v.length; e++) v[e] = v[e] - b[e];
            }
            d[i] = v;
        }
        return d;
    }

    /** The documented order: per chunk, lane l sums elements l, l + 256, ..; lanes by halving tree; chunks in order. */
    static double orderedDot(float[] a, float[] b) {
        double total = 0;
        for (int c0 = 0; c0 < a.length; c0 += CHUNK) {
            double[] lane = new double[LANES];
            for (int e = c0; e < Math.min(a.length, c0 + CHUNK); e++) lane[(e - c0) % LANES] += (double) a[e] * b[e];
            for (int half = LANES / 2; half >= 1; half /= 2)
                for (int t = 0; t < half; t++) lane[t] += lane[t + half];
            total += lane[0];
        }
        return total;
    }

    /** Sum of squared differences, in the same order; each difference formed in f64. */
    static double orderedSquaredDistance(float[] a, float[] b) {
        double total = 0;
        for (int c0 = 0; c0 < a.length; c0 += CHUNK) {
            double[] lane = new double[LANES];
            for (int e = c0; e < Math.min(a.length, c0 + CHUNK); e++) {
                double t = (double) a[e] - (double) b[e];
                lane[(e - c0) % LANES] += t * t;
            }
            for (int half = LANES / 2; half >= 1; half /= 2)
                for (int t = 0; t < half; t++) lane[t] += lane[t + half];
            total += lane[0];
        }
        return total;
    }

    static int key(DType keyType, float d) {
        return switch (keyType) {
            case F32 -> Float.floatToRawIntBits(d) & 0x7FFFFFFF;
            case F16 -> Float.floatToFloat16(d) & 0x7FFF;
            case BF16 -> TestData.bf16Bits(d) & 0x7FFF;
        };
    }

    /** Vectors with distinct scales, some exact zeros and both signs. */
    static List<Tensor> vectors(Arena arena, DType dtype, int n, int size, SplittableRandom r) {
        List<Tensor> out = new ArrayList<>();
        for (int i = 0; i < n; i++) {
            float[] v = new float[size];
            for (int e = 0; e < size; e++)
                v[e] = r.nextInt(50) == 0 ? 0.5f : (float) (0.5 + (i + 1) * 0.01 * TestData.gaussian(r));
            out.add(TestData.tensor(arena, dtype, v));
        }
        return out;
    }

    static void check(Context ctx, DType dtype, int n, int size, boolean withBase, long seed) {
        SplittableRandom r = new SplittableRandom(seed);
        try (Arena arena = Arena.ofConfined()) {
            List<Tensor> v = vectors(arena, dtype, n, size, r);
            float[] b = new float[size];
            java.util.Arrays.fill(b, 0.5f);
            Tensor base = withBase ? TestData.tensor(arena, dtype, b) : null;
            float[][] d = deltas(v, base);
            int[] thresholds = new int[n];
            for (int i = 0; i < n; i++) thresholds[i] = key(dtype, d[i][r.nextInt(size)]);
            PairStats s = new PairStats(n);
            ctx.pairStats(v, base, thresholds, null, s);
            String what = dtype + " n=" + n + " size=" + size + (withBase ? " task vectors" : "");
            for (int i = 0; i < n; i++) {
                long bad = 0;
                for (float x : d[i]) bad += Float.isFinite(x) ? 0 : 1;
                assertEquals(bad, s.nonfinite(i), what);
                for (int j = 0; j < n; j++) {
                    double ref = 0, comp = 0, mag = 0;  // Neumaier-compensated float64 reference
                    long conflicts = 0, nonzero = 0, kept = 0;
                    for (int e = 0; e < size; e++) {
                        double p = (double) d[i][e] * d[j][e];
                        double t = ref + p;
                        comp += Math.abs(ref) >= Math.abs(p) ? (ref - t) + p : (p - t) + ref;
                        ref = t;
                        mag += Math.abs(p);
                        if (d[i][e] != 0 && d[j][e] != 0) {
                            nonzero++;
                            if ((d[i][e] > 0) != (d[j][e] > 0)) conflicts++;
                        }
                        if (Integer.compareUnsigned(key(dtype, d[i][e]), thresholds[i]) >= 0
                                && Integer.compareUnsigned(key(dtype, d[j][e]), thresholds[j]) >= 0) kept++;
                    }
                    ref += comp;
                    // Each product is exact; the sum's rounding error is bounded by ~(256 + 8 + chunks) eps |terms|.
                    assertTrue(Math.abs(s.dot(i, j) - ref) <= 1e-13 * mag, what + " dot " + i + "," + j + ": " + s.dot(i, j) + " vs " + ref);
                    assertEquals(orderedDot(d[i], d[j]), s.dot(i, j), 0.0, what + " dot order " + i + "," + j);
                    assertEquals(orderedSquaredDistance(d[i], d[j]), s.squaredDistance(i, j), 0.0,
                            what + " squared distance " + i + "," + j);
                    assertEquals(conflicts, s.signConflicts(i, j), what + " conflicts " + i + "," + j);
                    assertEquals(nonzero, s.bothNonzero(i, j), what + " non-zeros " + i + "," + j);
                    assertEquals(kept, s.bothKept(i, j), what + " kept " + i + "," + j);
                }
            }
        }
    }

    @Test
    void matchesTheReferenceForEveryDtypeAndOddSizes() {
        try (Context ctx = Smelter.open(Device.cpu())) {
            for (DType dtype : DType.values())
                for (int size : new int[] {1, 255, 257, 65_537, 200_003})
                    for (int n : new int[] {1, 3}) {
                        check(ctx, dtype, n, size, true, size * 7L + n);
                        if (size < 70_000) check(ctx, dtype, n, size, false, size * 11L + n);
                    }
        }
    }

    @Test
    void manyVectorsAndThreadCountsGiveTheSameBits() {
        try (Arena arena = Arena.ofConfined(); Context one = Smelter.openCpu(1); Context two = Smelter.openCpu(2)) {
            List<Tensor> v = vectors(arena, DType.BF16, 9, 600_001, new SplittableRandom(3));
            PairStats a = new PairStats(8), b = new PairStats(8);
            one.pairStats(v.subList(1, 9), v.get(0), null, null, a);
            two.pairStats(v.subList(1, 9), v.get(0), null, null, b);
            for (int i = 0; i < 8; i++)
                for (int j = 0; j < 8; j++) {
                    assertEquals(Double.doubleToRawLongBits(a.dot(i, j)), Double.doubleToRawLongBits(b.dot(i, j)));
                    assertEquals(a.bothNonzero(i, j), b.bothNonzero(i, j));
                    assertEquals(a.dot(i, j), a.dot(j, i), 0.0, "symmetric");
                }
            check(two, DType.F32, 9, 70_001, true, 5);
        }
    }

    /**
     * One ulp changed in 1000 elements of a million: {@code |a|^2 + |b|^2 - 2<a, b>} cancels to nothing, the
     * sum of squared differences does not. Cosines stay within [-1, 1].
     */
    @Test
    void nearIdenticalVectorsKeepTheirDistance() {
        SplittableRandom r = new SplittableRandom(13);
        int size = 1_000_000;
        float[] a = new float[size], z = new float[size];
        for (int e = 0; e < size; e++) {
            a[e] = (float) TestData.gaussian(r);
            z[e] = (float) (0.5 * TestData.gaussian(r));
        }
        float[] b = a.clone();
        for (int k = 0; k < 1000; k++) b[k * 997] = Math.nextUp(a[k * 997]);
        try (Arena arena = Arena.ofConfined(); Context ctx = Smelter.open(Device.cpu())) {
            Tensor ta = TestData.tensor(arena, DType.F32, a), tb = TestData.tensor(arena, DType.F32, b);
            Tensor base = TestData.tensor(arena, DType.F32, z);
            for (Tensor t : new Tensor[] {null, base}) {
                float[][] d = deltas(List.of(ta, tb), t);
                double expected = 0;
                for (int e = 0; e < size; e++) expected += ((double) d[0][e] - d[1][e]) * ((double) d[0][e] - d[1][e]);
                expected = Math.sqrt(expected);
                assertTrue(expected > 1e-6, "test data: distance " + expected);
                PairStats s = new PairStats(2);
                ctx.pairStats(List.of(ta, tb), t, null, null, s);
                String what = t == null ? "parameters" : "task vectors";
                assertEquals(expected, s.distance(0, 1), 1e-12 * expected, what);
                assertEquals(s.distance(0, 1), s.distance(1, 0), 0.0, what);
                assertEquals(0.0, s.distance(0, 0), 0.0, what);
                for (int i = 0; i < 2; i++)
                    for (int j = 0; j < 2; j++) {
                        assertTrue(Math.abs(s.cosine(i, j)) <= 1.0, what + " cosine " + s.cosine(i, j));
                        assertTrue(s.cosine(i, j) > 1 - 1e-12, what + " cosine " + s.cosine(i, j));
                    }
            }
        }
    }

    @Test
    void callsAccumulateAndNonFiniteValuesAreCounted() {
        try (Arena arena = Arena.ofConfined(); Context ctx = Smelter.open(Device.cpu())) {
            Tensor a = Tensor.ofFloats(arena, 1, -2, Float.NaN, 4), b = Tensor.ofFloats(arena, 3, 5, 1, Float.POSITIVE_INFINITY);
            PairStats s = new PairStats(2);
            ctx.pairStats(List.of(a.slice(0, 2), b.slice(0, 2)), null, null, null, s);
            assertEquals(1 * 3 - 2 * 5, s.dot(0, 1));
            assertEquals(1, s.signConflicts(0, 1));
            ctx.pairStats(List.of(a.slice(2, 2), b.slice(2, 2)), null, null, null, s);
            assertEquals(4, s.elements());
            assertTrue(Double.isNaN(s.dot(0, 1)));
            assertEquals(1, s.nonfinite(0));
            assertEquals(1, s.nonfinite(1));
            assertEquals(1, s.signConflicts(0, 1));
            assertEquals(3, s.bothNonzero(0, 1), "NaN has no sign");
        }
    }

    @Test
    void derivedMeasures() {
        try (Arena arena = Arena.ofConfined(); Context ctx = Smelter.open(Device.cpu())) {
            Tensor base = Tensor.ofFloats(arena, 1, 1, 1, 1);
            Tensor a = Tensor.ofFloats(arena, 2, -1, 1, 4), b = Tensor.ofFloats(arena, 3, 3, 6, 1);
            PairStats s = new PairStats(2);
            int two = Float.floatToRawIntBits(2f);
            ctx.pairStats(List.of(a, b), base, new int[] {two, two}, DType.F32, s);
            assertEquals(-2 / (Math.sqrt(14) * Math.sqrt(33)), s.cosine(0, 1), 1e-15);
            assertEquals(Math.sqrt(1 + 16 + 25 + 9), s.distance(0, 1), 1e-12);
            assertEquals(0.5, s.signConflictRate(0, 1));
            assertEquals(1.0 / 4, s.maskJaccard(0, 1), "kept {1,3} and {0,1,2}: one shared of four");
            assertThrows(IllegalArgumentException.class, () -> ctx.pairStats(List.of(a, b), base, null, null, s));
        }
    }

    @Test
    void badInputIsRefusedWithAMessage() {
        try (Arena arena = Arena.ofConfined(); Context ctx = Smelter.open(Device.cpu())) {
            Tensor a = Tensor.ofFloats(arena, 1, 2, 3), b = Tensor.ofFloats(arena, 1, 2);
            SmelterException e = assertThrows(SmelterException.class,
                    () -> ctx.pairStats(List.of(a, b), null, null, null, new PairStats(2)));
            assertTrue(e.getMessage().contains("vectors[1] has 2 elements, vectors[0] has 3"), e.getMessage());
            Tensor h = TestData.tensor(arena, DType.BF16, new float[] {1, 2, 3});
            e = assertThrows(SmelterException.class, () -> ctx.pairStats(List.of(a), h, null, null, new PairStats(1)));
            assertTrue(e.getMessage().contains("base is bf16, vectors[0] is f32"), e.getMessage());
            assertThrows(IllegalArgumentException.class, () -> ctx.pairStats(List.of(a), null, null, null, new PairStats(2)));
            assertThrows(IllegalArgumentException.class, () -> ctx.pairStats(List.of(a), null, new int[2], null, new PairStats(1)));
        }
    }

    /**
     * Under a memory limit the statistics are taken in pieces of whole chunks, the running sums continued: the same
     * bits as in one piece (dots, squared distances, every count), with a base, TIES thresholds and a selection.
     */
    @Test
    void piecesUnderAMemoryLimitGiveTheSameBits() {
        int n = 4, size = 5 * 65536 + 4097;
        for (Device device : TestData.devices())
            for (DType dtype : DType.values())
                try (Arena arena = Arena.ofConfined(); Context ctx = Smelter.open(device)) {
                    SplittableRandom r = new SplittableRandom(41);
                    List<Tensor> v = vectors(arena, dtype, n, size, r);
                    Tensor base = vectors(arena, dtype, 1, size, r).get(0);
                    float[] scores = new float[size];
                    for (int e = 0; e < size; e++) scores[e] = (float) r.nextDouble();
                    Context.Selection select = new Context.Selection(TestData.tensor(arena, DType.F32, scores), 0x3f000000);
                    int[] thresholds = {0x3c00, 0x3c20, 0x3b80, 0x3c40};
                    PairStats whole = new PairStats(n), pieces = new PairStats(n);
                    ctx.pairStats(v, base, thresholds, DType.BF16, select, whole);
                    ctx.setMemoryLimit(600_000);  // about 60k elements of 4 vectors, a base and a selection: one chunk
                    ctx.pairStats(v, base, thresholds, DType.BF16, select, pieces);
                    ctx.setMemoryLimit(0);
                    for (int i = 0; i < n; i++) {
                        assertEquals(whole.nonfinite(i), pieces.nonfinite(i));
                        for (int j = 0; j < n; j++) {
                            String at = device + " " + dtype + " (" + i + ", " + j + ")";
                            assertEquals(Double.doubleToRawLongBits(whole.dot(i, j)), Double.doubleToRawLongBits(pieces.dot(i, j)), at);
                            assertEquals(Double.doubleToRawLongBits(whole.squaredDistance(i, j)),
                                    Double.doubleToRawLongBits(pieces.squaredDistance(i, j)), at);
                            assertEquals(whole.signConflicts(i, j), pieces.signConflicts(i, j), at);
                            assertEquals(whole.bothNonzero(i, j), pieces.bothNonzero(i, j), at);
                            assertEquals(whole.bothKept(i, j), pieces.bothKept(i, j), at);
                        }
                    }
                }
    }
}
