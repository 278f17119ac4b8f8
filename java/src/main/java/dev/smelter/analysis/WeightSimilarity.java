package dev.smelter.analysis;

import dev.smelter.Context;
import dev.smelter.DType;
import dev.smelter.Matrix;
import dev.smelter.MergeSpec;
import dev.smelter.PairStats;
import dev.smelter.Tensor;
import dev.smelter.TopK;
import dev.smelter.config.TensorNames;
import dev.smelter.io.Checkpoint;
import dev.smelter.io.TensorInfo;
import java.lang.foreign.Arena;
import java.lang.foreign.ValueLayout;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;
import java.util.function.Consumer;

/**
 * Weight-space similarity of checkpoints, per layer: cosine of parameters and of task vectors, L2 norms and
 * distances, stable rank, sign-conflict rate and TIES mask overlap between task vectors. Tensors are grouped by
 * layer index ({@link TensorNames}); tensors before the layers form group "embed", those after "final".
 *
 * <p>Dot products and counts come from {@code smelter_pair_stats} (f64, one fixed summation order), stable ranks
 * from power iteration on {@code W^T W} with {@code smelter_product}.
 */
public final class WeightSimilarity {
    private WeightSimilarity() {}

    /**
     * @param density TIES mask density for the mask overlap (per tensor, k = floor(density * n) largest |delta|);
     *     0 = no masks
     * @param stableRankIterations power iterations per matrix; 0 = no stable ranks
     */
    public record Options(double density, int stableRankIterations) {
        public Options {
            if (!(density >= 0 && density <= 1)) throw new IllegalArgumentException("density must be in [0, 1], got " + density);
            if (stableRankIterations < 0) throw new IllegalArgumentException("stable rank iterations must be >= 0");
        }
    }

    /**
     * One group's statistics. {@code params} are of the parameters, {@code tasks} of the task vectors (null without
     * base). Stable ranks are means over the group's 2-D tensors (NaN if it has none or they were not asked for).
     */
    public record Group(String name, int tensors, long elements, PairStats params, PairStats tasks,
            double[] stableRank, double[] taskStableRank) {}

    /** The groups in model order: "embed", layers 0.., "final". */
    public static List<Group> compare(Context ctx, List<Checkpoint> models, Checkpoint base, Options options,
            Consumer<String> warn) {
        if (models.size() < 2) throw new IllegalArgumentException("compare needs at least two checkpoints, got " + models.size());
        if (options.density() > 0 && base == null) throw new IllegalArgumentException("mask overlap (--density) needs a base model");
        int n = models.size();
        Checkpoint first = models.getFirst();
        Map<String, List<String>> groups = new LinkedHashMap<>();
        for (String name : first.tensorNames()) {
            TensorInfo info = first.info(name);
            if (info.dtype().toMergeDType().isEmpty()) continue;
            for (Checkpoint m : models.subList(1, n)) requireSame(first, m, name, info);
            if (base != null) requireSame(first, base, name, info);
            groups.computeIfAbsent(groupOf(name), g -> new ArrayList<>()).add(name);
        }
        for (Checkpoint m : models.subList(1, n))
            for (String name : m.tensorNames())
                if (!first.contains(name))
                    throw new IllegalArgumentException(m.directory() + " has tensor " + name + " that " + first.directory() + " lacks");
        List<String> order = new ArrayList<>(groups.keySet());
        order.sort((a, b) -> Integer.compare(rank(a), rank(b)));
        List<Group> out = new ArrayList<>();
        for (String g : order) {
            PairStats params = new PairStats(n), tasks = base == null ? null : new PairStats(n);
            double[] sr = new double[n], tsr = new double[n];
            int matrices = 0;
            long elements = 0;
            for (String name : groups.get(g)) {
                TensorInfo info = first.info(name);
                boolean skipped = false;
                for (Checkpoint m : models)
                    if (!Arrays.equals(m.info(name).shape(), info.shape())) skipped = true;
                if (base != null && !Arrays.equals(base.info(name).shape(), info.shape())) skipped = true;
                if (skipped) {
                    warn.accept("skipping " + name + ": shapes differ between checkpoints (vocabulary size?)");
                    continue;
                }
                List<Tensor> ts = new ArrayList<>();
                for (Checkpoint m : models) ts.add(m.tensor(name));
                Tensor b = base == null ? null : base.tensor(name);
                ctx.pairStats(ts, null, null, null, params);
                if (tasks != null) {
                    int[] thresholds = options.density() > 0 ? thresholds(ctx, ts, b, options.density()) : null;
                    ctx.pairStats(ts, b, thresholds, null, tasks);
                }
                elements += info.elementCount();
                if (options.stableRankIterations() > 0 && info.rank() == 2) {
                    matrices++;
                    long rows = info.shape()[0], cols = info.shape()[1];
                    for (int i = 0; i < n; i++) {
                        sr[i] += stableRank(ctx, new Matrix(ts.get(i), rows, cols), options.stableRankIterations());
                        if (b != null) tsr[i] += taskStableRank(ctx, ts.get(i), b, rows, cols, options.stableRankIterations());
                    }
                }
            }
            if (elements == 0) continue;
            for (int i = 0; i < n; i++) {
                sr[i] = matrices > 0 ? sr[i] / matrices : Double.NaN;
                tsr[i] = matrices > 0 && base != null ? tsr[i] / matrices : Double.NaN;
            }
            int count = groups.get(g).size();
            out.add(new Group(g, count, elements, params, tasks, sr, base == null ? null : tsr));
        }
        return out;
    }

