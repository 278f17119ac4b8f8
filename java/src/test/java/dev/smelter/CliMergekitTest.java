package dev.smelter;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import dev.smelter.cli.CliRun;
import dev.smelter.io.Checkpoint;
import dev.smelter.io.CheckpointWriter;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.stream.Stream;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * `smelter merge` as mergekit-yaml users call it: the positional output, mergekit's options, sizes, the architecture
 * check, the output's config.json, model card and mergekit_config.yml, and the messages of common mistakes.
 */
class CliMergekitTest {
    @TempDir
    static Path dir;

    @BeforeAll
    static void checkpoints() {
        assertEquals(0, CliRun.cli("demo-checkpoints", dir.toString(), "--hidden", "64", "--layers", "3", "--vocab", "97").code());
    }

    static CliRun.Run merge(String... args) {
        List<String> a = new ArrayList<>(List.of("merge", "--device", "cpu", "-q"));
        a.addAll(List.of(args));
        return CliRun.cli(a.toArray(String[]::new));
    }

    static String ties() {
        return dir.resolve("ties.yml").toString();
    }

    static String out(String name) {
        return dir.resolve(name).toString();
    }

    @Test
    void outputIsTheSecondArgumentAsInMergekitYaml() {
        CliRun.Run r = merge(ties(), out("positional"));
        assertEquals(0, r.code(), r.err());
        assertTrue(Files.isRegularFile(dir.resolve("positional/config.json")));
        assertEquals(0, merge(ties(), out("both"), "-o", out("both")).code(), "the same directory twice");
        assertEquals(0, merge(ties(), "-o", out("option")).code());

        r = merge(ties(), out("a"), "-o", out("b"));
        assertEquals(2, r.code());
        assertTrue(r.err().contains("two output directories") && r.err().contains("give one"), r.err());
        r = merge(ties());
        assertEquals(2, r.code());
        assertTrue(r.err().contains("no output directory: give it after the config (smelter merge CONFIG OUT"), r.err());
        assertFalse(Files.exists(dir.resolve("a")) || Files.exists(dir.resolve("b")));
    }

    @Test
    void cudaFlagsMeanDeviceCuda() {
        CliRun.Run r = CliRun.cli("merge", ties(), out("cuda"), "--cuda", "--dry-run");
        assertEquals(0, r.code(), r.err());
        assertTrue(r.out().contains("device cuda:0"), r.out());
        r = CliRun.cli("merge", ties(), out("cuda"), "--gpu-rich", "--dry-run");
        assertEquals(0, r.code(), r.err());
        assertTrue(r.out().contains("device cuda:0") && r.err().contains("note: --gpu-rich means --cuda here"), r.err());
        r = CliRun.cli("merge", ties(), out("cuda"), "--cuda", "--device", "cuda:1", "--dry-run");
        assertTrue(r.out().contains("device cuda:1"), r.out());
        r = merge(ties(), out("cuda"), "--cuda");  // --device cpu from merge(): a contradiction
        assertEquals(2, r.code());
        assertTrue(r.err().contains("--cuda (merge on the GPU) conflicts with --device cpu"), r.err());
        assertFalse(Files.exists(dir.resolve("cuda")));
    }

    static List<Long> shardSizes(Path checkpoint) throws IOException {
        try (Stream<Path> s = Files.list(checkpoint)) {
            return s.filter(p -> p.toString().endsWith(".safetensors")).sorted().map(p -> p.toFile().length()).toList();
        }
    }

    @Test
    void outShardSizeCountsBytesAsMergekitDoes() throws Exception {
        assertEquals(0, merge(ties(), out("kmb"), "--out-shard-size", "100K").code());
        assertEquals(0, merge(ties(), out("kb"), "--max-shard-size", "100KB").code());
        List<Long> kmb = shardSizes(dir.resolve("kmb"));
        assertTrue(kmb.size() > 1, "sharded: " + kmb);
        assertEquals(kmb, shardSizes(dir.resolve("kb")), "100K (mergekit) is 100KB");
        assertEquals(0, merge(ties(), out("one"), "--out-shard-size", "0").code());
        assertEquals(1, shardSizes(dir.resolve("one")).size(), "0: no limit, as mergekit's writer");
        assertEquals(0, merge(ties(), out("billions"), "--out-shard-size", "5B", "--dry-run").code());

        CliRun.Run r = merge(ties(), out("x"), "--out-shard-size", "100K", "--max-shard-size", "1GB");
        assertEquals(2, r.code());
        assertTrue(r.err().contains("give one"), r.err());
        r = merge(ties(), out("x"), "--out-shard-size", "5GB");
        assertEquals(2, r.code());
        assertTrue(r.err().contains("not a size in mergekit's form"), r.err());
    }

