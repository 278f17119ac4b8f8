package dev.smelter.analysis;

import dev.smelter.DType;
import dev.smelter.Matrix;
import dev.smelter.Tensor;
import dev.smelter.io.CheckpointFormatException;
import dev.smelter.io.SafetensorsDType;
import dev.smelter.io.SafetensorsFile;
import dev.smelter.io.TensorInfo;
import java.io.IOException;
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
 * BOOL). Matrices are memory-mapped views; they stay valid until {@link #close()}.
 */
public final class Activations implements AutoCloseable {
    public static final String HIDDEN = "hidden", MLP = "mlp_act";

    private final SafetensorsFile file;

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

    /** The 2-D f32/f16/bf16 tensor {@code prefix.layer} as a matrix. */
    public Matrix layer(String prefix, int layer) throws CheckpointFormatException {
        String name = prefix + "." + layer;
        TensorInfo t = info(name);
        if (t.rank() != 2) throw new CheckpointFormatException(file.path(), name, "has shape of rank " + t.rank() + ", expected [rows, features]");
        DType dtype = switch (t.dtype()) {
            case F32 -> DType.F32;
            case F16 -> DType.F16;
            case BF16 -> DType.BF16;
            default -> throw new CheckpointFormatException(file.path(), name, "is " + t.dtype() + ", expected F32, F16 or BF16");
        };
        return new Matrix(Tensor.host(file.data(name), dtype), t.shape()[0], t.shape()[1]);
    }

    /** Whether the file has a tensor of this name. */
    public boolean has(String name) {
        return file.tensors().containsKey(name);
    }

    /** Mask {@code mask.NAME} as row weights 0/1, checked to have {@code rows} entries. */
    public float[] mask(String maskName, long rows) throws CheckpointFormatException {
        String name = "mask." + maskName;
        TensorInfo t = info(name);
        if (t.dtype() != SafetensorsDType.U8 && t.dtype() != SafetensorsDType.BOOL)
            throw new CheckpointFormatException(file.path(), name, "is " + t.dtype() + ", expected U8 or BOOL");
        if (t.elementCount() != rows)
            throw new CheckpointFormatException(file.path(), name, "has " + t.elementCount() + " entries for " + rows + " rows");
        MemorySegment s = file.data(name);
        float[] w = new float[(int) rows];
        for (int i = 0; i < w.length; i++) w[i] = s.get(ValueLayout.JAVA_BYTE, i) != 0 ? 1f : 0f;
        return w;
    }

    /** {@code sentence_ids} (I64 or I32), checked to have {@code rows} non-decreasing, non-negative entries. */
    public long[] sentenceIds(long rows) throws CheckpointFormatException {
        TensorInfo t = info("sentence_ids");
        if (t.elementCount() != rows)
            throw new CheckpointFormatException(file.path(), "sentence_ids", "has " + t.elementCount() + " entries for " + rows + " rows");
        MemorySegment s = file.data("sentence_ids");
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
        int sentences = ids.length == 0 ? 0 : (int) ids[ids.length - 1] + 1;
        int d = (int) m.cols();
        double[] acc = new double[d];
        Tensor out = Tensor.allocate(arena, DType.F32, (long) sentences * d);
        int row = 0, kept = 0;
        for (int s = 0; s < sentences; s++) {
            java.util.Arrays.fill(acc, 0);
            double weight = 0;
            for (; row < ids.length && ids[row] == s; row++) {
                float w = weights == null ? 1f : weights[row];
                if (w == 0) continue;
                weight += w;
                for (int j = 0; j < d; j++) acc[j] += (double) w * m.tensor().getFloat((long) row * d + j);
            }
            if (weight == 0) continue;
            for (int j = 0; j < d; j++) out.data().setAtIndex(ValueLayout.JAVA_FLOAT, (long) kept * d + j, (float) (acc[j] / weight));
            kept++;
        }
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
        file.close();
    }
}
