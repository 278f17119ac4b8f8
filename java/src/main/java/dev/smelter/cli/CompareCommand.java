package dev.smelter.cli;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.SerializationFeature;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import dev.smelter.Context;
import dev.smelter.Device;
import dev.smelter.PairStats;
import dev.smelter.Smelter;
import dev.smelter.analysis.Plots;
import dev.smelter.analysis.WeightSimilarity;
import dev.smelter.io.AtomicFile;
import dev.smelter.io.Checkpoint;
import dev.smelter.io.OutputGuard;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;

/** {@code smelter compare}: per-layer weight-space similarity of checkpoints (and of their task vectors). */
@Command(name = "compare", mixinStandardHelpOptions = true,
        description = "Per-layer weight-space similarity of two or more checkpoints: cosine, L2 norms and distances, stable "
                + "rank; with --base also of the task vectors, their sign conflicts and TIES mask overlap.")
final class CompareCommand implements Callable<Integer> {
    @Parameters(arity = "2..*", paramLabel = "MODEL", description = "checkpoints (directories, index files or .safetensors)")
    List<Path> models;

    @Option(names = "--base", paramLabel = "BASE", description = "base model: task vectors are MODEL - BASE")
    Path base;

    @Option(names = {"-o", "--output"}, paramLabel = "DIR", description = "write compare.csv, compare.json and PNG plots here")
    Path output;

    @Option(names = "--density", paramLabel = "D",
            description = "TIES density of the masks whose overlap is measured (per tensor; needs --base; 0 = none; default 0.2 with --base)")
    Double density;

    @Option(names = "--stable-rank", negatable = true, defaultValue = "true", fallbackValue = "true",
            description = "stable rank of every 2-D tensor, to 1e-6 relative by subspace iteration (default on; --no-stable-rank skips it)")
    boolean stableRank;

    @Option(names = "--iterations", defaultValue = "100", paramLabel = "N",
            description = "most subspace iterations per matrix (default 100); a stable rank not converged by then is NaN, with a warning")
    int iterations;

    @Option(names = "--device", defaultValue = "auto", paramLabel = "DEV", description = "cpu, cuda, cuda:N or auto (default)")
    String device;

    @Override
    public Integer call() throws IOException {
        try {
            return run();
        } catch (UncheckedIOException e) {  // a read of a checkpoint failed inside the comparison
            throw e.getCause();
        }
    }

    /** The files written into the output folder. */
    static final List<String> OUTPUT_FILES = List.of("compare.csv", "compare.json", "compare-cosine.png",
            "compare-conflicts.png", "compare-norms.png", "compare-stable-rank.png");

    private Integer run() throws IOException {
        double d = density != null ? density : base != null ? 0.2 : 0;
        WeightSimilarity.Options options = new WeightSimilarity.Options(d, stableRank ? iterations : 0);
        if (stableRank && iterations < 1) throw new IllegalArgumentException("--iterations must be >= 1");
        Device dev = Device.parse(device);
        if (output != null) {
            Map<String, Path> inputs = new LinkedHashMap<>();
            for (int i = 0; i < models.size(); i++) inputs.put("model " + (i + 1), models.get(i));
            if (base != null) inputs.put("--base", base);
            OutputGuard.checkFiles(output, OUTPUT_FILES, inputs);
        }
        List<Checkpoint> open = new ArrayList<>();
        Checkpoint b = null;
        try (Context ctx = Smelter.open(dev)) {
            for (Path p : models) open.add(Checkpoint.open(p));
            if (base != null) b = Checkpoint.open(base);
            List<String> labels = labels(models);
            System.err.printf(Locale.ROOT, "comparing %d checkpoints%s on %s%n", models.size(), base == null ? "" : " (task vectors about " + base + ")", dev);
            long t0 = System.nanoTime();
            List<WeightSimilarity.Group> groups = WeightSimilarity.compare(ctx, open, b, options, w -> System.err.println("warning: " + w));
            for (Checkpoint c : open) c.checkUnchanged();  // a checkpoint rewritten in place meanwhile: mixed results
            if (b != null) b.checkUnchanged();
            System.err.printf(Locale.ROOT, "done in %.2f s%n", (System.nanoTime() - t0) / 1e9);
            for (WeightSimilarity.Group g : groups)
                for (int i = 0; i < g.params().size(); i++) {
                    long bad = g.params().nonfinite(i);
                    if (bad > 0) System.err.printf(Locale.ROOT, "warning: group %s of %s has %d non-finite values%n", g.name(), models.get(i), bad);
                }
            report(groups, labels);
            if (output != null) write(groups, labels, options);
            return 0;
        } finally {
            for (Checkpoint c : open) c.close();
            if (b != null) b.close();
        }
    }

