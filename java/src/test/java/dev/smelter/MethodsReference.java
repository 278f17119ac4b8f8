package dev.smelter;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

/**
 * Independent float64 implementations of mergekit's nuslerp, nearswap, arcee_fusion, ram, ramplus_tl and
 * model_stock with filter_wise (mergekit/merge_methods/nuslerp.py, nearswap.py, arcee_fusion.py, ram.py,
 * model_stock.py), written from those definitions on whole arrays with their shapes: normalized copies, sorted
 * importances, masks and counts as mergekit forms them, in double, without Smelter's code.
 */
final class MethodsReference {
    private MethodsReference() {}

    /** The element indices of each vector nuslerp normalizes: the whole tensor, the rows, or the columns (dim 0). */
    static List<int[]> nuslerpVectors(long[] shape, int n, boolean rowWise, boolean flatten) {
        List<int[]> out = new ArrayList<>();
        if (flatten || shape.length == 1) {
            int[] all = new int[n];
            for (int i = 0; i < n; i++) all[i] = i;
            out.add(all);
            return out;
        }
        int cols = (int) shape[1], rows = n / cols;
        if (!rowWise) {
            for (int r = 0; r < rows; r++) {
                int[] v = new int[cols];
                for (int c = 0; c < cols; c++) v[c] = r * cols + c;
                out.add(v);
            }
        } else {  // dim=0: transpose(0, -1), normalize over the last dimension: the columns
            for (int c = 0; c < cols; c++) {
                int[] v = new int[rows];
                for (int r = 0; r < rows; r++) v[r] = r * cols + c;
                out.add(v);
            }
        }
        return out;
    }

    /** mergekit nuslerp(t, v0, v1, dim, flatten) on the given vectors. */
    static double[] nuslerp(double t, double[] v0, double[] v1, List<int[]> vectors) {
        double[] res = new double[v0.length];
        for (int[] idx : vectors) {
            double n0 = 0, n1 = 0;
            for (int i : idx) {
                n0 += v0[i] * v0[i];
                n1 += v1[i] * v1[i];
            }
            n0 = Math.max(Math.sqrt(n0), 1e-7);
            n1 = Math.max(Math.sqrt(n1), 1e-7);
            double cos = 0;
            for (int i : idx) cos += (v0[i] / n0) * (v1[i] / n1);
            double theta = Math.acos(Math.min(1, Math.max(-1, cos)));
            double sin = Math.sin(theta);
            boolean colinear = Math.abs(sin) < 1e-8;
            for (int i : idx)
                res[i] = colinear ? (1 - t) * v0[i] + t * v1[i]
                        : (Math.sin((1 - t) * theta) * v0[i] + Math.sin(t * theta) * v1[i]) / sin;
        }
        return res;
    }

    /** NuSlerpTask.execute: t from the weights, task vectors about the base when there is one. */
    static double[] nuslerpTask(double w0, double w1, double[] base, double[] x0, double[] x1, long[] shape,
            boolean rowWise, boolean flatten) {
        double t = Math.abs(w0 + w1) < 1e-6 ? 0.5 : w1 / (w0 + w1);
        List<int[]> vectors = nuslerpVectors(shape, x0.length, rowWise, flatten);
        if (base == null) return nuslerp(t, x0, x1, vectors);
        double[] d0 = new double[x0.length], d1 = new double[x0.length];
        for (int i = 0; i < d0.length; i++) {
            d0[i] = x0[i] - base[i];
            d1[i] = x1[i] - base[i];
        }
        double[] r = nuslerp(t, d0, d1, vectors);
        for (int i = 0; i < r.length; i++) r[i] += base[i];
        return r;
    }

    static double[] nearswap(double t, double[] a, double[] b) {
        double[] r = new double[a.length];
        for (int i = 0; i < a.length; i++) {
            double absdiff = Math.abs(a[i] - b[i]);
            double w = t / Math.max(absdiff, 1e-6);
            w = Math.max(0, Math.min(1, w));
            r[i] = w * b[i] + (1 - w) * a[i];
        }
        return r;
    }

