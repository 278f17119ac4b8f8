package dev.smelter.bench;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.concurrent.TimeUnit;
import java.util.stream.IntStream;
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
 * The CPU's memory-bandwidth floor: a STREAM-like copy split over all cores, counted as bytes read
 * plus bytes written (the same accounting as {@link MergeBenchmark}).
 */
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.MILLISECONDS)
@Warmup(iterations = 2, time = 1)
@Measurement(iterations = 3, time = 2)
@Fork(1)
@State(Scope.Benchmark)
public class CopyBenchmark {
    @Param({"268435456"})
    public long bytes;

    private Arena arena;
    private MemorySegment src, dst;

    @AuxCounters(AuxCounters.Type.OPERATIONS)
    @State(Scope.Thread)
    public static class Bytes {
        public long bytes;
    }

    @Setup(Level.Trial)
    public void setup() {
        arena = Arena.ofShared();
        src = arena.allocate(bytes, 64).fill((byte) 1);
        dst = arena.allocate(bytes, 64).fill((byte) 2);
    }

    @Benchmark
    public void copy(Bytes counter) {
        int parts = Runtime.getRuntime().availableProcessors();
        long step = bytes / parts;
        IntStream.range(0, parts).parallel().forEach(p -> {
            long from = p * step, len = p == parts - 1 ? bytes - from : step;
            MemorySegment.copy(src, from, dst, from, len);
        });
        counter.bytes += 2 * bytes;
    }

    @TearDown(Level.Trial)
    public void tearDown() {
        arena.close();
    }
}
