package dev.smelter;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import com.fasterxml.jackson.dataformat.yaml.YAMLFactory;
import dev.smelter.cli.CliRun;
import dev.smelter.config.TensorNames;
import dev.smelter.io.Checkpoint;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;
import java.util.stream.Stream;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * {@code smelter sweep} end to end on small generated checkpoints: every configuration's checkpoint is
 * bit-identical to {@code smelter merge} of that configuration alone (written as its own YAML), the statistics
 * equal an independent float64 computation from the merged tensors, and failures leave nothing behind.
 */
class CliSweepTest {
    @TempDir
    static Path dir;
    static Path bf16, f32;
    static final ObjectMapper YAML = new ObjectMapper(new YAMLFactory());
    static final Set<String> PER_MODEL = Set.of("weight", "density");

    @BeforeAll
    static void checkpoints() {
        bf16 = dir.resolve("bf16");
        f32 = dir.resolve("f32");
        assertEquals(0, CliRun.cli("demo-checkpoints", bf16.toString(), "--hidden", "32", "--layers", "2", "--vocab", "61").code());
        assertEquals(0, CliRun.cli("demo-checkpoints", f32.toString(), "--hidden", "32", "--layers", "2", "--vocab", "61",
                "--dtype", "f32").code());
    }

    static CliRun.Run sweep(String... args) {
        List<String> a = new ArrayList<>(List.of("sweep", "--device", "cpu", "-q"));
        a.addAll(List.of(args));
        return CliRun.cli(a.toArray(String[]::new));
    }

    static void ok(CliRun.Run r) {
        assertEquals(0, r.code(), r.out() + r.err());
    }

    /**
     * Writes {@code yaml} with these values (written here, independently of the sweep's own substitution) beside
     * it, and merges it with {@code smelter merge}.
     */
    static Path mergeOne(Path yaml, Map<String, Object> values, String name) throws Exception {
        ObjectNode root = (ObjectNode) YAML.readTree(yaml.toFile());
        ObjectNode smelter = root.has("smelter") ? (ObjectNode) root.get("smelter") : root.putObject("smelter");
        smelter.remove("grid");
        for (Map.Entry<String, Object> e : values.entrySet()) {
            String key = e.getKey();
            JsonNode v = YAML.valueToTree(e.getValue());
            if (key.equals("seed")) {
                smelter.set("seed", v);
                continue;
            }
            String param = key.contains("@") ? key.substring(0, key.indexOf('@')) : key;
            int only = key.contains("@") ? Integer.parseInt(key.substring(key.indexOf('@') + 1)) : -1;
            if (!PER_MODEL.contains(param)) {
                (root.has("parameters") ? (ObjectNode) root.get("parameters") : root.putObject("parameters")).set(param, v);
                continue;
            }
            int i = 0;
            for (JsonNode m : root.get("models")) {
                if (m.path("model").asText().equals(root.path("base_model").asText())) continue;
                if (only < 0 || only == i) {
                    ObjectNode p = m.has("parameters") ? (ObjectNode) m.get("parameters") : ((ObjectNode) m).putObject("parameters");
                    p.set(param, v);
                }
                i++;
            }
        }
        Path single = yaml.resolveSibling("single-" + name.replaceAll("[^A-Za-z0-9.]", "_") + ".yml");
        YAML.writeValue(single.toFile(), root);
        Path out = dir.resolve("merged").resolve(yaml.getFileName() + "-" + name);
        CliRun.Run r = CliRun.cli("merge", "--device", "cpu", "-q", single.toString(), "-o", out.toString());
        assertEquals(0, r.code(), r.err());
        return out;
    }

    static void assertSameCheckpoint(Path expected, Path actual) throws Exception {
        try (Checkpoint a = Checkpoint.open(expected); Checkpoint b = Checkpoint.open(actual)) {
            assertEquals(a.tensorNames(), b.tensorNames());
            for (String t : a.tensorNames()) {
                assertEquals(a.info(t).dtype(), b.info(t).dtype(), t);
                assertEquals(-1, a.data(t).mismatch(b.data(t)), actual.getFileName() + ": " + t);
            }
        }
        assertTrue(Files.isRegularFile(actual.resolve("config.json")), "config.json copied");
    }

