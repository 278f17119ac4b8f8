package dev.smelter.analysis;

import java.util.Arrays;
import org.ejml.data.DMatrixRMaj;
import org.ejml.dense.row.CommonOps_DDRM;
import org.ejml.dense.row.factory.DecompositionFactory_DDRM;
import org.ejml.interfaces.decomposition.EigenDecomposition_F64;
import org.ejml.interfaces.decomposition.SingularValueDecomposition_F64;

/**
 * Principal angles between subspaces, e.g. between the top principal subspaces of two models' representations.
 *
 * <p>The cosines are the singular values of {@code Qa^T Qb}; but an angle below about 1e-8 has a cosine that rounds to
 * 1, so arccos alone returns 0 for it. As in Knyazev and Argentati (2002) and {@code scipy.linalg.subspace_angles},
 * angles up to 45 degrees are therefore taken from the arcsin of the singular values of the residual
 * {@code Qb - Qa Qa^T Qb}, which stay accurate to a few ulps however small they are.
 */
public final class PrincipalAngles {
    private static final double EPS = Math.ulp(1.0);
    /** Largest asymmetry |a_ij - a_ji| accepted in a "symmetric" matrix, relative to its largest entry. */
    private static final double SYMMETRY_TOLERANCE = 1e-6;

    private PrincipalAngles() {}

    /**
     * Principal angles in radians, ascending, between the column spaces of {@code a} (n x p) and {@code b} (n x q).
     * The columns need not be orthonormal nor independent: each matrix is reduced to an orthonormal basis of its
     * numerical range first (singular values above {@code max(n, p) * eps * sigma_max}, as {@code scipy.linalg.orth}),
     * so there are {@code min(rank a, rank b)} angles, {@code min(p, q)} for full-rank inputs.
     *
     * @throws IllegalArgumentException if the row counts differ, an entry is not finite or a matrix is all zeros
     */
    public static double[] between(DMatrixRMaj a, DMatrixRMaj b) {
        if (a == null || b == null) throw new IllegalArgumentException("matrices must not be null");
        if (a.numRows != b.numRows)
            throw new IllegalArgumentException("row counts differ: a has " + a.numRows + ", b has " + b.numRows);
        DMatrixRMaj qa = orthonormalBasis(a, "a");
        DMatrixRMaj qb = orthonormalBasis(b, "b");
        DMatrixRMaj cross = CommonOps_DDRM.multTransA(qa, qb, null); // Qa^T Qb, p x q

        // The residual of the smaller basis projected onto the larger one: its singular values are the sines.
        DMatrixRMaj residual;
        if (qa.numCols >= qb.numCols) {
            residual = qb.copy();
            CommonOps_DDRM.multAdd(-1, qa, cross, residual); // Qb - Qa (Qa^T Qb)
        } else {
            residual = qa.copy();
            CommonOps_DDRM.multAddTransB(-1, qb, cross, residual); // Qa - Qb (Qa^T Qb)^T
        }
        int count = Math.min(qa.numCols, qb.numCols);
        double[] cosinesDescending = descending(singularValues(cross), count);
        double[] sinesAscending = descending(singularValues(residual), count);
        reverse(sinesAscending);

        // The i-th largest cosine and the i-th smallest sine belong to the same (i-th smallest) angle.
        double[] angles = new double[count];
        for (int i = 0; i < count; i++) {
            double cosine = cosinesDescending[i];
            angles[i] = cosine * cosine >= 0.5 ? Math.asin(clip(sinesAscending[i])) : Math.acos(clip(cosine));
        }
        Arrays.sort(angles); // the two branches may disagree by an ulp around 45 degrees
        return angles;
    }

    /**
     * Eigenvectors of the {@code r} largest eigenvalues of a symmetric {@code dim x dim} matrix (row-major, e.g. a
     * covariance), as the columns of a {@code dim x r} matrix, largest eigenvalue first.
     *
     * @throws IllegalArgumentException if {@code r} is not in {@code 1..dim}, the array is not {@code dim * dim} long,
     *     an entry is not finite or the matrix is not symmetric (to a relative 1e-6)
     */
    public static DMatrixRMaj topEigenvectors(double[] symmetric, int dim, int r) {
        DMatrixRMaj matrix = symmetricMatrix(symmetric, dim, "symmetric");
        if (r < 1 || r > dim) throw new IllegalArgumentException("r must be in 1.." + dim + ", got " + r);
        EigenDecomposition_F64<DMatrixRMaj> eigen = DecompositionFactory_DDRM.eig(dim, true, true);
        if (!eigen.decompose(matrix)) throw new ArithmeticException("symmetric eigen decomposition did not converge");
        Integer[] order = new Integer[dim];
        for (int i = 0; i < dim; i++) order[i] = i;
        Arrays.sort(order, (i, j) -> Double.compare(eigen.getEigenvalue(j).real, eigen.getEigenvalue(i).real));
        DMatrixRMaj top = new DMatrixRMaj(dim, r);
        for (int column = 0; column < r; column++) {
            DMatrixRMaj vector = eigen.getEigenVector(order[column]);
            for (int row = 0; row < dim; row++) top.set(row, column, vector.get(row));
        }
        return top;
    }

