package dev.smelter.cli;

import static dev.smelter.cli.CliRun.cli;

import dev.smelter.cli.CliRun.Run;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import dev.smelter.TestData;
import dev.smelter.analysis.NeuronSelectivity;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.SplittableRandom;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * {@code smelter neurons} end to end on activation files written byte by byte: counts against a count in plain
 * Java, the selection against {@link NeuronSelectivity} on those counts and against neurons built to be
 * language-specific, the written files, masks, usage alignment, and the errors.
 */
class NeuronsCliTest {
    @TempDir
    Path dir;

    static final String[] LANGS = {"en", "de", "fr"};
    static final int[] TOKENS = {101, 173, 257};
    static final int LAYERS = 2, D = 37;

    /** Language-specific neurons by construction: SPECIFIC[l] maps neuron j to the languages it fires for. */
    static final List<Map<Integer, Set<String>>> SPECIFIC = List.of(
            Map.of(3, Set.of("en"), 10, Set.of("de"), 20, Set.of("fr")),
            Map.of(5, Set.of("en"), 17, Set.of("fr"), 30, Set.of("de"), 31, Set.of("en", "de")));

    /** Activations of one language as stored ([layer][token][neuron], after dtype rounding) and its mask. */
    record Acts(float[][][] values, boolean[] mask, boolean bf16) {
        int tokens() {
            return values[0].length;
        }

        /** Tokens with value > 0 per layer and neuron, over the rows the mask sets (all rows if !masked). */
        long[][] count(boolean masked) {
            long[][] c = new long[values.length][values[0][0].length];
            for (int l = 0; l < values.length; l++)
                for (int t = 0; t < tokens(); t++) {
                    if (masked && !mask[t]) continue;
                    for (int j = 0; j < c[l].length; j++) if (values[l][t][j] > 0) c[l][j]++;
                }
            return c;
        }

        long maskedTokens() {
            long n = 0;
            for (boolean b : mask) if (b) n++;
            return n;
        }
    }

    /**
     * Random gate activations of one language: a specific neuron fires (> 0) on 92% of tokens of its languages
     * and 2% of the others; every other neuron with a probability between 0.25 and 0.55 that differs by at most
     * 0.03 between languages. Non-firing values are negative or exactly (+/-) zero. The mask sets rows t % 3 != 0.
     */
    static Acts acts(String lang, int tokens, int layers, int width, boolean bf16, long seed) {
        SplittableRandom shared = new SplittableRandom(1234);
        double[][] base = new double[layers][width];
        for (double[] row : base) for (int j = 0; j < width; j++) row[j] = 0.25 + 0.3 * shared.nextDouble();
        SplittableRandom r = new SplittableRandom(seed);
        float[][][] v = new float[layers][tokens][width];
        for (int l = 0; l < layers; l++) {
            double[] p = new double[width];
            for (int j = 0; j < width; j++) {
                Set<String> s = l < SPECIFIC.size() ? SPECIFIC.get(l).get(j) : null;
                p[j] = s == null ? base[l][j] + 0.06 * (r.nextDouble() - 0.5) : s.contains(lang) ? 0.92 : 0.02;
            }
            for (int t = 0; t < tokens; t++)
                for (int j = 0; j < width; j++) {
                    double x;
                    if (r.nextDouble() < p[j]) x = 0.01 + Math.abs(gaussian(r));
                    else if (r.nextInt(10) == 0) x = r.nextBoolean() ? 0.0 : -0.0;
                    else x = -(0.001 + 0.3 * Math.abs(gaussian(r)));
                    v[l][t][j] = bf16 ? bf16((float) x) : (float) x;
                }
        }
        boolean[] mask = new boolean[tokens];
        for (int t = 0; t < tokens; t++) mask[t] = t % 3 != 0;
        return new Acts(v, mask, bf16);
    }

