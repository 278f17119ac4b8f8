package dev.smelter.merge;

import static org.junit.jupiter.api.Assertions.assertEquals;

import dev.smelter.Context;
import dev.smelter.DType;
import dev.smelter.MergeSpec;
import dev.smelter.Smelter;
import dev.smelter.Tensor;
import dev.smelter.TestData;
import java.lang.foreign.Arena;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;
import java.util.TreeSet;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

/**
 * The sweep's TIES thresholds: every density's k-th largest key from one key pass (16-bit keys) or one pair of
 * passes per k (f32), given to the merge, give bit-identical outputs to the merge that finds its thresholds itself.
 */
class SweepThresholdsTest {
    static final float[] DENSITIES = {1e-6f, 0.1f, 0.3f, 0.5f, 0.77f, 1.0f};

    @ParameterizedTest
    @EnumSource(DType.class)
    void thresholdsFromOnePassMergeBitIdentically(DType dtype) {
        int n = 100_003, models = 3;
        SplittableRandom r = new SplittableRandom(dtype.ordinal() + 11);
        try (Arena arena = Arena.ofConfined(); Context ctx = Smelter.openCpu(2)) {
            float[] b = new float[n];
            for (int i = 0; i < n; i++) b[i] = (float) (0.02 * r.nextGaussian());
            Tensor base = TestData.tensor(arena, dtype, b);
            List<Tensor> xs = new ArrayList<>();
            for (int m = 0; m < models; m++) {
                float[] x = new float[n];
                // Some exact zeros and many ties in |delta| (16-bit keys) test "every tied element is kept".
                for (int i = 0; i < n; i++) x[i] = r.nextInt(50) == 0 ? b[i] : b[i] + (float) (0.001 * r.nextGaussian());
                xs.add(TestData.tensor(arena, dtype, x));
            }
            TreeSet<Long> ks = new TreeSet<>();
            for (float d : DENSITIES) ks.add(SweepRunner.keptCount(d, n));
            List<Map<Long, Integer>> found = new ArrayList<>();
            for (Tensor x : xs) found.add(SweepRunner.thresholds(ctx, dtype, ks, topK -> topK.add(base, x)));
            Tensor withThresholds = Tensor.allocate(arena, DType.BF16, n), itself = Tensor.allocate(arena, DType.BF16, n);
            for (float d0 : DENSITIES)
                for (float d1 : new float[] {0.3f, 1.0f}) {
                    float[] densities = {d0, d1, d0};
                    MergeSpec spec = MergeSpec.ties(new float[] {0.5f, 0.3f, 0.2f}, densities).toBuilder().lambda(0.7f).build();
                    int[] t = new int[models];
                    for (int m = 0; m < models; m++) t[m] = found.get(m).get(SweepRunner.keptCount(densities[m], n));
                    ctx.merge(spec, base, xs, itself);
                    ctx.merge(spec.toBuilder().thresholds(t).build(), base, xs, withThresholds);
                    assertEquals(-1, itself.data().mismatch(withThresholds.data()),
                            dtype + " densities " + d0 + ", " + d1 + ": thresholds " + java.util.Arrays.toString(t));
                }
            assertEquals(0xFFFFFFFF, found.get(0).get(0L), "k = 0 keeps nothing");
        }
    }
}
