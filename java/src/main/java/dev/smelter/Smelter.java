package dev.smelter;

import dev.smelter.ffi.smelter_h;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

/** Entry point: library facts, devices, and contexts to run kernels in. */
public final class Smelter {
    private Smelter() {}

    /** e.g. "smelter 0.1.0 (cpu avx2, cuda 90-real 90-virtual)". */
    public static String buildInfo() {
        Native.load();
        return smelter_h.smelter_build_info().reinterpret(1024).getString(0);
    }

    /** The version alone ("0.1.0"), without the build's features: what outputs record, so builds agree. */
    public static String version() {
        String info = buildInfo();  // "smelter 0.1.0 (cpu avx2, ...)"
        String[] words = info.split(" ");
        return words.length > 1 ? words[1] : info;
    }

    /** Where the loaded libsmelter lives. */
    public static java.nio.file.Path libraryPath() {
        Native.load();
        return NativeLibrary.ensureLoaded();
    }

    /** The C ABI version of the loaded library. */
    public static int abiVersion() {
        Native.load();
        return smelter_h.smelter_abi_version();
    }

    /** CUDA devices usable now; 0 without a driver, a GPU, or a CUDA build. */
    public static int cudaDeviceCount() {
        Native.load();
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment count = arena.allocate(ValueLayout.JAVA_INT);
            Native.check(smelter_h.smelter_device_count(Device.Kind.CUDA.code, count), "smelter_device_count");
            return count.get(ValueLayout.JAVA_INT, 0);
        }
    }

    /** A description of the device ("NVIDIA H100 80GB HBM3, 132 SMs, 79 GiB, sm_90"). */
    public static String deviceName(Device device) {
        Native.load();
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment buf = arena.allocate(256);
            Native.check(smelter_h.smelter_device_name(device.kind().code, device.ordinal(), buf, buf.byteSize()),
                    "smelter_device_name(" + device + ")");
            return buf.getString(0);
        }
    }

    /** Opens a context on {@code device}; CPU contexts use every available core. */
    public static Context open(Device device) {
        return new Context(device, 0);
    }

    /**
     * Opens a context without the CUDA self-check ({@link SelfCheck}): for benchmarks, and for {@code smelter doctor},
     * which shows every kernel's result itself. {@link #open} checks a CUDA device first.
     */
    public static Context openUnchecked(Device device) {
        return new Context(device, 0, false);
    }

    /** Opens a CPU context with {@code threads} workers (0 = one per core). */
    public static Context openCpu(int threads) {
        return new Context(Device.cpu(), threads);
    }
}
