package dev.smelter;

import dev.smelter.ffi.smelter_h;
import java.lang.foreign.MemorySegment;

/**
 * The one place that calls the generated bindings' status-returning functions: loads the library
 * first, checks the ABI version, and turns a failed status into a {@link SmelterException} carrying
 * the native message.
 */
final class Native {
    private Native() {}

    private static final class Loaded {
        static {
            NativeLibrary.ensureLoaded();
            int abi = smelter_h.smelter_abi_version();
            if (abi != smelter_h.SMELTER_ABI_VERSION())
                throw new SmelterException(Status.UNSUPPORTED, "libsmelter speaks ABI " + abi + ", these bindings "
                        + smelter_h.SMELTER_ABI_VERSION() + ": rebuild or use the matching jar");
        }

        static void touch() {}
    }

    /** Makes sure libsmelter is loaded and of the right ABI. */
    static void load() {
        Loaded.touch();
    }

    /** Throws unless {@code status} is SMELTER_OK. Call right after the native call, on the same thread. */
    static void check(int status, String what) {
        if (status == 0) return;
        MemorySegment msg = smelter_h.smelter_last_error();
        String text = msg.equals(MemorySegment.NULL) ? "" : msg.reinterpret(4096).getString(0);
        throw new SmelterException(Status.fromCode(status), what + ": " + (text.isEmpty() ? "(no message)" : text));
    }
}
