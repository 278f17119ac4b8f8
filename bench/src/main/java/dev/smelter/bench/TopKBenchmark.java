package dev.smelter.bench;

import dev.smelter.Context;
import dev.smelter.DType;
import dev.smelter.Tensor;
import dev.smelter.TopK;
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
 * The exact top-k threshold alone: the k-th largest |x| of one tensor, {@code k = floor(density * n)},
 * through {@link TopK} (one 16-bit histogram pass for bf16, two passes for f32), the same work as
 * {@code torch.kthvalue(x.abs(), n - k + 1)} or {@code torch.topk(x.abs(), k).values.min()}
 * (see {@code torch_merge.py}). Minimal bytes: the tensor read once.
 */
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.MILLISECONDS)
@Warmup(iterations = 2, time = 500, timeUnit = TimeUnit.MILLISECONDS)
@Measurement(iterations = 3, time = 1)
@Fork(value = 1, jvmArgsAppend = {"--enable-native-access=ALL-UNNAMED", "--sun-misc-unsafe-memory-access=allow"})
@State(Scope.Benchmark)
public class TopKBenchmark {
    @Param({"cpu"})
    public String backend;

    @Param({"BF16", "F32"})
    public String dtype;

    @Param({"2Mi"})
    public String elements;

    @Param({"0.5"})
    public float density;

    private Arena arena;
    private Context ctx;
    private final List<Tensor> owned = new ArrayList<>();
    private Tensor x;
    private DType dt;
    private long k;

    @Setup(Level.Trial)
    public void setup() {
        ctx = BenchSupport.open(backend);
        arena = Arena.ofShared();
        dt = DType.valueOf(dtype.toUpperCase(java.util.Locale.ROOT));
        long n = BenchSupport.parseCount(elements);
        x = BenchSupport.tensors(ctx, arena, dt, n, new int[] {1}, owned)[0];
        k = (long) Math.floor((double) density * n);
    }

    @Benchmark
    public int threshold() {
        try (TopK topK = ctx.topK(dt)) {
            return topK.threshold(k, pass -> pass.add(null, x));
        }
    }

    @TearDown(Level.Trial)
    public void tearDown() {
        BenchSupport.close(ctx, owned);
        if (arena != null) arena.close();
    }
}
