package dev.smelter.cli;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.SerializationFeature;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import dev.smelter.Context;
import dev.smelter.Device;
import dev.smelter.Smelter;
import dev.smelter.analysis.Activations;
import dev.smelter.analysis.Cka;
import dev.smelter.analysis.CrossMoments;
import dev.smelter.analysis.Plots;
import dev.smelter.analysis.PrincipalAngles;
import dev.smelter.analysis.RowSource;
import dev.smelter.io.AtomicFile;
import dev.smelter.io.OutputGuard;
import java.io.IOException;
import java.io.PrintStream;
import java.io.UncheckedIOException;
import java.lang.foreign.Arena;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;

/** {@code smelter cka}: layer-wise linear CKA (and principal angles) between two activation files. */
@Command(name = "cka", mixinStandardHelpOptions = true,
        description = "Layer-wise linear CKA between two activation files of the same texts (docs/ACTIVATIONS.md).")
final class CkaCommand implements Callable<Integer> {
    @Parameters(index = "0", paramLabel = "A", description = "activation file of model A")
    Path a;

    @Parameters(index = "1", paramLabel = "B", description = "activation file of model B (same texts)")
    Path b;

    @Option(names = {"-o", "--output"}, paramLabel = "DIR", description = "write cka.csv, cka.json and cka.png here")
    Path output;

    @Option(names = "--pairs", defaultValue = "same", paramLabel = "P",
            description = "'same' (layer L of A with layer L of B, default) or 'all' (every layer of A with every layer of B)")
    String pairs;

    @Option(names = "--form", defaultValue = "auto", paramLabel = "F",
            description = "feature (streams rows, d x d memory), gram (n x n), minibatch (unbiased, per batch), or auto: gram up to 4096 rows, else feature")
    String form;

    @Option(names = "--unbiased", description = "unbiased HSIC estimator (Song et al.); gram and minibatch forms")
    boolean unbiased;

    @Option(names = "--batch", defaultValue = "1024", paramLabel = "N", description = "rows per batch of the minibatch form")
    int batch;

    @Option(names = "--mask", paramLabel = "NAME", description = "use only rows where mask.NAME is set (a span)")
    String mask;

    @Option(names = "--pool", defaultValue = "none", paramLabel = "P", description = "'mean': one row per sentence (sentence_ids), after the mask")
    String pool;

    @Option(names = "--allow-mask-mismatch",
            description = "with --pool mean and --mask: go on, with a warning, where the two files' masks differ on tokens (each file is pooled with its own mask)")
    boolean allowMaskMismatch;

    @Option(names = "--angles", defaultValue = "0", paramLabel = "R",
            description = "also the median principal angle between the top-R principal subspaces per layer pair ('same' pairs)")
    int angles;

    @Option(names = "--device", defaultValue = "auto", paramLabel = "DEV", description = "cpu, cuda, cuda:N or auto (default)")
    String device;

    @Override
    public Integer call() throws IOException {
        try {
            return run();
        } catch (UncheckedIOException e) {  // a read of an activation file failed inside an analysis
            throw e.getCause();
        }
    }

