package dev.smelter.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.smelter.io.Checkpoint;
import dev.smelter.io.SafetensorsFile;
import java.io.RandomAccessFile;
import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * A NaN in an input of a method whose coefficients come from whole-tensor statistics (slerp, karcher, multislerp,
 * model_stock, SCE) makes every coefficient NaN in mergekit: that tensor is NaN throughout, and the merge reports it
 * as any non-finite output (a warning naming the tensor and the input; --on-nonfinite fail writes nothing), instead
 * of failing on "weights[0] is not finite".
 */
class NonFiniteComposedTest {
    @TempDir
    static Path dir;

    static final String TENSOR = "model.layers.1.mlp.up_proj.weight";

    @BeforeAll
    static void checkpoints() throws Exception {
        assertEquals(0, SmelterCli.run("demo-checkpoints", dir.toString(), "--hidden", "32", "--layers", "2", "--vocab", "31"));
        Path file = dir.resolve("expert-de/model.safetensors");
        long at;
        try (SafetensorsFile f = SafetensorsFile.open(file)) {
            at = f.dataStart() + f.tensors().get(TENSOR).dataBegin();
        }
        try (RandomAccessFile raf = new RandomAccessFile(file.toFile(), "rw")) {
            raf.seek(at);
            raf.write(new byte[] {(byte) 0xC0, 0x7F});  // bf16 NaN, little-endian
        }
    }

    @Test
    void everyComposedMethodWritesNaNAndSaysSo() throws Exception {
        String[] configs = {
            "merge_method: slerp\nbase_model: base\nmodels: [{model: expert-de}]\nparameters: {t: 0.3}\n",
            "merge_method: karcher\nmodels: [{model: expert-de}, {model: expert-fr}]\n",
            "merge_method: multislerp\nbase_model: base\nmodels: [{model: expert-de, parameters: {weight: 1}}, "
                    + "{model: expert-fr, parameters: {weight: 1}}]\n",
            "merge_method: model_stock\nbase_model: base\nmodels: [{model: expert-de}, {model: expert-fr}]\n",
            "merge_method: sce\nbase_model: base\nmodels: [{model: expert-de}, {model: expert-fr}]\n"
                    + "parameters: {select_topk: 0.5}\n"};
        for (int i = 0; i < configs.length; i++) {
            Path cfg = dir.resolve("nan-" + i + ".yml"), out = dir.resolve("nan-out-" + i);
            Files.writeString(cfg, configs[i]);
            CliRun.Run r = CliRun.cli("merge", "--device", "cpu", "-q", cfg.toString(), out.toString());
            assertEquals(0, r.code(), configs[i] + r.err());
            assertTrue(r.err().contains(TENSOR) && r.err().contains("non-finite inputs") && r.err().contains("expert-de"),
                    configs[i] + r.err());
            try (Checkpoint c = Checkpoint.open(out)) {
                float[] v = c.tensor(TENSOR).toFloatArray();
                for (float x : v) assertTrue(Float.isNaN(x), configs[i] + ": NaN throughout");
                assertFalse(Float.isNaN(c.tensor("model.layers.0.mlp.up_proj.weight").toFloatArray()[0]), "other tensors");
            }
            Path failed = dir.resolve("nan-fail-" + i);
            CliRun.Run f = CliRun.cli("merge", "--device", "cpu", "-q", cfg.toString(), failed.toString(), "--on-nonfinite", "fail");
            assertEquals(1, f.code(), f.err());
            assertFalse(Files.exists(failed));
        }
    }
}
