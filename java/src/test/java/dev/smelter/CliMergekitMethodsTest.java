package dev.smelter;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.smelter.cli.CliRun;
import dev.smelter.config.TensorNames;
import dev.smelter.io.Checkpoint;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * `smelter merge` with nuslerp, nearswap, arcee_fusion, ram, ramplus_tl and model_stock's filter_wise on demo
 * checkpoints in bf16, f16 and f32 (odd vocabulary, odd hidden size), every tensor against {@link MethodsReference}.
 */
class CliMergekitMethodsTest {
    @TempDir
    static Path dir;

    static final List<String> DTYPES = List.of("bf16", "f16", "f32");

    @BeforeAll
    static void checkpoints() {
        for (String d : DTYPES)
            assertEquals(0, CliRun.cli("demo-checkpoints", dir.resolve(d).toString(), "--hidden", "36", "--layers", "3",
                    "--vocab", "61", "--dtype", d).code());
    }

    interface Reference {
        /** The expected tensor from [base or first model, models...] in f64; may mark ambiguous elements. */
        double[] apply(String name, long[] shape, List<double[]> inputs, boolean[] ambiguous);
    }

    /** Merges {@code yaml} over the checkpoints of {@code dtype} and checks every tensor against {@code reference}. */
    static void mergeAndCheck(String dtype, String name, String yaml, List<String> inputs, boolean tight,
            Reference reference) throws Exception {
        Path d = dir.resolve(dtype), cfg = d.resolve(name + ".yml"), out = d.resolve(name + "-out");
        Files.writeString(cfg, yaml);
        CliRun.Run r = CliRun.cli("merge", "--device", "cpu", "-q", cfg.toString(), "-o", out.toString());
        assertEquals(0, r.code(), r.out() + r.err());
        List<Checkpoint> in = new ArrayList<>();
        try (Checkpoint merged = Checkpoint.open(out)) {
            for (String m : inputs) in.add(Checkpoint.open(d.resolve(m)));
            assertEquals(in.get(0).tensorNames(), merged.tensorNames());
            for (String t : merged.tensorNames()) {
                List<float[]> xs = in.stream().map(c -> c.tensor(t).toFloatArray()).toList();
                boolean[] ambiguous = new boolean[xs.get(0).length];
                double[] expect = reference.apply(t, in.get(0).info(t).shape(),
                        xs.stream().map(ComposedReference::d).toList(), ambiguous);
                String bad = tight ? MethodsReference.compareTight(expect, ambiguous, xs, merged.tensor(t))
                        : ComposedReference.compare(expect, xs, merged.tensor(t));
                assertNull(bad, dtype + " " + name + " " + t);
            }
        } finally {
            for (Checkpoint c : in) c.close();
        }
    }

    @Test
    void nuslerpFlattenedPerRowAndPerColumnWithAndWithoutBase() throws Exception {
        for (String dtype : DTYPES) {
            // Flattened (the default), without a base: the two models, weights normalized to t = 0.7.
            mergeAndCheck(dtype, "nuslerp-flat", """
                    merge_method: nuslerp
                    models:
                      - model: expert-de
                        parameters: {weight: 0.6}
                      - model: expert-fr
                        parameters: {weight: 1.4}
                    """, List.of("expert-de", "expert-fr"), false,
                    (t, shape, x, amb) -> MethodsReference.nuslerpTask(0.6, 1.4, null, x.get(0), x.get(1), shape, false, true));
            // Per row, with a base: task vectors; the weight a gradient over the layers.
            mergeAndCheck(dtype, "nuslerp-rows", """
                    merge_method: nuslerp
                    base_model: base
                    models:
                      - model: expert-de
                        parameters: {weight: [1, 0]}
                      - model: expert-fr
                        parameters: {weight: 1}
                    parameters: {nuslerp_flatten: false}
                    """, List.of("base", "expert-de", "expert-fr"), true, (t, shape, x, amb) -> {
                        int layer = TensorNames.layerIndex(t);
                        double w0 = layer < 0 ? 1 : 1 - layer / 2.0;
                        return MethodsReference.nuslerpTask(w0, 1, x.get(0), x.get(1), x.get(2), shape, false, false);
                    });
            // Per column (row_wise), without a base; weights summing to 0 give t = 0.5.
            mergeAndCheck(dtype, "nuslerp-columns", """
                    merge_method: nuslerp
                    models:
                      - model: expert-de
                        parameters: {weight: 1}
                      - model: expert-sw
                        parameters: {weight: -1}
                    parameters: {nuslerp_flatten: false, nuslerp_row_wise: true}
                    """, List.of("expert-de", "expert-sw"), true,
                    (t, shape, x, amb) -> MethodsReference.nuslerpTask(1, -1, null, x.get(0), x.get(1), shape, true, false));
            // row_wise without flatten: false changes nothing (flatten wins, as in mergekit).
            mergeAndCheck(dtype, "nuslerp-flat-base", """
                    merge_method: nuslerp
                    base_model: base
                    models:
                      - model: expert-de
                        parameters: {weight: 0.3}
                      - model: expert-fr
                        parameters: {weight: 0.7}
                    parameters: {nuslerp_row_wise: true}
                    """, List.of("base", "expert-de", "expert-fr"), false, (t, shape, x, amb) ->
                    MethodsReference.nuslerpTask(0.3, 0.7, x.get(0), x.get(1), x.get(2), shape, true, true));
        }
    }

