package dev.smelter.merge;

import dev.smelter.Context;
import dev.smelter.DType;
import dev.smelter.Device;
import dev.smelter.MergeSpec;
import dev.smelter.PairStats;
import dev.smelter.methods.SceMerge;
import dev.smelter.Smelter;
import dev.smelter.Tensor;
import dev.smelter.TopK;
import dev.smelter.config.ConfigException;
import dev.smelter.config.MergeConfig;
import dev.smelter.methods.MergeMethods;
import dev.smelter.methods.NanOutput;
import dev.smelter.config.SweepGrid;
import dev.smelter.config.TensorNames;
import dev.smelter.io.Checkpoint;
import dev.smelter.io.CheckpointFormatException;
import dev.smelter.io.CheckpointWriter;
import dev.smelter.io.ReadAhead;
import dev.smelter.io.SafetensorsDType;
import dev.smelter.io.WorkDirs;
import dev.smelter.io.WriteBehind;
import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.EnumMap;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.TreeSet;
import java.util.concurrent.Future;
import java.util.function.Consumer;
import java.util.stream.IntStream;
import java.util.stream.Stream;

/**
 * Runs every configuration of a {@link SweepGrid} in one pass over the inputs: each input tensor is read once
 * (on CUDA, copied to the device once) and merged into every configuration from there.
 *
 * <p>What the configurations share is computed once per tensor: TIES trim thresholds for every density from one
 * key histogram per model (16-bit keys; f32 keys need a refinement pass per distinct density, see
 * {@link #thresholds}), the pairwise statistics of the composed methods, and the base's norm. Each configuration
 * then costs one merge call, and either writing its checkpoint (a {@link CheckpointWriter} per configuration, all
 * open at once) or, for statistics only, one statistics pass over the merged tensor. The outputs are
 * bit-identical to merging each configuration on its own.
 *
 * <p>Everything is written into a hidden directory beside the output and renamed into place at the end: an
 * error in any configuration leaves nothing behind.
 */
public final class SweepRunner implements AutoCloseable {
    /** More checkpoints than this at once hold too many open files and too much disk; statistics have no limit. */
    public static final int MAX_CHECKPOINT_CONFIGURATIONS = 256;

    /**
     * @param writeCheckpoints a full checkpoint per configuration (false: statistics only)
     * @param stats per-layer statistics of the merged task vectors (needs a base model)
     * @param compareSequential afterwards, merge every configuration on its own ({@link CheckpointMerger}) and time it
     */
    public record Options(Device device, Path output, long maxShardBytes, boolean overwrite, boolean allowVocabMismatch,
            CheckpointMerger.NonFinite nonFinite, boolean writeCheckpoints, boolean stats, boolean compareSequential,
            long memoryLimit) {}

    /** One configuration: its grid point, name and the config it merges with. */
    public record Configuration(int index, SweepGrid.Point point, MergeConfig config) {
        public String name() {
            return point.name();
        }
    }

    /**
     * Statistics of one configuration's merged task vector {@code merged - base} over one layer ({@code "0"},
     * {@code "1"}, ..., {@code "other"} for embeddings, final norm and head, {@code "all"} for the whole model).
     * Deltas are computed in f32 as the merge does ({@code f32(merged) - f32(base)}), squares summed in f64.
     *
     * @param changed elements whose delta is non-zero (NaN counts as zero)
     * @param agreeing per model: elements where the merged delta and the model's delta are non-zero with one sign
     */
    public record LayerStats(String layer, long elements, double deltaSquares, double baseSquares, long changed,
            long[] agreeing) {
        public double deltaNorm() {
            return Math.sqrt(deltaSquares);
        }

        public double baseNorm() {
            return Math.sqrt(baseSquares);
        }

        /** {@code |delta| / |base|}; NaN for a zero base. */
        public double relativeDeltaNorm() {
            return baseSquares > 0 ? deltaNorm() / baseNorm() : Double.NaN;
        }

        /** Fraction of the elements the merge changed. */
        public double keptFraction() {
            return elements > 0 ? (double) changed / elements : Double.NaN;
        }

        /** Among the changed elements, the fraction whose sign agrees with model {@code i}'s delta. */
        public double signAgreement(int i) {
            return changed > 0 ? (double) agreeing[i] / changed : Double.NaN;
        }

        /** {@link #signAgreement(int)} averaged over the models. */
        public double signAgreement() {
            if (changed == 0) return Double.NaN;
            double sum = 0;
            for (int i = 0; i < agreeing.length; i++) sum += signAgreement(i);
            return sum / agreeing.length;
        }
    }

    /**
     * One configuration's outcome. {@code seconds} is the time spent on it alone (merge calls, checks, writing,
     * statistics, commit), without the work all configurations share.
     */
    public record ConfigResult(Configuration configuration, double seconds, Path output, List<LayerStats> layers,
            List<String> warnings) {
        /** The whole-model statistics, or null without statistics. */
        public LayerStats model() {
            return layers.isEmpty() ? null : layers.get(layers.size() - 1);
        }
    }

    /** The same configurations merged one by one with {@link CheckpointMerger}, each writing its checkpoint. */
    public record Sequential(double seconds, double cpuSeconds, List<Double> perConfiguration, Boolean identical,
            List<String> differences) {}

