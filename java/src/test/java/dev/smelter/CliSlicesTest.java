package dev.smelter;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import dev.smelter.cli.CliRun;
import dev.smelter.config.MergeConfig;
import dev.smelter.config.TensorNames;
import dev.smelter.io.Checkpoint;
import dev.smelter.merge.CheckpointMerger;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.Iterator;
import java.util.List;
import java.util.Map;
import java.util.TreeSet;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * mergekit's {@code slices}: frankenmerges that stack or drop layers, self-stacking, merges per slice with their own
 * parameters and gradients, passthrough's {@code scale}, {@code models} with {@code layer_range}, and the refusals.
 * Every output tensor is checked against its inputs (bytes for copies, a float64 reference for merges), with the
 * output's names, index and config.json.
 */
class CliSlicesTest {
    @TempDir
    static Path dir;

    static final ObjectMapper JSON = new ObjectMapper();
    static final int LAYERS = 4;

    @BeforeAll
    static void checkpoints() throws Exception {
        assertEquals(0, CliRun.cli("demo-checkpoints", dir.toString(), "--hidden", "48", "--layers", "" + LAYERS,
                "--vocab", "37").code());
        assertEquals(0, CliRun.cli("demo-checkpoints", dir.resolve("f32").toString(), "--hidden", "48", "--layers",
                "" + LAYERS, "--vocab", "37", "--dtype", "f32", "--seed", "5").code());
        // A per-layer list in config.json, as newer transformers configs have: it must follow the layers.
        Path cfg = dir.resolve("base/config.json");
        ObjectNode c = (ObjectNode) JSON.readTree(cfg.toFile());
        var types = c.putArray("layer_types");
        for (int l = 0; l < LAYERS; l++) types.add("type" + l);
        Files.writeString(cfg, JSON.writeValueAsString(c));
    }

    static CliRun.Run merge(String name, String yaml, String... extra) throws Exception {
        Path cfg = dir.resolve(name + ".yml");
        Files.writeString(cfg, yaml);
        List<String> args = new ArrayList<>(List.of("merge", "--device", "cpu", "-q", cfg.toString(),
                dir.resolve(name + "-out").toString()));
        args.addAll(List.of(extra));
        return CliRun.cli(args.toArray(String[]::new));
    }

    static Checkpoint open(String name) throws Exception {
        return Checkpoint.open(dir.resolve(name));
    }

    /** The tensors of one layer of the demo checkpoints, in their order, for output layer {@code out}. */
    static List<String> layer(Checkpoint c, int out) {
        return c.tensorNames().stream().filter(n -> TensorNames.layerIndex(n) == 0)
                .map(n -> TensorNames.withLayer(n, out)).toList();
    }

    static void assertSameBytes(Checkpoint a, String an, Checkpoint b, String bn) {
        assertEquals(-1, a.data(an).mismatch(b.data(bn)), an + " vs " + bn);
        assertEquals(a.info(an).dtype(), b.info(bn).dtype());
    }

    static double[] d(Checkpoint c, String name) {
        return ComposedReference.d(c.tensor(name).toFloatArray());
    }

    static void assertClose(double[] expect, List<Checkpoint> inputs, List<String> names, Checkpoint out, String outName) {
        List<float[]> xs = new ArrayList<>();
        for (int i = 0; i < inputs.size(); i++) xs.add(inputs.get(i).tensor(names.get(i)).toFloatArray());
        assertNull(ComposedReference.compare(expect, xs, out.tensor(outName)), outName);
    }

