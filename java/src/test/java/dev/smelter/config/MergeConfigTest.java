package dev.smelter.config;

import dev.smelter.methods.MergeMethods;
import dev.smelter.merge.TensorSpecs;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.dataformat.yaml.YAMLFactory;
import dev.smelter.DType;
import dev.smelter.MergeSpec;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;

class MergeConfigTest {
    private static final Path DIR = Path.of("/models");

    static MergeConfig parse(String yaml) throws Exception {
        return MergeConfig.parse(new ObjectMapper(new YAMLFactory()).readTree(yaml), DIR);
    }

    @Test
    void tiesConfigAsMergekitWritesIt() throws Exception {
        MergeConfig c = parse("""
                merge_method: ties
                base_model: base
                models:
                  - model: base
                  - model: a
                    parameters: {weight: 0.7, density: 0.4}
                  - model: /abs/b
                    parameters: {weight: 0.3, density: 0.6}
                parameters: {normalize: false, int8_mask: true}
                dtype: float16
                """);
        assertEquals(MergeMethods.Method.TIES, c.method());
        assertEquals(DIR.resolve("base"), c.baseModel());
        assertEquals(2, c.models().size(), "the base listed among the models is dropped");
        assertEquals(Path.of("/abs/b"), c.models().get(1).path());
        assertEquals(DType.F16, c.outDType());
        assertTrue(c.warnings().stream().anyMatch(w -> w.contains("int8_mask")), c.warnings().toString());
        MergeSpec s = TensorSpecs.spec(c, "model.layers.3.mlp.up_proj.weight", 3, 8);
        assertArrayEquals(new float[] {0.7f, 0.3f}, s.weights());
        assertArrayEquals(new double[] {0.4, 0.6}, s.densities(), "densities stay in double (mergekit's counts)");
        assertEquals(MergeSpec.Sparsify.MAGNITUDE, s.sparsify());
        assertEquals(MergeSpec.Consensus.SUM, s.consensus());
        assertEquals(false, s.normalize(), "explicit normalize: false wins over the ties default");
        assertEquals(MergeSpec.tensorKey("model.layers.3.mlp.up_proj.weight"), s.tensorKey());
    }

    @Test
    void dtypeNamesAsMergekitReadsThem() throws Exception {
        // mergekit's dtype_from_name drops a leading "torch." (the way torch prints its dtypes).
        String head = "merge_method: linear\nmodels:\n  - model: a\n    parameters: {weight: 1}\n";
        MergeConfig c = parse(head + "dtype: torch.float32\nout_dtype: torch.bfloat16\n");
        assertEquals(DType.F32, c.computeDType());
        assertEquals(DType.BF16, c.outDType());
        assertEquals(DType.F16, parse(head + "dtype: torch.float16\n").outDType());
        assertMessage(head + "dtype: torch.int8\n", "unsupported dtype 'torch.int8'");
    }

    /** mergekit's evaluate_setting for a gradient at position t (config.py), written out in double. */
    static double mergekitGradient(double[] v, double t) {
        double scaled = t * (v.length - 1);
        int i0 = (int) scaled, i1 = Math.min(v.length - 1, i0 + 1);
        double frac = scaled - i0;
        return (1 - frac) * v[i0] + frac * v[i1];
    }

    /**
     * mergekit's planner (plan.py) evaluates gradients at t = idx / (layers - 1) in the layers, t = 1 when there is
     * one layer, and t = 0 for every tensor outside the layers: embeddings, the final norm and lm_head alike.
     */
    @Test
    void gradientsAreEvaluatedWhereMergekitsPlannerPutsEachTensor() throws Exception {
        double[] g = {0.2, 0.8};
        ParameterValue w = ParameterValue.parse(new ObjectMapper().readTree("[0.2, 0.8]"), "weight");
        for (String outside : new String[] {"model.embed_tokens.weight", "model.norm.weight", "lm_head.weight",
                "transformer.ln_f.weight"})
            assertEquals(0.2, w.resolve(outside, -1, 32), outside);
        assertEquals(0.8, w.resolve("model.layers.0.mlp.up_proj.weight", 0, 1), "one layer: t = 1");
        double[] v = {0.1, 0.55, 0.9, 0.3, 0.7};
        ParameterValue grad = ParameterValue.parse(new ObjectMapper().readTree("[0.1, 0.55, 0.9, 0.3, 0.7]"), "w");
        for (int layers : new int[] {2, 3, 7, 32, 80})
            for (int layer = 0; layer < layers; layer++)
                assertEquals(mergekitGradient(v, (double) layer / (layers - 1)),
                        grad.resolve("model.layers." + layer + ".self_attn.o_proj.weight", layer, layers),
                        "layer " + layer + " of " + layers);
        assertEquals(mergekitGradient(g, 1.0), w.resolve("model.layers.31.mlp.down_proj.weight", 31, 32));
    }

