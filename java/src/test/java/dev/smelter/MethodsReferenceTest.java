package dev.smelter;

import dev.smelter.methods.SceMerge;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.DynamicTest.dynamicTest;

import java.lang.foreign.Arena;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;
import java.util.stream.Stream;
import org.junit.jupiter.api.DynamicTest;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestFactory;

/**
 * Breadcrumbs, DELLA, the SCE building blocks (variance, position selection, unweighted election, divisor
 * clamp), Fisher weights and whole SCE merges against float64 references, on every backend, dtype and at odd
 * sizes. Breadcrumbs and DELLA follow mergekit's magnitude_outliers and della_magprune (with Smelter's
 * documented tie rules), SCE follows mergekit's sce and the FuseChat code, Fisher follows Matena and Raffel's
 * reference implementation.
 */
class MethodsReferenceTest {

    static Map<String, MergeSpec> specs(int n, int size) {
        float[] w = new float[n], d = new float[n], g = new float[n], e = new float[n], floors = new float[n];
        for (int i = 0; i < n; i++) {
            w[i] = 0.3f + 0.45f * i / Math.max(1, n - 1);
            d[i] = 0.3f + 0.5f * ((i * 7) % 5) / 4f;
            g[i] = 0.02f + 0.1f * (i % 5);
            e[i] = Math.min(0.1f + 0.02f * i, Math.min(d[i], 1 - d[i]) * 0.9f);
            floors[i] = i == 0 ? 1e-3f : 0f;
        }
        long row = size % 13 == 0 ? 13 : 0;
        Map<String, MergeSpec> m = new LinkedHashMap<>();
        m.put("breadcrumbs", MergeSpec.breadcrumbs(w, d, g, false));
        m.put("breadcrumbs-ties", MergeSpec.breadcrumbs(w, d, g, true));
        m.put("breadcrumbs-default-gamma-l1", MergeSpec.breadcrumbs(w, d, null, false).toBuilder()
                .rescale(MergeSpec.Rescale.L1).build());
        m.put("breadcrumbs-no-top", MergeSpec.breadcrumbs(w, d, new float[n], true).toBuilder().keyDType(DType.F32).build());
        m.put("della", MergeSpec.della(w, d, e, row, 42, true).toBuilder().tensorName("model.layers.3.mlp.down_proj.weight").build());
        m.put("della-linear", MergeSpec.della(w, d, e, row, 7, false));
        m.put("della-l1-default-epsilon", MergeSpec.della(w, d, null, 0, 9, true).toBuilder()
                .densities(fill(n, 0.5f)).rescale(MergeSpec.Rescale.L1).build());
        float[] dFull = d.clone();
        dFull[0] = 1.0f;
        m.put("della-density-one-no-rescale", MergeSpec.della(w, dFull, e, row, 3, false).toBuilder()
                .rescale(MergeSpec.Rescale.NONE).elementOffset(4).build());
        m.put("sum-unweighted-clamped", MergeSpec.taskArithmetic(w).toBuilder()
                .consensus(MergeSpec.Consensus.SUM_UNWEIGHTED).normalize(true).minDivisor(0.5f).build());
        m.put("fisher", MergeSpec.fisher(w, floors));
        m.put("fisher-unnormalized", MergeSpec.fisher(w, null).toBuilder().normalize(false).build());
        m.put("variance", MergeSpec.variance(n));
        return m;
    }

    static float[] fill(int n, float v) {
        float[] a = new float[n];
        Arrays.fill(a, v);
        return a;
    }

    static float[] floats(Tensor t) {
        return t.toFloatArray();
    }

    /** Random scores with a threshold at about their 40th percentile, and which positions it keeps. */
    record Select(Tensor scores, int threshold, boolean[] selected) {
        static Select random(Arena arena, int size, long seed) {
            SplittableRandom r = new SplittableRandom(seed);
            float[] s = new float[size];
            for (int j = 0; j < size; j++) s[j] = (float) TestData.gaussian(r);
            long[] keys = new long[size];
            for (int j = 0; j < size; j++) keys[j] = Float64Reference.key(s[j], DType.F32);
            int threshold = (int) Float64Reference.kthLargest(keys, Math.max(1, (long) (0.6 * size)));
            boolean[] sel = new boolean[size];
            for (int j = 0; j < size; j++) sel[j] = keys[j] >= (threshold & 0xFFFFFFFFL);
            return new Select(TestData.tensor(arena, DType.F32, s), threshold, sel);
        }
    }

