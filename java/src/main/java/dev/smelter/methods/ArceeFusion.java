package dev.smelter.methods;

import dev.smelter.Context;
import dev.smelter.DType;
import dev.smelter.Tensor;
import dev.smelter.TopK;
import java.util.List;

/**
 * mergekit's {@code arcee_fusion}: base_model {@code a} and one other model {@code b}. Each row (the last
 * dimension; a 1-D tensor is one row) has the divergence {@code KL = sum_j p_j log(p_j / q_j)} of
 * {@code p = softmax(b_row) + 1e-8} from {@code q = softmax(a_row) + 1e-8}; each element the importance
 * {@code |b - a| KL}. With the importances sorted ascending and {@code Q(q)} the one at index
 * {@code floor(q (n - 1))}, the threshold is {@code Q(0.5) + 1.5 (Q(0.75) - Q(0.25))}; the result is {@code b}
 * where the importance is at least the threshold, else {@code a}.
 *
 * <p>In Java ({@link HostMerge}) for the softmaxes and divergences per row (no native kernel has them), with the
 * importances in an f32 scratch tensor whose three quantiles come from the native exact top-k
 * ({@link Context#topK}, keys of |importance|: the importances are >= 0, the divergence of two distributions of
 * equal mass being >= 0, so a rounding below 0 is taken as 0). Every element is ranked: mergekit sorts a random
 * sample of a million elements of larger tensors, which makes its threshold differ from run to run; Smelter's is
 * the exact quantile of all of them. Inputs with a NaN or infinity anywhere in the tensor give NaN throughout
 * (the quantiles of such importances mean nothing).
 */
public final class ArceeFusion {
    private ArceeFusion() {}

    /** mergekit's shift of both softmaxes. */
    public static final double SOFTMAX_EPS = 1e-8;

    public static HostMerge of() {
        return ArceeFusion::merge;
    }

    public static Context.MergeCounts merge(Context ctx, Tensor base, List<Tensor> models, long[] shape, Tensor out) {
        HostArithmetic.requireHost(base, models, out);
        if (models.size() != 1)
            throw new IllegalArgumentException("arcee_fusion merges base_model and exactly one other model");
        Tensor b = models.get(0);
        long n = out.count();
        if (n == 0) return HostArithmetic.counts(0);
        if (ctx.countNonFinite(base) + ctx.countNonFinite(b) > 0) return NanOutput.fill(ctx, out);
        long row = HostArithmetic.rowLength(shape, n);
        Tensor importance = ctx.allocate(DType.F32, n, Tensor.Memory.HOST);
        try {
            importances(base, b, row, importance);
            double q1 = quantile(ctx, importance, 0.25), median = quantile(ctx, importance, 0.5),
                    q3 = quantile(ctx, importance, 0.75);
            double threshold = median + 1.5 * (q3 - q1);
            return HostArithmetic.counts(HostArithmetic.parallel(List.of(base, b, out, importance), n, HostArithmetic.BLOCK, (from, to) -> {
                long bad = 0;
                for (long e = from; e < to; e++)
                    bad += HostArithmetic.store(out, e, importance.getFloat(e) >= threshold ? b.getFloat(e)
                            : base.getFloat(e));
                return bad;
            }));
        } finally {
            ctx.free(importance);
        }
    }

    /** Each element's importance {@code |b - a| KL(row)}, in f64 rounded to f32, into {@code importance}. */
    static void importances(Tensor a, Tensor b, long row, Tensor importance) {
        long rows = importance.count() / row;
        long rowsPerBlock = Math.max(1, HostArithmetic.BLOCK / row);
        HostArithmetic.parallel(List.of(a, b, importance), rows, rowsPerBlock, (r0, r1) -> {
            for (long r = r0; r < r1; r++) {
                long s = r * row;
                double kl = Math.max(0.0, divergence(a, b, s, row));
                for (long e = s; e < s + row; e++)
                    importance.setFloat(e, (float) (Math.abs((double) b.getFloat(e) - a.getFloat(e)) * kl));
            }
            return 0;
        });
    }

    /** KL(softmax(b) + eps || softmax(a) + eps) over elements [s, s + length). */
    static double divergence(Tensor a, Tensor b, long s, long length) {
        double maxA = Double.NEGATIVE_INFINITY, maxB = Double.NEGATIVE_INFINITY;
        for (long e = s; e < s + length; e++) {
            maxA = Math.max(maxA, a.getFloat(e));
            maxB = Math.max(maxB, b.getFloat(e));
        }
        double sumA = 0, sumB = 0;
        for (long e = s; e < s + length; e++) {
            sumA += Math.exp(a.getFloat(e) - maxA);
            sumB += Math.exp(b.getFloat(e) - maxB);
        }
        double kl = 0;
        for (long e = s; e < s + length; e++) {
            double p = Math.exp(b.getFloat(e) - maxB) / sumB + SOFTMAX_EPS;
            double q = Math.exp(a.getFloat(e) - maxA) / sumA + SOFTMAX_EPS;
            kl += p * Math.log(p / q);
        }
        return kl;
    }

    /** The importance at index floor(q (n - 1)) of the ascending order: the (n - index)-th largest. */
    static double quantile(Context ctx, Tensor importance, double q) {
        long n = importance.count();
        long index = (long) Math.floor(q * (n - 1));
        try (TopK top = ctx.topK(DType.F32)) {
            int key = top.threshold(n - index, pass -> pass.add(null, importance));
            return Float.intBitsToFloat(key);
        }
    }
}