    /** Short unique names: the directory (or file) names, prefixed by position where they repeat. */
    static List<String> labels(List<Path> paths) {
        List<String> names = new ArrayList<>();
        for (Path p : paths) names.add(p.toAbsolutePath().normalize().getFileName().toString());
        Set<String> seen = new HashSet<>(), dup = new HashSet<>();
        for (String n : names) if (!seen.add(n)) dup.add(n);
        List<String> out = new ArrayList<>();
        for (int i = 0; i < names.size(); i++) out.add(dup.contains(names.get(i)) ? i + ":" + names.get(i) : names.get(i));
        return out;
    }

    private void report(List<WeightSimilarity.Group> groups, List<String> labels) {
        System.out.println("group  a  b  cosine  distance" + (base != null ? "  task_cosine  sign_conflicts" : "")
                + (groups.stream().anyMatch(g -> g.tasks() != null && g.tasks().hasMasks()) ? "  mask_jaccard" : ""));
        for (WeightSimilarity.Group g : groups)
            for (int i = 0; i < labels.size(); i++)
                for (int j = i + 1; j < labels.size(); j++) {
                    StringBuilder s = new StringBuilder(String.format(Locale.ROOT, "%-6s %s %s  %.6f  %.6g", g.name(), labels.get(i),
                            labels.get(j), g.params().cosine(i, j), g.params().distance(i, j)));
                    if (g.tasks() != null) {
                        s.append(String.format(Locale.ROOT, "  %.6f  %.4f", g.tasks().cosine(i, j), g.tasks().signConflictRate(i, j)));
                        if (g.tasks().hasMasks()) s.append(String.format(Locale.ROOT, "  %.4f", g.tasks().maskJaccard(i, j)));
                    }
                    System.out.println(s);
                }
    }

    static final String[] COLUMNS = {"group", "a", "b", "cosine", "distance", "norm_a", "norm_b", "norm_diff",
        "stable_rank_a", "stable_rank_b", "stable_rank_diff", "task_cosine", "task_distance", "task_norm_a", "task_norm_b",
        "task_norm_diff", "task_stable_rank_a", "task_stable_rank_b", "task_stable_rank_diff", "sign_conflict_rate",
        "mask_jaccard"};

    /** One row per group and model pair, in {@link #COLUMNS} order (NaN where a measure does not apply). */
    static Map<String, Object> row(WeightSimilarity.Group g, List<String> labels, int i, int j) {
        Map<String, Object> r = new LinkedHashMap<>();
        PairStats p = g.params(), t = g.tasks();
        r.put("group", g.name());
        r.put("a", labels.get(i));
        r.put("b", labels.get(j));
        r.put("cosine", p.cosine(i, j));
        r.put("distance", p.distance(i, j));
        r.put("norm_a", p.norm(i));
        r.put("norm_b", p.norm(j));
        r.put("norm_diff", p.norm(i) - p.norm(j));
        r.put("stable_rank_a", g.stableRank()[i]);
        r.put("stable_rank_b", g.stableRank()[j]);
        r.put("stable_rank_diff", g.stableRank()[i] - g.stableRank()[j]);
        double nan = Double.NaN;
        r.put("task_cosine", t == null ? nan : t.cosine(i, j));
        r.put("task_distance", t == null ? nan : t.distance(i, j));
        r.put("task_norm_a", t == null ? nan : t.norm(i));
        r.put("task_norm_b", t == null ? nan : t.norm(j));
        r.put("task_norm_diff", t == null ? nan : t.norm(i) - t.norm(j));
        r.put("task_stable_rank_a", t == null ? nan : g.taskStableRank()[i]);
        r.put("task_stable_rank_b", t == null ? nan : g.taskStableRank()[j]);
        r.put("task_stable_rank_diff", t == null ? nan : g.taskStableRank()[i] - g.taskStableRank()[j]);
        r.put("sign_conflict_rate", t == null ? nan : t.signConflictRate(i, j));
        r.put("mask_jaccard", t == null || !t.hasMasks() ? nan : t.maskJaccard(i, j));
        return r;
    }

