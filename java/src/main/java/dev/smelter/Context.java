package dev.smelter;

import dev.smelter.ffi.smelter_column_stats_params;
import dev.smelter.ffi.smelter_h;
import dev.smelter.ffi.smelter_merge_params;
import dev.smelter.ffi.smelter_pair_stats_params;
import dev.smelter.ffi.smelter_product_params;
import dev.smelter.ffi.smelter_tensor;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.SegmentAllocator;
import java.lang.foreign.ValueLayout;
import java.util.List;

/**
 * One backend instance: the CPU thread pool, or one CUDA device with its own stream. Calls on one
 * context run in order (this class serialises them); separate contexts may run concurrently.
 * Close it to release native resources.
 */
public final class Context implements AutoCloseable {
    private final Device device;
    private MemorySegment handle;

    Context(Device device, int threads) {
        this(device, threads, true);
    }

    /** {@code gate}: a CUDA context opens only once {@link SelfCheck} passed on its device. */
    Context(Device device, int threads, boolean gate) {
        Native.load();
        if (gate) SelfCheck.gate(device);
        this.device = device;
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment out = arena.allocate(ValueLayout.ADDRESS);
            Native.check(smelter_h.smelter_context_create(device.kind().code, device.ordinal(), threads, out),
                    "cannot open " + device);
            handle = out.get(ValueLayout.ADDRESS, 0);
        }
    }

    public Device device() {
        return device;
    }

    /**
     * What a merge counted: positions whose elected sign was +, - or none (merges with consensus), and output
     * elements that are NaN or infinite once rounded to the output's dtype ({@code nonFinite}; 0 without an
     * output), counted in the merge itself, so checking an output costs no extra pass.
     */
    public record MergeCounts(long positive, long negative, long none, long nonFinite) {}

    /**
     * Merges {@code models} (and {@code base}, required for task-arithmetic methods, null for
     * LINEAR) into {@code out}. Synchronous: when it returns, {@code out} holds the result.
     */
    public synchronized MergeCounts merge(MergeSpec spec, Tensor base, List<Tensor> models, Tensor out) {
        return merge(spec, base, models, null, null, out);
    }

    /**
     * A position selection: where the f32 magnitude key of {@code scores} is below {@code threshold}, no model's
     * delta is kept (SCE: scores are the variance of the task vectors, the threshold its top-k key from
     * {@link TopK}).
     */
    public record Selection(Tensor scores, int threshold) {}

    /**
     * {@link #merge(MergeSpec, Tensor, List, Tensor)} with the tensor-valued inputs: {@code select} (may be null)
     * masks positions for every model; {@code elementWeights} (LINEAR, may be null) weigh each model's elements,
     * e.g. by their diagonal Fisher.
     */
    public synchronized MergeCounts merge(MergeSpec spec, Tensor base, List<Tensor> models, Selection select,
            List<Tensor> elementWeights, Tensor out) {
        if (out == null) throw new IllegalArgumentException("out is null (use signCounts() for statistics only)");
        return run(spec, base, models, select, elementWeights, out);
    }

    /** Runs a merge's sign election without writing an output (for the TIES paper's zero-sign rule). */
    public synchronized MergeCounts signCounts(MergeSpec spec, Tensor base, List<Tensor> models) {
        return run(spec, base, models, null, null, null);
    }

    /**
     * The TIES paper's rule for positions whose elected sum is exactly zero: they take the sign
     * that most positions elected. Returns {@code spec} with that zero sign, from one statistics
     * pass over the given tensors (for a model-wide rule, add up {@link #signCounts} over all
     * tensors yourself).
     */
    public synchronized MergeSpec withMajorityZeroSign(MergeSpec spec, Tensor base, List<Tensor> models) {
        MergeCounts c = run(spec.toBuilder().zeroSign(MergeSpec.ZeroSign.NONE).build(), base, models, null, null, null);
        return spec.toBuilder()
                .zeroSign(c.negative() > c.positive() ? MergeSpec.ZeroSign.NEGATIVE : MergeSpec.ZeroSign.POSITIVE)
                .build();
    }

    private MergeCounts run(MergeSpec spec, Tensor base, List<Tensor> models, Selection select,
            List<Tensor> elementWeights, Tensor out) {
        ensureOpen();
        if (models.size() != spec.modelCount())
            throw new IllegalArgumentException(models.size() + " model tensors for a spec with " + spec.modelCount()
                    + " weights");
        if (spec.method() != MergeSpec.Method.LINEAR && base == null)
            throw new IllegalArgumentException(spec.method() + " needs a base tensor");
        if (elementWeights != null && elementWeights.size() != models.size())
            throw new IllegalArgumentException(elementWeights.size() + " element-weight tensors for " + models.size()
                    + " models");
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment p = smelter_merge_params.allocate(arena);
            smelter_h.smelter_merge_params_init(p);
            MemorySegment tensors = smelter_tensor.allocateArray(models.size(), arena);
            for (int i = 0; i < models.size(); i++) fill(smelter_tensor.asSlice(tensors, i), models.get(i));
            smelter_merge_params.method(p, spec.method().ordinal());
            smelter_merge_params.n_models(p, models.size());
            smelter_merge_params.models(p, tensors);
            if (base != null && spec.method() != MergeSpec.Method.LINEAR)
                smelter_merge_params.base(p, struct(arena, base));
            smelter_merge_params.weights(p, arena.allocateFrom(ValueLayout.JAVA_FLOAT, spec.weights()));
            if (spec.densities() != null)  // in double: mergekit's counts of decimal densities
                smelter_merge_params.densities_f64(p, arena.allocateFrom(ValueLayout.JAVA_DOUBLE, spec.densities()));
            smelter_merge_params.sparsify(p, spec.sparsify().ordinal());
            smelter_merge_params.consensus(p, spec.consensus().ordinal());
            smelter_merge_params.zero_sign(p, spec.zeroSign().ordinal());
            smelter_merge_params.rescale(p, spec.rescale().ordinal());
            smelter_merge_params.normalize(p, spec.normalize() ? 1 : 0);
            smelter_merge_params.lambda(p, spec.lambda());
            smelter_merge_params.key_dtype(p, spec.keyDType() == null ? -1 : spec.keyDType().code());
            if (spec.thresholds() != null)
                smelter_merge_params.thresholds(p, arena.allocateFrom(ValueLayout.JAVA_INT, spec.thresholds()));
            smelter_merge_params.seed(p, spec.seed());
            smelter_merge_params.tensor_key(p, spec.tensorKey());
            smelter_merge_params.element_offset(p, spec.elementOffset());
            if (spec.gammas() != null)
                smelter_merge_params.gammas_f64(p, arena.allocateFrom(ValueLayout.JAVA_DOUBLE, spec.gammas()));
            if (spec.upperThresholds() != null)
                smelter_merge_params.upper_thresholds(p, arena.allocateFrom(ValueLayout.JAVA_INT, spec.upperThresholds()));
            if (spec.epsilons() != null) smelter_merge_params.epsilons(p, floats(arena, spec.epsilons()));
            smelter_merge_params.row_length(p, spec.rowLength());
            smelter_merge_params.min_divisor(p, spec.minDivisor());
            if (spec.elementWeightFloors() != null)
                smelter_merge_params.element_weight_floors(p, floats(arena, spec.elementWeightFloors()));
            if (select != null) {
                smelter_merge_params.select(p, struct(arena, select.scores()));
                smelter_merge_params.select_threshold(p, select.threshold());
            }
            if (elementWeights != null) {
                MemorySegment ew = smelter_tensor.allocateArray(models.size(), arena);
                for (int i = 0; i < models.size(); i++) fill(smelter_tensor.asSlice(ew, i), elementWeights.get(i));
                smelter_merge_params.element_weights(p, ew);
            }
            MemorySegment counts = arena.allocate(ValueLayout.JAVA_LONG, 4);
            smelter_merge_params.sign_counts(p, counts);
            smelter_merge_params.nonfinite_count(p, counts.asSlice(3 * Long.BYTES));
            MemorySegment outStruct = out == null ? MemorySegment.NULL : struct(arena, out);
            Native.check(smelter_h.smelter_merge(handle, p, outStruct), "merge on " + device);
            return new MergeCounts(counts.getAtIndex(ValueLayout.JAVA_LONG, 0), counts.getAtIndex(ValueLayout.JAVA_LONG, 1),
                    counts.getAtIndex(ValueLayout.JAVA_LONG, 2), counts.getAtIndex(ValueLayout.JAVA_LONG, 3));
        }
    }

    /**
     * Co-moment over rows: {@code out[i][j] (+)= sum_r w_r (x[r][i] - xShift[i]) (y[r][j] - yShift[j])},
     * an f32 {@code x.cols() x y.cols()} matrix (host or device). Shifts and weights may be null
     * (0 and 1). Synchronous; the result does not depend on the CPU thread count.
     */
    public synchronized void columnProduct(Matrix x, float[] xShift, Matrix y, float[] yShift, float[] rowWeights,
            Tensor out, boolean accumulate) {
        product(smelter_h.SMELTER_PRODUCT_COLUMNS(), x, xShift, y, yShift, rowWeights, out, accumulate);
    }

    /**
     * Gram matrix: {@code out[r][s] (+)= sum_i (x[r][i] - xShift[i]) (y[s][i] - yShift[i])}, an f32
     * {@code x.rows() x y.rows()} matrix. Shifts may be null. Synchronous.
     */
    public synchronized void rowProduct(Matrix x, float[] xShift, Matrix y, float[] yShift, Tensor out,
            boolean accumulate) {
        product(smelter_h.SMELTER_PRODUCT_ROWS(), x, xShift, y, yShift, null, out, accumulate);
    }

    /**
     * {@link #columnProduct} formed in f64 throughout (converted, shifted, weighted, multiplied and summed in
     * f64), into {@code out}: host memory of {@code x.cols() * y.cols()} doubles, row-major. A row of weight 0
     * is not read. Synchronous; the result does not depend on the CPU thread count.
     */
    public synchronized void columnProductF64(Matrix x, float[] xShift, Matrix y, float[] yShift, float[] rowWeights,
            MemorySegment out, boolean accumulate) {
        checkF64Out(out, x.cols() * y.cols());
        product(smelter_h.SMELTER_PRODUCT_COLUMNS(), x, xShift, y, yShift, rowWeights, null, out, accumulate);
    }

    /** {@link #rowProduct} formed in f64, into host memory of {@code x.rows() * y.rows()} doubles. */
    public synchronized void rowProductF64(Matrix x, float[] xShift, Matrix y, float[] yShift, MemorySegment out,
            boolean accumulate) {
        checkF64Out(out, x.rows() * y.rows());
        product(smelter_h.SMELTER_PRODUCT_ROWS(), x, xShift, y, yShift, null, null, out, accumulate);
    }

    private static void checkF64Out(MemorySegment out, long count) {
        if (!out.isNative()) throw new IllegalArgumentException("the f64 output must be native (off-heap) memory");
        if (out.byteSize() != count * Double.BYTES)
            throw new IllegalArgumentException("the f64 output holds " + out.byteSize() / Double.BYTES + " values, the product has " + count);
    }

    private void product(int kind, Matrix x, float[] xShift, Matrix y, float[] yShift, float[] rowWeights,
            Tensor out, boolean accumulate) {
        product(kind, x, xShift, y, yShift, rowWeights, out, null, accumulate);
    }

    private void product(int kind, Matrix x, float[] xShift, Matrix y, float[] yShift, float[] rowWeights,
            Tensor out, MemorySegment outF64, boolean accumulate) {
        ensureOpen();
        checkLength(xShift, x.cols(), "x shift");
        checkLength(yShift, y.cols(), "y shift");
        checkLength(rowWeights, x.rows(), "row weights");
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment p = smelter_product_params.allocate(arena);
            smelter_h.smelter_product_params_init(p);
            smelter_product_params.kind(p, kind);
            smelter_product_params.x(p, struct(arena, x.tensor()));
            smelter_product_params.y(p, struct(arena, y.tensor()));
            smelter_product_params.x_rows(p, x.rows());
            smelter_product_params.x_cols(p, x.cols());
            smelter_product_params.y_rows(p, y.rows());
            smelter_product_params.y_cols(p, y.cols());
            smelter_product_params.x_shift(p, floats(arena, xShift));
            smelter_product_params.y_shift(p, floats(arena, yShift));
            smelter_product_params.row_weights(p, floats(arena, rowWeights));
            smelter_product_params.accumulate(p, accumulate ? 1 : 0);
            if (outF64 != null) smelter_product_params.out_f64(p, outF64);
            MemorySegment o = out == null ? MemorySegment.NULL : struct(arena, out);
            Native.check(smelter_h.smelter_product(handle, p, o), "product on " + device);
        }
    }

    /**
     * Per-column statistics of {@code x}, added to the arrays given (either may be null): {@code
     * sums[i] += sum_r w_r (x[r][i] - shift[i])} (f64, fixed order) and {@code positive[i] +=} rows
     * with {@code w_r != 0} and {@code x[r][i] > 0}. Synchronous.
     */
    public synchronized void columnStats(Matrix x, float[] shift, float[] rowWeights, double[] sums, long[] positive) {
        ensureOpen();
        checkLength(shift, x.cols(), "shift");
        checkLength(rowWeights, x.rows(), "row weights");
        checkLength(sums, x.cols(), "sums");
        checkLength(positive, x.cols(), "positive");
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment p = smelter_column_stats_params.allocate(arena);
            smelter_h.smelter_column_stats_params_init(p);
            smelter_column_stats_params.x(p, struct(arena, x.tensor()));
            smelter_column_stats_params.rows(p, x.rows());
            smelter_column_stats_params.cols(p, x.cols());
            smelter_column_stats_params.shift(p, floats(arena, shift));
            smelter_column_stats_params.row_weights(p, floats(arena, rowWeights));
            MemorySegment s = sums == null ? MemorySegment.NULL : arena.allocateFrom(ValueLayout.JAVA_DOUBLE, sums);
            MemorySegment c = positive == null ? MemorySegment.NULL : arena.allocateFrom(ValueLayout.JAVA_LONG, positive);
            smelter_column_stats_params.sums(p, s);
            smelter_column_stats_params.positive(p, c);
            Native.check(smelter_h.smelter_column_stats(handle, p), "column statistics on " + device);
            if (sums != null) MemorySegment.copy(s, ValueLayout.JAVA_DOUBLE, 0, sums, 0, sums.length);
            if (positive != null) MemorySegment.copy(c, ValueLayout.JAVA_LONG, 0, positive, 0, positive.length);
        }
    }

    /**
     * Adds the pairwise statistics of {@code vectors} (or of {@code vectors[i] - base} when base is not null) to
     * {@code into}: see {@link PairStats}. {@code thresholds} (may be null) are magnitude keys per vector, as
     * {@link TopK} selects them, in {@code keyDType} (null: the vectors' dtype); with them the overlap of the
     * TIES masks is counted too. Synchronous.
     */
    public synchronized void pairStats(List<Tensor> vectors, Tensor base, int[] thresholds, DType keyDType,
            PairStats into) {
        pairStats(vectors, base, thresholds, keyDType, null, into);
    }

    /** {@link #pairStats(List, Tensor, int[], DType, PairStats)} over the positions {@code select} keeps (may be null). */
    public synchronized void pairStats(List<Tensor> vectors, Tensor base, int[] thresholds, DType keyDType,
            Selection select, PairStats into) {
        ensureOpen();
        int n = vectors.size();
        if (into.size() != n)
            throw new IllegalArgumentException(n + " vectors for statistics of " + into.size());
        checkLength(thresholds, n, "thresholds");
        into.requireConsistentMasks(thresholds != null);
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment p = smelter_pair_stats_params.allocate(arena);
            smelter_h.smelter_pair_stats_params_init(p);
            MemorySegment tensors = smelter_tensor.allocateArray(n, arena);
            for (int i = 0; i < n; i++) fill(smelter_tensor.asSlice(tensors, i), vectors.get(i));
            smelter_pair_stats_params.n_vectors(p, n);
            smelter_pair_stats_params.vectors(p, tensors);
            if (base != null) smelter_pair_stats_params.base(p, struct(arena, base));
            MemorySegment dots = arena.allocateFrom(ValueLayout.JAVA_DOUBLE, into.dots);
            MemorySegment squared = arena.allocateFrom(ValueLayout.JAVA_DOUBLE, into.squaredDistances);
            MemorySegment conflicts = arena.allocateFrom(ValueLayout.JAVA_LONG, into.conflicts);
            MemorySegment nonzero = arena.allocateFrom(ValueLayout.JAVA_LONG, into.nonzero);
            MemorySegment nonfinite = arena.allocateFrom(ValueLayout.JAVA_LONG, into.nonfinite);
            MemorySegment kept = thresholds == null ? MemorySegment.NULL
                    : arena.allocateFrom(ValueLayout.JAVA_LONG, into.kept);
            smelter_pair_stats_params.dots(p, dots);
            smelter_pair_stats_params.squared_distances(p, squared);
            smelter_pair_stats_params.sign_conflicts(p, conflicts);
            smelter_pair_stats_params.both_nonzero(p, nonzero);
            smelter_pair_stats_params.nonfinite(p, nonfinite);
            smelter_pair_stats_params.both_kept(p, kept);
            if (thresholds != null)
                smelter_pair_stats_params.thresholds(p, arena.allocateFrom(ValueLayout.JAVA_INT, thresholds));
            smelter_pair_stats_params.key_dtype(p, keyDType == null ? -1 : keyDType.code());
            if (select != null) {
                smelter_pair_stats_params.select(p, struct(arena, select.scores()));
                smelter_pair_stats_params.select_threshold(p, select.threshold());
            }
            Native.check(smelter_h.smelter_pair_stats(handle, p), "pair statistics on " + device);
            MemorySegment.copy(dots, ValueLayout.JAVA_DOUBLE, 0, into.dots, 0, into.dots.length);
            MemorySegment.copy(squared, ValueLayout.JAVA_DOUBLE, 0, into.squaredDistances, 0, into.squaredDistances.length);
            MemorySegment.copy(conflicts, ValueLayout.JAVA_LONG, 0, into.conflicts, 0, into.conflicts.length);
            MemorySegment.copy(nonzero, ValueLayout.JAVA_LONG, 0, into.nonzero, 0, into.nonzero.length);
            MemorySegment.copy(nonfinite, ValueLayout.JAVA_LONG, 0, into.nonfinite, 0, into.nonfinite.length);
            if (thresholds != null) MemorySegment.copy(kept, ValueLayout.JAVA_LONG, 0, into.kept, 0, into.kept.length);
            into.added(vectors.get(0).count(), thresholds != null);
        }
    }

    /** Elements of {@code t} that are NaN or infinite (one pass; host or device tensor). */
    public synchronized long countNonFinite(Tensor t) {
        ensureOpen();
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment p = smelter_pair_stats_params.allocate(arena);
            smelter_h.smelter_pair_stats_params_init(p);
            smelter_pair_stats_params.n_vectors(p, 1);
            smelter_pair_stats_params.vectors(p, struct(arena, t));
            MemorySegment count = arena.allocate(ValueLayout.JAVA_LONG);
            smelter_pair_stats_params.nonfinite(p, count);
            Native.check(smelter_h.smelter_pair_stats(handle, p), "non-finite count on " + device);
            return count.get(ValueLayout.JAVA_LONG, 0);
        }
    }

    private static MemorySegment floats(Arena arena, float[] values) {
        return values == null ? MemorySegment.NULL : arena.allocateFrom(ValueLayout.JAVA_FLOAT, values);
    }

    private static void checkLength(Object array, long expected, String what) {
        if (array == null) return;
        int length = java.lang.reflect.Array.getLength(array);
        if (length != expected)
            throw new IllegalArgumentException(what + " has " + length + " values, expected " + expected);
    }

    /**
     * Allocates {@code count} elements: DEVICE memory on a CUDA context, or HOST memory (page-locked
     * on CUDA, for fast copies). Release with {@link #free(Tensor)}.
     */
    public synchronized Tensor allocate(DType dtype, long count, Tensor.Memory memory) {
        ensureOpen();
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment out = arena.allocate(ValueLayout.ADDRESS);
            long bytes = count * dtype.byteSize();
            Native.check(smelter_h.smelter_alloc(handle, memory.ordinal(), bytes, out),
                    "allocate " + bytes + " bytes of " + memory + " memory on " + device);
            MemorySegment ptr = out.get(ValueLayout.ADDRESS, 0);
            // Device memory is not addressable from Java: keep only its address.
            return new Tensor(memory == Tensor.Memory.HOST ? ptr.reinterpret(bytes) : ptr, count, dtype, memory);
        }
    }

    public synchronized void free(Tensor t) {
        ensureOpen();
        Native.check(smelter_h.smelter_free(handle, t.memory().ordinal(), t.data()), "free on " + device);
    }

    /** Copies {@code src} into {@code dst} (same byte size), between host and device as needed. */
    public synchronized void copy(Tensor dst, Tensor src) {
        ensureOpen();
        if (dst.byteSize() != src.byteSize())
            throw new IllegalArgumentException("copy of " + src.byteSize() + " bytes into " + dst.byteSize());
        Native.check(smelter_h.smelter_copy(handle, dst.data(), dst.memory().ordinal(), src.data(),
                src.memory().ordinal(), src.byteSize()), "copy on " + device);
    }

    /**
     * Caps the bytes one merge call works on at once (its inputs, output and the tensors that go with them); a
     * larger merge runs in pieces with bit-identical results. 0 (the default): no cap on the CPU, the free device
     * memory on CUDA, so tensors larger than device memory merge too.
     */
    public synchronized void setMemoryLimit(long bytes) {
        ensureOpen();
        Native.check(smelter_h.smelter_context_set_memory_limit(handle, bytes), "memory limit on " + device);
    }

    /** Waits for all queued work; reports asynchronous device errors. */
    public synchronized void synchronize() {
        ensureOpen();
        Native.check(smelter_h.smelter_synchronize(handle), "synchronize " + device);
    }

    /** An exact k-th largest |delta| finder for model-wide TIES trimming. */
    public synchronized TopK topK(DType keyDType) {
        ensureOpen();
        return new TopK(this, keyDType);
    }

    MemorySegment handle() {
        ensureOpen();
        return handle;
    }

    static MemorySegment struct(SegmentAllocator arena, Tensor t) {
        MemorySegment s = smelter_tensor.allocate(arena);
        fill(s, t);
        return s;
    }

    private static void fill(MemorySegment s, Tensor t) {
        smelter_tensor.data(s, t.data());
        smelter_tensor.count(s, t.count());
        smelter_tensor.dtype(s, t.dtype().code());
        smelter_tensor.memory(s, t.memory().ordinal());
    }

    private void ensureOpen() {
        if (handle == null) throw new IllegalStateException("context " + device + " is closed");
    }

    @Override
    public synchronized void close() {
        if (handle == null) return;
        MemorySegment h = handle;
        handle = null;
        Native.check(smelter_h.smelter_context_destroy(h), "close " + device);
    }

    @Override
    public String toString() {
        return "Context[" + device + "]";
    }
}
