package dev.smelter;

/** Status codes of the C ABI ({@code smelter_status}). */
public enum Status {
    OK(0),
    INVALID_ARGUMENT(1),
    UNSUPPORTED(2),
    OUT_OF_MEMORY(3),
    NO_DEVICE(4),
    DEVICE_ERROR(5),
    INTERNAL(6),
    UNKNOWN(-1);

    private final int code;

    Status(int code) {
        this.code = code;
    }

    public int code() {
        return code;
    }

    public static Status fromCode(int code) {
        for (Status s : values()) if (s.code == code) return s;
        return UNKNOWN;
    }
}
