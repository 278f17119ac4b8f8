package dev.smelter;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.smelter.cli.SmelterCli;
import dev.smelter.methods.MergeMethods;
import dev.smelter.config.TensorNames;
import dev.smelter.io.Checkpoint;
import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.function.BiFunction;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** `smelter merge` with slerp and model_stock on the demo checkpoints, every tensor against {@link ComposedReference}. */
class CliComposedMergeTest {
    @TempDir
    static Path dir;

    @BeforeAll
    static void checkpoints() {
        assertEquals(0, SmelterCli.run("demo-checkpoints", dir.toString(), "--hidden", "64", "--layers", "3", "--vocab", "97"));
    }

    /** Merges with the config and checks every tensor: reference(name, [base, models...]) in f64. */
    static void mergeAndCheck(String name, String yaml, List<String> models,
            BiFunction<String, List<double[]>, double[]> reference) throws Exception {
        Path cfg = dir.resolve(name + ".yml"), out = dir.resolve(name + "-out");
        Files.writeString(cfg, yaml);
        assertEquals(0, SmelterCli.run("merge", "--device", "cpu", "-q", cfg.toString(), "-o", out.toString()));
        List<Checkpoint> in = new ArrayList<>();
        try (Checkpoint merged = Checkpoint.open(out)) {
            for (String m : models) in.add(Checkpoint.open(dir.resolve(m)));
            assertEquals(in.get(0).tensorNames(), merged.tensorNames());
            for (String t : merged.tensorNames()) {
                List<float[]> xs = in.stream().map(c -> c.tensor(t).toFloatArray()).toList();
                double[] expect = reference.apply(t, xs.stream().map(ComposedReference::d).toList());
                assertNull(ComposedReference.compare(expect, xs, merged.tensor(t)), name + " " + t);
            }
        } finally {
            for (Checkpoint c : in) c.close();
        }
    }

    @Test
    void slerpWithAGradientPerFilterMatchesTheReference() throws Exception {
        mergeAndCheck("slerp", """
                merge_method: slerp
                base_model: base
                models:
                  - model: base
                  - model: expert-de
                parameters:
                  t:
                    - filter: self_attn
                      value: [0, 0.5, 1]
                    - filter: mlp
                      value: [1, 0.5, 0]
                    - value: 0.4
                dtype: bfloat16
                """, List.of("base", "expert-de"), (t, x) -> {
                    int layer = TensorNames.layerIndex(t);
                    double tt = t.contains("self_attn") ? layer * 0.5 : t.contains("mlp") ? 1 - layer * 0.5 : 0.4;
                    return ComposedReference.slerp(tt, x.get(0), x.get(1));
                });
    }

    @Test
    void modelStockMatchesTheReference() throws Exception {
        mergeAndCheck("model_stock", """
                merge_method: model_stock
                base_model: base
                models:
                  - model: expert-de
                  - model: expert-fr
                  - model: expert-sw
                dtype: bfloat16
                """, List.of("base", "expert-de", "expert-fr", "expert-sw"),
                (t, x) -> ComposedReference.modelStock(x.get(0), x.subList(1, x.size())));
    }

    @Test
    void methodsListsEveryMethodWithItsParameters() {
        PrintStream old = System.out;
        ByteArrayOutputStream buf = new ByteArrayOutputStream();
        System.setOut(new PrintStream(buf));
        try {
            assertEquals(0, SmelterCli.run("methods"));
        } finally {
            System.setOut(old);
        }
        String text = buf.toString();
        for (MergeMethods.Method m : MergeMethods.Method.values()) {
            assertTrue(text.contains(m.mergekitName()) && text.contains(m.description()), m.mergekitName());
            for (MergeMethods.Parameter p : m.parameters()) assertTrue(text.contains(p.name()), p.name());
        }
        assertTrue(text.matches("(?s).*max_iter\\s+global\\s+default 10.*"), text);
        assertTrue(text.matches("(?s).*t\\s+global\\s+required.*"), text);
        assertTrue(text.matches("(?s).*weight\\s+per model\\s+required.*"), text);
        assertTrue(text.matches("(?s).*nuslerp\n.*nuslerp_row_wise\\s+global\\s+default false\n\\s+nuslerp_flatten\\s+global\\s+default true.*"), text);
        assertTrue(text.matches("(?s).*ramplus_tl  \\(needs base_model\\).*r\\s+global\\s+default 0.1\n\\s+alpha\\s+global\\s+default 0.2\n\\s+epsilon\\s+global\\s+default 1e-5.*"), text);
        for (String rule : List.of("int(density * n)", "tied with the k-th largest", "sum >= 0 elects +",
                "dtype casts the inputs first", "t = 0 outside the layers", "docs/MERGEKIT.md", "falls back to the top-level",
                "run in Java over the host inputs"))
            assertTrue(text.contains(rule), rule);
    }
}
