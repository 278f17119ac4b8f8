package dev.smelter.methods;

import dev.smelter.Context;
import dev.smelter.Tensor;
import java.util.List;

/**
 * mergekit's {@code nearswap} (alchemonaut's NearSwap): per element, with {@code a} the base and {@code b} the one
 * other model, {@code w = clamp(t / max(|a - b|, 1e-6), 0, 1)} and the result {@code w b + (1 - w) a}: elements
 * that differ by at most {@code t} take the model's value, the others move towards it by {@code t / |a - b|}.
 *
 * <p>In Java ({@link HostMerge}): the weight of each element depends on that element, which no native kernel
 * computes, and the formula is element-wise, one pass over the two inputs, in f64 with one rounding to the
 * output dtype. A NaN in either input gives NaN there, as in mergekit.
 */
public final class NearSwap {
    private NearSwap() {}

    /** mergekit's floor of the absolute difference. */
    public static final double MIN_DIFFERENCE = 1e-6;

    public static HostMerge of(double t) {
        return (ctx, base, models, shape, out) -> merge(t, base, models, out);
    }

    public static Context.MergeCounts merge(double t, Tensor base, List<Tensor> models, Tensor out) {
        HostArithmetic.requireHost(base, models, out);
        if (models.size() != 1) throw new IllegalArgumentException("nearswap merges base_model and exactly one other model");
        Tensor b = models.get(0);
        return HostArithmetic.counts(HostArithmetic.parallel(List.of(base, b, out), out.count(), HostArithmetic.BLOCK, (from, to) -> {
            int n = (int) (to - from);
            HostArithmetic.Scratch s = HostArithmetic.Scratch.get();
            float[] xs = s.floats(2)[0], ys = s.floats(2)[1];
            short[] scratch = s.shorts;
            double[] v = s.values;
            HostArithmetic.load(base, from, n, xs, scratch);
            HostArithmetic.load(b, from, n, ys, scratch);
            for (int e = 0; e < n; e++) {
                double x = xs[e], y = ys[e];
                double w = Math.min(1.0, Math.max(0.0, t / Math.max(Math.abs(x - y), MIN_DIFFERENCE)));
                v[e] = w * y + (1 - w) * x;
            }
            return HostArithmetic.storeAll(out, from, n, v, xs, scratch);
        }));
    }
}
