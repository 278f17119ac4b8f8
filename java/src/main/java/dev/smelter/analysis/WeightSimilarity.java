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
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;
import java.util.function.Consumer;
import org.ejml.data.DMatrixRMaj;
import org.ejml.dense.row.CommonOps_DDRM;
import org.ejml.dense.row.NormOps_DDRM;
import org.ejml.dense.row.factory.DecompositionFactory_DDRM;
import org.ejml.interfaces.decomposition.EigenDecomposition_F64;
import org.ejml.interfaces.decomposition.QRDecomposition;

/**
 * Weight-space similarity of checkpoints, per layer: cosine of parameters and of task vectors, L2 norms and
 * distances, stable rank, sign-conflict rate and TIES mask overlap between task vectors. Tensors are grouped by
 * layer index ({@link TensorNames}); tensors before the layers form group "embed", those after "final".
 *
 * <p>Dot products, distances and counts come from {@code smelter_pair_stats} (f64, one fixed summation order),
 * stable ranks from block subspace iteration on {@code W^T W} with f64 {@code smelter_product}s, to a stated 1e-6.
 * Each tensor is read with positional reads into a buffer of its checkpoint's ({@code TensorBuffers}), never handed to
 * native code as a view of the file mapping.
 */
public final class WeightSimilarity {
    private WeightSimilarity() {}

    /**
     * @param density TIES mask density for the mask overlap (per tensor, k = floor(density * n) largest |delta|);
     *     0 = no masks
     * @param stableRankIterations most subspace iterations per matrix; 0 = no stable ranks
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
        try (TensorBuffers buffers = new TensorBuffers(n + 1)) {
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
                    for (int i = 0; i < n; i++) ts.add(buffers.read(i, models.get(i), name));
                    Tensor b = base == null ? null : buffers.read(n, base, name);
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
                            sr[i] += checked(estimateStableRank(ctx, new Matrix(ts.get(i), rows, cols), options.stableRankIterations()),
                                    name + " of " + models.get(i).directory(), warn);
                            if (b != null)
                                tsr[i] += checked(taskStableRank(ctx, ts.get(i), b, rows, cols, options.stableRankIterations()),
                                        "the task vector of " + name + " of " + models.get(i).directory(), warn);
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
        }
        return out;
    }

    /**
     * One off-heap buffer per checkpoint that a tensor is read into with positional reads before native code sees it:
     * a checkpoint truncated by another process meanwhile fails the read with the file named, where native code
     * reading the file mapping would kill the JVM with SIGBUS. Each buffer grows to the largest tensor read into it.
     */
    private static final class TensorBuffers implements AutoCloseable {
        private final Arena[] arenas;
        private final MemorySegment[] buffers;

        TensorBuffers(int slots) {
            arenas = new Arena[slots];
            buffers = new MemorySegment[slots];
        }

        Tensor read(int slot, Checkpoint from, String name) {
            TensorInfo info = from.info(name);
            DType dtype = info.dtype().toMergeDType().orElseThrow(
                    () -> new IllegalArgumentException(from.directory() + ": tensor " + name + " is not a float tensor"));
            long bytes = info.byteSize();
            if (buffers[slot] == null || buffers[slot].byteSize() < bytes) {
                if (arenas[slot] != null) arenas[slot].close();
                arenas[slot] = Arena.ofShared();
                buffers[slot] = arenas[slot].allocate(Math.max(bytes, 64), 64);
            }
            MemorySegment dst = buffers[slot].asSlice(0, bytes);
            try {
                from.read(name, 0, dst);
            } catch (java.io.IOException e) {
                throw new java.io.UncheckedIOException(e);
            }
            return new Tensor(dst, info.elementCount(), dtype, Tensor.Memory.HOST);
        }

        @Override
        public void close() {
            for (Arena a : arenas) if (a != null) a.close();
        }
    }

