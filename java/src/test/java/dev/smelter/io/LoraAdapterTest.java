package dev.smelter.io;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.smelter.DType;
import dev.smelter.Tensor;
import dev.smelter.io.SafetensorsFixture.T;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** PEFT LoRA adapters applied as tensors are read, against W + s B A formed in double here. */
class LoraAdapterTest {
    @TempDir
    Path dir;

    static final String Q = "model.layers.0.self_attn.q_proj.weight", DOWN = "model.layers.0.mlp.down_proj.weight",
            EMBED = "model.embed_tokens.weight", NORM = "model.norm.weight", HEAD = "lm_head.weight";

    /** A model: q_proj f32 [7, 5], down_proj bf16 [5, 9], embeddings f16 [11, 5], a norm, a head. */
    static SafetensorsFixture model(SplittableRandom r) {
        return new SafetensorsFixture()
                .put(EMBED, SafetensorsFixture.random(DType.F16, r, 1, 11, 5))
                .put(Q, SafetensorsFixture.random(DType.F32, r, 1, 7, 5))
                .put(DOWN, SafetensorsFixture.random(DType.BF16, r, 1, 5, 9))
                .put(NORM, SafetensorsFixture.random(DType.F32, r, 1, 5))
                .put(HEAD, SafetensorsFixture.random(DType.F32, r, 1, 11, 5));
    }

    static final String P = "base_model.model.";

    static Path adapter(Path dir, String config, SafetensorsFixture tensors) throws Exception {
        Files.createDirectories(dir);
        Files.writeString(dir.resolve(LoraAdapter.CONFIG), config);
        tensors.write(dir.resolve(LoraAdapter.WEIGHTS));
        return dir;
    }

    /** W + s B A (or its transpose), in double. */
    static double[] reference(T w, T a, T b, double s, boolean transposed) {
        int r = (int) a.shape()[0];
        int rows = (int) w.shape()[0], cols = (int) w.shape()[1];
        double[] out = new double[rows * cols];
        for (int i = 0; i < rows; i++)
            for (int j = 0; j < cols; j++) {
                double d = 0;
                for (int k = 0; k < r; k++)
                    d += transposed ? (double) b.values()[j * r + k] * a.values()[k * rows + i]
                            : (double) b.values()[i * r + k] * a.values()[k * cols + j];
                out[i * cols + j] = w.values()[i * cols + j] + s * d;
            }
        return out;
    }