    @Test
    void linearTakesTheBaseAsMergekitDoes() throws Exception {
        MergeConfig listed = parse("merge_method: linear\nbase_model: base\nmodels:\n  - model: base\n"
                + "    parameters: {weight: 0.4}\n  - model: a\n    parameters: {weight: 0.6}\n");
        assertEquals(2, listed.models().size(), "the listed base is a weighted source");
        assertEquals(DIR.resolve("base"), listed.models().get(0).path());
        assertArrayEquals(new float[] {0.4f, 0.6f}, TensorSpecs.spec(listed, "x", -1, 1).weights());
        MergeConfig unlisted = parse("merge_method: linear\nbase_model: base\nparameters: {weight: 0.5}\nmodels:\n"
                + "  - model: a\n  - model: b\n    parameters: {weight: 2}\n");
        assertEquals(3, unlisted.models().size(), "mergekit adds the unlisted base to the sources");
        assertArrayEquals(new float[] {0.5f, 2f, 0.5f}, TensorSpecs.spec(unlisted, "x", -1, 1).weights());
        assertMessage("merge_method: linear\nbase_model: base\nmodels:\n  - model: a\n    parameters: {weight: 1}\n",
                "has no weight");
        MergeConfig ties = parse("merge_method: ties\nbase_model: base\nmodels:\n  - model: base\n"
                + "  - model: a\n    parameters: {weight: 1, density: 0.5}\n");
        assertEquals(1, ties.models().size(), "methods on task vectors take the base once, as the base");
    }

    @Test
    void methodDefaultsFollowMergekit() throws Exception {
        String models = "\nbase_model: base\nmodels:\n  - model: a\n    parameters: {weight: 1.0, density: 0.5}\n";
        assertTrue(TensorSpecs.spec(parse("merge_method: ties" + models), "x", -1, 1).normalize());
        MergeSpec ta = TensorSpecs.spec(parse("merge_method: task_arithmetic\nbase_model: base\nmodels:\n  - model: a\n"
                + "    parameters: {weight: 1.0}\n"), "x", -1, 1);
        assertEquals(false, ta.normalize());
        assertNull(ta.densities());
        MergeSpec dare = TensorSpecs.spec(parse("merge_method: dare_linear" + models), "x", -1, 1);
        assertEquals(MergeSpec.Rescale.L1, dare.rescale(), "mergekit's rescale=true is the L1 rescale");
        assertEquals(MergeSpec.Sparsify.RANDOM, dare.sparsify());
        MergeSpec lin = TensorSpecs.spec(parse("merge_method: linear\nmodels:\n  - model: a\n    parameters: {weight: 2}\n"),
                "x", -1, 1);
        assertEquals(MergeSpec.Method.LINEAR, lin.method());
        assertTrue(lin.normalize());
    }

    @Test
    void gradientsInterpolateOverLayersAndFiltersPickByName() throws Exception {
        MergeConfig c = parse("""
                merge_method: task_arithmetic
                base_model: base
                models:
                  - model: a
                    parameters:
                      weight:
                        - filter: mlp
                          value: [0.0, 1.0]
                        - value: 0.5
                """);
        var w = c.models().get(0).parameters().get("weight");
        assertEquals(0.0, w.resolve("model.layers.0.mlp.up_proj.weight", 0, 5), 1e-12);
        assertEquals(0.5, w.resolve("model.layers.2.mlp.up_proj.weight", 2, 5), 1e-12);
        assertEquals(1.0, w.resolve("model.layers.4.mlp.up_proj.weight", 4, 5), 1e-12);
        assertEquals(0.5, w.resolve("model.layers.4.self_attn.q_proj.weight", 4, 5), 1e-12);
        var g = new ParameterValue.Gradient(new double[] {0.1, 0.3, 0.9});
        assertEquals(0.2, g.resolve("model.layers.1.x", 1, 5), 1e-12, "t=0.25 lies between 0.1 and 0.3");
        assertEquals(0.1, g.resolve("model.embed_tokens.weight", -1, 5), 1e-12);
        assertEquals(0.1, g.resolve("lm_head.weight", -1, 5), 1e-12, "mergekit plans lm_head at t = 0 too");
        assertEquals(0.1, g.resolve("model.norm.weight", -1, 5), 1e-12);
    }

