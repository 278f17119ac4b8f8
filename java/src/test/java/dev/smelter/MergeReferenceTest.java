package dev.smelter;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
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

/** Every merge method on every backend against the float64 reference, at odd sizes and in every dtype. */
class MergeReferenceTest {

    /** The methods and variants under test, for n models. */
    static Map<String, MergeSpec> specs(int n) {
        float[] w = new float[n], d = new float[n];
        for (int i = 0; i < n; i++) {
            w[i] = 0.3f + 0.45f * i / Math.max(1, n - 1);
            d[i] = 0.3f + 0.5f * ((i * 7) % 5) / 4f;
        }
        float[] mixedSigns = w.clone();
        mixedSigns[n - 1] = -0.4f;
        Map<String, MergeSpec> m = new LinkedHashMap<>();
        m.put("linear", MergeSpec.linear(w));
        m.put("linear-unnormalized-negative-weight", MergeSpec.linear(mixedSigns).toBuilder().normalize(false).build());
        m.put("task-arithmetic", MergeSpec.taskArithmetic(w).toBuilder().lambda(0.7f).build());
        m.put("task-arithmetic-normalized", MergeSpec.taskArithmetic(w).toBuilder().normalize(true).build());
        MergeSpec ties = MergeSpec.ties(w, d);
        m.put("ties", ties);
        m.put("ties-count", ties.toBuilder().consensus(MergeSpec.Consensus.COUNT).build());
        m.put("ties-zero-none", ties.toBuilder().zeroSign(MergeSpec.ZeroSign.NONE).build());
        m.put("ties-zero-negative-unnormalized", ties.toBuilder().zeroSign(MergeSpec.ZeroSign.NEGATIVE).normalize(false).build());
        m.put("ties-f32-keys-lambda", ties.toBuilder().keyDType(DType.F32).lambda(1.3f).build());
        m.put("ties-bf16-keys", ties.toBuilder().keyDType(DType.BF16).build());
        m.put("ties-l1-negative-weight", MergeSpec.ties(mixedSigns, d).toBuilder().rescale(MergeSpec.Rescale.L1).build());
        m.put("dare-linear", MergeSpec.dareLinear(w, d, 1234).toBuilder().tensorName("layers.0.mlp.up_proj.weight").build());
        m.put("dare-ties", MergeSpec.dareTies(w, d, 99).toBuilder().tensorName("x").elementOffset(5).build());
        m.put("dare-l1", MergeSpec.dareLinear(w, d, 7).toBuilder().rescale(MergeSpec.Rescale.L1).build());
        m.put("dare-no-rescale-count", MergeSpec.dareTies(w, d, 8).toBuilder().rescale(MergeSpec.Rescale.NONE)
                .consensus(MergeSpec.Consensus.COUNT).build());
        return m;
    }

    static float[] floats(Tensor t) {
        return t.toFloatArray();
    }

    /** Runs one case and checks it; returns the reference for further checks. */
    static Float64Reference.Result check(Context ctx, Arena arena, MergeSpec spec, TestData.Models data, DType out) {
        float[] base = floats(data.base());
        float[][] xs = data.models().stream().map(MergeReferenceTest::floats).toArray(float[][]::new);
        Float64Reference.Result ref = Float64Reference.merge(spec, base, xs, data.base().dtype());
        Tensor result = Tensor.allocate(arena, out, base.length);
        Context.MergeCounts counts = ctx.merge(spec, spec.method() == MergeSpec.Method.LINEAR ? null : data.base(),
                data.models(), result);
        String error = Float64Reference.compare(ref, result);
        assertNull(error, () -> ctx.device() + " " + spec + " -> " + out + ": " + error);
        long ambiguous = 0;
        for (boolean a : ref.ambiguous()) if (a) ambiguous++;
        assertTrue(ambiguous <= 2 + base.length / 100, "too many ambiguous sign elections: " + ambiguous);
        long[] expect = ref.signCounts();
        long[] got = {counts.positive(), counts.negative(), counts.none()};
        for (int k = 0; k < 3; k++)
            assertTrue(Math.abs(expect[k] - got[k]) <= ambiguous, "sign counts " + Arrays.toString(got) + " vs reference "
                    + Arrays.toString(expect) + " (" + ambiguous + " ambiguous)");
        return ref;
    }