    static void check(Context ctx, Arena arena, String name, MergeSpec spec, TestData.Models data, DType out, long seed) {
        float[] base = floats(data.base());
        float[][] xs = data.models().stream().map(MethodsReferenceTest::floats).toArray(float[][]::new);
        int size = base.length, n = xs.length;
        Select select = null;
        List<Tensor> ew = null;
        float[][] ewValues = null;
        if (name.startsWith("sum-unweighted")) select = Select.random(arena, size, seed);
        if (name.startsWith("fisher")) {
            SplittableRandom r = new SplittableRandom(seed);
            ewValues = new float[n][size];
            ew = new ArrayList<>();
            for (int i = 0; i < n; i++) {
                for (int j = 0; j < size; j++)  // squared gradients: non-negative, some exactly zero
                    ewValues[i][j] = j % 5 == 0 ? 0f : TestData.round(DType.F16, (float) Math.abs(TestData.gaussian(r)));
                ew.add(TestData.tensor(arena, DType.F16, ewValues[i]));
            }
        }
        Float64Reference.Result ref = Float64Reference.merge(spec, base, xs, data.base().dtype(),
                select == null ? null : select.selected(), ewValues);
        DType outType = spec.method() == MergeSpec.Method.VARIANCE ? DType.F32 : out;
        Tensor result = Tensor.allocate(arena, outType, size);
        ctx.merge(spec, spec.method() == MergeSpec.Method.LINEAR ? null : data.base(), data.models(),
                select == null ? null : new Context.Selection(select.scores(), select.threshold()), ew, result);
        String error = Float64Reference.compare(ref, result);
        assertNull(error, () -> ctx.device() + " " + name + " " + spec + " -> " + outType + ": " + error);
    }

    @TestFactory
    Stream<DynamicTest> everyMethodDtypeAndOddSize() {
        List<DynamicTest> tests = new ArrayList<>();
        for (Device device : TestData.devices())
            for (DType in : DType.values())
                for (int size : new int[] {1, 91, 4095, 4099})
                    tests.add(dynamicTest(device + " " + in + " n=" + size, () -> {
                        try (Arena arena = Arena.ofConfined(); Context ctx = Smelter.open(device)) {
                            TestData.Models data = TestData.experts(arena, in, size, 3, size * 17L + in.ordinal());
                            for (var e : specs(3, size).entrySet())
                                check(ctx, arena, e.getKey(), e.getValue(), data, in, size);
                        }
                    }));
        return tests.stream();
    }

    @TestFactory
    Stream<DynamicTest> modelCounts() {
        List<DynamicTest> tests = new ArrayList<>();
        for (Device device : TestData.devices())
            for (int n : new int[] {1, 2, 5, 9, 17})
                tests.add(dynamicTest(device + " " + n + " models", () -> {
                    try (Arena arena = Arena.ofConfined(); Context ctx = Smelter.open(device)) {
                        TestData.Models data = TestData.experts(arena, DType.BF16, 1001, n, n);
                        for (var e : specs(n, 1001).entrySet()) check(ctx, arena, e.getKey(), e.getValue(), data, DType.F32, n);
                    }
                }));
        return tests.stream();
    }

    @Test
    void breadcrumbsKeepsTheMiddleOfTheRanking() {
        // Distinct f32 magnitudes 1..100: gamma 0.1 drops 91..100, density 0.3 keeps 61..90.
        try (Arena arena = Arena.ofConfined(); Context ctx = Smelter.open(Device.cpu())) {
            float[] x = new float[100];
            for (int j = 0; j < 100; j++) x[j] = (j % 2 == 0 ? 1 : -1) * (float) ((j * 37) % 100 + 1);
            Tensor base = Tensor.allocate(arena, DType.F32, 100), out = Tensor.allocate(arena, DType.F32, 100);
            ctx.merge(MergeSpec.breadcrumbs(new float[] {1f}, new float[] {0.3f}, new float[] {0.1f}, false), base,
                    List.of(TestData.tensor(arena, DType.F32, x)), out);
            for (int j = 0; j < 100; j++) {
                float mag = Math.abs(x[j]);
                assertEquals(mag > 60 && mag <= 90 ? x[j] : 0f, out.getFloat(j), "element " + j + " (|x| " + mag + ")");
            }
        }
    }