    @Test
    void maxShardSizeTakesOnlyUnambiguousUnits() {
        for (String ok : List.of("100kb", "100KB", "0.1MB", "1MiB", "1.5GiB", "5GB", "2 TB", "64KiB")) {
            CliRun.Run r = merge(ties(), out("sizes"), "--max-shard-size", ok, "--dry-run");
            assertEquals(0, r.code(), ok + ": " + r.err());
        }
        CliRun.Run r = merge(ties(), out("sizes"), "--max-shard-size", "5B");
        assertEquals(2, r.code());
        assertTrue(r.err().contains("--max-shard-size 5B is ambiguous") && r.err().contains("--out-shard-size 5B")
                && r.err().contains("5GB"), r.err());
        r = merge(ties(), out("sizes"), "--max-shard-size", "5000000000");
        assertEquals(2, r.code());
        assertTrue(r.err().contains("has no unit") && r.err().contains("--out-shard-size"), r.err());
        for (String bad : List.of("5G", "5b", "2.5B", "five GB", "-1GB", "5M"))
            assertEquals(2, merge(ties(), out("sizes"), "--max-shard-size", bad).code(), bad);
        // --memory-limit takes the same units, and no bare numbers either.
        assertEquals(0, merge(ties(), out("sizes"), "--memory-limit", "20KiB", "--dry-run").code());
        r = merge(ties(), out("sizes"), "--memory-limit", "20000");
        assertEquals(2, r.code());
        assertTrue(r.err().contains("--memory-limit 20000 has no unit") && !r.err().contains("--out-shard-size"), r.err());
        assertFalse(Files.exists(dir.resolve("sizes")));
    }

    @Test
    void randomSeedIsSeed() throws Exception {
        String dare = dir.resolve("dare_ties.yml").toString();
        assertEquals(0, merge(dare, out("seed"), "--seed", "43").code());
        assertEquals(0, merge(dare, out("random-seed"), "--random-seed", "43").code());
        assertEquals(0, merge(dare, out("config-seed")).code());
        try (Checkpoint a = Checkpoint.open(dir.resolve("seed")); Checkpoint b = Checkpoint.open(dir.resolve("random-seed"));
                Checkpoint c = Checkpoint.open(dir.resolve("config-seed"))) {
            boolean differs = false;
            for (String n : a.tensorNames()) {
                assertEquals(-1, a.data(n).mismatch(b.data(n)), n);
                differs |= a.data(n).mismatch(c.data(n)) != -1;
            }
            assertTrue(differs, "--random-seed 43 overrides the config's seed 42");
        }
        assertEquals(0, merge(dare, out("x"), "--seed", "7", "--random-seed", "7", "--dry-run").code());
        CliRun.Run r = merge(dare, out("x"), "--seed", "7", "--random-seed", "8");
        assertEquals(2, r.code());
        assertTrue(r.err().contains("--seed 7 and --random-seed 8 differ"), r.err());
    }

