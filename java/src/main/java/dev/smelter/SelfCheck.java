package dev.smelter;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.List;
import java.util.Locale;
import java.util.SplittableRandom;
import java.util.function.Supplier;

/**
 * The backend checks itself against the CPU, as ggml's backend-ops test does: every native entry point (each merge
 * method family and option, thresholds and top-k, random masks, L1 sums, DELLA ranks, pieces under a memory limit,
 * pair statistics, both products, column statistics, both in blocks under a memory limit) runs on small random inputs
 * of odd sizes in every dtype on a reference CPU context and on the context under test, and the results are compared: bit for bit where the C ABI
 * promises it, else against a stated bound.
 *
 * <p>A CUDA context runs the quick subset the first time a (library build, device) pair is met and caches the verdict
 * beside the extracted library ({@link #gate}); a mismatch refuses CUDA with a message naming the kernel, so a wrong
 * or crashing kernel on an unfamiliar GPU never produces a checkpoint. {@code -Dsmelter.selfcheck=off} (or
 * {@code SMELTER_SELFCHECK=off}) skips it, e.g. for benchmarks. {@code smelter doctor} prints the whole table.
 */
public final class SelfCheck {
    private SelfCheck() {}

    /** One check: the kernel, its inputs, whether it agreed, the measured difference or error, the time on the subject. */
    public record Result(String kernel, String inputs, boolean passed, String detail, double millis) {}

    /** Runs every check ({@code quick}: the subset gating CUDA) of {@code subject} against {@code reference}. */
    public static List<Result> run(Context reference, Context subject, boolean quick) {
        List<Result> out = new ArrayList<>();
        for (Check c : checks()) {
            if (quick && !c.quick) continue;
            for (DType dtype : c.dtypes) out.add(c.run(reference, subject, dtype));
        }
        return out;
    }

    /**
     * Opens a context on {@code device} only if the self-check passes there: CPU contexts always; CUDA after the quick
     * check, or its cached verdict. A failed check throws SmelterException naming the kernel.
     */
    static void gate(Device device) {
        // A device that is not there is reported by the context itself ("cannot open cuda:N").
        if (device.kind() != Device.Kind.CUDA || disabled() || device.ordinal() >= Smelter.cudaDeviceCount()) return;
        Verdict v = verdict(key(device), () -> new Context(device, 0, false), Smelter.libraryPath().getParent());
        if (!v.passed())
            throw new SmelterException(Status.DEVICE_ERROR, "the CUDA backend failed its self-check on " + device + " ("
                    + Smelter.deviceName(device) + "): " + v.detail() + "; its results cannot be trusted here. "
                    + "--device cpu works (smelter doctor shows every kernel; -Dsmelter.selfcheck=off skips the check)");
    }

    /** Whether {@code device} passed (or needs no) self-check; for choosing a device automatically. */
    public static boolean usable(Device device) {
        try {
            gate(device);
            return true;
        } catch (SmelterException e) {
            System.err.println("warning: " + e.getMessage() + "; using the CPU");
            return false;
        }
    }

    /** A verdict: passed, or the first failing kernel and how it failed. */
    public record Verdict(boolean passed, String detail) {}

    /**
     * The verdict for the device named {@code key}: read from {@code cacheDir} when a check of this key ran before,
     * else the quick check of a context from {@code subject} against a one-thread CPU context, then cached.
     */
    static Verdict verdict(String key, Supplier<Context> subject, Path cacheDir) {
        return VERDICTS.computeIfAbsent(key, k -> check(k, subject, cacheDir));
    }

    /** Verdicts of this process, so that every context after the first costs nothing. */
    private static final java.util.Map<String, Verdict> VERDICTS = new java.util.concurrent.ConcurrentHashMap<>();

    /** Test hook: forgets this process's verdicts (the cache files stay). */
    static void forget() {
        VERDICTS.clear();
    }