    /** The sweep's checkpoints for {@code points} (name to values) against smelter merge of each. */
    static void assertEveryConfigurationMatchesMerge(Path yaml, Path out, Map<String, Map<String, Object>> points)
            throws Exception {
        List<String> rows = Files.readAllLines(out.resolve("configs.csv"));
        assertEquals(points.size() + 1, rows.size(), rows.toString());
        List<String> names = rows.stream().skip(1).map(r -> r.substring(0, r.indexOf(','))).toList();
        assertEquals(List.copyOf(points.keySet()), names, "one row per configuration, first axis slowest");
        for (var e : points.entrySet()) assertSameCheckpoint(mergeOne(yaml, e.getValue(), e.getKey()), out.resolve(e.getKey()));
    }

    static Map<String, Object> values(Object... kv) {
        Map<String, Object> m = new LinkedHashMap<>();
        for (int i = 0; i < kv.length; i += 2) m.put((String) kv[i], kv[i + 1]);
        return m;
    }

    @Test
    void tiesDensityByLambdaEqualsMergingEachConfiguration() throws Exception {
        Path out = dir.resolve("ties-sweep");
        CliRun.Run r = sweep(bf16.resolve("ties.yml").toString(), "--grid", "density=0.3:0.7:0.2", "--grid", "lambda=0.5,1",
                "--grid", "density@1=0.9", "-o", out.toString(), "--compare-sequential", "--max-shard-size", "40kB");
        // density and density@1 both setting model 1: refused.
        assertEquals(2, r.code(), r.err());
        assertTrue(r.err().contains("density@1"), r.err());
        r = sweep(bf16.resolve("ties.yml").toString(), "--grid", "density@0=0.3:0.7:0.2", "--grid", "lambda=0.5,1",
                "--grid", "density@2=0.9", "-o", out.toString(), "--compare-sequential", "--max-shard-size", "40kB");
        ok(r);
        Map<String, Map<String, Object>> points = new LinkedHashMap<>();
        for (String d : List.of("0.3", "0.5", "0.7"))
            for (String l : List.of("0.5", "1"))
                points.put("density@0=" + d + "_lambda=" + l + "_density@2=0.9",
                        values("density@0", Double.parseDouble(d), "lambda", Double.parseDouble(l), "density@2", 0.9));
        assertEveryConfigurationMatchesMerge(bf16.resolve("ties.yml"), out, points);
        try (Checkpoint c = Checkpoint.open(out.resolve(points.keySet().iterator().next()))) {
            assertTrue(c.directory().resolve(Checkpoint.INDEX).toFile().exists(), "sharded as asked");
        }
        JsonNode json = new ObjectMapper().readTree(out.resolve("sweep.json").toFile());
        assertEquals(6, json.get("configurations").size());
        assertEquals("ties", json.get("method").asText());
        JsonNode timing = json.get("timing");
        assertTrue(timing.get("seconds").asDouble() > 0 && timing.get("seconds_per_configuration").asDouble() > 0);
        assertTrue(timing.get("sequential").get("identical").asBoolean(), json.toString());
        assertTrue(timing.get("cpu_seconds").asDouble() > 0 && timing.get("sequential").get("cpu_seconds").asDouble() > 0);
        assertEquals(timing.get("seconds").asDouble() / 6, timing.get("seconds_per_configuration").asDouble(), 1e-12);
        assertEquals(6, Files.readAllLines(out.resolve("configs.csv")).stream().skip(1)
                .filter(l -> !l.split(",", -1)[5].isEmpty()).count(), "a sequential time per configuration");
        assertTrue(r.err().contains("one by one (measured") && r.err().contains("outputs identical"), r.err());
        assertTrue(Files.exists(out.resolve("sweep.csv")), "statistics by default");
        try (Stream<Path> s = Files.list(dir)) {
            assertTrue(s.noneMatch(p -> p.getFileName().toString().startsWith(".ties-sweep")), "no temporary directory left");
        }
    }