    private Integer run() throws IOException {
        if (!pairs.equals("same") && !pairs.equals("all")) throw new IllegalArgumentException("--pairs is 'same' or 'all', not '" + pairs + "'");
        if (!List.of("auto", "feature", "gram", "minibatch").contains(form))
            throw new IllegalArgumentException("--form is auto, feature, gram or minibatch, not '" + form + "'");
        if (!pool.equals("none") && !pool.equals("mean")) throw new IllegalArgumentException("--pool is 'none' or 'mean', not '" + pool + "'");
        if (unbiased && form.equals("feature")) throw new IllegalArgumentException("--unbiased needs --form gram or minibatch");
        PrintStream err = System.err;
        Device dev = Device.parse(device);
        try (Activations fa = Activations.open(a); Activations fb = Activations.open(b); Arena arena = Arena.ofConfined();
                Context ctx = Smelter.open(dev)) {
            List<Integer> la = fa.layers(Activations.HIDDEN), lb = fb.layers(Activations.HIDDEN);
            if (la.isEmpty()) throw new IllegalArgumentException(a + ": no hidden.N tensors");
            if (lb.isEmpty()) throw new IllegalArgumentException(b + ": no hidden.N tensors");
            if (pairs.equals("same") && !la.equals(lb))
                throw new IllegalArgumentException("the files have different layers (" + la + " and " + lb + "); use --pairs all");
            if (output != null) {
                Map<String, Path> inputs = new LinkedHashMap<>();
                inputs.put("A", a);
                inputs.put("B", b);
                OutputGuard.checkFiles(output, List.of("cka.csv", "cka.json", "cka.png"), inputs);
            }
            List<RowSource> xs = new ArrayList<>(), ys = new ArrayList<>();
            Rows ra = prepare(fa, la, xs, arena), rb = prepare(fb, lb, ys, arena);
            boolean pooled = pool.equals("mean");
            if (pooled && mask != null) checkPooledMasks(ra, rb, err);
            float[] weights = pooled ? null : ra.weights(), weightsB = pooled ? null : rb.weights();
            long rows = xs.getFirst().rows();
            if (ys.getFirst().rows() != rows)
                throw new IllegalArgumentException(a + " has " + rows + " rows, " + b + " has " + ys.getFirst().rows()
                        + " (the same texts must give the same rows)");
            if (weights != null && !java.util.Arrays.equals(weights, weightsB))
                throw new IllegalArgumentException("mask." + mask + " differs between " + a + " and " + b);
            String f = form.equals("auto") ? (rows <= 4096 && weights == null ? "gram" : "feature") : form;
            if (!f.equals("feature") && weights != null)
                throw new IllegalArgumentException("--mask without --pool needs --form feature (or pool first with --pool mean)");
            Cka.Estimator est = unbiased ? Cka.Estimator.UNBIASED : Cka.Estimator.BIASED;
            err.printf(Locale.ROOT, "CKA of %d x %d layers over %d rows (%s form%s) on %s%n", xs.size(), pairs.equals("all") ? ys.size() : 1,
                    rows, f, unbiased || f.equals("minibatch") ? ", unbiased" : "", dev);
            long t0 = System.nanoTime();
            double[][] cka;
            if (pairs.equals("all")) {
                cka = switch (f) {
                    case "gram" -> Cka.gramMatrixCkaOf(ctx, xs, ys, est);
                    case "feature" -> Cka.featureMatrixOf(ctx, xs, ys, weights);
                    default -> {
                        double[][] m = new double[xs.size()][ys.size()];
                        for (int i = 0; i < xs.size(); i++)
                            for (int j = 0; j < ys.size(); j++) m[i][j] = Cka.minibatch(ctx, xs.get(i), ys.get(j), batch);
                        yield m;
                    }
                };
            } else {
                cka = new double[xs.size()][1];
                for (int i = 0; i < xs.size(); i++)
                    cka[i][0] = switch (f) {
                        case "gram" -> Cka.gram(ctx, xs.get(i), ys.get(i), est);
                        case "feature" -> Cka.feature(ctx, xs.get(i), ys.get(i), weights);
                        default -> Cka.minibatch(ctx, xs.get(i), ys.get(i), batch);
                    };
            }
            double[] medianAngle = angles > 0 && pairs.equals("same") ? medianAngles(ctx, xs, ys, weights) : null;
            fa.checkUnchanged();  // a file rewritten in place meanwhile: its rows may mix old and new contents
            fb.checkUnchanged();
            err.printf(Locale.ROOT, "done in %.2f s%n", (System.nanoTime() - t0) / 1e9);
            report(la, lb, cka, medianAngle, System.out);
            if (output != null) write(la, lb, cka, medianAngle, rows, f);
            return 0;
        }
    }

