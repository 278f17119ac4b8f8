package dev.smelter;

import java.util.Locale;

/** A place to run kernels: the CPU, or CUDA device {@code ordinal}. */
public record Device(Kind kind, int ordinal) {
    public enum Kind {
        CPU(0),
        CUDA(1);

        final int code;

        Kind(int code) {
            this.code = code;
        }
    }

    public Device {
        if (ordinal < 0) throw new IllegalArgumentException("device ordinal must be >= 0, got " + ordinal);
    }

    public static Device cpu() {
        return new Device(Kind.CPU, 0);
    }

    public static Device cuda(int ordinal) {
        return new Device(Kind.CUDA, ordinal);
    }

    /** CUDA device 0 when one is usable (and passed its self-check, see {@link SelfCheck}), else the CPU. */
    public static Device best() {
        return Smelter.cudaDeviceCount() > 0 && SelfCheck.usable(cuda(0)) ? cuda(0) : cpu();
    }

    /** Parses {@code cpu}, {@code cuda}, {@code cuda:N} or {@code auto}. */
    public static Device parse(String text) {
        String s = text.trim().toLowerCase(Locale.ROOT);
        if (s.equals("auto")) return best();
        if (s.equals("cpu")) return cpu();
        if (s.equals("cuda") || s.equals("gpu")) return cuda(0);
        if (s.startsWith("cuda:")) {
            try {
                return cuda(Integer.parseInt(s.substring(5)));
            } catch (NumberFormatException e) {
                // fall through to the error below
            }
        }
        throw new IllegalArgumentException("unknown device '" + text + "': use cpu, cuda, cuda:N or auto");
    }

    @Override
    public String toString() {
        return kind == Kind.CPU ? "cpu" : "cuda:" + ordinal;
    }
}