    @Test
    void dareGridFromTheConfigWithSeedsEqualsMergingEachConfiguration() throws Exception {
        Path yaml = bf16.resolve("dare-grid.yml");
        Files.writeString(yaml, Files.readString(bf16.resolve("dare_ties.yml")).replace("smelter: {seed: 42}",
                "smelter:\n  seed: 42\n  grid: {seed: [1, 2], density: [0.3, 0.6], rescale: [true, false]}"));
        Path out = dir.resolve("dare-sweep");
        ok(sweep(yaml.toString(), "-o", out.toString(), "--no-stats"));
        Map<String, Map<String, Object>> points = new LinkedHashMap<>();
        for (int seed : new int[] {1, 2})
            for (String d : List.of("0.3", "0.6"))
                for (boolean rescale : new boolean[] {true, false})
                    points.put("seed=" + seed + "_density=" + d + "_rescale=" + rescale,
                            values("seed", seed, "density", Double.parseDouble(d), "rescale", rescale));
        assertEveryConfigurationMatchesMerge(yaml, out, points);
        assertFalse(Files.exists(out.resolve("sweep.csv")), "--no-stats");
        try (Checkpoint a = Checkpoint.open(out.resolve("seed=1_density=0.3_rescale=true"));
                Checkpoint b = Checkpoint.open(out.resolve("seed=2_density=0.3_rescale=true"))) {
            String t = "model.layers.1.mlp.up_proj.weight";
            assertNotEquals(-1, a.data(t).mismatch(b.data(t)), "another seed draws other masks");
        }
        // --grid replaces the config's grid.
        Path other = dir.resolve("dare-sweep-cli");
        CliRun.Run r = sweep(yaml.toString(), "-o", other.toString(), "--grid", "lambda=0.5", "--stats-only");
        ok(r);
        assertTrue(r.err().contains("--grid replaces"), r.err());
        assertEquals(2, Files.readAllLines(other.resolve("configs.csv")).size());
    }

    @Test
    void dellaAndSceGridsEqualMergingEachConfiguration() throws Exception {
        Path della = bf16.resolve("della-grid.yml");
        Files.writeString(della, """
                merge_method: della
                base_model: base
                models:
                  - model: expert-de
                    parameters: {weight: 0.6, density: 0.5, epsilon: 0.1}
                  - model: expert-fr
                    parameters: {weight: 0.4, density: 0.5, epsilon: 0.1}
                smelter: {seed: 3}
                """);
        Path out = dir.resolve("della-sweep");
        ok(sweep(della.toString(), "-o", out.toString(), "--grid", "density=0.4,0.6", "--no-stats"));
        Map<String, Map<String, Object>> points = new LinkedHashMap<>();
        for (String d : List.of("0.4", "0.6")) points.put("density=" + d, values("density", Double.parseDouble(d)));
        assertEveryConfigurationMatchesMerge(della, out, points);

        Path sce = bf16.resolve("sce-grid.yml");
        Files.writeString(sce, """
                merge_method: sce
                base_model: base
                models:
                  - model: expert-de
                  - model: expert-fr
                  - model: expert-sw
                """);
        Path sceOut = dir.resolve("sce-sweep");
        // Two selecting configurations share the variance the sweep computes once per tensor.
        ok(sweep(sce.toString(), "-o", sceOut.toString(), "--grid", "select_topk=0.3,0.6,1.0"));
        Map<String, Map<String, Object>> scePoints = new LinkedHashMap<>();
        for (String k : List.of("0.3", "0.6", "1")) scePoints.put("select_topk=" + k, values("select_topk", Double.parseDouble(k)));
        assertEveryConfigurationMatchesMerge(sce, sceOut, scePoints);
    }

    @Test
    void fisherGridEqualsMergingEachConfiguration() throws Exception {
        for (String m : List.of("expert-de", "expert-fr"))
            CliFisherTest.writeFisher(bf16.resolve(m), bf16.resolve(m + "-fisher"), null);
        Path fisher = bf16.resolve("fisher-grid.yml");
        Files.writeString(fisher, """
                merge_method: fisher
                models:
                  - model: expert-de
                    fisher: expert-de-fisher
                    parameters: {weight: 0.7}
                  - model: expert-fr
                    fisher: expert-fr-fisher
                    parameters: {weight: 0.3}
                dtype: bfloat16
                """);
        Path out = dir.resolve("fisher-sweep");
        // Normalized by the model-wide Fisher norms or not, with two floors: four configurations.
        ok(sweep(fisher.toString(), "-o", out.toString(), "--grid", "normalize_fishers=0,1", "--grid",
                "fisher_floor=1e-6,1e-2", "--no-stats"));
        Map<String, Map<String, Object>> points = new LinkedHashMap<>();
        for (String nf : List.of("0", "1"))
            for (String fl : List.of("0.000001", "0.01"))
                points.put("normalize_fishers=" + nf + "_fisher_floor=" + fl,
                        values("normalize_fishers", nf.equals("1"), "fisher_floor", Double.parseDouble(fl)));
        assertEveryConfigurationMatchesMerge(fisher, out, points);
    }