    private static Verdict check(String key, Supplier<Context> subject, Path cacheDir) {
        Path cache = cacheDir == null ? null : cacheDir.resolve("selfcheck-" + key + ".txt");
        try {
            if (cache != null && Files.isRegularFile(cache)) {
                String text = Files.readString(cache, StandardCharsets.UTF_8).trim();
                return new Verdict(text.equals("pass"), text.startsWith("fail ") ? text.substring(5) : text);
            }
        } catch (IOException e) {
            // unreadable cache: check again
        }
        Verdict v;
        try (Context ref = Smelter.openCpu(1); Context ctx = subject.get()) {
            v = new Verdict(true, "pass");
            for (Result r : run(ref, ctx, true))
                if (!r.passed()) {
                    v = new Verdict(false, r.kernel() + " (" + r.inputs() + ") " + r.detail());
                    break;
                }
        } catch (SmelterException e) {  // a failed launch or a fault in the check: not a usable device either
            v = new Verdict(false, "the check itself failed: " + e.getMessage());
        }
        if (cache != null) {
            try {
                io(cache, v.passed() ? "pass" : "fail " + v.detail());
            } catch (IOException e) {
                // an unwritable cache only costs a check next time
            }
        }
        return v;
    }

    private static void io(Path file, String text) throws IOException {
        Path tmp = file.resolveSibling(file.getFileName() + ".tmp-" + ProcessHandle.current().pid());
        Files.writeString(tmp, text + "\n", StandardCharsets.UTF_8);
        Files.move(tmp, file, java.nio.file.StandardCopyOption.REPLACE_EXISTING, java.nio.file.StandardCopyOption.ATOMIC_MOVE);
    }

    static boolean disabled() {
        String p = System.getProperty("smelter.selfcheck", System.getenv().getOrDefault("SMELTER_SELFCHECK", "on"));
        return p.equalsIgnoreCase("off") || p.equalsIgnoreCase("false");
    }

    /** The cache key of a device: the library build and the device's name (model, memory, compute capability). */
    static String key(Device device) {
        String id = Smelter.buildInfo() + "|" + Smelter.deviceName(device) + "|" + device;
        try {
            byte[] h = MessageDigest.getInstance("SHA-256").digest(id.getBytes(StandardCharsets.UTF_8));
            return HexFormat.of().formatHex(h, 0, 8);
        } catch (java.security.NoSuchAlgorithmException e) {
            throw new IllegalStateException(e);
        }
    }

    /** Test hook: {@code -Dsmelter.selfcheck.inject=KERNEL} perturbs the subject's result of that kernel. */
    private static boolean injected(String kernel) {
        return kernel.equals(System.getProperty("smelter.selfcheck.inject"));
    }

    // ---- the checks -----------------------------------------------------------------------------------------

    /** What a check computes, as raw result bits (compared exactly) and values (compared against a bound). */
    private record Output(byte[] bits, double[] values, double[] scale) {}

    private interface Body {
        Output run(Context ctx, Arena arena, DType dtype);
    }

    /** @param bound 0: bit for bit; else the largest |difference| / scale allowed */
    private record Check(String kernel, String inputs, boolean quick, List<DType> dtypes, double bound, Body body) {
        Result run(Context reference, Context subject, DType dtype) {
            String in = inputs + (dtypes.size() > 1 || dtype != DType.F32 ? ", " + dtype.name().toLowerCase(Locale.ROOT) : "");
            try (Arena arena = Arena.ofConfined()) {
                Output want = body.run(reference, arena, dtype);
                long t0 = System.nanoTime();
                Output got = body.run(subject, arena, dtype);
                double ms = (System.nanoTime() - t0) / 1e6;
                if (injected(kernel) && got.bits().length > 0) got.bits()[got.bits().length / 2] ^= 1;
                if (injected(kernel) && got.values().length > 0) got.values()[0] += 1;
                int at = java.util.Arrays.mismatch(want.bits(), got.bits());
                if (at >= 0)
                    return new Result(kernel, in, false, "differs from the CPU at byte " + at + " of " + want.bits().length, ms);
                double worst = 0;
                for (int i = 0; i < want.values().length; i++) {
                    double d = Math.abs(want.values()[i] - got.values()[i]) / Math.max(want.scale()[i], Double.MIN_NORMAL);
                    if (!(d <= worst)) worst = Double.isNaN(d) ? Double.POSITIVE_INFINITY : Math.max(worst, d);
                }
                if (worst > bound)
                    return new Result(kernel, in, false, String.format(Locale.ROOT, "error %.3g above the bound %.3g", worst, bound), ms);
                return new Result(kernel, in, true, bound == 0 || want.values().length == 0 ? "bit-identical"
                        : String.format(Locale.ROOT, "error %.3g (bound %.3g)", worst, bound), ms);
            } catch (SmelterException e) {
                return new Result(kernel, in, false, "failed: " + e.getMessage(), 0);
            }
        }
    }