    /**
     * What the sweep reads and writes. Inputs are read once ({@code bytesRead}: every input tensor once, plus the
     * key passes of model-wide trimming); {@code bytesWritten} is every configuration's checkpoint.
     */
    public record SweepPlan(CheckpointMerger.Plan merge, int configurations, long bytesRead, long bytesWritten,
            long workBytes, boolean deviceCopies) {
        /** Host memory Smelter allocates: the largest tensor's inputs and two output buffers, shared by all. */
        public long peakHostBytes() {
            return merge.peakHostBytes();
        }

        /** On CUDA: the inputs and the output of the largest tensor, resident while every configuration runs. */
        public long peakDeviceBytes() {
            return merge.peakDeviceBytes();
        }
    }

    /**
     * @param seconds the whole sweep (without the sequential comparison)
     * @param cpuSeconds CPU time of the process (every thread, native ones included) over the sweep; -1 if unknown.
     *     Less disturbed than wall time by other processes on a shared machine
     * @param sharedSeconds the work done once for all configurations: device copies, thresholds, statistics
     * @param statsMethod how the statistics were computed, or null without them
     */
    public record Summary(SweepPlan plan, List<ConfigResult> results, double seconds, double cpuSeconds, double sharedSeconds,
            long peakAnonymousBytes, String device, String statsMethod, Sequential sequential) {
        public double secondsPerConfiguration() {
            return seconds / results.size();
        }
    }

    private final MergeConfig config;
    private final SweepGrid grid;
    private final Options options;
    private final CheckpointMerger merger;
    private final List<Configuration> configurations = new ArrayList<>();
    private final boolean stats;

    public SweepRunner(MergeConfig config, SweepGrid grid, Options options) throws IOException, ConfigException {
        this.config = config;
        this.grid = grid;
        this.options = options;
        grid.validate(config);
        if (!options.writeCheckpoints() && !options.stats())
            throw new ConfigException("a sweep without checkpoints and without statistics has nothing to do");
        if (options.stats() && config.sliced() && !options.writeCheckpoints())
            throw new ConfigException("statistics per layer are not available for slices yet (each slice merges its "
                    + "own sources); write the checkpoints instead of --stats-only");
        if (options.stats() && config.baseModel() == null && !options.writeCheckpoints())
            throw new ConfigException("statistics measure the merged task vectors against base_model, and this config "
                    + "has none");
        stats = options.stats() && config.baseModel() != null && !config.sliced();
        if (options.writeCheckpoints() && grid.size() > MAX_CHECKPOINT_CONFIGURATIONS)
            throw new ConfigException("the grid has " + grid.size() + " configurations; at most "
                    + MAX_CHECKPOINT_CONFIGURATIONS + " checkpoints are written in one sweep (split the grid, or "
                    + "use --stats-only)");
        for (SweepGrid.Point p : grid.points())
            configurations.add(new Configuration(configurations.size(), p, SweepGrid.apply(config, p)));
        // With its grid: a sliced passthrough plans no byte copies that a configuration's scale would change.
        merger = new CheckpointMerger(config.with(config.models(), config.parameters(), config.trimScope(), config.seed(),
                grid), new CheckpointMerger.Options(options.device(), options.output(),
                options.maxShardBytes(), options.overwrite(), options.allowVocabMismatch(), options.nonFinite(),
                options.memoryLimit()));
    }

    public List<Configuration> configurations() {
        return List.copyOf(configurations);
    }

    /**
     * Keeps the configurations of one partition of a sweep spread over processes ({@link SweepPartitions}): those
     * whose grid index is {@code index} modulo {@code count}. Every configuration writes the same bytes, so dealing
     * them in turn balances the partitions by bytes.
     */
    public void keepOnly(Partition partition) {
        configurations.removeIf(c -> c.index() % partition.count() != partition.index());
    }

    /** The merger whose plan and inputs the sweep shares. */
    CheckpointMerger merger() {
        return merger;
    }

    public SweepGrid grid() {
        return grid;
    }

    /** Whether statistics are computed (asked for, and there is a base model). */
    public boolean statsEnabled() {
        return stats;
    }

    private boolean modelWideTrim() {
        return config.method() == MergeMethods.Method.TIES && config.trimScope() == MergeConfig.TrimScope.MODEL;
    }

    public SweepPlan plan() throws CheckpointFormatException {
        CheckpointMerger.Plan p = merger.plan();
        int inputs = merger.modelCheckpoints().size() + (merger.baseCheckpoint() != null ? 1 : 0);
        long read = 0, out = 0;
        for (CheckpointMerger.TensorPlan t : p.tensors()) {
            if (t.action() == CheckpointMerger.Action.MERGE)  // every configuration's values, before anything is read
                for (Configuration c : configurations)
                    merger.checkTensor(c.config(), t);
            if (t.action() == CheckpointMerger.Action.MERGE
                    && (t.convertedInputs() || t.computeDType() != t.info().dtype().toMergeDType().orElseThrow()))
                throw new CheckpointFormatException("tensor " + t.name() + " is merged in " + t.computeDType()
                        + " (the base and the models hold different dtypes, or the config's dtype is not theirs, "
                        + t.info().dtype() + "); sweep needs one dtype, the checkpoints' (smelter merge takes these, one "
                        + "configuration at a time)");
            read += t.action() != CheckpointMerger.Action.MERGE ? t.info().byteSize()
                    : t.sources() != null ? t.info().byteSize() * t.sources().all().size() : t.info().byteSize() * inputs;
            out += t.outBytes();
        }
        if (modelWideTrim()) {
            List<CheckpointMerger.TensorPlan> merged = CheckpointMerger.merged(p);
            for (Configuration c : configurations)
                for (int i = 0; i < merger.modelCheckpoints().size(); i++)
                    CheckpointMerger.modelDensity(c.config(), merged, i, merger.layerCount());  // one density each
            long mergedBytes = merged.stream().mapToLong(t -> t.info().byteSize()).sum();
            int passes = CheckpointMerger.keyDType(p.tensors()) == DType.F32 ? 2 * maxDistinctDensities(merged) : 1;
            read += mergedBytes * (inputs) * passes;
        }
        int n = configurations.size();
        boolean cuda = options.device().kind() == Device.Kind.CUDA;
        return new SweepPlan(p, n, read, options.writeCheckpoints() ? out * n : 0, out * n, cuda);
    }

