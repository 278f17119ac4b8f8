package dev.smelter.io;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.JsonNode;
import dev.smelter.Context;
import dev.smelter.DType;
import dev.smelter.Matrix;
import dev.smelter.Smelter;
import dev.smelter.Tensor;
import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.regex.Pattern;

/**
 * A PEFT LoRA adapter applied to a checkpoint as its tensors are read: {@code W' = W + s B A} per adapted tensor,
 * never the whole model at once. The adapter is a folder with {@code adapter_config.json} ({@code r},
 * {@code lora_alpha}, {@code use_rslora}, {@code fan_in_fan_out}, {@code rank_pattern}, {@code alpha_pattern}) and
 * {@code adapter_model.safetensors}, whose tensors are named as PEFT saves them:
 * <ul>
 *   <li>{@code base_model.model.M.lora_A.weight} {@code [r, in]} and {@code ...lora_B.weight} {@code [out, r]} adapt
 *       the model's {@code M.weight} {@code [out, in]} ({@code [in, out]} with {@code fan_in_fan_out}, GPT-2's Conv1D:
 *       then {@code (B A)^T} is added);</li>
 *   <li>{@code base_model.model.M.lora_embedding_A} {@code [r, vocab]} and {@code ...lora_embedding_B} {@code [dim, r]}
 *       adapt the embedding {@code M.weight} {@code [vocab, dim]} by {@code (B A)^T};</li>
 *   <li>any other {@code base_model.model.T} (a module saved whole, {@code modules_to_save}) replaces the model's
 *       tensor {@code T}.</li>
 * </ul>
 * The scale is PEFT's: {@code s = lora_alpha / r}, or {@code lora_alpha / sqrt(r)} with {@code use_rslora}, with
 * {@code r} and {@code lora_alpha} taken from {@code rank_pattern}/{@code alpha_pattern} where a key matches the module.
 * {@code B A} is formed by the native product kernel in f64 ({@code smelter_product} into {@code out_f64}), added to W
 * in double and rounded once to W's dtype (f32; f16 and bf16 through f32). DoRA adapters and other PEFT types are
 * refused.
 */
public final class LoraAdapter implements AutoCloseable {
    public static final String CONFIG = "adapter_config.json";
    public static final String WEIGHTS = "adapter_model.safetensors";
    private static final String PREFIX = "base_model.model.";
    /** Rows of the delta formed per product call: at most this many bytes of f64. */
    private static final long BLOCK_BYTES = 32L << 20;

    /** One adapted tensor: {@code delta = X Y^T} ({@code [rows, r] x [cols, r]}), W's rows being X's. */
    private record Pair(String module, String a, String b, int rank, double scale, boolean transposed) {}

    private final Path dir;
    private final SafetensorsFile file;
    private final Map<String, Pair> pairs;            // by the model's tensor name
    private final Map<String, String> replacements;   // the model's tensor name -> the adapter's
    private Context context;                          // opened at the first product

    private LoraAdapter(Path dir, SafetensorsFile file, Map<String, Pair> pairs, Map<String, String> replacements) {
        this.dir = dir;
        this.file = file;
        this.pairs = pairs;
        this.replacements = replacements;
    }

    /** Whether {@code dir} is a PEFT adapter folder (it has {@code adapter_config.json}). */
    public static boolean isAdapter(Path dir) {
        return Files.isRegularFile(dir.resolve(CONFIG));
    }

    /** The adapter's {@code base_model_name_or_path}, if its config names one. */
    public static Optional<String> baseModelName(Path dir) {
        try {
            JsonNode n = SafetensorsFile.JSON.readTree(Checkpoint.utf8(dir.resolve(CONFIG))).get("base_model_name_or_path");
            return n != null && n.isTextual() && !n.asText().isEmpty() ? Optional.of(n.asText()) : Optional.empty();
        } catch (IOException | RuntimeException e) {
            return Optional.empty();
        }
    }

