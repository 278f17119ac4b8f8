package dev.smelter.analysis;

import dev.smelter.Context;
import dev.smelter.io.CheckpointFormatException;
import java.io.IOException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Objects;

/**
 * How often each MLP neuron is active in an activation file: per layer {@code L} and neuron {@code j}, the
 * number of tokens (rows of {@code mlp_act.L}, restricted to a span mask if one is given) on which the gate
 * activation is &gt; 0. These are the counts {@link NeuronSelectivity#select} takes.
 *
 * <p>{@link #inspect} checks a file's shapes without reading activations, so that every input of a run can be
 * validated before any counting starts; {@link #count} then streams each layer through the native {@code
 * smelter_column_stats} kernel a chunk of rows at a time, each chunk read with positional reads into one reusable
 * buffer (never a view of the file mapping; on a GPU, only one chunk is staged at once).
 */
public final class NeuronCounts {
    /** Staging bound per kernel call when no chunk size is given: 64 MiB of activations, at most 4096 rows. */
    static final long CHUNK_BYTES = 64L << 20;
    static final int MAX_CHUNK_ROWS = 4096;

    private NeuronCounts() {}

    /**
     * The {@code mlp_act.*} tensors of one file, checked.
     *
     * @param path the file
     * @param layers the layer numbers L of its {@code mlp_act.L} tensors, ascending
     * @param matrices the tensors, in the order of {@code layers}; all {@code [rows, width]}
     * @param rows tokens in the file
     * @param width neurons per layer (d_ff)
     * @param weights the span mask as row weights 0/1, or null for all rows
     * @param tokens rows counted: {@code rows}, or the rows the mask sets
     */
    public record Input(Path path, List<Integer> layers, List<RowSource> matrices, long rows, int width,
            float[] weights, long tokens) {}

    /**
     * Checks that {@code file} has {@code mlp_act.L} tensors, all 2-D f32/f16/bf16 with the same rows and
     * width, at least one token, and (with {@code mask} not null) a {@code mask.NAME} of that many rows that
     * sets at least one of them. Errors name the file and the tensor.
     */
    public static Input inspect(Activations file, String mask) throws IOException {
        Objects.requireNonNull(file, "file");
        Path path = file.path();
        List<Integer> layers = file.layers(Activations.MLP);
        if (layers.isEmpty())
            throw new IllegalArgumentException(path + ": no " + Activations.MLP + ".N tensors (dump_activations.py writes them with --mlp)");
        List<RowSource> matrices = new ArrayList<>(layers.size());
        String first = Activations.MLP + "." + layers.getFirst();
        for (int layer : layers) {
            RowSource m = file.rows(Activations.MLP, layer);
            String name = Activations.MLP + "." + layer;
            if (!matrices.isEmpty()) {
                RowSource f = matrices.getFirst();
                if (m.rows() != f.rows())
                    throw new CheckpointFormatException(path, name, "has " + m.rows() + " rows, " + first + " has " + f.rows());
                if (m.cols() != f.cols())
                    throw new CheckpointFormatException(path, name, "has " + m.cols() + " neurons, " + first + " has " + f.cols());
            }
            matrices.add(m);
        }
        RowSource f = matrices.getFirst();
        if (f.rows() == 0) throw new IllegalArgumentException(path + ": " + first + " has no rows (no tokens)");
        if (f.cols() == 0 || f.cols() > Integer.MAX_VALUE - 8)
            throw new CheckpointFormatException(path, first, "has " + f.cols() + " neurons");
        if (f.rows() > Integer.MAX_VALUE - 8)
            throw new CheckpointFormatException(path, first, "has " + f.rows() + " rows, more than this reader supports");
        float[] weights = null;
        long tokens = f.rows();
        if (mask != null) {
            weights = file.mask(mask, f.rows());
            tokens = 0;
            for (float w : weights) if (w != 0) tokens++;
            if (tokens == 0) throw new IllegalArgumentException(path + ": mask." + mask + " sets no token");
        }
        return new Input(path, List.copyOf(layers), List.copyOf(matrices), f.rows(), (int) f.cols(), weights, tokens);
    }

    /**
     * Counts active tokens {@code [layer index][neuron]} (index into {@code input.layers()}): rows with
     * weight != 0 and value &gt; 0. {@code chunkRows} rows go to the kernel at a time; 0 picks a size of at
     * most {@link #CHUNK_BYTES}. Chunks the mask leaves out entirely are skipped.
     */
    public static long[][] count(Context ctx, Input input, int chunkRows) {
        Objects.requireNonNull(ctx, "ctx");
        if (chunkRows < 0) throw new IllegalArgumentException("chunk rows must be >= 0, got " + chunkRows);
        long[][] active = new long[input.layers().size()][];
        for (int i = 0; i < active.length; i++) {
            RowSource m = input.matrices().get(i);
            long step = chunkRows > 0 ? chunkRows : chunkRows(m);
            long[] positive = new long[input.width()];
            for (long r = 0; r < input.rows(); r += step) {
                long n = Math.min(step, input.rows() - r);
                float[] w = null;
                if (input.weights() != null) {
                    w = Arrays.copyOfRange(input.weights(), (int) r, (int) (r + n));
                    if (allZero(w)) continue;
                }
                ctx.columnStats(m.rows(r, n), null, w, null, positive);
            }
            m.releaseBuffer();
            active[i] = positive;
        }
        return active;
    }

    /** Rows of {@code m} that fit {@link #CHUNK_BYTES}, between 1 and {@link #MAX_CHUNK_ROWS}. */
    static long chunkRows(RowSource m) {
        long rowBytes = Math.max(1, m.cols() * m.dtype().byteSize());
        return Math.max(1, Math.min(MAX_CHUNK_ROWS, CHUNK_BYTES / rowBytes));
    }

    private static boolean allZero(float[] w) {
        for (float v : w) if (v != 0) return false;
        return true;
    }
}