    // A file's token rows: the mask's row weights (null without --mask), and with --pool mean the sentence ids and
    // the sentences pooling keeps.
    private record Rows(Path file, float[] weights, long[] ids, long[] sentences) {}

    // Fills the layer matrices (pooled if asked).
    private Rows prepare(Activations file, List<Integer> layers, List<RowSource> out, Arena arena) throws IOException {
        float[] weights = null;
        long[] ids = null;
        for (int layer : layers) {
            RowSource m = file.rows(Activations.HIDDEN, layer);
            if (weights == null && mask != null) weights = file.mask(mask, m.rows());
            if (pool.equals("mean")) {
                if (ids == null) ids = file.sentenceIds(m.rows());
                m = RowSource.of(Activations.meanPool(arena, m, ids, weights));
            }
            if (!out.isEmpty() && out.getFirst().rows() != m.rows())
                throw new IllegalArgumentException(file.path() + ": hidden." + layer + " has " + m.rows() + " rows, hidden."
                        + layers.getFirst() + " has " + out.getFirst().rows());
            out.add(m);
        }
        return new Rows(file.path(), weights, ids, ids == null ? null : Activations.pooledSentences(ids, weights));
    }

    // Pooled rows pair sentence by sentence: both files must keep the same sentences (always refused otherwise),
    // and where they have the same tokens the mask should be the same on every token.
    private void checkPooledMasks(Rows ra, Rows rb, PrintStream err) {
        long[] sa = ra.sentences(), sb = rb.sentences();
        for (int i = 0, j = 0; i < sa.length || j < sb.length; ) {
            if (i < sa.length && j < sb.length && sa[i] == sb[j]) {
                i++;
                j++;
                continue;
            }
            boolean inA = j >= sb.length || (i < sa.length && sa[i] < sb[j]);
            long s = inA ? sa[i] : sb[j];
            throw new IllegalArgumentException("mask." + mask + " keeps tokens of sentence " + s + " in " + (inA ? ra.file() : rb.file())
                    + " but none in " + (inA ? rb.file() : ra.file()) + ": the pooled rows would pair different sentences");
        }
        if (!java.util.Arrays.equals(ra.ids(), rb.ids())) {
            err.println("note: " + ra.file() + " and " + rb.file() + " tokenize differently (" + ra.ids().length + " and "
                    + rb.ids().length + " tokens); mask." + mask + " was checked per sentence only");
            return;
        }
        int differ = 0;
        for (int i = 0; i < ra.weights().length; i++) if (ra.weights()[i] != rb.weights()[i]) differ++;
        if (differ == 0) return;
        String what = "mask." + mask + " differs between " + ra.file() + " and " + rb.file() + " on " + differ + " of "
                + ra.weights().length + " tokens";
        if (!allowMaskMismatch)
            throw new IllegalArgumentException(what + ": pooled over different tokens, even identical activations differ"
                    + " (--allow-mask-mismatch pools each file with its own mask)");
        err.println("warning: " + what + "; each file is pooled with its own mask");
    }

    private double[] medianAngles(Context ctx, List<RowSource> xs, List<RowSource> ys, float[] weights) {
        double[] out = new double[xs.size()];
        for (int i = 0; i < xs.size(); i++) {
            RowSource x = xs.get(i), y = ys.get(i);
            if (x.cols() != y.cols() || angles > x.cols()) {
                out[i] = Double.NaN;
                continue;
            }
            CrossMoments mx = CrossMoments.of((int) x.cols()), my = CrossMoments.of((int) y.cols());
            mx.add(ctx, x, null, weights);
            my.add(ctx, y, null, weights);
            out[i] = PrincipalAngles.median(PrincipalAngles.ofCovariances(mx.cxx(), my.cxx(), (int) x.cols(), angles));
        }
        return out;
    }

