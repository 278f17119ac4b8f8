package dev.smelter;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.lang.foreign.Arena;
import java.lang.foreign.ValueLayout;
import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;

/** Dtype conversion, NaN/Inf behaviour and chunk independence of the native kernels. */
class NumericsTest {
    /** Values that stress rounding: every exponent, exact halfway cases, f16 overflow and subnormals. */
    static float[] edgeValues() {
        List<Float> v = new ArrayList<>();
        SplittableRandom r = new SplittableRandom(3);
        for (int e = -140; e <= 127; e++)
            for (int s = 0; s < 4; s++) v.add((r.nextBoolean() ? 1 : -1) * (float) Math.scalb(1 + r.nextDouble(), e));
        for (float f : new float[] {65504f, 65519.99f, 65520f, 1e9f, 6e-8f, 2.98e-8f, 5.96e-8f, 0f, -0f,
                Float.MIN_VALUE, Float.MAX_VALUE, 1 + 0x1p-8f, 1 + 0x1p-11f, 1 + 3 * 0x1p-8f, 1 + 3 * 0x1p-11f})
            v.add(f);
        for (int i = 0; i < 5000; i++) v.add(Float.intBitsToFloat(r.nextInt() & 0x7F7FFFFF | (r.nextBoolean() ? 0x80000000 : 0)));
        float[] out = new float[v.size()];
        for (int i = 0; i < out.length; i++) out[i] = v.get(i);
        return out;
    }

    @Test
    void outputRoundingIsNearestEven() {
        float[] x = edgeValues();
        for (Device device : TestData.devices())
            try (Arena arena = Arena.ofConfined(); Context ctx = Smelter.open(device)) {
                Tensor in = TestData.tensor(arena, DType.F32, x);
                for (DType out : DType.values()) {
                    Tensor o = Tensor.allocate(arena, out, x.length);
                    ctx.merge(MergeSpec.linear(1f), null, List.of(in), o);
                    for (int i = 0; i < x.length; i++) {
                        int expect = switch (out) {
                            case F32 -> Float.floatToRawIntBits(x[i]);
                            case F16 -> Float.floatToFloat16(x[i]) & 0xFFFF;
                            case BF16 -> TestData.bf16Bits(x[i]);
                        };
                        int got = out == DType.F32 ? o.data().getAtIndex(ValueLayout.JAVA_INT, i)
                                : o.data().getAtIndex(ValueLayout.JAVA_SHORT, i) & 0xFFFF;
                        assertEquals(expect, got, device + " " + out + " of " + x[i] + " (bits " + Integer.toHexString(Float.floatToRawIntBits(x[i])) + ")");
                    }
                }
            }
    }

    @Test
    void sixteenBitInputsDecodeExactly() {
        for (DType dt : new DType[] {DType.F16, DType.BF16})
            try (Arena arena = Arena.ofConfined(); Context ctx = Smelter.open(Device.cpu())) {
                Tensor in = Tensor.allocate(arena, dt, 65536);
                for (int i = 0; i < 65536; i++) in.data().setAtIndex(ValueLayout.JAVA_SHORT, i, (short) i);
                Tensor o = Tensor.allocate(arena, DType.F32, 65536);
                ctx.merge(MergeSpec.linear(1f), null, List.of(in), o);
                for (int i = 0; i < 65536; i++) {
                    float expect = in.getFloat(i), got = o.getFloat(i);
                    if (Float.isNaN(expect)) assertTrue(Float.isNaN(got), dt + " NaN pattern " + i);
                    else assertEquals(Float.floatToRawIntBits(expect), Float.floatToRawIntBits(got), dt + " pattern " + i);
                }
            }
    }

    @Test
    void nanInAnyInputGivesNanAndInfinityPropagates() {
        try (Arena arena = Arena.ofConfined(); Context ctx = Smelter.open(Device.cpu())) {
            float[] base = {0.1f, 0.2f, Float.NaN, 0.4f, 0.5f};
            float[] a = {Float.NaN, 0.25f, 0.3f, Float.POSITIVE_INFINITY, 0.55f};
            float[] b = {0.1f, 0.21f, 0.3f, 0.41f, Float.NaN};
            Tensor tb = TestData.tensor(arena, DType.F32, base);
            List<Tensor> models = List.of(TestData.tensor(arena, DType.F32, a), TestData.tensor(arena, DType.F32, b));
            float[] w = {0.5f, 0.5f}, d = {1f, 1f};
            for (MergeSpec spec : List.of(MergeSpec.taskArithmetic(w), MergeSpec.ties(w, d), MergeSpec.dareTies(w, new float[] {0.9f, 0.9f}, 1),
                    MergeSpec.linear(w))) {
                Tensor out = Tensor.allocate(arena, DType.F32, 5);
                ctx.merge(spec, tb, models, out);
                float[] o = out.toFloatArray();
                boolean usesBase = spec.method() != MergeSpec.Method.LINEAR;
                assertTrue(Float.isNaN(o[0]) && Float.isNaN(o[4]) && Float.isNaN(o[2]) == usesBase, spec + ": NaN inputs -> NaN");
                assertTrue(Float.isFinite(o[1]), spec + ": finite stays finite");
                if (spec.sparsify() != MergeSpec.Sparsify.RANDOM)
                    assertEquals(Float.POSITIVE_INFINITY, o[3], spec + ": +Inf delta gives +Inf");
            }
        }
    }