    @Test
    void nearswapPerElement() throws Exception {
        for (String dtype : DTYPES)
            for (double t : new double[] {0.0, 0.0007, 1e-7, 5.0})
                mergeAndCheck(dtype, "nearswap-" + t, """
                        merge_method: nearswap
                        base_model: base
                        models:
                          - model: expert-de
                        parameters: {t: %s}
                        """.formatted(t), List.of("base", "expert-de"), true,
                        (n, shape, x, amb) -> MethodsReference.nearswap(t, x.get(0), x.get(1)));
        // An f32 output of bf16 inputs shows the f64 arithmetic: within half an f32 ulp of the reference.
        for (String method : List.of("nearswap", "ram"))
            mergeAndCheck("bf16", method + "-f32-out", """
                    merge_method: %s
                    base_model: base
                    models:
                      - model: expert-de
                    parameters: {%s: 0.0007}
                    out_dtype: float32
                    """.formatted(method, method.equals("ram") ? "epsilon" : "t"), List.of("base", "expert-de"), true,
                    (n, shape, x, amb) -> method.equals("ram") ? MethodsReference.ram(x.get(0), x.subList(1, 2), 0.0007, null, 0)
                            : MethodsReference.nearswap(0.0007, x.get(0), x.get(1)));
        // The model card names the method as mergekit's card does (pretty name, linked to its reference).
        assertTrue(Files.readString(dir.resolve("bf16/nearswap-5.0-out/README.md")).contains(
                "merged using the [NearSwap](https://huggingface.co/alchemonaut/QuartetAnemoi-70B-t0.0001) merge method"));
    }

    @Test
    void arceeFusionKeepsTheImportantDeltas() throws Exception {
        for (String dtype : DTYPES)
            mergeAndCheck(dtype, "arcee_fusion", """
                    merge_method: arcee_fusion
                    base_model: base
                    models:
                      - model: expert-fr
                    """, List.of("base", "expert-fr"), true,
                    (n, shape, x, amb) -> MethodsReference.arceeFusion(x.get(0), x.get(1), shape, amb));
    }

