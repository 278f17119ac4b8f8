package dev.smelter.analysis;

/**
 * A sum of products as if in twice the f64 precision, then rounded (Ogita, Rump and Oishi's Dot2): each product
 * is split exactly by a fused multiply-add, the sums by TwoSum, and the error terms are added up apart. A plain f64
 * sum of n^2 Gram or d^2 co-moment terms carries an error of about n eps of the result, which near CKA = 1 is all
 * of {@code 1 - CKA}; this one carries about eps. Not thread-safe.
 */
final class Dot2 {
    private double sum, error;

    void add(double a, double b) {
        double p = a * b, pe = Math.fma(a, b, -p);
        double t = sum + p, z = t - sum;
        error += (sum - (t - z)) + (p - z) + pe;
        sum = t;
    }

    double value() {
        return sum + error;
    }

    /** {@code sum a_i b_i}. */
    static double dot(double[] a, double[] b) {
        Dot2 d = new Dot2();
        for (int i = 0; i < a.length; i++) d.add(a[i], b[i]);
        return d.value();
    }
}
