package dev.smelter;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

/**
 * A flat view of tensor data that the caller owns: host memory (any {@link MemorySegment}, such as
 * a memory-mapped file) or device memory from {@link Context#allocate}. Smelter never keeps it.
 */
public record Tensor(MemorySegment data, long count, DType dtype, Memory memory) {
    /** Where the bytes live ({@code smelter_memory}). */
    public enum Memory {
        HOST,
        DEVICE
    }

    public Tensor {
        if (count < 0) throw new IllegalArgumentException("negative element count " + count);
        if (memory == Memory.HOST && data.byteSize() < count * dtype.byteSize())
            throw new IllegalArgumentException("segment of " + data.byteSize() + " bytes is too small for " + count
                    + " " + dtype + " elements");
    }

    /** A host tensor over a whole segment. */
    public static Tensor host(MemorySegment data, DType dtype) {
        if (data.byteSize() % dtype.byteSize() != 0)
            throw new IllegalArgumentException("segment of " + data.byteSize() + " bytes is not a whole number of "
                    + dtype + " elements");
        return new Tensor(data, data.byteSize() / dtype.byteSize(), dtype, Memory.HOST);
    }

    /** Allocates a host tensor in {@code arena} (zeroed). */
    public static Tensor allocate(Arena arena, DType dtype, long count) {
        return new Tensor(arena.allocate(count * dtype.byteSize(), 64), count, dtype, Memory.HOST);
    }

    /** A host f32 tensor holding a copy of {@code values}. */
    public static Tensor ofFloats(Arena arena, float... values) {
        MemorySegment s = arena.allocate((long) values.length * 4, 64);
        MemorySegment.copy(values, 0, s, ValueLayout.JAVA_FLOAT, 0, values.length);
        return new Tensor(s, values.length, DType.F32, Memory.HOST);
    }

    /** Elements [offset, offset + length) of a host tensor, without copying. */
    public Tensor slice(long offset, long length) {
        if (memory != Memory.HOST) throw new UnsupportedOperationException("slice of a device tensor");
        if (offset < 0 || length < 0 || offset + length > count)
            throw new IndexOutOfBoundsException("slice [" + offset + ", " + (offset + length) + ") of " + count);
        return new Tensor(data.asSlice(offset * dtype.byteSize(), length * dtype.byteSize()), length, dtype, memory);
    }

    public long byteSize() {
        return count * dtype.byteSize();
    }

    /** Element i of a host tensor as a float (exact for every dtype). */
    public float getFloat(long i) {
        if (memory != Memory.HOST) throw new UnsupportedOperationException("read of a device tensor");
        return switch (dtype) {
            case F32 -> data.getAtIndex(ValueLayout.JAVA_FLOAT_UNALIGNED, i);
            case F16 -> Float.float16ToFloat(data.getAtIndex(ValueLayout.JAVA_SHORT_UNALIGNED, i));
            case BF16 -> Float.intBitsToFloat((data.getAtIndex(ValueLayout.JAVA_SHORT_UNALIGNED, i) & 0xFFFF) << 16);
        };
    }

    /** Sets element i of a host tensor, rounded to nearest even in its dtype (NaN stays NaN). */
    public void setFloat(long i, float v) {
        if (memory != Memory.HOST) throw new UnsupportedOperationException("write of a device tensor");
        switch (dtype) {
            case F32 -> data.setAtIndex(ValueLayout.JAVA_FLOAT_UNALIGNED, i, v);
            case F16 -> data.setAtIndex(ValueLayout.JAVA_SHORT_UNALIGNED, i, Float.floatToFloat16(v));
            case BF16 -> data.setAtIndex(ValueLayout.JAVA_SHORT_UNALIGNED, i, DType.bfloat16Bits(v));
        }
    }

    /** Copies a host tensor's elements out as floats. */
    public float[] toFloatArray() {
        if (count > Integer.MAX_VALUE - 8) throw new UnsupportedOperationException("tensor too large for a float[]");
        float[] out = new float[(int) count];
        for (int i = 0; i < out.length; i++) out[i] = getFloat(i);
        return out;
    }
}