    private void write(List<WeightSimilarity.Group> groups, List<String> labels, WeightSimilarity.Options options) throws IOException {
        Files.createDirectories(output);
        StringBuilder csv = new StringBuilder(String.join(",", COLUMNS)).append('\n');
        ObjectMapper json = new ObjectMapper().enable(SerializationFeature.INDENT_OUTPUT);
        ObjectNode root = json.createObjectNode();
        ArrayNode ms = root.putArray("models");
        for (int i = 0; i < labels.size(); i++) ms.addObject().put("label", labels.get(i)).put("path", models.get(i).toString());
        if (base != null) root.put("base", base.toString());
        root.put("density", options.density()).put("stable_rank_iterations", options.stableRankIterations());
        ArrayNode rows = root.putArray("rows");
        List<Double> layerX = new ArrayList<>();
        int pairs = labels.size() * (labels.size() - 1) / 2;
        Map<String, List<Double>> cos = new LinkedHashMap<>(), conflicts = new LinkedHashMap<>(), norms = new LinkedHashMap<>(),
                ranks = new LinkedHashMap<>();
        for (WeightSimilarity.Group g : groups) {
            boolean layer = !g.name().equals("embed") && !g.name().equals("final");
            if (layer) layerX.add((double) Integer.parseInt(g.name()));
            for (int i = 0; i < labels.size(); i++) {
                if (layer) {
                    PairStats s = g.tasks() != null ? g.tasks() : g.params();
                    norms.computeIfAbsent((g.tasks() != null ? "task vector " : "") + labels.get(i), k -> new ArrayList<>()).add(s.norm(i));
                    double[] sr = g.tasks() != null ? g.taskStableRank() : g.stableRank();
                    ranks.computeIfAbsent((g.tasks() != null ? "task vector " : "") + labels.get(i), k -> new ArrayList<>()).add(sr[i]);
                }
                for (int j = i + 1; j < labels.size(); j++) {
                    Map<String, Object> r = row(g, labels, i, j);
                    ObjectNode o = rows.addObject();
                    StringBuilder line = new StringBuilder();
                    for (String c : COLUMNS) {
                        Object v = r.get(c);
                        if (line.length() > 0) line.append(',');
                        line.append(v);
                        if (v instanceof Double x) {
                            if (Double.isFinite(x)) o.put(c, x);
                            else o.putNull(c);
                        } else o.put(c, v.toString());
                    }
                    csv.append(line).append('\n');
                    if (layer) {
                        String pair = labels.get(i) + " vs " + labels.get(j);
                        cos.computeIfAbsent("cosine " + pair, k -> new ArrayList<>()).add((Double) r.get("cosine"));
                        if (g.tasks() != null) {
                            cos.computeIfAbsent("task cosine " + pair, k -> new ArrayList<>()).add((Double) r.get("task_cosine"));
                            conflicts.computeIfAbsent("sign conflicts " + pair, k -> new ArrayList<>()).add((Double) r.get("sign_conflict_rate"));
                            if (g.tasks().hasMasks())
                                conflicts.computeIfAbsent("mask Jaccard " + pair, k -> new ArrayList<>()).add((Double) r.get("mask_jaccard"));
                        }
                    }
                }
            }
        }
        List<String> written = new ArrayList<>(List.of("compare.csv", "compare.json"));
        if (layerX.size() > 0 && pairs > 0) {
            double[] x = layerX.stream().mapToDouble(Double::doubleValue).toArray();
            Plots.lines(output.resolve("compare-cosine.png"), "Cosine similarity per layer", "layer", "cosine", x, arrays(cos), 900, 500);
            written.add("compare-cosine.png");
            if (!conflicts.isEmpty()) {
                Plots.lines(output.resolve("compare-conflicts.png"), "Task vectors: sign conflicts and TIES mask overlap", "layer",
                        "fraction", x, arrays(conflicts), 900, 500);
                written.add("compare-conflicts.png");
            }
            Plots.lines(output.resolve("compare-norms.png"), "L2 norm per layer", "layer", "L2 norm", x, arrays(norms), 900, 500);
            written.add("compare-norms.png");
            if (options.stableRankIterations() > 0) {
                Plots.lines(output.resolve("compare-stable-rank.png"), "Mean stable rank of the layer's matrices", "layer",
                        "stable rank", x, arrays(ranks), 900, 500);
                written.add("compare-stable-rank.png");
            }
        }
        AtomicFile.write(output.resolve("compare.csv"), o -> o.write(csv.toString().getBytes(StandardCharsets.UTF_8)));
        String text = json.writeValueAsString(root) + "\n";
        AtomicFile.write(output.resolve("compare.json"), o -> o.write(text.getBytes(StandardCharsets.UTF_8)));
        System.err.println("wrote " + String.join(", ", written) + " to " + output);
    }

    private static Map<String, double[]> arrays(Map<String, List<Double>> m) {
        Map<String, double[]> out = new LinkedHashMap<>();
        m.forEach((k, v) -> out.put(k, v.stream().mapToDouble(Double::doubleValue).toArray()));
        return out;
    }
}