    /**
     * Opens the adapter in {@code dir} for {@code model}: every adapter tensor is checked against the model's (names,
     * shapes, ranks, dtypes) before anything is merged; a mismatch names the tensor.
     */
    public static LoraAdapter open(Path dir, Checkpoint model) throws IOException {
        Path configFile = dir.resolve(CONFIG);
        if (!Files.isRegularFile(configFile))
            throw new CheckpointFormatException(dir, "not a PEFT adapter: " + CONFIG + " is missing");
        JsonNode config;
        try {
            config = SafetensorsFile.JSON.readTree(Checkpoint.utf8(configFile));
        } catch (JsonProcessingException e) {
            throw new CheckpointFormatException(configFile, "not valid JSON: " + e.getOriginalMessage());
        }
        if (config == null || !config.isObject()) throw new CheckpointFormatException(configFile, "not a JSON object");
        String type = config.path("peft_type").asText("LORA");
        if (!type.equalsIgnoreCase("LORA"))
            throw new CheckpointFormatException(configFile, "peft_type is " + type + "; Smelter applies LoRA adapters only");
        if (config.path("use_dora").asBoolean(false))
            throw new CheckpointFormatException(configFile, "use_dora: true (a DoRA adapter, whose magnitude vectors "
                    + "rescale the merged weight) is not supported; merge it into the model with PEFT first");
        int r = positiveInt(config, "r", configFile);
        double alpha = config.has("lora_alpha") ? number(config, "lora_alpha", configFile) : 8;  // PEFT's default
        boolean rslora = config.path("use_rslora").asBoolean(false);
        boolean fanInFanOut = config.path("fan_in_fan_out").asBoolean(false);
        Map<String, Integer> rankPattern = new LinkedHashMap<>();
        Map<String, Double> alphaPattern = new LinkedHashMap<>();
        for (Iterator<Map.Entry<String, JsonNode>> it = config.path("rank_pattern").fields(); it.hasNext(); ) {
            Map.Entry<String, JsonNode> e = it.next();
            rankPattern.put(e.getKey(), positiveInt(config.get("rank_pattern"), e.getKey(), configFile));
        }
        for (Iterator<Map.Entry<String, JsonNode>> it = config.path("alpha_pattern").fields(); it.hasNext(); ) {
            Map.Entry<String, JsonNode> e = it.next();
            alphaPattern.put(e.getKey(), number(config.get("alpha_pattern"), e.getKey(), configFile));
        }

        Path weights = dir.resolve(WEIGHTS);
        if (!Files.isRegularFile(weights))
            throw new CheckpointFormatException(dir, WEIGHTS + " is missing" + (Files.isRegularFile(dir.resolve("adapter_model.bin"))
                    ? " (there is adapter_model.bin, a pickle: convert it with `python -c \"import torch, safetensors.torch as s; "
                    + "s.save_file(torch.load('adapter_model.bin'), 'adapter_model.safetensors')\"`)" : ""));
        SafetensorsFile file = SafetensorsFile.open(weights);
        try {
            Map<String, String> as = new LinkedHashMap<>(), bs = new LinkedHashMap<>();
            Map<String, Boolean> embedding = new LinkedHashMap<>();
            Map<String, String> replacements = new LinkedHashMap<>();
            for (String name : file.tensors().keySet()) {
                if (!name.startsWith(PREFIX))
                    throw new CheckpointFormatException(weights, name, "is not named as PEFT saves adapter tensors ("
                            + PREFIX + "MODULE.lora_A.weight)");
                String rest = name.substring(PREFIX.length());
                if (rest.endsWith(".lora_magnitude_vector") || rest.contains(".lora_magnitude_vector."))
                    throw new CheckpointFormatException(weights, name, "is a DoRA magnitude vector: DoRA adapters are "
                            + "not supported; merge it into the model with PEFT first");
                String[][] kinds = {{".lora_A.weight", "A", "false"}, {".lora_B.weight", "B", "false"},
                        {".lora_embedding_A", "A", "true"}, {".lora_embedding_B", "B", "true"}};
                boolean matched = false;
                for (String[] k : kinds)
                    if (rest.endsWith(k[0])) {
                        String module = rest.substring(0, rest.length() - k[0].length());
                        (k[1].equals("A") ? as : bs).put(module, name);
                        embedding.put(module, Boolean.parseBoolean(k[2]));
                        matched = true;
                    }
                if (matched) continue;
                if (rest.contains(".lora_"))
                    throw new CheckpointFormatException(weights, name, "is a LoRA tensor of a kind Smelter does not "
                            + "apply (lora_A.weight, lora_B.weight, lora_embedding_A, lora_embedding_B)");
                if (!model.contains(rest))
                    throw new CheckpointFormatException(weights, name, "replaces the model's tensor " + rest + ", which "
                            + model.directory() + " does not have");
                replacements.put(rest, name);
            }
            Map<String, Pair> pairs = new LinkedHashMap<>();
            for (String module : as.keySet())
                if (!bs.containsKey(module))
                    throw new CheckpointFormatException(weights, as.get(module), "has no matching lora_B tensor");
            for (String module : bs.keySet())
                if (!as.containsKey(module))
                    throw new CheckpointFormatException(weights, bs.get(module), "has no matching lora_A tensor");
            for (String module : as.keySet()) {
                String target = module + ".weight";
                TensorInfo a = file.tensors().get(as.get(module)), b = file.tensors().get(bs.get(module));
                if (!model.contains(target))
                    throw new CheckpointFormatException(weights, as.get(module), "adapts " + target + ", which "
                            + model.directory() + " does not have (an adapter for another model?)");
                if (replacements.containsKey(target))
                    throw new CheckpointFormatException(weights, as.get(module), "adapts " + target
                            + ", which the adapter also replaces whole");
                TensorInfo w = model.info(target);
                for (TensorInfo t : List.of(a, b))
                    if (t.rank() != 2 || t.dtype().toMergeDType().isEmpty())
                        throw new CheckpointFormatException(weights, t.name(), "is " + t.dtype() + " "
                                + Arrays.toString(t.shape()) + "; a LoRA factor is a float32, float16 or bfloat16 matrix");
                if (w.rank() != 2 || w.dtype().toMergeDType().isEmpty())
                    throw new CheckpointFormatException(weights, as.get(module), "adapts " + target + ", which is "
                            + w.dtype() + " " + Arrays.toString(w.shape()) + "; LoRA applies to float32, float16 and "
                            + "bfloat16 matrices");
                int rank = Math.toIntExact(a.shape()[0]);
                String key = patternKey(module, rankPattern.keySet());
                int configRank = key == null ? r : rankPattern.get(key);
                String alphaKey = patternKey(module, alphaPattern.keySet());
                double moduleAlpha = alphaKey == null ? alpha : alphaPattern.get(alphaKey);
                if (rank != configRank)
                    throw new CheckpointFormatException(weights, as.get(module), "has rank " + rank + " "
                            + Arrays.toString(a.shape()) + ", " + CONFIG + " says r = " + configRank);
                if (b.shape()[1] != rank)
                    throw new CheckpointFormatException(weights, bs.get(module), "is " + Arrays.toString(b.shape())
                            + "; with lora_A " + Arrays.toString(a.shape()) + " it must be [out, " + rank + "]");
                boolean transposed = embedding.get(module) || fanInFanOut;
                // B A is [b0, a1]; W is that, or its transpose for embeddings and fan_in_fan_out.
                long[] want = transposed ? new long[] {a.shape()[1], b.shape()[0]} : new long[] {b.shape()[0], a.shape()[1]};
                if (!Arrays.equals(w.shape(), want))
                    throw new CheckpointFormatException(weights, as.get(module), "with " + bs.get(module) + " gives "
                            + (transposed ? "(B A)^T " : "B A ") + Arrays.toString(want) + ", but the model's " + target
                            + " is " + Arrays.toString(w.shape()) + (embedding.get(module) ? "" : fanInFanOut
                                    ? " (fan_in_fan_out is true in " + CONFIG + ")" : " (fan_in_fan_out is false in "
                                    + CONFIG + ")"));
                double scale = moduleAlpha / (rslora ? Math.sqrt(configRank) : configRank);
                pairs.put(target, new Pair(module, as.get(module), bs.get(module), rank, scale, transposed));
            }
            if (pairs.isEmpty() && replacements.isEmpty())
                throw new CheckpointFormatException(weights, "holds no LoRA tensors");
            return new LoraAdapter(dir, file, Map.copyOf(pairs), Map.copyOf(replacements));
        } catch (IOException | RuntimeException e) {
            file.close();
            throw e;
        }
    }

