package dev.smelter.analysis;

import static dev.smelter.analysis.ProductKernelTest.matrix;
import static dev.smelter.analysis.ProductKernelTest.random;
import static dev.smelter.analysis.ProductKernelTest.read;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.smelter.Context;
import dev.smelter.DType;
import dev.smelter.Device;
import dev.smelter.Matrix;
import dev.smelter.Smelter;
import java.lang.foreign.Arena;
import java.util.List;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;

/** Linear CKA against a float64 reference and its known identities. */
class CkaTest {
    // ---- float64 reference: exact centering, then ||Xc^T Yc||^2 / (||Xc^T Xc|| ||Yc^T Yc||) ----

    static double[][] centered(double[][] a) {
        int n = a.length, d = a[0].length;
        double[][] c = new double[n][d];
        for (int j = 0; j < d; j++) {
            double m = 0;
            for (double[] row : a) m += row[j];
            m /= n;
            for (int i = 0; i < n; i++) c[i][j] = a[i][j] - m;
        }
        return c;
    }

    static double frob2(double[][] a, double[][] b) {  // ||a^T b||_F^2, each entry summed over rows in order
        int da = a[0].length, db = b[0].length;
        double[] c = new double[da * db];
        for (int r = 0; r < a.length; r++) {
            double[] ar = a[r], br = b[r];
            for (int i = 0; i < da; i++) {
                double v = ar[i];
                for (int j = 0, o = i * db; j < db; j++) c[o + j] += v * br[j];
            }
        }
        double s = 0;
        for (double v : c) s += v * v;
        return s;
    }

    static double referenceCka(double[][] x, double[][] y) {
        double[][] xc = centered(x), yc = centered(y);
        return frob2(xc, yc) / Math.sqrt(frob2(xc, xc) * frob2(yc, yc));
    }

