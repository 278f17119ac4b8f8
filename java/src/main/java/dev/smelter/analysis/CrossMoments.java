package dev.smelter.analysis;

import dev.smelter.Context;
import dev.smelter.Matrix;
import dev.smelter.Tensor;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

/**
 * Centered second moments of two representations of the same rows, accumulated chunk by chunk so
 * that the number of rows (tokens) is unbounded: {@code Cxy = sum_r w_r (x_r - mean_x)(y_r - mean_y)^T},
 * and {@code Cxx}, {@code Cyy} likewise.
 *
 * <p>Why not raw moments: {@code sum x y^T - n mean_x mean_y^T} cancels catastrophically for
 * activations with a large mean and a small spread (in f32, CKA above 1 for rows of mean 100 and
 * standard deviation 0.01). Here every element is shifted by a provisional mean (the first chunk's,
 * rounded to f32) before it is multiplied, the kernel forms the products and their sums in f64
 * ({@link Context#columnProductF64}: the shift of an f32 value is exact), adding every chunk to the
 * same f64 sums, and the final centering {@code S - s_x s_y^T / W} only removes the small difference
 * between the provisional and the true mean. f64 keeps {@code 1 - CKA} of near-identical
 * representations accurate, where f32 sums leave it at rounding noise (docs/ANALYSIS.md).
 *
 * <p>Not thread-safe. Host matrices are processed {@link #chunkRows} rows at a time; a device
 * matrix is one chunk.
 */
public final class CrossMoments {
    /** Rows per kernel call: bounds the f32 summation length inside one chunk. */
    public static final int DEFAULT_CHUNK_ROWS = 4096;

    private final int dx;
    private final int dy;
    private final boolean withY;
    private final int chunkRows;
    private float[] shiftX;
    private float[] shiftY;
    private double weight;
    private long rows;
    private final double[] sumX;
    private final double[] sumY;
    private final MemorySegment sxx;  // f64 sums of shifted products, native, added to by the kernel
    private final MemorySegment syy;
    private final MemorySegment sxy;

    /**
     * Moments of x alone ({@code dy == 0}) or of x and y. With y, {@code Cxx}, {@code Cyy} and
     * {@code Cxy} are kept; pass {@code needSelf = false} to keep only {@code Cxy} (and the sums).
     */
    public CrossMoments(int dx, int dy, boolean needSelf, int chunkRows) {
        if (dx <= 0 || dy < 0) throw new IllegalArgumentException("bad widths " + dx + ", " + dy);
        if ((long) Math.max(dx, dy) * Math.max(dx, dy) > Integer.MAX_VALUE - 8)
            throw new IllegalArgumentException("widths " + dx + ", " + dy + " are too large for host co-moments");
        if (chunkRows <= 0) throw new IllegalArgumentException("chunk rows must be positive");
        this.dx = dx;
        this.dy = dy;
        this.withY = dy > 0;
        this.chunkRows = chunkRows;
        this.sumX = new double[dx];
        this.sumY = withY ? new double[dy] : null;
        this.sxx = needSelf || !withY ? zeros((long) dx * dx) : null;
        this.syy = needSelf && withY ? zeros((long) dy * dy) : null;
        this.sxy = withY ? zeros((long) dx * dy) : null;
    }

    private static MemorySegment zeros(long count) {  // freed with this object
        return Arena.ofAuto().allocate(count * Double.BYTES, Double.BYTES).fill((byte) 0);
    }

    /** Moments of one representation (covariance). */
    public static CrossMoments of(int d) {
        return new CrossMoments(d, 0, true, DEFAULT_CHUNK_ROWS);
    }

    /** Adds rows of x (and of y, same rows) with optional row weights (0 leaves a row out). */
    public void add(Context ctx, Matrix x, Matrix y, float[] rowWeights) {
        add(ctx, RowSource.of(x), y == null ? null : RowSource.of(y), rowWeights);
    }

    /**
     * {@link #add(Context, Matrix, Matrix, float[])} of rows read a chunk at a time (host sources: {@link #chunkRows} rows
     * per chunk, the sources' buffers are released at the end).
     */
    public void add(Context ctx, RowSource x, RowSource y, float[] rowWeights) {
        if (x.cols() != dx) throw new IllegalArgumentException("x has " + x.cols() + " columns, expected " + dx);
        if (withY) {
            if (y == null) throw new IllegalArgumentException("y is missing");
            if (y.cols() != dy) throw new IllegalArgumentException("y has " + y.cols() + " columns, expected " + dy);
            if (y.rows() != x.rows())
                throw new IllegalArgumentException("x has " + x.rows() + " rows, y has " + y.rows());
        } else if (y != null) {
            throw new IllegalArgumentException("moments of x alone were asked for, but y was given");
        }
        if (rowWeights != null && rowWeights.length != x.rows())
            throw new IllegalArgumentException(rowWeights.length + " row weights for " + x.rows() + " rows");
        boolean device = x.onDevice() || (withY && y.onDevice());
        long step = device ? Math.max(1, x.rows()) : chunkRows;
        try {
            for (long r = 0; r < x.rows(); r += step) {
                long n = Math.min(step, x.rows() - r);
                Matrix xc = x.rows(r, n);
                Matrix yc = !withY ? null : y.rows(r, n);
                float[] wc = rowWeights == null ? null : java.util.Arrays.copyOfRange(rowWeights, (int) r, (int) (r + n));
                addChunk(ctx, xc, yc, wc, n);
            }
        } finally {
            x.releaseBuffer();
            if (y != null) y.releaseBuffer();
        }
    }

