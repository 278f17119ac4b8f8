package dev.smelter;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import com.fasterxml.jackson.databind.JsonNode;
import dev.smelter.cli.CliRun;
import dev.smelter.io.Checkpoint;
import dev.smelter.io.TensorInfo;
import java.net.URISyntaxException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import java.util.stream.Stream;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * mergekit configs as users write them (the shapes of mergekit's examples and docs and of common community configs,
 * scaled to the tiny layer counts of {@link FakeHubCache}), each run unmodified through {@code smelter merge} against
 * Hub IDs in a local Hugging Face cache. Each config in {@code src/test/resources/real-configs} says in comments what
 * it must give:
 * <ul>
 *   <li>{@code # expect: layers=N vocab=V dtype=BF16} (and {@code tied=true}: no lm_head, {@code bias=true}: q/k/v
 *       biases): exit 0, the Llama tensor names of N layers (and nothing else),
 *       embeddings and head of V rows, config.json with num_hidden_layers N and vocab_size V, every tensor in dtype,
 *       every value finite, every token id of the tokenizer.json written beside it a row; and {@code --dry-run}
 *       succeeds writing nothing;</li>
 *   <li>{@code # expect-file: NAME TEXT}: output file NAME contains TEXT;</li>
 *   <li>{@code # expect-sweep: GRID}: {@code smelter sweep --grid GRID} over the config gives one such output per
 *       point;</li>
 *   <li>{@code # expect: exit=2} with {@code # expect-message: TEXT} lines: the refusal, each TEXT in its message,
 *       and no output.</li>
 * </ul>
 * The values themselves are checked against float64 references in each feature's own tests.
 */
class RealConfigsTest {
    @TempDir
    static Path dir;

    static String oldHome;

    @BeforeAll
    static void hubCache() throws Exception {
        for (String v : List.of("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME"))
            Assumptions.assumeTrue(System.getenv(v) == null, v + " is set: the cache is not under the home");
        Path home = Files.createDirectories(dir.resolve("home"));
        FakeHubCache.build(home, Files.createDirectories(dir.resolve("models")));
        oldHome = System.getProperty("user.home");
        System.setProperty("user.home", home.toString());
    }

    @AfterAll
    static void restoreHome() {
        if (oldHome != null) System.setProperty("user.home", oldHome);
    }

    static Path configDir() throws URISyntaxException {
        return Path.of(RealConfigsTest.class.getResource("/real-configs").toURI());
    }

    static Stream<String> configs() throws Exception {
        try (Stream<Path> s = Files.list(configDir())) {
            return s.map(p -> p.getFileName().toString()).filter(n -> n.endsWith(".yml")).sorted().toList().stream();
        }
    }

    /** The values of the {@code # KEY:} comment lines of a config. */
    static List<String> comments(String yaml, String key) {
        List<String> out = new ArrayList<>();
        for (String line : yaml.lines().toList())
            if (line.startsWith("# " + key + ":")) out.add(line.substring(key.length() + 3).strip());
        return out;
    }

    static String setting(String expect, String key) {
        for (String part : expect.split("\\s+"))
            if (part.startsWith(key + "=")) return part.substring(key.length() + 1);
        return null;
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("configs")
    void mergesAsMergekitDoes(String name) throws Exception {
        Path config = configDir().resolve(name);
        String yaml = Files.readString(config);
        List<String> expect = comments(yaml, "expect");
        assertEquals(1, expect.size(), name + " needs one '# expect:' line");
        Path out = dir.resolve("out").resolve(name.replace(".yml", ""));
        CliRun.Run r = CliRun.cli("merge", "--device", "cpu", "-q", config.toString(), out.toString());
        String exit = setting(expect.get(0), "exit");
        if (exit != null) {
            assertEquals(Integer.parseInt(exit), r.code(), name + " should be refused:\n" + r.err());
            List<String> messages = comments(yaml, "expect-message");
            assertFalse(messages.isEmpty(), name + " needs '# expect-message:' lines");
            for (String m : messages) assertTrue(r.err().contains(m), name + ": the message lacks '" + m + "':\n" + r.err());
            assertFalse(Files.exists(out), "a refused config writes nothing");
            return;
        }
        assertEquals(0, r.code(), name + " failed:\n" + r.err());
        CliRun.Run dry = CliRun.cli("merge", "--device", "cpu", "-q", "--dry-run", config.toString(),
                dir.resolve("dry").resolve(name).toString());
        assertEquals(0, dry.code(), name + " --dry-run failed:\n" + dry.err());
        assertFalse(Files.exists(dir.resolve("dry").resolve(name)), name + ": --dry-run wrote its output");
        int layers = Integer.parseInt(setting(expect.get(0), "layers"));
        long vocab = Long.parseLong(setting(expect.get(0), "vocab"));
        String dtype = setting(expect.get(0), "dtype");
        checkOutput(name, out, layers, vocab, dtype, "true".equals(setting(expect.get(0), "tied")),
                "true".equals(setting(expect.get(0), "bias")));
        for (String grid : comments(yaml, "expect-sweep")) {
            // smelter sweep over the same config: one output per grid point, each as sound as the merge
            Path sweep = dir.resolve("sweep").resolve(name.replace(".yml", ""));
            CliRun.Run sr = CliRun.cli("sweep", "--device", "cpu", "-q", config.toString(), "--grid", grid, "-o",
                    sweep.toString(), "--no-stats");
            assertEquals(0, sr.code(), name + ": sweep --grid " + grid + " failed:\n" + sr.err());
            List<Path> points;
            try (Stream<Path> p = Files.list(sweep)) {
                points = p.filter(Files::isDirectory).toList();
            }
            assertEquals(grid.split(",").length, points.size(), name + ": sweep outputs " + points);
            for (Path point : points)
                checkOutput(name + " " + point.getFileName(), point, layers, vocab, dtype,
                        "true".equals(setting(expect.get(0), "tied")), "true".equals(setting(expect.get(0), "bias")));
        }
        for (String f : comments(yaml, "expect-file")) {
            int space = f.indexOf(' ');
            String file = f.substring(0, space), text = f.substring(space + 1);
            assertTrue(Files.isRegularFile(out.resolve(file)), name + ": no " + file + " in the output");
            String content = Files.readString(out.resolve(file));
            assertTrue(content.contains(text), name + ": " + file + " lacks '" + text + "'");
        }
    }

    /** The tensors of a Llama-style model: without lm_head where it is tied, with q/k/v biases as Qwen2 has them. */
    static Set<String> llamaTensors(int layers, boolean tied, boolean bias) {
        Set<String> names = new HashSet<>(List.of("model.embed_tokens.weight", "model.norm.weight"));
        if (!tied) names.add("lm_head.weight");
        for (int l = 0; l < layers; l++) {
            for (String t : List.of("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                    "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj", "input_layernorm", "post_attention_layernorm"))
                names.add("model.layers." + l + "." + t + ".weight");
            if (bias)
                for (String t : List.of("q_proj", "k_proj", "v_proj")) names.add("model.layers." + l + ".self_attn." + t + ".bias");
        }
        return names;
    }

    static void checkOutput(String name, Path out, int layers, long vocab, String dtype, boolean tied, boolean bias)
            throws Exception {
        JsonNode cfg = FakeHubCache.JSON.readTree(out.resolve("config.json").toFile());
        assertEquals(layers, cfg.get("num_hidden_layers").asInt(), name + ": config.json num_hidden_layers");
        assertEquals(vocab, cfg.get("vocab_size").asLong(), name + ": config.json vocab_size");
        // The tokenizer written beside the weights fits them: every token id is a row of the embeddings. (A model
        // with only a slow tokenizer passes tokenizer.model on.)
        if (Files.exists(out.resolve("tokenizer.json"))) {
            JsonNode tok = FakeHubCache.JSON.readTree(out.resolve("tokenizer.json").toFile());
            long ids = 0;
            for (JsonNode id : tok.get("model").get("vocab")) ids = Math.max(ids, id.asLong() + 1);
            for (JsonNode a : tok.get("added_tokens")) ids = Math.max(ids, a.get("id").asLong() + 1);
            assertTrue(ids <= vocab, name + ": tokenizer.json has ids up to " + (ids - 1) + ", the model " + vocab + " rows");
        } else {
            assertTrue(Files.exists(out.resolve("tokenizer.model")), name + ": no tokenizer in the output");
        }
        try (Checkpoint c = Checkpoint.open(out)) {
            assertEquals(llamaTensors(layers, tied, bias), new HashSet<>(c.tensorNames()), name + ": tensor names");
            assertEquals((tied ? 2 : 3) + (bias ? 12 : 9) * layers, c.tensorNames().size(), name + ": tensor count");
            for (String t : tied ? List.of("model.embed_tokens.weight") : List.of("model.embed_tokens.weight", "lm_head.weight"))
                assertArrayEquals(new long[] {vocab, FakeHubCache.HIDDEN}, c.info(t).shape(), name + ": " + t);
            for (String t : c.tensorNames()) {
                TensorInfo info = c.info(t);
                assertEquals(dtype, info.dtype().name(), name + ": dtype of " + t);
                Tensor x = c.tensor(t);
                for (long i = 0; i < info.elementCount(); i++) {
                    float v = x.getFloat(i);
                    if (!Float.isFinite(v)) fail(name + ": " + t + "[" + i + "] is " + v);
                }
            }
        }
    }
}
