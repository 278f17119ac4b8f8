package dev.smelter.io;

import java.nio.file.Path;
import java.util.Arrays;
import java.util.Objects;

/**
 * One tensor of a safetensors file: its dtype, shape, and byte range {@code [dataBegin, dataEnd)}
 * relative to the start of the file's data section (the byte after the header), and the file.
 * {@link SafetensorsFile} only creates instances whose byte range matches dtype x shape.
 */
public record TensorInfo(String name, SafetensorsDType dtype, long[] shape, long dataBegin, long dataEnd, Path file) {
    public TensorInfo {
        Objects.requireNonNull(name, "name");
        Objects.requireNonNull(dtype, "dtype");
        shape = shape.clone();
        for (long d : shape) if (d < 0) throw new IllegalArgumentException("tensor " + name + ": negative dimension " + d);
        if (dataBegin < 0 || dataEnd < dataBegin)
            throw new IllegalArgumentException("tensor " + name + ": invalid byte range [" + dataBegin + ", " + dataEnd + ")");
    }

    /** A copy of the shape. */
    @Override
    public long[] shape() {
        return shape.clone();
    }

    /** Number of dimensions. */
    public int rank() {
        return shape.length;
    }

    /** The product of the shape (1 for a scalar). */
    public long elementCount() {
        return elements(shape);
    }

    /**
     * The product of {@code shape}: 0 when any dimension is 0, however large the others ({@code [2^62, 0]} is an
     * empty tensor); ArithmeticException when it overflows 64 bits.
     */
    public static long elements(long[] shape) {
        for (long d : shape) if (d == 0) return 0;
        long n = 1;
        for (long d : shape) n = Math.multiplyExact(n, d);
        return n;
    }

    /** Bytes of data: {@code dataEnd - dataBegin}. */
    public long byteSize() {
        return dataEnd - dataBegin;
    }

    @Override
    public boolean equals(Object o) {
        return o instanceof TensorInfo t && name.equals(t.name) && dtype == t.dtype && Arrays.equals(shape, t.shape)
                && dataBegin == t.dataBegin && dataEnd == t.dataEnd && Objects.equals(file, t.file);
    }

    @Override
    public int hashCode() {
        return Objects.hash(name, dtype, Arrays.hashCode(shape), dataBegin, dataEnd, file);
    }

    @Override
    public String toString() {
        return name + " " + dtype + Arrays.toString(shape) + " in " + file;
    }
}
