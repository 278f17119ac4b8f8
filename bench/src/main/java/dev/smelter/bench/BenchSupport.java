package dev.smelter.bench;

import dev.smelter.Context;
import dev.smelter.DType;
import dev.smelter.Device;
import dev.smelter.Smelter;
import dev.smelter.Tensor;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.List;
import java.util.Locale;
import java.util.SplittableRandom;
import java.util.stream.LongStream;

/**
 * What the benchmarks share: opening a backend (CUDA refused cleanly without a GPU), sizes such as
 * {@code 256Mi}, deterministic random tensors generated in parallel, and placing tensors where the
 * backend reads them fastest (device memory on CUDA, so the kernel is measured and not PCIe).
 */
final class BenchSupport {
    private BenchSupport() {}

    /** Thrown from a setup when a benchmark cannot run here; printed as one line, no stack trace. */
    static final class Skip extends RuntimeException {
        Skip(String message) {
            super(message, null, false, false);
        }

        @Override
        public String toString() {
            return "skipped: " + getMessage();
        }
    }

    /** A context on {@code cpu} or {@code cuda}; {@link Skip} when CUDA is asked for and absent. */
    static Context open(String backend) {
        Device device = Device.parse(backend);
        if (device.kind() == Device.Kind.CUDA && Smelter.cudaDeviceCount() == 0)
            throw new Skip("no CUDA device here, " + backend + " benchmarks are skipped (" + Smelter.buildInfo() + ")");
        return Smelter.open(device);
    }

    static boolean isCuda(Context ctx) {
        return ctx.device().kind() == Device.Kind.CUDA;
    }

    /**
     * Parses a count with an optional binary suffix: {@code 16}, {@code 2Mi} (2 * 2^20),
     * {@code 1Gi}, {@code 64Ki}; {@code k}, {@code M}, {@code G} are taken as binary too.
     */
    static long parseCount(String text) {
        String s = text.trim();
        long unit = 1;
        String lower = s.toLowerCase(Locale.ROOT);
        if (lower.endsWith("i")) lower = lower.substring(0, lower.length() - 1);
        if (lower.endsWith("k")) unit = 1L << 10;
        else if (lower.endsWith("m")) unit = 1L << 20;
        else if (lower.endsWith("g")) unit = 1L << 30;
        if (unit != 1) lower = lower.substring(0, lower.length() - 1);
        try {
            return Math.multiplyExact(Long.parseLong(lower.trim()), unit);
        } catch (NumberFormatException | ArithmeticException e) {
            throw new IllegalArgumentException("not a count: '" + text + "' (use e.g. 16, 2Mi, 256Mi, 1Gi)");
        }
    }

    private static final long CHUNK = 1 << 20;

    /**
     * Fills {@code t} with stream {@code stream} of a deterministic set of weights: stream 0 is a
     * base (uniform, |x| < 0.02), stream i > 0 is the base plus a task vector 10x smaller, so
     * deltas are small against the weights as in fine-tuned models. Chunks are generated in
     * parallel, each from its own seed: the values do not depend on the thread count.
     */
    static void fill(Tensor t, int stream) {
        long n = t.count();
        MemorySegment seg = t.data();
        DType dt = t.dtype();
        LongStream.range(0, (n + CHUNK - 1) / CHUNK).parallel().forEach(c -> {
            SplittableRandom base = new SplittableRandom(0x5EED0000L + c);
            SplittableRandom delta = new SplittableRandom(((long) stream << 40) ^ (0xDE17A000L + c));
            long end = Math.min(n, (c + 1) * CHUNK);
            for (long i = c * CHUNK; i < end; i++) {
                float v = (float) (base.nextDouble() - 0.5) * 0.04f;
                if (stream > 0) v += (float) (delta.nextDouble() - 0.5) * 0.004f;
                switch (dt) {
                    case F32 -> seg.setAtIndex(ValueLayout.JAVA_FLOAT, i, v);
                    case BF16 -> seg.setAtIndex(ValueLayout.JAVA_SHORT, i, bf16(v));
                    case F16 -> seg.setAtIndex(ValueLayout.JAVA_SHORT, i, Float.floatToFloat16(v));
                }
            }
        });
    }

    /** Round to nearest even (inputs are finite). */
    private static short bf16(float v) {
        int bits = Float.floatToRawIntBits(v);
        return (short) ((bits + 0x7FFF + ((bits >>> 16) & 1)) >>> 16);
    }

    /**
     * Allocates tensors for {@code streams} (see {@link #fill}) where {@code ctx} reads them: host
     * memory from {@code arena} on CPU; device memory on CUDA, filled through one reused host
     * buffer. Device tensors are recorded in {@code owned} for {@link #free}.
     */
    static Tensor[] tensors(Context ctx, Arena arena, DType dtype, long count, int[] streams, List<Tensor> owned) {
        Tensor[] out = new Tensor[streams.length];
        if (!isCuda(ctx)) {
            for (int i = 0; i < streams.length; i++) {
                out[i] = Tensor.allocate(arena, dtype, count);
                if (streams[i] >= 0) fill(out[i], streams[i]);
            }
            return out;
        }
        try (Arena staging = Arena.ofShared()) {
            Tensor host = Tensor.allocate(staging, dtype, count);
            for (int i = 0; i < streams.length; i++) {
                out[i] = ctx.allocate(dtype, count, Tensor.Memory.DEVICE);
                owned.add(out[i]);
                if (streams[i] >= 0) {
                    fill(host, streams[i]);
                    ctx.copy(out[i], host);
                    ctx.synchronize();
                }
            }
        }
        return out;
    }

    /** Frees device tensors from {@link #tensors}, then closes the context. */
    static void close(Context ctx, List<Tensor> owned) {
        if (ctx == null) return;
        for (Tensor t : owned) ctx.free(t);
        owned.clear();
        ctx.close();
    }
}
