package dev.smelter;

import dev.smelter.merge.TensorSpecs;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.smelter.cli.CliRun;
import dev.smelter.cli.SmelterCli;
import dev.smelter.config.MergeConfig;
import dev.smelter.methods.MergeMethods;
import dev.smelter.config.TensorNames;
import dev.smelter.io.Checkpoint;
import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.stream.Stream;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** `smelter merge` end to end on generated multi-shard checkpoints, checked against the float64 reference. */
class CliMergeTest {
    @TempDir
    static Path dir;

    @BeforeAll
    static void checkpoints() {
        assertEquals(0, SmelterCli.run("demo-checkpoints", dir.toString(), "--hidden", "64", "--layers", "3", "--vocab", "97"));
    }

    static int merge(String... args) {
        List<String> a = new ArrayList<>(List.of("merge", "--device", "cpu", "-q"));
        a.addAll(List.of(args));
        return SmelterCli.run(a.toArray(String[]::new));
    }

    /** Every merged tensor equals the reference for its resolved spec. */
    static void assertMatchesReference(Path configFile, Path out, boolean modelWide) throws Exception {
        MergeConfig cfg = MergeConfig.load(configFile);
        try (Checkpoint base = Checkpoint.open(cfg.baseModel()); Checkpoint merged = Checkpoint.open(out)) {
            List<Checkpoint> models = new ArrayList<>();
            for (MergeConfig.ModelEntry m : cfg.models()) models.add(Checkpoint.open(m.path()));
            int layers = 0;
            for (String n : base.tensorNames()) layers = Math.max(layers, TensorNames.layerIndex(n) + 1);
            int[] thresholds = modelWide ? globalThresholds(cfg, base, models, layers) : null;
            assertEquals(base.tensorNames().size(), merged.tensorNames().size());
            for (String name : base.tensorNames()) {
                MergeSpec spec = TensorSpecs.spec(cfg, name, TensorNames.layerIndex(name), layers);
                if (thresholds != null) spec = spec.toBuilder().thresholds(thresholds).build();
                float[][] xs = models.stream().map(m -> m.tensor(name).toFloatArray()).toArray(float[][]::new);
                var ref = Float64Reference.merge(spec, base.tensor(name).toFloatArray(), xs, DType.BF16);
                assertNull(Float64Reference.compare(ref, merged.tensor(name)), name);
            }
            for (Checkpoint m : models) m.close();
        }
        assertTrue(Files.isRegularFile(out.resolve("config.json")), "config.json copied");
    }

    static int[] globalThresholds(MergeConfig cfg, Checkpoint base, List<Checkpoint> models, int layers) {
        return globalThresholds(cfg, base, models, layers, DType.BF16);
    }

    /** Model-wide thresholds: the k-th largest key (of this precision) of each model's deltas over every tensor. */
    static int[] globalThresholds(MergeConfig cfg, Checkpoint base, List<Checkpoint> models, int layers, DType keys) {
        int[] t = new int[models.size()];
        for (int i = 0; i < models.size(); i++) {
            List<Long> found = new ArrayList<>();
            for (String name : base.tensorNames()) {
                float[] b = base.tensor(name).toFloatArray(), x = models.get(i).tensor(name).toFloatArray();
                for (int j = 0; j < b.length; j++) found.add(Float64Reference.key(x[j] - b[j], keys));
            }
            long[] all = found.stream().mapToLong(Long::longValue).toArray();
            String first = base.tensorNames().get(0);
            double d = TensorSpecs.spec(cfg, first, TensorNames.layerIndex(first), layers).densities()[i];
            t[i] = (int) Float64Reference.kthLargest(all, (long) Math.floor(d * all.length));
        }
        return t;
    }

