package dev.smelter;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.DynamicTest.dynamicTest;

import java.lang.foreign.Arena;
import java.util.ArrayList;
import java.util.List;
import java.util.stream.Stream;
import org.junit.jupiter.api.DynamicTest;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestFactory;

/** Model-wide (global) TIES trimming: exact thresholds over many tensors, streamed. */
class TopKTest {
    static final int[] SIZES = {1, 7, 4099, 70_001, 250_003};

    /** Streams every tensor through a TopK (two passes for f32 keys) and returns the threshold. */
    static int threshold(Context ctx, DType key, List<TestData.Models> tensors, int model, long k) {
        try (TopK topK = ctx.topK(key)) {
            TopK.Selection s;
            int passes = 0;
            do {
                for (TestData.Models t : tensors) topK.add(t.base(), t.models().get(model));
                s = topK.select(k);
                passes++;
            } while (s.morePasses());
            assertEquals(key == DType.F32 && k > 0 ? 2 : 1, passes, "passes for " + key + " keys, k=" + k);
            return s.threshold();
        }
    }

    @TestFactory
    Stream<DynamicTest> thresholdsEqualSortingAllKeys() {
        List<DynamicTest> tests = new ArrayList<>();
        for (Device device : TestData.devices())
            for (DType dtype : DType.values())
                tests.add(dynamicTest(device + " " + dtype, () -> {
                    try (Arena arena = Arena.ofConfined(); Context ctx = Smelter.open(device)) {
                        List<TestData.Models> tensors = new ArrayList<>();
                        for (int s : SIZES) tensors.add(TestData.experts(arena, dtype, s, 2, s));
                        long total = 0;
                        for (int s : SIZES) total += s;
                        long[] keys = new long[(int) total];
                        int at = 0;
                        for (TestData.Models t : tensors) {
                            float[] b = t.base().toFloatArray(), x = t.models().get(1).toFloatArray();
                            for (int j = 0; j < b.length; j++) keys[at++] = Float64Reference.key(x[j] - b[j], dtype);
                        }
                        // Whole tensors, and in pieces of 4096 elements under a memory limit: the same keys.
                        for (long limit : new long[] {0, 8192}) {
                            ctx.setMemoryLimit(limit);
                            for (long k : new long[] {1, 2, total / 3, total / 2 + 1, total - 1, total}) {
                                long expect = Float64Reference.kthLargest(keys, k);
                                assertEquals(expect, threshold(ctx, dtype, tensors, 1, k) & 0xFFFFFFFFL,
                                        "k=" + k + ", memory limit " + limit);
                            }
                        }
                        ctx.setMemoryLimit(0);
                        assertEquals(0xFFFFFFFFL, threshold(ctx, dtype, tensors, 1, 0) & 0xFFFFFFFFL, "k=0 keeps nothing");
                    }
                }));
        return tests.stream();
    }

    @Test
    void modelWideTrimEqualsTheReferenceWithTheGlobalThreshold() {
        try (Arena arena = Arena.ofConfined(); Context ctx = Smelter.open(Device.cpu())) {
            List<TestData.Models> tensors = new ArrayList<>();
            for (int s : new int[] {1001, 30_007, 5}) tensors.add(TestData.experts(arena, DType.BF16, s, 3, s + 1));
            float[] w = {0.5f, 0.3f, 0.2f}, d = {0.2f, 0.5f, 0.7f};
            long total = 1001 + 30_007 + 5;
            int[] thresholds = new int[3];
            for (int i = 0; i < 3; i++) thresholds[i] = threshold(ctx, DType.BF16, tensors, i, (long) Math.floor((double) d[i] * total));
            MergeSpec spec = MergeSpec.ties(w, d).toBuilder().thresholds(thresholds).build();
            long keptPerModel0 = 0;
            for (TestData.Models t : tensors) {
                var ref = MergeReferenceTest.check(ctx, arena, spec, t, DType.F32);
                assertTrue(ref.values().length > 0);
                float[] b = t.base().toFloatArray(), x = t.models().get(0).toFloatArray();
                for (int j = 0; j < b.length; j++)
                    if (Float64Reference.key(x[j] - b[j], DType.BF16) >= (thresholds[0] & 0xFFFFFFFFL)) keptPerModel0++;
            }
            assertTrue(keptPerModel0 >= (long) Math.floor(0.2 * total), "at least k kept (ties at the threshold too)");
        }
    }

    @Test
    void badSelectionsAreRejected() {
        try (Arena arena = Arena.ofConfined(); Context ctx = Smelter.open(Device.cpu()); TopK topK = ctx.topK(DType.F32)) {
            TestData.Models t = TestData.experts(arena, DType.F32, 100, 1, 1);
            topK.add(t.base(), t.models().get(0));
            SmelterException e = assertThrows(SmelterException.class, () -> topK.select(101));
            assertEquals(Status.INVALID_ARGUMENT, e.status());
            assertTrue(e.getMessage().contains("k must be in 0..100"), e.getMessage());
            assertTrue(topK.select(10).morePasses());
            topK.add(t.base(), t.models().get(0));
            e = assertThrows(SmelterException.class, () -> topK.select(11));
            assertTrue(e.getMessage().contains("k changed between passes"), e.getMessage());
            assertFalse(topK.select(10).morePasses());
        }
        try (Arena arena = Arena.ofConfined(); Context ctx = Smelter.open(Device.cpu()); TopK topK = ctx.topK(DType.F32)) {
            TestData.Models t = TestData.experts(arena, DType.F32, 100, 1, 1);
            topK.add(t.base(), t.models().get(0));
            assertTrue(topK.select(5).morePasses());
            SmelterException e = assertThrows(SmelterException.class, () -> topK.select(5));
            assertTrue(e.getMessage().contains("the second pass added 0 elements"), e.getMessage());
        }
    }
}