    // The value where it converged; NaN, with a warning, where it did not.
    private static double checked(StableRank s, String what, Consumer<String> warn) {
        if (s.converged()) return s.value();
        warn.accept(String.format(java.util.Locale.ROOT,
                "stable rank of %s did not converge to %.0e in %d iterations (residual %.2e); NaN (raise --iterations)",
                what, STABLE_RANK_TOLERANCE, s.iterations(), s.residual()));
        return Double.NaN;
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

    /** Relative accuracy of a stable rank: the residual test that stops the iteration (see {@link #estimateStableRank}). */
    public static final double STABLE_RANK_TOLERANCE = 1e-6;

    /** Vectors iterated at once: 32, each in two f32 parts, fill the product kernels' 64-wide tiles. */
    static final int STABLE_RANK_BLOCK = 32;

    /**
     * A stable rank and how it was found: {@code converged} when the residual test held (sigma_max^2, hence the
     * stable rank, within {@link #STABLE_RANK_TOLERANCE} relative), after {@code iterations} products with
     * {@code W^T W}; {@code residual} is the last relative residual.
     */
    public record StableRank(double value, boolean converged, int iterations, double residual) {}

    /** The stable rank to {@link #STABLE_RANK_TOLERANCE}, NaN if it did not converge in {@code maxIterations}. */
    public static double stableRank(Context ctx, Matrix w, int maxIterations) {
        StableRank s = estimateStableRank(ctx, w, maxIterations);
        return s.converged() ? s.value() : Double.NaN;
    }

    /**
     * Stable rank {@code ||W||_F^2 / sigma_max(W)^2} of a rows x cols matrix (host tensor of any float dtype), by
     * block subspace iteration with Rayleigh-Ritz on {@code A = W^T W} (or {@code W W^T}, whichever is smaller,
     * of dimension m): a block V of {@code min(32, m)} orthonormal vectors from a fixed random start; each
     * iteration forms {@code Z = A V} with two f64 products ({@code smelter_product}, the block in two f32 parts,
     * so it keeps f64 accuracy), takes the top eigenpair (theta, y) of {@code V^T A V}, and stops when the
     * residual {@code |Z y - theta V y| <= 1e-6 theta}; else V becomes an orthonormal basis of Z. theta is a
     * Rayleigh quotient, at most sigma_max^2, and the residual bounds its distance to an eigenvalue (the top one,
     * which a random start does not miss): sigma_max^2 and the stable rank are within 1e-6 relative. A matrix
     * with m <= 32 is exact after one iteration. {@code ||W||_F^2} comes from {@code smelter_pair_stats}.
     */
    public static StableRank estimateStableRank(Context ctx, Matrix w, int maxIterations) {
        if (maxIterations < 1) throw new IllegalArgumentException("at least one iteration, got " + maxIterations);
        PairStats s = new PairStats(1);
        ctx.pairStats(List.of(w.tensor()), null, null, null, s);
        double frobenius2 = s.dot(0, 0);
        if (!(frobenius2 > 0 && Double.isFinite(frobenius2))) return new StableRank(Double.NaN, true, 0, 0);
        boolean onColumns = w.cols() <= w.rows();  // the block lives in the smaller space
        int m = (int) Math.min(w.rows(), w.cols()), b = Math.min(STABLE_RANK_BLOCK, m);
        try (Arena arena = Arena.ofConfined()) {
            BlockProducts products = new BlockProducts(ctx, w, b, arena);
            DMatrixRMaj v = orthonormalBasis(randomStart(m, b));
            EigenDecomposition_F64<DMatrixRMaj> eig = DecompositionFactory_DDRM.eig(b, true, true);
            double theta = 0, residual = Double.NaN;
            for (int it = 1; it <= maxIterations; it++) {
                DMatrixRMaj u = onColumns ? products.times(v) : products.transposeTimes(v);  // W V or W^T V
                DMatrixRMaj z = onColumns ? products.transposeTimes(u) : products.times(u);  // A V
                DMatrixRMaj h = CommonOps_DDRM.multTransA(u, u, null);                     // V^T A V
                if (!allFinite(h) || !eig.decompose(h)) return new StableRank(Double.NaN, false, it, Double.NaN);
                int top = 0;
                for (int i = 1; i < b; i++) if (eig.getEigenvalue(i).real > eig.getEigenvalue(top).real) top = i;
                theta = eig.getEigenvalue(top).real;
                DMatrixRMaj y = eig.getEigenVector(top);
                DMatrixRMaj r = CommonOps_DDRM.mult(z, y, null), vy = CommonOps_DDRM.mult(v, y, null);
                CommonOps_DDRM.addEquals(r, -theta, vy);
                residual = theta > 0 ? NormOps_DDRM.normF(r) / (theta * NormOps_DDRM.normF(vy)) : Double.NaN;
                if (!(theta > 0)) return new StableRank(Double.NaN, true, it, residual);  // W is 0 to f64 precision
                if (residual <= STABLE_RANK_TOLERANCE) return new StableRank(frobenius2 / theta, true, it, residual);
                v = orthonormalBasis(z);
            }
            return new StableRank(frobenius2 / theta, false, maxIterations, residual);
        }
    }

    /** W M and W^T M for a block M of f64 columns, by two f64 products of its two f32 parts (hi + lo). */
    private static final class BlockProducts {
        private final Context ctx;
        private final Matrix w;
        private final int b;
        private final Tensor rowsParts, colsParts;  // [M_hi M_lo] as rows x 2b, and [M_hi; M_lo]^T as 2b x cols
        private final MemorySegment rowsOut, colsOut;

        BlockProducts(Context ctx, Matrix w, int b, Arena arena) {
            this.ctx = ctx;
            this.w = w;
            this.b = b;
            rowsParts = Tensor.allocate(arena, DType.F32, w.rows() * 2 * b);
            colsParts = Tensor.allocate(arena, DType.F32, 2 * b * w.cols());
            rowsOut = arena.allocate(w.rows() * 2 * b * Double.BYTES, Double.BYTES);
            colsOut = arena.allocate(w.cols() * 2 * b * Double.BYTES, Double.BYTES);
        }

        /** {@code x} as two f32 parts whose sum is x to f64 precision: the high part at element {@code hiAt}, the low at {@code loAt}. */
        private static void putSplit(Tensor parts, long hiAt, long loAt, double x) {
            float hi = (float) x;
            parts.data().setAtIndex(ValueLayout.JAVA_FLOAT, hiAt, hi);
            parts.data().setAtIndex(ValueLayout.JAVA_FLOAT, loAt, (float) (x - hi));
        }

        /** W M, M cols x b. */
        DMatrixRMaj times(DMatrixRMaj m) {
            long cols = w.cols();
            for (int i = 0; i < cols; i++)
                for (int j = 0; j < b; j++) putSplit(colsParts, j * cols + i, (b + j) * cols + i, m.get(i, j));
            ctx.rowProductF64(w, null, new Matrix(colsParts, 2L * b, cols), null, rowsOut, false);
            return folded(rowsOut, (int) w.rows());
        }

        /** W^T M, M rows x b. */
        DMatrixRMaj transposeTimes(DMatrixRMaj m) {
            long rows = w.rows();
            for (int i = 0; i < rows; i++)
                for (int j = 0; j < b; j++) putSplit(rowsParts, (long) i * 2 * b + j, (long) i * 2 * b + b + j, m.get(i, j));
            ctx.columnProductF64(w, null, new Matrix(rowsParts, rows, 2L * b), null, null, colsOut, false);
            return folded(colsOut, (int) w.cols());
        }

        // n x 2b products of the two parts -> n x b: hi part + lo part.
        private DMatrixRMaj folded(MemorySegment out, int n) {
            DMatrixRMaj r = new DMatrixRMaj(n, b);
            for (int i = 0; i < n; i++)
                for (int j = 0; j < b; j++)
                    r.set(i, j, out.getAtIndex(ValueLayout.JAVA_DOUBLE, (long) i * 2 * b + j)
                            + out.getAtIndex(ValueLayout.JAVA_DOUBLE, (long) i * 2 * b + b + j));
            return r;
        }
    }

    // A fixed Gaussian start, so results repeat.
    private static DMatrixRMaj randomStart(int m, int b) {
        SplittableRandom r = new SplittableRandom(0x5EED);
        DMatrixRMaj v = new DMatrixRMaj(m, b);
        for (int i = 0; i < v.data.length; i++) {
            double u1 = r.nextDouble(), u2 = r.nextDouble();
            v.data[i] = Math.sqrt(-2 * Math.log1p(-u1)) * Math.cos(2 * Math.PI * u2);
        }
        return v;
    }

    private static DMatrixRMaj orthonormalBasis(DMatrixRMaj z) {
        QRDecomposition<DMatrixRMaj> qr = DecompositionFactory_DDRM.qr(z.numRows, z.numCols);
        if (!qr.decompose(z.copy())) throw new ArithmeticException("QR decomposition failed");
        return qr.getQ(null, true);
    }

    private static boolean allFinite(DMatrixRMaj m) {
        for (double x : m.data) if (!Double.isFinite(x)) return false;
        return true;
    }

    private static StableRank taskStableRank(Context ctx, Tensor model, Tensor base, long rows, long cols, int iterations) {
        try (Arena arena = Arena.ofConfined()) {
            Tensor delta = Tensor.allocate(arena, DType.F32, model.count());
            MergeSpec minus = MergeSpec.linear(1, -1).toBuilder().normalize(false).build();
            ctx.merge(minus, null, List.of(model, base), delta);  // f32 x - base, as the merge forms deltas
            return estimateStableRank(ctx, new Matrix(delta, rows, cols), iterations);
        }
    }
}
