package dev.smelter.bench;

import dev.smelter.Context;
import dev.smelter.DType;
import dev.smelter.MergeSpec;
import dev.smelter.Smelter;
import dev.smelter.Tensor;
import java.lang.foreign.Arena;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
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
 * Fixed cost of one call on tiny tensors, where no bandwidth is involved:
 * <ul>
 *   <li>{@code downcall}: {@code smelter_abi_version()}, the bare FFM downcall.
 *   <li>{@code merge}: task arithmetic of 2 models of {@code elements} f32 elements: the Java side
 *       (params struct in a confined arena, tensor structs), validation and plan in the library,
 *       and the backend's dispatch (thread pool on CPU; kernel launch, sign-count read-back and
 *       stream synchronize on CUDA).
 *   <li>{@code copy}: {@code smelter_copy} of the same bytes (host to host on CPU, device to device
 *       and a synchronize on CUDA).
 * </ul>
 */
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.MICROSECONDS)
@Warmup(iterations = 2, time = 500, timeUnit = TimeUnit.MILLISECONDS)
@Measurement(iterations = 3, time = 1)
@Fork(value = 1, jvmArgsAppend = {"--enable-native-access=ALL-UNNAMED", "--sun-misc-unsafe-memory-access=allow"})
@State(Scope.Benchmark)
public class OverheadBenchmark {
    @Param({"cpu"})
    public String backend;

    @Param({"16"})
    public String elements;

    private Arena arena;
    private Context ctx;
    private final List<Tensor> owned = new ArrayList<>();
    private Tensor base, out;
    private List<Tensor> inputs;
    private MergeSpec spec;

    @Setup(Level.Trial)
    public void setup() {
        ctx = BenchSupport.open(backend);
        arena = Arena.ofShared();
        Tensor[] t = BenchSupport.tensors(ctx, arena, DType.F32, BenchSupport.parseCount(elements),
                new int[] {0, 1, 2, -1}, owned);
        base = t[0];
        inputs = List.of(t[1], t[2]);
        out = t[3];
        spec = MergeSpec.taskArithmetic(0.5f, 0.5f);
    }

    @Benchmark
    public int downcall() {
        return Smelter.abiVersion();
    }

    @Benchmark
    public Object merge() {
        return ctx.merge(spec, base, inputs, out);
    }

    @Benchmark
    public void copy() {
        ctx.copy(out, base);
        if (BenchSupport.isCuda(ctx)) ctx.synchronize();
    }

    @TearDown(Level.Trial)
    public void tearDown() {
        BenchSupport.close(ctx, owned);
        if (arena != null) arena.close();
    }
}