    private int maxDistinctDensities(List<CheckpointMerger.TensorPlan> merged) {
        int most = 1;
        for (int i = 0; i < merger.modelCheckpoints().size(); i++) {
            TreeSet<Double> d = new TreeSet<>();
            for (Configuration c : configurations)
                d.add(CheckpointMerger.modelDensity(c.config(), merged, i, merger.layerCount()));
            most = Math.max(most, d.size());
        }
        return most;
    }

    /**
     * Refuses an output that exists and is not empty (unless {@code overwrite}), and a file system without room
     * for every checkpoint.
     */
    public void checkOutput(SweepPlan plan) throws IOException {
        Path target = options.output().toAbsolutePath().normalize();
        if (Files.exists(target)) {
            if (!Files.isDirectory(target)) throw new IOException(target + " exists and is not a directory");
            WorkDirs.checkReplaceable(target);
            try (Stream<Path> s = Files.list(target)) {
                if (s.findAny().isPresent() && !options.overwrite())
                    throw new IOException(target + " exists and is not empty (use --overwrite to replace it)");
            }
        }
        Path existing = target.getParent();
        while (existing != null && !Files.exists(existing)) existing = existing.getParent();
        if (existing == null) return;
        long one = plan.workBytes() / plan.configurations();  // one checkpoint
        long need = plan.bytesWritten() + (options.compareSequential() ? one : 0);
        long free = Files.getFileStore(existing).getUsableSpace();
        if (need > free)
            throw new IOException("the sweep writes " + need + " bytes (" + (plan.bytesWritten() > 0
                    ? plan.configurations() + " checkpoints of " + one + " bytes" : "no checkpoints")
                    + (options.compareSequential() ? ", plus one at a time for the sequential comparison" : "")
                    + ") but " + existing + " has " + free + " bytes free");
    }

    /** Runs the sweep; {@code progress} receives the merged bytes done (over all configurations). */
    public Summary run(SweepPlan plan, Consumer<Long> progress) throws IOException {
        checkOutput(plan);
        Path target = options.output().toAbsolutePath().normalize();
        Path parent = target.getParent();
        Files.createDirectories(parent);
        Path temp = WorkDirs.create(target, "sweep");
        boolean done = false;
        try {
            Summary s = sweep(plan, temp, progress);
            if (options.compareSequential()) s = withSequential(s, temp);
            SweepReport.write(temp, s, grid);
            moveIntoPlace(temp, target);
            done = true;
            return relocated(s, temp, target);
        } finally {
            if (!done) WorkDirs.delete(temp);
        }
    }

    private Summary sweep(SweepPlan plan, Path temp, Consumer<Long> progress) throws IOException {
        long t0 = System.nanoTime(), cpu0 = processCpuNanos();
        int n = configurations.size();
        long[] own = new long[n];
        List<CheckpointWriter> writers = new ArrayList<>();
        List<Tensor> buffers = new ArrayList<>();
        try (Context ctx = Smelter.open(options.device()); WriteBehind behind = new WriteBehind()) {
            ctx.setMemoryLimit(options.memoryLimit());
            if (options.writeCheckpoints()) {
                List<CheckpointWriter.TensorSpec> specs = new ArrayList<>();
                for (CheckpointMerger.TensorPlan t : plan.merge().tensors())
                    specs.add(new CheckpointWriter.TensorSpec(t.name(), t.action() == CheckpointMerger.Action.COPY
                            ? t.info().dtype() : SafetensorsDType.of(t.outDType()), t.info().shape()));
                Map<String, String> metadata = CheckpointMerger.outputMetadata();
                for (int c = 0; c < n; c++) {
                    long s = System.nanoTime();
                    writers.add(new CheckpointWriter(temp.resolve(configurations.get(c).name()), specs,
                            options.maxShardBytes(), metadata, false));
                    own[c] += System.nanoTime() - s;
                }
            }
            try {
                try (InputBuffers in = merger.inputBuffers(ctx, plan.merge(), plan.merge().inputBanks())) {
                    return sweepTensors(ctx, in, behind, plan, temp, progress, t0, cpu0, own, writers, buffers);
                }
            } finally {
                behind.close();  // no write may still read a buffer when it is freed
                for (Tensor b : buffers) {
                    try {
                        ctx.free(b);
                    } catch (RuntimeException e) {
                        // A failed device keeps its memory until the context goes; the first error is the one to see.
                    }
                }
            }
        } catch (Throwable e) {
            // Uncommitted writers delete their temporary directories; committed ones are already closed.
            for (CheckpointWriter w : writers) {
                try {
                    w.close();
                } catch (IOException x) {
                    e.addSuppressed(x);
                }
            }
            throw e;
        }
    }