    @Test
    void frankenmergeStacksLayersOfTwoModelsRenumberedWithScaleFilters() throws Exception {
        CliRun.Run r = merge("frank", """
                slices:
                  - sources:
                      - model: base
                        layer_range: [0, 3]
                  - sources:
                      - model: expert-de
                        layer_range: [1, 4]
                        parameters:
                          scale:
                            - filter: o_proj
                              value: 0.0
                            - filter: down_proj
                              value: 0.5
                            - value: 1.0
                merge_method: passthrough
                """, "--max-shard-size", "40KB");
        assertEquals(0, r.code(), r.err());
        try (Checkpoint out = open("frank-out"); Checkpoint a = open("base"); Checkpoint b = open("expert-de")) {
            List<String> expected = new ArrayList<>(List.of("model.embed_tokens.weight"));
            for (int o = 0; o < 6; o++) expected.addAll(layer(a, o));
            expected.addAll(List.of("model.norm.weight", "lm_head.weight"));
            assertEquals(expected, out.tensorNames());
            // Before the layers from the first slice's model, after them from the last slice's (mergekit's planner).
            assertSameBytes(out, "model.embed_tokens.weight", a, "model.embed_tokens.weight");
            assertSameBytes(out, "model.norm.weight", b, "model.norm.weight");
            assertSameBytes(out, "lm_head.weight", b, "lm_head.weight");
            for (int o = 0; o < 3; o++)
                for (String n : layer(a, o)) assertSameBytes(out, n, a, n);  // scale 1: byte copies
            for (int o = 3; o < 6; o++)
                for (String n : layer(a, o)) {
                    String in = TensorNames.withLayer(n, o - 2);
                    if (n.contains("o_proj") || n.contains("down_proj")) {
                        double s = n.contains("o_proj") ? 0.0 : 0.5;
                        double[] expect = ComposedReference.scaled(s, d(b, in));
                        assertClose(expect, List.of(b), List.of(in), out, n);
                    } else {
                        assertSameBytes(out, n, b, in);
                    }
                }
            // The index lists every tensor once, in shards that exist.
            JsonNode index = JSON.readTree(dir.resolve("frank-out/model.safetensors.index.json").toFile());
            Map<String, Object> map = JSON.convertValue(index.get("weight_map"), Map.class);
            assertEquals(new TreeSet<>(expected), new TreeSet<>(map.keySet()));
            for (Object f : new HashSet<>(map.values())) assertTrue(Files.isRegularFile(dir.resolve("frank-out").resolve(f.toString())));
            // config.json: the base's (the first model's), with the output's layer count and per-layer list.
            JsonNode cfg = JSON.readTree(dir.resolve("frank-out/config.json").toFile());
            JsonNode in = JSON.readTree(dir.resolve("base/config.json").toFile());
            assertEquals(6, cfg.get("num_hidden_layers").intValue());
            assertEquals(List.of("type0", "type1", "type2", "type1", "type2", "type3"),
                    JSON.convertValue(cfg.get("layer_types"), List.class));
            for (Iterator<String> it = in.fieldNames(); it.hasNext(); ) {
                String k = it.next();
                if (!k.equals("num_hidden_layers") && !k.equals("layer_types") && !k.equals("torch_dtype"))
                    assertEquals(in.get(k), cfg.get(k), k);
            }
        }
    }

    static final String SELF_STACK = """
            slices:
              - sources:
                  - model: base
                    layer_range: [0, 4]
              - sources:
                  - model: base
                    layer_range: [1, 3]
              - sources:
                  - model: base
                    layer_range: [0, 4]
            merge_method: passthrough
            parameters:
              scale:
                - filter: mlp
                  value: [0.2, 0.8]
                - value: 1.0
            dtype: bfloat16
            """;

    @Test
    void selfStackingReadsLayersAgainWithGradientsWithinEachSlice() throws Exception {
        CliRun.Run r = merge("self", SELF_STACK);
        assertEquals(0, r.code(), r.err());
        int[] from = {0, 1, 2, 3, 1, 2, 0, 1, 2, 3};  // the input layer of each output layer
        int[][] place = {{0, 4}, {1, 4}, {2, 4}, {3, 4}, {0, 2}, {1, 2}, {0, 4}, {1, 4}, {2, 4}, {3, 4}};
        try (Checkpoint out = open("self-out"); Checkpoint a = open("base")) {
            assertEquals(3 + from.length * layer(a, 0).size(), out.tensorNames().size());
            for (int o = 0; o < from.length; o++)
                for (String n : layer(a, o)) {
                    String in = TensorNames.withLayer(n, from[o]);
                    if (n.contains("mlp")) {  // the gradient is evaluated at the layer's place within its slice
                        double t = (double) place[o][0] / (place[o][1] - 1);
                        double s = 0.2 + (0.8 - 0.2) * t;
                        assertClose(ComposedReference.scaled(s, d(a, in)), List.of(a), List.of(in), out, n);
                    } else {
                        assertSameBytes(out, n, a, in);
                    }
                }
            JsonNode cfg = JSON.readTree(dir.resolve("self-out/config.json").toFile());
            assertEquals(from.length, cfg.get("num_hidden_layers").intValue());
        }
    }