    static final int N = 4097;  // odd (17 x 241: DELLA rows of 17): no vector width divides it
    private static final List<DType> ALL = List.of(DType.F32, DType.BF16, DType.F16);
    private static final List<DType> F32 = List.of(DType.F32);

    private static List<Check> checks() {
        float[] w = {0.5f, 0.3f, 0.7f};
        double[] d = {0.4, 0.7, 0.55};
        return List.of(
                merge("merge linear", "3 models", true, ALL, MergeSpec.linear(w)),
                merge("merge task arithmetic", "3 models, lambda 0.8", false, ALL,
                        MergeSpec.taskArithmetic(w).toBuilder().lambda(0.8f).build()),
                merge("merge ties (per-tensor thresholds)", "3 models", true, ALL, MergeSpec.ties(w, d)),
                merge("merge ties (count consensus, f32 keys)", "3 models", false, ALL, MergeSpec.ties(w, d).toBuilder()
                        .consensus(MergeSpec.Consensus.COUNT).keyDType(DType.F32).build()),
                merge("merge dare_ties (Philox masks, L1 sums)", "3 models", true, ALL, MergeSpec.dareTies(w, d, 42)
                        .toBuilder().rescale(MergeSpec.Rescale.L1).tensorName("model.layers.1.mlp.up_proj.weight").build()),
                merge("merge dare_linear (1/density)", "3 models", false, ALL, MergeSpec.dareLinear(w, d, 7)),
                merge("merge breadcrumbs (upper keys)", "3 models", false, ALL,
                        MergeSpec.breadcrumbs(w, d, new double[] {0.02, 0.05, 0.01}, true)),
                merge("merge della (row ranks)", "3 models, rows of 17", true, ALL, MergeSpec.della(w, d,
                        new float[] {0.1f, 0.2f, 0.15f}, 17, 9, true)),
                new Check("merge in pieces (memory limit)", "ties and dare, pieces of 4 KiB", true, F32, 0, (ctx, a, t) -> {
                    ctx.setMemoryLimit(4096);
                    try {
                        Output x = mergeOutput(ctx, a, t, MergeSpec.ties(w, d), null, null);
                        Output y = mergeOutput(ctx, a, t, MergeSpec.dareTies(w, d, 3).toBuilder()
                                .rescale(MergeSpec.Rescale.L1).build(), null, null);
                        return concat(x, y);
                    } finally {
                        ctx.setMemoryLimit(0);
                    }
                }),
                new Check("merge with a position selection (SCE)", "variance, top-k, masked merge", true, F32, 0,
                        (ctx, a, t) -> {
                            List<Tensor> in = inputs(a, t, 4, 11);
                            Tensor var = Tensor.allocate(a, DType.F32, N);
                            ctx.merge(MergeSpec.variance(3), in.get(0), in.subList(1, 4), var);
                            int threshold;
                            try (TopK top = ctx.topK(DType.F32)) {
                                threshold = top.threshold(N / 3, pass -> pass.add(null, var));
                            }
                            MergeSpec spec = MergeSpec.taskArithmetic(w).toBuilder()
                                    .consensus(MergeSpec.Consensus.SUM_UNWEIGHTED).normalize(true).minDivisor(1e-6f).build();
                            Tensor out = Tensor.allocate(a, t, N);
                            ctx.merge(spec, in.get(0), in.subList(1, 4), new Context.Selection(var, threshold), null, out);
                            return concat(bits(var), bits(out));
                        }),
                new Check("merge with element weights (Fisher)", "3 models", false, ALL, 0, (ctx, a, t) -> {
                    List<Tensor> in = inputs(a, t, 4, 13), f = inputs(a, t, 3, 17);
                    for (Tensor x : f)
                        for (long i = 0; i < N; i++) x.setFloat(i, Math.abs(x.getFloat(i)));
                    Tensor out = Tensor.allocate(a, t, N);
                    ctx.merge(MergeSpec.fisher(w, new float[] {1e-3f, 0, 0}), null, in.subList(1, 4), null, f, out);
                    return bits(out);
                }),
                new Check("non-finite count", "NaN and infinities in the inputs", false, ALL, 0, (ctx, a, t) -> {
                    List<Tensor> in = inputs(a, t, 4, 19);
                    in.get(1).setFloat(5, Float.NaN);
                    in.get(2).setFloat(77, Float.POSITIVE_INFINITY);
                    Tensor out = Tensor.allocate(a, t, N);
                    Context.MergeCounts c = ctx.merge(MergeSpec.ties(w, d), in.get(0), in.subList(1, 4), out);
                    return concat(bits(out), longs(c.nonFinite(), c.positive(), c.negative(), c.none()));
                }),
                new Check("top-k thresholds", "k-th largest |delta| over 3 tensors", true, ALL, 0, (ctx, a, t) -> {
                    List<Tensor> in = inputs(a, t, 4, 23);
                    try (TopK top = ctx.topK(t)) {
                        int k = top.threshold(2 * N / 3, pass -> {
                            for (int m = 1; m < 4; m++) pass.add(in.get(0), in.get(m));
                        });
                        return longs(k);
                    }
                }),
                new Check("pair statistics", "dots, signs, TIES masks of 3 task vectors", true, ALL, 0, (ctx, a, t) -> {
                    List<Tensor> in = inputs(a, t, 4, 29);
                    PairStats s = new PairStats(3);
                    ctx.pairStats(in.subList(1, 4), in.get(0), new int[] {0x3c00, 0x3c80, 0x3b00}, DType.BF16, s);
                    List<Long> v = new ArrayList<>();
                    for (int i = 0; i < 3; i++)
                        for (int j = 0; j < 3; j++) {
                            v.add(Double.doubleToRawLongBits(s.dot(i, j)));
                            v.add(s.signConflicts(i, j));
                            v.add(s.bothKept(i, j));
                            v.add(s.bothNonzero(i, j));
                        }
                    return longs(v.stream().mapToLong(Long::longValue).toArray());
                }),
                product("product (co-moments)", true),
                product("product (Gram)", false),
                new Check("products and column statistics in blocks (memory limit)",
                        "whole against blocks of 64 on this device, 301 x 200", true, F32, 0, (ctx, a, t) -> {
                    Tensor x = random(a, DType.F32, 301L * 200, 43, 1.0);
                    Matrix m = new Matrix(x, 301, 200);
                    Tensor[] out = {Tensor.allocate(a, DType.F32, 200L * 200), Tensor.allocate(a, DType.F32, 200L * 200)};
                    double[][] sums = new double[2][200];
                    for (int pass = 0; pass < 2; pass++) {
                        ctx.setMemoryLimit(pass == 0 ? 0 : 250_000);  // blocks of 64 x 64 outputs, 46 columns of statistics
                        try {
                            ctx.columnProduct(m, null, m, null, null, out[pass], false);
                            ctx.columnStats(m, null, null, sums[pass], null);
                        } finally {
                            ctx.setMemoryLimit(0);
                        }
                    }
                    // The differences between one piece and the blocks: zero bits wherever the blocks are exact.
                    long[] diff = new long[200 * 200 + 200];
                    for (int i = 0; i < 200 * 200; i++)
                        diff[i] = Float.floatToRawIntBits(out[0].getFloat(i)) ^ Float.floatToRawIntBits(out[1].getFloat(i));
                    for (int i = 0; i < 200; i++)
                        diff[200 * 200 + i] = Double.doubleToRawLongBits(sums[0][i]) ^ Double.doubleToRawLongBits(sums[1][i]);
                    return longs(diff);
                }),
                new Check("column statistics", "sums and positive counts, 257 x 37", false, ALL, 1e-9, (ctx, a, t) -> {
                    Tensor x = random(a, t, 257 * 37, 31, 1.0);
                    double[] sums = new double[37];
                    long[] positive = new long[37];
                    float[] shift = new float[37];
                    java.util.Arrays.fill(shift, 0.25f);
                    ctx.columnStats(new Matrix(x, 257, 37), shift, null, sums, positive);
                    double[] scale = new double[37];
                    for (int j = 0; j < 37; j++)
                        for (int r = 0; r < 257; r++) scale[j] += Math.abs(x.getFloat((long) r * 37 + j) - 0.25);
                    return new Output(longs(positive).bits(), sums, scale);
                }));
    }