    @Test
    void optionsThatChangeNothingAreAcceptedWithANoteEach() {
        List<String> flags = List.of("--lazy-unpickle", "--low-cpu-memory", "--trust-remote-code", "--read-to-gpu",
                "--multi-gpu", "--async-write", "--clone-tensors", "--safe-serialization");
        List<String> args = new ArrayList<>(List.of(ties(), out("noop"), "--dry-run", "--num-threads", "4",
                "--write-threads", "2"));
        args.addAll(flags);
        CliRun.Run r = merge(args.toArray(String[]::new));
        assertEquals(0, r.code(), r.err());
        for (String f : flags) assertTrue(r.err().contains("note: " + f + " changes nothing: "), f + ": " + r.err());
        assertTrue(r.err().contains("note: --num-threads 4 changes nothing") && r.err().contains("note: --write-threads 2"), r.err());
        assertEquals(flags.size() + 2, r.err().lines().filter(l -> l.startsWith("note: ")).count(), r.err());
        // mergekit's --no- forms are accepted too; --no-safe-serialization is said to be ignored.
        r = merge(ties(), out("noop"), "--dry-run", "--no-lazy-unpickle", "--no-cuda", "--no-safe-serialization");
        assertEquals(0, r.code(), r.err());
        assertTrue(r.err().contains("note: --no-safe-serialization is ignored: Smelter writes safetensors only"), r.err());
    }

    @Test
    void verboseSaysMore() {
        CliRun.Run r = merge(ties(), out("verbose"), "--dry-run", "-v");
        assertEquals(0, r.code(), r.err());
        assertTrue(r.err().contains("base_model: " + dir.resolve("base")) && r.err().contains("model: " + dir.resolve("expert-sw"))
                && r.err().contains("torch_dtype bfloat16"), r.err());
        assertFalse(merge(ties(), out("verbose"), "--dry-run").err().contains("torch_dtype"));
    }

    /** A copy of base with tokenizer files and a config.json edited by {@code edit}. */
    static Path baseWith(String name, java.util.function.Consumer<ObjectNode> edit) throws Exception {
        Path b = dir.resolve(name);
        CliMergeTest.copyTree(dir.resolve("base"), b);
        ObjectMapper json = new ObjectMapper();
        ObjectNode cfg = (ObjectNode) json.readTree(b.resolve("config.json").toFile());
        edit.accept(cfg);
        json.writerWithDefaultPrettyPrinter().writeValue(b.resolve("config.json").toFile(), cfg);
        Files.writeString(b.resolve("tokenizer.json"), "{\"version\": \"1.0\"}");
        Files.writeString(b.resolve("tokenizer_config.json"), "{}");
        Files.writeString(b.resolve("special_tokens_map.json"), "{}");
        Files.writeString(b.resolve("generation_config.json"), "{\"do_sample\": false}");
        return b;
    }

    static Path config(String name, String text) throws IOException {
        Path p = dir.resolve(name);
        Files.writeString(p, text);
        return p;
    }

    @Test
    void tokenizerFilesAreCopiedUnlessNoCopyTokenizer() throws Exception {
        baseWith("base-tok", c -> {});
        Path cfg = config("tok.yml", Files.readString(dir.resolve("ties.yml")).replace("base_model: base", "base_model: base-tok"));
        assertEquals(0, merge(cfg.toString(), out("tok")).code());
        for (String f : List.of("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json", "config.json"))
            assertTrue(Files.isRegularFile(dir.resolve("tok").resolve(f)), f);
        assertEquals(0, merge(cfg.toString(), out("no-tok"), "--no-copy-tokenizer").code());
        for (String f : List.of("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"))
            assertFalse(Files.exists(dir.resolve("no-tok").resolve(f)), f);
        for (String f : List.of("generation_config.json", "config.json"))
            assertTrue(Files.isRegularFile(dir.resolve("no-tok").resolve(f)), f + " is not a tokenizer file");
        assertEquals(0, merge(cfg.toString(), out("tok2"), "--copy-tokenizer").code());
        assertTrue(Files.isRegularFile(dir.resolve("tok2/tokenizer.json")));
    }

    @Test
    void modelCardAndMergekitConfigAreWrittenUnlessNoWriteModelCard() throws Exception {
        Path cfg = config("card.yml", Files.readString(dir.resolve("ties.yml")).replace("expert-fr",
                "./expert-fr") + "# the end\n");
        assertEquals(0, merge(cfg.toString(), out("carded")).code());
        String card = Files.readString(dir.resolve("carded/README.md"));
        assertTrue(card.startsWith("---\nbase_model: []\nlibrary_name: transformers\ntags:\n- mergekit\n- merge\n---\n# carded\n"), card);
        assertTrue(card.contains("merged using the [TIES](https://arxiv.org/abs/2306.01708) merge method using base as a base"), card);
        assertTrue(card.contains("* expert-de\n* ./expert-fr\n* expert-sw\n"), "models as the config writes them: " + card);
        assertTrue(card.contains("```yaml\n" + Files.readString(cfg).strip() + "\n```"), card);
        assertEquals(Files.readString(cfg), Files.readString(dir.resolve("carded/mergekit_config.yml")), "the config as given");

        assertEquals(0, merge(cfg.toString(), out("uncarded"), "--no-write-model-card").code());
        assertFalse(Files.exists(dir.resolve("uncarded/README.md")));
        assertFalse(Files.exists(dir.resolve("uncarded/mergekit_config.yml")));
        assertTrue(Files.exists(dir.resolve("uncarded/config.json")));
    }