    @Test
    void dellaKeepsLargeMagnitudesMoreOften() {
        // Rows of 1000: the largest tenth is kept with probability ~0.8, the smallest ~0.2 (density 0.5 +/- 0.3).
        try (Arena arena = Arena.ofConfined(); Context ctx = Smelter.open(Device.cpu())) {
            int rows = 200, cols = 1000;
            TestData.Models data = TestData.experts(arena, DType.F32, (long) rows * cols, 1, 3);
            Tensor out = Tensor.allocate(arena, DType.F32, rows * cols);
            ctx.merge(MergeSpec.della(new float[] {1f}, new float[] {0.5f}, new float[] {0.3f}, cols, 5, false)
                    .toBuilder().rescale(MergeSpec.Rescale.NONE).build(), data.base(), data.models(), out);
            float[] base = floats(data.base()), x = floats(data.models().get(0));
            long smallKept = 0, largeKept = 0, small = 0, large = 0;
            for (int r = 0; r < rows; r++) {
                float[] mags = new float[cols];
                for (int c = 0; c < cols; c++) mags[c] = Math.abs(x[r * cols + c] - base[r * cols + c]);
                float[] sorted = mags.clone();
                Arrays.sort(sorted);
                for (int c = 0; c < cols; c++) {
                    boolean kept = out.getFloat(r * cols + c) != base[r * cols + c];
                    if (mags[c] <= sorted[99]) { small++; smallKept += kept ? 1 : 0; }
                    if (mags[c] >= sorted[900]) { large++; largeKept += kept ? 1 : 0; }
                }
            }
            double ps = (double) smallKept / small, pl = (double) largeKept / large;
            assertTrue(Math.abs(ps - 0.23) < 0.03, "smallest tenth kept with rate " + ps);
            assertTrue(Math.abs(pl - 0.77) < 0.03, "largest tenth kept with rate " + pl);
        }
    }

    @Test
    void badParametersAreRefused() {
        try (Arena arena = Arena.ofConfined(); Context ctx = Smelter.open(Device.cpu())) {
            TestData.Models data = TestData.experts(arena, DType.F32, 91, 2, 1);
            Tensor out = Tensor.allocate(arena, DType.F32, 91);
            float[] w = {1f, 1f}, d = {0.5f, 0.5f};
            var e1 = assertThrows(SmelterException.class, () -> ctx.merge(
                    MergeSpec.della(w, d, new float[] {0.6f, 0.1f}, 0, 1, false), data.base(), data.models(), out));
            assertTrue(e1.getMessage().contains("epsilons[0]"), e1.getMessage());
            var e2 = assertThrows(SmelterException.class, () -> ctx.merge(
                    MergeSpec.della(w, d, null, 10, 1, false), data.base(), data.models(), out));
            assertTrue(e2.getMessage().contains("row_length 10"), e2.getMessage());
            var e3 = assertThrows(SmelterException.class, () -> ctx.merge(
                    MergeSpec.breadcrumbs(w, d, new float[] {1.5f, 0f}, false), data.base(), data.models(), out));
            assertTrue(e3.getMessage().contains("gammas[0]"), e3.getMessage());
            var e4 = assertThrows(SmelterException.class, () -> ctx.merge(MergeSpec.fisher(w, null), null,
                    data.models(), null, List.of(Tensor.allocate(arena, DType.F32, 90), Tensor.allocate(arena, DType.F32, 90)), out));
            assertTrue(e4.getMessage().contains("element_weights[0] has 90 elements"), e4.getMessage());
        }
    }

    // ---- SCE against float64 implementations of mergekit's sce and FuseChat's code -------------

    /** SCE in float64. Positions whose variance is within rounding of the selection threshold are ambiguous. */
    static Float64Reference.Result sceReference(float[] base, float[][] xs, double topk, SceMerge.Variant variant) {
        int n = xs.length, len = base.length;
        double[][] tv = new double[n][len];
        for (int j = 0; j < len; j++)
            for (int i = 0; i < n; i++) tv[i][j] = (double) xs[i][j] - base[j];
        // The selection follows the documented f32 variance (smelter.h, SMELTER_METHOD_VARIANCE), replayed
        // here in Java's strict f32 arithmetic; the VARIANCE values themselves are checked against float64 in
        // everyMethodDtypeAndOddSize.
        long[] keys = new long[len];
        for (int j = 0; j < len; j++) {
            float sum = 0f;
            for (int i = 0; i < n; i++) sum = sum + (xs[i][j] - base[j]);
            float mean = sum / n, sq = 0f;
            for (int i = 0; i < n; i++) {
                float c = (xs[i][j] - base[j]) - mean;
                sq = sq + c * c;
            }
            keys[j] = Float64Reference.key(sq / n, DType.F32);
        }
        boolean[] mask = new boolean[len];
        boolean[] ambiguous = new boolean[len];
        if (topk >= 1) {
            Arrays.fill(mask, true);
        } else {
            long nonzero = Arrays.stream(keys).filter(v -> v != 0).count();
            long k = (long) Math.floor(topk * nonzero);
            long threshold = Float64Reference.kthLargest(keys, k);
            for (int j = 0; j < len; j++) mask[j] = keys[j] >= threshold;
        }
        double[] r = sceMerge(base, tv, mask, variant, ambiguous);
        return new Float64Reference.Result(Arrays.copyOf(r, len), Arrays.copyOfRange(r, len, 2 * len), ambiguous,
                new long[3]);
    }

