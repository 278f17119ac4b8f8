package dev.smelter;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

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
 * `smelter merge` with merge_method fisher: every tensor against Matena and Raffel's formula in float64 (model-wide
 * Fisher norms, the floor on the first model only), and a missing Fisher tensor named in the error.
 */
class CliFisherTest {
    @TempDir
    static Path dir;

    static final List<String> MODELS = List.of("expert-de", "expert-fr");

    @BeforeAll
    static void checkpoints() throws Exception {
        assertEquals(0, CliRun.cli("demo-checkpoints", dir.toString(), "--hidden", "32", "--layers", "2", "--vocab", "61").code());
        for (String m : MODELS) writeFisher(dir.resolve(m), dir.resolve(m + "-fisher"), null);
    }

    /** A Fisher-like checkpoint: f32 squares of the model's values times 1e3, every tenth exactly 0; skip: a tensor left out. */
    static void writeFisher(Path model, Path out, String skip) throws Exception {
        try (Checkpoint c = Checkpoint.open(model); Arena arena = Arena.ofConfined()) {
            List<CheckpointWriter.TensorSpec> specs = new ArrayList<>();
            for (String t : c.tensorNames())
                if (!t.equals(skip)) specs.add(new CheckpointWriter.TensorSpec(t, SafetensorsDType.of(DType.F32), c.info(t).shape()));
            try (CheckpointWriter w = new CheckpointWriter(out, specs, 1L << 30, Map.of(), true)) {
                for (CheckpointWriter.TensorSpec s : specs) {
                    float[] x = c.tensor(s.name()).toFloatArray();
                    for (int j = 0; j < x.length; j++) x[j] = j % 10 == 0 ? 0f : x[j] * x[j] * 1e3f;
                    w.write(s.name(), Tensor.ofFloats(arena, x).data());
                }
                w.commit();
            }
        }
    }

    @Test
    void fisherMergeMatchesTheFloat64Formula() throws Exception {
        Path cfg = dir.resolve("fisher.yml"), out = dir.resolve("fisher-out");
        Files.writeString(cfg, """
                merge_method: fisher
                models:
                  - model: expert-de
                    fisher: expert-de-fisher
                    parameters: {weight: 0.7}
                  - model: expert-fr
                    fisher: expert-fr-fisher
                    parameters: {weight: 0.3}
                parameters: {fisher_floor: 1e-4}
                dtype: float32
                """);
        CliRun.Run r = CliRun.cli("merge", "--device", "cpu", "-q", cfg.toString(), "-o", out.toString());
        assertEquals(0, r.code(), r.err());
        List<Checkpoint> in = new ArrayList<>(), fi = new ArrayList<>();
        try (Checkpoint merged = Checkpoint.open(out)) {
            for (String m : MODELS) {
                in.add(Checkpoint.open(dir.resolve(m)));
                fi.add(Checkpoint.open(dir.resolve(m + "-fisher")));
            }
            double[] norms = new double[2];
            for (int i = 0; i < 2; i++) {
                for (String t : merged.tensorNames())
                    for (float f : fi.get(i).tensor(t).toFloatArray()) norms[i] += (double) f * f;
                norms[i] = Math.sqrt(norms[i]);
            }
            float[] c = {(float) (0.7 / norms[0]), (float) (0.3 / norms[1])};
            MergeSpec spec = MergeSpec.fisher(c, new float[] {1e-4f, 0f});
            for (String t : merged.tensorNames()) {
                float[][] xs = in.stream().map(k -> k.tensor(t).toFloatArray()).toArray(float[][]::new);
                float[][] fs = fi.stream().map(k -> k.tensor(t).toFloatArray()).toArray(float[][]::new);
                Float64Reference.Result ref = Float64Reference.merge(spec, new float[xs[0].length], xs, DType.BF16, null, fs);
                assertNull(Float64Reference.compare(ref, merged.tensor(t)), t);
            }
        } finally {
            for (Checkpoint k : in) k.close();
            for (Checkpoint k : fi) k.close();
        }
    }

    @Test
    void aMissingFisherTensorIsNamed() throws Exception {
        writeFisher(dir.resolve("expert-fr"), dir.resolve("partial-fisher"), "model.norm.weight");
        Path cfg = dir.resolve("fisher-bad.yml");
        Files.writeString(cfg, """
                merge_method: fisher
                models:
                  - model: expert-de
                    fisher: expert-de-fisher
                    parameters: {weight: 0.5}
                  - model: expert-fr
                    fisher: partial-fisher
                    parameters: {weight: 0.5}
                """);
        CliRun.Run r = CliRun.cli("merge", "--device", "cpu", "-q", cfg.toString(), "-o", dir.resolve("bad-out").toString());
        assertEquals(1, r.code(), r.err());
        assertTrue(r.err().contains("partial-fisher") && r.err().contains("model.norm.weight"), r.err());
        assertTrue(Files.notExists(dir.resolve("bad-out")), "nothing written");
        Files.writeString(cfg, Files.readString(cfg).replace("    fisher: expert-de-fisher\n", ""));
        CliRun.Run noFisher = CliRun.cli("merge", "--device", "cpu", "-q", cfg.toString(), "-o", dir.resolve("bad-out").toString());
        assertEquals(2, noFisher.code(), noFisher.err());
        assertTrue(noFisher.err().contains("models[0].fisher is required"), noFisher.err());
    }
}