    @Test
    void modelCardListsHubIdsAsBaseModels() throws Exception {
        // Models in folders named like Hub IDs (as huggingface-cli download --local-dir org/name leaves them).
        CliMergeTest.copyTree(dir.resolve("base"), dir.resolve("org/base-model"));
        CliMergeTest.copyTree(dir.resolve("expert-de"), dir.resolve("org/expert-de"));
        Path cfg = config("hub-card.yml", """
                merge_method: task_arithmetic
                base_model: org/base-model
                models:
                  - model: org/expert-de
                    parameters: {weight: 1.0}
                  - model: expert-fr
                    parameters: {weight: 1.0}
                """);
        assertEquals(0, merge(cfg.toString(), out("hub-card")).code());
        String card = Files.readString(dir.resolve("hub-card/README.md"));
        assertTrue(card.startsWith("---\nbase_model:\n- org/base-model\n- org/expert-de\nlibrary_name: transformers\n"), card);
        assertTrue(card.contains("using [org/base-model](https://huggingface.co/org/base-model) as a base"), card);
        assertTrue(card.contains("* [org/expert-de](https://huggingface.co/org/expert-de)\n* expert-fr\n"), card);
    }

    @Test
    void configJsonGetsTheDtypeWrittenKeepingItsKeyOrder() throws Exception {
        Path f32 = dir.resolve("f32");
        assertEquals(0, CliRun.cli("demo-checkpoints", f32.toString(), "--hidden", "64", "--layers", "3", "--vocab", "97",
                "--dtype", "f32").code());
        // out_dtype: the output's tensors are bf16, and config.json says so (mergekit sets it the same way).
        Path cfg = config("f32/to-bf16.yml", Files.readString(f32.resolve("ties.yml")).replace("dtype: float32",
                "dtype: float32\nout_dtype: bfloat16"));
        assertEquals(0, merge(cfg.toString(), out("to-bf16")).code());
        ObjectMapper json = new ObjectMapper();
        JsonNode base = json.readTree(f32.resolve("base/config.json").toFile());
        JsonNode merged = json.readTree(dir.resolve("to-bf16/config.json").toFile());
        assertEquals("float32", base.get("torch_dtype").asText());
        assertEquals("bfloat16", merged.get("torch_dtype").asText());
        assertEquals(List.copyOf(base.properties().stream().map(Map.Entry::getKey).toList()),
                merged.properties().stream().map(Map.Entry::getKey).toList(), "key order kept");
        assertEquals(base.get("rms_norm_eps").asDouble(), merged.get("rms_norm_eps").asDouble());
        assertEquals(base.get("rope_theta").asDouble(), merged.get("rope_theta").asDouble());
        try (Checkpoint c = Checkpoint.open(dir.resolve("to-bf16"))) {
            assertEquals(dev.smelter.io.SafetensorsDType.BF16, c.info("model.layers.0.mlp.up_proj.weight").dtype());
        }

        // No dtype in the config: the inputs' (f32), whatever the base's config.json claimed; `dtype` is set too.
        Path b = dir.resolve("f32/base-claims-f16");
        CliMergeTest.copyTree(f32.resolve("base"), b);
        ObjectNode claims = (ObjectNode) json.readTree(b.resolve("config.json").toFile());
        claims.put("torch_dtype", "float16");
        claims.put("dtype", "float16");
        json.writeValue(b.resolve("config.json").toFile(), claims);
        cfg = config("f32/no-dtype.yml", Files.readString(f32.resolve("ties.yml")).replace("dtype: float32", "")
                .replace("base_model: base", "base_model: base-claims-f16"));
        assertEquals(0, merge(cfg.toString(), out("no-dtype")).code());
        merged = json.readTree(dir.resolve("no-dtype/config.json").toFile());
        assertEquals("float32", merged.get("torch_dtype").asText());
        assertEquals("float32", merged.get("dtype").asText());
    }

