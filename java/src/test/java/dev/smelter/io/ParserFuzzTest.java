package dev.smelter.io;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.fail;

import dev.smelter.config.ConfigException;
import dev.smelter.config.MergeConfig;
import dev.smelter.config.YamlReader;
import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Fuzzing of what a user hands Smelter: safetensors headers, index files and merge configs, mutated from a seed
 * corpus (bit flips, byte edits, truncation, splices of hostile values). Every input must either parse or fail with
 * Smelter's own exception and a message: no other exception, no hang, no crash. Runs for
 * {@code -Dsmelter.fuzz.seconds} (default 8) per target with a fixed seed ({@code -Dsmelter.fuzz.seed}), so CI
 * repeats the same cases; a failure prints the input to reproduce it.
 */
class ParserFuzzTest {
    @TempDir
    Path dir;

    static final long SECONDS = Long.getLong("smelter.fuzz.seconds", 8);
    static final long SEED = Long.getLong("smelter.fuzz.seed", 20261207);

    /** Values that have broken parsers: huge, negative, fractional numbers, odd dtypes, escapes, nesting. */
    static final String[] SPLICES = {"18446744073709551615", "-1", "9223372036854775807", "1e309", "0.5", "\"F4\"",
        "\"F8_E4M3\"", "[]", "[[]]", "{}", "null", "\"\\u0000\"", "\"..\"", "\"/etc/passwd\"", "\"../../x\"", "[1,2,3]",
        "99999999999", "\"\\ud800\"", "*a", "&a", "!!python/object:os.system", "---", "{{{{", ": :", "\t", "\u00ff"};

    static byte[] mutate(byte[] seed, SplittableRandom r) {
        byte[] b = seed.clone();
        int edits = 1 + r.nextInt(4);
        for (int e = 0; e < edits && b.length > 0; e++) {
            int at = r.nextInt(b.length);
            switch (r.nextInt(6)) {
                case 0 -> b[at] ^= (byte) (1 << r.nextInt(8));
                case 1 -> b[at] = (byte) r.nextInt(256);
                case 2 -> b = java.util.Arrays.copyOf(b, at);  // truncate
                case 3 -> {  // delete a run
                    int n = Math.min(b.length - at, 1 + r.nextInt(16));
                    byte[] c = new byte[b.length - n];
                    System.arraycopy(b, 0, c, 0, at);
                    System.arraycopy(b, at + n, c, at, b.length - at - n);
                    b = c;
                }
                default -> {  // splice a hostile value in
                    byte[] s = SPLICES[r.nextInt(SPLICES.length)].getBytes(StandardCharsets.UTF_8);
                    int n = Math.min(b.length - at, r.nextInt(12));
                    byte[] c = new byte[b.length - n + s.length];
                    System.arraycopy(b, 0, c, 0, at);
                    System.arraycopy(s, 0, c, at, s.length);
                    System.arraycopy(b, at + n, c, at + s.length, b.length - at - n);
                    b = c;
                }
            }
        }
        return b;
    }

    interface Target {
        void run(byte[] input) throws Exception;
    }

    /** Runs {@code target} on mutants of {@code seed} for the time budget; returns how many ran. */
    static int fuzz(byte[] seed, Target target) {
        SplittableRandom r = new SplittableRandom(SEED);
        long end = System.nanoTime() + SECONDS * 1_000_000_000L;
        int runs = 0;
        while (System.nanoTime() < end) {
            byte[] input = mutate(seed, r);
            runs++;
            try {
                target.run(input);
            } catch (CheckpointFormatException | ConfigException e) {
                assertNotNull(e.getMessage(), "an error without a message");
            } catch (IOException e) {
                assertNotNull(e.getMessage(), "an I/O error without a message");
            } catch (Throwable e) {
                fail("input " + runs + " (" + new String(input, StandardCharsets.ISO_8859_1).replaceAll("[^\\x20-\\x7e]", "?")
                        + ") threw " + e, e);
            }
        }
        return runs;
    }

    byte[] seedCheckpoint(Path out, long shardBytes) throws IOException {
        List<CheckpointWriter.TensorSpec> specs = List.of(
                new CheckpointWriter.TensorSpec("model.layers.0.mlp.up_proj.weight", SafetensorsDType.BF16, new long[] {4, 3}),
                new CheckpointWriter.TensorSpec("model.norm.weight", SafetensorsDType.F32, new long[] {3}),
                new CheckpointWriter.TensorSpec("ids", SafetensorsDType.I64, new long[] {2}));
        try (Arena arena = Arena.ofConfined(); CheckpointWriter w = new CheckpointWriter(out, specs, shardBytes,
                Map.of("format", "pt"), false)) {
            for (CheckpointWriter.TensorSpec s : specs) w.write(s.name(), arena.allocate(64).asSlice(0, s.byteSize()));
            w.commit();
        }
        return Files.readAllBytes(out.resolve(shardBytes > 1000 ? Checkpoint.SINGLE : Checkpoint.INDEX));
    }

    /** Opens a checkpoint the way every command does, and reads each tensor. */
    static void openAndRead(Path path) throws IOException {
        try (Checkpoint c = Checkpoint.open(path); Arena arena = Arena.ofConfined()) {
            for (String name : c.tensorNames()) {
                TensorInfo t = c.info(name);
                MemorySegment dst = arena.allocate(Math.max(1, t.byteSize())).asSlice(0, t.byteSize());
                c.read(name, 0, dst);
            }
        }
    }

