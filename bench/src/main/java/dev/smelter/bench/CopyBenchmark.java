package dev.smelter.bench;

import dev.smelter.Context;
import dev.smelter.DType;
import dev.smelter.Tensor;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.stream.IntStream;
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
 * The memory-bandwidth floor the merges are compared with: one copy of {@code bytes}, counted as
 * bytes read plus bytes written ({@code 2 * bytes}, STREAM's accounting, the same as the merges').
 * <ul>
 *   <li>{@code java}: STREAM-like copy of off-heap segments, split over all cores
 *       ({@code MemorySegment.copy} per core, parallel).
 *   <li>{@code native}: {@code smelter_copy} on a CPU context (one {@code memmove}, one thread).
 *   <li>{@code cuda}: {@code smelter_copy} between two device buffers ({@code cudaMemcpyAsync}
 *       device to device) and a synchronize: the GPU's copy bandwidth.
 * </ul>
 * The report takes, per backend, the fastest copy at the largest size measured as the floor.
 */
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.MILLISECONDS)
@Warmup(iterations = 2, time = 500, timeUnit = TimeUnit.MILLISECONDS)
@Measurement(iterations = 3, time = 1)
@Fork(value = 1, jvmArgsAppend = {"--enable-native-access=ALL-UNNAMED", "--sun-misc-unsafe-memory-access=allow"})
@State(Scope.Benchmark)
public class CopyBenchmark {
    @Param({"java", "native"})
    public String copy;

    /** Bytes copied (each read once and written once). */
    @Param({"256Mi"})
    public String bytes;

    private long size;
    private Arena arena;
    private Context ctx;
    private final List<Tensor> owned = new ArrayList<>();
    private MemorySegment src, dst;
    private Tensor srcT, dstT;
    private int parts;

    @Setup(Level.Trial)
    public void setup() {
        size = BenchSupport.parseCount(bytes);
        switch (copy) {
            case "java" -> {
                arena = Arena.ofShared();
                src = arena.allocate(size, 64).fill((byte) 1);
                dst = arena.allocate(size, 64).fill((byte) 2);
                parts = Runtime.getRuntime().availableProcessors();
            }
            case "native", "cuda" -> {
                ctx = BenchSupport.open(copy.equals("cuda") ? "cuda" : "cpu");
                arena = Arena.ofShared();
                int[] streams = {0, -1};
                Tensor[] t = BenchSupport.tensors(ctx, arena, DType.BF16, size / 2, streams, owned);
                srcT = t[0];
                dstT = t[1];
            }
            default -> throw new IllegalArgumentException("unknown copy " + copy + " (java, native, cuda)");
        }
    }

    @Benchmark
    public void copy() {
        if (srcT == null) {
            long step = size / parts;
            IntStream.range(0, parts).parallel().forEach(p -> {
                long from = p * step, len = p == parts - 1 ? size - from : step;
                MemorySegment.copy(src, from, dst, from, len);
            });
        } else {
            ctx.copy(dstT, srcT);
            ctx.synchronize();
        }
    }

    @TearDown(Level.Trial)
    public void tearDown() {
        BenchSupport.close(ctx, owned);
        if (arena != null) arena.close();
    }
}