    private Summary sweepTensors(Context ctx, InputBuffers in, WriteBehind behind, SweepPlan plan, Path temp, Consumer<Long> progress,
            long t0, long cpu0, long[] own, List<CheckpointWriter> writers, List<Tensor> buffers) throws IOException {
        int n = configurations.size();
        long shared = 0;
        long peakAnon = CheckpointMerger.anonymousResidentBytes();
        List<List<String>> warnings = new ArrayList<>();
        List<Map<String, Acc>> layerStats = new ArrayList<>();
        for (int c = 0; c < n; c++) {
            warnings.add(new ArrayList<>());
            layerStats.add(new TreeMap<>(SweepRunner::compareLayers));
        }
        Checkpoint base = merger.baseCheckpoint();
        List<Checkpoint> models = merger.modelCheckpoints();
        List<Checkpoint> fishers = merger.fisherCheckpoints();  // merge_method fisher: per-model element weights
        String statsMethod = null;
        {
            long s0 = System.nanoTime();
            // Fisher norms over the whole model, once for every configuration that normalizes by them.
            boolean normalizes = false;
            for (Configuration c : configurations) normalizes |= merger.normalizesFishers(c.config(), plan.merge());
            double[] fisherNorms = normalizes ? merger.fisherNorms(ctx, in, plan.merge()) : null;
            int[][] modelThresholds = modelWideTrim() ? modelThresholds(ctx, in, plan.merge()) : null;
            DType modelKey = modelWideTrim() ? CheckpointMerger.keyDType(plan.merge().tensors()) : null;
            boolean cuda = ctx.device().kind() == Device.Kind.CUDA;
            long largestIn = Math.max(plan.merge().largestInputBytes(), 2), largestOut = Math.max(plan.merge().largestOutputBytes(), 2);
            Tensor devBase = null, devOut = null;
            List<Tensor> devModels = new ArrayList<>(), devFishers = new ArrayList<>();
            if (cuda) {
                long largestFisher = 2;
                for (CheckpointMerger.TensorPlan t : plan.merge().tensors())
                    if (t.action() == CheckpointMerger.Action.MERGE)
                        for (Checkpoint f : fishers) largestFisher = Math.max(largestFisher, f.info(t.name()).byteSize());
                for (int i = 0; i < fishers.size(); i++) {
                    Tensor b = ctx.allocate(DType.BF16, (largestFisher + 1) / 2, Tensor.Memory.DEVICE);
                    buffers.add(b);
                    devFishers.add(b);
                }
                // Inputs stay on the device while every configuration merges them; the output is staged there too.
                if (base != null || config.sliced()) buffers.add(devBase = ctx.allocate(DType.BF16, (largestIn + 1) / 2, Tensor.Memory.DEVICE));
                for (int i = 0; i < Math.max(models.size(), plan.merge().inputSlots()); i++) {  // slices: the most sources
                    Tensor b = ctx.allocate(DType.BF16, (largestIn + 1) / 2, Tensor.Memory.DEVICE);
                    buffers.add(b);
                    devModels.add(b);
                }
                buffers.add(devOut = ctx.allocate(DType.BF16, (largestOut + 1) / 2, Tensor.Memory.DEVICE));
            }
            // SCE: the task vectors' variance is the same for every configuration, computed once per tensor here.
            boolean sce = config.method() == MergeMethods.Method.SCE || config.method() == MergeMethods.Method.SCE_FUSECHAT;
            Tensor sceScratch = null;
            if (sce) {
                long most = 1;
                for (CheckpointMerger.TensorPlan t : plan.merge().tensors()) most = Math.max(most, t.mergedElements());
                buffers.add(sceScratch = ctx.allocate(DType.F32, most, cuda ? Tensor.Memory.DEVICE : Tensor.Memory.HOST));
            }
            // Two host output buffers (page-locked on CUDA): one configuration's output is written from one
            // while the next configuration merges into the other.
            Tensor[] hostOuts = new Tensor[2];
            for (int k = 0; k < 2; k++)
                buffers.add(hostOuts[k] = ctx.allocate(DType.BF16, (largestOut + 1) / 2, Tensor.Memory.HOST));
            Future<?>[] writes = new Future<?>[2];
            int slot = 0;
            shared += System.nanoTime() - s0;
            long done = 0;
            int step = 0, mergedStep = 0;
            // The next merged tensor's inputs are read into the other bank while this one merges (the passes above
            // are done with bank 0).
            List<CheckpointMerger.TensorPlan> steps = CheckpointMerger.merged(plan.merge());
            try (ReadAhead ahead = new ReadAhead(merger.inputSegments(plan.merge()), CheckpointMerger.readAheadBytes(plan.merge()));
                    InputPrefetch<CheckpointMerger.Inputs> prefetch = new InputPrefetch<>(
                            (bank, k) -> merger.read(in, bank, steps.get(k)), steps.size(), in.banks())) {
                for (CheckpointMerger.TensorPlan t : plan.merge().tensors()) {
                    ahead.consumed(step++ - 1);  // the previous tensor is done
                    String name = t.name();
                    if (t.action() == CheckpointMerger.Action.COPY) {
                        for (int c = 0; c < writers.size(); c++) {
                            long s = System.nanoTime();
                            behind.write(writers.get(c), name, merger.copySource(t));
                            own[c] += System.nanoTime() - s;
                        }
                        done += t.outBytes() * n;
                        progress.accept(done);
                        continue;
                    }
                    long s = System.nanoTime();
                    int layer = TensorNames.layerIndex(name);
                    String layerKey = layer < 0 ? "other" : Integer.toString(layer);
                    long count = t.mergedElements(), full = t.info().elementCount();
                    DType inType = t.info().dtype().toMergeDType().orElseThrow();
                    // Read into Smelter's buffers: native code never reads a file mapping (see InputBuffers).
                    if (mergedStep > 0) prefetch.release(mergedStep - 1);  // the previous tensor is done with its bank
                    CheckpointMerger.Inputs read = prefetch.await(mergedStep++);
                    Tensor baseWhole = read.base();
                    Tensor hostBase = baseWhole == null ? null : CheckpointMerger.slice(baseWhole, count);
                    List<Tensor> hostModels = read.models();
                    Tensor inBase = hostBase == null ? null : resident(ctx, hostBase, devBase);
                    List<Tensor> inModels = new ArrayList<>(), inFishers = new ArrayList<>();
                    for (int i = 0; i < hostModels.size(); i++)  // slices: this tensor's sources
                        inModels.add(resident(ctx, hostModels.get(i), cuda ? devModels.get(i) : null));
                    for (int i = 0; i < fishers.size(); i++)
                        inFishers.add(resident(ctx, read.fishers().get(i), cuda ? devFishers.get(i) : null));
                    List<MergeMethods.TensorMerge> hows = new ArrayList<>();
                    for (Configuration c : configurations)
                        hows.add(merger.tensorMerge(c.config(), t));
                    MergeSpec[] specs = new MergeSpec[n];
                    SceMerge.Variance[] variance = {null};  // SCE, computed by the first configuration that selects
                    Map<Double, Context.Selection> selections = new HashMap<>();  // SCE, one per distinct select_topk
                    // Composed methods: one statistics pass, shared by every configuration's coefficients.
                    Map<MergeMethods.TensorMerge.StatsOf, PairStats> pairStats = new EnumMap<>(MergeMethods.TensorMerge.StatsOf.class);
                    for (int c = 0; c < n; c++) {
                        MergeMethods.TensorMerge how = hows.get(c);
                        if (!how.composed()) {
                            specs[c] = how.spec();
                            continue;
                        }
                        PairStats ps = pairStats.get(how.statsOf());
                        if (ps == null) {
                            boolean tv = how.statsOf() == MergeMethods.TensorMerge.StatsOf.TASK_VECTORS;
                            List<Tensor> vectors = tv ? inModels : how.inputs(inBase, inModels);
                            ps = new PairStats(vectors.size());
                            ctx.pairStats(vectors, tv ? inBase : null, null, null, ps);
                            pairStats.put(how.statsOf(), ps);
                        }
                    }
                    if (modelThresholds != null) {
                        for (int c = 0; c < n; c++)
                            specs[c] = specs[c].toBuilder().thresholds(modelThresholds[c]).keyDType(modelKey).build();
                    } else if (config.method() == MergeMethods.Method.TIES) {
                        tensorThresholds(ctx, specs, inBase, inModels, inType);
                    }
                    double baseSquares = 0;
                    if (stats) {
                        PairStats b = new PairStats(1);
                        ctx.pairStats(List.of(inBase), null, null, null, b);
                        baseSquares = b.dot(0, 0);
                    }
                    shared += System.nanoTime() - s;
                    DType outType = t.outDType();
                    boolean nativeStats = stats && outType == inType;
                    if (stats) statsMethod = statsMethod(statsMethod, nativeStats ? "pair statistics (native)" : "f64 loop (Java)");
                    for (int c = 0; c < n; c++) {
                        s = System.nanoTime();
                        Configuration cf = configurations.get(c);
                        MergeMethods.TensorMerge how = hows.get(c);
                        int hb = slot++ & 1;
                        behind.await(writes[hb]);  // the write that last read this buffer
                        MemorySegment hostOut = hostOuts[hb].data();
                        Tensor hostView = new Tensor(hostOut.asSlice(0, full * outType.byteSize()), full, outType, Tensor.Memory.HOST);
                        Tensor out = cuda ? view(devOut, 0, full, outType) : hostView;
                        Context.MergeCounts counts;
                        if (how.sce() != null) {  // SCE: the shared variance, then this configuration's selection
                            SceMerge.Settings st = how.sce();
                            Context.Selection selection = null;
                            if (st.selectTopK() < 1) {
                                if (variance[0] == null)
                                    variance[0] = SceMerge.variance(ctx, inBase, inModels,
                                            cuda ? view(sceScratch, 0, count, DType.F32) : sceScratch.slice(0, count));
                                selection = selections.computeIfAbsent(st.selectTopK(),
                                        k -> SceMerge.selection(ctx, variance[0], k));
                            }
                            SceMerge.Plan sp = SceMerge.plan(ctx, inBase, inModels, st, selection);
                            counts = !sp.finite() ? NanOutput.fill(ctx, count == full ? out : prefix(out, count))
                                    : ctx.merge(sp.spec(), inBase, inModels,
                                            st.variant() == SceMerge.Variant.MERGEKIT ? sp.selection() : null, null,
                                            count == full ? out : prefix(out, count));
                        } else if (how.host() != null) {  // in Java over the host inputs, then staged like a merge's
                            counts = how.host().merge(ctx, hostBase, hostModels, t.info().shape(), hostView.slice(0, count));
                            if (cuda) ctx.copy(count == full ? out : view(devOut, 0, count, outType), hostView.slice(0, count));
                        } else if (!fishers.isEmpty()) {
                            counts = ctx.merge(merger.fisherSpec(cf.config(), how.spec(), name, fisherNorms), null, inModels,
                                    null, inFishers, count == full ? out : prefix(out, count));
                        } else {
                            MergeSpec spec = how.composed() ? how.resolveWith(pairStats.get(how.statsOf())) : specs[c];
                            if (spec == null) {  // non-finite inputs: NaN throughout, as mergekit's coefficients are
                                counts = NanOutput.fill(ctx, count == full ? out : prefix(out, count));
                            } else {
                                spec = CheckpointMerger.withRows(spec, t.info().shape(), count);
                                counts = ctx.merge(spec, inBase, how.inputs(inBase, inModels),
                                        count == full ? out : prefix(out, count));
                            }
                        }
                        long nonFinite = counts.nonFinite();
                        if (count < full) {
                            // Rows only the reference has (vocabulary mismatch): the base's, unchanged.
                            Tensor rest = baseWhole.slice(count, full - count);
                            Tensor outRest = cuda ? view(devOut, count * outType.byteSize(), full - count, outType)
                                    : hostView.slice(count, full - count);
                            nonFinite += ctx.merge(MergeSpec.linear(1.0f), null, List.of(rest), outRest).nonFinite();
                        }
                        merger.checkFinite(ctx, baseWhole, hostModels, t, nonFinite, "configuration " + cf.name() + ": ", options.nonFinite(),
                                warnings.get(c));
                        boolean onHost = !cuda;
                        if (options.writeCheckpoints()) {
                            if (cuda) ctx.copy(hostView, out);
                            onHost = true;
                            writes[hb] = behind.write(writers.get(c), name, hostOut.asSlice(0, t.outBytes()));
                        }
                        if (stats) {
                            Acc acc = layerStats.get(c).computeIfAbsent(layerKey, k -> new Acc(models.size()));
                            if (nativeStats) {
                                List<Tensor> vectors = new ArrayList<>();
                                vectors.add(count == full ? out : prefix(out, count));
                                vectors.addAll(inModels);
                                PairStats ps = new PairStats(vectors.size());
                                ctx.pairStats(vectors, inBase, null, null, ps);
                                acc.add(ps, count, baseSquares);
                            } else {
                                if (!onHost) ctx.copy(hostView, out);
                                acc.add(javaStats(hostView.slice(0, count), hostBase, hostModels), baseSquares);
                            }
                        }
                        own[c] += System.nanoTime() - s;
                        done += t.outBytes();
                        progress.accept(done);
                    }
                    peakAnon = Math.max(peakAnon, CheckpointMerger.anonymousResidentBytes());
                }
            }
            behind.finish();
            merger.checkInputsUnchanged();  // a file rewritten in place meanwhile would give a silent mix
            List<ConfigResult> results = new ArrayList<>();
            Path sideSource = merger.reference().directory();
            // One set of tokenizer files for every configuration: built (tokenizer.json read and rewritten) once.
            TokenizerOutput tokenizerFiles = options.writeCheckpoints() ? merger.tokenizerOutput(true) : null;
            for (int c = 0; c < n; c++) {
                Path out = null;
                if (options.writeCheckpoints()) {
                    long s = System.nanoTime();
                    CheckpointWriter w = writers.get(c);
                    List<String> notes = warnings.get(c);
                    notes.addAll(SideFiles.write(w, sideSource, SideFiles.outputDType(plan.merge()), true,
                            tokenizerFiles, config.sliced() ? LayerPlan.configEdit(config, notes::add) : null));
                    w.commit();
                    own[c] += System.nanoTime() - s;
                    out = temp.resolve(configurations.get(c).name());
                }
                results.add(new ConfigResult(configurations.get(c), own[c] / 1e9, out, layers(layerStats.get(c)),
                        List.copyOf(warnings.get(c))));
            }
            double seconds = (System.nanoTime() - t0) / 1e9;
            String device = ctx.device() + " (" + Smelter.deviceName(ctx.device()) + ")";
            return new Summary(plan, results, seconds, cpuSeconds(cpu0), shared / 1e9, peakAnon, device, statsMethod, null);
        }
    }

