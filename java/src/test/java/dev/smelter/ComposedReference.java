package dev.smelter;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

/**
 * Independent float64 implementations of the composed methods, written from mergekit's definitions
 * (mergekit/merge_methods/slerp.py, model_stock.py, karcher.py, multislerp.py) on whole vectors: normalized
 * copies, sums over elements and the iterations are carried out on the vectors themselves, in double, without
 * Smelter's pair statistics or coefficient code.
 */
final class ComposedReference {
    private ComposedReference() {}

    static double[] d(float[] x) {
        double[] r = new double[x.length];
        for (int i = 0; i < x.length; i++) r[i] = x[i];
        return r;
    }

    static double dot(double[] a, double[] b) {
        double s = 0;
        for (int i = 0; i < a.length; i++) s += a[i] * b[i];
        return s;
    }

    static double norm(double[] a) {
        return Math.sqrt(dot(a, a));
    }

    static double[] axpby(double a, double[] x, double b, double[] y) {
        double[] r = new double[x.length];
        for (int i = 0; i < x.length; i++) r[i] = a * x[i] + b * y[i];
        return r;
    }

    static double[] scaled(double a, double[] x) {
        return axpby(a, x, 0, x);
    }

    /** mergekit slerp(t, v0, v1): v0 the base, v1 the other model. */
    static double[] slerp(double t, double[] v0, double[] v1) {
        double n0 = norm(v0), n1 = norm(v1);
        double[] u0 = n0 > 1e-8 ? scaled(1 / n0, v0) : v0, u1 = n1 > 1e-8 ? scaled(1 / n1, v1) : v1;
        double dot = dot(u0, u1);
        if (Math.abs(dot) > 0.9995) return axpby(1 - t, v0, t, v1);
        double theta0 = Math.acos(dot), sinTheta0 = Math.sin(theta0);
        double thetaT = theta0 * t;
        double s0 = Math.sin(theta0 - thetaT) / sinTheta0, s1 = Math.sin(thetaT) / sinTheta0;
        return axpby(s0, v0, s1, v1);
    }

    /** mergekit model_stock (filter_wise false). */
    static double[] modelStock(double[] w0, List<double[]> ws) {
        List<double[]> offsets = new ArrayList<>();
        for (double[] w : ws) offsets.add(axpby(1, w, -1, w0));
        double sum = 0;
        int count = 0;
        for (int i = 0; i < offsets.size(); i++)
            for (int j = i + 1; j < offsets.size(); j++) {
                double c = dot(offsets.get(i), offsets.get(j))
                        / Math.max(norm(offsets.get(i)) * norm(offsets.get(j)), 1e-6);
                sum += Math.max(-1, Math.min(1, c));
                count++;
            }
        double cos = sum / count;
        int n = ws.size();
        double t = n * cos / (1 + (n - 1) * cos);
        double[] avg = new double[w0.length];
        for (double[] w : ws) avg = axpby(1, avg, 1.0 / n, w);
        return axpby(t, avg, 1 - t, w0);
    }

    /** mergekit karcher_merge_tensors with equal alphas. */
    static double[] karcher(List<double[]> tensors, int maxIter, double tol) {
        int k = tensors.size();
        double[] alphas = new double[k];
        Arrays.fill(alphas, 1.0 / k);
        double[] norms = new double[k];
        List<double[]> units = new ArrayList<>();
        for (int i = 0; i < k; i++) {
            norms[i] = norm(tensors.get(i));
            units.add(norms[i] == 0 ? new double[tensors.get(i).length] : scaled(1 / norms[i], tensors.get(i)));
        }
        List<Integer> valid = new ArrayList<>();
        for (int i = 0; i < k; i++) if (norms[i] > tol) valid.add(i);
        if (valid.isEmpty()) return new double[tensors.get(0).length];
        double alphaSum = 0;
        for (int i : valid) alphaSum += alphas[i];
        double[] u = new double[tensors.get(0).length];
        for (int i : valid) u = axpby(1, u, alphas[i] / alphaSum, units.get(i));
        double nu = norm(u);
        u = nu < tol ? units.get(valid.get(0)).clone() : scaled(1 / nu, u);
        for (int iter = 0; iter < maxIter; iter++) {
            double[] tangent = new double[u.length];
            for (int i : valid) {
                double dot = Math.max(-1, Math.min(1, dot(u, units.get(i))));
                double theta = Math.acos(dot);
                if (theta < tol) continue;
                tangent = axpby(1, tangent, alphas[i] / alphaSum * theta / Math.sin(theta),
                        axpby(1, units.get(i), -dot, u));
            }
            double nt = norm(tangent);
            if (nt < tol) break;
            u = axpby(Math.cos(nt), u, Math.sin(nt) / nt, tangent);
            double un = norm(u);
            if (un > tol) u = scaled(1 / un, u);
        }
        double s = 0;
        for (int i = 0; i < k; i++) s += alphas[i] * norms[i];
        return scaled(s, u);
    }

    /** mergekit multislerp; base may be null. */
    static double[] multislerp(List<double[]> tensors, double[] weight, double[] base, boolean normalizeWeights,
            double eps) {
        if (tensors.size() == 1) return tensors.get(0);
        List<double[]> t = new ArrayList<>();
        for (double[] x : tensors) t.add(base == null ? x : axpby(1, x, -1, base));
        double[] w = weight.clone();
        if (normalizeWeights) {
            double s = Arrays.stream(w).sum();
            for (int i = 0; i < w.length; i++) w[i] /= s;
        }
        double[] norms = new double[t.size()];
        List<double[]> units = new ArrayList<>();
        for (int i = 0; i < t.size(); i++) {
            norms[i] = norm(t.get(i));
            units.add(scaled(1 / (norms[i] + eps), t.get(i)));
        }
        double[] mean = new double[base == null ? tensors.get(0).length : base.length];
        for (int i = 0; i < t.size(); i++) mean = axpby(1, mean, w[i], units.get(i));
        double mn = norm(mean);
        double[] result;
        if (mn < eps) {
            if (t.size() != 2) throw new ArithmeticException("zero mean");
            result = axpby(w[0], t.get(0), w[1], t.get(1));
        } else {
            mean = scaled(1 / mn, mean);
            double[] tangentSum = new double[mean.length];
            for (int i = 0; i < t.size(); i++) {
                double dot = dot(units.get(i), mean);
                tangentSum = axpby(1, tangentSum, w[i], axpby(1, units.get(i), -dot, mean));
            }
            double tn = norm(tangentSum) + eps;
            result = axpby(Math.cos(tn), mean, Math.sin(tn) / tn, tangentSum);
            double avgNorm = 0;
            for (int i = 0; i < t.size(); i++) avgNorm += norms[i] * w[i];
            result = scaled(avgNorm, result);
        }
        return base == null ? result : axpby(1, result, 1, base);
    }

    /**
     * Compares Smelter's output with the reference: within the output dtype's rounding plus f32 evaluation of the
     * linear combination (coefficients of order 1, rounded to f32) and the f32 task vectors behind the statistics.
     */
    static String compare(double[] expect, List<float[]> inputs, Tensor out) {
        return Float64Reference.firstOutside(expect, null, inputs, out, 128 * Math.scalb(1.0, -24));
    }
}
