package dev.smelter.analysis;

import dev.smelter.Context;
import dev.smelter.Matrix;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.List;

/**
 * Linear centered kernel alignment (Kornblith et al. 2019) between two representations of the
 * same rows: {@code CKA = HSIC(X, Y) / sqrt(HSIC(X, X) HSIC(Y, Y))}.
 *
 * <ul>
 *   <li>{@link #feature}: from the centered co-moments {@code ||Cxy||^2 / (||Cxx|| ||Cyy||)}, streamed over
 *       rows ({@link CrossMoments}); memory is {@code d x d}, rows are unbounded.
 *   <li>{@link #gram}: from the double-centered Gram matrices {@code <Kc, Lc> / (||Kc|| ||Lc||)}; memory
 *       is {@code n x n}, for few rows (pooled sentences) of wide layers. Equal to the feature form.
 *   <li>{@link Estimator#UNBIASED}: the unbiased HSIC estimator of Song et al. (2012) in place of
 *       the biased one, from Gram matrices; {@link #minibatch} averages it over row batches as in
 *       Nguyen et al. (2021), each batch normalised by its own size.
 * </ul>
 * A CKA whose denominator is not positive (a constant representation, or negative unbiased
 * self-HSIC values) is NaN rather than a number that looks valid.
 */
public final class Cka {
    private Cka() {}

    public enum Estimator {
        BIASED,
        UNBIASED
    }

    /** CKA from centered co-moments (row-major dx x dy, dx x dx, dy x dy). */
    public static double fromComoments(double[] cxy, double[] cxx, double[] cyy) {
        return ratio(squaredNorm(cxy), Math.sqrt(squaredNorm(cxx)) * Math.sqrt(squaredNorm(cyy)));
    }

    /** Feature-space CKA of x and y (same rows), optionally row-weighted (0 leaves a row out). */
    public static double feature(Context ctx, Matrix x, Matrix y, float[] rowWeights) {
        return feature(ctx, RowSource.of(x), RowSource.of(y), rowWeights);
    }

    /** {@link #feature(Context, Matrix, Matrix, float[])} of rows read a chunk at a time. */
    public static double feature(Context ctx, RowSource x, RowSource y, float[] rowWeights) {
        CrossMoments m = new CrossMoments((int) x.cols(), (int) y.cols(), true, CrossMoments.DEFAULT_CHUNK_ROWS);
        m.add(ctx, x, y, rowWeights);
        return ratio(m.cxySquaredNorm(), Math.sqrt(m.cxxSquaredNorm()) * Math.sqrt(m.cyySquaredNorm()));
    }

    /**
     * Every CKA between the representations xs (rows of the result) and ys (columns), all of the
     * same rows, in feature form: one co-moment pass per representation and one per pair.
     */
    public static double[][] featureMatrix(Context ctx, List<Matrix> xs, List<Matrix> ys, float[] rowWeights) {
        return featureMatrixOf(ctx, sources(xs), sources(ys), rowWeights);
    }

    /** {@link #featureMatrix} of rows read a chunk at a time. */
    public static double[][] featureMatrixOf(Context ctx, List<RowSource> xs, List<RowSource> ys, float[] rowWeights) {
        double[] nx = new double[xs.size()], ny = new double[ys.size()];
        for (int i = 0; i < xs.size(); i++) nx[i] = Math.sqrt(selfMoments(ctx, xs.get(i), rowWeights).cxxSquaredNorm());
        for (int j = 0; j < ys.size(); j++) ny[j] = Math.sqrt(selfMoments(ctx, ys.get(j), rowWeights).cxxSquaredNorm());
        double[][] out = new double[xs.size()][ys.size()];
        for (int i = 0; i < xs.size(); i++)
            for (int j = 0; j < ys.size(); j++) {
                RowSource x = xs.get(i), y = ys.get(j);
                CrossMoments m = new CrossMoments((int) x.cols(), (int) y.cols(), false, CrossMoments.DEFAULT_CHUNK_ROWS);
                m.add(ctx, x, y, rowWeights);
                out[i][j] = ratio(m.cxySquaredNorm(), nx[i] * ny[j]);
            }
        return out;
    }

    private static List<RowSource> sources(List<Matrix> ms) {
        return ms.stream().map(RowSource::of).toList();
    }

