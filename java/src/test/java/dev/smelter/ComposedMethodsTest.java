package dev.smelter;

import dev.smelter.merge.TensorSpecs;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.DynamicTest.dynamicTest;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.dataformat.yaml.YAMLFactory;
import dev.smelter.methods.ComposedMethods;
import dev.smelter.config.MergeConfig;
import dev.smelter.methods.MergeMethods;
import java.lang.foreign.Arena;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;
import java.util.stream.Stream;
import org.junit.jupiter.api.DynamicTest;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestFactory;

/**
 * slerp, model_stock, karcher and multislerp through the config path (MergeConfig -> MergeMethods.tensorMerge ->
 * pair statistics -> one linear merge) on every backend, at odd sizes and in every dtype, against
 * {@link ComposedReference}.
 */
class ComposedMethodsTest {
    static final String TENSOR = "model.layers.1.mlp.up_proj.weight";

    static MergeConfig config(String yaml) throws Exception {
        return MergeConfig.parse(new ObjectMapper(new YAMLFactory()).readTree(yaml), Path.of("/nonexistent"));
    }

    /** Base ~ N(0, 0.02); model i = base + a_i * shared + noise: correlated task vectors (cosines ~0.3-0.7). */
    static List<float[]> data(DType dtype, int n, int models, long seed, double spread) {
        SplittableRandom r = new SplittableRandom(seed);
        float[] base = new float[n];
        double[] shared = new double[n];
        for (int i = 0; i < n; i++) {
            base[i] = TestData.round(dtype, (float) (0.02 * TestData.gaussian(r)));
            shared[i] = spread * TestData.gaussian(r);
        }
        List<float[]> out = new ArrayList<>(List.of(base));
        for (int m = 0; m < models; m++) {
            float[] x = new float[n];
            double a = 0.6 + 0.3 * m;
            for (int i = 0; i < n; i++)
                x[i] = TestData.round(dtype, (float) (base[i] + a * shared[i] + spread * TestData.gaussian(r)));
            out.add(x);
        }
        return out;
    }

    /** Runs the config's method on one tensor: base = data[0] (or none), models = data[1..]. */
    static Tensor run(Context ctx, Arena arena, MergeConfig cfg, DType in, DType out, List<float[]> data, boolean base) {
        Tensor b = base ? TestData.tensor(arena, in, data.get(0)) : null;
        List<Tensor> models = new ArrayList<>();
        for (float[] x : data.subList(1, data.size())) models.add(TestData.tensor(arena, in, x));
        MergeMethods.TensorMerge how = TensorSpecs.tensorMerge(cfg, TENSOR, 1, 3);
        MergeSpec spec = how.resolve(ctx, b, models);
        Tensor result = Tensor.allocate(arena, out, data.get(0).length);
        ctx.merge(spec, b, how.inputs(b, models), result);
        return result;
    }

    static List<double[]> doubles(List<float[]> xs) {
        return xs.stream().map(ComposedReference::d).toList();
    }

    record Case(String name, String yaml, boolean base, int models, double spread,
            java.util.function.Function<List<double[]>, double[]> reference) {}