    private static Check merge(String kernel, String inputs, boolean quick, List<DType> dtypes, MergeSpec spec) {
        return new Check(kernel, inputs + ", n=" + N, quick, dtypes, 0, (ctx, a, t) -> mergeOutput(ctx, a, t, spec, null, null));
    }

    private static Output mergeOutput(Context ctx, Arena a, DType t, MergeSpec spec, Context.Selection s, List<Tensor> ew) {
        List<Tensor> in = inputs(a, t, spec.modelCount() + 1, spec.hashCode() & 0xFFFF);
        Tensor out = Tensor.allocate(a, t, N);
        Context.MergeCounts c = ctx.merge(spec, spec.method() == MergeSpec.Method.LINEAR ? null : in.get(0),
                in.subList(1, in.size()), s, ew, out);
        return concat(bits(out), longs(c.positive(), c.negative(), c.none(), c.nonFinite()));
    }

    /** Co-moments X^T W (Y) or Gram X Y^T of shifted f32 data; error relative to the product of the norms. */
    private static Check product(String kernel, boolean columns) {
        int rows = 301, xc = 37, yc = 29;
        String inputs = columns ? rows + " x " + xc + " and " + rows + " x " + yc + ", shifted" : rows + " x " + xc + ", shifted";
        return new Check(kernel, inputs, true, F32, 1e-5, (ctx, a, t) -> {
            Tensor x = random(a, DType.F32, (long) rows * xc, 37, 1.0), y = random(a, DType.F32, (long) rows * yc, 41, 1.0);
            float[] xs = new float[xc], ys = new float[yc];
            for (int i = 0; i < xc; i++) xs[i] = 0.1f * i;
            for (int j = 0; j < yc; j++) ys[j] = -0.05f * j;
            int outRows = columns ? xc : rows, outCols = columns ? yc : rows;
            Tensor out = Tensor.allocate(a, DType.F32, (long) outRows * outCols);
            Matrix mx = new Matrix(x, rows, xc);
            if (columns) ctx.columnProduct(mx, xs, new Matrix(y, rows, yc), ys, null, out, false);
            else ctx.rowProduct(mx, xs, new Matrix(x, rows, xc), xs, out, false);
            double[] v = new double[outRows * outCols], scale = new double[v.length];
            for (int i = 0; i < v.length; i++) {
                v[i] = out.getFloat(i);
                scale[i] = columns ? rows : xc;  // entries are sums of that many products of O(1) values
            }
            return new Output(new byte[0], v, scale);
        });
    }