    @Test
    void linearSlerpF32TiesAndModelWideTrimEqualMergingEachConfiguration() throws Exception {
        Path linear = bf16.resolve("linear.yml");
        Files.writeString(linear, """
                merge_method: linear
                models:
                  - model: expert-de
                    parameters: {weight: 0.5}
                  - model: expert-fr
                    parameters: {weight: 0.5}
                dtype: bfloat16
                """);
        Path out = dir.resolve("linear-sweep");
        CliRun.Run r = sweep(linear.toString(), "--grid", "weight@1=0.25,0.5,2", "-o", out.toString());
        ok(r);
        assertTrue(r.err().contains("no statistics"), r.err());
        Map<String, Map<String, Object>> points = new LinkedHashMap<>();
        for (String w : List.of("0.25", "0.5", "2")) points.put("weight@1=" + w, values("weight@1", Double.parseDouble(w)));
        assertEveryConfigurationMatchesMerge(linear, out, points);

        Path slerp = bf16.resolve("slerp.yml");
        Files.writeString(slerp, """
                merge_method: slerp
                base_model: base
                models:
                  - model: expert-fr
                parameters: {t: 0.5}
                dtype: bfloat16
                """);
        out = dir.resolve("slerp-sweep");
        ok(sweep(slerp.toString(), "--grid", "t=0:1:0.25", "-o", out.toString()));
        points.clear();
        for (String t : List.of("0", "0.25", "0.5", "0.75", "1")) points.put("t=" + t, values("t", Double.parseDouble(t)));
        assertEveryConfigurationMatchesMerge(slerp, out, points);

        // f32 keys: thresholds from a refinement pass per distinct density.
        out = dir.resolve("f32-sweep");
        ok(sweep(f32.resolve("ties.yml").toString(), "--grid", "density=0.2,0.5,1", "--grid", "normalize=true,false",
                "-o", out.toString()));
        points.clear();
        for (String d : List.of("0.2", "0.5", "1"))
            for (boolean n : new boolean[] {true, false})
                points.put("density=" + d + "_normalize=" + n, values("density", Double.parseDouble(d), "normalize", n));
        assertEveryConfigurationMatchesMerge(f32.resolve("ties.yml"), out, points);

        // Model-wide trimming: one threshold per model and configuration over all tensors.
        Path global = bf16.resolve("ties-model.yml");
        Files.writeString(global, Files.readString(bf16.resolve("ties.yml")) + "smelter: {trim_scope: model}\n");
        out = dir.resolve("global-sweep");
        ok(sweep(global.toString(), "--grid", "density=0.1,0.6", "-o", out.toString()));
        points.clear();
        for (String d : List.of("0.1", "0.6")) points.put("density=" + d, values("density", Double.parseDouble(d)));
        assertEveryConfigurationMatchesMerge(global, out, points);
    }