    @Test
    void ramAndRamPlusWithTheirThresholds() throws Exception {
        for (String dtype : DTYPES) {
            for (double eps : new double[] {1e-5, 0.0008, 0.0}) {
                mergeAndCheck(dtype, "ram-" + eps, """
                        merge_method: ram
                        base_model: base
                        models:
                          - model: expert-de
                          - model: expert-fr
                          - model: expert-sw
                        parameters: {epsilon: %s}
                        """.formatted(eps), List.of("base", "expert-de", "expert-fr", "expert-sw"), true,
                        (n, shape, x, amb) -> MethodsReference.ram(x.get(0), x.subList(1, 4), eps, null, 0));
            }
            mergeAndCheck(dtype, "ram-default", """
                    merge_method: ram
                    base_model: base
                    models:
                      - model: expert-de
                      - model: expert-fr
                    """, List.of("base", "expert-de", "expert-fr"), true,
                    (n, shape, x, amb) -> MethodsReference.ram(x.get(0), x.subList(1, 3), 1e-5, null, 0));
            mergeAndCheck(dtype, "ramplus-default", """
                    merge_method: ramplus_tl
                    base_model: base
                    models:
                      - model: expert-de
                      - model: expert-fr
                      - model: expert-sw
                    """, List.of("base", "expert-de", "expert-fr", "expert-sw"), true,
                    (n, shape, x, amb) -> MethodsReference.ram(x.get(0), x.subList(1, 4), 1e-5, 0.1, 0.2));
            // A large epsilon leaves few contributions, many of them unshared: rho and its clamp at alpha matter.
            mergeAndCheck(dtype, "ramplus-wide", """
                    merge_method: ramplus_tl
                    base_model: base
                    models:
                      - model: expert-de
                      - model: expert-fr
                    parameters: {epsilon: 0.0012, r: 0.7, alpha: 5}
                    """, List.of("base", "expert-de", "expert-fr"), true,
                    (n, shape, x, amb) -> MethodsReference.ram(x.get(0), x.subList(1, 3), 0.0012, 0.7, 5));
        }
    }

    @Test
    void modelStockFilterWiseTakesOneAnglePerRow() throws Exception {
        for (String dtype : DTYPES)
            mergeAndCheck(dtype, "model_stock_rows", """
                    merge_method: model_stock
                    base_model: base
                    models:
                      - model: expert-de
                      - model: expert-fr
                      - model: expert-sw
                    parameters: {filter_wise: true}
                    """, List.of("base", "expert-de", "expert-fr", "expert-sw"), true,
                    (n, shape, x, amb) -> MethodsReference.modelStockRows(x.get(0), x.subList(1, 4), shape));
    }

    @Test
    void filterListsWithoutACatchAllFallBackAsInMergekit() throws Exception {
        // The model's list has no value for the mlp tensors: the top-level list is asked, and where that has none
        // either (layernorms, embeddings), the method's default (nuslerp's weight is required: ram's epsilon here).
        mergeAndCheck("bf16", "ram-filters", """
                merge_method: ram
                base_model: base
                models:
                  - model: expert-de
                  - model: expert-fr
                parameters:
                  epsilon:
                    - filter: self_attn
                      value: 0.0009
                    - filter: mlp
                      value: [0.0002, 0.002]
                """, List.of("base", "expert-de", "expert-fr"), true, (n, shape, x, amb) -> {
                    int layer = TensorNames.layerIndex(n);
                    double eps = n.contains("self_attn") ? 0.0009
                            : n.contains("mlp") ? 0.0002 + (0.002 - 0.0002) * layer / 2.0 : 1e-5;
                    return MethodsReference.ram(x.get(0), x.subList(1, 3), eps, null, 0);
                });
        // Per model: models[0]'s weight has a value for self_attn only; elsewhere the top-level list (mlp), and
        // elsewhere still the top-level "*" entry.
        mergeAndCheck("f32", "nuslerp-filters", """
                merge_method: nuslerp
                models:
                  - model: expert-de
                    parameters:
                      weight:
                        - filter: self_attn
                          value: 3
                  - model: expert-fr
                    parameters: {weight: 1}
                parameters:
                  weight:
                    - filter: mlp
                      value: 1
                    - filter: "*"
                      value: 0.25
                """, List.of("expert-de", "expert-fr"), false, (n, shape, x, amb) -> {
                    double w0 = n.contains("self_attn") ? 3 : n.contains("mlp") ? 1 : 0.25;
                    return MethodsReference.nuslerpTask(w0, 1, null, x.get(0), x.get(1), shape, false, true);
                });
    }

