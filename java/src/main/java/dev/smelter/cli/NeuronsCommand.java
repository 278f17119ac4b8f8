package dev.smelter.cli;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.SerializationFeature;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import dev.smelter.Context;
import dev.smelter.Device;
import dev.smelter.Smelter;
import dev.smelter.analysis.Activations;
import dev.smelter.analysis.NeuronCounts;
import dev.smelter.analysis.NeuronSelectivity;
import dev.smelter.analysis.Plots;
import dev.smelter.io.AtomicFile;
import dev.smelter.io.OutputGuard;
import java.io.BufferedWriter;
import java.io.IOException;
import java.io.OutputStreamWriter;
import java.io.PrintStream;
import java.io.UncheckedIOException;
import java.io.Writer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.Callable;
import java.util.regex.Pattern;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;

/**
 * {@code smelter neurons}: language-specific MLP neurons (LAPE, {@link NeuronSelectivity}) from one activation
 * file per language, and Neuron Usage Alignment with a second model's files.
 */
@Command(name = "neurons", mixinStandardHelpOptions = true,
        description = {"Language-specific MLP neurons by activation probability entropy (LAPE, Tang et al. 2024) from "
                + "mlp_act.* of one activation file per language (docs/ACTIVATIONS.md); with --compare, Neuron Usage "
                + "Alignment with a second model's files."},
        footer = {"", "Example:",
                "  smelter neurons en=acts/en.safetensors de=acts/de.safetensors -o out/ \\",
                "      --compare en=acts/merged-en.safetensors de=acts/merged-de.safetensors"})
final class NeuronsCommand implements Callable<Integer> {
    /** Language names: they become CSV columns, JSON keys and legend entries. */
    private static final Pattern NAME = Pattern.compile("[A-Za-z0-9][A-Za-z0-9_.+-]*");

    @Parameters(arity = "2..*", paramLabel = "LANG=FILE[#MASK]",
            description = "a language (or group) and its activation file; #MASK counts only the rows of mask.MASK (a span)")
    List<String> inputs;

    @Option(names = {"-o", "--output"}, paramLabel = "DIR",
            description = "write neurons.json, neurons.csv, neuron_stats.csv and PNG plots here")
    Path output;

    @Option(names = "--preset", defaultValue = "seed", paramLabel = "P",
            description = "'seed' (filter rate 0.95, rho 0.1, tau 0.8; default) or 'lape' (Tang et al.: 0.95, 0.01, 0.95)")
    String preset;

    @Option(names = "--rho", paramLabel = "R", description = "fraction of all neurons selected by lowest entropy (overrides the preset)")
    Double rho;

    @Option(names = "--tau", paramLabel = "T",
            description = "percentile of all activation probabilities a selected neuron must exceed to belong to a language (overrides the preset)")
    Double tau;

    @Option(names = "--filter-rate", paramLabel = "F",
            description = "percentile of all activation probabilities a neuron must exceed in some language to be ranked (overrides the preset)")
    Double filterRate;

    @Option(names = "--mask", paramLabel = "NAME", description = "count only rows where mask.NAME is set, in every file without its own #MASK")
    String mask;

    @Option(names = "--compare", arity = "1..*", paramLabel = "LANG=FILE[#MASK]",
            description = "a second model's activation file for a language above: Neuron Usage Alignment per layer (repeatable; put it after the inputs)")
    List<String> compare = new ArrayList<>();

    @Option(names = "--device", defaultValue = "auto", paramLabel = "DEV", description = "cpu, cuda, cuda:N or auto (default)")
    String device;

    @Option(names = "--chunk-rows", defaultValue = "0", hidden = true, paramLabel = "N",
            description = "rows per kernel call (0: up to 64 MiB, at most 4096)")
    int chunkRows;

    /** One input: a language's file and span. */
    record Spec(String language, Path file, String mask) {}

    @Override
    public Integer call() throws IOException {
        try {
            return run();
        } catch (UncheckedIOException e) {  // a read of an activation file failed while counting
            throw e.getCause();
        }
    }

    /** The files written into the output folder. */
    static final List<String> OUTPUT_FILES = List.of("neurons.json", "neurons.csv", "neuron_stats.csv", "alignment.csv",
            "neurons.png", "overlap.png", "alignment.png");