    @Test
    void tiesPerTensorAndModelWideMatchTheReference() throws Exception {
        Path out = dir.resolve("ties-out");
        assertEquals(0, merge(dir.resolve("ties.yml").toString(), "-o", out.toString()));
        assertMatchesReference(dir.resolve("ties.yml"), out, false);
        assertTrue(Files.exists(out.resolve(Checkpoint.INDEX)) || Files.exists(out.resolve(Checkpoint.SINGLE)));
        Path global = dir.resolve("ties-global");
        assertEquals(0, merge(dir.resolve("ties.yml").toString(), "-o", global.toString(), "--trim-scope", "model"));
        assertMatchesReference(dir.resolve("ties.yml"), global, true);
    }

    /**
     * {@code dtype} is mergekit's compute dtype: the inputs are cast to it first, so {@code dtype: float32} over
     * bf16 checkpoints ranks the exact f32 deltas (not bf16-rounded ones), per tensor and model-wide, and
     * {@code dtype: bfloat16} over f32 checkpoints merges the bf16-rounded inputs. The output takes it too.
     */
    @Test
    void theConfigsDtypeIsTheComputeDtype() throws Exception {
        float[] w = {0.6f, 0.4f}, d = {0.3f, 0.5f};
        Path cfg = dir.resolve("ties-f32.yml");
        Files.writeString(cfg, """
                merge_method: ties
                base_model: base
                models:
                  - model: expert-de
                    parameters: {weight: 0.6, density: 0.3}
                  - model: expert-fr
                    parameters: {weight: 0.4, density: 0.5}
                dtype: float32
                """);
        for (String scope : List.of("tensor", "model")) {
            Path out = dir.resolve("ties-f32-" + scope);
            assertEquals(0, merge(cfg.toString(), "-o", out.toString(), "--trim-scope", scope));
            try (Checkpoint b = Checkpoint.open(dir.resolve("base")); Checkpoint de = Checkpoint.open(dir.resolve("expert-de"));
                    Checkpoint fr = Checkpoint.open(dir.resolve("expert-fr")); Checkpoint merged = Checkpoint.open(out)) {
                int layers = 3;
                MergeSpec spec = MergeSpec.ties(w, d).toBuilder().keyDType(DType.F32).build();
                int[] thresholds = scope.equals("model")
                        ? globalThresholds(MergeConfig.load(cfg), b, List.of(de, fr), layers, DType.F32) : null;
                for (String name : b.tensorNames()) {
                    assertEquals(DType.F32, merged.tensor(name).dtype(), name);
                    MergeSpec s = thresholds == null ? spec : spec.toBuilder().thresholds(thresholds).build();
                    float[][] xs = {de.tensor(name).toFloatArray(), fr.tensor(name).toFloatArray()};
                    var ref = Float64Reference.merge(s, b.tensor(name).toFloatArray(), xs, DType.BF16);
                    assertNull(Float64Reference.compare(ref, merged.tensor(name)), scope + " " + name);
                }
            }
        }
    }

    /** Same inputs, config and version: the same bytes in every output file (metadata order, model card, index). */
    @Test
    void identicalMergesWriteIdenticalBytes() throws Exception {
        // The model card is titled with the output's name, as mergekit's: the same name in two places.
        Path a = dir.resolve("same-a").resolve("merged"), b = dir.resolve("same-b").resolve("merged");
        assertEquals(0, merge(dir.resolve("ties.yml").toString(), a.toString(), "--max-shard-size", "100kB"));
        assertEquals(0, merge(dir.resolve("ties.yml").toString(), b.toString(), "--max-shard-size", "100kB"));
        List<String> files;
        try (Stream<Path> s = Files.list(a)) {
            files = s.map(p -> p.getFileName().toString()).sorted().toList();
        }
        try (Stream<Path> s = Files.list(b)) {
            assertEquals(files, s.map(p -> p.getFileName().toString()).sorted().toList());
        }
        assertTrue(files.size() > 3, files.toString());
        for (String f : files)
            assertEquals(-1, Files.mismatch(a.resolve(f), b.resolve(f)), f);
        String shard = files.stream().filter(f -> f.endsWith(".safetensors")).findFirst().orElseThrow();
        try (var f = dev.smelter.io.SafetensorsFile.open(a.resolve(shard))) {
            String by = f.metadata().get("merged_by");
            assertTrue(by != null && by.matches("smelter \\d+\\.\\d+\\.\\d+\\S*"), "merged_by: " + by);
        }
    }

