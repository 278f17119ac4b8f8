package dev.smelter;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.smelter.cli.CliRun;
import dev.smelter.io.Checkpoint;
import dev.smelter.io.LoraAdapter;
import dev.smelter.io.SafetensorsFixture;
import dev.smelter.io.TensorInfo;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;
import java.util.stream.Stream;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** Inputs of mergekit configs beyond local safetensors folders: multi-document configs and LoRA adapters. */
class CliInputsTest {
    @TempDir
    static Path dir;

    @BeforeAll
    static void checkpoints() {
        assertEquals(0, CliRun.cli("demo-checkpoints", dir.toString(), "--hidden", "24", "--layers", "2", "--vocab", "37",
                "--dtype", "f32").code());
    }

    static CliRun.Run merge(String... args) {
        List<String> a = new ArrayList<>(List.of("merge", "--device", "cpu", "-q"));
        a.addAll(List.of(args));
        return CliRun.cli(a.toArray(String[]::new));
    }

    static Path config(String name, String text) throws Exception {
        return Files.writeString(dir.resolve(name), text);
    }

    static float[] read(Path model, String tensor) throws Exception {
        try (Checkpoint c = Checkpoint.open(model); Arena arena = Arena.ofConfined()) {
            TensorInfo t = c.info(tensor);
            MemorySegment m = arena.allocate(t.byteSize(), 8);
            c.read(tensor, 0, m);
            return new Tensor(m, t.elementCount(), DType.F32, Tensor.Memory.HOST).toFloatArray();
        }
    }

    /** Within a few f32 roundings of the inputs' size ({@code scale}: the largest input magnitude). */
    static void assertClose(double[] want, float[] got, String what) {
        double scale = 0;
        for (double w : want) scale = Math.max(scale, Math.abs(w));
        assertEquals(want.length, got.length);
        for (int i = 0; i < want.length; i++)
            assertTrue(Math.abs(got[i] - want[i]) <= 4e-7 * Math.abs(want[i]) + 2e-7 * scale, what + "[" + i + "]: " + got[i]
                    + " vs " + want[i]);
    }

    static List<String> leftovers() throws Exception {
        try (Stream<Path> s = Files.list(dir)) {
            return s.map(p -> p.getFileName().toString()).filter(n -> n.startsWith(".")).toList();
        }
    }

    static final String Q = "model.layers.1.self_attn.q_proj.weight";

    @Test
    void multiDocumentConfigRunsIntermediatesInOrder() throws Exception {
        // The final merge first in the file: the named ones it uses run before it, in dependency order.
        Path cfg = config("multi.yml", """
                merge_method: linear
                models:
                  - model: de-fr-sw
                    parameters: {weight: 0.25}
                  - model: base
                    parameters: {weight: 0.75}
                dtype: float32
                ---
                name: de-fr-sw
                merge_method: linear
                models:
                  - model: de-fr
                    parameters: {weight: 0.5}
                  - model: expert-sw
                    parameters: {weight: 0.5}
                dtype: float32
                ---
                name: de-fr
                merge_method: task_arithmetic
                base_model: base
                models:
                  - model: expert-de
                    parameters: {weight: 0.6}
                  - model: expert-fr
                    parameters: {weight: 0.4}
                dtype: float32
                """);
        CliRun.Run r = merge(cfg.toString(), dir.resolve("multi-out").toString(), "--dry-run");
        assertEquals(0, r.code(), r.err());
        assertTrue(r.err().contains("step 1/3: document 3 (name: de-fr) -> intermediate de-fr")
                && r.err().contains("(uses de-fr: planned once they are merged)"), r.err());
        assertFalse(Files.exists(dir.resolve("multi-out")));
        assertEquals(List.of(), leftovers());
        r = merge(cfg.toString(), dir.resolve("multi-out").toString());
        assertEquals(0, r.code(), r.err());
        assertTrue(r.err().indexOf("step 1/3: document 3 (name: de-fr)") < r.err().indexOf("step 2/3: document 2")
                && r.err().contains("step 3/3: document 1"), r.err());
        for (String t : List.of(Q, "model.embed_tokens.weight", "model.norm.weight")) {
            float[] base = read(dir.resolve("base"), t), de = read(dir.resolve("expert-de"), t),
                    fr = read(dir.resolve("expert-fr"), t), sw = read(dir.resolve("expert-sw"), t);
            double[] want = new double[base.length];
            for (int i = 0; i < want.length; i++) {
                double deFr = base[i] + 0.6 * ((double) de[i] - base[i]) + 0.4 * ((double) fr[i] - base[i]);
                want[i] = 0.25 * (0.5 * deFr + 0.5 * sw[i]) + 0.75 * base[i];
            }
            assertClose(want, read(dir.resolve("multi-out"), t), t);
        }
        assertEquals(List.of(), leftovers(), "the intermediates are gone");
        String card = Files.readString(dir.resolve("multi-out/mergekit_config.yml"));
        assertTrue(card.contains("de-fr-sw") && !card.contains("name:"), card);
    }