    private Integer run() throws IOException {
        NeuronSelectivity.Params params = params();
        if (mask != null && mask.isEmpty()) throw new IllegalArgumentException("--mask needs a name");
        if (chunkRows < 0) throw new IllegalArgumentException("--chunk-rows must be >= 0, got " + chunkRows);
        List<Spec> specs = parse(inputs, "");
        List<Spec> others = parse(compare, "--compare ");
        Set<String> names = new HashSet<>();
        for (Spec s : specs) names.add(s.language());
        for (Spec s : others)
            if (!names.contains(s.language()))
                throw new IllegalArgumentException("--compare " + s.language() + "=" + s.file() + ": no input for language '"
                        + s.language() + "' (the languages are " + specs.stream().map(Spec::language).toList() + ")");
        if (output != null && Files.exists(output) && !Files.isDirectory(output))
            throw new IllegalArgumentException("output " + output + " exists and is not a directory");
        for (Spec s : specs) requireFile(s);
        for (Spec s : others) requireFile(s);
        if (output != null) {
            Map<String, Path> files = new LinkedHashMap<>();
            for (Spec s : specs) files.put(s.language(), s.file());
            for (Spec s : others) files.put("--compare " + s.language(), s.file());
            OutputGuard.checkFiles(output, OUTPUT_FILES, files);
        }
        Device dev = Device.parse(device);

        List<Activations> open = new ArrayList<>();
        try {
            // Every file is checked before anything is counted: a bad last file fails in seconds, not after hours.
            List<NeuronCounts.Input> in = inspect(specs, open);
            List<NeuronCounts.Input> cmp = inspect(others, open);
            NeuronCounts.Input ref = in.getFirst();
            for (NeuronCounts.Input i : concat(in, cmp)) {
                if (!i.layers().equals(ref.layers()))
                    throw new IllegalArgumentException(i.path() + " has mlp_act layers " + i.layers() + ", " + ref.path()
                            + " has " + ref.layers() + " (every file needs the same layers)");
                if (i.width() != ref.width())
                    throw new IllegalArgumentException(i.path() + ": mlp_act." + i.layers().getFirst() + " has " + i.width()
                            + " neurons, " + ref.path() + " has " + ref.width() + " (every file needs the same model width)");
            }
            PrintStream err = System.err;
            long t0 = System.nanoTime();
            long[][][] counts = new long[specs.size()][][];
            long[] tokens = new long[specs.size()];
            long[][][] cmpCounts = new long[others.size()][][];
            try (Context ctx = Smelter.open(dev)) {
                for (int g = 0; g < specs.size(); g++) {
                    counts[g] = count(ctx, "", specs.get(g), in.get(g), dev, err);
                    tokens[g] = in.get(g).tokens();
                }
                for (int c = 0; c < others.size(); c++) cmpCounts[c] = count(ctx, "--compare ", others.get(c), cmp.get(c), dev, err);
            }
            for (Activations a : open) a.checkUnchanged();  // a file rewritten in place meanwhile: mixed counts
            NeuronSelectivity.Result result = NeuronSelectivity.select(counts, tokens, params);
            double[][] alignment = new double[others.size()][];
            for (int c = 0; c < others.size(); c++) {
                int g = indexOf(specs, others.get(c).language());
                double[][] usage = NeuronSelectivity.probability(new long[][][] {cmpCounts[c]}, new long[] {cmp.get(c).tokens()})[0];
                alignment[c] = NeuronSelectivity.usageAlignment(result.probability()[g], usage);
            }
            err.printf(Locale.ROOT, "done in %.2f s%n", (System.nanoTime() - t0) / 1e9);
            Results r = new Results(specs, in, ref.layers(), ref.width(), params, result, counts, others, cmp, alignment);
            report(r, System.out);
            if (output != null) write(r);
            return 0;
        } finally {
            for (Activations a : open) a.close();
        }
    }

    private NeuronSelectivity.Params params() {
        NeuronSelectivity.Params base = switch (preset) {
            case "seed" -> NeuronSelectivity.Params.seedStudy();
            case "lape" -> NeuronSelectivity.Params.lape();
            default -> throw new IllegalArgumentException("--preset is 'seed' or 'lape', not '" + preset + "'");
        };
        try {
            return new NeuronSelectivity.Params(filterRate != null ? filterRate : base.filterRate(),
                    rho != null ? rho : base.rho(), tau != null ? tau : base.tau());
        } catch (IllegalArgumentException e) {
            // Name the option, not the record component.
            throw new IllegalArgumentException(e.getMessage().replace("filterRate", "--filter-rate")
                    .replace("rho", "--rho").replace("tau", "--tau"));
        }
    }