    @Test
    void aStackOfThreePassesTakesTheMemoryOfOne() throws Exception {
        Path stack = dir.resolve("stack3.yml"), one = dir.resolve("stack1.yml");
        String slice = """
                  - sources:
                      - model: base
                        layer_range: [0, 4]
                """;
        String tail = "merge_method: passthrough\nparameters: {scale: 0.5}\n";
        Files.writeString(stack, "slices:\n" + slice + slice + slice + tail);
        Files.writeString(one, "slices:\n" + slice + tail);
        CheckpointMerger.Plan p3 = plan(stack), p1 = plan(one);
        assertEquals(p1.peakHostBytes(), p3.peakHostBytes());
        assertEquals(p1.inputSlots(), p3.inputSlots());
        assertEquals(1, p3.inputSlots(), "passthrough reads one input per tensor");
        assertEquals(3 * LAYERS * 9 + 3, p3.tensors().size());
        assertTrue(p3.bytesRead() > 2.5 * p1.bytesRead(), "every stacked layer is read again: " + p3.bytesRead());
    }

    static CheckpointMerger.Plan plan(Path config) throws Exception {
        MergeConfig cfg = MergeConfig.load(config, dir);
        try (CheckpointMerger m = new CheckpointMerger(cfg, new CheckpointMerger.Options(Device.cpu(),
                dir.resolve("unused-out"), Long.MAX_VALUE, false, false))) {
            return m.plan();
        }
    }

    @Test
    void slerpPerSliceWithGradientsAndSliceParameters() throws Exception {
        CliRun.Run r = merge("slerp", """
                slices:
                  - sources:
                      - model: base
                        layer_range: [0, 2]
                      - model: expert-de
                        layer_range: [0, 2]
                  - sources:
                      - model: base
                        layer_range: [2, 4]
                      - model: expert-de
                        layer_range: [1, 3]
                    parameters:
                      t: [0.9, 0.1]
                merge_method: slerp
                base_model: base
                parameters:
                  t:
                    - filter: self_attn
                      value: [0, 1]
                    - value: 0.5
                dtype: bfloat16
                """);
        assertEquals(0, r.code(), r.err());
        try (Checkpoint out = open("slerp-out"); Checkpoint a = open("base"); Checkpoint b = open("expert-de")) {
            for (String n : List.of("model.embed_tokens.weight"))  // first slice's parameters at t = 0
                assertClose(ComposedReference.slerp(0.5, d(a, n), d(b, n)), List.of(a, b), List.of(n, n), out, n);
            for (String n : List.of("model.norm.weight", "lm_head.weight"))  // the last slice's, at t = 0
                assertClose(ComposedReference.slerp(0.9, d(a, n), d(b, n)), List.of(a, b), List.of(n, n), out, n);
            for (int o = 0; o < 4; o++)
                for (String n : layer(a, o)) {
                    int i = o % 2;
                    String na = TensorNames.withLayer(n, o < 2 ? o : 2 + i), nb = TensorNames.withLayer(n, o < 2 ? o : 1 + i);
                    double t = o < 2 ? (n.contains("self_attn") ? i : 0.5) : 0.9 + (0.1 - 0.9) * i;
                    assertClose(ComposedReference.slerp(t, d(a, na), d(b, nb)), List.of(a, b), List.of(na, nb), out, n);
                }
        }
    }

    @Test
    void taskArithmeticPerSliceTakesSourceThenSliceThenTopLevelParameters() throws Exception {
        CliRun.Run r = merge("ta", """
                slices:
                  - sources:
                      - model: base
                        layer_range: [0, 2]
                      - model: expert-de
                        layer_range: [0, 2]
                        parameters: {weight: [1.0, 0.0]}
                      - model: expert-fr
                        layer_range: [2, 4]
                  - sources:
                      - model: base
                        layer_range: [2, 4]
                      - model: expert-de
                        layer_range: [2, 4]
                      - model: expert-fr
                        layer_range: [0, 2]
                        parameters: {weight: 0.25}
                    parameters: {weight: 0.5, lambda: 2.0}
                merge_method: task_arithmetic
                base_model: base
                parameters: {weight: 0.3}
                dtype: float32
                out_dtype: float32
                """);
        assertEquals(0, r.code(), r.err());
        try (Checkpoint out = open("ta-out"); Checkpoint a = open("base"); Checkpoint de = open("expert-de");
                Checkpoint fr = open("expert-fr")) {
            for (int o = 0; o < 4; o++)
                for (String n : layer(a, o)) {
                    int i = o % 2;
                    boolean first = o < 2;
                    String na = TensorNames.withLayer(n, o), nd = na;
                    String nf = TensorNames.withLayer(n, first ? 2 + i : i);
                    double wd = first ? 1.0 - i : 0.5, wf = first ? 0.3 : 0.25, lambda = first ? 1.0 : 2.0;
                    double[] x0 = d(a, na), xd = d(de, nd), xf = d(fr, nf), expect = new double[x0.length];
                    for (int k = 0; k < x0.length; k++)
                        expect[k] = x0[k] + lambda * (wd * (xd[k] - x0[k]) + wf * (xf[k] - x0[k]));
                    assertClose(expect, List.of(a, de, fr), List.of(na, nd, nf), out, n);
                }
        }
    }