    /** Layer statistics in float64 from the merged checkpoint, the base and the models. */
    static Map<String, double[]> float64Stats(Path merged, Path base, List<Path> models) throws Exception {
        Map<String, double[]> out = new TreeMap<>();
        try (Checkpoint m = Checkpoint.open(merged); Checkpoint b = Checkpoint.open(base)) {
            List<Checkpoint> xs = new ArrayList<>();
            for (Path p : models) xs.add(Checkpoint.open(p));
            for (String t : m.tensorNames()) {
                int layer = TensorNames.layerIndex(t);
                String key = layer < 0 ? "other" : Integer.toString(layer);
                float[] mv = m.tensor(t).toFloatArray(), bv = b.tensor(t).toFloatArray();
                float[][] x = xs.stream().map(c -> c.tensor(t).toFloatArray()).toArray(float[][]::new);
                // elements, sum delta^2, sum base^2, changed, agreeing per model
                for (String k : List.of(key, "all")) {
                    double[] s = out.computeIfAbsent(k, q -> new double[4 + x.length]);
                    for (int e = 0; e < mv.length; e++) {
                        double d = (double) mv[e] - bv[e];
                        s[0]++;
                        s[1] += d * d;
                        s[2] += (double) bv[e] * bv[e];
                        if (d == 0) continue;
                        s[3]++;
                        for (int i = 0; i < x.length; i++) if (Math.signum((double) x[i][e] - bv[e]) == Math.signum(d)) s[4 + i]++;
                    }
                }
            }
            for (Checkpoint c : xs) c.close();
        }
        return out;
    }

    static void assertStatsMatch(Path statsCsv, String config, Map<String, double[]> expected) throws Exception {
        List<String> header = List.of(Files.readAllLines(statsCsv).get(0).split(","));
        Map<String, String[]> rows = new HashMap<>();
        for (String line : Files.readAllLines(statsCsv).subList(1, Files.readAllLines(statsCsv).size())) {
            String[] f = line.split(",", -1);
            if (f[0].equals(config)) rows.put(f[header.indexOf("layer")], f);
        }
        assertEquals(expected.keySet(), rows.keySet(), config);
        for (var e : expected.entrySet()) {
            double[] s = e.getValue();
            String[] f = rows.get(e.getKey());
            String at = config + " layer " + e.getKey();
            assertEquals((long) s[0], Long.parseLong(f[header.indexOf("elements")]), at);
            assertEquals(Math.sqrt(s[1]), Double.parseDouble(f[header.indexOf("delta_norm")]), 1e-6 * Math.sqrt(s[1]), at);
            assertEquals(Math.sqrt(s[2]), Double.parseDouble(f[header.indexOf("base_norm")]), 1e-9 * Math.sqrt(s[2]), at);
            assertEquals(s[3] / s[0], Double.parseDouble(f[header.indexOf("kept_fraction")]), 1e-12, at);
            double agreement = 0;
            for (int i = 4; i < s.length; i++) agreement += s[i] / s[3];
            agreement /= s.length - 4;
            assertEquals(agreement, Double.parseDouble(f[header.indexOf("sign_agreement")]), 1e-12, at);
            assertEquals(Math.sqrt(s[1] / s[2]), Double.parseDouble(f[header.indexOf("relative_delta_norm")]),
                    1e-6 * Math.sqrt(s[1] / s[2]), at);
        }
    }

    @Test
    void statsOnlyEqualsFloat64StatisticsOfTheMergedTensors() throws Exception {
        List<Path> experts = List.of(bf16.resolve("expert-de"), bf16.resolve("expert-fr"), bf16.resolve("expert-sw"));
        // bf16 out: native pair statistics; f32 out from bf16 inputs: the Java loop.
        for (String outType : List.of("bfloat16", "float32")) {
            Path yaml = bf16.resolve("ties-stats-" + outType + ".yml");
            Files.writeString(yaml, Files.readString(bf16.resolve("ties.yml")).replace("dtype: bfloat16", "out_dtype: " + outType));
            Path out = dir.resolve("stats-" + outType);
            ok(sweep(yaml.toString(), "--grid", "density=0.2,0.8", "--grid", "lambda=0.5,1.5", "-o", out.toString(),
                    "--stats-only"));
            try (Stream<Path> s = Files.list(out)) {
                assertEquals(Set.of("configs.csv", "sweep.csv", "sweep.json"),
                        Set.copyOf(s.map(p -> p.getFileName().toString()).toList()), "statistics only: no weights");
            }
            JsonNode json = new ObjectMapper().readTree(out.resolve("sweep.json").toFile());
            assertEquals(outType.equals("bfloat16") ? "pair statistics (native)" : "f64 loop (Java)",
                    json.get("statistics").asText());
            for (String d : List.of("0.2", "0.8"))
                for (String l : List.of("0.5", "1.5")) {
                    String name = "density=" + d + "_lambda=" + l;
                    Path merged = mergeOne(yaml, values("density", Double.parseDouble(d), "lambda", Double.parseDouble(l)),
                            name + "-" + outType);
                    assertStatsMatch(out.resolve("sweep.csv"), name, float64Stats(merged, bf16.resolve("base"), experts));
                }
            // The whole-model row of configs.csv is sweep.csv's "all" row.
            String config = Files.readAllLines(out.resolve("configs.csv")).get(1);
            String all = Files.readAllLines(out.resolve("sweep.csv")).stream()
                    .filter(x -> x.startsWith("density=0.2_lambda=0.5,") && x.contains(",all,")).findFirst().orElseThrow();
            assertEquals(all.split(",")[5], config.split(",")[6], "delta_norm");
        }
    }