    /** {@code count} tensors: a base and models close to it (deltas of mixed signs and magnitudes, a few ties). */
    private static List<Tensor> inputs(Arena a, DType t, int count, long seed) {
        SplittableRandom r = new SplittableRandom(seed);
        List<Tensor> out = new ArrayList<>();
        Tensor base = random(a, t, N, seed, 0.02);
        out.add(base);
        for (int m = 1; m < count; m++) {
            Tensor x = Tensor.allocate(a, t, N);
            for (long i = 0; i < N; i++) {
                double delta = (i % 97 == 0) ? 0.001 : 0.003 * (r.nextDouble() * 2 - 1);
                x.setFloat(i, (float) (base.getFloat(i) + delta));
            }
            out.add(x);
        }
        return out;
    }

    private static Tensor random(Arena a, DType t, long n, long seed, double spread) {
        SplittableRandom r = new SplittableRandom(seed * 0x9E3779B97F4A7C15L);
        Tensor x = Tensor.allocate(a, t, n);
        for (long i = 0; i < n; i++) x.setFloat(i, (float) (spread * (r.nextDouble() * 2 - 1)));
        return x;
    }

    private static Output bits(Tensor t) {
        return new Output(t.data().toArray(ValueLayout.JAVA_BYTE), new double[0], new double[0]);
    }

    private static Output longs(long... v) {
        MemorySegment s = MemorySegment.ofArray(new long[v.length]);
        for (int i = 0; i < v.length; i++) s.setAtIndex(ValueLayout.JAVA_LONG, i, v[i]);
        return new Output(s.toArray(ValueLayout.JAVA_BYTE), new double[0], new double[0]);
    }

    private static Output concat(Output x, Output y) {
        byte[] b = java.util.Arrays.copyOf(x.bits(), x.bits().length + y.bits().length);
        System.arraycopy(y.bits(), 0, b, x.bits().length, y.bits().length);
        double[] v = java.util.Arrays.copyOf(x.values(), x.values().length + y.values().length);
        System.arraycopy(y.values(), 0, v, x.values().length, y.values().length);
        double[] s = java.util.Arrays.copyOf(x.scale(), x.scale().length + y.scale().length);
        System.arraycopy(y.scale(), 0, s, x.scale().length, y.scale().length);
        return new Output(b, v, s);
    }
}