    /** PEFT's choice among rank_pattern/alpha_pattern keys: the first whose pattern ends the module name. */
    private static String patternKey(String module, Iterable<String> keys) {
        for (String key : keys) {
            try {
                if (Pattern.compile("(.*\\.)?(" + key + ")").matcher(module).matches()) return key;
            } catch (java.util.regex.PatternSyntaxException e) {
                if (module.equals(key) || module.endsWith("." + key)) return key;
            }
        }
        return null;
    }

    private static int positiveInt(JsonNode node, String key, Path file) throws CheckpointFormatException {
        JsonNode v = node.get(key);
        if (v == null || !v.canConvertToInt() || !v.isIntegralNumber() || v.asInt() <= 0)
            throw new CheckpointFormatException(file, key + " must be a positive integer, is " + v);
        return v.asInt();
    }

    private static double number(JsonNode node, String key, Path file) throws CheckpointFormatException {
        JsonNode v = node.get(key);
        if (v == null || !v.isNumber() || !Double.isFinite(v.asDouble()))
            throw new CheckpointFormatException(file, key + " must be a number, is " + v);
        return v.asDouble();
    }

    public Path directory() {
        return dir;
    }

    /** The adapter file. */
    SafetensorsFile file() {
        return file;
    }

    /** Tensors of the model the adapter changes by a LoRA product. */
    public java.util.Set<String> adaptedTensors() {
        return pairs.keySet();
    }

