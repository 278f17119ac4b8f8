package dev.smelter.analysis;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Arrays;
import java.util.SplittableRandom;
import org.ejml.data.DMatrixRMaj;
import org.ejml.dense.row.CommonOps_DDRM;
import org.junit.jupiter.api.Test;

/** Principal angles: known tiny and large angles, an independent reference, invariances and argument checks. */
class PrincipalAnglesTest {
    private static final int N = 37;

    @Test
    void knownAnglesComeBackIncludingTinyOnes() {
        double[] expected = {1e-9, 1e-5, 0.3, 0.7, 1.2, Math.PI / 2};
        int r = expected.length;
        DMatrixRMaj a = new DMatrixRMaj(N, r);
        DMatrixRMaj b = new DMatrixRMaj(N, r);
        for (int i = 0; i < r; i++) {
            a.set(i, i, 1);
            b.set(i, i, Math.cos(expected[i]));
            b.set(r + i, i, Math.sin(expected[i]));
        }
        SplittableRandom random = new SplittableRandom(11);
        DMatrixRMaj rotation = randomOrthogonal(N, random);
        DMatrixRMaj mixedA = mixColumns(CommonOps_DDRM.mult(rotation, a, null), random);
        DMatrixRMaj mixedB = mixColumns(CommonOps_DDRM.mult(rotation, b, null), random);

        double[] angles = PrincipalAngles.between(mixedA, mixedB);

        assertEquals(r, angles.length);
        for (int i = 0; i < r; i++) {
            double error = Math.abs(angles[i] - expected[i]);
            if (expected[i] < 1e-4) {
                assertTrue(error <= 1e-12, "angle " + expected[i] + " came back as " + angles[i]);
                assertTrue(error <= 1e-6 * expected[i], "angle " + expected[i] + " came back as " + angles[i]);
            } else {
                assertTrue(error <= 1e-10, "angle " + expected[i] + " came back as " + angles[i]);
            }
        }
        // The naive method cannot see the smallest angle: its cosine rounds to 1 (or to within an ulp of it).
        assertEquals(0.0, Math.acos(Math.cos(1e-9)));
        double naiveSmallest = referenceAngles(mixedA, mixedB)[0];
        assertTrue(naiveSmallest == 0 || naiveSmallest > 1e-8, "naive arccos gave " + naiveSmallest);
    }

    @Test
    void agreesWithIndependentReference() {
        SplittableRandom random = new SplittableRandom(23);
        for (int trial = 0; trial < 5; trial++) {
            DMatrixRMaj a = gaussian(N, 5, random);
            DMatrixRMaj b = gaussian(N, 7, random);
            double[] reference = referenceAngles(a, b);
            assertEquals(5, reference.length);
            assertTrue(reference[0] > 1e-3, "reference angles too small for arccos: " + Arrays.toString(reference));
            assertArrayEquals(reference, PrincipalAngles.between(a, b), 1e-9);
            assertArrayEquals(reference, PrincipalAngles.between(b, a), 1e-9);
        }
    }

    @Test
    void sameSpanGivesZeroAndComplementGivesRightAngles() {
        SplittableRandom random = new SplittableRandom(5);
        DMatrixRMaj a = gaussian(N, 5, random);
        for (double angle : PrincipalAngles.between(a, mixColumns(a, random)))
            assertTrue(Math.abs(angle) < 1e-7, "same span gave angle " + angle);

        DMatrixRMaj extended = new DMatrixRMaj(N, N);
        CommonOps_DDRM.insert(a, extended, 0, 0);
        CommonOps_DDRM.insert(gaussian(N, N - 5, random), extended, 0, 5);
        DMatrixRMaj complement = CommonOps_DDRM.extract(gramSchmidt(extended), 0, N, 5, N);
        double[] angles = PrincipalAngles.between(a, complement);
        assertEquals(5, angles.length);
        for (double angle : angles) assertEquals(Math.PI / 2, angle, 1e-12);
    }