    @Test
    void multiDocumentMistakesFailBeforeAnyMerge() throws Exception {
        String a = """
                name: a
                merge_method: linear
                models:
                  - model: %s
                    parameters: {weight: 1}
                """;
        // A mistake in the last document: exit 2 before the first merge runs.
        Path cfg = config("bad-last.yml", a.formatted("expert-de") + "---\nmerge_method: linear\nmodels:\n"
                + "  - model: a\n    parameters: {weight: 1, densty: 0.5}\n");
        CliRun.Run r = merge(cfg.toString(), dir.resolve("bad").toString());
        assertEquals(2, r.code(), r.err());
        assertTrue(r.err().contains("document 2") && r.err().contains("densty"), r.err());
        assertFalse(r.err().contains("step 1"), r.err());
        // A cycle, two unnamed documents, a duplicate name.
        cfg = config("cycle.yml", a.formatted("b") + "---\n" + a.formatted("a").replace("name: a", "name: b")
                + "---\nmerge_method: linear\nmodels:\n  - model: a\n    parameters: {weight: 1}\n");
        r = merge(cfg.toString(), dir.resolve("bad").toString());
        assertEquals(2, r.code(), r.err());
        assertTrue(r.err().contains("cycle: a -> b -> a"), r.err());
        cfg = config("two.yml", a.formatted("expert-de").replace("name: a\n", "") + "---\n"
                + a.formatted("expert-fr").replace("name: a\n", ""));
        r = merge(cfg.toString(), dir.resolve("bad").toString());
        assertEquals(2, r.code(), r.err());
        assertTrue(r.err().contains("document 2 has no name, and neither has document 1"), r.err());
        cfg = config("dup.yml", a.formatted("expert-de") + "---\n" + a.formatted("expert-fr"));
        r = merge(cfg.toString(), dir.resolve("bad").toString());
        assertEquals(2, r.code(), r.err());
        assertTrue(r.err().contains("name 'a' is also document 1"), r.err());
        assertFalse(Files.exists(dir.resolve("bad")));
        assertEquals(List.of(), leftovers());
        // smelter sweep takes one document and says where multi-document configs run.
        r = CliRun.cli("sweep", cfg.toString(), "--grid", "weight=0.5,1", "-o", dir.resolve("bad").toString());
        assertEquals(2, r.code(), r.err());
        assertTrue(r.err().contains("smelter merge runs them"), r.err());
    }

    /** Puts the files of {@code model} into {@code hub} as huggingface_hub caches them: blobs, a snapshot of links, refs. */
    static void cache(Path hub, String repo, String ref, String commit, Path model) throws Exception {
        Path folder = hub.resolve("models--" + repo.replace("/", "--"));
        Path snapshot = Files.createDirectories(folder.resolve("snapshots").resolve(commit));
        Files.createDirectories(folder.resolve("blobs"));
        try (Stream<Path> files = Files.list(model)) {
            for (Path f : files.toList()) {
                Path blob = Files.copy(f, folder.resolve("blobs").resolve(commit + "-" + f.getFileName()));
                Files.createSymbolicLink(snapshot.resolve(f.getFileName()), snapshot.relativize(blob));
            }
        }
        Path r = folder.resolve("refs").resolve(ref);
        Files.createDirectories(r.getParent());
        Files.writeString(r, commit);
    }

