package dev.smelter.bench;

import dev.smelter.Context;
import dev.smelter.DType;
import dev.smelter.MergeSpec;
import dev.smelter.methods.SceMerge;
import dev.smelter.Tensor;
import dev.smelter.TopK;
import java.lang.foreign.Arena;
import java.util.ArrayList;
import java.util.Arrays;
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
 * Time of one merge of {@code models} tensors of {@code elements} elements into a new one. The
 * report turns it into GB/s of minimal bytes (see {@link Report#minimalBytes}): each input read
 * once, the output written once, so {@code (models + 2) * tensor bytes} for the task-arithmetic
 * family and {@code (models + 1) * tensor bytes} for linear. Extra passes (the TIES threshold
 * histograms, the L1 norms of {@code dare_l1}) are not counted: they are the cost being measured.
 *
 * <p>Methods, with mergekit's defaults for its config of the same name, weights {@code 1/models}
 * and density {@code 0.5}:
 * <ul>
 *   <li>{@code linear}: weighted mean of the models (normalize).
 *   <li>{@code ta}: task arithmetic, {@code base + sum w_i (x_i - base)}.
 *   <li>{@code ties}: TIES with per-tensor trimming (one exact top-k threshold pass per model inside
 *       the merge call: one 16-bit histogram pass, two for f32), sign election by sum, disjoint mean.
 *   <li>{@code ties_global}: TIES with model-wide trimming as {@code trim_scope: model} runs it:
 *       a streaming {@link TopK} pass per model (two for f32), then the merge with those thresholds.
 *       Here the "model" is this one tensor.
 *   <li>{@code dare}: DARE-TIES, Bernoulli drop, kept deltas times {@code 1/density} (what the CLI runs
 *       for {@code rescale: true}), sign election by sum, no normalize.
 *   <li>{@code dare_l1}: the same with L1 rescaling ({@code ||delta||_1 / ||kept||_1}, one more pass per
 *       model), which is what mergekit computes for {@code rescale: true} since early 2025.
 *   <li>{@code breadcrumbs}: mergekit's {@code breadcrumbs_ties} (gamma 0.01): two exact thresholds per model
 *       (lower and upper key), sign election, sum.
 *   <li>{@code della}: mergekit's {@code della} with rows of 4096 (epsilon 0.15, L1 rescale): a per-row sort of
 *       every model's magnitudes, the L1 pass, then the merge.
 *   <li>{@code sce}: mergekit's {@code sce} with {@code select_topk} 0.5: the variance pass, its exact f32
 *       top-k (two passes over the variance), the masked sums of squares, then the merge.
 * </ul>
 *
 * <p>Tensors live where the backend reads them fastest: host memory on CPU, device memory on CUDA
 * (so PCIe is not measured). Backend {@code cuda} is skipped with a one-line message without a GPU.
 */
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.MILLISECONDS)
@Warmup(iterations = 2, time = 500, timeUnit = TimeUnit.MILLISECONDS)
@Measurement(iterations = 3, time = 1)
@Fork(value = 1, jvmArgsAppend = {"--enable-native-access=ALL-UNNAMED", "--sun-misc-unsafe-memory-access=allow"})
@State(Scope.Benchmark)
public class MergeBenchmark {
    @Param({"cpu"})
    public String backend;

    @Param({"linear", "ta", "ties", "ties_global", "dare"})
    public String method;

    @Param({"4"})
    public int models;

    @Param({"BF16", "F32"})
    public String dtype;

    /** Elements per tensor, e.g. 2Mi (4 MiB of bf16) .. 256Mi (512 MiB bf16, 1 GiB f32). */
    @Param({"2Mi"})
    public String elements;

    /** Trim / keep density of every model (ties, ties_global, dare, dare_l1). */
    @Param({"0.5"})
    public float density;

    private Arena arena;
    private Context ctx;
    private final List<Tensor> owned = new ArrayList<>();
    private Tensor base, out, scratch;
    private List<Tensor> inputs;
    private MergeSpec spec;
    private DType dt;
    private long k;

    @Setup(Level.Trial)
    public void setup() {
        ctx = BenchSupport.open(backend);
        arena = Arena.ofShared();
        dt = DType.valueOf(dtype.toUpperCase(java.util.Locale.ROOT));
        long n = BenchSupport.parseCount(elements);
        int[] streams = new int[models + 2];
        for (int i = 0; i <= models; i++) streams[i] = i;  // base, the models
        streams[models + 1] = -1;                          // the output
        Tensor[] t = BenchSupport.tensors(ctx, arena, dt, n, streams, owned);
        base = t[0];
        inputs = List.of(Arrays.copyOfRange(t, 1, models + 1));
        out = t[models + 1];
        spec = spec(method, models, density);
        if (method.equals("sce")) {
            scratch = ctx.allocate(DType.F32, n, base.memory());
            owned.add(scratch);
        }
        k = (long) Math.floor((double) density * n);
    }

    /** The spec of each method, as the CLI builds it for the mergekit method of the same name. */
    static MergeSpec spec(String method, int models, float density) {
        float[] w = new float[models], d = new float[models];
        Arrays.fill(w, 1.0f / models);
        Arrays.fill(d, density);
        return switch (method) {
            case "linear" -> MergeSpec.linear(w);
            case "ta" -> MergeSpec.taskArithmetic(w);
            case "ties", "ties_global" -> MergeSpec.ties(w, d);
            case "dare" -> MergeSpec.dareTies(w, d, 42).toBuilder().normalize(false).tensorName("bench").build();
            case "dare_l1" -> MergeSpec.dareTies(w, d, 42).toBuilder().normalize(false)
                    .rescale(MergeSpec.Rescale.L1).tensorName("bench").build();
            case "breadcrumbs" -> MergeSpec.breadcrumbs(w, d, null, true);
            case "della" -> MergeSpec.della(w, d, null, 4096, 42, true).toBuilder().rescale(MergeSpec.Rescale.L1)
                    .tensorName("bench").build();
            case "sce" -> MergeSpec.taskArithmetic(w);  // resolved per call by SceMerge
            default -> throw new IllegalArgumentException("unknown method " + method
                    + " (linear, ta, ties, ties_global, dare, dare_l1, breadcrumbs, della, sce)");
        };
    }

    @Benchmark
    public Object merge() {
        MergeSpec s = spec;
        if (method.equals("ties_global")) s = spec.toBuilder().thresholds(thresholds()).keyDType(dt).build();
        if (method.equals("sce")) {
            SceMerge.merge(ctx, base, inputs, 0.5, SceMerge.Variant.MERGEKIT, "bench", scratch, out);
            return out;
        }
        return ctx.merge(s, base, inputs, out);
    }

    /** Model-wide thresholds as CheckpointMerger computes them, over the one tensor here. */
    private int[] thresholds() {
        int[] th = new int[models];
        for (int i = 0; i < models; i++) {
            Tensor model = inputs.get(i);
            try (TopK topK = ctx.topK(dt)) {
                th[i] = topK.threshold(k, pass -> pass.add(base, model));
            }
        }
        return th;
    }

    @TearDown(Level.Trial)
    public void tearDown() {
        BenchSupport.close(ctx, owned);
        if (arena != null) arena.close();
    }
}