    /** ram (r = null) or ramplus_tl. */
    static double[] ram(double[] base, List<double[]> xs, double epsilon, Double r, double alpha) {
        int m = xs.size(), n = base.length;
        double[][] tv = new double[m][n];
        boolean[][] nonzero = new boolean[m][n];
        int[] contrib = new int[n];
        for (int k = 0; k < m; k++)
            for (int i = 0; i < n; i++) {
                tv[k][i] = xs.get(k)[i] - base[i];
                nonzero[k][i] = Math.abs(tv[k][i]) > epsilon;
                if (nonzero[k][i]) contrib[i]++;
            }
        double[] lambda = new double[m];
        Arrays.fill(lambda, 1);
        if (r != null)
            for (int k = 0; k < m; k++) {
                long shared = 0, unique = 0;
                for (int i = 0; i < n; i++) {
                    if (nonzero[k][i] && contrib[i] > 1) shared++;
                    if (nonzero[k][i] && contrib[i] == 1) unique++;
                }
                double rho = shared / Math.max(unique, epsilon);
                lambda[k] = 1 + r * Math.max(0, Math.min(alpha, rho));
            }
        double[] out = new double[n];
        for (int i = 0; i < n; i++) {
            double sum = 0;
            for (int k = 0; k < m; k++) {
                double z = nonzero[k][i] ? tv[k][i] : 0;
                if (contrib[i] == 1) sum += z * lambda[k];
                if (contrib[i] > 1) sum += z / contrib[i];
            }
            out[i] = base[i] + sum;
        }
        return out;
    }

    /**
     * arcee_fusion; {@code ambiguous} marks elements whose importance lies within a relative 1e-5 of the threshold
     * (Smelter's f32 importances may fall either side there; importances are often exact multiples of one quantum,
     * and ties with the threshold are common).
     */
    static double[] arceeFusion(double[] a, double[] b, long[] shape, boolean[] ambiguous) {
        int n = a.length, row = shape.length >= 2 ? (int) shape[shape.length - 1] : n;
        double[] importance = new double[n];
        for (int s = 0; s < n; s += row) {
            double[] p = softmax(b, s, row), q = softmax(a, s, row);
            double kl = 0;
            for (int j = 0; j < row; j++) {
                double pj = p[j] + 1e-8, qj = q[j] + 1e-8;
                kl += pj * Math.log(pj / qj);
            }
            for (int j = 0; j < row; j++) importance[s + j] = Math.abs(b[s + j] - a[s + j]) * kl;
        }
        double[] sorted = importance.clone();
        Arrays.sort(sorted);
        double median = sorted[(int) (0.5 * (n - 1))], q1 = sorted[(int) (0.25 * (n - 1))],
                q3 = sorted[(int) (0.75 * (n - 1))];
        double threshold = median + 1.5 * (q3 - q1);
        double[] out = new double[n];
        for (int i = 0; i < n; i++) {
            out[i] = importance[i] >= threshold ? b[i] : a[i];
            ambiguous[i] = threshold != 0 && Math.abs(importance[i] - threshold) <= 1e-5 * Math.abs(threshold);
        }
        return out;
    }

    private static double[] softmax(double[] x, int s, int length) {
        double max = Double.NEGATIVE_INFINITY, sum = 0;
        for (int j = 0; j < length; j++) max = Math.max(max, x[s + j]);
        double[] r = new double[length];
        for (int j = 0; j < length; j++) sum += r[j] = Math.exp(x[s + j] - max);
        for (int j = 0; j < length; j++) r[j] /= sum;
        return r;
    }

    /** model_stock with filter_wise: true (1-D tensors are one row). */
    static double[] modelStockRows(double[] w0, List<double[]> ws, long[] shape) {
        int n = w0.length, row = shape.length >= 2 ? (int) shape[shape.length - 1] : n, m = ws.size();
        double[] out = new double[n];
        for (int s = 0; s < n; s += row) {
            double[][] off = new double[m][row];
            for (int k = 0; k < m; k++)
                for (int j = 0; j < row; j++) off[k][j] = ws.get(k)[s + j] - w0[s + j];
            double sum = 0;
            int pairs = 0;
            for (int i = 0; i < m; i++)
                for (int j = i + 1; j < m; j++) {
                    double dot = 0, ni = 0, nj = 0;
                    for (int e = 0; e < row; e++) {
                        dot += off[i][e] * off[j][e];
                        ni += off[i][e] * off[i][e];
                        nj += off[j][e] * off[j][e];
                    }
                    sum += Math.max(-1, Math.min(1, dot / Math.max(Math.sqrt(ni) * Math.sqrt(nj), 1e-6)));
                    pairs++;
                }
            double cos = sum / pairs, t = m * cos / (1 + (m - 1) * cos);
            for (int j = 0; j < row; j++) {
                double avg = 0;
                for (double[] w : ws) avg += w[s + j];
                avg /= m;
                out[s + j] = t * avg + (1 - t) * w0[s + j];
            }
        }
        return out;
    }

    /**
     * Smelter's Java methods compute in f64 and round once: the output is within half an ulp of the output dtype
     * (plus f64 noise) of the reference. Returns the first violation, or null.
     */
    static String compareTight(double[] expect, boolean[] ambiguous, List<float[]> inputs, Tensor out) {
        return Float64Reference.firstOutside(expect, ambiguous, inputs, out, 1e-12);
    }
}
