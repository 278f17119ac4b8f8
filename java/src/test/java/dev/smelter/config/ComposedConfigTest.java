package dev.smelter.config;

import dev.smelter.methods.MergeMethods;
import dev.smelter.merge.TensorSpecs;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.dataformat.yaml.YAMLFactory;
import java.nio.file.Path;
import java.util.Set;
import org.junit.jupiter.api.Test;

/** Config parsing of the composed methods: mergekit's parameters, defaults and the refusals. */
class ComposedConfigTest {
    static MergeConfig parse(String yaml) throws Exception {
        return MergeConfig.parse(new ObjectMapper(new YAMLFactory()).readTree(yaml), Path.of("/models"));
    }

    static String message(String yaml) {
        return assertThrows(ConfigException.class, () -> parse(yaml)).getMessage();
    }

    @Test
    void slerpAsMergekitWritesIt() throws Exception {
        MergeConfig c = parse("""
                merge_method: slerp
                base_model: a
                models: [{model: a}, {model: b}]
                parameters:
                  t:
                    - filter: self_attn
                      value: [0, 0.5, 0.3, 0.7, 1]
                    - value: 0.5
                dtype: bfloat16
                """);
        assertEquals(MergeMethods.Method.SLERP, c.method());
        assertEquals(1, c.models().size(), "the base is the t=0 end, not a model");
        assertTrue(c.warnings().isEmpty(), "no 'task vector is zero' warning for slerp: " + c.warnings());
        assertTrue(TensorSpecs.tensorMerge(c, "model.layers.0.self_attn.q_proj.weight", 0, 3).composed());
    }

    @Test
    void refusals() throws Exception {
        assertTrue(message("""
                merge_method: slerp
                base_model: a
                models: [{model: a}, {model: b}, {model: c}]
                parameters: {t: 0.5}
                """).contains("exactly two models"));
        assertTrue(message("""
                merge_method: slerp
                models: [{model: a}, {model: b}]
                parameters: {t: 0.5}
                """).contains("needs base_model"));
        assertTrue(message("""
                merge_method: slerp
                base_model: a
                models: [{model: b}]
                """).contains("parameters.t is required"));
        // A parameter of another method is ignored with a warning, as mergekit ignores it; an unknown name fails.
        assertTrue(parse("""
                merge_method: slerp
                base_model: a
                models: [{model: b, parameters: {weight: 1}}]
                parameters: {t: 0.5}
                """).warnings().contains("models[0].parameters.weight is ignored: this merge method does not take it "
                + "here (allowed: none)"));
        assertTrue(message("""
                merge_method: slerp
                base_model: a
                models: [{model: b, parameters: {wieght: 1}}]
                parameters: {t: 0.5}
                """).contains("wieght is not a parameter"));
        assertTrue(message("""
                merge_method: model_stock
                base_model: a
                models: [{model: a}, {model: b}]
                """).contains("at least two models"));
        assertTrue(message("""
                merge_method: multislerp
                models: [{model: b}, {model: c, parameters: {weight: 1}}]
                """).contains("weight is required"));
    }

    @Test
    void defaultsFollowMergekit() throws Exception {
        MergeConfig ms = parse("""
                merge_method: model_stock
                base_model: a
                models: [{model: b}, {model: c}]
                parameters: {filter_wise: false}
                """);
        assertTrue(TensorSpecs.tensorMerge(ms, "x", -1, 1).composed());
        MergeConfig rows = parse("""
                merge_method: model_stock
                base_model: a
                models: [{model: b}, {model: c}]
                parameters: {filter_wise: true}
                """);
        assertNotNull(TensorSpecs.tensorMerge(rows, "x", -1, 1).host(), "filter_wise: one t per row, in Java");
        assertEquals(Set.of("max_iter", "tol"), MergeMethods.Method.KARCHER.globalParameters());
        assertEquals("10", MergeMethods.Method.KARCHER.parameters().get(0).defaultValue());
        assertEquals("1e-5", MergeMethods.Method.KARCHER.parameters().get(1).defaultValue());
        assertEquals(Set.of("weight"), MergeMethods.Method.MULTISLERP.tensorParameters());
        assertTrue(MergeMethods.Method.LINEAR.defaultNormalize());
        assertTrue(MergeMethods.Method.DARE_TIES.defaultRescale());
        assertFalse(MergeMethods.Method.TIES.defaultRescale());
        assertFalse(MergeMethods.Method.TIES.composed());
        assertTrue(parse("""
                merge_method: karcher
                models: [{model: b}, {model: c}]
                parameters: {max_iter: 3, tol: 1e-6, t: 1}
                """).warnings().get(0).startsWith("parameters.t is ignored"));
        assertTrue(message("""
                merge_method: karcher
                models: [{model: b}, {model: c}]
                parameters: {max_iter: 3, tol: 1e-6, tt: 1}
                """).contains("tt is not a parameter"));
    }
}