    /** A filter list with no entry for a tensor passes to the next level (source, slice, top level), as in mergekit. */
    @Test
    void filterListsWithoutACatchAllFallBackThroughSourceSliceAndTopLevel() throws Exception {
        CliRun.Run r = merge("ta-filters", """
                slices:
                  - sources:
                      - model: base
                        layer_range: [0, 4]
                      - model: expert-de
                        layer_range: [0, 4]
                        parameters: {weight: [{filter: self_attn, value: 0.9}]}
                      - model: expert-fr
                        layer_range: [0, 4]
                    parameters: {weight: [{filter: mlp, value: 0.6}], lambda: [{filter: mlp, value: 2.0}]}
                merge_method: task_arithmetic
                base_model: base
                parameters: {weight: 0.3}
                dtype: float32
                out_dtype: float32
                """);
        assertEquals(0, r.code(), r.err());
        try (Checkpoint out = open("ta-filters-out"); Checkpoint a = open("base"); Checkpoint de = open("expert-de");
                Checkpoint fr = open("expert-fr")) {
            int checked = 0;
            for (int o = 0; o < 4; o++)
                for (String n : layer(a, o)) {
                    boolean attn = n.contains("self_attn"), mlp = n.contains("mlp");
                    double wd = attn ? 0.9 : mlp ? 0.6 : 0.3, wf = mlp ? 0.6 : 0.3, lambda = mlp ? 2.0 : 1.0;
                    double[] x0 = d(a, n), xd = d(de, n), xf = d(fr, n), expect = new double[x0.length];
                    for (int k = 0; k < x0.length; k++)
                        expect[k] = x0[k] + lambda * (wd * (xd[k] - x0[k]) + wf * (xf[k] - x0[k]));
                    assertClose(expect, List.of(a, de, fr), List.of(n, n, n), out, n);
                    checked++;
                }
            assertTrue(checked > 8, "layer tensors checked");
        }
    }

    @Test
    void slicesOfDifferentDtypesAreCastToTheComputeDtypeAndCopiedWhereTheyAlreadyAreIt() throws Exception {
        CliRun.Run r = merge("mixed", """
                slices:
                  - sources:
                      - model: f32/base
                        layer_range: [0, 2]
                  - sources:
                      - model: base
                        layer_range: [2, 4]
                merge_method: passthrough
                dtype: bfloat16
                """);
        assertEquals(0, r.code(), r.err());
        try (Checkpoint out = open("mixed-out"); Checkpoint f = open("f32/base"); Checkpoint b = open("base")) {
            List<String> cast = new ArrayList<>(List.of("model.embed_tokens.weight"));
            for (int o = 0; o < 2; o++) cast.addAll(layer(f, o));
            for (String n : cast) {  // mergekit casts to dtype first: bf16 rounding of the f32 values, exactly
                assertEquals(dev.smelter.io.SafetensorsDType.BF16, out.info(n).dtype(), n);
                float[] x = f.tensor(n).toFloatArray(), y = out.tensor(n).toFloatArray();
                for (int k = 0; k < x.length; k++) assertEquals(TestData.round(DType.BF16, x[k]), y[k], n + " " + k);
            }
            for (int o = 2; o < 4; o++) for (String n : layer(b, o)) assertSameBytes(out, n, b, n);
            for (String n : List.of("model.norm.weight", "lm_head.weight")) assertSameBytes(out, n, b, n);
            JsonNode cfg = JSON.readTree(dir.resolve("mixed-out/config.json").toFile());
            assertEquals("bfloat16", cfg.get("torch_dtype").asText());
            assertEquals(4, cfg.get("num_hidden_layers").intValue());
        }
        CliRun.Run dry = CliRun.cli("merge", "--device", "cpu", dir.resolve("mixed.yml").toString(),
                dir.resolve("mixed-dry").toString(), "--dry-run");
        assertEquals(0, dry.code(), dry.err());
        assertTrue(dry.out().contains("2 slices, 4 output layers"), dry.out());
        assertTrue(dry.out().matches("(?s).*MERGE\\s+model\\.layers\\.1\\.mlp\\.up_proj\\.weight.*from base layer 1.*"), dry.out());
        assertTrue(dry.out().matches("(?s).*COPY\\s+model\\.layers\\.3\\.mlp\\.up_proj\\.weight.*from base layer 3.*"), dry.out());
    }