    @Test
    void hubIdsFromTheHuggingFaceCacheOfTheHome() throws Exception {
        for (String v : List.of("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME"))
            org.junit.jupiter.api.Assumptions.assumeTrue(System.getenv(v) == null, v + " is set: the cache is not under the home");
        Path home = Files.createDirectories(dir.resolve("home"));
        Path hub = home.resolve(".cache/huggingface/hub");
        String commit = "0123456789abcdef0123456789abcdef01234567";
        cache(hub, "org/expert", "v1", commit, dir.resolve("expert-de"));
        cache(hub, "org/base", "main", commit, dir.resolve("base"));
        String old = System.getProperty("user.home");
        System.setProperty("user.home", home.toString());
        try {
            Path cfg = config("hub.yml", """
                    merge_method: task_arithmetic
                    base_model: org/base
                    models:
                      - model: org/expert@v1
                        parameters: {weight: 0.5}
                    dtype: float32
                    """);
            CliRun.Run r = merge(cfg.toString(), dir.resolve("hub-out").toString());
            assertEquals(0, r.code(), r.err());
            float[] base = read(dir.resolve("base"), Q), de = read(dir.resolve("expert-de"), Q);
            double[] want = new double[base.length];
            for (int i = 0; i < want.length; i++) want[i] = base[i] + 0.5 * ((double) de[i] - base[i]);
            assertClose(want, read(dir.resolve("hub-out"), Q), Q);
            String card = Files.readString(dir.resolve("hub-out/README.md"));
            assertTrue(card.contains("- org/base\n- org/expert\n"), card);
            r = merge(config("hub-missing.yml", Files.readString(cfg).replace("org/expert@v1", "org/expert@v2")).toString(),
                    dir.resolve("hub-bad").toString());
            assertEquals(2, r.code(), r.err());
            assertTrue(r.err().contains(hub.resolve("models--org--expert/refs/v2") + " does not exist")
                    && r.err().contains("huggingface-cli download org/expert --revision v2"), r.err());
        } finally {
            System.setProperty("user.home", old);
        }
    }

    @Test
    void aHubSnapshotWithoutWeightsIsRefusedWithTheDownloadCommand() throws Exception {
        for (String v : List.of("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME"))
            org.junit.jupiter.api.Assumptions.assumeTrue(System.getenv(v) == null, v + " is set: the cache is not under the home");
        // A download of some files only (huggingface-cli download org/partial config.json): no weights in the snapshot.
        Path home = Files.createDirectories(dir.resolve("home-partial"));
        Path partial = Files.createDirectories(dir.resolve("partial-files"));
        Files.copy(dir.resolve("expert-de/config.json"), partial.resolve("config.json"));
        cache(home.resolve(".cache/huggingface/hub"), "org/partial", "main", "89abcdef0123456789abcdef0123456789abcdef", partial);
        String old = System.getProperty("user.home");
        System.setProperty("user.home", home.toString());
        try {
            CliRun.Run r = merge(config("partial.yml", """
                    merge_method: linear
                    models:
                      - model: org/partial
                        parameters: {weight: 0.5}
                      - model: expert-de
                        parameters: {weight: 0.5}
                    """).toString(), dir.resolve("partial-out").toString());
            assertEquals(2, r.code(), r.err());
            assertTrue(r.err().contains("models[0].model 'org/partial'") && r.err().contains("without weights")
                    && r.err().contains("huggingface-cli download org/partial`"), r.err());
            assertFalse(Files.exists(dir.resolve("partial-out")));
        } finally {
            System.setProperty("user.home", old);
        }
    }