    @Test
    void safetensorsHeaders() throws IOException {
        byte[] seed = seedCheckpoint(dir.resolve("single"), 1 << 20);
        Path file = dir.resolve("fuzz.safetensors");
        int runs = fuzz(seed, input -> {
            Files.write(file, input);
            openAndRead(file);
        });
        System.out.println("ParserFuzzTest: " + runs + " safetensors files");
    }

    @Test
    void indexFiles() throws IOException {
        Path sharded = dir.resolve("sharded");
        byte[] seed = seedCheckpoint(sharded, 40);
        Path index = sharded.resolve(Checkpoint.INDEX);
        int runs = fuzz(seed, input -> {
            Files.write(index, input);
            openAndRead(sharded);
        });
        System.out.println("ParserFuzzTest: " + runs + " index files");
    }

    @Test
    void multiDocumentConfigs() throws IOException {
        byte[] seed = """
                name: de-fr
                merge_method: linear
                models:
                  - model: expert-de
                    parameters: {weight: 0.5}
                  - model: expert-fr+lora
                    parameters: {weight: 0.5}
                ---
                merge_method: ties
                base_model: base
                models:
                  - model: de-fr@main
                    parameters: {weight: 1, density: 0.5}
                ---
                name: unused
                merge_method: linear
                models: [{model: de-fr, parameters: {weight: 1}}]
                """.getBytes(StandardCharsets.UTF_8);
        Path file = dir.resolve("multi.yml");
        int runs = fuzz(seed, input -> {
            Files.write(file, input);
            dev.smelter.config.MultiConfig m = dev.smelter.config.MultiConfig.load(file);
            for (var d : m.order()) d.yaml();
        });
        System.out.println("ParserFuzzTest: " + runs + " multi-document configs");
    }

    @Test
    void loraAdapterConfigs() throws Exception {
        SplittableRandom r = new SplittableRandom(SEED);
        Path model = LoraAdapterTest.model(r).write(dir.resolve("model/model.safetensors")).getParent();
        Path lora = Files.createDirectories(dir.resolve("lora"));
        String p = "base_model.model.model.layers.0.self_attn.q_proj.";
        new SafetensorsFixture().put(p + "lora_A.weight", SafetensorsFixture.random(dev.smelter.DType.F32, r, 1, 3, 5))
                .put(p + "lora_B.weight", SafetensorsFixture.random(dev.smelter.DType.BF16, r, 1, 7, 3))
                .write(lora.resolve(LoraAdapter.WEIGHTS));
        byte[] seed = """
                {"peft_type": "LORA", "r": 3, "lora_alpha": 6, "use_rslora": false, "fan_in_fan_out": false,
                 "rank_pattern": {"q_proj": 3}, "alpha_pattern": {"q_.*": 2.5}, "target_modules": ["q_proj"]}
                """.getBytes(StandardCharsets.UTF_8);
        int runs = fuzz(seed, input -> {
            Files.write(lora.resolve(LoraAdapter.CONFIG), input);
            try (Checkpoint c = Checkpoint.open(model, lora); Arena arena = Arena.ofConfined()) {
                for (String name : c.tensorNames())
                    c.read(name, 0, arena.allocate(Math.max(1, c.info(name).byteSize())).asSlice(0, c.info(name).byteSize()));
            }
        });
        System.out.println("ParserFuzzTest: " + runs + " adapter configs");
    }

    @Test
    void mergeConfigs() {
        byte[] seed = """
                merge_method: ties
                base_model: &b base
                models:
                  - model: expert-de
                    parameters: {weight: [0.2, 0.8], density: 0.4}
                  - model: expert-fr
                    parameters:
                      weight: [{filter: mlp, value: 0.5}, {value: 0.3}]
                      density: 0.6
                parameters: {normalize: true, lambda: 1.0, int8_mask: true}
                dtype: bfloat16
                smelter: {trim_scope: model, seed: 42, grid: {density: [0.3, 0.5]}}
                """.getBytes(StandardCharsets.UTF_8);
        int runs = fuzz(seed, input -> {
            List<com.fasterxml.jackson.databind.JsonNode> docs = YamlReader.readAll(new String(input, StandardCharsets.UTF_8));
            if (docs.size() == 1) MergeConfig.parse(docs.get(0), dir);
        });
        System.out.println("ParserFuzzTest: " + runs + " configs");
        assertEquals(true, runs > 0);
    }

    @Test
    void sliceConfigs() {
        byte[] seed = """
                merge_method: slerp
                base_model: base
                slices:
                  - sources:
                      - {model: base, layer_range: [0, 2]}
                      - model: expert-de
                        layer_range: [1, 3]
                        parameters: {t: [0.2, 0.8]}
                    parameters: {t: [{filter: mlp, value: 0.5}, {value: 0.3}]}
                  - sources: [{model: base, layer_range: [2, 4]}, {model: expert-fr, layer_range: [0, 2]}]
                    base_model: base
                parameters: {t: 0.5}
                dtype: bfloat16
                smelter: {grid: {t: [0.3, 0.5]}}
                """.getBytes(StandardCharsets.UTF_8);
        int runs = fuzz(seed, input -> {
            List<com.fasterxml.jackson.databind.JsonNode> docs = YamlReader.readAll(new String(input, StandardCharsets.UTF_8));
            if (docs.size() == 1) MergeConfig.parse(docs.get(0), dir);
        });
        System.out.println("ParserFuzzTest: " + runs + " slice configs");
        assertEquals(true, runs > 0);
    }
}