    /** Parses {@code LANG=FILE[#MASK]}; a language may appear once. */
    private List<Spec> parse(List<String> args, String what) {
        List<Spec> out = new ArrayList<>();
        Set<String> seen = new HashSet<>();
        for (String arg : args) {
            int eq = arg.indexOf('=');
            if (eq <= 0 || eq == arg.length() - 1)
                throw new IllegalArgumentException(what + "'" + arg + "': expected LANG=FILE (e.g. en=acts/en.safetensors)");
            String lang = arg.substring(0, eq), file = arg.substring(eq + 1), m = mask;
            if (!NAME.matcher(lang).matches())
                throw new IllegalArgumentException(what + "'" + arg + "': the language name '" + lang
                        + "' may have letters, digits and _ . + - only, starting with a letter or digit");
            int hash = file.lastIndexOf('#');
            if (hash >= 0) {
                m = file.substring(hash + 1);
                file = file.substring(0, hash);
                if (m.isEmpty() || file.isEmpty())
                    throw new IllegalArgumentException(what + "'" + arg + "': expected LANG=FILE#MASK with a file and a mask name");
            }
            if (!seen.add(lang)) throw new IllegalArgumentException(what + "language '" + lang + "' is given twice");
            out.add(new Spec(lang, Path.of(file), m));
        }
        return out;
    }

    private static void requireFile(Spec s) throws NoSuchFileException {
        if (!Files.isRegularFile(s.file()))
            throw new NoSuchFileException(s.file().toString(), null, "no such activation file (for " + s.language() + ")");
    }

    private static List<NeuronCounts.Input> inspect(List<Spec> specs, List<Activations> open) throws IOException {
        List<NeuronCounts.Input> out = new ArrayList<>();
        for (Spec s : specs) {
            Activations a = Activations.open(s.file());
            open.add(a);
            out.add(NeuronCounts.inspect(a, s.mask()));
        }
        return out;
    }

    private long[][] count(Context ctx, String what, Spec s, NeuronCounts.Input in, Device dev, PrintStream err) {
        err.printf(Locale.ROOT, "%s%s: %s, %d tokens%s, %d layers x %d neurons on %s%n", what, s.language(), s.file(), in.tokens(),
                s.mask() == null ? "" : " (mask." + s.mask() + " of " + in.rows() + ")", in.layers().size(), in.width(), dev);
        return NeuronCounts.count(ctx, in, chunkRows);
    }

    private static <T> List<T> concat(List<T> a, List<T> b) {
        List<T> out = new ArrayList<>(a);
        out.addAll(b);
        return out;
    }

    private static int indexOf(List<Spec> specs, String language) {
        for (int g = 0; g < specs.size(); g++) if (specs.get(g).language().equals(language)) return g;
        throw new IllegalStateException(language);
    }

    /** Everything the report and the files show. */
    private record Results(List<Spec> specs, List<NeuronCounts.Input> inputs, List<Integer> layers, int width,
            NeuronSelectivity.Params params, NeuronSelectivity.Result selection, long[][][] counts, List<Spec> others,
            List<NeuronCounts.Input> otherInputs, double[][] alignment) {
        int languages() {
            return specs.size();
        }

        String name(int g) {
            return specs.get(g).language();
        }

        int selected(int g, int l) {
            return selection.selected()[g][l].length;
        }

        /** Selected neurons of language g in layer l that belong to no other language. */
        int exclusive(int g, int l) {
            int n = 0;
            for (int j : selection.selected()[g][l]) {
                boolean shared = false;
                for (int h = 0; h < languages() && !shared; h++)
                    if (h != g && java.util.Arrays.binarySearch(selection.selected()[h][l], j) >= 0) shared = true;
                if (!shared) n++;
            }
            return n;
        }

        double meanProbability(int g, int l) {
            double s = 0;
            for (double p : selection.probability()[g][l]) s += p;
            return s / width;
        }

        /** Jaccard index of two languages' selected sets over all layers; NaN where both are empty. */
        double jaccard(int g, int h) {
            long both = 0, either = 0;
            for (int l = 0; l < layers.size(); l++) {
                int[] a = selection.selected()[g][l], b = selection.selected()[h][l];
                int i = 0, k = 0;
                while (i < a.length || k < b.length) {
                    if (k == b.length || (i < a.length && a[i] < b[k])) i++;
                    else if (i == a.length || b[k] < a[i]) k++;
                    else {
                        both++;
                        i++;
                        k++;
                    }
                    either++;
                }
            }
            return either == 0 ? Double.NaN : (double) both / either;
        }
    }