    static List<Case> cases() {
        return List.of(
                new Case("slerp", """
                        merge_method: slerp
                        base_model: base
                        models: [{model: base}, {model: other}]
                        parameters: {t: [0.1, 0.9]}
                        """, true, 1, 0.02,
                        // layer 1 of 3: t = 0.5 from the gradient
                        x -> ComposedReference.slerp(0.5, x.get(0), x.get(1))),
                new Case("slerp-filtered-t", """
                        merge_method: slerp
                        base_model: base
                        models: [{model: other}]
                        parameters: {t: [{filter: mlp, value: 0.3}, {value: 0.8}]}
                        """, true, 1, 0.005, x -> ComposedReference.slerp(0.3, x.get(0), x.get(1))),
                new Case("model_stock", """
                        merge_method: model_stock
                        base_model: base
                        models: [{model: a}, {model: b}, {model: c}]
                        """, true, 3, 0.001,
                        x -> ComposedReference.modelStock(x.get(0), x.subList(1, x.size()))),
                new Case("karcher-with-base", """
                        merge_method: karcher
                        base_model: base
                        models: [{model: a}, {model: b}]
                        parameters: {max_iter: 20, tol: 1e-9}
                        """, true, 2, 0.02,
                        // mergekit's points: the models and the base
                        x -> ComposedReference.karcher(List.of(x.get(1), x.get(2), x.get(0)), 20, 1e-9)),
                new Case("karcher", """
                        merge_method: karcher
                        models: [{model: a}, {model: b}, {model: c}]
                        """, false, 3, 0.02,
                        x -> ComposedReference.karcher(x.subList(1, x.size()), 10, 1e-5)),
                new Case("multislerp-with-base", """
                        merge_method: multislerp
                        base_model: base
                        models: [{model: a, parameters: {weight: 0.5}}, {model: b, parameters: {weight: 0.3}},
                                 {model: c, parameters: {weight: 0.7}}]
                        """, true, 3, 0.001,
                        x -> ComposedReference.multislerp(x.subList(1, 4), new double[] {0.5, 0.3, 0.7}, x.get(0),
                                true, 1e-8)),
                new Case("multislerp", """
                        merge_method: multislerp
                        models: [{model: a, parameters: {weight: 2}}, {model: b, parameters: {weight: 1}}]
                        parameters: {normalize_weights: false}
                        """, false, 2, 0.02,
                        x -> ComposedReference.multislerp(x.subList(1, 3), new double[] {2, 1}, null, false, 1e-8)));
    }

    @TestFactory
    Stream<DynamicTest> everyMethodDtypeAndOddSize() {
        List<DynamicTest> tests = new ArrayList<>();
        for (Device device : TestData.devices())
            for (Case c : cases())
                for (DType dtype : DType.values())
                    for (int n : new int[] {1, 7, 1001, 4099})
                        tests.add(dynamicTest(device + " " + c.name() + " " + dtype + " n=" + n, () -> {
                            MergeConfig cfg = config(c.yaml());
                            List<float[]> data = data(dtype, n, c.models(), n * 31L + c.name().length(), c.spread());
                            double[] expect = c.reference().apply(doubles(data));
                            List<float[]> inputs = c.base() ? data : data.subList(1, data.size());
                            try (Context ctx = Smelter.open(device); Arena arena = Arena.ofConfined()) {
                                for (DType out : List.of(dtype, DType.F32)) {
                                    Tensor got = run(ctx, arena, cfg, dtype, out, data, c.base());
                                    String error = ComposedReference.compare(expect, inputs, got);
                                    assertNull(error, () -> c.name() + " " + dtype + " -> " + out + ": " + error);
                                }
                            }
                        }));
        return tests.stream();
    }

    /**
     * A model that leaves the tensor unchanged (a frozen tensor, a LoRA expert) has a zero task vector: mergekit's
     * unit vector for it is 0/(0 + eps) = 0, so it adds nothing to the mean direction. Its coefficient must not be
     * spread over the model and the base in f32 (1/eps = 1e8 times each, cancelling catastrophically).
     */
    @Test
    void multislerpWithAnUnchangedModelMatchesMergekit() throws Exception {
        MergeConfig cfg = config("""
                merge_method: multislerp
                base_model: base
                models: [{model: a, parameters: {weight: 0.5}}, {model: b, parameters: {weight: 0.3}},
                         {model: c, parameters: {weight: 0.2}}]
                """);
        for (Device device : TestData.devices())
            for (DType dtype : DType.values())
                for (int n : new int[] {7, 1001}) {
                    List<float[]> data = new ArrayList<>(data(dtype, n, 3, 17 + n, 0.001));
                    data.set(2, data.get(0).clone());  // models[1] = base
                    double[] expect = ComposedReference.multislerp(doubles(data.subList(1, 4)),
                            new double[] {0.5, 0.3, 0.2}, ComposedReference.d(data.get(0)), true, 1e-8);
                    try (Context ctx = Smelter.open(device); Arena arena = Arena.ofConfined()) {
                        for (DType out : List.of(dtype, DType.F32)) {
                            Tensor got = run(ctx, arena, cfg, dtype, out, data, true);
                            String error = ComposedReference.compare(expect, data, got);
                            assertNull(error, () -> device + " " + dtype + " -> " + out + " n=" + n + ": " + error);
                        }
                    }
                }
    }