    /** mergekit's linear keeps a base_model listed among the models as one of the weighted sources. */
    @Test
    void linearKeepsTheBaseListedAmongTheModels() throws Exception {
        Path cfg = dir.resolve("linear-with-base.yml"), out = dir.resolve("linear-with-base-out");
        Files.writeString(cfg, """
                merge_method: linear
                base_model: base
                models:
                  - model: base
                    parameters: {weight: 0.4}
                  - model: expert-de
                    parameters: {weight: 0.3}
                  - model: expert-fr
                    parameters: {weight: 0.2}
                """);
        assertEquals(0, merge(cfg.toString(), "-o", out.toString()));
        double[] w = {0.4, 0.3, 0.2};
        try (Checkpoint b = Checkpoint.open(dir.resolve("base")); Checkpoint de = Checkpoint.open(dir.resolve("expert-de"));
                Checkpoint fr = Checkpoint.open(dir.resolve("expert-fr")); Checkpoint merged = Checkpoint.open(out)) {
            assertEquals(b.tensorNames(), merged.tensorNames());
            for (String name : b.tensorNames()) {
                float[][] x = {b.tensor(name).toFloatArray(), de.tensor(name).toFloatArray(), fr.tensor(name).toFloatArray()};
                double[] expect = new double[x[0].length], tol = new double[x[0].length];
                for (int j = 0; j < expect.length; j++) {
                    double sum = 0, mass = 0;
                    for (int i = 0; i < 3; i++) {
                        sum += w[i] * x[i][j];
                        mass += Math.abs(w[i] * x[i][j]);
                    }
                    expect[j] = sum / (w[0] + w[1] + w[2]);
                    tol[j] = 1e-6 * mass;  // f32 weights and accumulation
                }
                var ref = new Float64Reference.Result(expect, tol, new boolean[expect.length], null);
                assertNull(Float64Reference.compare(ref, merged.tensor(name)), name);
            }
        }
    }

    @Test
    void dareTiesMatchesTheReferenceAndIsReproducible() throws Exception {
        Path a = dir.resolve("dare-a"), b = dir.resolve("dare-b"), c = dir.resolve("dare-c");
        assertEquals(0, merge(dir.resolve("dare_ties.yml").toString(), "-o", a.toString()));
        assertMatchesReference(dir.resolve("dare_ties.yml"), a, false);
        // Other sharding, and every tensor merged in pieces of at most 20 kB: the same bytes.
        assertEquals(0, merge(dir.resolve("dare_ties.yml").toString(), "-o", b.toString(), "--max-shard-size", "100kB",
                "--memory-limit", "20kB"));
        assertEquals(0, merge(dir.resolve("dare_ties.yml").toString(), "-o", c.toString(), "--seed", "43"));
        try (Checkpoint ca = Checkpoint.open(a); Checkpoint cb = Checkpoint.open(b); Checkpoint cc = Checkpoint.open(c)) {
            boolean anyDiff = false;
            for (String n : ca.tensorNames()) {
                assertEquals(-1, ca.data(n).mismatch(cb.data(n)), n + ": same seed, other sharding, in pieces");
                anyDiff |= ca.data(n).mismatch(cc.data(n)) != -1;
            }
            assertTrue(anyDiff, "another seed draws other masks");
        }
    }

    @Test
    void dryRunPrintsThePlanAndWritesNothing() {
        Path out = dir.resolve("dry");
        PrintStream old = System.out;
        ByteArrayOutputStream buf = new ByteArrayOutputStream();
        System.setOut(new PrintStream(buf));
        try {
            assertEquals(0, merge(dir.resolve("ties.yml").toString(), "-o", out.toString(), "--dry-run"));
        } finally {
            System.setOut(old);
        }
        String plan = buf.toString();
        assertTrue(plan.contains("MERGE model.layers.2.mlp.down_proj.weight") && plan.contains("peak host memory"), plan);
        assertFalse(Files.exists(out));
    }