    @Test
    void mistakesGetClearErrors() {
        assertMessage("merge_method: slerpy\nmodels:\n  - model: a\n", "merge_method 'slerpy' is not supported");
        assertMessage("merge_method: ties\nmodels:\n  - model: a\n    parameters: {weight: 1}\n", "needs base_model");
        assertMessage("merge_method: ties\nbase_model: b\nmodels:\n  - model: a\n    parameters: {density: 0.5}\n",
                "models[0].parameters.weight is required");
        assertMessage("merge_method: ties\nbase_model: b\nmodels:\n  - model: a\n    parameters: {weight: 1, dens: 0.5}\n",
                "models[0].parameters.dens is not a parameter");
        assertMessage("merge_method: ties\nbase_model: b\nmodelz: []\n", "unknown key 'modelz'");
        assertMessage("merge_method: ties\nbase_model: b\nmodels:\n  - model: a\n    parameters: {weight: 1}\ndtype: int8\n",
                "unsupported dtype 'int8'");
        assertMessage("merge_method: ties\nbase_model: b\nmodels:\n  - model: a\n    parameters: {weight: 1}\n"
                + "smelter: {trim_scope: layer}\n", "trim_scope must be 'tensor' or 'model'");
    }

    /** mergekit's ConfigReader.parameter: a model's filter list without a match asks the top level, then the default. */
    @Test
    void filterListsWithoutACatchAllFallBackToTheNextLevel() throws Exception {
        MergeConfig c = parse("merge_method: ties\nbase_model: b\nmodels:\n  - model: a\n    parameters:\n"
                + "      weight:\n        - filter: mlp\n          value: 1\n"
                + "      density:\n        - filter: self_attn\n          value: 0.3\n"
                + "parameters:\n  weight:\n    - filter: \"*\"\n      value: 0.5\n"
                + "  lambda:\n    - filter: lm_head\n      value: 2\n");
        var mlp = dev.smelter.merge.TensorSpecs.spec(c, "model.layers.0.mlp.up_proj.weight", 0, 2);
        assertEquals(1.0f, mlp.weights()[0]);
        assertEquals(1.0, mlp.densities()[0], "no density for mlp anywhere: ties' default 1");
        assertEquals(1.0f, mlp.lambda(), "lambda's default");
        var attn = dev.smelter.merge.TensorSpecs.spec(c, "model.layers.0.self_attn.q_proj.weight", 0, 2);
        assertEquals(0.5f, attn.weights()[0], "the top-level \"*\" entry");
        assertEquals(0.3, attn.densities()[0]);
        assertEquals(2.0f, dev.smelter.merge.TensorSpecs.spec(c, "lm_head.weight", -1, 2).lambda());
        // A required parameter without a value for some tensor fails before anything is read, naming it.
        MergeConfig missing = parse("merge_method: ties\nbase_model: b\nmodels:\n  - model: a\n    parameters:\n"
                + "      weight:\n        - filter: mlp\n          value: 1\n");
        dev.smelter.merge.TensorSpecs.checkTensor(missing, "model.layers.0.mlp.up_proj.weight", 0, 2);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> dev.smelter.merge.TensorSpecs.checkTensor(missing, "model.norm.weight", -1, 2));
        assertTrue(e.getMessage().contains("models[0].parameters.weight has no value for tensor model.norm.weight"),
                e.getMessage());
    }

    private static void assertMessage(String yaml, String expected) {
        ConfigException e = assertThrows(ConfigException.class, () -> parse(yaml));
        assertTrue(e.getMessage().contains(expected), "message '" + e.getMessage() + "' lacks '" + expected + "'");
    }

    @Test
    void layerIndexFromTensorNames() {
        assertEquals(12, TensorNames.layerIndex("model.layers.12.mlp.up_proj.weight"));
        assertEquals(3, TensorNames.layerIndex("transformer.h.3.attn.c_attn.weight"));
        assertEquals(-1, TensorNames.layerIndex("model.embed_tokens.weight"));
        assertTrue(TensorNames.isVocabMatrix("lm_head.weight"));
    }
}
