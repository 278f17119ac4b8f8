package dev.smelter.methods;

import dev.smelter.Context;
import dev.smelter.DType;
import dev.smelter.MergeSpec;
import dev.smelter.PairStats;
import dev.smelter.Tensor;
import dev.smelter.TopK;
import java.util.List;

/**
 * SCE (Wan et al. 2024, FuseChat: select, calculate, erase) for one tensor, from four native calls: the
 * per-position variance of the task vectors ({@link MergeSpec#variance}), its exact top-k key ({@link TopK}),
 * the masked sums of squares ({@link Context#pairStats} with a {@link Context.Selection}), and one merge with
 * the unweighted sign election and the per-model weights.
 *
 * <p>Two variants, which differ in what the variance mask touches:
 * <ul>
 *   <li>{@link Variant#MERGEKIT} (mergekit {@code sce}): the mask zeroes the task vectors before the sign
 *       election, the weights and the sum; the divisor is clamped to at least 1e-6; weights are uniform when
 *       their sum is below 1e-6.
 *   <li>{@link Variant#FUSECHAT} (the FuseChat reference code): the mask only feeds the weights; election and
 *       sum see the whole task vectors; a zero divisor becomes 1; weights are uniform when their sum is 0.
 * </ul>
 * Both: {@code k = floor(select_topk * (positions with non-zero variance))}; positions tied with the k-th
 * largest variance are all selected (torch.topk picks an arbitrary subset of such ties).
 */
public final class SceMerge {
    private SceMerge() {}

    public enum Variant { MERGEKIT, FUSECHAT }

    /** One tensor's SCE settings: {@code select_topk}, the variant, and the tensor's name (for the spec). */
    public record Settings(double selectTopK, Variant variant, String tensorName) {}

    /** The per-position variance of the task vectors (in {@code scores}) and how many positions have a non-zero one. */
    public record Variance(Tensor scores, long nonzero) {}

    /** The resolved per-tensor pieces: the merge spec and the selection it runs with (null: none). */
    public record Plan(MergeSpec spec, Context.Selection selection, double[] weights) {
        /** Whether the weights are finite: an input holding NaN or infinity makes them NaN (mergekit's output too). */
        public boolean finite() {
            for (double w : weights) if (!Double.isFinite(w)) return false;
            return true;
        }
    }

    /**
     * Merges {@code models} about {@code base} into {@code out}. {@code scratch} is an f32 tensor of the same
     * count in the inputs' memory (host or device) for the variance; it may be null when {@code selectTopK >= 1}.
     */
    public static Context.MergeCounts merge(Context ctx, Tensor base, List<Tensor> models, double selectTopK,
            Variant variant, String tensorName, Tensor scratch, Tensor out) {
        Plan plan = plan(ctx, base, models, selectTopK, variant, tensorName, scratch);
        if (!plan.finite()) return NanOutput.fill(ctx, out);
        return ctx.merge(plan.spec(), base, models, variant == Variant.MERGEKIT ? plan.selection() : null, null, out);
    }

    /** Everything but the final merge: the selection threshold and the weights. */
    public static Plan plan(Context ctx, Tensor base, List<Tensor> models, double selectTopK, Variant variant,
            String tensorName, Tensor scratch) {
        Context.Selection selection = null;
        if (selectTopK < 1) selection = selection(ctx, variance(ctx, base, models, scratch), selectTopK);
        return plan(ctx, base, models, new Settings(selectTopK, variant, tensorName), selection);
    }

    /** The variance of the task vectors into {@code scratch} (f32, the inputs' count and memory), one merge call. */
    public static Variance variance(Context ctx, Tensor base, List<Tensor> models, Tensor scratch) {
        if (scratch == null || scratch.dtype() != DType.F32 || scratch.count() != base.count())
            throw new IllegalArgumentException("SCE with select_topk < 1 needs an f32 scratch tensor of "
                    + base.count() + " elements");
        ctx.merge(MergeSpec.variance(models.size()), base, models, scratch);
        PairStats nonzero = new PairStats(1);
        ctx.pairStats(List.of(scratch), null, null, null, nonzero);
        return new Variance(scratch, nonzero.bothNonzero(0, 0));
    }

    /** The positions with the top {@code selectTopK} fraction of the non-zero variances, ties included. */
    public static Context.Selection selection(Context ctx, Variance variance, double selectTopK) {
        long k = selectTopK <= 0 ? 0 : (long) Math.floor(selectTopK * variance.nonzero());
        int threshold;
        if (k == 0) {
            threshold = 0xFFFFFFFF;  // no position: above every key of a variance
        } else {
            try (TopK top = ctx.topK(DType.F32)) {
                threshold = top.threshold(k, pass -> pass.add(null, variance.scores()));
            }
        }
        return new Context.Selection(variance.scores(), threshold);
    }

    /** The weights and the spec, given the selection (null when {@code select_topk >= 1}). */
    public static Plan plan(Context ctx, Tensor base, List<Tensor> models, Settings settings, Context.Selection selection) {
        int n = models.size();
        Variant variant = settings.variant();
        String tensorName = settings.tensorName();
        PairStats squares = new PairStats(n);
        ctx.pairStats(models, base, null, null, selection, squares);
        double[] w = new double[n];
        double sum = 0;
        for (int i = 0; i < n; i++) {
            w[i] = squares.dot(i, i) / base.count();
            sum += w[i];
        }
        boolean uniform = variant == Variant.MERGEKIT ? Math.abs(sum) < 1e-6 : sum == 0;
        float[] weights = new float[n];
        for (int i = 0; i < n; i++) {
            w[i] = uniform ? 1.0 / n : w[i] / sum;
            weights[i] = (float) w[i];
        }
        MergeSpec spec = MergeSpec.taskArithmetic(weights).toBuilder()
                .consensus(MergeSpec.Consensus.SUM_UNWEIGHTED)
                .normalize(true)
                .minDivisor(variant == Variant.MERGEKIT ? 1e-6f : 0.0f)
                .tensorName(tensorName)
                .build();
        return new Plan(spec, selection, w);
    }
}
