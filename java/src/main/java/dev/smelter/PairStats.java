package dev.smelter;

/**
 * Statistics of n tensors taken pairwise (dot products, sign conflicts, non-zeros, magnitude-mask overlap,
 * non-finite counts), accumulated over any number of {@link Context#pairStats} calls, e.g. over all tensors of
 * a layer. With a base tensor they are statistics of the task vectors {@code d_i = v_i - base}.
 *
 * <p>Dot products are exact products summed in f64 in one fixed order, so CPU and CUDA give the same bits;
 * squared distances are sums of squared differences (not {@code |a|^2 + |b|^2 - 2<a, b>}, which cancels for
 * near-identical tensors) in the same order. Not thread-safe.
 */
public final class PairStats {
    private final int n;
    final double[] dots, squaredDistances;
    final long[] conflicts, nonzero, kept, nonfinite;
    private Boolean hasKept;  // null until the first call; then whether every call gave thresholds
    private long elements;

    public PairStats(int n) {
        if (n < 1) throw new IllegalArgumentException("n must be >= 1, got " + n);
        this.n = n;
        dots = new double[n * n];
        squaredDistances = new double[n * n];
        conflicts = new long[n * n];
        nonzero = new long[n * n];
        kept = new long[n * n];
        nonfinite = new long[n];
    }

    public int size() {
        return n;
    }

    /** Elements per vector accumulated so far. */
    public long elements() {
        return elements;
    }

    /** Refuses a call that would mix calls with and without thresholds; checked before the arrays change. */
    void requireConsistentMasks(boolean withMasks) {
        if (hasKept != null && hasKept != withMasks)
            throw new IllegalArgumentException("thresholds must be given to every call on the same PairStats or to none");
    }

    void added(long count, boolean withMasks) {
        hasKept = withMasks;
        elements += count;
    }

    /** Whether magnitude thresholds were given, so {@link #bothKept} is meaningful. */
    public boolean hasMasks() {
        return Boolean.TRUE.equals(hasKept);
    }

    /** {@code sum d_i d_j}. */
    public double dot(int i, int j) {
        return dots[i * n + j];
    }

    /** L2 norm of vector i. */
    public double norm(int i) {
        return Math.sqrt(dot(i, i));
    }

    /** Cosine of vectors i and j, within [-1, 1] (rounding can take the quotient an ulp past); NaN when either is zero. */
    public double cosine(int i, int j) {
        double d = norm(i) * norm(j);
        return d > 0 ? Math.clamp(dot(i, j) / d, -1.0, 1.0) : Double.NaN;
    }

    /** {@code |d_i - d_j|^2 = sum (d_i - d_j)^2}, summed from the differences. */
    public double squaredDistance(int i, int j) {
        return squaredDistances[i * n + j];
    }

    /** L2 norm of {@code d_i - d_j}. */
    public double distance(int i, int j) {
        return Math.sqrt(squaredDistance(i, j));
    }

    /** Elements where d_i and d_j are non-zero with opposite signs. */
    public long signConflicts(int i, int j) {
        return conflicts[i * n + j];
    }

    /** Elements where both are non-zero ({@code i == j}: the non-zeros of d_i). */
    public long bothNonzero(int i, int j) {
        return nonzero[i * n + j];
    }

    /** Sign conflicts among the elements where both are non-zero; NaN when there are none. */
    public double signConflictRate(int i, int j) {
        long both = bothNonzero(i, j);
        return both > 0 ? (double) signConflicts(i, j) / both : Double.NaN;
    }

    /** Elements kept by both magnitude masks ({@code i == j}: kept by mask i). */
    public long bothKept(int i, int j) {
        if (!hasMasks()) throw new IllegalStateException("no magnitude thresholds were given");
        return kept[i * n + j];
    }

    /** Jaccard overlap of the kept sets of i and j; NaN when both are empty. */
    public double maskJaccard(int i, int j) {
        long both = bothKept(i, j), union = bothKept(i, i) + bothKept(j, j) - both;
        return union > 0 ? (double) both / union : Double.NaN;
    }

    /** Elements where d_i is NaN or infinite. */
    public long nonfinite(int i) {
        return nonfinite[i];
    }
}