    private void report(List<Integer> la, List<Integer> lb, double[][] cka, double[] angle, PrintStream out) {
        if (pairs.equals("all")) {
            out.println("CKA matrix: rows are layers of A, columns layers of B (see cka.csv for all digits)");
            for (int i = 0; i < cka.length; i++) {
                StringBuilder s = new StringBuilder(String.format(Locale.ROOT, "%4d", la.get(i)));
                for (double v : cka[i]) s.append(String.format(Locale.ROOT, " %.3f", v));
                out.println(s);
            }
            return;
        }
        out.println(angle == null ? "layer  cka" : "layer  cka       median_angle_deg");
        for (int i = 0; i < cka.length; i++)
            out.println(angle == null ? String.format(Locale.ROOT, "%5d  %.6f", la.get(i), cka[i][0])
                    : String.format(Locale.ROOT, "%5d  %.6f  %.4f", la.get(i), cka[i][0], Math.toDegrees(angle[i])));
    }

    private void write(List<Integer> la, List<Integer> lb, double[][] cka, double[] angle, long rows, String f) throws IOException {
        Files.createDirectories(output);
        StringBuilder csv = new StringBuilder();
        ObjectMapper json = new ObjectMapper().enable(SerializationFeature.INDENT_OUTPUT);
        ObjectNode root = json.createObjectNode();
        root.put("a", a.toString()).put("b", b.toString()).put("rows", rows).put("form", f)
                .put("estimator", unbiased || f.equals("minibatch") ? "unbiased" : "biased").put("pairs", pairs);
        if (mask != null) root.put("mask", mask);
        root.put("pool", pool);
        if (pairs.equals("all")) {
            csv.append("layer_a,layer_b,cka\n");
            ArrayNode m = root.putArray("cka");
            for (int i = 0; i < cka.length; i++) {
                ArrayNode row = m.addArray();
                for (int j = 0; j < cka[i].length; j++) {
                    csv.append(la.get(i)).append(',').append(lb.get(j)).append(',').append(cka[i][j]).append('\n');
                    row.add(cka[i][j]);
                }
            }
            root.putPOJO("layers_a", la).putPOJO("layers_b", lb);
            List<String> ta = la.stream().map(String::valueOf).toList(), tb = lb.stream().map(String::valueOf).toList();
            Plots.heatmap(output.resolve("cka.png"), "Linear CKA", "layer of " + b.getFileName(), "layer of " + a.getFileName(),
                    tb, ta, cka, 0, 1, 900, 800);
        } else {
            csv.append(angle == null ? "layer,cka\n" : "layer,cka,median_angle_rad\n");
            ArrayNode layers = root.putArray("layers");
            double[] x = new double[cka.length], y = new double[cka.length];
            for (int i = 0; i < cka.length; i++) {
                csv.append(la.get(i)).append(',').append(cka[i][0]);
                if (angle != null) csv.append(',').append(angle[i]);
                csv.append('\n');
                ObjectNode l = layers.addObject().put("layer", la.get(i)).put("cka", cka[i][0]);
                if (angle != null) l.put("median_angle_rad", angle[i]);
                x[i] = la.get(i);
                y[i] = cka[i][0];
            }
            Map<String, double[]> series = new LinkedHashMap<>();
            series.put("CKA(" + a.getFileName() + ", " + b.getFileName() + ")", y);
            Plots.lines(output.resolve("cka.png"), "Linear CKA per layer", "layer", "CKA", x, series, 900, 500);
        }
        writeAtomically(output.resolve("cka.csv"), csv.toString());
        writeAtomically(output.resolve("cka.json"), json.writeValueAsString(root) + "\n");
        System.err.println("wrote " + output.resolve("cka.csv") + ", cka.json, cka.png");
    }

    private static void writeAtomically(Path target, String text) throws IOException {
        AtomicFile.write(target, out -> out.write(text.getBytes(StandardCharsets.UTF_8)));
    }
}