    /** {@code dtype: bfloat16} over f32 checkpoints: mergekit merges the inputs rounded to bf16, and writes bf16. */
    @Test
    void aNarrowerComputeDtypeRoundsTheInputsFirst() throws Exception {
        Path f32 = dir.resolve("f32-rounded");
        assertEquals(0, SmelterCli.run("demo-checkpoints", f32.toString(), "--hidden", "64", "--layers", "3", "--vocab", "97",
                "--dtype", "f32"));
        Path cfg = f32.resolve("ties-bf16.yml"), out = f32.resolve("merged");
        Files.writeString(cfg, """
                merge_method: ties
                base_model: base
                models:
                  - model: expert-de
                    parameters: {weight: 0.6, density: 0.4}
                  - model: expert-fr
                    parameters: {weight: 0.4, density: 0.7}
                dtype: bfloat16
                """);
        assertEquals(0, merge(cfg.toString(), "-o", out.toString()));
        MergeSpec spec = MergeSpec.ties(new float[] {0.6f, 0.4f}, new float[] {0.4f, 0.7f});
        try (Checkpoint b = Checkpoint.open(f32.resolve("base")); Checkpoint de = Checkpoint.open(f32.resolve("expert-de"));
                Checkpoint fr = Checkpoint.open(f32.resolve("expert-fr")); Checkpoint merged = Checkpoint.open(out)) {
            for (String name : b.tensorNames()) {
                assertEquals(DType.BF16, merged.tensor(name).dtype(), name);
                float[][] xs = {bf16(de.tensor(name).toFloatArray()), bf16(fr.tensor(name).toFloatArray())};
                var ref = Float64Reference.merge(spec, bf16(b.tensor(name).toFloatArray()), xs, DType.BF16);
                assertNull(Float64Reference.compare(ref, merged.tensor(name)), name);
            }
        }
    }

    private static float[] bf16(float[] x) {
        float[] r = new float[x.length];
        for (int i = 0; i < x.length; i++) r[i] = TestData.round(DType.BF16, x[i]);
        return r;
    }