    @Test
    void refusalsAndFailuresLeaveNothingBehind() throws Exception {
        String ties = bf16.resolve("ties.yml").toString();
        Path out = dir.resolve("refused");
        String[][] usage = {
                {"--grid", "t=0.5", "has no parameter 't'"},
                {"--grid", "density=", "no values"},
                {"--grid", "density=0.9:0.1:0.1", "empty"},
                {"--grid", "density=1.5", "(0, 1]"},
                {"--grid", "lambda", "NAME=START:STOP:STEP"}};
        for (String[] u : usage) {
            CliRun.Run r = sweep(ties, u[0], u[1], "-o", out.toString());
            assertEquals(2, r.code(), u[1] + ": " + r.err());
            assertTrue(r.err().contains(u[2]), u[1] + ": " + r.err());
        }
        CliRun.Run none = sweep(ties, "-o", out.toString());
        assertEquals(2, none.code());
        assertTrue(none.err().contains("no grid"), none.err());
        assertEquals(2, sweep(ties, "--grid", "lambda=1", "--stats-only", "--no-stats", "-o", out.toString()).code());
        Path linear = bf16.resolve("linear-nobase.yml");
        Files.writeString(linear, "merge_method: linear\nmodels:\n  - model: expert-de\n    parameters: {weight: 1}\n"
                + "  - model: expert-fr\n    parameters: {weight: 1}\n");
        CliRun.Run noBase = sweep(linear.toString(), "--grid", "weight@0=1,2", "--stats-only", "-o", out.toString());
        assertEquals(2, noBase.code());
        assertTrue(noBase.err().contains("base_model"), noBase.err());
        assertFalse(Files.exists(out), "nothing written for a refused sweep");

        // A config with a grid is a sweep, not a merge.
        Path grid = bf16.resolve("ties-grid.yml");
        Files.writeString(grid, Files.readString(bf16.resolve("ties.yml")) + "smelter: {grid: {lambda: [0.5, 1]}}\n");
        CliRun.Run merge = CliRun.cli("merge", "--device", "cpu", "-q", grid.toString(), "-o", out.toString());
        assertEquals(2, merge.code());
        assertTrue(merge.err().contains("smelter sweep"), merge.err());

        // An existing output is refused untouched, and replaced only with --overwrite.
        Files.createDirectories(out);
        Files.writeString(out.resolve("keep.txt"), "mine");
        CliRun.Run exists = sweep(ties, "--grid", "lambda=0.5", "-o", out.toString());
        assertEquals(2, exists.code());
        assertTrue(exists.err().contains("not empty"), exists.err());
        assertEquals("mine", Files.readString(out.resolve("keep.txt")));
        ok(sweep(ties, "--grid", "lambda=0.5", "-o", out.toString(), "--overwrite"));
        assertFalse(Files.exists(out.resolve("keep.txt")));
        assertTrue(Files.isDirectory(out.resolve("lambda=0.5")));

        // A failure in one configuration aborts all of them: no output, no temporary directory.
        Path nan = dir.resolve("nan-bf16");
        Files.createDirectories(nan);
        try (Stream<Path> s = Files.list(bf16)) {
            for (Path p : s.toList()) if (Files.isDirectory(p)) CliMergeTest.copyTree(p, nan.resolve(p.getFileName()));
        }
        String tensor = "model.layers.1.mlp.up_proj.weight";
        dev.smelter.io.TensorInfo info;
        try (Checkpoint c = Checkpoint.open(nan.resolve("expert-fr"))) {
            info = c.info(tensor);
        }
        byte[] bytes = Files.readAllBytes(info.file());
        long headerLength = java.nio.ByteBuffer.wrap(bytes, 0, 8).order(java.nio.ByteOrder.LITTLE_ENDIAN).getLong();
        int at = (int) (8 + headerLength + info.dataBegin() + 2 * 5);
        bytes[at] = (byte) 0xC0;
        bytes[at + 1] = (byte) 0x7F;  // bf16 quiet NaN
        Files.write(info.file(), bytes);
        Files.writeString(nan.resolve("ties.yml"), Files.readString(bf16.resolve("ties.yml")));
        Path failed = dir.resolve("failed-sweep");
        CliRun.Run r = sweep(nan.resolve("ties.yml").toString(), "--grid", "lambda=0.5,1", "-o", failed.toString(),
                "--on-nonfinite", "fail");
        assertEquals(1, r.code(), r.err());
        assertTrue(r.err().contains("configuration lambda=0.5: tensor " + tensor), r.err());
        assertFalse(Files.exists(failed));
        try (Stream<Path> s = Files.list(dir)) {
            assertTrue(s.noneMatch(p -> p.getFileName().toString().startsWith(".failed-sweep")), "no temporary directory left");
        }
        CliRun.Run warned = sweep(nan.resolve("ties.yml").toString(), "--grid", "lambda=0.5,1", "-o", failed.toString());
        ok(warned);
        assertTrue(warned.err().contains("warning: configuration lambda=1: tensor " + tensor), warned.err());
    }

