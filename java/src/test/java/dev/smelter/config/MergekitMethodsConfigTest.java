package dev.smelter.config;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.smelter.merge.TensorSpecs;
import dev.smelter.methods.MergeMethods;
import dev.smelter.methods.NuSlerp;
import java.util.List;
import java.util.Set;
import org.junit.jupiter.api.Test;

/** Config parsing of nuslerp, nearswap, arcee_fusion, ram and ramplus_tl: parameters, defaults, ranges, refusals. */
class MergekitMethodsConfigTest {
    /** Through Smelter's YAML reader, as the CLI reads configs ({@code .nan}, {@code .inf} are floats). */
    static MergeConfig parse(String yaml) throws Exception {
        return MergeConfig.parse(YamlReader.readAll(yaml).get(0), java.nio.file.Path.of("/models"));
    }

    static String message(String yaml) {
        return org.junit.jupiter.api.Assertions.assertThrows(ConfigException.class, () -> parse(yaml)).getMessage();
    }

    @Test
    void parametersAndDefaultsAreMergekits() {
        assertEquals(List.of("weight", "nuslerp_row_wise", "nuslerp_flatten"),
                MergeMethods.Method.NUSLERP.parameters().stream().map(MergeMethods.Parameter::name).toList());
        assertEquals("false", MergeMethods.Method.NUSLERP.defaultOf("nuslerp_row_wise"));
        assertEquals("true", MergeMethods.Method.NUSLERP.defaultOf("nuslerp_flatten"));
        assertEquals(Set.of("weight"), MergeMethods.Method.NUSLERP.requiredTensorParameters());
        assertEquals(Set.of("t"), MergeMethods.Method.NEARSWAP.requiredGlobalParameters());
        assertTrue(MergeMethods.Method.ARCEE_FUSION.parameters().isEmpty());
        assertEquals("1e-5", MergeMethods.Method.RAM.defaultOf("epsilon"));
        assertEquals("0.1", MergeMethods.Method.RAMPLUS_TL.defaultOf("r"));
        assertEquals("0.2", MergeMethods.Method.RAMPLUS_TL.defaultOf("alpha"));
        assertEquals("1e-5", MergeMethods.Method.RAMPLUS_TL.defaultOf("epsilon"));
        for (var m : List.of(MergeMethods.Method.NEARSWAP, MergeMethods.Method.ARCEE_FUSION, MergeMethods.Method.RAM,
                MergeMethods.Method.RAMPLUS_TL))
            assertTrue(m.needsBase(), m.mergekitName());
        assertTrue(!MergeMethods.Method.NUSLERP.needsBase());
        // t from the weights, 0.5 when they sum to about 0 (mergekit's guard).
        assertEquals(0.75, NuSlerp.t(1, 3), 1e-15);
        assertEquals(0.5, NuSlerp.t(1, -1 + 1e-7), 0);
    }

    @Test
    void howEachTensorIsMerged() throws Exception {
        MergeConfig flat = parse("""
                merge_method: nuslerp
                models: [{model: b, parameters: {weight: 1}}, {model: c, parameters: {weight: 2}}]
                """);
        var how = TensorSpecs.tensorMerge(flat, "x", -1, 1);
        assertTrue(how.composed() && how.host() == null, "flattened: pair statistics and one native merge");
        MergeConfig rows = parse("""
                merge_method: nuslerp
                base_model: a
                models: [{model: b, parameters: {weight: 1}}, {model: c, parameters: {weight: 2}}]
                parameters: {nuslerp_flatten: false}
                """);
        assertNotNull(TensorSpecs.tensorMerge(rows, "x", -1, 1).host());
        for (String yaml : List.of(
                "merge_method: nearswap\nbase_model: a\nmodels: [{model: b}]\nparameters: {t: 0.001}\n",
                "merge_method: arcee_fusion\nbase_model: a\nmodels: [{model: b}]\n",
                "merge_method: ram\nbase_model: a\nmodels: [{model: b}, {model: c}]\n",
                "merge_method: ramplus_tl\nbase_model: a\nmodels: [{model: b}, {model: c}]\nparameters: {r: 0.5}\n")) {
            MergeConfig c = parse(yaml);
            assertNotNull(TensorSpecs.tensorMerge(c, "x", -1, 1).host(), yaml);
            assertNull(TensorSpecs.tensorMerge(c, "x", -1, 1).spec(), yaml);
        }
        // A listed base is dropped for nearswap (mergekit's easy_define removes it from the tensors).
        assertEquals(1, parse("merge_method: nearswap\nbase_model: a\nmodels: [{model: a}, {model: b}]\n"
                + "parameters: {t: 0.1}\n").models().size());
    }