    @Test
    void aMissingTensorInASourceLayerNamesTheModelAndLayer() throws Exception {
        // expert-fr without layer 2's up_proj: a copy of its files with that tensor dropped from a new checkpoint.
        Path broken = dir.resolve("broken");
        try (Checkpoint fr = open("expert-fr")) {
            List<dev.smelter.io.CheckpointWriter.TensorSpec> specs = new ArrayList<>();
            String drop = "model.layers.2.mlp.up_proj.weight";
            for (String n : fr.tensorNames())
                if (!n.equals(drop)) specs.add(new dev.smelter.io.CheckpointWriter.TensorSpec(n, fr.info(n).dtype(), fr.info(n).shape()));
            try (var w = new dev.smelter.io.CheckpointWriter(broken, specs, Long.MAX_VALUE, Map.of(), false)) {
                for (var t : specs) w.write(t.name(), fr.data(t.name()));
                w.commit();
            }
        }
        CliRun.Run r = merge("missing", """
                slices:
                  - sources:
                      - model: base
                        layer_range: [0, 4]
                      - model: broken
                        layer_range: [0, 4]
                merge_method: linear
                parameters: {weight: 0.5}
                """);
        assertEquals(1, r.code(), r.err());  // a fault of an input checkpoint, found before anything is written
        for (String p : List.of("tensor model.layers.2.mlp.up_proj.weight is missing", "layer 2 of", "[0, 4]"))
            assertTrue(r.err().contains(p), p + " in: " + r.err());
        assertFalse(Files.exists(dir.resolve("missing-out")));
    }

    @Test
    void tensorsAfterTheLayersTakeTheLastSliceSourcesAsManyAsTheFirstSliceHas() throws Exception {
        CliRun.Run r = merge("tail", """
                slices:
                  - sources:
                      - model: base
                        layer_range: [0, 2]
                  - sources:
                      - model: expert-de
                        layer_range: [2, 4]
                      - model: expert-fr
                        layer_range: [2, 4]
                merge_method: linear
                parameters: {weight: 0.5}
                """);
        assertEquals(0, r.code(), r.err());
        try (Checkpoint out = open("tail-out"); Checkpoint a = open("base"); Checkpoint de = open("expert-de");
                Checkpoint fr = open("expert-fr")) {
            String e = "model.embed_tokens.weight";
            assertClose(d(a, e), List.of(a), List.of(e), out, e);
            for (String n : List.of("model.norm.weight", "lm_head.weight"))  // mergekit: expert-de only
                assertClose(d(de, n), List.of(de), List.of(n), out, n);
            for (int o = 2; o < 4; o++)
                for (String n : layer(a, o)) {
                    double[] x = d(de, n), y = d(fr, n), expect = new double[x.length];
                    for (int k = 0; k < x.length; k++) expect[k] = 0.5 * x[k] + 0.5 * y[k];
                    assertClose(expect, List.of(de, fr), List.of(n, n), out, n);
                }
        }
    }

