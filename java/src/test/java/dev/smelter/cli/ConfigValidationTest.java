package dev.smelter.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.smelter.config.MergeConfig;
import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Configuration errors are found before anything is read, with exit code 2 and a message naming the key: values
 * out of range (each parameter, gradients and filters included, DELLA's combinations per tensor), too many
 * models, YAML aliases resolved as mergekit's loader resolves them, and a YAML bomb bounded.
 */
class ConfigValidationTest {
    @TempDir
    static Path dir;

    @BeforeAll
    static void checkpoints() {
        assertEquals(0, SmelterCli.run("demo-checkpoints", dir.toString(), "--hidden", "32", "--layers", "2", "--vocab", "31"));
    }

    static CliRun.Run merge(String yaml) throws Exception {
        Path cfg = Files.createTempFile(dir, "cfg", ".yml");
        Files.writeString(cfg, yaml);
        Path out = dir.resolve("out-" + cfg.getFileName());
        CliRun.Run r = CliRun.cli("merge", "--device", "cpu", "-q", cfg.toString(), out.toString());
        assertFalse(Files.exists(out), "nothing written for " + yaml);
        return r;
    }

    static void refused(String yaml, String... expected) throws Exception {
        CliRun.Run r = merge(yaml);
        assertEquals(2, r.code(), yaml + "\n" + r.err());
        for (String e : expected) assertTrue(r.err().contains(e), "expected '" + e + "' in: " + r.err());
    }

    static final String TIES = """
            merge_method: ties
            base_model: base
            models:
              - model: expert-de
                parameters: {weight: 0.5, density: DENSITY}
            """;

    @Test
    void valuesOutOfRangeAreConfigErrors() throws Exception {
        refused(TIES.replace("DENSITY", "1.5"), "models[0].parameters.density is 1.5", "(0, 1]");
        refused(TIES.replace("DENSITY", "0"), "models[0].parameters.density is 0");
        refused(TIES.replace("DENSITY", "[0.5, -0.1]"), "models[0].parameters.density is -0.1");
        refused(TIES.replace("DENSITY", "[{filter: mlp, value: 2}, {value: 0.5}]"), "density is 2");
        refused(TIES.replace("DENSITY", "0.5").replace("weight: 0.5", "weight: .nan"), "weight is NaN", "finite");
        refused(TIES.replace("DENSITY", "0.5") + "parameters: {lambda: .inf}\n", "parameters.lambda is Infinity");
        refused("""
                merge_method: breadcrumbs
                base_model: base
                models: [{model: expert-de, parameters: {weight: 1, density: 0.5, gamma: 1.5}}]
                """, "models[0].parameters.gamma is 1.5");
        for (String topk : new String[] {"-1", "2", "0"})
            refused("""
                    merge_method: sce
                    base_model: base
                    models: [{model: expert-de}, {model: expert-fr}]
                    parameters: {select_topk: TOPK}
                    """.replace("TOPK", topk), "parameters.select_topk is " + topk);
        refused("""
                merge_method: karcher
                models: [{model: expert-de}, {model: expert-fr}]
                parameters: {max_iter: 2.5}
                """, "parameters.max_iter is 2.5");
        // A combination: found per tensor by the planner, still before any tensor is read.
        refused("""
                merge_method: della
                base_model: base
                models: [{model: expert-de, parameters: {weight: 1, density: 0.2, epsilon: 0.3}}]
                """, "models[0] at tensor", "density +- epsilon must lie in (0, 1]");
    }

    @Test
    void mergekitMoeConfigsGetAClearMessage() throws Exception {
        refused("""
                base_model: base
                gate_mode: hidden
                dtype: bfloat16
                experts_per_token: 2
                experts:
                  - source_model: expert-de
                    positive_prompts: ["Guten Tag"]
                  - source_model: expert-fr
                    positive_prompts: ["Bonjour"]
                """, "mergekit-moe config", "mixture-of-experts", "not a weight-space merge", "run it with mergekit-moe");
    }

    @Test
    void moreModelsThanOneMergeTakes() throws Exception {
        StringBuilder yaml = new StringBuilder("merge_method: task_arithmetic\nbase_model: base\nmodels:\n");
        for (int i = 0; i <= MergeConfig.MAX_MODELS; i++) yaml.append("  - {model: expert-de, parameters: {weight: 0.01}}\n");
        refused(yaml.toString(), "65 models", "at most 64");
    }

    @Test
    void yamlAliasesAreResolvedAndBombsBounded() throws Exception {
        // mergekit's yaml.safe_load resolves *de to the anchored path; read as the text "de" it names no model.
        Path cfg = dir.resolve("alias.yml"), out = dir.resolve("alias-out");
        Files.writeString(cfg, """
                merge_method: task_arithmetic
                base_model: base
                models:
                  - model: &de expert-de
                    parameters: &p {weight: 0.5}
                  - model: expert-fr
                    parameters: *p
                """);
        CliRun.Run ok = CliRun.cli("merge", "--device", "cpu", "-q", cfg.toString(), out.toString());
        assertEquals(0, ok.code(), ok.err());
        MergeConfig c = MergeConfig.load(cfg, dir);
        assertEquals(0.5, c.models().get(1).parameters().get("weight").resolve("x", -1, 1));
        refused("merge_method: linear\nmodels:\n  - model: *nowhere\n", "*nowhere names no anchor");
        StringBuilder bomb = new StringBuilder("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for (int i = 1; i < 9; i++) {
            bomb.append("a").append(i).append(": &a").append(i).append(" [");
            for (int j = 0; j < 10; j++) bomb.append(j == 0 ? "" : ", ").append("*a").append(i - 1);
            bomb.append("]\n");
        }
        long t0 = System.nanoTime();
        refused(bomb + "merge_method: linear\nmodels: [{model: expert-de, parameters: {weight: 1}}]\n",
                "expands to more than");
        assertTrue(System.nanoTime() - t0 < 5_000_000_000L, "the bomb is refused quickly");
    }
}
