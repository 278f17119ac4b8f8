package dev.smelter.config;

import dev.smelter.merge.TensorSpecs;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.dataformat.yaml.YAMLFactory;
import dev.smelter.MergeSpec;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;

class SweepGridTest {
    private static final String TIES = """
            merge_method: ties
            base_model: base
            models:
              - model: a
                parameters: {weight: 0.6, density: [0.2, 0.8]}
              - model: b
                parameters: {weight: 0.4, density: 0.5}
            """;

    static MergeConfig parse(String yaml) throws Exception {
        return MergeConfig.parse(new ObjectMapper(new YAMLFactory()).readTree(yaml), Path.of("/models"));
    }

    static List<String> texts(SweepGrid.Axis a) {
        return a.values().stream().map(SweepGrid.Value::text).toList();
    }

    @Test
    void rangesIncludeTheStopExactly() throws Exception {
        SweepGrid.Axis a = SweepGrid.parseAxis("density=0.4:0.9:0.1");
        assertEquals("density", a.name());
        assertEquals(-1, a.model());
        assertEquals(List.of("0.4", "0.5", "0.6", "0.7", "0.8", "0.9"), texts(a));
        assertEquals(0.7, a.values().get(3).value(), "decimal steps, not 0.4 + 3 * 0.1 in binary");
        assertEquals(List.of("1", "0.75", "0.5", "0.25", "0"), texts(SweepGrid.parseAxis("lambda=1:0:-0.25")));
        assertEquals(List.of("0.1", "0.4", "0.7"), texts(SweepGrid.parseAxis("lambda=0.1:0.9:0.3")), "stop not reached");
        // A stop within 1e-9 steps of the last value counts as reached, and is the last value.
        assertEquals(List.of("0", "0.3333333334", "0.6666666668", "1"), texts(SweepGrid.parseAxis("t=0:1:0.3333333334")));
        assertEquals(List.of("0", "0.3333333333", "0.6666666666", "0.9999999999"),
                texts(SweepGrid.parseAxis("t=0:1:0.3333333333")));
        assertEquals(List.of("2"), texts(SweepGrid.parseAxis("lambda=2:2:1")), "a one-value range");
        assertEquals(List.of("0.00001", "0.00002"), texts(SweepGrid.parseAxis("tol=1e-5:2e-5:1e-5")));
    }

    @Test
    void listsFlagsAndModelIndices() throws Exception {
        SweepGrid.Axis a = SweepGrid.parseAxis("density@1=0.5, 0.70 ,1");
        assertEquals("density", a.parameter());
        assertEquals(1, a.model());
        assertEquals("density@1", a.name());
        assertEquals(List.of("0.5", "0.7", "1"), texts(a));
        SweepGrid.Axis f = SweepGrid.parseAxis("normalize=true,FALSE");
        assertEquals(List.of("true", "false"), texts(f));
        assertEquals(1.0, f.values().get(0).value());
        assertEquals(0.0, f.values().get(1).value());
        assertEquals(List.of("-0.5", "3"), texts(SweepGrid.parseAxis("lambda=-0.5,3.000")));
    }

    @Test
    void badAxesAreRefusedWithTheReason() {
        for (String[] bad : new String[][] {
                {"density", "NAME=START:STOP:STEP"},
                {"density=", "no values"},
                {"density=0.4:0.9", "START:STOP:STEP"},
                {"density=0.4:0.9:0", "step"},
                {"density=0.9:0.4:0.1", "empty"},
                {"density=0.4,,0.5", "empty value"},
                {"density=0.4,abc", "'abc' is not a number"},
                {"density=0.5,0.50", "twice"},
                {"1density=0.5", "parameter name"},
                {"density@x=0.5", "parameter name"},
                {"lambda=0:1:0.00001", "more than"}}) {
            ConfigException e = assertThrows(ConfigException.class, () -> SweepGrid.parseAxis(bad[0]), bad[0]);
            assertTrue(e.getMessage().contains(bad[1]), bad[0] + ": " + e.getMessage());
        }
    }

    @Test
    void pointsAreTheCartesianProductFirstAxisSlowest() throws Exception {
        SweepGrid g = SweepGrid.of(List.of(SweepGrid.parseAxis("density=0.4,0.5"), SweepGrid.parseAxis("lambda=0.1:0.3:0.1")));
        assertEquals(6, g.size());
        assertEquals(List.of("density=0.4_lambda=0.1", "density=0.4_lambda=0.2", "density=0.4_lambda=0.3",
                "density=0.5_lambda=0.1", "density=0.5_lambda=0.2", "density=0.5_lambda=0.3"),
                g.points().stream().map(SweepGrid.Point::name).toList());
        assertEquals(Map.of("density", 0.5, "lambda", 0.2), g.points().get(4).parameters());
        assertThrows(ConfigException.class, () -> SweepGrid.of(List.of()));
        ConfigException twice = assertThrows(ConfigException.class,
                () -> SweepGrid.of(List.of(SweepGrid.parseAxis("lambda=1"), SweepGrid.parseAxis("lambda=2"))));
        assertTrue(twice.getMessage().contains("twice"), twice.getMessage());
    }

