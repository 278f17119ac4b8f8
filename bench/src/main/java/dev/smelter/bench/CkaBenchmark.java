package dev.smelter.bench;

import dev.smelter.Context;
import dev.smelter.DType;
import dev.smelter.Matrix;
import dev.smelter.Tensor;
import dev.smelter.analysis.Cka;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
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
 * Feature-space linear CKA of two {@code rows x cols} activation matrices (same rows), reported as
 * time and GFLOP/s ({@code 2 * rows * cols^2} per product).
 * <ul>
 *   <li>{@code product}: one centered co-moment {@code (X - sx)^T (Y - sy)} ({@code smelter_product},
 *       f32 accumulation), output in the backend's memory.
 *   <li>{@code productF64}: the same formed in f64 ({@code out_f64}, host memory), as the analysis forms it.
 *   <li>{@code feature}: {@link Cka#feature} end to end: column sums, the three co-moments
 *       {@code XtY}, {@code XtX}, {@code YtY} (3 f64 products) and the f64 reduction on the host.
 *       Compare with {@code torch_merge.py}'s {@code cka} (centering and three cuBLAS f32 GEMMs).
 * </ul>
 * Matrices live in device memory on CUDA. Defaults suit a CPU run; the GPU suite uses
 * {@code rows=64Ki, cols=1024}.
 */
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.MILLISECONDS)
@Warmup(iterations = 2, time = 500, timeUnit = TimeUnit.MILLISECONDS)
@Measurement(iterations = 3, time = 1)
@Fork(value = 1, jvmArgsAppend = {"--enable-native-access=ALL-UNNAMED", "--sun-misc-unsafe-memory-access=allow"})
@State(Scope.Benchmark)
public class CkaBenchmark {
    @Param({"cpu"})
    public String backend;

    @Param({"F32"})
    public String dtype;

    @Param({"8Ki"})
    public String rows;

    @Param({"256"})
    public String cols;

    private Arena arena;
    private Context ctx;
    private final List<Tensor> owned = new ArrayList<>();
    private Matrix x, y;
    private Tensor out;
    private MemorySegment out64;
    private float[] sx, sy;

    @Setup(Level.Trial)
    public void setup() {
        ctx = BenchSupport.open(backend);
        arena = Arena.ofShared();
        DType dt = DType.valueOf(dtype.toUpperCase(java.util.Locale.ROOT));
        long r = BenchSupport.parseCount(rows), c = BenchSupport.parseCount(cols);
        Tensor[] t = BenchSupport.tensors(ctx, arena, dt, r * c, new int[] {1, 2}, owned);
        x = new Matrix(t[0], r, c);
        y = new Matrix(t[1], r, c);
        out = BenchSupport.tensors(ctx, arena, DType.F32, c * c, new int[] {-1}, owned)[0];
        out64 = arena.allocate(c * c * Double.BYTES, Double.BYTES);
        sx = new float[(int) c];
        sy = new float[(int) c];
        java.util.Arrays.fill(sx, 0.001f);
        java.util.Arrays.fill(sy, -0.001f);
    }

    @Benchmark
    public void product() {
        ctx.columnProduct(x, sx, y, sy, null, out, false);
    }

    @Benchmark
    public void productF64() {
        ctx.columnProductF64(x, sx, y, sy, null, out64, false);
    }

    @Benchmark
    public double feature() {
        return Cka.feature(ctx, x, y, null);
    }

    @TearDown(Level.Trial)
    public void tearDown() {
        BenchSupport.close(ctx, owned);
        if (arena != null) arena.close();
    }
}
