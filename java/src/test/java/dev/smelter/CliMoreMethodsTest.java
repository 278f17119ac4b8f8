package dev.smelter;

import dev.smelter.methods.SceMerge;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;

import dev.smelter.cli.SmelterCli;
import dev.smelter.io.Checkpoint;
import java.lang.foreign.Arena;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.function.BiFunction;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * `smelter merge` with breadcrumbs_ties, della and sce configs: every merged tensor equals the Java API merge
 * with the parameters the config means (mergekit's defaults, DELLA's rows = the matrix rows, rescale = L1),
 * and SCE equals its float64 reference.
 */
class CliMoreMethodsTest {
    @TempDir
    static Path dir;

    @BeforeAll
    static void checkpoints() {
        assertEquals(0, SmelterCli.run("demo-checkpoints", dir.toString(), "--hidden", "64", "--layers", "2", "--vocab", "97"));
    }

    static final List<String> MODELS = List.of("expert-de", "expert-fr", "expert-sw");

    /** Merges with the config; expected(name, shape, base, models, out) fills out for each tensor. */
    static void mergeAndCompare(String name, String yaml, Expectation expected) throws Exception {
        Path cfg = dir.resolve(name + ".yml"), out = dir.resolve(name + "-out");
        Files.writeString(cfg, yaml);
        assertEquals(0, SmelterCli.run("merge", "--device", "cpu", "-q", cfg.toString(), "-o", out.toString()));
        List<Checkpoint> in = new ArrayList<>();
        try (Checkpoint merged = Checkpoint.open(out); Checkpoint base = Checkpoint.open(dir.resolve("base"));
                Arena arena = Arena.ofConfined(); Context ctx = Smelter.open(Device.cpu())) {
            for (String m : MODELS) in.add(Checkpoint.open(dir.resolve(m)));
            for (String t : merged.tensorNames()) {
                Tensor b = base.tensor(t);
                if (b.dtype() == null) continue;
                Tensor got = merged.tensor(t);
                Tensor want = Tensor.allocate(arena, got.dtype(), got.count());
                expected.fill(ctx, t, base.info(t).shape(), b, in.stream().map(c -> c.tensor(t)).toList(), want);
                for (long j = 0; j < got.count(); j++)
                    if (Float.floatToRawIntBits(got.getFloat(j)) != Float.floatToRawIntBits(want.getFloat(j)))
                        throw new AssertionError(name + " " + t + "[" + j + "]: " + got.getFloat(j) + " vs " + want.getFloat(j));
            }
        } finally {
            for (Checkpoint c : in) c.close();
        }
    }

    interface Expectation {
        void fill(Context ctx, String tensor, long[] shape, Tensor base, List<Tensor> models, Tensor out);
    }

    static final String MODELS_YAML = """
            models:
              - model: expert-de
                parameters: {weight: 0.5, density: 0.5, %1$s}
              - model: expert-fr
                parameters: {weight: 0.3, density: 0.6, %1$s}
              - model: expert-sw
                parameters: {weight: 0.2, density: 0.4, %1$s}
            """;

    @Test
    void breadcrumbsTies() throws Exception {
        mergeAndCompare("breadcrumbs_ties", "merge_method: breadcrumbs_ties\nbase_model: base\n"
                + MODELS_YAML.formatted("gamma: 0.05"), (ctx, t, shape, base, models, out) -> ctx.merge(
                        MergeSpec.breadcrumbs(new float[] {0.5f, 0.3f, 0.2f}, new float[] {0.5f, 0.6f, 0.4f},
                                new float[] {0.05f, 0.05f, 0.05f}, true).toBuilder().normalize(false).tensorName(t).build(),
                        base, models, out));
    }

    @Test
    void dellaRanksWithinMatrixRows() throws Exception {
        mergeAndCompare("della", "merge_method: della\nbase_model: base\n" + MODELS_YAML.formatted("epsilon: 0.1")
                + "smelter: {seed: 11}\n", (ctx, t, shape, base, models, out) -> {
                    long row = shape.length >= 2 ? base.count() / shape[0] : base.count();
                    ctx.merge(MergeSpec.della(new float[] {0.5f, 0.3f, 0.2f}, new float[] {0.5f, 0.6f, 0.4f},
                            new float[] {0.1f, 0.1f, 0.1f}, row, 11, true).toBuilder().rescale(MergeSpec.Rescale.L1)
                            .tensorName(t).build(), base, models, out);
                });
    }

    @Test
    void sceMatchesTheFloat64Reference() throws Exception {
        mergeAndCompare("sce", """
                merge_method: sce
                base_model: base
                models:
                  - model: expert-de
                    parameters: {weight: 0.7}   # as in mergekit's sce examples: sce takes no weight, it is ignored
                  - model: expert-fr
                  - model: expert-sw
                parameters: {select_topk: 0.4}
                dtype: float32
                """, (ctx, t, shape, base, models, out) -> {
                    Tensor scratch = ctx.allocate(DType.F32, base.count(), Tensor.Memory.HOST);
                    try {
                        SceMerge.merge(ctx, base, models, 0.4, SceMerge.Variant.MERGEKIT, t, scratch, out);
                    } finally {
                        ctx.free(scratch);
                    }
                    float[] b = base.toFloatArray();
                    float[][] xs = models.stream().map(Tensor::toFloatArray).toArray(float[][]::new);
                    assertNull(Float64Reference.compare(
                            MethodsReferenceTest.sceReference(b, xs, 0.4, SceMerge.Variant.MERGEKIT), out), t);
                });
    }
}