    private static String statsMethod(String had, String now) {
        return had == null || had.equals(now) ? now : "pair statistics (native) where the output dtype is the input's, "
                + "else f64 loop (Java)";
    }

    /** A device view of {@code count} elements at {@code byteOffset} into a device buffer. */
    /** The tensor the merges read: {@code host} itself, or on CUDA its copy at the start of {@code deviceBuffer}. */
    private static Tensor resident(Context ctx, Tensor host, Tensor deviceBuffer) {
        if (deviceBuffer == null) return host;
        Tensor d = view(deviceBuffer, 0, host.count(), host.dtype());
        ctx.copy(d, host);
        return d;
    }

    private static Tensor view(Tensor buffer, long byteOffset, long count, DType dtype) {
        if (byteOffset + count * dtype.byteSize() > buffer.byteSize())
            throw new IllegalStateException("device buffer of " + buffer.byteSize() + " bytes is too small");
        MemorySegment at = byteOffset == 0 ? buffer.data() : MemorySegment.ofAddress(buffer.data().address() + byteOffset);
        return new Tensor(at, count, dtype, Tensor.Memory.DEVICE);
    }

    private static Tensor prefix(Tensor t, long count) {
        return t.memory() == Tensor.Memory.HOST ? t.slice(0, count) : new Tensor(t.data(), count, t.dtype(), t.memory());
    }