    @Test
    void dependentColumnsAreDropped() {
        SplittableRandom random = new SplittableRandom(9);
        DMatrixRMaj a = gaussian(N, 4, random);
        DMatrixRMaj withCopy = new DMatrixRMaj(N, 5);
        CommonOps_DDRM.insert(a, withCopy, 0, 0);
        for (int row = 0; row < N; row++) withCopy.set(row, 4, 2 * a.get(row, 0) - a.get(row, 3));
        DMatrixRMaj b = gaussian(N, 6, random);
        assertArrayEquals(referenceAngles(a, b), PrincipalAngles.between(withCopy, b), 1e-9);
    }

    @Test
    void topEigenvectorsAreEigenvectorsInOrder() {
        int dim = 8;
        double[] covariance = gramOfRandom(50, dim, new SplittableRandom(31));
        DMatrixRMaj matrix = new DMatrixRMaj(dim, dim, true, covariance);
        DMatrixRMaj vectors = PrincipalAngles.topEigenvectors(covariance, dim, dim);
        assertEquals(dim, vectors.numRows);
        assertEquals(dim, vectors.numCols);
        double scale = CommonOps_DDRM.elementMaxAbs(matrix);
        double previous = Double.POSITIVE_INFINITY;
        for (int k = 0; k < dim; k++) {
            DMatrixRMaj v = CommonOps_DDRM.extractColumn(vectors, k, null);
            assertEquals(1.0, Math.sqrt(CommonOps_DDRM.dot(v, v)), 1e-12);
            DMatrixRMaj av = CommonOps_DDRM.mult(matrix, v, null);
            double lambda = CommonOps_DDRM.dot(v, av);
            for (int i = 0; i < dim; i++) assertEquals(lambda * v.get(i), av.get(i), 1e-11 * scale);
            assertTrue(lambda <= previous, "eigenvalues out of order at " + k);
            previous = lambda;
        }
        DMatrixRMaj top = PrincipalAngles.topEigenvectors(covariance, dim, 3);
        assertEquals(3, top.numCols);
        assertArrayEquals(CommonOps_DDRM.extract(vectors, 0, dim, 0, 3).data, top.data, 1e-12);
    }

    @Test
    void covarianceAnglesSeeARotationOfTheTopSubspace() {
        int dim = 8;
        double[] covariance = gramOfRandom(50, dim, new SplittableRandom(41));
        for (double angle : PrincipalAngles.ofCovariances(covariance, covariance, dim, 3))
            assertTrue(angle < 1e-7, "same covariance gave angle " + angle);

        double[] eigenvalues = {10, 6, 3, 2, 1, 0.5, 0.2, 0.1};
        DMatrixRMaj basis = randomOrthogonal(dim, new SplittableRandom(43));
        DMatrixRMaj diagonal = CommonOps_DDRM.diag(eigenvalues);
        DMatrixRMaj built = CommonOps_DDRM.multTransB(CommonOps_DDRM.mult(basis, diagonal, null), basis, null);
        symmetrise(built);
        for (double t : new double[] {1e-6, 0.4, 1.3}) {
            // Rotate by t in the plane of the first and third eigenvectors: the top-1 subspace turns by t.
            DMatrixRMaj givens = CommonOps_DDRM.identity(dim);
            givens.set(0, 0, Math.cos(t));
            givens.set(2, 2, Math.cos(t));
            givens.set(2, 0, Math.sin(t));
            givens.set(0, 2, -Math.sin(t));
            DMatrixRMaj rotation = CommonOps_DDRM.multTransB(CommonOps_DDRM.mult(basis, givens, null), basis, null);
            DMatrixRMaj rotated = CommonOps_DDRM.multTransB(CommonOps_DDRM.mult(rotation, built, null), rotation, null);
            symmetrise(rotated);

            double[] top1 = PrincipalAngles.ofCovariances(built.data, rotated.data, dim, 1);
            assertEquals(1, top1.length);
            assertEquals(t, top1[0], 1e-10);
            // The second eigenvector stays put, so the top-2 subspaces share a line and differ by t in the other.
            double[] top2 = PrincipalAngles.ofCovariances(built.data, rotated.data, dim, 2);
            assertEquals(0, top2[0], 1e-10);
            assertEquals(t, top2[1], 1e-10);
        }
    }