    @Test
    void aSliceOfOneSourceIsThatSourceUnchangedAsMergekitMethodsReturnASingleTensor() throws Exception {
        CliRun.Run r = merge("slerp-one", """
                slices:
                  - sources: [{model: expert-fr, layer_range: [0, 1]}]
                  - sources: [{model: base, layer_range: [1, 3]}, {model: expert-de, layer_range: [1, 3]}]
                  - sources: [{model: base, layer_range: [3, 4]}]
                merge_method: slerp
                base_model: base
                parameters: {t: 0.3}
                """);
        assertEquals(0, r.code(), r.err());
        try (Checkpoint out = open("slerp-one-out"); Checkpoint a = open("base"); Checkpoint de = open("expert-de");
                Checkpoint fr = open("expert-fr")) {
            assertSameBytes(out, "model.embed_tokens.weight", fr, "model.embed_tokens.weight");
            for (String n : layer(a, 0)) assertSameBytes(out, n, fr, n);
            for (int o = 1; o < 3; o++)
                for (String n : layer(a, o))
                    assertClose(ComposedReference.slerp(0.3, d(a, n), d(de, n)), List.of(a, de), List.of(n, n), out, n);
            for (String n : layer(a, 3)) assertSameBytes(out, n, a, n);
            for (String n : List.of("model.norm.weight", "lm_head.weight")) assertSameBytes(out, n, a, n);
        }

        r = merge("ta-one", """
                slices:
                  - sources: [{model: base, layer_range: [0, 2]}]
                  - sources: [{model: base, layer_range: [2, 4]}, {model: expert-de, layer_range: [2, 4]}]
                merge_method: task_arithmetic
                base_model: base
                parameters: {weight: 0.5}
                """);
        assertEquals(0, r.code(), r.err());
        try (Checkpoint out = open("ta-one-out"); Checkpoint a = open("base"); Checkpoint de = open("expert-de")) {
            for (int o = 0; o < 2; o++) for (String n : layer(a, o)) assertSameBytes(out, n, a, n);
            for (int o = 2; o < 4; o++)
                for (String n : layer(a, o)) {
                    double[] x0 = d(a, n), x1 = d(de, n), expect = new double[x0.length];
                    for (int k = 0; k < x0.length; k++) expect[k] = x0[k] + 0.5 * (x1[k] - x0[k]);
                    assertClose(expect, List.of(a, de), List.of(n, n), out, n);
                }
            // After the layers: the last slice's first source (the first slice has one), the base, unchanged.
            for (String n : List.of("model.norm.weight", "lm_head.weight")) assertSameBytes(out, n, a, n);
        }
        refused("""
                slices:
                  - sources: [{model: expert-de, layer_range: [0, 2]}]
                merge_method: task_arithmetic
                base_model: base
                parameters: {weight: 0.5}
                """, "slices[0]: merge_method task_arithmetic needs the base model's layers among the slice's sources");
    }

    @Test
    void modelsWithAFullLayerRangeMergeAsWithout() throws Exception {
        String models = """
                merge_method: linear
                models:
                  - model: expert-de
                    %s
                    parameters: {weight: 0.6}
                  - model: expert-fr
                    %s
                    parameters: {weight: 0.4}
                """;
        assertEquals(0, merge("plain", models.formatted("", "")).code());
        CliRun.Run r = merge("ranged", models.formatted("layer_range: [0, 4]", "layer_range: [0, 4]"));
        assertEquals(0, r.code(), r.err());
        try (Checkpoint p = open("plain-out"); Checkpoint q = open("ranged-out")) {
            assertEquals(p.tensorNames(), q.tensorNames());
            for (String n : p.tensorNames()) assertSameBytes(p, n, q, n);
        }
        r = merge("partial", models.formatted("layer_range: [0, 2]", "layer_range: [0, 4]"));
        assertEquals(2, r.code());
        assertTrue(r.err().contains("layer_range [0, 2]") && r.err().contains("does not cover its 4 layers")
                && r.err().contains("use slices"), r.err());
    }

    @Test
    void passthroughOfOneModelCopiesIt() throws Exception {
        CliRun.Run r = merge("copy", """
                merge_method: passthrough
                models:
                  - model: expert-sw
                """);
        assertEquals(0, r.code(), r.err());
        try (Checkpoint out = open("copy-out"); Checkpoint sw = open("expert-sw")) {
            assertEquals(sw.tensorNames(), out.tensorNames());
            for (String n : sw.tensorNames()) assertSameBytes(out, n, sw, n);
        }
        r = merge("copy2", """
                merge_method: passthrough
                models:
                  - model: expert-sw
                  - model: expert-de
                """);
        assertEquals(2, r.code());
        assertTrue(r.err().contains("passthrough copies exactly one model"), r.err());
    }

    static void refused(String yaml, String... parts) throws Exception {
        CliRun.Run r = merge("refused", yaml);
        assertEquals(2, r.code(), r.err());
        for (String p : parts) assertTrue(r.err().contains(p), p + " in: " + r.err());
        assertFalse(Files.exists(dir.resolve("refused-out")));
    }

