package dev.smelter;

import static org.junit.jupiter.api.Assertions.assertEquals;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.dataformat.yaml.YAMLFactory;
import dev.smelter.config.MergeConfig;
import dev.smelter.merge.TensorSpecs;
import java.lang.foreign.Arena;
import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.Test;

/**
 * Keep counts of decimal densities and gammas are mergekit's {@code int(density * numel)}: made from the config's
 * double, not from its nearest float (0.7f * 1000 = 699.99998, 0.01f * 1000 = 9.9999998).
 */
class DecimalCountsTest {
    static final String TENSOR = "model.layers.0.mlp.up_proj.weight";

    /** One model whose delta at element j is (j + 1) * 1e-3 * sign: distinct magnitudes, so counts are exact. */
    static int[] keptPositions(Device device, String yaml, int n) throws Exception {
        MergeConfig cfg = MergeConfig.parse(new ObjectMapper(new YAMLFactory()).readTree(yaml), Path.of("/nonexistent"));
        float[] base = new float[n], x = new float[n];
        for (int j = 0; j < n; j++) x[j] = (j % 3 == 0 ? -1 : 1) * (j + 1) * 1e-3f;
        MergeSpec spec = TensorSpecs.spec(cfg, TENSOR, 0, 1);
        try (Context ctx = Smelter.open(device); Arena arena = Arena.ofConfined()) {
            Tensor out = Tensor.allocate(arena, DType.F32, n);
            ctx.merge(spec, TestData.tensor(arena, DType.F32, base), List.of(TestData.tensor(arena, DType.F32, x)), out);
            float[] got = out.toFloatArray();
            return java.util.stream.IntStream.range(0, n).filter(j -> got[j] != 0).toArray();
        }
    }

    @Test
    void tiesKeepsIntOfDensityTimesCount() throws Exception {
        String yaml = """
                merge_method: ties
                base_model: base
                models: [{model: a, parameters: {weight: 1, density: DENSITY}}]
                """;
        for (Device device : TestData.devices())
            for (double density : new double[] {0.7, 0.3, 0.9, 0.1, 0.57}) {
                int n = 1000;
                int[] kept = keptPositions(device, yaml.replace("DENSITY", Double.toString(density)), n);
                int k = (int) (density * n);  // Python's int(density * numel), in double
                assertEquals(k, kept.length, device + " density " + density);
                assertEquals(n - k, kept[0], "the k largest magnitudes");
            }
    }

    @Test
    void breadcrumbsDropsIntOfGammaTimesCount() throws Exception {
        String yaml = """
                merge_method: breadcrumbs
                base_model: base
                models: [{model: a, parameters: {weight: 1, density: 0.7, gamma: 0.01}}]
                """;
        for (Device device : TestData.devices()) {
            int n = 1000;
            int[] kept = keptPositions(device, yaml, n);
            int top = (int) (0.01 * n), k = (int) (0.7 * n);  // 10 largest dropped, 700 kept below them
            assertEquals(k, kept.length, device.toString());
            assertEquals(n - top - k, kept[0], device.toString());
            assertEquals(n - top - 1, kept[kept.length - 1], device + ": the 10 largest are dropped");
        }
    }
}