    /** Each method sweeps; every configuration is bit-identical to merging it alone (--compare-sequential checks). */
    @Test
    void sweepsEqualMergingEachConfiguration() throws Exception {
        Path d = dir.resolve("bf16");
        String[][] cases = {
                {"nearswap", "merge_method: nearswap\nbase_model: base\nmodels: [{model: expert-de}]\nparameters: {t: 0.001}\n",
                        "t=0,0.0005,0.002", "3"},
                {"ram", "merge_method: ram\nbase_model: base\nmodels: [{model: expert-de}, {model: expert-fr}]\n",
                        "epsilon=0,0.0008", "2"},
                {"ramplus_tl", "merge_method: ramplus_tl\nbase_model: base\nmodels: [{model: expert-de}, {model: expert-fr}]\n",
                        "alpha=0,0.2,5", "3"},
                {"nuslerp", "merge_method: nuslerp\nbase_model: base\nmodels: [{model: expert-de, parameters: {weight: 1}},"
                        + " {model: expert-fr, parameters: {weight: 1}}]\nparameters: {nuslerp_flatten: false}\n",
                        "nuslerp_row_wise=false,true", "2"},
                {"nuslerp-flatten", "merge_method: nuslerp\nmodels: [{model: expert-de, parameters: {weight: 1}},"
                        + " {model: expert-fr, parameters: {weight: 1}}]\n", "nuslerp_flatten=true,false", "2"},
                {"model_stock", "merge_method: model_stock\nbase_model: base\nmodels: [{model: expert-de}, {model: expert-fr}]\n",
                        "filter_wise=false,true", "2"},
        };
        for (String[] c : cases) {
            Path cfg = d.resolve("sweep-" + c[0] + ".yml"), out = d.resolve("sweep-" + c[0] + "-out");
            Files.writeString(cfg, c[1]);
            CliRun.Run r = CliRun.cli("sweep", "--device", "cpu", "-q", cfg.toString(), "--grid", c[2], "-o", out.toString(),
                    "--compare-sequential");
            assertEquals(0, r.code(), c[0] + ": " + r.out() + r.err());
            assertTrue((r.out() + r.err()).contains("outputs identical"), r.out() + r.err());
            assertEquals(Integer.parseInt(c[3]) + 1, Files.readAllLines(out.resolve("configs.csv")).size(), c[0]);
        }
        // The configurations differ from each other (a sweep that ignored its axis would pass the comparison).
        try (Checkpoint a = Checkpoint.open(d.resolve("sweep-model_stock-out/filter_wise=false"));
                Checkpoint b = Checkpoint.open(d.resolve("sweep-model_stock-out/filter_wise=true"))) {
            String t = "model.layers.1.mlp.up_proj.weight";
            assertTrue(a.data(t).mismatch(b.data(t)) >= 0, "filter_wise changes the result");
        }
    }

    @Test
    void aRequiredParameterAFilterListLeavesWithoutAValueIsAConfigurationError() throws Exception {
        Path d = dir.resolve("bf16"), cfg = d.resolve("missing.yml");
        Files.writeString(cfg, """
                merge_method: nearswap
                base_model: base
                models:
                  - model: expert-de
                parameters:
                  t:
                    - filter: self_attn
                      value: 0.001
                """);
        CliRun.Run r = CliRun.cli("merge", "--device", "cpu", "-q", cfg.toString(), "-o", d.resolve("missing-out").toString());
        assertEquals(2, r.code(), r.err());
        assertTrue(r.err().contains("parameters.t has no value for tensor"), r.err());
        assertTrue(!Files.exists(d.resolve("missing-out")));
        // Values out of range: exit 2, naming the key, before anything is read.
        Files.writeString(cfg, "merge_method: ramplus_tl\nbase_model: base\nmodels: [{model: expert-de}]\n"
                + "parameters: {epsilon: 0}\n");
        r = CliRun.cli("merge", "--device", "cpu", "-q", cfg.toString(), "-o", d.resolve("missing-out").toString());
        assertEquals(2, r.code(), r.err());
        assertTrue(r.err().contains("parameters.epsilon is 0; it must be a finite number > 0"), r.err());
        r = CliRun.cli("sweep", "--device", "cpu", "-q", cfg.toString(), "--grid", "epsilon=1e-5,0", "-o",
                d.resolve("missing-out").toString());
        assertEquals(2, r.code(), r.err());
        assertTrue(!Files.exists(d.resolve("missing-out")));
    }
}
