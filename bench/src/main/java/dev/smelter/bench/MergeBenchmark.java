package dev.smelter.bench;

import dev.smelter.Context;
import dev.smelter.DType;
import dev.smelter.Device;
import dev.smelter.MergeSpec;
import dev.smelter.Smelter;
import dev.smelter.Tensor;
import java.lang.foreign.Arena;
import java.lang.foreign.ValueLayout;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.SplittableRandom;
import java.util.concurrent.TimeUnit;
import org.openjdk.jmh.annotations.AuxCounters;
import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.BenchmarkMode;
import org.openjdk.jmh.annotations.Fork;
import org.openjdk.jmh.annotations.Level;
import org.openjdk.jmh.annotations.Measurement;
import org.openjdk.jmh.annotations.Mode;
import org.openjdk.jmh.annotations.OutputTimeUnit;
import org.openjdk.jmh.annotations.Param;
import org.openjdk.jmh.annotations.Scope;
import org.openjdk.jmh.annotations.Setup;
import org.openjdk.jmh.annotations.State;
import org.openjdk.jmh.annotations.TearDown;
import org.openjdk.jmh.annotations.Warmup;

/**
 * Merge throughput on the minimal bytes (each input read once, the output written once), reported
 * as the auxiliary counter {@code bytes} per second next to the average time. Compare it with
 * {@link CopyBenchmark} on the same machine. Tensors live where the device reads them fastest:
 * device memory on CUDA, host memory on CPU.
 */
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.MILLISECONDS)
@Warmup(iterations = 2, time = 1)
@Measurement(iterations = 3, time = 2)
@Fork(value = 1, jvmArgsAppend = "--enable-native-access=ALL-UNNAMED")
@State(Scope.Benchmark)
public class MergeBenchmark {
    @Param({"cpu"})
    public String device;

    @Param({"ta", "ties", "dare_ties"})
    public String method;

    @Param({"4"})
    public int models;

    @Param({"BF16", "F32"})
    public String dtype;

    /** Elements per tensor: 4M bf16 = 8 MB. */
    @Param({"4194304"})
    public long elements;

    private Arena arena;
    private Context ctx;
    private Tensor base, out;
    private final List<Tensor> inputs = new ArrayList<>();
    private final List<Tensor> owned = new ArrayList<>();
    private MergeSpec spec;

    @AuxCounters(AuxCounters.Type.OPERATIONS)
    @State(Scope.Thread)
    public static class Bytes {
        public long bytes;
    }

    @Setup(Level.Trial)
    public void setup() {
        arena = Arena.ofShared();
        ctx = Smelter.open(Device.parse(device));
        DType dt = DType.valueOf(dtype);
        SplittableRandom rnd = new SplittableRandom(1);
        base = place(random(dt, rnd));
        for (int i = 0; i < models; i++) inputs.add(place(random(dt, rnd)));
        out = place(Tensor.allocate(arena, dt, elements));
        float[] w = new float[models], d = new float[models];
        Arrays.fill(w, 1.0f / models);
        Arrays.fill(d, 0.3f);
        spec = switch (method) {
            case "ta" -> MergeSpec.taskArithmetic(w);
            case "ties" -> MergeSpec.ties(w, d);
            case "dare_ties" -> MergeSpec.dareTies(w, d, 1).toBuilder().tensorName("bench").build();
            case "linear" -> MergeSpec.linear(w);
            default -> throw new IllegalArgumentException("unknown method " + method);
        };
    }

    private Tensor random(DType dt, SplittableRandom rnd) {
        Tensor t = Tensor.allocate(arena, dt, elements);
        for (long i = 0; i < elements; i++) {
            float v = (float) (rnd.nextDouble() - 0.5) * 0.02f;
            if (dt == DType.F32) t.data().setAtIndex(ValueLayout.JAVA_FLOAT, i, v);
            else if (dt == DType.BF16) t.data().setAtIndex(ValueLayout.JAVA_SHORT, i, (short) (Float.floatToIntBits(v) >>> 16));
            else t.data().setAtIndex(ValueLayout.JAVA_SHORT, i, Float.floatToFloat16(v));
        }
        return t;
    }

    private Tensor place(Tensor host) {
        if (ctx.device().kind() == Device.Kind.CPU) return host;
        Tensor d = ctx.allocate(host.dtype(), host.count(), Tensor.Memory.DEVICE);
        ctx.copy(d, host);
        owned.add(d);
        return d;
    }

    @Benchmark
    public void merge(Bytes bytes) {
        ctx.merge(spec, base, inputs, out);
        bytes.bytes += (long) (models + 2) * base.byteSize();
    }

    @TearDown(Level.Trial)
    public void tearDown() {
        for (Tensor t : owned) ctx.free(t);
        ctx.close();
        arena.close();
    }
}