    /** Values (first len) and tolerances (next len) of SCE with this mask; marks ambiguous elections. */
    static double[] sceMerge(float[] base, double[][] tv, boolean[] mask, SceMerge.Variant variant, boolean[] ambiguous) {
        int n = tv.length, len = base.length;
        double eps = Math.scalb(1.0, -24);
        double[] w = new double[n];
        double sum = 0;
        for (int i = 0; i < n; i++) {
            for (int j = 0; j < len; j++) if (mask[j]) w[i] += tv[i][j] * tv[i][j];
            w[i] /= len;
            sum += w[i];
        }
        boolean uniform = variant == SceMerge.Variant.MERGEKIT ? Math.abs(sum) < 1e-6 : sum == 0;
        for (int i = 0; i < n; i++) w[i] = uniform ? 1.0 / n : w[i] / sum;
        double[] result = new double[2 * len];
        for (int j = 0; j < len; j++) {
            double[] t = new double[n];
            double vote = 0, voteMag = 0;
            for (int i = 0; i < n; i++) {
                t[i] = variant == SceMerge.Variant.MERGEKIT && !mask[j] ? 0 : tv[i][j];
                vote += t[i];
                voteMag += Math.abs(t[i]);
            }
            int sign = vote >= 0 ? 1 : -1;
            ambiguous[j] |= voteMag > 0 && Math.abs(vote) <= (n + 2) * 4 * eps * voteMag;
            double num = 0, div = 0, mag = 0;
            for (int i = 0; i < n; i++) {
                if (Math.signum(t[i]) == sign) {
                    num += t[i] * w[i];
                    div += w[i];
                }
                mag += Math.abs(t[i] * w[i]);
            }
            div = variant == SceMerge.Variant.MERGEKIT ? Math.max(div, 1e-6) : (div == 0 ? 1 : div);
            result[j] = base[j] + num / div;
            result[len + j] = (2 * n + 10) * eps * (Math.abs(base[j]) + mag / div) + 8 * eps * Math.abs(num / div);
        }
        return result;
    }

    @TestFactory
    Stream<DynamicTest> sceBothVariants() {
        List<DynamicTest> tests = new ArrayList<>();
        for (Device device : TestData.devices())
            for (DType in : DType.values())
                for (int size : new int[] {1, 97, 4099})
                    for (double topk : new double[] {1.0, 0.3, 0.0})
                        for (SceMerge.Variant variant : SceMerge.Variant.values())
                            tests.add(dynamicTest(device + " " + in + " n=" + size + " select_topk=" + topk + " " + variant, () -> {
                                try (Arena arena = Arena.ofConfined(); Context ctx = Smelter.open(device)) {
                                    TestData.Models data = TestData.experts(arena, in, size, 4, size + 3L * in.ordinal());
                                    float[] base = floats(data.base());
                                    float[][] xs = data.models().stream().map(MethodsReferenceTest::floats).toArray(float[][]::new);
                                    Float64Reference.Result ref = sceReference(base, xs, topk, variant);
                                    Tensor out = Tensor.allocate(arena, DType.F32, size);
                                    Tensor scratch = Tensor.allocate(arena, DType.F32, size);
                                    SceMerge.merge(ctx, data.base(), data.models(), topk, variant, "w", scratch, out);
                                    String error = Float64Reference.compare(ref, out);
                                    assertNull(error, () -> variant + " " + error);
                                }
                            }));
        return tests.stream();
    }

    @Test
    void sceVariantsDiffer() {
        // The reference comparison must be able to fail: the two variants give different merges.
        try (Arena arena = Arena.ofConfined(); Context ctx = Smelter.open(Device.cpu())) {
            TestData.Models data = TestData.experts(arena, DType.F32, 2001, 3, 8);
            float[] base = floats(data.base());
            float[][] xs = data.models().stream().map(MethodsReferenceTest::floats).toArray(float[][]::new);
            Tensor out = Tensor.allocate(arena, DType.F32, 2001), scratch = Tensor.allocate(arena, DType.F32, 2001);
            SceMerge.merge(ctx, data.base(), data.models(), 0.3, SceMerge.Variant.MERGEKIT, "w", scratch, out);
            assertNull(Float64Reference.compare(sceReference(base, xs, 0.3, SceMerge.Variant.MERGEKIT), out));
            assertNotNull(Float64Reference.compare(sceReference(base, xs, 0.3, SceMerge.Variant.FUSECHAT), out));
        }
    }
}