    @Test
    void slicesOverModelsOfAnotherVocabularySizeSayWhatToWrite() throws Exception {
        // With slices every model needs the base's vocabulary (the base's tokenizer is copied); a model with added
        // tokens is refused before anything is written, naming the rows and the models: form that aligns them.
        assertEquals(0, CliRun.cli("demo-checkpoints", dir.resolve("v40").toString(), "--hidden", "48", "--layers",
                "" + LAYERS, "--vocab", "40").code());
        CliRun.Run r = merge("vocab-slices", """
                slices:
                  - sources:
                      - {model: base, layer_range: [0, 4]}
                      - {model: v40/expert-de, layer_range: [0, 4]}
                merge_method: slerp
                base_model: base
                parameters: {t: 0.5}
                """);
        assertEquals(1, r.code(), r.err());
        for (String p : List.of("model.embed_tokens.weight has 40 rows", "has 37", "with slices every model needs the "
                + "same vocabulary", "models: config", "tokenizer_source"))
            assertTrue(r.err().contains(p), p + " in: " + r.err());
        assertFalse(Files.exists(dir.resolve("vocab-slices-out")));
    }

    @Test
    void aFrankenmergeWhoseHeadAndEmbeddingsDifferInVocabularyIsRefused() throws Exception {
        // The embeddings come from the first slice, the head from the last: of 37 and 40 rows the model would not load.
        if (!Files.exists(dir.resolve("v40b")))
            assertEquals(0, CliRun.cli("demo-checkpoints", dir.resolve("v40b").toString(), "--hidden", "48", "--layers",
                    "" + LAYERS, "--vocab", "40").code());
        CliRun.Run r = merge("vocab-franken", """
                slices:
                  - sources:
                      - {model: base, layer_range: [0, 3]}
                  - sources:
                      - {model: v40b/expert-de, layer_range: [1, 4]}
                merge_method: passthrough
                """);
        assertEquals(1, r.code(), r.err());
        for (String p : List.of("model.embed_tokens.weight has 37 rows", "lm_head.weight has 40 rows", "would not load",
                "first and the last slice"))
            assertTrue(r.err().contains(p), p + " in: " + r.err());
        assertFalse(Files.exists(dir.resolve("vocab-franken-out")));
        // Both ends from one vocabulary: the middle may come from the other.
        r = merge("vocab-franken-ok", """
                slices:
                  - sources:
                      - {model: base, layer_range: [0, 2]}
                  - sources:
                      - {model: v40b/expert-de, layer_range: [1, 3]}
                  - sources:
                      - {model: expert-fr, layer_range: [2, 4]}
                merge_method: passthrough
                """);
        assertEquals(0, r.code(), r.err());
    }

    @Test
    void badSlicesAreRefusedNamingTheSliceAndSource() throws Exception {
        refused("""
                slices:
                  - sources:
                      - model: base
                        layer_range: [1, 5]
                merge_method: passthrough
                """, "slices[0].sources[0].layer_range [1, 5] is beyond the layers of", "it has 4");
        refused("""
                slices:
                  - sources:
                      - model: base
                        layer_range: [0, 2]
                      - model: expert-de
                        layer_range: [0, 3]
                merge_method: linear
                parameters: {weight: 1.0}
                """, "slices[0]", "same number of layers", "[0, 2] has 2", "[0, 3] has 3");
        refused("""
                slices:
                  - sources:
                      - model: base
                        layer_range: [2, 2]
                merge_method: passthrough
                """, "slices[0].sources[0].layer_range [2, 2] is empty");
        refused("""
                slices:
                  - sources:
                      - model: base
                        layer_range: [0, 2]
                      - model: expert-de
                        layer_range: [0, 2]
                merge_method: passthrough
                """, "slices[0] has 2 sources; passthrough copies one source per slice");
        refused("""
                slices:
                  - sources:
                      - model: expert-fr
                        layer_range: [0, 2]
                      - model: expert-de
                        layer_range: [0, 2]
                merge_method: ties
                base_model: base
                parameters: {weight: 1.0, density: 0.5}
                """, "slices[0]: merge_method ties needs the base model's layers among the slice's sources");
        refused("""
                slices:
                  - sources:
                      - model: base
                        layer_range: [0, 2]
                      - model: expert-de
                        layer_range: [0, 2]
                  - sources:
                      - model: expert-fr
                        layer_range: [2, 4]
                      - model: expert-de
                        layer_range: [2, 4]
                      - model: base
                        layer_range: [2, 4]
                merge_method: ties
                base_model: base
                parameters: {weight: 0.5, density: 0.5}
                """, "the tensors after the layers", "first 2 sources of the last slice",
                "slices[1]: merge_method ties needs the base model's layers");
        refused("""
                slices:
                  - sources:
                      - model: base
                        layer_range: [0, 2]
                models:
                  - model: base
                merge_method: passthrough
                """, "both 'models' and 'slices'");
        refused("""
                slices:
                  - sources:
                      - model: base
                        layer_range: [0, 2]
                      - model: base
                        layer_range: [2, 4]
                merge_method: linear
                parameters: {weight: 1.0}
                """, "slices[0].sources[1]", "is already a source of slices[0]");
        refused("""
                slices:
                  - sources:
                      - model: base
                        layer_range: 4
                merge_method: passthrough
                """, "slices[0].sources[0].layer_range must be two whole numbers");
    }