    static final String SLERP = """
            merge_method: slerp
            base_model: base
            models: [{model: other}]
            parameters: {t: %s}
            """;

    @Test
    void slerpEndpointsAreTheInputsExactly() throws Exception {
        for (DType dtype : DType.values()) {
            List<float[]> data = data(dtype, 1003, 1, 5, 0.02);
            try (Context ctx = Smelter.open(Device.cpu()); Arena arena = Arena.ofConfined()) {
                assertArrayEquals(data.get(0), run(ctx, arena, config(SLERP.formatted("0")), dtype, dtype, data, true)
                        .toFloatArray(), "t=0 gives base_model");
                assertArrayEquals(data.get(1), run(ctx, arena, config(SLERP.formatted("1")), dtype, dtype, data, true)
                        .toFloatArray(), "t=1 gives the other model");
            }
        }
    }

    @Test
    void slerpOfParallelVectorsIsLinear() throws Exception {
        for (DType dtype : DType.values()) {
            List<float[]> data = data(dtype, 777, 1, 9, 0.02);
            float[] twice = data.get(0).clone();
            for (int i = 0; i < twice.length; i++) twice[i] *= 2;  // exact in every dtype
            data.set(1, twice);
            PairStats s = new PairStats(2);
            try (Context ctx = Smelter.open(Device.cpu()); Arena arena = Arena.ofConfined()) {
                ctx.pairStats(List.of(TestData.tensor(arena, dtype, twice), TestData.tensor(arena, dtype, data.get(0))),
                        null, null, null, s);
                assertArrayEquals(new double[] {0.3, 0.7}, ComposedMethods.slerp(0.3, s), 0, "lerp weights");
                Tensor got = run(ctx, arena, config(SLERP.formatted("0.3")), dtype, DType.F32, data, true);
                for (int i = 0; i < twice.length; i++)
                    assertEquals(1.3 * data.get(0)[i], got.getFloat(i), 1e-6 * Math.abs(data.get(0)[i]) + 1e-30, "" + i);
                // Antiparallel is colinear too.
                for (int i = 0; i < twice.length; i++) twice[i] = -twice[i];
                s = new PairStats(2);
                ctx.pairStats(List.of(TestData.tensor(arena, dtype, twice), TestData.tensor(arena, dtype, data.get(0))),
                        null, null, null, s);
                assertArrayEquals(new double[] {0.3, 0.7}, ComposedMethods.slerp(0.3, s), 0, "lerp weights");
            }
        }
    }

    @Test
    void modelStockOfIdenticalTaskVectorsIsTheirMeanAndOfZeroOnesTheBase() throws Exception {
        String yaml = """
                merge_method: model_stock
                base_model: base
                models: [{model: a}, {model: b}, {model: c}]
                """;
        List<float[]> data = data(DType.BF16, 501, 1, 3, 0.001);
        List<float[]> same = List.of(data.get(0), data.get(1), data.get(1), data.get(1));
        List<float[]> none = List.of(data.get(0), data.get(0), data.get(0), data.get(0));
        try (Context ctx = Smelter.open(Device.cpu()); Arena arena = Arena.ofConfined()) {
            PairStats s = new PairStats(3);
            Tensor b = TestData.tensor(arena, DType.BF16, data.get(0)), x = TestData.tensor(arena, DType.BF16, data.get(1));
            ctx.pairStats(List.of(x, x, x), b, null, null, s);
            double[] w = ComposedMethods.modelStock(s, TENSOR);
            assertArrayEquals(new double[] {1.0 / 3, 1.0 / 3, 1.0 / 3}, w, 1e-15, "t = 1");
            assertArrayEquals(data.get(1), run(ctx, arena, config(yaml), DType.BF16, DType.BF16, same, true).toFloatArray());
            assertArrayEquals(data.get(0), run(ctx, arena, config(yaml), DType.BF16, DType.BF16, none, true).toFloatArray(),
                    "zero task vectors: t = 0, the base");
        }
    }
}