    private static void report(Results r, PrintStream out) {
        NeuronSelectivity.Result s = r.selection();
        out.printf(Locale.ROOT, "filter rate %s, rho %s, tau %s: filterBar %.6f, activationBar %.6f, %d of %d neurons selected%n",
                num(r.params().filterRate()), num(r.params().rho()), num(r.params().tau()), s.filterBar(), s.activationBar(),
                s.selectedTotal(), (long) r.layers().size() * r.width());
        StringBuilder head = new StringBuilder("layer");
        for (int g = 0; g < r.languages(); g++) head.append(String.format(Locale.ROOT, " %9s", r.name(g)));
        out.println(head);
        for (int l = 0; l < r.layers().size(); l++) {
            StringBuilder row = new StringBuilder(String.format(Locale.ROOT, "%5d", r.layers().get(l)));
            for (int g = 0; g < r.languages(); g++) row.append(String.format(Locale.ROOT, " %9d", r.selected(g, l)));
            out.println(row);
        }
        if (r.others().isEmpty()) return;
        out.println("neuron usage alignment (cosine of activation probabilities) with the --compare files");
        head = new StringBuilder("layer");
        for (Spec o : r.others()) head.append(String.format(Locale.ROOT, " %9s", o.language()));
        out.println(head);
        for (int l = 0; l < r.layers().size(); l++) {
            StringBuilder row = new StringBuilder(String.format(Locale.ROOT, "%5d", r.layers().get(l)));
            for (double[] a : r.alignment()) row.append(String.format(Locale.ROOT, " %9.6f", a[l]));
            out.println(row);
        }
    }

    private static String num(double v) {
        return Double.isNaN(v) ? "nan" : Double.isInfinite(v) ? (v > 0 ? "inf" : "-inf") : Double.toString(v);
    }