    @Test
    void pytorchBinCheckpointsMergeAsTheirSafetensors() throws Exception {
        // expert-fr as torch.save writes a state dict: every tensor its own FloatStorage.
        Path bin = Files.createDirectories(dir.resolve("expert-fr-bin"));
        var pickle = new dev.smelter.io.TorchCheckpointTest.Pickle().op(0x80, 2);
        pickle.global("collections", "OrderedDict").op(')', 'R', 'q', pickle.memo++, '(');
        List<byte[]> storages = new ArrayList<>();
        try (Checkpoint c = Checkpoint.open(dir.resolve("expert-fr"))) {
            for (String t : c.tensorNames()) {
                TensorInfo info = c.info(t);
                long[] shape = info.shape(), stride = new long[shape.length];
                for (int i = shape.length - 1, s = 1; i >= 0; s *= (int) shape[i], i--) stride[i] = s;
                pickle.tensor(t, "FloatStorage", storages.size(), info.elementCount(), 0, shape, stride);
                storages.add(c.data(t).toArray(java.lang.foreign.ValueLayout.JAVA_BYTE));
            }
        }
        pickle.op('u', '.');
        Files.write(bin.resolve("pytorch_model.bin"), dev.smelter.io.TorchCheckpointTest.torchZip("archive", pickle.bytes(), storages));
        Files.copy(dir.resolve("expert-fr/config.json"), bin.resolve("config.json"));
        String yaml = """
                merge_method: ties
                base_model: base
                models:
                  - model: expert-de
                    parameters: {weight: 0.5, density: 0.5}
                  - model: FR
                    parameters: {weight: 0.5, density: 0.5}
                dtype: float32
                """;
        CliRun.Run r = merge(config("st.yml", yaml.replace("FR", "expert-fr")).toString(), dir.resolve("st-out").toString());
        assertEquals(0, r.code(), r.err());
        r = merge(config("bin.yml", yaml.replace("FR", "expert-fr-bin")).toString(), dir.resolve("bin-out").toString());
        assertEquals(0, r.code(), r.err());
        try (Checkpoint a = Checkpoint.open(dir.resolve("st-out")); Checkpoint b = Checkpoint.open(dir.resolve("bin-out"))) {
            assertEquals(a.tensorNames(), b.tensorNames());
            for (String t : a.tensorNames()) assertEquals(-1, a.data(t).mismatch(b.data(t)), t);
        }
    }

