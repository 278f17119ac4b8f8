package dev.smelter.analysis;

import dev.smelter.DType;
import dev.smelter.Matrix;
import dev.smelter.Tensor;

/**
 * A {@code rows x cols} matrix that the analyses read a chunk of rows at a time: a matrix in memory ({@link #of}),
 * or a tensor of an activation file read with positional reads ({@link Activations#rows}), so that native code
 * never reads a file mapping (a file truncated meanwhile would kill the JVM with SIGBUS there; a positional read
 * fails with the file named instead).
 */
public interface RowSource {
    long rows();

    long cols();

    /** The element type of the rows. */
    DType dtype();

    /**
     * Rows [first, first + count) as a matrix native code may read. For a file, the rows are read into this source's
     * buffer: the matrix is valid until the next call of this method or of {@link #releaseBuffer}. I/O errors come
     * out as {@link java.io.UncheckedIOException}s naming the file.
     */
    Matrix rows(long first, long count);

    /** Whether the rows live on a device (then analyses take them as one chunk). */
    default boolean onDevice() {
        return false;
    }

    /** Frees the buffer that {@link #rows} reads into (read again, it is allocated again); nothing for a matrix. */
    default void releaseBuffer() {}

    /** A matrix in memory, host or device. */
    static RowSource of(Matrix m) {
        return new RowSource() {
            @Override
            public long rows() {
                return m.rows();
            }

            @Override
            public long cols() {
                return m.cols();
            }

            @Override
            public DType dtype() {
                return m.tensor().dtype();
            }

            @Override
            public Matrix rows(long first, long count) {
                return onDevice() && first == 0 && count == m.rows() ? m : m.rows(first, count);
            }

            @Override
            public boolean onDevice() {
                return m.tensor().memory() == Tensor.Memory.DEVICE;
            }
        };
    }
}