    @Test
    void medianOfOddAndEvenLengths() {
        double[] angles = {0.5, 0.1, 0.3};
        assertEquals(0.3, PrincipalAngles.median(angles));
        assertArrayEquals(new double[] {0.5, 0.1, 0.3}, angles); // not sorted in place
        assertEquals(0.25, PrincipalAngles.median(new double[] {0.4, 0.1, 0.3, 0.2}), 1e-15);
        assertEquals(0.7, PrincipalAngles.median(new double[] {0.7}));
    }

    @Test
    void badArgumentsAreRejected() {
        SplittableRandom random = new SplittableRandom(3);
        DMatrixRMaj a = gaussian(N, 3, random);
        assertMessage("row counts differ", () -> PrincipalAngles.between(a, gaussian(N + 1, 3, random)));
        assertMessage("null", () -> PrincipalAngles.between(a, null));
        assertMessage("all zeros", () -> PrincipalAngles.between(a, new DMatrixRMaj(N, 2)));
        assertMessage("empty", () -> PrincipalAngles.between(new DMatrixRMaj(N, 0), a));
        DMatrixRMaj withNaN = a.copy();
        withNaN.set(4, 1, Double.NaN);
        assertMessage("non-finite", () -> PrincipalAngles.between(withNaN, a));

        double[] identity = CommonOps_DDRM.identity(3).data;
        assertMessage("r must be in 1..3", () -> PrincipalAngles.topEigenvectors(identity, 3, 0));
        assertMessage("r must be in 1..3", () -> PrincipalAngles.topEigenvectors(identity, 3, 4));
        assertMessage("expected dim * dim = 16", () -> PrincipalAngles.topEigenvectors(identity, 4, 1));
        assertMessage("dim must be positive", () -> PrincipalAngles.topEigenvectors(new double[0], 0, 1));
        assertMessage("null", () -> PrincipalAngles.topEigenvectors(null, 3, 1));
        double[] infinite = identity.clone();
        infinite[4] = Double.POSITIVE_INFINITY;
        assertMessage("non-finite", () -> PrincipalAngles.topEigenvectors(infinite, 3, 1));
        double[] asymmetric = identity.clone();
        asymmetric[1] = 0.5;
        assertMessage("not symmetric", () -> PrincipalAngles.topEigenvectors(asymmetric, 3, 1));
        assertMessage("expected dim * dim", () -> PrincipalAngles.ofCovariances(identity, new double[4], 3, 1));
        assertMessage("no angles", () -> PrincipalAngles.median(new double[0]));
    }