    @Test
    void differentArchitecturesAreRefusedUnlessAllowCrimes() throws Exception {
        Path granite = baseWith("granite", c -> {
            c.put("model_type", "granite");
            c.putArray("architectures").add("GraniteForCausalLM");
        });
        Path cfg = config("crimes.yml", """
                merge_method: ties
                base_model: base
                models:
                  - model: granite
                    parameters: {weight: 0.5, density: 0.5}
                  - model: expert-de
                    parameters: {weight: 0.5, density: 0.5}
                """);
        CliRun.Run r = merge(cfg.toString(), out("crimes"));
        assertEquals(2, r.code(), r.err());
        assertTrue(r.err().contains(dir.resolve("base") + " has model_type \"llama\", " + granite + " has \"granite\""), r.err());
        assertTrue(r.err().contains("architectures [\"LlamaForCausalLM\"]") && r.err().contains("[\"GraniteForCausalLM\"]"), r.err());
        assertTrue(r.err().contains("--allow-crimes merges anyway"), r.err());
        assertFalse(Files.exists(dir.resolve("crimes")));
        r = merge(cfg.toString(), out("crimes"), "--allow-crimes");
        assertEquals(0, r.code(), r.err());
        assertTrue(r.err().contains("warning: " + dir.resolve("base") + " has model_type \"llama\"")
                && r.err().contains("(--allow-crimes: merging anyway)"), r.err());
    }

    @Test
    void differentLayerCountsAreRefusedUnlessAllowCrimes() throws Exception {
        Path deep = dir.resolve("deep"), shallow = dir.resolve("shallow");
        assertEquals(0, CliRun.cli("demo-checkpoints", deep.toString(), "--hidden", "16", "--layers", "40", "--vocab", "32").code());
        assertEquals(0, CliRun.cli("demo-checkpoints", shallow.toString(), "--hidden", "16", "--layers", "32", "--vocab", "32").code());
        Path cfg = config("layers.yml", """
                merge_method: ties
                base_model: shallow/base
                models:
                  - model: deep/expert-de
                    parameters: {weight: 0.5, density: 0.5}
                  - model: shallow/expert-fr
                    parameters: {weight: 0.5, density: 0.5}
                """);
        CliRun.Run r = merge(cfg.toString(), out("layers"));
        assertEquals(2, r.code(), r.err());
        assertTrue(r.err().contains(shallow.resolve("base") + " has num_hidden_layers 32, " + deep.resolve("expert-de")
                + " has 40"), r.err());
        assertFalse(Files.exists(dir.resolve("layers")));
        r = merge(cfg.toString(), out("layers"), "--allow-crimes");
        assertEquals(0, r.code(), r.err());
        assertTrue(r.err().contains("(--allow-crimes: merging anyway)") && r.err().contains("left out of the merge"), r.err());

        // Without config.json the tensor names tell: still refused, and the missing config.json is a warning.
        Files.delete(deep.resolve("expert-de/config.json"));
        r = merge(cfg.toString(), out("layers-no-config"));
        assertEquals(2, r.code(), r.err());
        assertTrue(r.err().contains("warning: " + deep.resolve("expert-de") + " has no config.json"), r.err());
        assertTrue(r.err().contains(deep.resolve("expert-de") + " has 40 layers, " + shallow.resolve("base")
                + " has 32 (counted in their tensor names)"), r.err());
    }