    /**
     * Principal angles between the top-{@code r} principal subspaces of two representations, given their
     * {@code dim x dim} covariance (or co-moment) matrices, row-major.
     *
     * @see #topEigenvectors(double[], int, int)
     */
    public static double[] ofCovariances(double[] covA, double[] covB, int dim, int r) {
        return between(topEigenvectors(covA, dim, r), topEigenvectors(covB, dim, r));
    }

    /** The median; the mean of the two middle values for an even length. */
    public static double median(double[] angles) {
        if (angles == null || angles.length == 0) throw new IllegalArgumentException("no angles to take the median of");
        double[] sorted = angles.clone();
        Arrays.sort(sorted);
        int middle = sorted.length / 2;
        return sorted.length % 2 == 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
    }

    /** Left singular vectors of the singular values above the rank tolerance. */
    private static DMatrixRMaj orthonormalBasis(DMatrixRMaj matrix, String name) {
        if (matrix.numRows == 0 || matrix.numCols == 0)
            throw new IllegalArgumentException(name + " is empty: " + matrix.numRows + " x " + matrix.numCols);
        requireFinite(matrix.data, matrix.getNumElements(), name);
        SingularValueDecomposition_F64<DMatrixRMaj> svd =
                DecompositionFactory_DDRM.svd(matrix.numRows, matrix.numCols, true, false, true);
        if (!svd.decompose(matrix.copy())) throw new ArithmeticException("SVD of " + name + " did not converge");
        double[] values = svd.getSingularValues();
        int count = svd.numberOfSingularValues();
        double largest = 0;
        for (int i = 0; i < count; i++) largest = Math.max(largest, values[i]);
        if (largest == 0) throw new IllegalArgumentException(name + " is all zeros: it spans no subspace");
        double tolerance = Math.max(matrix.numRows, matrix.numCols) * EPS * largest;
        DMatrixRMaj u = svd.getU(null, false);
        int rank = 0;
        for (int i = 0; i < count; i++) if (values[i] > tolerance) rank++;
        DMatrixRMaj basis = new DMatrixRMaj(matrix.numRows, rank);
        for (int i = 0, column = 0; i < count; i++) {
            if (values[i] <= tolerance) continue;
            for (int row = 0; row < matrix.numRows; row++) basis.set(row, column, u.get(row, i));
            column++;
        }
        return basis;
    }

    private static double[] singularValues(DMatrixRMaj matrix) {
        SingularValueDecomposition_F64<DMatrixRMaj> svd =
                DecompositionFactory_DDRM.svd(matrix.numRows, matrix.numCols, false, false, true);
        if (!svd.decompose(matrix.copy())) throw new ArithmeticException("SVD did not converge");
        return Arrays.copyOf(svd.getSingularValues(), svd.numberOfSingularValues());
    }

    /** The {@code count} largest values, descending; zeros stand in for values the array does not have. */
    private static double[] descending(double[] values, int count) {
        double[] sorted = values.clone();
        Arrays.sort(sorted);
        reverse(sorted);
        return Arrays.copyOf(sorted, count);
    }

    private static void reverse(double[] values) {
        for (int i = 0, j = values.length - 1; i < j; i++, j--) {
            double swap = values[i];
            values[i] = values[j];
            values[j] = swap;
        }
    }

    private static double clip(double value) {
        return Math.max(-1, Math.min(1, value));
    }

    private static DMatrixRMaj symmetricMatrix(double[] values, int dim, String name) {
        if (values == null) throw new IllegalArgumentException(name + " must not be null");
        if (dim < 1) throw new IllegalArgumentException("dim must be positive, got " + dim);
        if ((long) dim * dim != values.length)
            throw new IllegalArgumentException(name + " has " + values.length + " values, expected dim * dim = "
                    + (long) dim * dim);
        requireFinite(values, values.length, name);
        double largest = 0;
        for (double value : values) largest = Math.max(largest, Math.abs(value));
        for (int i = 0; i < dim; i++)
            for (int j = i + 1; j < dim; j++)
                if (Math.abs(values[i * dim + j] - values[j * dim + i]) > SYMMETRY_TOLERANCE * largest)
                    throw new IllegalArgumentException(name + " is not symmetric at (" + i + ", " + j + ")");
        return new DMatrixRMaj(dim, dim, true, values);
    }

    private static void requireFinite(double[] values, int length, String name) {
        for (int i = 0; i < length; i++)
            if (!Double.isFinite(values[i]))
                throw new IllegalArgumentException(name + " has a non-finite value at index " + i + ": " + values[i]);
    }
}