    static float[] read(Checkpoint c, String name) throws Exception {
        TensorInfo t = c.info(name);
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment m = arena.allocate(t.byteSize(), 8);
            c.read(name, 0, m);
            return new Tensor(m, t.elementCount(), t.dtype().toMergeDType().orElseThrow(), Tensor.Memory.HOST).toFloatArray();
        }
    }

    /** Each value is {@code want} rounded once to the dtype (within half a unit in its last place). */
    static void assertRounded(double[] want, float[] got, DType dtype, String what) {
        assertEquals(want.length, got.length, what);
        int bitsLess = dtype == DType.F32 ? 0 : dtype == DType.BF16 ? 16 : 13;
        for (int i = 0; i < want.length; i++) {
            double halfUlp = 0.5 * Math.ulp((float) want[i]) * (1 << bitsLess) * (1 + 1e-6);
            assertTrue(Math.abs(got[i] - want[i]) <= halfUlp, what + "[" + i + "]: " + got[i] + " vs " + want[i]);
        }
        // The delta is there: not W unchanged.
    }

    @Test
    void appliesWPlusScaledBATensorByTensor() throws Exception {
        SplittableRandom r = new SplittableRandom(11);
        SafetensorsFixture m = model(r);
        Path model = m.write(dir.resolve("model/model.safetensors")).getParent();
        T qa = SafetensorsFixture.random(DType.F32, r, 0.5, 3, 5), qb = SafetensorsFixture.random(DType.F32, r, 0.5, 7, 3);
        T da = SafetensorsFixture.random(DType.BF16, r, 0.5, 3, 9), db = SafetensorsFixture.random(DType.BF16, r, 0.5, 5, 3);
        T ea = SafetensorsFixture.random(DType.F32, r, 0.5, 3, 11), eb = SafetensorsFixture.random(DType.F32, r, 0.5, 5, 3);
        T head = SafetensorsFixture.random(DType.F32, r, 1, 11, 5);
        Path lora = adapter(dir.resolve("lora"), """
                {"peft_type": "LORA", "r": 3, "lora_alpha": 6, "target_modules": ["q_proj", "down_proj", "embed_tokens"],
                 "base_model_name_or_path": "org/base"}""", new SafetensorsFixture()
                .put(P + "model.layers.0.self_attn.q_proj.lora_A.weight", qa)
                .put(P + "model.layers.0.self_attn.q_proj.lora_B.weight", qb)
                .put(P + "model.layers.0.mlp.down_proj.lora_A.weight", da)
                .put(P + "model.layers.0.mlp.down_proj.lora_B.weight", db)
                .put(P + "model.embed_tokens.lora_embedding_A", ea)
                .put(P + "model.embed_tokens.lora_embedding_B", eb)
                .put(P + HEAD, head));
        T q = tensor(m, Q), down = tensor(m, DOWN), embed = tensor(m, EMBED), norm = tensor(m, NORM);
        try (Checkpoint c = Checkpoint.open(model, lora)) {
            assertEquals(2.0, c.lora().scale(Q));  // lora_alpha / r
            assertRounded(reference(q, qa, qb, 2, false), read(c, Q), DType.F32, Q);
            assertRounded(reference(down, da, db, 2, false), read(c, DOWN), DType.BF16, DOWN);
            assertRounded(reference(embed, ea, eb, 2, true), read(c, EMBED), DType.F16, EMBED);
            assertArrayEquals(norm.values(), read(c, NORM), "not adapted");
            assertArrayEquals(head.values(), read(c, HEAD), "replaced whole (modules_to_save)");
            assertTrue(c.adapted(Q) && !c.adapted(NORM));
            double moved = 0;
            float[] got = read(c, Q);
            for (int i = 0; i < got.length; i++) moved = Math.max(moved, Math.abs(got[i] - q.values()[i]));
            assertTrue(moved > 0.1, "the delta is added: " + moved);
            // A read of the first rows (a vocabulary-limited merge) is the whole read's prefix.
            float[] whole = read(c, EMBED);
            try (Arena arena = Arena.ofConfined()) {
                MemorySegment part = arena.allocate(4L * 5 * 2, 8);
                c.read(EMBED, 0, part);
                float[] p = new Tensor(part, 20, DType.F16, Tensor.Memory.HOST).toFloatArray();
                for (int i = 0; i < 20; i++) assertEquals(whole[i], p[i], "prefix " + i);
                MemorySegment tail = arena.allocate(3L * 2, 8);
                c.read(EMBED, 2L * 17, tail);  // elements 17..19: the middle of row 3
                float[] t = new Tensor(tail, 3, DType.F16, Tensor.Memory.HOST).toFloatArray();
                for (int i = 0; i < 3; i++) assertEquals(whole[17 + i], t[i], "element " + (17 + i));
            }
        }
    }

    @Test
    void rsloraFanInFanOutAndRankPattern() throws Exception {
        SplittableRandom r = new SplittableRandom(12);
        // GPT-2 style Conv1D: the weight is stored [in, out].
        T w = SafetensorsFixture.random(DType.F32, r, 1, 6, 10), w2 = SafetensorsFixture.random(DType.F32, r, 1, 6, 6);
        Path model = new SafetensorsFixture().put("h.0.attn.c_attn.weight", w).put("h.0.attn.c_proj.weight", w2)
                .write(dir.resolve("gpt/model.safetensors")).getParent();
        T a = SafetensorsFixture.random(DType.F32, r, 0.5, 4, 6), b = SafetensorsFixture.random(DType.F32, r, 0.5, 10, 4);
        T a2 = SafetensorsFixture.random(DType.F32, r, 0.5, 2, 6), b2 = SafetensorsFixture.random(DType.F32, r, 0.5, 6, 2);
        Path lora = adapter(dir.resolve("gpt-lora"), """
                {"r": 4, "lora_alpha": 8, "use_rslora": true, "fan_in_fan_out": true,
                 "rank_pattern": {"c_proj": 2}, "alpha_pattern": {"h\\\\.0\\\\.attn\\\\.c_proj": 3}}""", new SafetensorsFixture()
                .put(P + "h.0.attn.c_attn.lora_A.weight", a).put(P + "h.0.attn.c_attn.lora_B.weight", b)
                .put(P + "h.0.attn.c_proj.lora_A.weight", a2).put(P + "h.0.attn.c_proj.lora_B.weight", b2));
        try (Checkpoint c = Checkpoint.open(model, lora)) {
            assertEquals(8 / Math.sqrt(4), c.lora().scale("h.0.attn.c_attn.weight"));
            assertEquals(3 / Math.sqrt(2), c.lora().scale("h.0.attn.c_proj.weight"));
            assertRounded(reference(w, a, b, 4, true), read(c, "h.0.attn.c_attn.weight"), DType.F32, "c_attn");
            assertRounded(reference(w2, a2, b2, 3 / Math.sqrt(2), true), read(c, "h.0.attn.c_proj.weight"), DType.F32, "c_proj");
        }
    }

    @Test
    void badAdaptersNameTheTensor() throws Exception {
        SplittableRandom r = new SplittableRandom(13);
        Path model = model(r).write(dir.resolve("model/model.safetensors")).getParent();
        String cfg = "{\"r\": 3, \"lora_alpha\": 6}";
        String a = P + "model.layers.0.self_attn.q_proj.lora_A.weight", b = P + "model.layers.0.self_attn.q_proj.lora_B.weight";
        // B's rows are not q_proj's output size.
        Path bad = adapter(dir.resolve("shape"), cfg, new SafetensorsFixture()
                .put(a, SafetensorsFixture.random(DType.F32, r, 1, 3, 5)).put(b, SafetensorsFixture.random(DType.F32, r, 1, 8, 3)));
        var e = assertThrows(CheckpointFormatException.class, () -> Checkpoint.open(model, bad).close());
        assertTrue(e.getMessage().contains(a) && e.getMessage().contains("B A [8, 5]")
                && e.getMessage().contains(Q + " is [7, 5]"), e.getMessage());
        // lora_B missing.
        Path half = adapter(dir.resolve("half"), cfg, new SafetensorsFixture().put(a, SafetensorsFixture.random(DType.F32, r, 1, 3, 5)));
        e = assertThrows(CheckpointFormatException.class, () -> Checkpoint.open(model, half).close());
        assertTrue(e.getMessage().contains(a) && e.getMessage().contains("no matching lora_B"), e.getMessage());
        // A module the model does not have.
        Path other = adapter(dir.resolve("other"), cfg, new SafetensorsFixture()
                .put(P + "model.layers.0.self_attn.k_proj.lora_A.weight", SafetensorsFixture.random(DType.F32, r, 1, 3, 5))
                .put(P + "model.layers.0.self_attn.k_proj.lora_B.weight", SafetensorsFixture.random(DType.F32, r, 1, 7, 3)));
        e = assertThrows(CheckpointFormatException.class, () -> Checkpoint.open(model, other).close());
        assertTrue(e.getMessage().contains("k_proj.lora_A.weight") && e.getMessage().contains("adapts "
                + "model.layers.0.self_attn.k_proj.weight, which") && e.getMessage().contains("does not have"), e.getMessage());
        // A rank other than the config's r.
        Path rank = adapter(dir.resolve("rank"), cfg, new SafetensorsFixture()
                .put(a, SafetensorsFixture.random(DType.F32, r, 1, 2, 5)).put(b, SafetensorsFixture.random(DType.F32, r, 1, 7, 2)));
        e = assertThrows(CheckpointFormatException.class, () -> Checkpoint.open(model, rank).close());
        assertTrue(e.getMessage().contains(a) && e.getMessage().contains("r = 3"), e.getMessage());
        // DoRA and other PEFT types.
        Path dora = adapter(dir.resolve("dora"), "{\"r\": 3, \"use_dora\": true}", new SafetensorsFixture()
                .put(a, SafetensorsFixture.random(DType.F32, r, 1, 3, 5)));
        e = assertThrows(CheckpointFormatException.class, () -> Checkpoint.open(model, dora).close());
        assertTrue(e.getMessage().contains("DoRA"), e.getMessage());
        Path ia3 = adapter(dir.resolve("ia3"), "{\"peft_type\": \"IA3\"}", new SafetensorsFixture()
                .put(a, SafetensorsFixture.random(DType.F32, r, 1, 3, 5)));
        e = assertThrows(CheckpointFormatException.class, () -> Checkpoint.open(model, ia3).close());
        assertTrue(e.getMessage().contains("peft_type is IA3"), e.getMessage());
    }

    static T tensor(SafetensorsFixture m, String name) {
        return m.get(name);
    }
}
