package dev.smelter.methods;

import dev.smelter.PairStats;

/**
 * The per-tensor coefficients of the composed methods, computed in double from the exact dot products of the
 * tensors ({@link PairStats}). Each method's output is a linear combination of its inputs, so it runs as one
 * linear merge with these weights. The definitions follow mergekit's {@code merge_methods/slerp.py},
 * {@code model_stock.py}, {@code karcher.py} and {@code multislerp.py}; where mergekit works on the tensors
 * (normalized copies, intermediate estimates rounded to the tensor dtype), the same algebra is carried out here
 * exactly on the coefficients of the inputs.
 */
public final class ComposedMethods {
    private ComposedMethods() {}

    /** mergekit's slerp: above this |cos| the two vectors count as colinear and are interpolated linearly. */
    public static final double SLERP_DOT_THRESHOLD = 0.9995;
    /** mergekit's slerp: a vector is normalized only when its norm is above this. */
    public static final double SLERP_EPS = 1e-8;
    /** mergekit's model_stock: the lower clamp of the product of two task-vector norms. */
    public static final double MODEL_STOCK_MIN_NORM_PRODUCT = 1e-6;

    /**
     * slerp, statistics of the points {@code [other, base]}: the weights of {@code [other, base]}. mergekit's
     * v0 is the base (t = 0), v1 the other model (t = 1).
     */
    public static double[] slerp(double t, PairStats s) {
        double n0 = s.norm(1), n1 = s.norm(0);
        double dot = s.dot(0, 1) / (n0 > SLERP_EPS ? n0 : 1) / (n1 > SLERP_EPS ? n1 : 1);
        if (Math.abs(dot) > SLERP_DOT_THRESHOLD) return new double[] {t, 1 - t};
        double theta0 = Math.acos(dot), sin0 = Math.sin(theta0), thetaT = theta0 * t;
        return new double[] {Math.sin(thetaT) / sin0, Math.sin(theta0 - thetaT) / sin0};
    }

    /**
     * model_stock, statistics of the N task vectors: the coefficients of the task vectors, t/N each (the result is
     * {@code base + t (mean of the models - base)}, mergekit's {@code t w_avg + (1 - t) w_0}).
     * cos is the mean over pairs of {@code d_i.d_j / max(|d_i||d_j|, 1e-6)} clamped to [-1, 1];
     * {@code t = N cos / (1 + (N-1) cos)} (no guard against a small denominator, as in mergekit).
     */
    public static double[] modelStock(PairStats s, String tensorName) {
        int n = s.size();
        if (n < 2) throw new IllegalArgumentException("model_stock needs at least two models besides the base");
        double sum = 0;
        int pairs = 0;
        for (int i = 0; i < n; i++)
            for (int j = i + 1; j < n; j++) {
                double c = s.dot(i, j) / Math.max(s.norm(i) * s.norm(j), MODEL_STOCK_MIN_NORM_PRODUCT);
                sum += Math.max(-1.0, Math.min(1.0, c));
                pairs++;
            }
        double cos = sum / pairs;
        double t = n * cos / (1 + (n - 1) * cos);
        if (!Double.isFinite(t))
            throw new ArithmeticException("model_stock: tensor " + tensorName + ": the mean cosine of the task "
                    + "vectors is " + cos + ", so t = N cos / (1 + (N-1) cos) is " + t);
        double[] w = new double[n];
        java.util.Arrays.fill(w, t / n);
        return w;
    }