    /**
     * Per-tensor TIES trimming: every configuration's thresholds, k-th largest keys of each model's deltas, from
     * as few key passes as possible. The keys ranked are those the merge itself would rank (the tensor dtype, or
     * the spec's key dtype), so the merge given these thresholds is bit-identical to one that finds them itself.
     */
    private void tensorThresholds(Context ctx, MergeSpec[] specs, Tensor base, List<Tensor> models, DType inType) {
        long count = models.get(0).count();
        int[][] thresholds = new int[specs.length][models.size()];
        for (int i = 0; i < models.size(); i++) {
            Tensor model = models.get(i);
            Map<DType, TreeSet<Long>> ks = new LinkedHashMap<>();
            for (MergeSpec s : specs)
                ks.computeIfAbsent(keyOf(s, inType), k -> new TreeSet<>()).add(keptCount(s.densities()[i], count));
            Map<DType, Map<Long, Integer>> found = new EnumMap<>(DType.class);
            for (var e : ks.entrySet())
                found.put(e.getKey(), thresholds(ctx, e.getKey(), e.getValue(), topK -> topK.add(base, model)));
            for (int c = 0; c < specs.length; c++)
                thresholds[c][i] = found.get(keyOf(specs[c], inType)).get(keptCount(specs[c].densities()[i], count));
        }
        for (int c = 0; c < specs.length; c++) specs[c] = specs[c].toBuilder().thresholds(thresholds[c]).build();
    }