    @Test
    void untouchedPositionsKeepTheBaseBitForBit() {
        try (Arena arena = Arena.ofConfined(); Context ctx = Smelter.open(Device.cpu())) {
            float[] base = {-0f, 0f, -0f, 1f};
            Tensor tb = TestData.tensor(arena, DType.F32, base);
            List<Tensor> same = List.of(TestData.tensor(arena, DType.F32, base), TestData.tensor(arena, DType.F32, base));
            for (MergeSpec spec : List.of(MergeSpec.taskArithmetic(0.5f, 0.5f), MergeSpec.ties(new float[] {1, 1}, new float[] {0.5f, 0.5f}))) {
                Tensor out = Tensor.allocate(arena, DType.F32, 4);
                ctx.merge(spec, tb, same, out);
                assertEquals(-1, out.data().mismatch(tb.data()), spec + " changed a base without task vectors");
            }
        }
    }

    @Test
    void majorityZeroSignFollowsTheElectedSigns() {
        try (Arena arena = Arena.ofConfined(); Context ctx = Smelter.open(Device.cpu())) {
            // Deltas: mostly negative elections, and one position whose two deltas cancel exactly.
            float[] base = {0, 0, 0, 0};
            float[] a = {-1, -2, 3, 0.5f}, b = {-1, -1, -4, -0.5f};
            Tensor tb = TestData.tensor(arena, DType.F32, base);
            List<Tensor> models = List.of(TestData.tensor(arena, DType.F32, a), TestData.tensor(arena, DType.F32, b));
            MergeSpec spec = MergeSpec.ties(new float[] {1, 1}, new float[] {1, 1});
            MergeSpec resolved = ctx.withMajorityZeroSign(spec, tb, models);
            assertEquals(MergeSpec.ZeroSign.NEGATIVE, resolved.zeroSign());
            Tensor out = Tensor.allocate(arena, DType.F32, 4);
            ctx.merge(resolved, tb, models, out);
            assertEquals(-0.5f, out.getFloat(3), "the tied position takes the majority sign: the mean of {-0.5}");
            ctx.merge(spec, tb, models, out);
            assertEquals(0.5f, out.getFloat(3), "mergekit's rule sends a zero sum to +");
        }
    }

    @Test
    void randomMasksDoNotDependOnChunking() {
        try (Arena arena = Arena.ofConfined(); Context ctx = Smelter.open(Device.cpu())) {
            int n = 100_003;
            TestData.Models data = TestData.experts(arena, DType.F16, n, 2, 9);
            MergeSpec spec = MergeSpec.dareTies(new float[] {0.6f, 0.4f}, new float[] {0.3f, 0.5f}, 77).toBuilder()
                    .tensorName("model.layers.7.mlp.down_proj.weight").build();
            Tensor whole = Tensor.allocate(arena, DType.F16, n);
            ctx.merge(spec, data.base(), data.models(), whole);
            Tensor parts = Tensor.allocate(arena, DType.F16, n);
            long[] cuts = {0, 3, 1000, 65_539, n};
            for (int c = 0; c + 1 < cuts.length; c++) {
                long off = cuts[c], len = cuts[c + 1] - off;
                ctx.merge(spec.toBuilder().elementOffset(off).build(), data.base().slice(off, len),
                        data.models().stream().map(t -> t.slice(off, len)).toList(), parts.slice(off, len));
            }
            assertEquals(-1, whole.data().mismatch(parts.data()), "chunked DARE differs from one call");
            Tensor other = Tensor.allocate(arena, DType.F16, n);
            ctx.merge(spec.toBuilder().tensorName("model.layers.8.mlp.down_proj.weight").build(), data.base(), data.models(), other);
            assertTrue(whole.data().mismatch(other.data()) >= 0, "another tensor name must draw another mask");
        }
    }
}