    // Song et al.'s unbiased HSIC written from its definition on raw (uncentered) linear kernels.
    static double referenceUnbiasedHsic(double[][] x, double[][] y) {
        int n = x.length;
        double[][] k = new double[n][n], l = new double[n][n];
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++) {
                if (i == j) continue;
                for (int f = 0; f < x[0].length; f++) k[i][j] += x[i][f] * x[j][f];
                for (int f = 0; f < y[0].length; f++) l[i][j] += y[i][f] * y[j][f];
            }
        double tr = 0, sk = 0, sl = 0, kl1 = 0;
        double[] k1 = new double[n], l1 = new double[n];
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++) {
                tr += k[i][j] * l[j][i];
                sk += k[i][j];
                sl += l[i][j];
                k1[i] += k[i][j];
                l1[i] += l[i][j];
            }
        for (int i = 0; i < n; i++) kl1 += k1[i] * l1[i];
        return (tr + sk * sl / ((n - 1.0) * (n - 2)) - 2.0 / (n - 2) * kl1) / (n * (n - 3.0));
    }

    // The estimator is shift-invariant: applied to rows centred in f64 its definition keeps float64 accuracy, where
    // raw kernels of rows with mean 3 lose four digits to cancellation (1e-10 off).
    static double referenceUnbiasedCka(double[][] x, double[][] y) {
        double[][] xc = centered(x), yc = centered(y);
        return referenceUnbiasedHsic(xc, yc) / Math.sqrt(referenceUnbiasedHsic(xc, xc) * referenceUnbiasedHsic(yc, yc));
    }

    /** y = x A + noise: a CKA well inside (0, 1). */
    static double[][] related(SplittableRandom r, double[][] x, int dy, double noise) {
        double[][] a = random(r, x[0].length, dy, 0, 1), y = new double[x.length][dy];
        for (int i = 0; i < x.length; i++)
            for (int j = 0; j < dy; j++) {
                double s = 0;
                for (int f = 0; f < x[0].length; f++) s += x[i][f] * a[f][j];
                y[i][j] = s + noise * (r.nextDouble() - 0.5);
            }
        return y;
    }

    @Test
    void featureAndGramFormsMatchTheReferenceForEveryDtype() {
        SplittableRandom r = new SplittableRandom(11);
        try (Arena arena = Arena.ofConfined(); Context ctx = Smelter.open(Device.cpu())) {
            for (DType dtype : DType.values()) {
                double[][] x0 = random(r, 301, 37, 3.0, 1.0);
                Matrix x = matrix(arena, dtype, x0), y = matrix(arena, dtype, related(r, x0, 29, 20.0));
                double expected = referenceCka(read(x), read(y));
                assertTrue(expected > 0.2 && expected < 0.95, "test data gives a CKA of " + expected);
                assertEquals(expected, Cka.feature(ctx, x, y, null), 1e-12, "feature form, " + dtype);
                assertEquals(expected, Cka.gram(ctx, x, y, Cka.Estimator.BIASED), 1e-12, "gram form, " + dtype);
                double unbiased = referenceUnbiasedCka(read(x), read(y));
                assertEquals(unbiased, Cka.gram(ctx, x, y, Cka.Estimator.UNBIASED), 1e-12, "unbiased, " + dtype);
                assertTrue(Math.abs(unbiased - expected) > 1e-4, "the two estimators should differ on 301 rows");
            }
        }
    }

    @Test
    void largeOffsetsStayAccurate() {
        // Rows of mean 100 and spread 0.01: raw f32 moments give nonsense (CKA far from the truth, even > 1).
        SplittableRandom r = new SplittableRandom(3);
        int n = 200_003, d = 6;
        double[][] x0 = random(r, n, d, 100.0, 0.01);
        double[][] y0 = new double[n][d];
        for (int i = 0; i < n; i++)
            for (int j = 0; j < d; j++) y0[i][j] = x0[i][j] + (j == 0 ? 0.02 * (r.nextDouble() - 0.5) : 0);
        try (Arena arena = Arena.ofConfined(); Context ctx = Smelter.open(Device.cpu())) {
            Matrix x = matrix(arena, DType.F32, x0), y = matrix(arena, DType.F32, y0);
            double[][] xr = read(x), yr = read(y);
            double expected = referenceCka(xr, yr);
            double got = Cka.feature(ctx, x, y, null);
            assertEquals(expected, got, 1e-12, "shifted co-moments");
            assertTrue(Math.abs(naiveF32Cka(xr, yr) - expected) > 1e-2, "the naive f32 form is not this accurate");
        }
    }

    static double[][] gaussian(SplittableRandom r, int rows, int cols, double mean, double std) {
        double[][] a = new double[rows][cols];
        for (double[] row : a)
            for (int j = 0; j < cols; j++) row[j] = mean + std * dev.smelter.TestData.gaussian(r);
        return a;
    }

    /**
     * Merged against unmerged layers: CKA close to 1, where 1 - CKA is the number that matters. y = x + eps N gives
     * 1 - CKA of about 1e-4, 1e-6 and 1e-8; it must keep its relative accuracy, and CKA must never exceed 1.
     */
    @Test
    void nearIdenticalRepresentationsKeepOneMinusCkaAccurate() {
        SplittableRandom r = new SplittableRandom(37);
        int d = 64;
        try (Arena arena = Arena.ofConfined(); Context ctx = Smelter.open(Device.cpu())) {
            for (int n : new int[] {3000, 9000})  // 9000: beyond --form auto's Gram limit
                for (double offset : n > 4096 ? new double[] {0} : new double[] {0, 100, 1e4})
                    for (double eps : new double[] {1e-2, 1e-3, 1e-4}) {
                        double[][] x0 = gaussian(r, n, d, offset, 1.0), e = gaussian(r, n, d, 0, eps), y0 = new double[n][d];
                        for (int i = 0; i < n; i++)
                            for (int j = 0; j < d; j++) y0[i][j] = x0[i][j] + e[i][j];
                        Matrix x = matrix(arena, DType.F32, x0), y = matrix(arena, DType.F32, y0);
                        double[][] xr = read(x), yr = read(y);
                        double gap = 1 - referenceCka(xr, yr);  // of the f32 values
                        String what = "n=" + n + " offset " + offset + " eps " + eps + ": 1 - CKA " + gap;
                        if (offset < 1e4) assertEquals(Math.log10(eps * eps), Math.log10(gap), 0.5, what + " (test data)");
                        double tolerance = 1e-6 * gap + 1e-15;
                        double feature = Cka.feature(ctx, x, y, null);
                        assertTrue(feature <= 1, what + ": feature form " + feature);
                        assertEquals(gap, 1 - feature, tolerance, what + ": feature form");
                        double[][] all = Cka.featureMatrix(ctx, List.of(x), List.of(y), null);
                        assertEquals(gap, 1 - all[0][0], tolerance, what + ": feature matrix");
                        if (n <= 4096 && eps == 1e-4 && offset != 100) {  // n x n: the hardest cases only
                            double gram = Cka.gram(ctx, x, y, Cka.Estimator.BIASED);
                            assertTrue(gram <= 1, what + ": gram form " + gram);
                            assertEquals(gap, 1 - gram, tolerance, what + ": gram form");
                        }
                    }
        }
    }

    /** float64 CKA through the Gram identity, {@code <Xc Xc^T, Yc Yc^T> / (..)}: n^2 d work, for wide layers. */
    static double referenceCkaByGrams(double[][] x, double[][] y) {
        double[][] k = gram(centered(x)), l = gram(centered(y));
        double kl = 0, kk = 0, ll = 0;
        for (int i = 0; i < k.length; i++)
            for (int j = 0; j < k.length; j++) {
                kl += k[i][j] * l[i][j];
                kk += k[i][j] * k[i][j];
                ll += l[i][j] * l[i][j];
            }
        return kl / Math.sqrt(kk * ll);
    }

    private static double[][] gram(double[][] c) {
        int n = c.length;
        double[][] g = new double[n][n];
        for (int i = 0; i < n; i++)
            for (int j = 0; j <= i; j++) {
                double s = 0;
                for (int f = 0; f < c[i].length; f++) s += c[i][f] * c[j][f];
                g[i][j] = g[j][i] = s;
            }
        return g;
    }

    /**
     * docs/ANALYSIS.md's stated accuracy at realistic widths: every form within 1e-12 of float64, and so of each
     * other, for activations of mean 100 and spread 0.01 as for centred ones.
     */
    @Test
    void statedAccuracyHoldsAtRealisticWidths() {
        SplittableRandom r = new SplittableRandom(43);
        try (Arena arena = Arena.ofConfined(); Context ctx = Smelter.open(Device.cpu())) {
            for (int[] nd : new int[][] {{2000, 64}, {600, 512}, {150, 4096}})
                for (double[] meanSpread : nd[1] > 512 ? new double[][] {{100, 0.01}} : new double[][] {{100, 0.01}, {0, 1}}) {
                    int n = nd[0], d = nd[1];
                    double mean = meanSpread[0], spread = meanSpread[1];
                    double[][] x0 = gaussian(r, n, d, mean, spread), y0 = gaussian(r, n, d, 0, spread);
                    for (int i = 0; i < n; i++)
                        for (int j = 0; j < d; j++) y0[i][j] += x0[i][j] + (j % 7) * spread;
                    Matrix x = matrix(arena, DType.F32, x0), y = matrix(arena, DType.F32, y0);
                    double expected = referenceCkaByGrams(read(x), read(y));
                    String what = "n=" + n + " d=" + d + " mean " + mean + " spread " + spread;
                    assertTrue(expected > 0.2 && expected < 0.99, what + ": test data gives a CKA of " + expected);
                    double feature = Cka.feature(ctx, x, y, null), gram = Cka.gram(ctx, x, y, Cka.Estimator.BIASED);
                    assertEquals(expected, feature, 1e-12, what + ": feature form");
                    assertEquals(expected, gram, 1e-12, what + ": gram form");
                }
        }
    }

    // What the streaming form must not do: uncentered f32 sums minus the mean outer product.
    private static double naiveF32Cka(double[][] x, double[][] y) {
        int n = x.length, d = x[0].length;
        float[][] sxy = new float[d][d], sxx = new float[d][d], syy = new float[d][d];
        float[] mx = new float[d], my = new float[d];
        for (int r = 0; r < n; r++)
            for (int i = 0; i < d; i++) {
                mx[i] += (float) x[r][i];
                my[i] += (float) y[r][i];
                for (int j = 0; j < d; j++) {
                    sxy[i][j] += (float) x[r][i] * (float) y[r][j];
                    sxx[i][j] += (float) x[r][i] * (float) x[r][j];
                    syy[i][j] += (float) y[r][i] * (float) y[r][j];
                }
            }
        double a = 0, b = 0, c = 0;
        for (int i = 0; i < d; i++)
            for (int j = 0; j < d; j++) {
                float cxy = sxy[i][j] - mx[i] * my[j] / n, cxx = sxx[i][j] - mx[i] * mx[j] / n, cyy = syy[i][j] - my[i] * my[j] / n;
                a += (double) cxy * cxy;
                b += (double) cxx * cxx;
                c += (double) cyy * cyy;
            }
        return a / Math.sqrt(b * c);
    }

    @Test
    void invariantToOrthogonalTransformOffsetAndIsotropicScale() {
        SplittableRandom r = new SplittableRandom(8);
        int n = 517, d = 23;
        double[][] x0 = random(r, n, d, 0.0, 1.0);
        double[][] q = randomOrthogonal(r, d);
        double[][] y0 = new double[n][d], z0 = new double[n][d];
        for (int i = 0; i < n; i++)
            for (int j = 0; j < d; j++) {
                double s = 0;
                for (int f = 0; f < d; f++) s += x0[i][f] * q[f][j];
                y0[i][j] = s + 5.0 + j;       // X Q + c
                z0[i][j] = 7.5 * x0[i][j];    // isotropic scale
            }
        try (Arena arena = Arena.ofConfined(); Context ctx = Smelter.open(Device.cpu())) {
            Matrix x = matrix(arena, DType.F32, x0), y = matrix(arena, DType.F32, y0), z = matrix(arena, DType.F32, z0);
            // y and z are rounded to f32, so only nearly a rotation and scale of x: 1 - CKA is of order 1e-14
            assertEquals(1.0, Cka.feature(ctx, x, y, null), 1e-12);
            assertEquals(1.0, Cka.gram(ctx, x, y, Cka.Estimator.BIASED), 1e-12);
            assertEquals(1.0, Cka.feature(ctx, x, z, null), 1e-12);
            assertEquals(1.0, Cka.gram(ctx, x, y, Cka.Estimator.UNBIASED), 1e-12);
        }
    }

    @Test
    void streamingEqualsOneShotAndWeightsSelectRows() {
        SplittableRandom r = new SplittableRandom(21);
        int n = 1001;
        double[][] x0 = random(r, n, 19, 1.0, 2.0);
        double[][] y0 = related(r, x0, 11, 30.0);
        float[] w = new float[n];
        int kept = 0;
        for (int i = 0; i < n; i++) if (r.nextDouble() < 0.4) { w[i] = 1; kept++; }
        try (Arena arena = Arena.ofConfined(); Context ctx = Smelter.open(Device.cpu())) {
            Matrix x = matrix(arena, DType.F32, x0), y = matrix(arena, DType.F32, y0);
            double[][] xr = read(x), yr = read(y), xs = new double[kept][], ys = new double[kept][];  // the f32 values
            for (int i = 0, k = 0; i < n; i++) if (w[i] == 1) { xs[k] = xr[i]; ys[k++] = yr[i]; }
            double whole = Cka.feature(ctx, x, y, null);
            for (int chunk : new int[] {1, 7, 100, 5000}) {
                CrossMoments m = new CrossMoments(19, 11, true, chunk);
                m.add(ctx, x, y, null);
                assertEquals(whole, Cka.fromComoments(m.cxy(), m.cxx(), m.cyy()), 1e-12, "chunks of " + chunk);
            }
            CrossMoments parts = new CrossMoments(19, 11, true, CrossMoments.DEFAULT_CHUNK_ROWS);
            parts.add(ctx, x.rows(0, 400), y.rows(0, 400), null);
            parts.add(ctx, x.rows(400, n - 400), y.rows(400, n - 400), null);
            assertEquals(whole, Cka.fromComoments(parts.cxy(), parts.cxx(), parts.cyy()), 1e-12, "two adds");
            assertEquals(referenceCka(xs, ys), Cka.feature(ctx, x, y, w), 1e-12, "masked rows");
            double[][] all = Cka.featureMatrix(ctx, List.of(x, y), List.of(y, x), null);
            assertEquals(whole, all[0][0], 1e-12);
            assertEquals(1.0, all[0][1], 1e-12);
            assertEquals(all[0][0], all[1][1], 1e-12);
            double[][] grams = Cka.gramMatrixCka(ctx, List.of(x, y), List.of(y, x), Cka.Estimator.BIASED);
            for (int i = 0; i < 2; i++)
                for (int j = 0; j < 2; j++) assertEquals(all[i][j], grams[i][j], 1e-12, "gram vs feature [" + i + "][" + j + "]");
        }
    }

    @Test
    void minibatchAveragesPerBatchUnbiasedHsic() {
        SplittableRandom r = new SplittableRandom(4);
        int n = 203, batch = 50;  // batches of 50, 50, 50, 50 and 3 (left out)
        double[][] x0 = random(r, n, 9, 0.0, 1.0), y0 = related(r, x0, 13, 10.0);
        try (Arena arena = Arena.ofConfined(); Context ctx = Smelter.open(Device.cpu())) {
            Matrix x = matrix(arena, DType.F32, x0), y = matrix(arena, DType.F32, y0);
            double[][] xr = read(x), yr = read(y);
            double xy = 0, xx = 0, yy = 0;
            for (int b = 0; b + batch <= n; b += batch) {
                double[][] xb = java.util.Arrays.copyOfRange(xr, b, b + batch), yb = java.util.Arrays.copyOfRange(yr, b, b + batch);
                xy += referenceUnbiasedHsic(xb, yb);
                xx += referenceUnbiasedHsic(xb, xb);
                yy += referenceUnbiasedHsic(yb, yb);
            }
            assertEquals(xy / Math.sqrt(xx * yy), Cka.minibatch(ctx, x, y, batch), 1e-12);
        }
    }

    @Test
    void constantRepresentationsGiveNaN() {
        try (Arena arena = Arena.ofConfined(); Context ctx = Smelter.open(Device.cpu())) {
            Matrix x = matrix(arena, DType.F32, random(new SplittableRandom(1), 10, 3, 0, 1));
            Matrix c = matrix(arena, DType.F32, random(new SplittableRandom(1), 10, 3, 4, 0));
            assertTrue(Double.isNaN(Cka.feature(ctx, x, c, null)));
            assertTrue(Double.isNaN(Cka.gram(ctx, x, c, Cka.Estimator.BIASED)));
        }
    }

    static double[][] randomOrthogonal(SplittableRandom r, int d) {
        double[][] q = random(r, d, d, 0, 1);
        for (int j = 0; j < d; j++) {  // Gram-Schmidt on columns
            for (int k = 0; k < j; k++) {
                double dot = 0;
                for (int i = 0; i < d; i++) dot += q[i][j] * q[i][k];
                for (int i = 0; i < d; i++) q[i][j] -= dot * q[i][k];
            }
            double norm = 0;
            for (int i = 0; i < d; i++) norm += q[i][j] * q[i][j];
            norm = Math.sqrt(norm);
            for (int i = 0; i < d; i++) q[i][j] /= norm;
        }
        return q;
    }
}