    /** Plots first, then the tables, neurons.json last: a directory with neurons.json is complete. */
    private void write(Results r) throws IOException {
        Files.createDirectories(output);
        int layers = r.layers().size();
        double[] x = new double[layers];
        for (int l = 0; l < layers; l++) x[l] = r.layers().get(l);
        Map<String, double[]> perLayer = new LinkedHashMap<>();
        for (int g = 0; g < r.languages(); g++) {
            double[] y = new double[layers];
            for (int l = 0; l < layers; l++) y[l] = r.selected(g, l);
            perLayer.put(r.name(g), y);
        }
        Plots.lines(output.resolve("neurons.png"), "Language-specific neurons per layer", "layer", "selected neurons", x,
                perLayer, 900, 500);
        List<String> names = r.specs().stream().map(Spec::language).toList();
        double[][] jaccard = new double[r.languages()][r.languages()];
        for (int g = 0; g < r.languages(); g++)
            for (int h = 0; h < r.languages(); h++) jaccard[g][h] = r.jaccard(g, h);
        int side = Math.min(1600, 360 + 40 * r.languages());
        Plots.heatmap(output.resolve("overlap.png"), "Overlap of selected neurons (Jaccard)", "language", "language", names,
                names, jaccard, 0, 1, side + 100, side);
        if (!r.others().isEmpty()) {
            Map<String, double[]> series = new LinkedHashMap<>();
            for (int c = 0; c < r.others().size(); c++) series.put(r.others().get(c).language(), r.alignment()[c]);
            Plots.lines(output.resolve("alignment.png"), "Neuron usage alignment with the --compare model", "layer",
                    "cosine of activation probabilities", x, series, 900, 500);
        }

        StringBuilder csv = new StringBuilder("language,layer,tokens,selected,exclusive,mean_probability\n");
        for (int g = 0; g < r.languages(); g++)
            for (int l = 0; l < layers; l++)
                csv.append(r.name(g)).append(',').append(r.layers().get(l)).append(',').append(r.inputs().get(g).tokens())
                        .append(',').append(r.selected(g, l)).append(',').append(r.exclusive(g, l)).append(',')
                        .append(num(r.meanProbability(g, l))).append('\n');
        writeAtomically(output.resolve("neurons.csv"), csv.toString());
        AtomicFile.write(output.resolve("neuron_stats.csv"), stream -> {
            Writer w = new BufferedWriter(new OutputStreamWriter(stream, StandardCharsets.UTF_8), 1 << 16);
            writeNeuronStats(r, w);
            w.flush();
        });
        if (!r.others().isEmpty()) {
            StringBuilder a = new StringBuilder("language,layer,usage_alignment\n");
            for (int c = 0; c < r.others().size(); c++)
                for (int l = 0; l < layers; l++)
                    a.append(r.others().get(c).language()).append(',').append(r.layers().get(l)).append(',')
                            .append(num(r.alignment()[c][l])).append('\n');
            writeAtomically(output.resolve("alignment.csv"), a.toString());
        }

        ObjectMapper json = new ObjectMapper().enable(SerializationFeature.INDENT_OUTPUT);
        ObjectNode root = json.createObjectNode();
        root.put("preset", preset);
        root.putObject("parameters").put("filter_rate", r.params().filterRate()).put("rho", r.params().rho())
                .put("tau", r.params().tau());
        if (mask != null) root.put("mask", mask);
        root.putPOJO("layers", r.layers());
        root.put("neurons_per_layer", r.width());
        NeuronSelectivity.Result s = r.selection();
        root.put("filter_bar", s.filterBar()).put("activation_bar", s.activationBar()).put("selected_total", s.selectedTotal());
        ArrayNode langs = root.putArray("languages");
        for (int g = 0; g < r.languages(); g++) {
            Spec spec = r.specs().get(g);
            ObjectNode o = langs.addObject().put("name", spec.language()).put("file", spec.file().toString());
            if (spec.mask() != null) o.put("mask", spec.mask());
            o.put("tokens", r.inputs().get(g).tokens());
            ArrayNode n = o.putArray("selected_per_layer"), e = o.putArray("exclusive_per_layer"),
                    m = o.putArray("mean_probability_per_layer"), sel = o.putArray("selected");
            for (int l = 0; l < layers; l++) {
                n.add(r.selected(g, l));
                e.add(r.exclusive(g, l));
                m.add(r.meanProbability(g, l));
                ArrayNode js = sel.addArray();
                for (int j : s.selected()[g][l]) js.add(j);
            }
        }
        ArrayNode overlap = root.putArray("overlap_jaccard");
        for (double[] row : jaccard) {
            ArrayNode a = overlap.addArray();
            for (double v : row) finite(a, v);
        }
        if (!r.others().isEmpty()) {
            ArrayNode cmp = root.putArray("compare");
            for (int c = 0; c < r.others().size(); c++) {
                Spec o = r.others().get(c);
                ObjectNode n = cmp.addObject().put("name", o.language()).put("file", o.file().toString());
                if (o.mask() != null) n.put("mask", o.mask());
                n.put("tokens", r.otherInputs().get(c).tokens());
                ArrayNode a = n.putArray("usage_alignment");
                for (double v : r.alignment()[c]) finite(a, v);
            }
        }
        writeAtomically(output.resolve("neurons.json"), json.writeValueAsString(root) + "\n");
        System.err.println("wrote " + output.resolve("neurons.json") + ", neurons.csv, neuron_stats.csv, neurons.png, overlap.png"
                + (r.others().isEmpty() ? "" : ", alignment.csv, alignment.png"));
    }

    /** One row per neuron: its active-token counts per language, the ranking entropy, and its languages. */
    private static void writeNeuronStats(Results r, Writer w) throws IOException {
        StringBuilder line = new StringBuilder("layer,neuron");
        for (int g = 0; g < r.languages(); g++) line.append(",count_").append(r.name(g));
        line.append(",entropy,languages\n");
        w.write(line.toString());
        NeuronSelectivity.Result s = r.selection();
        int[][] at = new int[r.languages()][r.layers().size()];
        for (int l = 0; l < r.layers().size(); l++)
            for (int j = 0; j < r.width(); j++) {
                line.setLength(0);
                line.append(r.layers().get(l)).append(',').append(j);
                for (int g = 0; g < r.languages(); g++) line.append(',').append(r.counts()[g][l][j]);
                line.append(',').append(num(s.entropy()[l][j])).append(',');
                boolean first = true;
                for (int g = 0; g < r.languages(); g++) {
                    int[] sel = s.selected()[g][l];
                    if (at[g][l] < sel.length && sel[at[g][l]] == j) {
                        at[g][l]++;
                        if (!first) line.append(';');
                        line.append(r.name(g));
                        first = false;
                    }
                }
                line.append('\n');
                w.write(line.toString());
            }
    }

    private static void finite(ArrayNode a, double v) {
        if (Double.isFinite(v)) a.add(v);
        else a.addNull();
    }

    private static void writeAtomically(Path target, String text) throws IOException {
        AtomicFile.write(target, out -> out.write(text.getBytes(StandardCharsets.UTF_8)));
    }
}