    /**
     * karcher, statistics of the K points (models, then base_model if any), equal weights 1/K: the weights of the
     * points. The estimate u is kept as coefficients of the unit vectors, so every step of mergekit's iteration
     * (mean start, tangent step with theta / sin(theta), exponential map, renormalization, the tolerance tests)
     * is exact; the result is {@code (sum_k |x_k| / K) u}.
     */
    public static double[] karcher(PairStats s, int maxIter, double tol) {
        int k = s.size();
        double[] norms = new double[k], out = new double[k];
        int[] valid = java.util.stream.IntStream.range(0, k).filter(i -> s.norm(i) > tol).toArray();
        for (int i = 0; i < k; i++) norms[i] = s.norm(i);
        if (valid.length == 0) return out;  // mergekit: zeros
        int v = valid.length;
        double[][] g = new double[v][v];  // Gram matrix of the unit vectors
        for (int a = 0; a < v; a++)
            for (int b = 0; b < v; b++) g[a][b] = s.dot(valid[a], valid[b]) / (norms[valid[a]] * norms[valid[b]]);
        double alpha = 1.0 / v;
        double[] c = new double[v];
        java.util.Arrays.fill(c, alpha);
        double normU = norm(g, c);
        if (normU < tol) {
            java.util.Arrays.fill(c, 0);
            c[0] = 1;
        } else scale(c, 1 / normU);
        for (int iter = 0; iter < maxIter; iter++) {
            double[] gu = times(g, c);  // u . unit_a
            double[] tangent = new double[v];
            for (int a = 0; a < v; a++) {
                double dot = Math.max(-1.0, Math.min(1.0, gu[a]));
                double theta = Math.acos(dot);
                if (theta < tol) continue;
                double f = alpha * theta / Math.sin(theta);
                for (int b = 0; b < v; b++) tangent[b] -= f * dot * c[b];
                tangent[a] += f;
            }
            double normT = norm(g, tangent);
            if (normT < tol) break;
            double cos = Math.cos(normT), sin = Math.sin(normT) / normT;
            for (int b = 0; b < v; b++) c[b] = cos * c[b] + sin * tangent[b];
            double un = norm(g, c);
            if (un > tol) scale(c, 1 / un);
        }
        double scale = 0;
        for (double n : norms) scale += n / k;
        for (int a = 0; a < v; a++) out[valid[a]] = scale * c[a] / norms[valid[a]];
        return out;
    }

    /**
     * multislerp, statistics of the M vectors d_k (task vectors about the base when there is one, else the models):
     * the coefficients of the d_k (the result is the base plus their combination, or the combination itself). Units
     * are {@code d_k / (|d_k| + eps)}; the weighted mean direction m, the tangent vectors
     * {@code unit_k - (unit_k.m) m}, their weighted sum T, and the result
     * {@code (m cos|T| + T sin|T| / |T|) * sum_k w_k |d_k|} with {@code |T|} taken plus eps, as in mergekit. A zero
     * d_k (a model that leaves the tensor unchanged) has the unit vector 0 there, and its coefficient is 0.
     */
    public static double[] multislerp(PairStats s, double[] weights, boolean normalizeWeights, double eps,
            String tensorName) {
        int m = s.size();
        double[] coef = new double[m];
        if (m == 1) {
            coef[0] = 1;  // mergekit returns the one model unchanged
        } else {
            double[] w = weights.clone();
            if (normalizeWeights) {
                double sum = 0;
                for (double x : w) sum += x;
                scale(w, 1 / sum);
            }
            double[] norms = new double[m];
            for (int i = 0; i < m; i++) norms[i] = s.norm(i);
            double[][] g = new double[m][m];  // Gram matrix of the units
            for (int a = 0; a < m; a++)
                for (int b = 0; b < m; b++) g[a][b] = s.dot(a, b) / ((norms[a] + eps) * (norms[b] + eps));
            double meanNorm = norm(g, w);
            if (meanNorm < eps) {
                if (m != 2)
                    throw new ArithmeticException("multislerp: tensor " + tensorName + ": the weighted sum of the "
                            + "unit vectors is zero (antipodal inputs with balancing weights); use other weights");
                System.arraycopy(w, 0, coef, 0, m);  // mergekit: linear interpolation of the two
            } else {
                double[] mean = w.clone();
                scale(mean, 1 / meanNorm);
                double[] dots = times(g, mean);
                double wdots = 0;
                for (int a = 0; a < m; a++) wdots += w[a] * dots[a];
                double[] tangent = new double[m];
                for (int a = 0; a < m; a++) tangent[a] = w[a] - wdots * mean[a];
                double tn = norm(g, tangent) + eps;
                double avgNorm = 0;
                for (int a = 0; a < m; a++) avgNorm += norms[a] * w[a];
                for (int a = 0; a < m; a++)  // d_k = 0 contributes the zero vector whatever its coefficient
                    coef[a] = norms[a] == 0 ? 0
                            : avgNorm * (mean[a] * Math.cos(tn) + tangent[a] * Math.sin(tn) / tn) / (norms[a] + eps);
            }
        }
        return coef;
    }

    private static double[] times(double[][] g, double[] c) {
        double[] r = new double[c.length];
        for (int a = 0; a < c.length; a++)
            for (int b = 0; b < c.length; b++) r[a] += g[a][b] * c[b];
        return r;
    }

    /** Norm of sum_a c_a unit_a, from the Gram matrix (clamped at 0 against rounding). */
    private static double norm(double[][] g, double[] c) {
        double[] gc = times(g, c);
        double q = 0;
        for (int a = 0; a < c.length; a++) q += c[a] * gc[a];
        return Math.sqrt(Math.max(0, q));
    }

    private static void scale(double[] v, double f) {
        for (int i = 0; i < v.length; i++) v[i] *= f;
    }
}