    /** An f32 base with bf16 experts (mergekit takes them): merged from exact f32 copies, against float64. */
    @Test
    void mixedDtypesMergeFromF32Copies() throws Exception {
        Path f32 = dir.resolve("f32");
        assertEquals(0, SmelterCli.run("demo-checkpoints", f32.toString(), "--hidden", "64", "--layers", "3", "--vocab", "97",
                "--dtype", "f32"));
        for (String scope : List.of("tensor", "model")) {
            Path cfg = dir.resolve("mixed-" + scope + ".yml"), out = dir.resolve("mixed-" + scope);
            Files.writeString(cfg, """
                    merge_method: ties
                    base_model: f32/base
                    models:
                      - model: expert-de
                        parameters: {weight: 0.6, density: 0.4}
                      - model: expert-fr
                        parameters: {weight: 0.4, density: 0.7}
                    dtype: float32
                    smelter: {trim_scope: SCOPE}
                    """.replace("SCOPE", scope));
            CliRun.Run r = CliRun.cli("merge", "--device", "cpu", cfg.toString(), "-o", out.toString(), "--dry-run");
            assertTrue(r.out().contains("inputs of different dtypes: merged from f32 copies"), r.out());
            assertEquals(0, merge(cfg.toString(), "-o", out.toString()));
            MergeConfig mc = MergeConfig.load(cfg);
            try (Checkpoint base = Checkpoint.open(mc.baseModel()); Checkpoint merged = Checkpoint.open(out)) {
                List<Checkpoint> models = new ArrayList<>();
                for (MergeConfig.ModelEntry m : mc.models()) models.add(Checkpoint.open(m.path()));
                int layers = 0;
                for (String n : base.tensorNames()) layers = Math.max(layers, TensorNames.layerIndex(n) + 1);
                int[] thresholds = scope.equals("model") ? globalThresholds(mc, base, models, layers, DType.F32) : null;
                for (String name : base.tensorNames()) {
                    assertEquals(dev.smelter.io.SafetensorsDType.F32, merged.info(name).dtype(), name);
                    MergeSpec spec = TensorSpecs.spec(mc, name, TensorNames.layerIndex(name), layers);
                    if (thresholds != null) spec = spec.toBuilder().thresholds(thresholds).build();
                    float[][] xs = models.stream().map(m -> m.tensor(name).toFloatArray()).toArray(float[][]::new);
                    var ref = Float64Reference.merge(spec, base.tensor(name).toFloatArray(), xs, DType.F32);
                    assertNull(Float64Reference.compare(ref, merged.tensor(name)), scope + " " + name);
                }
                for (Checkpoint m : models) m.close();
            }
        }
        // A sweep needs one dtype, and says so.
        CliRun.Run r = CliRun.cli("sweep", "--device", "cpu", "-q", dir.resolve("mixed-tensor.yml").toString(), "-o",
                dir.resolve("mixed-sweep").toString(), "--grid", "density=0.3,0.5");
        assertEquals(1, r.code(), r.err());
        assertTrue(r.err().contains("sweep needs one dtype"), r.err());
        assertFalse(Files.exists(dir.resolve("mixed-sweep")));
    }

    @Test
    void tensorsOnlyAModelHasAreLeftOutWithAWarning() throws Exception {
        // expert-fr plus an adapter tensor the base does not have.
        Path extended = dir.resolve("expert-fr-adapter");
        try (Checkpoint src = Checkpoint.open(dir.resolve("expert-fr")); java.lang.foreign.Arena arena =
                java.lang.foreign.Arena.ofConfined()) {
            List<dev.smelter.io.CheckpointWriter.TensorSpec> specs = new ArrayList<>();
            for (String t : src.tensorNames())
                specs.add(new dev.smelter.io.CheckpointWriter.TensorSpec(t, src.info(t).dtype(), src.info(t).shape()));
            specs.add(new dev.smelter.io.CheckpointWriter.TensorSpec("adapter.lora_A.weight",
                    dev.smelter.io.SafetensorsDType.BF16, new long[] {4, 8}));
            try (var w = new dev.smelter.io.CheckpointWriter(extended, specs, 1L << 30, java.util.Map.of(), false)) {
                for (String t : src.tensorNames()) w.write(t, src.data(t));
                w.write("adapter.lora_A.weight", arena.allocate(64));
                w.commit();
            }
        }
        Path cfg = dir.resolve("adapter.yml"), out = dir.resolve("adapter-out");
        Files.writeString(cfg, Files.readString(dir.resolve("dare_ties.yml")).replace("expert-fr", "expert-fr-adapter"));
        CliRun.Run r = CliRun.cli("merge", "--device", "cpu", "-q", cfg.toString(), "-o", out.toString());
        assertEquals(0, r.code(), r.err());
        assertTrue(r.err().contains("has 1 tensor that") && r.err().contains("left out of the merge: adapter.lora_A.weight"),
                r.err());
        try (Checkpoint merged = Checkpoint.open(out); Checkpoint base = Checkpoint.open(dir.resolve("base"))) {
            assertEquals(base.tensorNames(), merged.tensorNames(), "the output has the base's tensors");
        }
    }

