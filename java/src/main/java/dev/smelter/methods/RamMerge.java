package dev.smelter.methods;

import dev.smelter.Context;
import dev.smelter.Tensor;
import java.util.List;

/**
 * mergekit's {@code ram} and {@code ramplus_tl} (Reinforced Agent Merging, arXiv 2601.13572). With the task
 * vectors {@code d_i = x_i - base}, an element of model i contributes where {@code |d_i| > epsilon}; {@code c} is
 * the number of models contributing at that element. A contribution no other model shares ({@code c = 1}) is kept
 * whole (times {@code lambda_i}), shared ones ({@code c > 1}) are averaged, {@code d_i / c}; the result is the
 * base plus their sum. {@code ram} has {@code lambda_i = 1}; {@code ramplus_tl} counts, over the tensor, each
 * model's shared and unshared contributions and takes
 * {@code lambda_i = 1 + r * clamp(shared_i / max(unique_i, epsilon), 0, alpha)}.
 *
 * <p>In Java ({@link HostMerge}): the per-element contributor counts and the per-model counts of shared and
 * unshared elements are not among the native kernels, and the arithmetic is a sum over the models per element:
 * one pass ({@code ram}) or two ({@code ramplus_tl}: the counts, then the merge), in f64 with one rounding to the
 * output dtype. As in mergekit, a non-finite delta is never dropped: it multiplies its masks, so a NaN or infinite
 * input gives a NaN output there.
 */
public final class RamMerge {
    private RamMerge() {}

    /** {@code ram}: no rescaling of the unshared deltas. */
    public static HostMerge ram(double epsilon) {
        return (ctx, base, models, shape, out) -> merge(base, models, epsilon, null, out);
    }

    /** {@code ramplus_tl}: unshared deltas of each model scaled by its lambda from the tensor's counts. */
    public static HostMerge ramPlus(double r, double alpha, double epsilon) {
        return (ctx, base, models, shape, out) -> {
            long[][] counts = counts(base, models, epsilon);
            double[] lambda = new double[models.size()];
            for (int i = 0; i < lambda.length; i++) {
                double rho = counts[0][i] / Math.max((double) counts[1][i], epsilon);
                lambda[i] = 1 + r * Math.min(alpha, Math.max(0.0, rho));
            }
            return merge(base, models, epsilon, lambda, out);
        };
    }

    /** Per model, {@code [0]}: elements it shares with another model, {@code [1]}: elements it alone changes. */
    static long[][] counts(Tensor base, List<Tensor> models, double epsilon) {
        int n = models.size();
        long count = base.count();
        long blocks = (count + HostArithmetic.BLOCK - 1) / HostArithmetic.BLOCK;
        long[][][] partial = new long[(int) blocks][][];
        HostArithmetic.parallel(HostArithmetic.all(base, models), count, HostArithmetic.BLOCK, (from, to) -> {
            long[][] c = new long[2][n];
            boolean[] nz = new boolean[n];
            int len = (int) (to - from);
            float[][] x = load(base, models, from, len);
            for (int e = 0; e < len; e++) {
                double b = x[n][e];
                int k = 0;
                for (int i = 0; i < n; i++) {
                    nz[i] = Math.abs(x[i][e] - b) > epsilon;
                    if (nz[i]) k++;
                }
                if (k == 0) continue;
                for (int i = 0; i < n; i++) if (nz[i]) c[k > 1 ? 0 : 1][i]++;
            }
            partial[(int) (from / HostArithmetic.BLOCK)] = c;
            return 0;
        });
        long[][] total = new long[2][n];
        for (long[][] c : partial)
            for (int s = 0; s < 2; s++)
                for (int i = 0; i < n; i++) total[s][i] += c[s][i];
        return total;
    }

    /** Elements [from, from + len) of the models ({@code [0..n)}) and the base ({@code [n]}), in this thread's scratch. */
    private static float[][] load(Tensor base, List<Tensor> models, long from, int len) {
        HostArithmetic.Scratch s = HostArithmetic.Scratch.get();
        float[][] x = s.floats(models.size() + 1);
        for (int i = 0; i < models.size(); i++) HostArithmetic.load(models.get(i), from, len, x[i], s.shorts);
        HostArithmetic.load(base, from, len, x[models.size()], s.shorts);
        return x;
    }

    /** The merge; {@code lambda} null: 1 for every model ({@code ram}). */
    static Context.MergeCounts merge(Tensor base, List<Tensor> models, double epsilon, double[] lambda, Tensor out) {
        HostArithmetic.requireHost(base, models, out);
        int n = models.size();
        return HostArithmetic.counts(HostArithmetic.parallel(HostArithmetic.all(base, models, out), out.count(), HostArithmetic.BLOCK, (from, to) -> {
            double[] d = new double[n];
            int len = (int) (to - from);
            float[][] x = load(base, models, from, len);
            HostArithmetic.Scratch s = HostArithmetic.Scratch.get();
            double[] v = s.values;
            for (int e = 0; e < len; e++) {
                double b = x[n][e];
                int k = 0;
                for (int i = 0; i < n; i++) {
                    d[i] = x[i][e] - b;
                    if (Math.abs(d[i]) > epsilon) k++;
                }
                double unique = k == 1 ? 1 : 0, overlap = k > 1 ? 1 : 0, divisor = Math.max(k, 1), sum = 0;
                for (int i = 0; i < n; i++) {
                    double kept = d[i] * (Math.abs(d[i]) > epsilon ? 1 : 0);  // NaN * 0 stays NaN, as in mergekit
                    sum += kept * unique * (lambda == null ? 1 : lambda[i]) + kept * overlap / divisor;
                }
                v[e] = b + sum;
            }
            return HostArithmetic.storeAll(out, from, len, v, x[0], s.shorts);
        }));
    }
}