    private static void requireSame(Checkpoint first, Checkpoint other, String name, TensorInfo info) {
        if (!other.contains(name))
            throw new IllegalArgumentException(other.directory() + " lacks tensor " + name + " (present in " + first.directory() + ")");
        TensorInfo o = other.info(name);
        if (o.dtype() != info.dtype())
            throw new IllegalArgumentException("tensor " + name + " is " + info.dtype() + " in " + first.directory() + " but "
                    + o.dtype() + " in " + other.directory());
        if (!Arrays.equals(o.shape(), info.shape()) && !TensorNames.isVocabMatrix(name))
            throw new IllegalArgumentException("tensor " + name + " has shape " + Arrays.toString(info.shape()) + " in "
                    + first.directory() + " but " + Arrays.toString(o.shape()) + " in " + other.directory());
    }

    static String groupOf(String name) {
        int layer = TensorNames.layerIndex(name);
        if (layer >= 0) return Integer.toString(layer);
        return TensorNames.isAfterLayers(name) ? "final" : "embed";
    }

    private static int rank(String group) {
        return switch (group) {
            case "embed" -> -1;
            case "final" -> Integer.MAX_VALUE;
            default -> Integer.parseInt(group);
        };
    }

    /** Per-tensor TIES thresholds: the k-th largest |delta| key of each model, k = floor(density * n). */
    static int[] thresholds(Context ctx, List<Tensor> models, Tensor base, double density) {
        int[] out = new int[models.size()];
        long k = (long) Math.floor(density * base.count());
        for (int i = 0; i < models.size(); i++) {
            Tensor model = models.get(i);
            try (TopK topK = ctx.topK(base.dtype())) {
                out[i] = topK.threshold(k, pass -> pass.add(base, model));
            }
        }
        return out;
    }

    /**
     * Stable rank {@code ||W||_F^2 / sigma_max(W)^2} of a rows x cols matrix (host tensor of any float dtype).
     * sigma_max^2 is the Rayleigh quotient {@code ||W v||^2} of power iteration on {@code W^T W} from a fixed
     * start vector, stopped after {@code iterations} or when it changes by less than 1e-7 relative. It
     * approaches sigma_max^2 from below, so the stable rank is approached from above; well-separated top
     * singular values converge in a few iterations.
     */
    public static double stableRank(Context ctx, Matrix w, int iterations) {
        long rows = w.rows(), cols = w.cols();
        try (Arena arena = Arena.ofConfined()) {
            Tensor v = Tensor.allocate(arena, DType.F32, cols), u = Tensor.allocate(arena, DType.F32, rows);
            Tensor z = Tensor.allocate(arena, DType.F32, cols);
            // A deterministic start with every coordinate non-zero, so no singular direction is missed exactly.
            SplittableRandom r = new SplittableRandom(0x5EED);
            double norm = 0;
            for (long i = 0; i < cols; i++) {
                float x = (float) (r.nextDouble() + 0.5) * (r.nextBoolean() ? 1 : -1);
                v.data().setAtIndex(ValueLayout.JAVA_FLOAT, i, x);
                norm += (double) x * x;
            }
            scale(v, 1 / Math.sqrt(norm));
            double sigma2 = 0;
            for (int it = 0; it < iterations; it++) {
                ctx.rowProduct(w, null, new Matrix(v, 1, cols), null, u, false);        // u = W v
                double next = sumSquares(u);
                ctx.columnProduct(w, null, new Matrix(u, rows, 1), null, null, z, false); // z = W^T u
                double zn = Math.sqrt(sumSquares(z));
                boolean done = it > 0 && Math.abs(next - sigma2) <= 1e-7 * next;
                sigma2 = next;
                if (done || zn == 0) break;
                v.data().copyFrom(z.data());
                scale(v, 1 / zn);
            }
            PairStats s = new PairStats(1);
            ctx.pairStats(List.of(w.tensor()), null, null, null, s);
            return sigma2 > 0 ? s.dot(0, 0) / sigma2 : Double.NaN;
        }
    }

    private static double taskStableRank(Context ctx, Tensor model, Tensor base, long rows, long cols, int iterations) {
        try (Arena arena = Arena.ofConfined()) {
            Tensor delta = Tensor.allocate(arena, DType.F32, model.count());
            MergeSpec minus = MergeSpec.linear(1, -1).toBuilder().normalize(false).build();
            ctx.merge(minus, null, List.of(model, base), delta);  // f32 x - base, as the merge forms deltas
            return stableRank(ctx, new Matrix(delta, rows, cols), iterations);
        }
    }

    private static double sumSquares(Tensor t) {
        double s = 0;
        for (long i = 0; i < t.count(); i++) {
            double x = t.data().getAtIndex(ValueLayout.JAVA_FLOAT, i);
            s += x * x;
        }
        return s;
    }

    private static void scale(Tensor t, double f) {
        for (long i = 0; i < t.count(); i++) {
            float x = t.data().getAtIndex(ValueLayout.JAVA_FLOAT, i);
            t.data().setAtIndex(ValueLayout.JAVA_FLOAT, i, (float) (x * f));
        }
    }
}
