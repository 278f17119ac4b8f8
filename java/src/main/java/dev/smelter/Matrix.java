package dev.smelter;

/**
 * A row-major {@code rows x cols} view of a tensor: the shape the analysis kernels read
 * (activations of {@code rows} tokens or sentences by {@code cols} features).
 */
public record Matrix(Tensor tensor, long rows, long cols) {
    public Matrix {
        if (rows < 0 || cols < 0) throw new IllegalArgumentException("negative shape [" + rows + ", " + cols + "]");
        if (Math.multiplyHigh(rows, cols) != 0 || rows * cols != tensor.count())
            throw new IllegalArgumentException("a [" + rows + ", " + cols + "] matrix needs " + rows * cols
                    + " elements, the tensor has " + tensor.count());
    }

    /** Rows [first, first + count) of a host matrix, without copying. */
    public Matrix rows(long first, long count) {
        if (first < 0 || count < 0 || first + count > rows)
            throw new IndexOutOfBoundsException("rows [" + first + ", " + (first + count) + ") of " + rows);
        return new Matrix(tensor.slice(first * cols, count * cols), count, cols);
    }
}