    private static DType keyOf(MergeSpec s, DType inType) {
        return s.keyDType() != null ? s.keyDType() : inType;
    }

    /** k for a density over n elements, as the native merge counts it: floor(density * n) in double. */
    static long keptCount(double density, long n) {
        return (long) Math.floor(density * (double) n);
    }

    /**
     * Exact k-th largest keys for several k over the keys {@code pass} adds. 16-bit keys: one pass, then one
     * selection per k (a selection does not change the histogram). f32 keys: the refinement pass depends on k, so
     * each distinct k takes its own two passes.
     */
    static Map<Long, Integer> thresholds(Context ctx, DType key, TreeSet<Long> ks, Consumer<TopK> pass) {
        Map<Long, Integer> out = new LinkedHashMap<>();
        if (key != DType.F32) {
            try (TopK topK = ctx.topK(key)) {
                pass.accept(topK);
                for (long k : ks) {
                    TopK.Selection s = topK.select(k);
                    if (s.morePasses()) throw new IllegalStateException("a 16-bit key selection asked for another pass");
                    out.put(k, s.threshold());
                }
            }
            return out;
        }
        for (long k : ks)
            try (TopK topK = ctx.topK(key)) {
                out.put(k, topK.threshold(k, pass));
            }
        return out;
    }

    /** Model-wide TIES trimming: per configuration, one threshold per model over every merged tensor. */
    private int[][] modelThresholds(Context ctx, InputBuffers in, CheckpointMerger.Plan plan) throws IOException {
        List<CheckpointMerger.TensorPlan> merged = CheckpointMerger.merged(plan);
        DType key = CheckpointMerger.keyDType(plan.tensors());
        long total = merged.stream().mapToLong(CheckpointMerger.TensorPlan::mergedElements).sum();
        Checkpoint base = merger.baseCheckpoint();
        int[][] out = new int[configurations.size()][merger.modelCheckpoints().size()];
        for (int i = 0; i < merger.modelCheckpoints().size(); i++) {
            Checkpoint model = merger.modelCheckpoints().get(i);
            long[] k = new long[configurations.size()];
            TreeSet<Long> ks = new TreeSet<>();
            for (int c = 0; c < k.length; c++) {
                double d = CheckpointMerger.modelDensity(configurations.get(c).config(), merged, i, merger.layerCount());
                ks.add(k[c] = (long) Math.floor(d * total));
            }
            final int slot = 1 + i;
            Map<Long, Integer> found;
            try {
                found = thresholds(ctx, key, ks, pass -> {
                    for (CheckpointMerger.TensorPlan t : merged)
                        pass.add(merger.readInputUnchecked(in, 0, base, t),
                                merger.readInputUnchecked(in, slot, model, t));
                });
            } catch (java.io.UncheckedIOException e) {
                throw e.getCause();
            }
            for (int c = 0; c < k.length; c++) out[c][i] = found.get(k[c]);
        }
        return out;
    }

    /** Statistics accumulated over a layer's tensors. */
    private static final class Acc {
        long elements, changed;
        double deltaSquares, baseSquares;
        final long[] agreeing;

        Acc(int models) {
            agreeing = new long[models];
        }

        /** From pair statistics of {@code [merged, models...]} about the base. */
        void add(PairStats ps, long count, double base) {
            elements += count;
            deltaSquares += ps.dot(0, 0);
            baseSquares += base;
            changed += ps.bothNonzero(0, 0);
            for (int i = 0; i < agreeing.length; i++) agreeing[i] += ps.bothNonzero(0, i + 1) - ps.signConflicts(0, i + 1);
        }

        void add(Acc other, double base) {
            elements += other.elements;
            deltaSquares += other.deltaSquares;
            baseSquares += base;
            changed += other.changed;
            for (int i = 0; i < agreeing.length; i++) agreeing[i] += other.agreeing[i];
        }

        LayerStats stats(String layer) {
            return new LayerStats(layer, elements, deltaSquares, baseSquares, changed, agreeing.clone());
        }
    }

    /**
     * The statistics of a merged tensor whose dtype differs from the inputs' (pair statistics need one dtype):
     * the same definitions, in Java, in parallel over chunks.
     */
    static Acc javaStats(Tensor merged, Tensor base, List<Tensor> models) {
        long n = merged.count();
        int chunk = 1 << 16;
        int chunks = (int) ((n + chunk - 1) / chunk);
        List<Acc> parts = IntStream.range(0, chunks).parallel().mapToObj(k -> {
            Acc a = new Acc(models.size());
            long end = Math.min(n, (long) (k + 1) * chunk);
            for (long e = (long) k * chunk; e < end; e++) {
                float b = base.getFloat(e), d = merged.getFloat(e) - b;
                a.deltaSquares += (double) d * d;
                int sign = d > 0 ? 1 : d < 0 ? -1 : 0;  // NaN: 0, as the native statistics count it
                if (sign == 0) continue;
                a.changed++;
                for (int i = 0; i < a.agreeing.length; i++) {
                    float di = models.get(i).getFloat(e) - b;
                    if (sign > 0 ? di > 0 : di < 0) a.agreeing[i]++;
                }
            }
            a.elements = end - (long) k * chunk;
            return a;
        }).toList();
        Acc total = new Acc(models.size());
        for (Acc a : parts) total.add(a, 0);
        return total;
    }