    /** On CUDA the inputs stay on the device for every configuration; outputs and statistics equal the CPU's. */
    @Test
    void cudaSweepEqualsTheCpuSweep() throws Exception {
        TestData.assumeCuda();
        for (String[] grid : new String[][] {
                {"ties.yml", "density@0=0.3,0.7", "lambda=0.5,1"},
                {"dare_ties.yml", "seed=1,2", "density=0.3,0.9"}}) {
            Path cpu = dir.resolve("cpu-" + grid[0]), cuda = dir.resolve("cuda-" + grid[0]);
            String yaml = bf16.resolve(grid[0]).toString();
            ok(CliRun.cli("sweep", "--device", "cpu", "-q", yaml, "--grid", grid[1], "--grid", grid[2], "-o", cpu.toString()));
            ok(CliRun.cli("sweep", "--device", "cuda", "-q", yaml, "--grid", grid[1], "--grid", grid[2], "-o", cuda.toString()));
            for (String line : Files.readAllLines(cpu.resolve("configs.csv")).subList(1, 5)) {
                String name = line.substring(0, line.indexOf(','));
                assertSameCheckpoint(cpu.resolve(name), cuda.resolve(name));
            }
            assertEquals(Files.readAllLines(cpu.resolve("sweep.csv")), Files.readAllLines(cuda.resolve("sweep.csv")),
                    "statistics bit-identical across backends");
        }
        // Statistics only: the merged tensors never leave the device.
        Path cpuStats = dir.resolve("cpu-stats"), cudaStats = dir.resolve("cuda-stats");
        for (String[] run : new String[][] {{"cpu", cpuStats.toString()}, {"cuda", cudaStats.toString()}})
            ok(CliRun.cli("sweep", "--device", run[0], "-q", bf16.resolve("ties.yml").toString(), "--grid",
                    "density=0.2,0.6", "--grid", "lambda=0.5,1", "--stats-only", "-o", run[1]));
        assertEquals(Files.readAllLines(cpuStats.resolve("sweep.csv")), Files.readAllLines(cudaStats.resolve("sweep.csv")));
    }

    @Test
    void dryRunListsTheConfigurationsAndWritesNothing() {
        Path out = dir.resolve("dry");
        CliRun.Run r = sweep(bf16.resolve("ties.yml").toString(), "--grid", "density=0.4:0.9:0.1", "--grid", "lambda=0.1:0.5:0.1",
                "-o", out.toString(), "--dry-run");
        ok(r);
        assertTrue(r.out().contains("sweep of 30 configurations") && r.out().contains("  density=0.9_lambda=0.5")
                && r.out().contains("read") && r.out().contains("30 x"), r.out());
        assertFalse(Files.exists(out));
    }
}