    @Test
    void messagesForCommonMistakes() throws Exception {
        CliRun.Run r = merge(out("missing.yml"), out("m"));
        assertEquals(2, r.code());
        assertTrue(r.err().contains("config file " + out("missing.yml") + " does not exist"), r.err());
        r = merge(out("missing.yml"));  // the config first, then the output
        assertEquals(2, r.code());
        assertTrue(r.err().contains("config file " + out("missing.yml") + " does not exist"), r.err());
        r = merge(dir.toString(), out("m"));
        assertEquals(2, r.code());
        assertTrue(r.err().contains("is a directory, not a config file"), r.err());

        Path multi = config("multi.yml", Files.readString(dir.resolve("ties.yml")) + "---\n"
                + Files.readString(dir.resolve("dare_ties.yml")));
        r = merge(multi.toString(), out("m"));
        assertEquals(2, r.code());
        assertTrue(r.err().contains("document 2 has no name, and neither has document 1")
                && r.err().contains("only the final merge is unnamed"), r.err());
        Path leading = config("leading.yml", "---\n" + Files.readString(dir.resolve("ties.yml")));
        assertEquals(0, merge(leading.toString(), out("m"), "--dry-run").code(), "one document after ---");

        Path hub = config("hub.yml", Files.readString(dir.resolve("ties.yml")).replace("base_model: base",
                "base_model: meta-llama/Llama-3.1-8B"));
        r = merge(hub.toString(), out("m"));
        assertEquals(2, r.code());
        assertTrue(r.err().contains("base_model 'meta-llama/Llama-3.1-8B' is not a local checkpoint (searched ")
                && r.err().contains("is not in the Hugging Face cache") && r.err().contains("never downloads")
                && r.err().contains("huggingface-cli download meta-llama/Llama-3.1-8B`"), r.err());
        Path typo = config("typo.yml", Files.readString(dir.resolve("ties.yml")).replace("expert-fr", "expert-fx"));
        r = merge(typo.toString(), out("m"));
        assertEquals(2, r.code());
        assertTrue(r.err().contains("models[1].model 'expert-fx' does not exist (searched ")
                && r.err().contains(dir.resolve("expert-fx").toString()), r.err());
        assertFalse(Files.exists(dir.resolve("m")));
    }

    @Test
    void anExistingOutputIsNamedWithOverwrite() throws Exception {
        assertEquals(0, merge(ties(), out("exists")).code());
        CliRun.Run r = merge(ties(), out("exists"), "--dry-run");
        assertEquals(0, r.code());
        assertTrue(r.out().contains("output " + out("exists") + " exists and is not empty (use --overwrite to replace it"), r.out());
        r = merge(ties(), out("exists"), "--dry-run", "--overwrite");
        assertTrue(r.out().contains("exists and is not empty: --overwrite replaces it once the new one is complete"), r.out());
        r = merge(ties(), out("new"), "--dry-run");
        assertTrue(r.out().contains("output " + out("new") + " (a new directory)"), r.out());
        r = merge(ties(), out("exists"));
        assertEquals(2, r.code());
        assertTrue(r.err().contains("(use --overwrite to replace it"), r.err());
        assertEquals(0, merge(ties(), out("exists"), "--overwrite").code());
        // The library's own message names the flag too.
        IOException e = org.junit.jupiter.api.Assertions.assertThrows(IOException.class, () -> new CheckpointWriter(
                dir.resolve("exists"), List.of(), 1000, Map.of(), false));
        assertTrue(e.getMessage().contains("(use --overwrite to replace it)"), e.getMessage());
    }

    @Test
    void sweepTakesThePositionalOutputAndTheSharedOptions() throws Exception {
        CliRun.Run r = CliRun.cli("sweep", "--device", "cpu", "-q", dir.resolve("dare_ties.yml").toString(), out("sweep"),
                "--grid", "density=0.3,0.5", "--random-seed", "5", "--out-shard-size", "100K", "--lazy-unpickle");
        assertEquals(0, r.code(), r.err());
        assertTrue(r.err().contains("note: --lazy-unpickle changes nothing"), r.err());
        assertTrue(Files.isRegularFile(dir.resolve("sweep/density=0.3/config.json")));
        assertTrue(shardSizes(dir.resolve("sweep/density=0.3")).size() > 1);
        r = CliRun.cli("sweep", "--device", "cpu", dir.resolve("dare_ties.yml").toString(), "--grid", "density=0.3,0.5");
        assertEquals(2, r.code());
        assertTrue(r.err().contains("smelter sweep CONFIG OUT"), r.err());
    }
}