    private static int compareLayers(String a, String b) {
        return Integer.compare(layerRank(a), layerRank(b));
    }

    private static int layerRank(String layer) {
        return switch (layer) {
            case "other" -> Integer.MAX_VALUE - 1;
            case "all" -> Integer.MAX_VALUE;
            default -> Integer.parseInt(layer);
        };
    }

    private static List<LayerStats> layers(Map<String, Acc> byLayer) {
        if (byLayer.isEmpty()) return List.of();
        List<LayerStats> out = new ArrayList<>();
        Acc all = null;
        for (var e : byLayer.entrySet()) {
            out.add(e.getValue().stats(e.getKey()));
            if (all == null) all = new Acc(e.getValue().agreeing.length);
            all.add(e.getValue(), e.getValue().baseSquares);
        }
        out.add(all.stats("all"));
        return List.copyOf(out);
    }

    /** Merges every configuration on its own, timed, into a scratch directory, and compares with the sweep's. */
    private Summary withSequential(Summary s, Path temp) throws IOException {
        Path scratch = temp.resolve(".sequential");
        List<Double> seconds = new ArrayList<>();
        List<String> differences = new ArrayList<>();
        double total = 0;
        long cpu = 0;
        for (ConfigResult r : s.results()) {
            Path out = scratch.resolve(r.configuration().name());
            long t0 = System.nanoTime(), cpu0 = processCpuNanos();
            try (CheckpointMerger m = new CheckpointMerger(r.configuration().config(), new CheckpointMerger.Options(
                    options.device(), out, options.maxShardBytes(), false, options.allowVocabMismatch(),
                    CheckpointMerger.NonFinite.IGNORE, options.memoryLimit()))) {
                m.run(m.plan(), x -> {});
            }
            double sec = (System.nanoTime() - t0) / 1e9;
            seconds.add(sec);
            total += sec;
            cpu = cpu < 0 || cpu0 < 0 ? -1 : cpu + processCpuNanos() - cpu0;
            if (r.output() != null) differences.addAll(compare(r.configuration().name(), r.output(), out));
            CheckpointWriter.deleteTree(out);
        }
        CheckpointWriter.deleteTree(scratch);
        Boolean identical = options.writeCheckpoints() ? differences.isEmpty() : null;
        return new Summary(s.plan(), s.results(), s.seconds(), s.cpuSeconds(), s.sharedSeconds(), s.peakAnonymousBytes(),
                s.device(), s.statsMethod(), new Sequential(total, cpu < 0 ? -1 : cpu / 1e9, List.copyOf(seconds), identical,
                        List.copyOf(differences)));
    }

    /** Tensors that differ between two checkpoints (names, dtypes, shapes, bytes). */
    static List<String> compare(String name, Path a, Path b) throws IOException {
        List<String> out = new ArrayList<>();
        try (Checkpoint x = Checkpoint.open(a); Checkpoint y = Checkpoint.open(b)) {
            if (!x.tensorNames().equals(y.tensorNames())) {
                out.add(name + ": tensor lists differ");
                return out;
            }
            for (String t : x.tensorNames()) {
                if (x.info(t).dtype() != y.info(t).dtype() || !Arrays.equals(x.info(t).shape(), y.info(t).shape())
                        || x.data(t).mismatch(y.data(t)) != -1)
                    out.add(name + ": " + t);
            }
        }
        return out;
    }

    /** The summary with the configurations' output paths under the final directory. */
    private static Summary relocated(Summary s, Path temp, Path target) {
        List<ConfigResult> results = new ArrayList<>();
        for (ConfigResult r : s.results())
            results.add(new ConfigResult(r.configuration(), r.seconds(),
                    r.output() == null ? null : target.resolve(temp.relativize(r.output())), r.layers(), r.warnings()));
        return new Summary(s.plan(), List.copyOf(results), s.seconds(), s.cpuSeconds(), s.sharedSeconds(),
                s.peakAnonymousBytes(), s.device(), s.statsMethod(), s.sequential());
    }

    /** CPU time of the whole process so far, or -1 where the JVM does not tell. */
    private static long processCpuNanos() {
        return java.lang.management.ManagementFactory.getOperatingSystemMXBean()
                instanceof com.sun.management.OperatingSystemMXBean os ? os.getProcessCpuTime() : -1;
    }

    private static double cpuSeconds(long start) {
        long now = processCpuNanos();
        return start < 0 || now < 0 ? -1 : (now - start) / 1e9;
    }

    private void moveIntoPlace(Path temp, Path target) throws IOException {
        if (Files.exists(target))
            try (Stream<Path> s = Files.list(target)) {
                if (s.findAny().isPresent() && !options.overwrite())
                    throw new IOException(target + " exists and is not empty (use --overwrite to replace it)");
            }
        Path old = WorkDirs.replace(temp, target);
        if (old != null) WorkDirs.delete(old);
    }

    @Override
    public void close() {
        merger.close();
    }
}