    @Test
    void badInputsFailCleanlyAndLeaveNoOutput() throws Exception {
        // A model with a truncated shard.
        Path broken = dir.resolve("broken-expert");
        copyTree(dir.resolve("expert-fr"), broken);
        Path shard;
        try (Stream<Path> s = Files.list(broken)) {
            shard = s.filter(p -> p.toString().endsWith(".safetensors")).sorted().findFirst().orElseThrow();
        }
        byte[] bytes = Files.readAllBytes(shard);
        Files.write(shard, java.util.Arrays.copyOf(bytes, bytes.length - 10));
        Path cfg = dir.resolve("broken.yml");
        Files.writeString(cfg, Files.readString(dir.resolve("dare_ties.yml")).replace("expert-fr", "broken-expert"));
        Path out = dir.resolve("broken-out");
        assertNotEquals(0, merge(cfg.toString(), "-o", out.toString()));
        assertFalse(Files.exists(out));
        // A missing model directory, an unknown method.
        Files.writeString(cfg, Files.readString(dir.resolve("dare_ties.yml")).replace("expert-fr", "no-such-expert"));
        assertNotEquals(0, merge(cfg.toString(), "-o", out.toString()));
        Files.writeString(cfg, Files.readString(dir.resolve("ties.yml")).replace("ties", "model_soup"));
        assertEquals(2, merge(cfg.toString(), "-o", out.toString()));
        assertFalse(Files.exists(out));
        try (Stream<Path> s = Files.list(dir)) {
            assertTrue(s.noneMatch(p -> p.getFileName().toString().startsWith(".broken-out")), "no temporary directory left");
        }
    }

    @Test
    void nonFiniteInputsWarnOrFailNamingTensorAndModel() throws Exception {
        Path nan = dir.resolve("nan-expert");
        copyTree(dir.resolve("expert-fr"), nan);
        String tensor = "model.layers.1.mlp.up_proj.weight";
        dev.smelter.io.TensorInfo info;
        try (dev.smelter.io.Checkpoint c = dev.smelter.io.Checkpoint.open(nan)) {
            info = c.info(tensor);
        }
        byte[] bytes = Files.readAllBytes(info.file());
        long headerLength = java.nio.ByteBuffer.wrap(bytes, 0, 8).order(java.nio.ByteOrder.LITTLE_ENDIAN).getLong();
        int at = (int) (8 + headerLength + info.dataBegin() + 2 * 5);  // element 5, bf16
        bytes[at] = (byte) 0xC0;
        bytes[at + 1] = (byte) 0x7F;  // bf16 quiet NaN, little-endian
        Files.write(info.file(), bytes);
        Path cfg = dir.resolve("nan.yml");
        Files.writeString(cfg, Files.readString(dir.resolve("ties.yml")).replace("expert-fr", "nan-expert"));
        Path out = dir.resolve("nan-out");
        var failed = dev.smelter.cli.CliRun.cli("merge", "--device", "cpu", "-q", cfg.toString(), "-o", out.toString(),
                "--on-nonfinite", "fail");
        assertFalse(Files.exists(out), "fail writes nothing");
        var warned = dev.smelter.cli.CliRun.cli("merge", "--device", "cpu", "-q", cfg.toString(), "-o", out.toString());
        String text = failed.err() + warned.err();
        assertEquals(1, failed.code(), text);
        assertEquals(0, warned.code(), text);
        String expected = "tensor " + tensor + ": 1 of " + info.elementCount() + " merged values are NaN or infinite "
                + "(non-finite inputs: 1 in " + nan;
        assertTrue(text.contains("smelter: " + expected), text);
        assertTrue(text.contains("warning: " + expected), text);
        assertTrue(text.contains("peak anonymous memory"), text);
        try (dev.smelter.io.Checkpoint c = dev.smelter.io.Checkpoint.open(out)) {
            assertTrue(Float.isNaN(c.tensor(tensor).getFloat(5)));
            assertFalse(Float.isNaN(c.tensor(tensor).getFloat(4)));
        }
    }

    static void copyTree(Path from, Path to) throws Exception {
        Files.createDirectories(to);
        try (Stream<Path> s = Files.list(from)) {
            for (Path p : s.toList()) Files.copy(p, to.resolve(p.getFileName()));
        }
    }
}