    @Test
    void rangesAndModelCountsAreCheckedWhenTheConfigIsRead() {
        assertTrue(message("merge_method: nearswap\nbase_model: a\nmodels: [{model: b}]\n")
                .contains("parameters.t is required"));
        assertTrue(message("merge_method: nearswap\nbase_model: a\nmodels: [{model: b}]\nparameters: {t: -0.1}\n")
                .contains("parameters.t is -0.1; it must be a finite number >= 0"));
        assertTrue(message("merge_method: nearswap\nmodels: [{model: b}]\nparameters: {t: 0.1}\n")
                .contains("needs base_model"));
        assertTrue(message("merge_method: nearswap\nbase_model: a\nmodels: [{model: b}, {model: c}]\nparameters: {t: 0.1}\n")
                .contains("exactly one other model; got 2"));
        assertTrue(message("merge_method: arcee_fusion\nbase_model: a\nmodels: [{model: b}, {model: c}]\n")
                .contains("exactly one other model; got 2"));
        assertTrue(message("merge_method: nuslerp\nmodels: [{model: b, parameters: {weight: 1}}]\n")
                .contains("exactly two models"));
        assertTrue(message("merge_method: nuslerp\nmodels: [{model: b}, {model: c, parameters: {weight: 1}}]\n")
                .contains("models[0].parameters.weight is required"));
        assertTrue(message("merge_method: nuslerp\nbase_model: a\nmodels: [{model: a, parameters: {weight: 1}}, "
                + "{model: c, parameters: {weight: 1}}]\n").contains("nuslerp interpolates two models other than the base"));
        assertTrue(message("merge_method: nuslerp\nmodels: [{model: b, parameters: {weight: .nan}}, "
                + "{model: c, parameters: {weight: 1}}]\n").contains("must be a finite number"));
        assertTrue(message("merge_method: ram\nbase_model: a\nmodels: [{model: b}]\nparameters: {epsilon: -1e-5}\n")
                .contains("parameters.epsilon"));
        assertTrue(message("merge_method: ram\nbase_model: a\nmodels: [{model: b}]\nparameters: {epsilon: .inf}\n")
                .contains("parameters.epsilon"));
        // ram's epsilon is not DELLA's: 2 is a valid threshold (every delta below it is dropped).
        try {
            parse("merge_method: ram\nbase_model: a\nmodels: [{model: b}]\nparameters: {epsilon: 2}\n");
        } catch (Exception e) {
            throw new AssertionError(e);
        }
        assertTrue(message("merge_method: ramplus_tl\nbase_model: a\nmodels: [{model: b}]\nparameters: {epsilon: 0}\n")
                .contains("a finite number > 0"));
        assertTrue(message("merge_method: ramplus_tl\nbase_model: a\nmodels: [{model: b}]\nparameters: {alpha: -0.2}\n")
                .contains("parameters.alpha is -0.2"));
        assertTrue(message("merge_method: ramplus_tl\nbase_model: a\nmodels: [{model: b}]\nparameters: {r: .nan}\n")
                .contains("parameters.r"));
    }

    @Test
    void arceeFusionHasNothingToSweep() throws Exception {
        MergeConfig c = parse("merge_method: arcee_fusion\nbase_model: a\nmodels: [{model: b}]\n");
        String m = org.junit.jupiter.api.Assertions.assertThrows(ConfigException.class,
                () -> SweepGrid.of(List.of(SweepGrid.parseAxis("t=0.1,0.2"))).validate(c)).getMessage();
        assertTrue(m.contains("has no parameter 't' (its parameters: none: there is nothing to sweep)"), m);
    }

    @Test
    void aPerModelEpsilonIsIgnoredWithAWarningAsMergekitIgnoresIt() throws Exception {
        assertTrue(parse("merge_method: ram\nbase_model: a\nmodels: [{model: b, parameters: {epsilon: 0.1}}]\n")
                .warnings().stream().anyMatch(w -> w.contains("models[0].parameters.epsilon is ignored")));
    }
}
