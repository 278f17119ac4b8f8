package dev.smelter.io;

import dev.smelter.DType;
import java.util.Optional;

/**
 * Every element type of the safetensors format (as of safetensors 0.6: the names are the strings
 * that appear in a header's {@code "dtype"} field). F32, F16 and BF16 are the ones Smelter merges;
 * the others are passed through unchanged.
 *
 * <p>F4, F6_E2M3 and F6_E3M2 are packed sub-byte types: they have no whole {@link #byteSize()}, and
 * a tensor of them is valid only when its element count times {@link #bitSize()} is a whole number
 * of bytes (see {@link #sizeInBytes(long)}).
 */
public enum SafetensorsDType {
    BOOL(8),
    F4(4),
    F6_E2M3(6),
    F6_E3M2(6),
    U8(8),
    I8(8),
    F8_E5M2(8),
    F8_E4M3(8),
    F8_E8M0(8),
    F8_E4M3FNUZ(8),
    F8_E5M2FNUZ(8),
    I16(16),
    U16(16),
    F16(16),
    BF16(16),
    I32(32),
    U32(32),
    F32(32),
    C64(64),
    F64(64),
    I64(64),
    U64(64);

    private final int bitSize;

    SafetensorsDType(int bitSize) {
        this.bitSize = bitSize;
    }

    /** Bits per element (4 for F4, 6 for the F6 types). */
    public int bitSize() {
        return bitSize;
    }

    /** Whether elements are packed below one byte (F4, F6_E2M3, F6_E3M2). */
    public boolean isSubByte() {
        return bitSize % 8 != 0;
    }

    /**
     * Bytes per element.
     *
     * @throws UnsupportedOperationException for the sub-byte types; use {@link #sizeInBytes(long)}
     */
    public int byteSize() {
        if (isSubByte()) throw new UnsupportedOperationException(this + " is " + bitSize + " bits per element");
        return bitSize / 8;
    }

    /**
     * The exact byte size of {@code elements} elements.
     *
     * @throws ArithmeticException if the size overflows a long, or (sub-byte types) is not a whole
     *     number of bytes
     */
    public long sizeInBytes(long elements) {
        if (elements < 0) throw new IllegalArgumentException("negative element count " + elements);
        if (!isSubByte()) return Math.multiplyExact(elements, (long) (bitSize / 8));
        long bits = Math.multiplyExact(elements, (long) bitSize);
        if (bits % 8 != 0)
            throw new ArithmeticException(elements + " " + this + " elements are " + bits + " bits, not a whole number of bytes");
        return bits / 8;
    }

    /** The merge type for F32/F16/BF16; empty for every type Smelter only passes through. */
    public Optional<DType> toMergeDType() {
        return switch (this) {
            case F32 -> Optional.of(DType.F32);
            case F16 -> Optional.of(DType.F16);
            case BF16 -> Optional.of(DType.BF16);
            default -> Optional.empty();
        };
    }

    public static SafetensorsDType of(DType d) {
        return switch (d) {
            case F32 -> F32;
            case F16 -> F16;
            case BF16 -> BF16;
        };
    }

    /** The dtype a header names (exact, case-sensitive, as the format requires), or empty. */
    /** Floating-point types (all F*, and complex C64): weights a merge would have to combine, not just carry. */
    public boolean isFloat() {
        return name().startsWith("F") || this == C64 || this == BF16;
    }

    public static Optional<SafetensorsDType> parse(String name) {
        for (SafetensorsDType d : values()) if (d.name().equals(name)) return Optional.of(d);
        return Optional.empty();
    }
}
