package dev.smelter.merge;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.smelter.DType;
import dev.smelter.Tensor;
import dev.smelter.cli.CliRun;
import dev.smelter.io.Checkpoint;
import dev.smelter.io.CheckpointWriter;
import dev.smelter.io.SafetensorsDType;
import java.lang.foreign.Arena;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * A model with tied word embeddings stores no {@code lm_head.weight}: merged into a model that has one, its head is its
 * input embedding, as mergekit's tied names read it. Before, the head was left out of the output (a tensor only some
 * models have), and transformers would have initialised it at random.
 */
class TiedEmbeddingsTest {
    @TempDir
    static Path dir;

    @BeforeAll
    static void checkpoints() throws Exception {
        assertEquals(0, CliRun.cli("demo-checkpoints", dir.toString(), "--hidden", "32", "--layers", "2", "--vocab", "61",
                "--dtype", "f32").code());
        withoutHead(dir.resolve("expert-de"), dir.resolve("tied"), true);
        withoutHead(dir.resolve("expert-de"), dir.resolve("untied"), false);
    }

    /** {@code model} without its lm_head, config.json saying tie_word_embeddings {@code tied}. */
    static void withoutHead(Path model, Path out, boolean tied) throws Exception {
        try (Checkpoint c = Checkpoint.open(model); Arena arena = Arena.ofConfined()) {
            List<CheckpointWriter.TensorSpec> specs = new ArrayList<>();
            for (String t : c.tensorNames())
                if (!t.equals("lm_head.weight"))
                    specs.add(new CheckpointWriter.TensorSpec(t, SafetensorsDType.of(DType.F32), c.info(t).shape()));
            try (CheckpointWriter w = new CheckpointWriter(out, specs, 1L << 30, Map.of(), true)) {
                for (CheckpointWriter.TensorSpec s : specs) w.write(s.name(), c.tensor(s.name()).data());
                w.writeFile("config.json", Files.readString(model.resolve("config.json"))
                        .replace("\"tie_word_embeddings\": false", "\"tie_word_embeddings\": " + tied).getBytes());
                w.commit();
            }
        }
    }

    static double[] values(Checkpoint c, String name) {
        Tensor t = c.tensor(name);
        double[] v = new double[(int) t.count()];
        for (int i = 0; i < v.length; i++) v[i] = t.getFloat(i);
        return v;
    }

    @Test
    void aTiedModelsHeadIsItsInputEmbedding() throws Exception {
        Path cfg = dir.resolve("linear.yml"), out = dir.resolve("linear-out");
        Files.writeString(cfg, """
                merge_method: linear
                models:
                  - {model: base, parameters: {weight: 0.25}}
                  - {model: tied, parameters: {weight: 0.75}}
                dtype: float32
                """);
        CliRun.Run r = CliRun.cli("merge", "--device", "cpu", "-q", cfg.toString(), out.toString());
        assertEquals(0, r.code(), r.err());
        assertTrue(r.err().contains("ties its output head to its input embedding"), r.err());
        try (Checkpoint o = Checkpoint.open(out); Checkpoint base = Checkpoint.open(dir.resolve("base"));
                Checkpoint tied = Checkpoint.open(dir.resolve("tied"))) {
            assertTrue(o.contains("lm_head.weight"), "the output keeps the base's head");
            double[] b = values(base, "lm_head.weight"), e = values(tied, "model.embed_tokens.weight");
            double[] got = values(o, "lm_head.weight");
            for (int i = 0; i < got.length; i++) {
                double expect = 0.25 * b[i] + 0.75 * e[i];
                double scale = Math.abs(0.25 * b[i]) + Math.abs(0.75 * e[i]);  // f32 products and sum: ulps of the terms
                assertEquals(expect, got[i], 0x1p-22 * scale, "lm_head[" + i + "]");
            }
            assertNotEquals(values(base, "model.embed_tokens.weight")[0], got[0], "not the base's embedding");
        }
    }

    @Test
    void aModelThatSaysItIsUntiedStillMissesItsHead() throws Exception {
        Path cfg = dir.resolve("untied.yml"), out = dir.resolve("untied-out");
        Files.writeString(cfg, """
                merge_method: linear
                models:
                  - {model: base, parameters: {weight: 0.5}}
                  - {model: untied, parameters: {weight: 0.5}}
                """);
        CliRun.Run r = CliRun.cli("merge", "--device", "cpu", "-q", cfg.toString(), out.toString());
        assertTrue(!r.err().contains("ties its output head"), r.err());
        assertTrue(r.err().contains("lm_head.weight"), "the missing head is named: " + r.err());
    }
}