    @TestFactory
    Stream<DynamicTest> everyMethodDtypeAndSmallSize() {
        List<DynamicTest> tests = new ArrayList<>();
        for (Device device : TestData.devices())
            for (DType in : DType.values())
                for (DType out : DType.values())
                    for (int size : new int[] {1, 7, 4099})
                        tests.add(dynamicTest(device + " " + in + "->" + out + " n=" + size, () -> {
                            try (Arena arena = Arena.ofConfined(); Context ctx = Smelter.open(device)) {
                                TestData.Models data = TestData.experts(arena, in, size, 3, size * 31L + in.ordinal());
                                for (var e : specs(3).entrySet()) check(ctx, arena, e.getValue(), data, out);
                            }
                        }));
        return tests.stream();
    }

    @TestFactory
    Stream<DynamicTest> modelCounts() {
        List<DynamicTest> tests = new ArrayList<>();
        for (Device device : TestData.devices())
            for (int n : new int[] {1, 2, 4, 5, 8, 9, 17})
                tests.add(dynamicTest(device + " " + n + " models", () -> {
                    try (Arena arena = Arena.ofConfined(); Context ctx = Smelter.open(device)) {
                        TestData.Models data = TestData.experts(arena, DType.BF16, 1003, n, n);
                        for (var e : specs(n).entrySet()) check(ctx, arena, e.getValue(), data, DType.F32);
                    }
                }));
        return tests.stream();
    }

    @TestFactory
    Stream<DynamicTest> largeOddTensors() {
        List<DynamicTest> tests = new ArrayList<>();
        for (Device device : TestData.devices())
            for (DType in : new DType[] {DType.BF16, DType.F32, DType.F16})
                tests.add(dynamicTest(device + " 1000003 " + in, () -> {
                    try (Arena arena = Arena.ofConfined(); Context ctx = Smelter.open(device)) {
                        TestData.Models data = TestData.experts(arena, in, 1_000_003, 4, 5);
                        Map<String, MergeSpec> all = specs(4);
                        for (String name : List.of("ties", "dare-ties", "task-arithmetic", "linear", "ties-l1-negative-weight"))
                            check(ctx, arena, all.get(name), data, in);
                    }
                }));
        return tests.stream();
    }

    @Test
    void referenceCatchesAWrongOutput() {
        // The comparison must be able to fail: perturb one element by a few ulps of bf16.
        try (Arena arena = Arena.ofConfined(); Context ctx = Smelter.open(Device.cpu())) {
            TestData.Models data = TestData.experts(arena, DType.BF16, 501, 3, 11);
            MergeSpec spec = specs(3).get("ties");
            float[] base = floats(data.base());
            float[][] xs = data.models().stream().map(MergeReferenceTest::floats).toArray(float[][]::new);
            Float64Reference.Result ref = Float64Reference.merge(spec, base, xs, DType.BF16);
            Tensor out = Tensor.allocate(arena, DType.BF16, 501);
            ctx.merge(spec, data.base(), data.models(), out);
            assertNull(Float64Reference.compare(ref, out));
            short bits = out.data().getAtIndex(java.lang.foreign.ValueLayout.JAVA_SHORT, 250);
            out.data().setAtIndex(java.lang.foreign.ValueLayout.JAVA_SHORT, 250, (short) (bits + 2));
            assertNotNull(Float64Reference.compare(ref, out), "a 2-ulp error went unnoticed");
        }
    }