    static double gaussian(SplittableRandom r) {
        double u = r.nextDouble(Double.MIN_VALUE, 1.0), w = r.nextDouble();
        return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * w);
    }

    /** f32 rounded to bf16 (nearest even) and back. */
    static float bf16(float f) {
        int b = Float.floatToRawIntBits(f);
        int lower = b & 0xFFFF, upper = b >>> 16;
        if (lower > 0x8000 || (lower == 0x8000 && (upper & 1) == 1)) upper++;
        return Float.intBitsToFloat(upper << 16);
    }

    /** A tensor for {@link #safetensors}. */
    record T(String dtype, long[] shape, byte[] data) {}

    static Path safetensors(Path file, Map<String, T> tensors) throws IOException {
        StringBuilder h = new StringBuilder("{\"__metadata__\":{\"smelter.format\":\"activations/1\"}");
        long at = 0;
        for (var e : tensors.entrySet()) {
            T t = e.getValue();
            h.append(",\"").append(e.getKey()).append("\":{\"dtype\":\"").append(t.dtype()).append("\",\"shape\":")
                    .append(Arrays.toString(t.shape()).replace(" ", "")).append(",\"data_offsets\":[").append(at).append(',')
                    .append(at + t.data().length).append("]}");
            at += t.data().length;
        }
        h.append('}');
        while ((h.length() + 8) % 8 != 0) h.append(' ');
        byte[] header = h.toString().getBytes(StandardCharsets.UTF_8);
        ByteBuffer out = ByteBuffer.allocate((int) (8 + header.length + at)).order(ByteOrder.LITTLE_ENDIAN);
        out.putLong(header.length).put(header);
        for (T t : tensors.values()) out.put(t.data());
        Files.write(file, out.array());
        return file;
    }

    /** mlp_act.L (F32 or BF16), hidden.0 and mask.src. */
    static Path write(Path file, Acts a) throws IOException {
        Map<String, T> t = new LinkedHashMap<>();
        for (int l = 0; l < a.values().length; l++) t.put("mlp_act." + l, matrix(a.values()[l], a.bf16()));
        t.put("hidden.0", matrix(new float[a.tokens()][3], false));
        byte[] m = new byte[a.tokens()];
        for (int i = 0; i < m.length; i++) m[i] = (byte) (a.mask()[i] ? 1 : 0);
        t.put("mask.src", new T("U8", new long[] {m.length}, m));
        return safetensors(file, t);
    }

    static T matrix(float[][] m, boolean bf16) {
        int rows = m.length, cols = m[0].length;
        ByteBuffer b = ByteBuffer.allocate(rows * cols * (bf16 ? 2 : 4)).order(ByteOrder.LITTLE_ENDIAN);
        for (float[] row : m)
            for (float v : row) {
                if (bf16) b.putShort((short) (Float.floatToRawIntBits(v) >>> 16));
                else b.putFloat(v);
            }
        return new T(bf16 ? "BF16" : "F32", new long[] {rows, cols}, b.array());
    }


    /** Three languages: en and fr in f32, de in bf16. */
    final class Fixture {
        final Acts[] acts = new Acts[LANGS.length];
        final Path[] files = new Path[LANGS.length];
        final List<String> args = new ArrayList<>();

        Fixture(String tag, long seed) throws IOException {
            for (int g = 0; g < LANGS.length; g++) {
                acts[g] = acts(LANGS[g], TOKENS[g] + (int) (seed % 5), LAYERS, D, g == 1, seed * 31 + g);
                files[g] = write(dir.resolve(tag + "-" + LANGS[g] + ".safetensors"), acts[g]);
                args.add(LANGS[g] + "=" + files[g]);
            }
        }

        long[][][] counts(boolean masked) {
            long[][][] c = new long[LANGS.length][][];
            for (int g = 0; g < c.length; g++) c[g] = acts[g].count(masked);
            return c;
        }

        long[] tokens(boolean masked) {
            long[] t = new long[LANGS.length];
            for (int g = 0; g < t.length; g++) t[g] = masked ? acts[g].maskedTokens() : acts[g].tokens();
            return t;
        }
    }

    static String[] args(List<String> inputs, String... rest) {
        return Stream.concat(Stream.concat(Stream.of("neurons"), inputs.stream()), Stream.of(rest)).toArray(String[]::new);
    }

    static final ObjectMapper JSON = new ObjectMapper();

    /** The counts of neuron_stats.csv, [language][layer][neuron]. */
    static long[][][] statsCounts(Path out) throws IOException {
        List<String> lines = Files.readAllLines(out.resolve("neuron_stats.csv"));
        assertEquals("layer,neuron,count_en,count_de,count_fr,entropy,languages", lines.getFirst());
        assertEquals(1 + LAYERS * D, lines.size());
        long[][][] c = new long[LANGS.length][LAYERS][D];
        for (int i = 1; i < lines.size(); i++) {
            String[] f = lines.get(i).split(",", -1);
            assertEquals(7, f.length, lines.get(i));
            int l = Integer.parseInt(f[0]), j = Integer.parseInt(f[1]);
            assertEquals((i - 1) / D, l);
            assertEquals((i - 1) % D, j);
            for (int g = 0; g < LANGS.length; g++) c[g][l][j] = Long.parseLong(f[2 + g]);
        }
        return c;
    }

    /** selected lists of neurons.json, [language][layer][]. */
    static int[][][] jsonSelected(JsonNode root) {
        int[][][] s = new int[LANGS.length][LAYERS][];
        for (int g = 0; g < LANGS.length; g++) {
            JsonNode lang = root.get("languages").get(g);
            assertEquals(LANGS[g], lang.get("name").asText());
            for (int l = 0; l < LAYERS; l++) {
                JsonNode a = lang.get("selected").get(l);
                s[g][l] = new int[a.size()];
                for (int i = 0; i < a.size(); i++) s[g][l][i] = a.get(i).asInt();
            }
        }
        return s;
    }

    static void assertSelectionMatches(NeuronSelectivity.Result expect, JsonNode root, Path out) throws IOException {
        int[][][] got = jsonSelected(root);
        for (int g = 0; g < LANGS.length; g++)
            for (int l = 0; l < LAYERS; l++)
                assertArrayEquals(expect.selected()[g][l], got[g][l], LANGS[g] + " layer " + l);
        assertEquals(expect.filterBar(), root.get("filter_bar").asDouble());
        assertEquals(expect.activationBar(), root.get("activation_bar").asDouble());
        assertEquals(expect.selectedTotal(), root.get("selected_total").asInt());
        // neurons.csv: one row per language and layer
        List<String> csv = Files.readAllLines(out.resolve("neurons.csv"));
        assertEquals("language,layer,tokens,selected,exclusive,mean_probability", csv.getFirst());
        assertEquals(1 + LANGS.length * LAYERS, csv.size());
        for (int g = 0; g < LANGS.length; g++)
            for (int l = 0; l < LAYERS; l++) {
                String[] f = csv.get(1 + g * LAYERS + l).split(",");
                assertEquals(LANGS[g], f[0]);
                assertEquals(l, Integer.parseInt(f[1]));
                assertEquals(root.get("languages").get(g).get("tokens").asLong(), Long.parseLong(f[2]));
                assertEquals(expect.selected()[g][l].length, Integer.parseInt(f[3]));
                int exclusive = 0;
                for (int j : expect.selected()[g][l]) {
                    boolean shared = false;
                    for (int h = 0; h < LANGS.length; h++)
                        if (h != g && Arrays.binarySearch(expect.selected()[h][l], j) >= 0) shared = true;
                    if (!shared) exclusive++;
                }
                assertEquals(exclusive, Integer.parseInt(f[4]), "exclusive " + LANGS[g] + " " + l);
                double mean = Arrays.stream(expect.probability()[g][l]).sum() / D;
                assertEquals(mean, Double.parseDouble(f[5]), 1e-12);
            }
    }

    @Test
    void countsSelectionAndFilesMatchAnIndependentComputation() throws IOException {
        Fixture fx = new Fixture("a", 7);
        Path out = dir.resolve("out");
        Run run = cli(args(fx.args, "-o", out.toString(), "--device", "cpu"));
        assertEquals(0, run.code(), run.err());

        long[][][] counts = fx.counts(false);
        long[] tokens = fx.tokens(false);
        assertTrue(Arrays.deepEquals(counts, statsCounts(out)), "counts of neuron_stats.csv");
        JsonNode root = JSON.readTree(out.resolve("neurons.json").toFile());
        assertEquals("seed", root.get("preset").asText());
        assertEquals(0.95, root.get("parameters").get("filter_rate").asDouble());
        assertEquals(0.1, root.get("parameters").get("rho").asDouble());
        assertEquals(0.8, root.get("parameters").get("tau").asDouble());
        assertEquals(D, root.get("neurons_per_layer").asInt());
        assertEquals("[0,1]", root.get("layers").toString());
        for (int g = 0; g < LANGS.length; g++) {
            assertEquals(tokens[g], root.get("languages").get(g).get("tokens").asLong());
            assertEquals(fx.files[g].toString(), root.get("languages").get(g).get("file").asText());
        }
        NeuronSelectivity.Result expect = NeuronSelectivity.select(counts, tokens, NeuronSelectivity.Params.seedStudy());
        assertSelectionMatches(expect, root, out);

        // The constructed neurons are exactly the selected sets, the two-language one in both languages.
        int[][][] got = jsonSelected(root);
        for (int g = 0; g < LANGS.length; g++)
            for (int l = 0; l < LAYERS; l++) {
                List<Integer> want = new ArrayList<>();
                for (var e : SPECIFIC.get(l).entrySet()) if (e.getValue().contains(LANGS[g])) want.add(e.getKey());
                want.sort(null);
                assertArrayEquals(want.stream().mapToInt(Integer::intValue).toArray(), got[g][l], LANGS[g] + " layer " + l);
            }
        // Jaccard: en and de share neuron 31 of en's {3, 5, 31} and de's {10, 30, 31}: 1 / 5.
        JsonNode overlap = root.get("overlap_jaccard");
        assertEquals(1.0, overlap.get(0).get(0).asDouble());
        assertEquals(0.2, overlap.get(0).get(1).asDouble(), 1e-15);
        assertEquals(0.0, overlap.get(0).get(2).asDouble());
        assertEquals(0.2, overlap.get(1).get(0).asDouble(), 1e-15);
        // neuron_stats.csv names the languages of each selected neuron
        List<String> stats = Files.readAllLines(out.resolve("neuron_stats.csv"));
        assertTrue(stats.get(1 + D + 31).endsWith(",en;de"), stats.get(1 + D + 31));
        assertTrue(stats.get(1 + 3).endsWith(",en"), stats.get(1 + 3));
        assertTrue(stats.get(1 + 4).endsWith(","), stats.get(1 + 4));
        for (String png : List.of("neurons.png", "overlap.png")) assertTrue(Files.size(out.resolve(png)) > 1000, png);
        assertFalse(Files.exists(out.resolve("alignment.csv")), "no alignment without --compare");
        try (Stream<Path> s = Files.list(out)) {
            assertTrue(s.noneMatch(p -> p.getFileName().toString().startsWith(".")), "no temporary files left");
        }
        assertTrue(run.out().contains("layer        en        de        fr"), run.out());

        // The LAPE preset selects round(74 * 0.01) = 1 neuron; an override changes one parameter only.
        Path lape = dir.resolve("lape");
        run = cli(args(fx.args, "-o", lape.toString(), "--device", "cpu", "--preset", "lape", "--chunk-rows", "5"));
        assertEquals(0, run.code(), run.err());
        root = JSON.readTree(lape.resolve("neurons.json").toFile());
        expect = NeuronSelectivity.select(counts, tokens, NeuronSelectivity.Params.lape());
        assertEquals(1, expect.selectedTotal());
        assertSelectionMatches(expect, root, lape);
        int members = 0;
        for (int g = 0; g < LANGS.length; g++)
            for (int l = 0; l < LAYERS; l++)
                for (int j : jsonSelected(root)[g][l]) {
                    members++;
                    assertTrue(SPECIFIC.get(l).getOrDefault(j, Set.of()).contains(LANGS[g]), LANGS[g] + " " + l + " " + j);
                }
        assertEquals(1, members);

        Path custom = dir.resolve("custom");
        run = cli(args(fx.args, "-o", custom.toString(), "--device", "cpu", "--preset", "lape", "--rho", "0.2", "--tau", "0.5"));
        assertEquals(0, run.code(), run.err());
        root = JSON.readTree(custom.resolve("neurons.json").toFile());
        assertEquals(0.95, root.get("parameters").get("filter_rate").asDouble());
        assertEquals(0.2, root.get("parameters").get("rho").asDouble());
        assertEquals(0.5, root.get("parameters").get("tau").asDouble());
        assertSelectionMatches(NeuronSelectivity.select(counts, tokens, new NeuronSelectivity.Params(0.95, 0.2, 0.5)), root, custom);
    }

    @Test
    void maskRestrictsTheCountedRows() throws IOException {
        Fixture fx = new Fixture("m", 3);
        Path out = dir.resolve("masked");
        // One row per kernel call: chunks whose row the mask leaves out are skipped.
        Run run = cli(args(fx.args, "-o", out.toString(), "--device", "cpu", "--mask", "src", "--chunk-rows", "1"));
        assertEquals(0, run.code(), run.err());
        long[][][] masked = fx.counts(true);
        assertFalse(Arrays.deepEquals(masked, fx.counts(false)), "the mask must make a difference here");
        assertTrue(Arrays.deepEquals(masked, statsCounts(out)));
        JsonNode root = JSON.readTree(out.resolve("neurons.json").toFile());
        assertEquals("src", root.get("mask").asText());
        long[] tokens = fx.tokens(true);
        for (int g = 0; g < LANGS.length; g++) assertEquals(tokens[g], root.get("languages").get(g).get("tokens").asLong());
        assertSelectionMatches(NeuronSelectivity.select(masked, tokens, NeuronSelectivity.Params.seedStudy()), root, out);

        // A span for one input only: LANG=FILE#MASK.
        Path one = dir.resolve("one");
        List<String> inputs = new ArrayList<>(fx.args);
        inputs.set(1, inputs.get(1) + "#src");
        run = cli(args(inputs, "-o", one.toString(), "--device", "cpu"));
        assertEquals(0, run.code(), run.err());
        long[][][] mixed = {fx.acts[0].count(false), fx.acts[1].count(true), fx.acts[2].count(false)};
        assertTrue(Arrays.deepEquals(mixed, statsCounts(one)));
        root = JSON.readTree(one.resolve("neurons.json").toFile());
        assertEquals(fx.acts[1].maskedTokens(), root.get("languages").get(1).get("tokens").asLong());
        assertEquals("src", root.get("languages").get(1).get("mask").asText());
        assertEquals(fx.files[1].toString(), root.get("languages").get(1).get("file").asText());
        assertFalse(root.get("languages").get(0).has("mask"));
    }

    @Test
    void usageAlignmentIsTheCosineOfActivationProbabilities() throws IOException {
        Fixture a = new Fixture("base", 11), b = new Fixture("merged", 12);
        Path out = dir.resolve("cmp");
        // Compare en (f32) and de (bf16) only; fr stays without a partner.
        Run run = cli(args(a.args, "-o", out.toString(), "--device", "cpu", "--compare", b.args.get(1), b.args.get(0)));
        assertEquals(0, run.code(), run.err());
        long[][][] ca = a.counts(false), cb = b.counts(false);
        long[] ta = a.tokens(false), tb = b.tokens(false);
        List<String> csv = Files.readAllLines(out.resolve("alignment.csv"));
        assertEquals("language,layer,usage_alignment", csv.getFirst());
        assertEquals(1 + 2 * LAYERS, csv.size());
        JsonNode cmp = JSON.readTree(out.resolve("neurons.json").toFile()).get("compare");
        assertEquals(2, cmp.size());
        int row = 1;
        int[] order = {1, 0};
        for (int c = 0; c < 2; c++) {
            int g = order[c];
            assertEquals(LANGS[g], cmp.get(c).get("name").asText());
            assertEquals(tb[g], cmp.get(c).get("tokens").asLong());
            assertEquals(b.files[g].toString(), cmp.get(c).get("file").asText());
            for (int l = 0; l < LAYERS; l++) {
                double dot = 0, xx = 0, yy = 0;
                for (int j = 0; j < D; j++) {
                    double x = (double) ca[g][l][j] / ta[g], y = (double) cb[g][l][j] / tb[g];
                    dot += x * y;
                    xx += x * x;
                    yy += y * y;
                }
                double cos = dot / Math.sqrt(xx * yy);
                String[] f = csv.get(row++).split(",");
                assertEquals(LANGS[g], f[0]);
                assertEquals(l, Integer.parseInt(f[1]));
                assertEquals(cos, Double.parseDouble(f[2]), 1e-12);
                assertEquals(cos, cmp.get(c).get("usage_alignment").get(l).asDouble(), 1e-12);
                assertTrue(cos > 0.8 && cos < 1, "similar but not identical usage: " + cos);
            }
        }
        assertTrue(Files.size(out.resolve("alignment.png")) > 1000);
        assertTrue(run.out().contains("neuron usage alignment"), run.out());

        // A model compared with itself is perfectly aligned.
        Path self = dir.resolve("self");
        run = cli(args(a.args, "-o", self.toString(), "--device", "cpu", "--compare", a.args.get(2)));
        assertEquals(0, run.code(), run.err());
        List<String> lines = Files.readAllLines(self.resolve("alignment.csv"));
        for (int l = 0; l < LAYERS; l++) assertEquals(1.0, Double.parseDouble(lines.get(1 + l).split(",")[2]), 1e-12);
    }

    @Test
    void cudaCountsEqualTheCpuCounts() throws IOException {
        TestData.assumeCuda();
        Fixture fx = new Fixture("gpu", 5);
        Path cpu = dir.resolve("cpu"), gpu = dir.resolve("gpu");
        assertEquals(0, cli(args(fx.args, "-o", cpu.toString(), "--device", "cpu", "--mask", "src")).code());
        Run run = cli(args(fx.args, "-o", gpu.toString(), "--device", "cuda", "--mask", "src", "--chunk-rows", "64"));
        assertEquals(0, run.code(), run.err());
        assertEquals(Files.readString(cpu.resolve("neuron_stats.csv")), Files.readString(gpu.resolve("neuron_stats.csv")));
        assertTrue(Arrays.deepEquals(fx.counts(true), statsCounts(gpu)));
    }

    /** Runs a failing command: the exit code, a message containing every fragment, and no output directory. */
    private void assertFails(int code, List<String> inputs, List<String> options, String... fragments) {
        Path out = dir.resolve("failed");
        List<String> rest = new ArrayList<>(options);
        rest.addAll(List.of("-o", out.toString(), "--device", "cpu"));
        Run run = cli(args(inputs, rest.toArray(String[]::new)));
        assertEquals(code, run.code(), run.err());
        for (String f : fragments) assertTrue(run.err().contains(f), "'" + f + "' not in: " + run.err());
        assertFalse(Files.exists(out), "no output directory after a failure");
        assertEquals("", run.out());
    }

    @Test
    void errorsNameTheCauseAndLeaveNoOutput() throws IOException {
        Fixture fx = new Fixture("e", 1);
        List<String> ok = fx.args;
        String en = ok.get(0), de = ok.get(1);

        Path missing = dir.resolve("missing.safetensors");
        assertFails(1, List.of(en, "de=" + missing), List.of(), missing.toString(), "no such activation file");
        assertFails(2, List.of(en, de, "en=" + fx.files[2]), List.of(), "language 'en' is given twice");
        assertFails(2, List.of(en, de, fx.files[2].toString()), List.of(), "expected LANG=FILE");
        assertFails(2, List.of(en, "d e=" + fx.files[1]), List.of(), "language name 'd e'");
        assertFails(2, List.of(en), List.of(), "LANG=FILE");  // picocli: two inputs at least
        assertFails(1, ok, List.of("--mask", "tgt"), "mask.tgt", fx.files[0].toString());
        assertFails(1, List.of(en, de + "#nope"), List.of(), "mask.nope", fx.files[1].toString());
        assertFails(2, ok, List.of("--rho", "0"), "--rho must be in (0, 1]");
        assertFails(2, ok, List.of("--tau", "1.5"), "--tau must be in (0, 1]");
        assertFails(2, ok, List.of("--preset", "paper"), "--preset is 'seed' or 'lape'");
        assertFails(2, ok, List.of("--compare", "sw=" + fx.files[0]), "no input for language 'sw'");
        assertFails(2, ok, List.of("--compare", en, "--compare", en), "--compare language 'en' is given twice");

        // a file with three layers, one 36 neurons wide, one without mlp_act, one whose layers differ in rows
        Path three = write(dir.resolve("three.safetensors"), acts("fr", 120, 3, D, false, 9));
        assertFails(2, List.of(en, "fr=" + three), List.of(), three.toString(), "[0, 1, 2]", fx.files[0].toString());
        Path narrow = write(dir.resolve("narrow.safetensors"), acts("fr", 120, LAYERS, 36, true, 9));
        assertFails(2, List.of(en, de, "fr=" + narrow), List.of(), narrow.toString(), "36 neurons", "37");
        Path narrowCmp = narrow;
        assertFails(2, ok, List.of("--compare", "fr=" + narrowCmp), narrow.toString(), "36 neurons");
        Path hidden = safetensors(dir.resolve("hidden.safetensors"), Map.of("hidden.0", matrix(new float[5][4], false)));
        assertFails(2, List.of(en, "de=" + hidden), List.of(), hidden.toString(), "no mlp_act.N tensors");
        Acts a = acts("fr", 50, 1, D, false, 4), b = acts("fr", 51, 1, D, false, 5);
        Map<String, T> ragged = new LinkedHashMap<>();
        ragged.put("mlp_act.0", matrix(a.values()[0], false));
        ragged.put("mlp_act.1", matrix(b.values()[0], false));
        Path uneven = safetensors(dir.resolve("uneven.safetensors"), ragged);
        assertFails(1, List.of(en, "fr=" + uneven), List.of(), uneven.toString(), "mlp_act.1", "51 rows");
        // a mask that sets no token
        Map<String, T> empty = new LinkedHashMap<>();
        empty.put("mlp_act.0", matrix(a.values()[0], false));
        empty.put("mlp_act.1", matrix(a.values()[0], false));
        empty.put("mask.src", new T("U8", new long[] {50}, new byte[50]));
        Path none = safetensors(dir.resolve("none.safetensors"), empty);
        assertFails(2, List.of(en, "fr=" + none + "#src"), List.of(), none.toString(), "mask.src sets no token");

        // the output is a file
        Path file = Files.writeString(dir.resolve("taken"), "x");
        Run run = cli(args(ok, "-o", file.toString(), "--device", "cpu"));
        assertEquals(2, run.code());
        assertTrue(run.err().contains("is not a directory"), run.err());
        assertEquals("x", Files.readString(file));
        assertNotEquals(0, cli(args(ok, "--device", "tpu")).code());
    }
}