    @Test
    void sweepOverSlicesReplacesTheValueEverywhereAndMatchesSeparateMerges() throws Exception {
        Path cfg = dir.resolve("sweep-slices.yml");
        Files.writeString(cfg, SELF_STACK);
        Path out = dir.resolve("sweep-out");
        CliRun.Run r = CliRun.cli("sweep", "--device", "cpu", "-q", cfg.toString(), out.toString(), "--grid",
                "scale=0.5,1.0", "--compare-sequential", "--no-stats");
        assertEquals(0, r.code(), r.err());
        assertTrue(r.out().contains("outputs identical") || r.err().contains("outputs identical"), r.out() + r.err());
        int[] from = {0, 1, 2, 3, 1, 2, 0, 1, 2, 3};
        try (Checkpoint half = Checkpoint.open(out.resolve("scale=0.5")); Checkpoint one = Checkpoint.open(out.resolve("scale=1"));
                Checkpoint a = open("base")) {
            for (int o = 0; o < from.length; o++)
                for (String n : layer(a, o)) {  // the axis replaces the config's filtered gradient for every tensor
                    String in = TensorNames.withLayer(n, from[o]);
                    assertClose(ComposedReference.scaled(0.5, d(a, in)), List.of(a), List.of(in), half, n);
                    assertClose(d(a, in), List.of(a), List.of(in), one, n);
                }
        }
        for (String point : List.of("scale=0.5", "scale=1"))  // each sweep output's config.json counts its layers
            assertEquals(from.length, JSON.readTree(out.resolve(point).resolve("config.json").toFile())
                    .get("num_hidden_layers").intValue(), point + "/config.json");

        Path slerp = dir.resolve("sweep-slerp.yml");
        Files.writeString(slerp, """
                slices:
                  - sources:
                      - {model: base, layer_range: [0, 2]}
                      - {model: expert-de, layer_range: [0, 2]}
                  - sources:
                      - {model: base, layer_range: [2, 4]}
                      - {model: expert-de, layer_range: [1, 3]}
                    parameters: {t: [0.9, 0.1]}
                merge_method: slerp
                base_model: base
                parameters: {t: 0.5}
                dtype: bfloat16
                smelter: {grid: {t: [0.25, 0.75]}}
                """);
        r = CliRun.cli("sweep", "--device", "cpu", "-q", slerp.toString(), dir.resolve("sweep-slerp-out").toString(),
                "--compare-sequential", "--no-stats");
        assertEquals(0, r.code(), r.err());
        try (Checkpoint q = Checkpoint.open(dir.resolve("sweep-slerp-out/t=0.25")); Checkpoint a = open("base");
                Checkpoint b = open("expert-de")) {
            for (int o = 0; o < 4; o++)
                for (String n : layer(a, o)) {
                    String na = TensorNames.withLayer(n, o), nb = TensorNames.withLayer(n, o < 2 ? o : o - 1);
                    assertClose(ComposedReference.slerp(0.25, d(a, na), d(b, nb)), List.of(a, b), List.of(na, nb), q, n);
                }
        }

        r = CliRun.cli("sweep", "--device", "cpu", "-q", cfg.toString(), dir.resolve("sweep-bad").toString(),
                "--grid", "scale@0=0.5,1.0");
        assertEquals(2, r.code(), r.err());
        assertTrue(r.err().contains("models[0] names no one source"), r.err());
        r = CliRun.cli("sweep", "--device", "cpu", "-q", cfg.toString(), dir.resolve("sweep-bad").toString(),
                "--grid", "scale=0.5,1.0", "--stats-only");
        assertEquals(2, r.code(), r.err());
        assertTrue(r.err().contains("not available for slices"), r.err());
    }
}
