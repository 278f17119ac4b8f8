package dev.smelter.methods;

import dev.smelter.Context;
import dev.smelter.PairStats;
import dev.smelter.Tensor;
import java.util.List;

/**
 * mergekit's {@code nuslerp}: spherical interpolation of two vectors {@code v0, v1} (the two models, or their task
 * vectors about base_model, which is then added back) at {@code t = w_1 / (w_0 + w_1)} (0.5 when
 * {@code |w_0 + w_1| < 1e-6}). With {@code cos} the dot product of {@code v_k / max(|v_k|, 1e-7)} clamped to [-1, 1],
 * {@code theta = acos(cos)}: {@code (sin((1-t) theta) v0 + sin(t theta) v1) / sin(theta)}, and
 * {@code (1-t) v0 + t v1} where {@code |sin(theta)| < 1e-8}. The vectors are the whole tensor
 * ({@code nuslerp_flatten}, the default), else the rows of its last dimension, or with {@code nuslerp_row_wise}
 * the vectors along its first dimension (a matrix's columns; a 1-D tensor is one vector either way).
 *
 * <p>Flattened, the two coefficients come from the tensor's exact dot products ({@link Context#pairStats}) and
 * the result is one native merge, as for {@code slerp}. Per row or column each vector has its own coefficients,
 * which no native merge takes: that runs in Java ({@link HostMerge}), the dot products of each vector in f64 (the
 * products of f32 values are exact), then the combination in f64 with one rounding to the output dtype.
 */
public final class NuSlerp {
    private NuSlerp() {}

    /** mergekit's floor of a norm when normalizing. */
    public static final double NORM_EPS = 1e-7;
    /** mergekit's colinearity test: |sin(theta)| below this interpolates linearly. */
    public static final double SIN_EPS = 1e-8;

    /** mergekit's t from the two weights. */
    public static double t(double w0, double w1) {
        double sum = w0 + w1;
        return Math.abs(sum) < 1e-6 ? 0.5 : w1 / sum;
    }

    /** The coefficients of {@code v0} and {@code v1} from their dot product and squared norms. */
    public static double[] coefficients(double t, double dot, double squares0, double squares1) {
        double cos = dot / (Math.max(Math.sqrt(squares0), NORM_EPS) * Math.max(Math.sqrt(squares1), NORM_EPS));
        double theta = Math.acos(Math.max(-1.0, Math.min(1.0, cos)));
        double sin = Math.sin(theta);
        if (Double.isNaN(cos)) return new double[] {Double.NaN, Double.NaN};
        if (Math.abs(sin) < SIN_EPS) return new double[] {1 - t, t};
        return new double[] {Math.sin((1 - t) * theta) / sin, Math.sin(t * theta) / sin};
    }

    /** Flattened: the coefficients of the two vectors from their statistics. */
    public static double[] coefficients(double t, PairStats s) {
        return coefficients(t, s.dot(0, 1), s.dot(0, 0), s.dot(1, 1));
    }

    /** Per vector of the last dimension ({@code rowWise} false) or of the first ({@code rowWise} true). */
    public static HostMerge perVector(double t, boolean rowWise) {
        return (ctx, base, models, shape, out) -> merge(t, rowWise, base, models, shape, out);
    }

    static Context.MergeCounts merge(double t, boolean rowWise, Tensor base, List<Tensor> models, long[] shape, Tensor out) {
        HostArithmetic.requireHost(base, models, out);
        if (models.size() != 2) throw new IllegalArgumentException("nuslerp merges exactly two models");
        Tensor x0 = models.get(0), x1 = models.get(1);
        long n = out.count();
        if (n == 0) return HostArithmetic.counts(0);
        // Vectors of `length` elements `stride` apart: rows (stride 1) or, along the first dimension, columns.
        boolean columns = rowWise && shape.length >= 2;
        long inner = columns ? trailing(shape) : 1;
        long len = columns ? n / inner : HostArithmetic.rowLength(shape, n);
        long vectors = columns ? inner : n / len;
        // Columns: at least 64 side by side per block, so that each row's cache line is read once.
        long perBlock = Math.max(columns ? 64 : 1, HostArithmetic.BLOCK / len);
        return HostArithmetic.counts(HostArithmetic.parallel(HostArithmetic.all(base, models, out), vectors, perBlock, (v0, v1) -> {
            long bad = 0;
            for (long v = v0; v < v1; v++) {
                long start = columns ? v : v * len, step = columns ? inner : 1;
                double dot = 0, s0 = 0, s1 = 0;
                for (long k = 0, e = start; k < len; k++, e += step) {
                    double b = base == null ? 0 : base.getFloat(e);
                    double a0 = x0.getFloat(e) - b, a1 = x1.getFloat(e) - b;
                    dot += a0 * a1;
                    s0 += a0 * a0;
                    s1 += a1 * a1;
                }
                double[] c = coefficients(t, dot, s0, s1);
                for (long k = 0, e = start; k < len; k++, e += step) {
                    double b = base == null ? 0 : base.getFloat(e);
                    bad += HostArithmetic.store(out, e, b + c[0] * (x0.getFloat(e) - b) + c[1] * (x1.getFloat(e) - b));
                }
            }
            return bad;
        }));
    }

    /** Elements per index of the first dimension (the product of the trailing dimensions). */
    private static long trailing(long[] shape) {
        long p = 1;
        for (int d = 1; d < shape.length; d++) p *= shape[d];
        return p;
    }
}