    @Test
    void applySetsConstantsForEveryModelOneModelOrTheSeed() throws Exception {
        MergeConfig c = parse(TIES);
        SweepGrid g = SweepGrid.of(List.of(SweepGrid.parseAxis("density@0=0.3"), SweepGrid.parseAxis("lambda=0.5")));
        g.validate(c);
        MergeConfig p = SweepGrid.apply(c, g.points().get(0));
        MergeSpec s = TensorSpecs.spec(p, "model.layers.3.mlp.up_proj.weight", 3, 8);
        assertEquals(0.3, s.densities()[0], "model 0's gradient replaced by the grid's constant");
        assertEquals(0.5, s.densities()[1], "model 1 keeps its density");
        assertEquals(0.5f, s.lambda());
        assertEquals(0.6f, s.weights()[0]);
        MergeSpec unchanged = TensorSpecs.spec(c, "model.layers.7.mlp.up_proj.weight", 7, 8);
        assertEquals(0.8, unchanged.densities()[0], "the original config is not modified");
        MergeSpec all = TensorSpecs.spec(SweepGrid.apply(c, SweepGrid.of(List.of(SweepGrid.parseAxis("density=0.9")))
                .points().get(0)), "x", -1, 8);
        assertEquals(0.9, all.densities()[0]);
        assertEquals(0.9, all.densities()[1]);

        MergeConfig dare = parse(TIES.replace("ties", "dare_ties"));
        SweepGrid seeds = SweepGrid.of(List.of(SweepGrid.parseAxis("seed=7,8")));
        seeds.validate(dare);
        assertEquals(8, SweepGrid.apply(dare, seeds.points().get(1)).seed());
    }

    @Test
    void validationNamesTheMethodsParameters() throws Exception {
        MergeConfig ties = parse(TIES);
        String[][] cases = {
                {"t=0.5", "merge_method ties has no parameter 't'"},
                {"density=0:1:0.5", "it must be a fraction in (0, 1]"},
                {"density@2=0.5", "there is no models[2]"},
                {"lambda@0=0.5", "global parameter"},
                {"normalize=0.5", "true or false"},
                {"seed=1,2", "draws no random masks"}};
        for (String[] c : cases) {
            SweepGrid g = SweepGrid.of(List.of(SweepGrid.parseAxis(c[0])));
            ConfigException e = assertThrows(ConfigException.class, () -> g.validate(ties), c[0]);
            assertTrue(e.getMessage().contains(c[1]), c[0] + ": " + e.getMessage());
        }
        SweepGrid clash = SweepGrid.of(List.of(SweepGrid.parseAxis("density=0.5"), SweepGrid.parseAxis("density@1=0.4")));
        assertThrows(ConfigException.class, () -> clash.validate(ties));
        SweepGrid ok = SweepGrid.of(List.of(SweepGrid.parseAxis("density@0=0.5"), SweepGrid.parseAxis("density@1=0.4"),
                SweepGrid.parseAxis("weight@1=0.1,0.2"), SweepGrid.parseAxis("normalize=true,false"),
                SweepGrid.parseAxis("rescale=0,1")));
        ok.validate(ties);
        MergeConfig slerp = parse("merge_method: slerp\nbase_model: base\nmodels:\n  - model: a\nparameters: {t: 0.5}\n");
        SweepGrid.of(List.of(SweepGrid.parseAxis("t=0:1:0.25"))).validate(slerp);
        MergeConfig stock = parse("merge_method: model_stock\nbase_model: base\nmodels:\n  - model: a\n  - model: b\n");
        SweepGrid.of(List.of(SweepGrid.parseAxis("filter_wise=false,true"))).validate(stock);
        MergeConfig ram = parse("merge_method: ramplus_tl\nbase_model: base\nmodels:\n  - model: a\n  - model: b\n");
        SweepGrid.of(List.of(SweepGrid.parseAxis("epsilon=1e-5,1e-3"), SweepGrid.parseAxis("alpha=0:1:0.5"))).validate(ram);
        assertThrows(ConfigException.class, () -> SweepGrid.of(List.of(SweepGrid.parseAxis("epsilon=0,1e-3"))).validate(ram),
                "ramplus_tl's epsilon is > 0");
        assertThrows(ConfigException.class, () -> SweepGrid.of(List.of(SweepGrid.parseAxis("epsilon@0=0.1")))
                .validate(ram), "ram's epsilon is global");
    }

    @Test
    void configGridSection() throws Exception {
        MergeConfig c = parse(TIES + "smelter:\n  seed: 3\n  grid:\n    density: [0.4, 0.5]\n    lambda: \"0.1:0.3:0.1\"\n"
                + "    normalize: [true, false]\n    weight@1: 0.25\n");
        assertNotNull(c.grid());
        assertEquals(List.of("density", "lambda", "normalize", "weight@1"),
                c.grid().axes().stream().map(SweepGrid.Axis::name).toList());
        assertEquals(12, c.grid().size());
        assertEquals(List.of("0.1", "0.2", "0.3"), texts(c.grid().axes().get(1)));
        assertEquals(3, c.seed());
        assertNull(parse(TIES).grid());
        for (String[] bad : new String[][] {
                {"smelter: {grid: {}}", "non-empty mapping"},
                {"smelter: {grid: {density: []}}", "no values"},
                {"smelter: {grid: {density: [0.4, x]}}", "not a number"},
                {"smelter: {grid: {density: [{a: 1}]}}", "a number or true/false"},
                {"smelter: {grid: {lambda: \"1:0:1\"}}", "empty"},
                {"smelter: {grid: {t: [0.5]}}", "has no parameter 't'"},
                {"smelter: {grid: [density]}", "non-empty mapping"}}) {
            ConfigException e = assertThrows(ConfigException.class, () -> parse(TIES + bad[0]), bad[0]);
            assertTrue(e.getMessage().contains(bad[1]), bad[0] + ": " + e.getMessage());
        }
    }
}