    @Test
    void droppedDeltasLeaveTheBaseExactly() {
        // One model, lambda 1: out == base exactly wherever the delta was trimmed or dropped, and
        // the kept fraction matches the density (exactly for TIES, statistically for DARE).
        try (Arena arena = Arena.ofConfined(); Context ctx = Smelter.open(Device.cpu())) {
            int n = 100_003;
            TestData.Models data = TestData.experts(arena, DType.F32, n, 1, 3);
            float[] base = floats(data.base()), x = floats(data.models().get(0));
            for (MergeSpec spec : List.of(MergeSpec.ties(new float[] {1f}, new float[] {0.25f}),
                    MergeSpec.dareLinear(new float[] {1f}, new float[] {0.25f}, 5).toBuilder().rescale(MergeSpec.Rescale.NONE).build())) {
                Tensor out = Tensor.allocate(arena, DType.F32, n);
                ctx.merge(spec, data.base(), data.models(), out);
                float[] o = floats(out);
                int kept = 0;
                for (int j = 0; j < n; j++) {
                    if (o[j] != base[j]) {
                        kept++;
                        assertEquals(x[j], o[j], 0f, "a kept delta is restored exactly (weight 1, lambda 1)");
                    }
                }
                int nonzero = 0;
                for (int j = 0; j < n; j++) if (x[j] != base[j]) nonzero++;
                if (spec.sparsify() == MergeSpec.Sparsify.MAGNITUDE)
                    assertEquals((int) Math.floor(0.25 * n), kept, "TIES keeps exactly floor(density * n) (no ties in f32 data)");
                else
                    assertEquals(0.25 * nonzero, kept, 5 * Math.sqrt(0.25 * 0.75 * nonzero), "DARE keeps ~density");
            }
        }
    }

    /**
     * The merge counts its NaN and infinite outputs in the output's dtype: NaN inputs, and sums that overflow f16
     * (beyond 65504) or bf16 and f16 (beyond bf16's 3.39e38) but not f32. Checked against decoding the output,
     * on every device present.
     */
    @Test
    void mergesCountTheirNonFiniteOutputs() {
        int n = 100_003;
        SplittableRandom r = new SplittableRandom(5);
        float[] a = new float[n], b = new float[n];
        for (int i = 0; i < n; i++) {
            a[i] = (float) TestData.gaussian(r);
            b[i] = (float) TestData.gaussian(r);
            switch (r.nextInt(50)) {
                case 0 -> a[i] = Float.NaN;
                case 1 -> a[i] = Float.NEGATIVE_INFINITY;
                case 2 -> { a[i] = 120000f; b[i] = 20000f; }  // mean 70000: f16 overflow only
                case 3 -> { a[i] = 3.4e38f; b[i] = 3.4e38f; }  // bf16 and f16 overflow; f32 is finite
                default -> { }
            }
        }
        for (Device device : TestData.devices())
            try (Arena arena = Arena.ofConfined(); Context ctx = Smelter.open(device)) {
                List<Tensor> models = List.of(TestData.tensor(arena, DType.F32, a), TestData.tensor(arena, DType.F32, b));
                for (DType out : DType.values()) {
                    Tensor result = Tensor.allocate(arena, out, n);
                    Context.MergeCounts counts = ctx.merge(MergeSpec.linear(0.5f, 0.5f), null, models, result);
                    long decoded = 0;
                    for (float v : result.toFloatArray()) if (!Float.isFinite(v)) decoded++;
                    assertTrue(decoded > n / 50, out + ": the data must make non-finite outputs");
                    assertEquals(decoded, counts.nonFinite(), device + " " + out);
                    assertEquals(decoded, ctx.countNonFinite(result), device + " " + out + ": countNonFinite");
                }
            }
    }

    @Test
    void cpuResultsDoNotDependOnThreadCount() {
        try (Arena arena = Arena.ofConfined(); Context one = Smelter.openCpu(1); Context two = Smelter.openCpu(2)) {
            TestData.Models data = TestData.experts(arena, DType.BF16, 300_001, 3, 17);
            for (var e : specs(3).entrySet()) {
                Tensor a = Tensor.allocate(arena, DType.BF16, 300_001), b = Tensor.allocate(arena, DType.BF16, 300_001);
                MergeSpec s = e.getValue();
                Tensor base = s.method() == MergeSpec.Method.LINEAR ? null : data.base();
                one.merge(s, base, data.models(), a);
                two.merge(s, base, data.models(), b);
                assertEquals(-1, a.data().mismatch(b.data()), e.getKey() + " differs between 1 and 2 threads");
            }
        }
    }
}