    private void addChunk(Context ctx, Matrix x, Matrix y, float[] w, long n) {
        double chunkWeight = 0;
        if (w == null) chunkWeight = n;
        else for (float v : w) chunkWeight += v;
        if (chunkWeight == 0) return;
        if (shiftX == null) {  // provisional mean: this chunk's
            shiftX = provisionalMean(ctx, x, w, chunkWeight);
            if (withY) shiftY = provisionalMean(ctx, y, w, chunkWeight);
        }
        ctx.columnStats(x, shiftX, w, sumX, null);
        if (withY) ctx.columnStats(y, shiftY, w, sumY, null);
        if (sxx != null) ctx.columnProductF64(x, shiftX, x, shiftX, w, sxx, true);
        if (syy != null) ctx.columnProductF64(y, shiftY, y, shiftY, w, syy, true);
        if (sxy != null) ctx.columnProductF64(x, shiftX, y, shiftY, w, sxy, true);
        weight += chunkWeight;
        rows += n;
    }

    private static float[] provisionalMean(Context ctx, Matrix m, float[] w, double weight) {
        double[] s = new double[(int) m.cols()];
        ctx.columnStats(m, null, w, s, null);
        float[] mean = new float[s.length];
        for (int i = 0; i < s.length; i++) mean[i] = (float) (s[i] / weight);
        return mean;
    }

    /** Total row weight (rows for unweighted input). */
    public double weight() {
        return weight;
    }

    /** Rows seen, weighted or not. */
    public long rows() {
        return rows;
    }

    /** Weighted column means of x. */
    public double[] meanX() {
        return mean(sumX, shiftX, dx);
    }

    /** Centered co-moment of x with itself, row-major dx x dx (divide by weight - 1 for a covariance). */
    public double[] cxx() {
        if (sxx == null) throw new IllegalStateException("x moments were not kept");
        return centered(sxx, sumX, sumX, dx, dx);
    }

    /** Centered co-moment of y with itself, dy x dy. */
    public double[] cyy() {
        if (syy == null) throw new IllegalStateException("y moments were not kept");
        return centered(syy, sumY, sumY, dy, dy);
    }

    /** Centered cross co-moment, dx x dy. */
    public double[] cxy() {
        if (sxy == null) throw new IllegalStateException("no y");
        return centered(sxy, sumX, sumY, dx, dy);
    }

    /** {@code ||Cxx||_F^2}, without forming the matrix, summed as by {@link Dot2}. */
    public double cxxSquaredNorm() {
        if (sxx == null) throw new IllegalStateException("x moments were not kept");
        return centeredSquaredNorm(sxx, sumX, sumX, dx, dx);
    }

    /** {@code ||Cyy||_F^2}. */
    public double cyySquaredNorm() {
        if (syy == null) throw new IllegalStateException("y moments were not kept");
        return centeredSquaredNorm(syy, sumY, sumY, dy, dy);
    }

    /** {@code ||Cxy||_F^2}. */
    public double cxySquaredNorm() {
        if (sxy == null) throw new IllegalStateException("no y");
        return centeredSquaredNorm(sxy, sumX, sumY, dx, dy);
    }

    private double centeredSquaredNorm(MemorySegment sums, double[] a, double[] b, int na, int nb) {
        if (weight == 0) return 0;
        Dot2 s = new Dot2();
        double[] row = new double[nb];
        for (int i = 0; i < na; i++) {
            MemorySegment.copy(sums, ValueLayout.JAVA_DOUBLE, (long) i * nb * Double.BYTES, row, 0, nb);
            for (int j = 0; j < nb; j++) {
                double c = row[j] - a[i] * b[j] / weight;
                s.add(c, c);
            }
        }
        return s.value();
    }

    private double[] centered(MemorySegment sums, double[] a, double[] b, int na, int nb) {
        if (weight == 0) return new double[na * nb];
        double[] c = sums.toArray(ValueLayout.JAVA_DOUBLE);
        for (int i = 0; i < na; i++)
            for (int j = 0; j < nb; j++) c[i * nb + j] -= a[i] * b[j] / weight;
        return c;
    }

    private double[] mean(double[] sums, float[] shift, int d) {
        double[] m = new double[d];
        for (int i = 0; i < d; i++) m[i] = weight == 0 ? Double.NaN : shift[i] + sums[i] / weight;
        return m;
    }
}
