package dev.smelter.analysis;

import dev.smelter.DType;
import dev.smelter.Matrix;
import dev.smelter.Tensor;
import dev.smelter.io.CheckpointFormatException;
import dev.smelter.io.SafetensorsDType;
import dev.smelter.io.SafetensorsFile;
import dev.smelter.io.TensorInfo;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.TreeSet;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * An activation file (docs/ACTIVATIONS.md): {@code hidden.L} [rows, d] per layer, optional {@code
 * mlp_act.L} [tokens, d_ff], {@code sentence_ids} [tokens] and {@code mask.NAME} [tokens] (U8 or
 * BOOL). Tensors are read with positional reads into buffers of their own ({@link #rows}), never handed to native
 * code as views of a file mapping: a file truncated by another process meanwhile fails the read with the file named,
 * where a mapping would kill the JVM with SIGBUS. {@link #checkUnchanged} detects a file rewritten in place.
 */
public final class Activations implements AutoCloseable {
    public static final String HIDDEN = "hidden", MLP = "mlp_act";

    private final SafetensorsFile file;
    private final java.util.Set<FileRows> buffered = new java.util.LinkedHashSet<>();  // sources holding a buffer

    private Activations(SafetensorsFile file) {
        this.file = file;
    }

    public static Activations open(Path path) throws IOException {
        return new Activations(SafetensorsFile.open(path));
    }

    public Path path() {
        return file.path();
    }

    /** The layer numbers L that have a tensor {@code prefix.L}, ascending. */
    public List<Integer> layers(String prefix) {
        Pattern p = Pattern.compile(Pattern.quote(prefix) + "\\.(\\d+)");
        TreeSet<Integer> layers = new TreeSet<>();
        for (String name : file.tensors().keySet()) {
            Matcher m = p.matcher(name);
            if (m.matches()) layers.add(Integer.parseInt(m.group(1)));
        }
        return new ArrayList<>(layers);
    }

    /**
     * The 2-D f32/f16/bf16 tensor {@code prefix.layer}, read a chunk of rows at a time into a buffer of the source's
     * own (at most the largest chunk asked for; {@link RowSource#releaseBuffer} frees it, {@link #close} at the latest).
     */
    public RowSource rows(String prefix, int layer) throws CheckpointFormatException {
        String name = prefix + "." + layer;
        TensorInfo t = info(name);
        if (t.rank() != 2) throw new CheckpointFormatException(file.path(), name, "has shape of rank " + t.rank() + ", expected [rows, features]");
        DType dtype = switch (t.dtype()) {
            case F32 -> DType.F32;
            case F16 -> DType.F16;
            case BF16 -> DType.BF16;
            default -> throw new CheckpointFormatException(file.path(), name, "is " + t.dtype() + ", expected F32, F16 or BF16");
        };
        return new FileRows(name, dtype, t.shape()[0], t.shape()[1]);
    }

    /** Rows of a tensor of this file, read with positional reads into a reusable off-heap buffer. */
    private final class FileRows implements RowSource {
        private final String name;
        private final DType dtype;
        private final long rows, cols;
        private Arena arena;
        private MemorySegment buffer;

        FileRows(String name, DType dtype, long rows, long cols) {
            this.name = name;
            this.dtype = dtype;
            this.rows = rows;
            this.cols = cols;
        }

        @Override
        public long rows() {
            return rows;
        }

        @Override
        public long cols() {
            return cols;
        }

        @Override
        public DType dtype() {
            return dtype;
        }

        @Override
        public Matrix rows(long first, long count) {
            if (first < 0 || count < 0 || first + count > rows)
                throw new IndexOutOfBoundsException("rows [" + first + ", " + (first + count) + ") of " + rows);
            long rowBytes = cols * dtype.byteSize(), bytes = count * rowBytes;
            if (buffer == null || buffer.byteSize() < bytes) {
                releaseBuffer();
                arena = Arena.ofShared();
                buffer = arena.allocate(Math.max(bytes, 64), 64);
                buffered.add(this);
            }
            MemorySegment dst = buffer.asSlice(0, bytes);
            try {
                file.read(name, first * rowBytes, dst);
            } catch (IOException e) {
                throw new UncheckedIOException(e);
            }
            return new Matrix(new Tensor(dst, count * cols, dtype, Tensor.Memory.HOST), count, cols);
        }

        @Override
        public void releaseBuffer() {
            if (arena == null) return;
            arena.close();
            arena = null;
            buffer = null;
            buffered.remove(this);
        }
    }

    /**
     * Fails naming the file if it is not the one opened any more (size, modification time or inode changed): a file
     * rewritten in place while it was read would give a result of mixed contents.
     */
    public void checkUnchanged() throws IOException {
        file.checkUnchanged();
    }

    // A small tensor (mask, sentence ids) read whole with positional reads.
    private MemorySegment readWhole(Arena arena, String name) throws IOException {
        MemorySegment s = arena.allocate(Math.max(1, info(name).byteSize()), 8).asSlice(0, info(name).byteSize());
        file.read(name, 0, s);
        return s;
    }

    /** Whether the file has a tensor of this name. */
    public boolean has(String name) {
        return file.tensors().containsKey(name);
    }

    /** Mask {@code mask.NAME} as row weights 0/1, checked to have {@code rows} entries. */
    public float[] mask(String maskName, long rows) throws IOException {
        String name = "mask." + maskName;
        TensorInfo t = info(name);
        if (t.dtype() != SafetensorsDType.U8 && t.dtype() != SafetensorsDType.BOOL)
            throw new CheckpointFormatException(file.path(), name, "is " + t.dtype() + ", expected U8 or BOOL");
        if (t.elementCount() != rows)
            throw new CheckpointFormatException(file.path(), name, "has " + t.elementCount() + " entries for " + rows + " rows");
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment s = readWhole(arena, name);
            float[] w = new float[(int) rows];
            for (int i = 0; i < w.length; i++) w[i] = s.get(ValueLayout.JAVA_BYTE, i) != 0 ? 1f : 0f;
            return w;
        }
    }

    /** {@code sentence_ids} (I64 or I32), checked to have {@code rows} non-decreasing, non-negative entries. */
    public long[] sentenceIds(long rows) throws IOException {
        TensorInfo t = info("sentence_ids");
        if (t.elementCount() != rows)
            throw new CheckpointFormatException(file.path(), "sentence_ids", "has " + t.elementCount() + " entries for " + rows + " rows");
        try (Arena arena = Arena.ofConfined()) {
            return sentenceIds(t, readWhole(arena, "sentence_ids"), rows);
        }
    }

    private long[] sentenceIds(TensorInfo t, MemorySegment s, long rows) throws CheckpointFormatException {
        long[] ids = new long[(int) rows];
        for (int i = 0; i < ids.length; i++) {
            ids[i] = switch (t.dtype()) {
                case I64 -> s.getAtIndex(ValueLayout.JAVA_LONG_UNALIGNED, i);
                case I32 -> s.getAtIndex(ValueLayout.JAVA_INT_UNALIGNED, i);
                default -> throw new CheckpointFormatException(file.path(), "sentence_ids", "is " + t.dtype() + ", expected I64 or I32");
            };
            if (ids[i] < 0 || (i > 0 && ids[i] < ids[i - 1]))
                throw new CheckpointFormatException(file.path(), "sentence_ids", "entry " + i + " (" + ids[i] + ") is negative or decreasing");
        }
        return ids;
    }

    /**
     * Mean of each sentence's rows (weighted by {@code weights}, null = all), as an f32 [sentences, d]
     * matrix in {@code arena}. Sentences with no weighted rows (a span mask that misses them) are
     * left out ({@link #pooledSentences}), so two files pool to the same rows only if their masks agree; callers check.
     */
    public static Matrix meanPool(Arena arena, Matrix m, long[] ids, float[] weights) {
        return meanPool(arena, RowSource.of(m), ids, weights);
    }

    /** Rows of a source that {@link #meanPool} reads at once: at most 4096, and at most 64 MiB of them. */
    static final long POOL_CHUNK_BYTES = 64L << 20;

    /** {@link #meanPool} of a source of host rows, read a chunk of rows at a time (the same sums in the same order). */
    public static Matrix meanPool(Arena arena, RowSource m, long[] ids, float[] weights) {
        int sentences = ids.length == 0 ? 0 : (int) ids[ids.length - 1] + 1;
        int d = (int) m.cols();
        long step = Math.max(1, Math.min(4096, POOL_CHUNK_BYTES / Math.max(1, 4L * d)));
        double[] acc = new double[d];
        Tensor out = Tensor.allocate(arena, DType.F32, (long) sentences * d);
        Matrix chunk = null;
        long chunkStart = 0;
        int row = 0, kept = 0;
        for (int s = 0; s < sentences; s++) {
            java.util.Arrays.fill(acc, 0);
            double weight = 0;
            for (; row < ids.length && ids[row] == s; row++) {
                float w = weights == null ? 1f : weights[row];
                if (w == 0) continue;
                if (chunk == null || row >= chunkStart + chunk.rows()) {
                    chunkStart = row;
                    chunk = m.rows(row, Math.min(step, m.rows() - row));
                }
                weight += w;
                long at = (row - chunkStart) * d;
                for (int j = 0; j < d; j++) acc[j] += (double) w * chunk.tensor().getFloat(at + j);
            }
            if (weight == 0) continue;
            for (int j = 0; j < d; j++) out.data().setAtIndex(ValueLayout.JAVA_FLOAT, (long) kept * d + j, (float) (acc[j] / weight));
            kept++;
        }
        m.releaseBuffer();
        return new Matrix(out.slice(0, (long) kept * d), kept, d);
    }

    /** The sentences {@link #meanPool} keeps: those with a weighted row (all of them without weights), ascending. */
    public static long[] pooledSentences(long[] ids, float[] weights) {
        java.util.stream.LongStream.Builder kept = java.util.stream.LongStream.builder();
        long last = -1;
        for (int i = 0; i < ids.length; i++)
            if ((weights == null || weights[i] != 0) && ids[i] != last) {
                kept.add(ids[i]);
                last = ids[i];
            }
        return kept.build().toArray();
    }

    private TensorInfo info(String name) throws CheckpointFormatException {
        TensorInfo t = file.tensors().get(name);
        if (t == null) throw new CheckpointFormatException(file.path(), name, "is not in the file");
        return t;
    }

    @Override
    public void close() {
        for (FileRows r : new ArrayList<>(buffered)) r.releaseBuffer();
        file.close();
    }
}