    /** The adapter's tensor that replaces the model's {@code name}, or null. */
    String replacement(String name) {
        return replacements.get(name);
    }

    boolean adapts(String name) {
        return pairs.containsKey(name);
    }

    /** PEFT's scale of the delta added to {@code name}. */
    public double scale(String name) {
        return pairs.get(name).scale();
    }

    /**
     * Adds {@code s B A} to {@code dst}, which holds bytes {@code [byteOffset, byteOffset + dst.byteSize())} of the
     * model's tensor {@code w} (whole elements, as read), rounding each sum once to the tensor's dtype.
     */
    void addDelta(TensorInfo w, long byteOffset, MemorySegment dst) throws IOException {
        Pair p = pairs.get(w.name());
        DType dtype = w.dtype().toMergeDType().orElseThrow();
        long size = dtype.byteSize();
        if (byteOffset % size != 0 || dst.byteSize() % size != 0)
            throw new IllegalArgumentException("a read of tensor " + w.name() + " that splits an element");
        long first = byteOffset / size, count = dst.byteSize() / size;
        if (count == 0) return;
        long rows = w.shape()[0], cols = w.shape()[1];
        try (Arena arena = Arena.ofConfined()) {
            TensorInfo a = file.tensors().get(p.a()), b = file.tensors().get(p.b());
            // delta = X Y^T: X [rows, r] and Y [cols, r], row-major f32 (exact copies of the factors).
            float[][] factors = {transposeOf(a, arena), readAs(b, arena)};
            float[] x = p.transposed() ? factors[0] : factors[1], y = p.transposed() ? factors[1] : factors[0];
            int r = p.rank();
            MemorySegment ySeg = arena.allocateFrom(ValueLayout.JAVA_FLOAT, y);
            MemorySegment xSeg = arena.allocateFrom(ValueLayout.JAVA_FLOAT, x);
            Matrix xm = new Matrix(new Tensor(xSeg, rows * r, DType.F32, Tensor.Memory.HOST), rows, r);
            Matrix ym = new Matrix(new Tensor(ySeg, cols * r, DType.F32, Tensor.Memory.HOST), cols, r);
            long firstRow = first / cols, endRow = (first + count + cols - 1) / cols;
            long block = Math.max(1, Math.min(endRow - firstRow, BLOCK_BYTES / (cols * Double.BYTES)));
            MemorySegment delta = arena.allocate(block * cols * Double.BYTES, Double.BYTES);
            Work work = new Work((int) (block * cols));
            for (long row = firstRow; row < endRow; row += block) {
                long n = Math.min(block, endRow - row);
                MemorySegment d = delta.asSlice(0, n * cols * Double.BYTES);
                context().rowProductF64(xm.rows(row, n), null, ym, null, d, false);
                long from = Math.max(first, row * cols), to = Math.min(first + count, (row + n) * cols);
                add(dst, dtype, from - first, d, from - row * cols, (int) (to - from), p.scale(), work);
            }
        }
    }