    private static CrossMoments selfMoments(Context ctx, RowSource x, float[] rowWeights) {
        CrossMoments m = new CrossMoments((int) x.cols(), 0, true, CrossMoments.DEFAULT_CHUNK_ROWS);
        m.add(ctx, x, null, rowWeights);
        return m;
    }

    /** Gram-form CKA of x and y (same rows). */
    public static double gram(Context ctx, Matrix x, Matrix y, Estimator estimator) {
        return gram(ctx, RowSource.of(x), RowSource.of(y), estimator);
    }

    /** {@link #gram(Context, Matrix, Matrix, Estimator)}; each matrix is read whole, one at a time. */
    public static double gram(Context ctx, RowSource x, RowSource y, Estimator estimator) {
        if (x.rows() != y.rows()) throw new IllegalArgumentException("x has " + x.rows() + " rows, y has " + y.rows());
        int n = (int) x.rows();
        // Fresh matrices: prepared in place rather than through fromGrams' defensive copies.
        return ckaOfPrepared(prepare(gramMatrix(ctx, x), n, estimator), prepare(gramMatrix(ctx, y), n, estimator), n,
                estimator);
    }

    /** Gram-form CKA of every pair (xs rows, ys columns); keeps the Gram matrices of ys in memory. */
    public static double[][] gramMatrixCka(Context ctx, List<Matrix> xs, List<Matrix> ys, Estimator estimator) {
        return gramMatrixCkaOf(ctx, sources(xs), sources(ys), estimator);
    }

    /** {@link #gramMatrixCka} of matrices read whole, one at a time. */
    public static double[][] gramMatrixCkaOf(Context ctx, List<RowSource> xs, List<RowSource> ys, Estimator estimator) {
        int n = (int) xs.getFirst().rows();
        for (RowSource m : xs) if (m.rows() != n) throw new IllegalArgumentException("representations differ in rows");
        for (RowSource m : ys) if (m.rows() != n) throw new IllegalArgumentException("representations differ in rows");
        double[][] ly = new double[ys.size()][];
        double[] selfY = new double[ys.size()];
        for (int j = 0; j < ys.size(); j++) {
            ly[j] = prepare(gramMatrix(ctx, ys.get(j)), n, estimator);
            selfY[j] = hsic(ly[j], ly[j], n, estimator);
        }
        double[][] out = new double[xs.size()][ys.size()];
        for (int i = 0; i < xs.size(); i++) {
            double[] kx = prepare(gramMatrix(ctx, xs.get(i)), n, estimator);
            double selfX = hsic(kx, kx, n, estimator);
            for (int j = 0; j < ys.size(); j++) out[i][j] = ratioOfProducts(hsic(kx, ly[j], n, estimator), selfX, selfY[j]);
        }
        return out;
    }

    /**
     * Minibatch CKA (Nguyen et al. 2021): rows are cut into batches of {@code batchRows} (a last
     * batch of fewer than 4 rows is left out: the estimator needs 4), each batch's unbiased HSIC
     * values are computed from its own Gram matrices, and CKA is formed from their means.
     */
    public static double minibatch(Context ctx, Matrix x, Matrix y, int batchRows) {
        return minibatch(ctx, RowSource.of(x), RowSource.of(y), batchRows);
    }

    /** {@link #minibatch(Context, Matrix, Matrix, int)} of rows read a batch at a time. */
    public static double minibatch(Context ctx, RowSource x, RowSource y, int batchRows) {
        if (batchRows < 4) throw new IllegalArgumentException("batches need at least 4 rows, got " + batchRows);
        if (x.rows() != y.rows()) throw new IllegalArgumentException("x has " + x.rows() + " rows, y has " + y.rows());
        double xy = 0, xx = 0, yy = 0;
        int batches = 0;
        for (long r = 0; r + 4 <= x.rows(); r += batchRows) {
            int n = (int) Math.min(batchRows, x.rows() - r);
            double[] k = prepare(gramMatrix(ctx, x.rows(r, n)), n, Estimator.UNBIASED);
            double[] l = prepare(gramMatrix(ctx, y.rows(r, n)), n, Estimator.UNBIASED);
            xy += hsic(k, l, n, Estimator.UNBIASED);
            xx += hsic(k, k, n, Estimator.UNBIASED);
            yy += hsic(l, l, n, Estimator.UNBIASED);
            batches++;
        }
        x.releaseBuffer();
        y.releaseBuffer();
        if (batches == 0) return Double.NaN;
        return ratioOfProducts(xy / batches, xx / batches, yy / batches);
    }