    @Test
    void loraAdaptersAsModelPlusLora() throws Exception {
        SplittableRandom rnd = new SplittableRandom(5);
        SafetensorsFixture.T a = SafetensorsFixture.random(DType.F32, rnd, 0.05, 4, 24);
        SafetensorsFixture.T b = SafetensorsFixture.random(DType.BF16, rnd, 0.05, 24, 4);
        Path lora = dir.resolve("lora");
        Files.createDirectories(lora);
        Files.writeString(lora.resolve(LoraAdapter.CONFIG), """
                {"peft_type": "LORA", "r": 4, "lora_alpha": 16, "base_model_name_or_path": "org/base",
                 "target_modules": ["q_proj"]}""");
        new SafetensorsFixture().put("base_model.model." + Q.replace(".weight", ".lora_A.weight"), a)
                .put("base_model.model." + Q.replace(".weight", ".lora_B.weight"), b).write(lora.resolve(LoraAdapter.WEIGHTS));
        Path cfg = config("lora.yml", """
                merge_method: linear
                models:
                  - model: base+lora
                    parameters: {weight: 0.5}
                  - model: expert-de
                    parameters: {weight: 0.5}
                dtype: float32
                """);
        CliRun.Run r = CliRun.cli("merge", "--device", "cpu", cfg.toString(), dir.resolve("lora-out").toString(),
                "--lora-merge-cache", dir.resolve("cache").toString(), "--lora-merge-dtype", "bfloat16");
        assertEquals(0, r.code(), r.err());
        assertTrue(r.err().contains("note: --lora-merge-cache and --lora-merge-dtype change nothing"), r.err());
        assertFalse(Files.exists(dir.resolve("cache")));
        float[] base = read(dir.resolve("base"), Q), de = read(dir.resolve("expert-de"), Q);
        double[] want = new double[base.length];
        for (int o = 0; o < 24; o++)
            for (int i = 0; i < 24; i++) {
                double d = 0;
                for (int k = 0; k < 4; k++) d += (double) b.values()[o * 4 + k] * a.values()[k * 24 + i];
                want[o * 24 + i] = 0.5 * (base[o * 24 + i] + 4.0 * d) + 0.5 * de[o * 24 + i];
            }
        assertClose(want, read(dir.resolve("lora-out"), Q), Q);
        // smelter sweep reads the adapted weights too: its one point equals the merge.
        Path sweepOut = dir.resolve("lora-sweep");
        r = CliRun.cli("sweep", "--device", "cpu", "-q", cfg.toString(), "--grid", "weight=0.5", "-o", sweepOut.toString(),
                "--no-stats");
        assertEquals(0, r.code(), r.err());
        Path point;
        try (Stream<Path> s = Files.list(sweepOut)) {
            point = s.filter(Files::isDirectory).findFirst().orElseThrow();
        }
        assertEquals(java.util.Arrays.toString(read(dir.resolve("lora-out"), Q)), java.util.Arrays.toString(read(point, Q)));
        // Tensors the adapter does not touch are the plain average.
        String k = "model.layers.1.self_attn.k_proj.weight";
        float[] bk = read(dir.resolve("base"), k), dk = read(dir.resolve("expert-de"), k), got = read(dir.resolve("lora-out"), k);
        for (int i = 0; i < got.length; i++) assertEquals((float) (0.5 * bk[i] + 0.5 * dk[i]), got[i], 1e-7f);

        // The adapter folder alone is not a model: the message says what to write.
        r = merge(config("lora-alone.yml", Files.readString(cfg).replace("base+lora", "lora")).toString(),
                dir.resolve("lora-bad").toString());
        assertEquals(2, r.code(), r.err());
        assertTrue(r.err().contains("is a PEFT adapter, not a model") && r.err().contains("'org/base+lora'"), r.err());
        // A second '+', and a LoRA part that is no adapter.
        r = merge(config("lora-plus.yml", Files.readString(cfg).replace("base+lora", "base+lora+lora")).toString(),
                dir.resolve("lora-bad").toString());
        assertEquals(2, r.code(), r.err());
        assertTrue(r.err().contains("(one '+')"), r.err());
        r = merge(config("lora-none.yml", Files.readString(cfg).replace("base+lora", "base+expert-fr")).toString(),
                dir.resolve("lora-bad").toString());
        assertEquals(2, r.code(), r.err());
        assertTrue(r.err().contains("is not a PEFT LoRA adapter"), r.err());
        // An adapter for another model: the merge fails before writing, naming the tensor.
        Path wrong = Files.createDirectories(dir.resolve("lora-wrong"));
        Files.copy(lora.resolve(LoraAdapter.CONFIG), wrong.resolve(LoraAdapter.CONFIG));
        new SafetensorsFixture().put("base_model.model." + Q.replace(".weight", ".lora_A.weight"), a)
                .put("base_model.model." + Q.replace(".weight", ".lora_B.weight"), SafetensorsFixture.random(DType.F32, rnd, 1, 32, 4))
                .write(wrong.resolve(LoraAdapter.WEIGHTS));
        r = merge(config("lora-wrong.yml", Files.readString(cfg).replace("base+lora", "base+lora-wrong")).toString(),
                dir.resolve("lora-bad").toString());
        assertEquals(1, r.code(), r.err());
        assertTrue(r.err().contains(Q.replace(".weight", ".lora_A.weight")) && r.err().contains("B A [32, 24]")
                && r.err().contains("is [24, 24]"), r.err());
        assertFalse(Files.exists(dir.resolve("lora-bad")));
    }
}
