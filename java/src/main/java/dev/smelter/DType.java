package dev.smelter;

/** Element types Smelter's kernels read and write. Codes match {@code smelter_dtype} in smelter.h. */
public enum DType {
    F32(0, 4),
    F16(1, 2),
    BF16(2, 2);

    private final int code;
    private final int byteSize;

    DType(int code, int byteSize) {
        this.code = code;
        this.byteSize = byteSize;
    }

    /** The {@code smelter_dtype} value. */
    public int code() {
        return code;
    }

    public int byteSize() {
        return byteSize;
    }

    /**
     * The bfloat16 bits of {@code v} rounded to nearest even, as torch's cast and both backends round; a NaN stays a
     * (quiet) NaN of the same sign.
     */
    public static short bfloat16Bits(float v) {
        int bits = Float.floatToRawIntBits(v);
        return Float.isNaN(v) ? (short) ((bits >>> 16) | 0x40) : (short) ((bits + 0x7FFF + ((bits >>> 16) & 1)) >>> 16);
    }

    public static DType fromCode(int code) {
        for (DType d : values()) if (d.code == code) return d;
        throw new IllegalArgumentException("unknown dtype code " + code);
    }
}