    /** Heap copies of one block (bulk copies in and out of the segments: the loop is the cost of an adapted read). */
    private record Work(double[] delta, float[] f32, short[] f16) {
        Work(int n) {
            this(new double[n], new float[n], new short[n]);
        }
    }

    /**
     * {@code dst[at + i] = round(dst[at + i] + scale * delta[from + i])} for {@code n} elements: the sum in double,
     * rounded to f32, then (f16, bf16) to nearest even, as {@link Tensor#setFloat} rounds.
     */
    private static void add(MemorySegment dst, DType dtype, long at, MemorySegment delta, long from, int n, double scale,
            Work w) {
        double[] dd = w.delta();
        MemorySegment.copy(delta, ValueLayout.JAVA_DOUBLE, from * Double.BYTES, dd, 0, n);
        if (dtype == DType.F32) {
            float[] v = w.f32();
            MemorySegment.copy(dst, ValueLayout.JAVA_FLOAT_UNALIGNED, at * 4, v, 0, n);
            for (int i = 0; i < n; i++) v[i] = (float) (v[i] + scale * dd[i]);
            MemorySegment.copy(v, 0, dst, ValueLayout.JAVA_FLOAT_UNALIGNED, at * 4, n);
            return;
        }
        short[] h = w.f16();
        MemorySegment.copy(dst, ValueLayout.JAVA_SHORT_UNALIGNED, at * 2, h, 0, n);
        if (dtype == DType.F16) {
            for (int i = 0; i < n; i++) h[i] = Float.floatToFloat16((float) (Float.float16ToFloat(h[i]) + scale * dd[i]));
        } else {
            for (int i = 0; i < n; i++)
                h[i] = DType.bfloat16Bits((float) (Float.intBitsToFloat((h[i] & 0xFFFF) << 16) + scale * dd[i]));
        }
        MemorySegment.copy(h, 0, dst, ValueLayout.JAVA_SHORT_UNALIGNED, at * 2, n);
    }

    /** Factor {@code t} [r, n] as the f32 matrix [n, r]. */
    private float[] transposeOf(TensorInfo t, Arena arena) throws IOException {
        float[] v = readAs(t, arena);
        int r = Math.toIntExact(t.shape()[0]), n = Math.toIntExact(t.shape()[1]);
        float[] out = new float[v.length];
        for (int i = 0; i < r; i++)
            for (int j = 0; j < n; j++) out[j * r + i] = v[i * n + j];
        return out;
    }

    private float[] readAs(TensorInfo t, Arena arena) throws IOException {
        MemorySegment raw = arena.allocate(Math.max(1, t.byteSize()), 8).asSlice(0, t.byteSize());
        file.read(t.name(), 0, raw);
        return new Tensor(raw, t.elementCount(), t.dtype().toMergeDType().orElseThrow(), Tensor.Memory.HOST).toFloatArray();
    }

    private synchronized Context context() {
        if (context == null) context = Smelter.openCpu(0);
        return context;
    }

    /** Fails naming the file if the adapter changed since it was opened. */
    void checkUnchanged() throws IOException {
        file.checkUnchanged();
    }

    @Override
    public synchronized void close() {
        if (context != null) context.close();
        context = null;
        file.close();
    }

    /** For messages: what the adapter does. */
    @Override
    public String toString() {
        List<String> parts = new ArrayList<>();
        parts.add(pairs.size() + " adapted tensor" + (pairs.size() == 1 ? "" : "s"));
        if (!replacements.isEmpty()) parts.add(replacements.size() + " replaced");
        return dir + " (" + String.join(", ", parts) + ")";
    }
}