    /** CKA from two n x n Gram matrices of the same rows (any centering; they are re-centered here). */
    public static double fromGrams(double[] k, double[] l, int n, Estimator estimator) {
        return ckaOfPrepared(prepare(k.clone(), n, estimator), prepare(l.clone(), n, estimator), n, estimator);
    }

    private static double ckaOfPrepared(double[] k, double[] l, int n, Estimator estimator) {
        return ratioOfProducts(hsic(k, l, n, estimator), hsic(k, k, n, estimator), hsic(l, l, n, estimator));
    }

    /**
     * The Gram matrix {@code (x - m)(x - m)^T} of a matrix about its f32-rounded column means, formed in
     * f64 ({@link Context#rowProductF64}). The residual mean left by rounding is removed by {@link #prepare}.
     */
    public static double[] gramMatrix(Context ctx, RowSource x) {
        try {
            return gramMatrix(ctx, x.rows(0, x.rows()));
        } finally {
            x.releaseBuffer();
        }
    }

    /** {@link #gramMatrix(Context, RowSource)} of a matrix in memory. */
    public static double[] gramMatrix(Context ctx, Matrix x) {
        int n = (int) x.rows();
        if ((long) n * n > Integer.MAX_VALUE - 8) throw new IllegalArgumentException(n + " rows are too many for a Gram matrix");
        double[] sums = new double[(int) x.cols()];
        ctx.columnStats(x, null, null, sums, null);
        float[] mean = new float[sums.length];
        for (int i = 0; i < sums.length; i++) mean[i] = n == 0 ? 0 : (float) (sums[i] / n);
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment out = arena.allocate((long) n * n * Double.BYTES, Double.BYTES);
            ctx.rowProductF64(x, mean, x, mean, out, false);
            return out.toArray(ValueLayout.JAVA_DOUBLE);
        }
    }

    // BIASED: double-centers in place (H K H). UNBIASED: zeroes the diagonal (the estimator's K~).
    static double[] prepare(double[] k, int n, Estimator estimator) {
        if (estimator == Estimator.UNBIASED) {
            for (int i = 0; i < n; i++) k[i * n + i] = 0;
            return k;
        }
        double[] row = new double[n];
        double all = 0;
        for (int i = 0; i < n; i++) {
            double s = 0;
            for (int j = 0; j < n; j++) s += k[i * n + j];
            row[i] = s / n;
            all += s;
        }
        all /= (double) n * n;
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++) k[i * n + j] = k[i * n + j] - row[i] - row[j] + all;  // K symmetric
        return k;
    }

    // HSIC up to a factor shared by all three terms of a CKA: <K, L> for centered K and L (biased),
    // or Song et al.'s unbiased estimator for K, L with zero diagonals.
    static double hsic(double[] k, double[] l, int n, Estimator estimator) {
        double trace = Dot2.dot(k, l);
        if (estimator == Estimator.BIASED) return trace;
        if (n < 4) return Double.NaN;
        double sumK = 0, sumL = 0, cross = 0;
        for (int i = 0; i < n; i++) {
            double rk = 0, rl = 0;
            for (int j = 0; j < n; j++) {
                rk += k[i * n + j];
                rl += l[i * n + j];
            }
            sumK += rk;
            sumL += rl;
            cross += rk * rl;
        }
        return (trace + sumK * sumL / ((n - 1.0) * (n - 2.0)) - 2.0 * cross / (n - 2.0)) / (n * (n - 3.0));
    }

    private static double ratioOfProducts(double xy, double xx, double yy) {
        double p = xx * yy;
        return p > 0 && Double.isFinite(p) ? ratio(xy, Math.sqrt(p)) : Double.NaN;
    }

    // Clamped to [-1, 1]: by Cauchy-Schwarz a CKA is within it, rounding may take the quotient an ulp beyond.
    private static double ratio(double num, double den) {
        return den > 0 && Double.isFinite(den) && Double.isFinite(num) ? Math.clamp(num / den, -1.0, 1.0) : Double.NaN;
    }

    static double squaredNorm(double[] a) {  // see Dot2 for why compensated
        return Dot2.dot(a, a);
    }
}