    private static void assertMessage(String expectedPart, Runnable call) {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, call::run);
        assertTrue(e.getMessage().contains(expectedPart),
                "message '" + e.getMessage() + "' lacks '" + expectedPart + "'");
    }

    /**
     * Independent reference: modified Gram-Schmidt (twice) for orthonormal bases, a one-sided Jacobi SVD for the
     * cosines, then arccos; accurate except for tiny angles.
     */
    private static double[] referenceAngles(DMatrixRMaj a, DMatrixRMaj b) {
        DMatrixRMaj qa = gramSchmidt(a);
        DMatrixRMaj qb = gramSchmidt(b);
        DMatrixRMaj cross = qa.numCols >= qb.numCols
                ? CommonOps_DDRM.multTransA(qa, qb, null)
                : CommonOps_DDRM.multTransA(qb, qa, null);
        double[] cosines = jacobiSingularValues(cross);
        double[] angles = new double[cosines.length];
        for (int i = 0; i < angles.length; i++) angles[i] = Math.acos(Math.max(-1, Math.min(1, cosines[i])));
        Arrays.sort(angles);
        return angles;
    }

    /** Orthonormal columns spanning the same space, dropping columns that are (numerically) dependent. */
    private static DMatrixRMaj gramSchmidt(DMatrixRMaj matrix) {
        int n = matrix.numRows;
        double[][] kept = new double[matrix.numCols][];
        int count = 0;
        for (int j = 0; j < matrix.numCols; j++) {
            double[] v = new double[n];
            for (int i = 0; i < n; i++) v[i] = matrix.get(i, j);
            double original = norm(v);
            for (int pass = 0; pass < 2; pass++)
                for (int k = 0; k < count; k++) {
                    double projection = 0;
                    for (int i = 0; i < n; i++) projection += kept[k][i] * v[i];
                    for (int i = 0; i < n; i++) v[i] -= projection * kept[k][i];
                }
            double length = norm(v);
            if (length <= 1e-10 * original) continue;
            for (int i = 0; i < n; i++) v[i] /= length;
            kept[count++] = v;
        }
        DMatrixRMaj q = new DMatrixRMaj(n, count);
        for (int k = 0; k < count; k++)
            for (int i = 0; i < n; i++) q.set(i, k, kept[k][i]);
        return q;
    }

    /** Singular values of an m x k matrix with m >= k by one-sided Jacobi rotations of its columns. */
    private static double[] jacobiSingularValues(DMatrixRMaj matrix) {
        int m = matrix.numRows;
        int k = matrix.numCols;
        double[][] columns = new double[k][m];
        for (int j = 0; j < k; j++)
            for (int i = 0; i < m; i++) columns[j][i] = matrix.get(i, j);
        for (int sweep = 0; sweep < 60; sweep++) {
            boolean rotated = false;
            for (int p = 0; p < k; p++)
                for (int q = p + 1; q < k; q++) {
                    double alpha = 0;
                    double beta = 0;
                    double gamma = 0;
                    for (int i = 0; i < m; i++) {
                        alpha += columns[p][i] * columns[p][i];
                        beta += columns[q][i] * columns[q][i];
                        gamma += columns[p][i] * columns[q][i];
                    }
                    if (Math.abs(gamma) <= 1e-15 * Math.sqrt(alpha * beta)) continue;
                    rotated = true;
                    double zeta = (beta - alpha) / (2 * gamma);
                    double t = Math.signum(zeta == 0 ? 1 : zeta) / (Math.abs(zeta) + Math.sqrt(1 + zeta * zeta));
                    double c = 1 / Math.sqrt(1 + t * t);
                    double s = c * t;
                    for (int i = 0; i < m; i++) {
                        double x = columns[p][i];
                        double y = columns[q][i];
                        columns[p][i] = c * x - s * y;
                        columns[q][i] = s * x + c * y;
                    }
                }
            if (!rotated) break;
        }
        double[] values = new double[k];
        for (int j = 0; j < k; j++) values[j] = norm(columns[j]);
        return values;
    }

    private static double norm(double[] v) {
        double sum = 0;
        for (double x : v) sum += x * x;
        return Math.sqrt(sum);
    }

    private static DMatrixRMaj gaussian(int rows, int cols, SplittableRandom random) {
        DMatrixRMaj m = new DMatrixRMaj(rows, cols);
        for (int i = 0; i < m.data.length; i++) m.data[i] = random.nextGaussian();
        return m;
    }

    private static DMatrixRMaj randomOrthogonal(int n, SplittableRandom random) {
        DMatrixRMaj q = gramSchmidt(gaussian(n, n, random));
        assertEquals(n, q.numCols);
        return q;
    }

    /** Multiplies by a random, well-conditioned invertible matrix on the right: same column space, other basis. */
    private static DMatrixRMaj mixColumns(DMatrixRMaj matrix, SplittableRandom random) {
        int r = matrix.numCols;
        DMatrixRMaj mixing = gaussian(r, r, random);
        CommonOps_DDRM.scale(0.5, mixing);
        CommonOps_DDRM.addEquals(mixing, CommonOps_DDRM.identity(r));
        assertTrue(Math.abs(CommonOps_DDRM.det(mixing)) > 1e-3, "mixing matrix nearly singular");
        return CommonOps_DDRM.mult(matrix, mixing, null);
    }

    /** X^T X of a random rows x dim matrix X, row-major. */
    private static double[] gramOfRandom(int rows, int dim, SplittableRandom random) {
        DMatrixRMaj x = gaussian(rows, dim, random);
        DMatrixRMaj gram = CommonOps_DDRM.multTransA(x, x, null);
        symmetrise(gram);
        return gram.data;
    }

    private static void symmetrise(DMatrixRMaj m) {
        for (int i = 0; i < m.numRows; i++)
            for (int j = i + 1; j < m.numCols; j++) {
                double mean = (m.get(i, j) + m.get(j, i)) / 2;
                m.set(i, j, mean);
                m.set(j, i, mean);
            }
    }
}
