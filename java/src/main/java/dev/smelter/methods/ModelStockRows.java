package dev.smelter.methods;

import dev.smelter.Context;
import dev.smelter.Tensor;
import java.util.List;

/**
 * mergekit's {@code model_stock} with {@code filter_wise: true}: the angle, and so {@code t}, per row of the last
 * dimension (a 1-D tensor is one row). For each row the task vectors {@code d_i = x_i - base} give
 * {@code cos}, the mean over pairs of {@code d_i.d_j / max(|d_i||d_j|, 1e-6)} clamped to [-1, 1],
 * {@code t = N cos / (1 + (N-1) cos)}, and the row of the result {@code base + t (mean_i x_i - base)}
 * ({@link ComposedMethods#modelStock} is the same over the whole tensor).
 *
 * <p>In Java ({@link HostMerge}): each row has its own coefficient, which no native merge takes; the dot products
 * of a row are summed in f64 (the products of f32 values are exact), the result formed in f64 and rounded once to
 * the output dtype. A row whose inputs hold NaN or infinity is NaN, as mergekit's; a finite row whose {@code t}
 * is not finite (the mean cosine at {@code -1/(N-1)}) fails naming the tensor and row.
 */
public final class ModelStockRows {
    private ModelStockRows() {}

    public static HostMerge of(String tensorName) {
        return (ctx, base, models, shape, out) -> merge(tensorName, base, models, shape, out);
    }

    static Context.MergeCounts merge(String tensorName, Tensor base, List<Tensor> models, long[] shape, Tensor out) {
        HostArithmetic.requireHost(base, models, out);
        int n = models.size();
        if (n < 2) throw new IllegalArgumentException("model_stock needs at least two models besides the base");
        long count = out.count();
        if (count == 0) return HostArithmetic.counts(0);
        long row = HostArithmetic.rowLength(shape, count);
        long perBlock = Math.max(1, HostArithmetic.BLOCK / row);
        return HostArithmetic.counts(HostArithmetic.parallel(HostArithmetic.all(base, models, out), count / row, perBlock, (r0, r1) -> {
            double[] d = new double[n];
            double[][] dots = new double[n][n];
            long bad = 0;
            for (long r = r0; r < r1; r++) {
                long s = r * row;
                for (double[] x : dots) java.util.Arrays.fill(x, 0);
                for (long e = s; e < s + row; e++) {
                    double b = base.getFloat(e);
                    for (int i = 0; i < n; i++) d[i] = models.get(i).getFloat(e) - b;
                    for (int i = 0; i < n; i++)
                        for (int j = i; j < n; j++) dots[i][j] += d[i] * d[j];
                }
                double sum = 0;
                boolean finite = true;
                for (int i = 0; i < n; i++) {
                    finite &= Double.isFinite(dots[i][i]);
                    for (int j = i + 1; j < n; j++) {
                        double c = dots[i][j] / Math.max(Math.sqrt(dots[i][i]) * Math.sqrt(dots[j][j]),
                                ComposedMethods.MODEL_STOCK_MIN_NORM_PRODUCT);
                        sum += Math.max(-1.0, Math.min(1.0, c));
                    }
                }
                double cos = sum / (n * (n - 1) / 2.0);
                double t = n * cos / (1 + (n - 1) * cos);
                if (finite && !Double.isFinite(t))
                    throw new ArithmeticException("model_stock: tensor " + tensorName + ", row " + r + ": the mean "
                            + "cosine of the task vectors is " + cos + ", so t = N cos / (1 + (N-1) cos) is " + t);
                for (long e = s; e < s + row; e++) {
                    double b = base.getFloat(e), mean = 0;
                    for (int i = 0; i < n; i++) mean += models.get(i).getFloat(e) - b;
                    bad += HostArithmetic.store(out, e, b + t * (mean / n));
                }
            }
            return bad;
        }));
    }
}
