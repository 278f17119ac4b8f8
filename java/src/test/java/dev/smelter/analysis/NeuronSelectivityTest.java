package dev.smelter.analysis;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.math.BigDecimal;
import java.math.RoundingMode;
import java.util.ArrayList;
import java.util.Collections;
import java.util.Comparator;
import java.util.List;
import java.util.Random;
import org.junit.jupiter.api.Test;

/** LAPE language-specific neuron selection (Tang et al. 2024) and Neuron Usage Alignment. */
class NeuronSelectivityTest {
    private static final double INF = Double.POSITIVE_INFINITY;

    /*
     * Hand-built example, G=3 languages with tokens {10, 10, 20}, L=2 layers, D=5 neurons; p = counts / tokens:
     *
     *   neuron (flat)  p g0  p g1  p g2   raw entropy   note
     *   l0 j0  (0)     0.9   0     0      0             one-hot
     *   l0 j1  (1)     0.8   0.8   0      ln 2          two languages
     *   l0 j2  (2)     0.1   0     0      0             one-hot but rare: filtered
     *   l0 j3  (3)     0.5   0.5   0.5    ln 3
     *   l0 j4  (4)     0     0     0      inf           never fires
     *   l1 j0  (5)     0.2   0.2   0.2    ln 3          max p = filterBar, not above: filtered
     *   l1 j1  (6)     0     0.6   0.6    ln 2
     *   l1 j2  (7)     0     0     0.7    0             one-hot
     *   l1 j3  (8)     0.3   0.3   0.3    ln 3
     *   l1 j4  (9)     0.4   0     0.4    ln 2
     *
     * The 30 values of p sorted: positions 1-12 are 0, 13: 0.1, 14-16: 0.2, 17-19: 0.3, 20-21: 0.4, 22-24: 0.5,
     * 25-26: 0.6, 27: 0.7, 28-29: 0.8, 30: 0.9.
     */
    private static final long[] HAND_TOKENS = {10, 10, 20};
    private static final long[][][] HAND_COUNTS = {
        {{9, 8, 1, 5, 0}, {2, 0, 0, 3, 4}},
        {{0, 8, 0, 5, 0}, {2, 6, 0, 3, 0}},
        {{0, 0, 0, 10, 0}, {4, 12, 14, 6, 8}},
    };

    @Test
    void handBuiltExample() {
        // filterRate 0.5: k = 15, filterBar = 0.2, which filters l0 j2, l0 j4 and l1 j0.
        // rho 0.4: k = 4 of the 7 finite neurons: entropy 0 at flat 0 and 7, then ln 2 is tied at flat 1, 6 and 9;
        // the lower indices 1 and 6 win, 9 is dropped.
        // tau 0.84: k = round(25.2) = 25, activationBar = 0.6. Membership (p > 0.6):
        // l0 j0 -> g0; l0 j1 -> g0 and g1 (0.8 both); l1 j1 -> none (0.6 is not above the bar); l1 j2 -> g2.
        NeuronSelectivity.Result r = NeuronSelectivity.select(HAND_COUNTS, HAND_TOKENS,
                new NeuronSelectivity.Params(0.5, 0.4, 0.84));
        assertEquals(0.2, r.filterBar());
        assertEquals(0.6, r.activationBar());
        assertEquals(4, r.selectedTotal());
        assertSelected(r, new int[][][] {{{0, 1}, {}}, {{1}, {}}, {{}, {2}}});
        assertEquals(0.6, r.probability()[2][1][1]);
        assertEquals(0.0, r.entropy()[0][0]);
        assertEquals(Math.log(2), r.entropy()[0][1], 1e-15);
        assertEquals(INF, r.entropy()[0][2], "filtered by filterBar");
        assertEquals(INF, r.entropy()[0][4], "never fires");
        assertEquals(INF, r.entropy()[1][0], "p equal to filterBar everywhere is not above it");
        assertEquals(Math.log(3), r.entropy()[1][3], 1e-15);
        assertEquals(r.entropy()[0][1], r.entropy()[1][4], "an exact tie");

        double[][] raw = NeuronSelectivity.entropy(r.probability());
        assertEquals(0.0, raw[0][2], "the unfiltered entropy of the rare one-hot neuron");
        assertEquals(Math.log(3), raw[1][0], 1e-15);
        assertEquals(INF, raw[0][4]);

        // tau 0.76: k = round(22.8) = 23, activationBar = 0.5; now l1 j1 (0.6, 0.6) belongs to g1 and g2.
        r = NeuronSelectivity.select(HAND_COUNTS, HAND_TOKENS, new NeuronSelectivity.Params(0.5, 0.4, 0.76));
        assertEquals(0.5, r.activationBar());
        assertSelected(r, new int[][][] {{{0, 1}, {}}, {{1}, {1}}, {{}, {1, 2}}});

        // rho 1: all 7 finite neurons are selected (fewer than round(10 * 1)); with bar 0.6 l0 j3, l1 j1, l1 j3
        // and l1 j4 belong to no language, so the lists are those of the first run.
        r = NeuronSelectivity.select(HAND_COUNTS, HAND_TOKENS, new NeuronSelectivity.Params(0.5, 1.0, 0.84));
        assertEquals(7, r.selectedTotal());
        assertSelected(r, new int[][][] {{{0, 1}, {}}, {{1}, {}}, {{}, {2}}});

        // rho 0.3: k = 3, only flat 1 of the ln 2 tie.
        r = NeuronSelectivity.select(HAND_COUNTS, HAND_TOKENS, new NeuronSelectivity.Params(0.5, 0.3, 0.76));
        assertEquals(3, r.selectedTotal());
        assertSelected(r, new int[][][] {{{0, 1}, {}}, {{1}, {}}, {{}, {2}}});
    }

    @Test
    void percentileRoundsHalfToEvenLikePython() {
        // p sorted = {0.1, 0.2, 0.3, 0.4}; 4 * 0.625 = 2.5 exactly: Python's round gives k = 2 (0.2), not 3.
        // 4 * 0.875 = 3.5 rounds to 4 (0.4).
        long[][][] counts = {{{1, 2}}, {{3, 4}}};
        NeuronSelectivity.Result r = NeuronSelectivity.select(counts, new long[] {10, 10},
                new NeuronSelectivity.Params(0.625, 0.5, 0.875));
        assertEquals(0.2, r.filterBar());
        assertEquals(0.4, r.activationBar());
    }

    @Test
    void presets() {
        assertEquals(new NeuronSelectivity.Params(0.95, 0.01, 0.95), NeuronSelectivity.Params.lape());
        assertEquals(new NeuronSelectivity.Params(0.95, 0.1, 0.8), NeuronSelectivity.Params.seedStudy());
    }

    @Test
    void matchesBruteForceOnRandomCounts() {
        for (long seed : new long[] {1, 2, 3}) {
            Random rnd = new Random(seed);
            int langs = 4;
            int layers = 3;
            int width = 101;
            long[] tokens = new long[langs];
            for (int g = 0; g < langs; g++) tokens[g] = 50 + rnd.nextInt(451);
            long[][][] counts = randomCounts(rnd, tokens, layers, width);
            for (NeuronSelectivity.Params params :
                    List.of(NeuronSelectivity.Params.lape(), NeuronSelectivity.Params.seedStudy())) {
                String what = "seed " + seed + ", " + params;
                NeuronSelectivity.Result got = NeuronSelectivity.select(counts, tokens, params);
                Reference want = reference(counts, tokens, params);
                for (int g = 0; g < langs; g++)
                    for (int l = 0; l < layers; l++)
                        assertArrayEquals(want.probability[g][l], got.probability()[g][l], what);
                for (int l = 0; l < layers; l++)
                    assertArrayEquals(want.entropy[l], got.entropy()[l], what + ", entropy of layer " + l);
                assertEquals(want.filterBar, got.filterBar(), what);
                assertEquals(want.activationBar, got.activationBar(), what);
                assertEquals(want.selectedTotal, got.selectedTotal(), what);
                assertSelected(got, want.selected);
                assertEquals((int) Math.rint(layers * width * params.rho()), got.selectedTotal(),
                        what + ": random data has enough finite neurons to fill the quota");
                int memberships = 0;
                for (int[][] lang : got.selected()) for (int[] layer : lang) memberships += layer.length;
                assertTrue(memberships > 0, what + ": some neuron belongs to a language");
            }
        }
    }

    /** Mixed neuron kinds so filtering, exact entropy ties (duplicated neurons) and multi-language hits occur. */
    private static long[][][] randomCounts(Random rnd, long[] tokens, int layers, int width) {
        int langs = tokens.length;
        double[][][] rate = new double[langs][layers][width];
        for (int l = 0; l < layers; l++)
            for (int j = 0; j < width; j++) {
                int kind = rnd.nextInt(10);
                int a = rnd.nextInt(langs);
                int b = rnd.nextInt(langs);
                for (int g = 0; g < langs; g++) {
                    double v = switch (kind) {
                        case 0 -> 0;                                                   // dead neuron
                        case 1, 2 -> g == a ? 0.5 + 0.5 * rnd.nextDouble() : 0.02 * rnd.nextDouble();
                        case 3 -> g == a || g == b ? 0.6 + 0.4 * rnd.nextDouble() : 0;
                        case 4 -> j > 0 ? rate[g][l][j - 1] : 0.1;  // same rates, same counts: exact tie
                        case 5 -> g == a ? 0.05 * rnd.nextDouble() : 0;                // rare one-hot
                        default -> rnd.nextDouble();
                    };
                    rate[g][l][j] = v;
                }
            }
        long[][][] counts = new long[langs][layers][width];
        for (int g = 0; g < langs; g++)
            for (int l = 0; l < layers; l++)
                for (int j = 0; j < width; j++) counts[g][l][j] = Math.round(rate[g][l][j] * tokens[g]);
        return counts;
    }

    private record Reference(double[][][] probability, double[][] entropy, double filterBar, double activationBar,
            int[][][] selected, int selectedTotal) {}

    private record Candidate(double entropy, int flat) {}

    /**
     * Straightforward re-implementation with boxed lists and a comparator sort. The entropy arithmetic is the
     * definition in the same language order as the class, so the values agree bit for bit and ties are the same.
     */
    private static Reference reference(long[][][] counts, long[] tokens, NeuronSelectivity.Params params) {
        int langs = counts.length;
        int layers = counts[0].length;
        int width = counts[0][0].length;
        double[][][] p = new double[langs][layers][width];
        List<Double> all = new ArrayList<>();
        for (int g = 0; g < langs; g++)
            for (int l = 0; l < layers; l++)
                for (int j = 0; j < width; j++) {
                    p[g][l][j] = (double) counts[g][l][j] / (double) tokens[g];
                    all.add(p[g][l][j]);
                }
        Collections.sort(all);
        double filterBar = all.get(pythonRoundClamped(all.size() * params.filterRate(), all.size()) - 1);
        double activationBar = all.get(pythonRoundClamped(all.size() * params.tau(), all.size()) - 1);

        double[][] entropy = new double[layers][width];
        List<Candidate> candidates = new ArrayList<>();
        for (int l = 0; l < layers; l++)
            for (int j = 0; j < width; j++) {
                List<Double> column = new ArrayList<>();
                for (int g = 0; g < langs; g++) column.add(p[g][l][j]);
                double sum = 0;
                for (double v : column) sum += v;
                boolean aboveFilter = false;
                for (double v : column) aboveFilter |= v > filterBar;
                double h = 0;
                for (double v : column)
                    if (v > 0) h -= v / sum * Math.log(v / sum);
                if (sum == 0 || !aboveFilter) h = INF;
                entropy[l][j] = h;
                if (h != INF) candidates.add(new Candidate(h, l * width + j));
            }
        candidates.sort(Comparator.comparingDouble(Candidate::entropy).thenComparingInt(Candidate::flat));
        int quota = new BigDecimal((double) layers * width * params.rho()).setScale(0, RoundingMode.HALF_EVEN)
                .intValueExact();
        List<Candidate> chosen = candidates.subList(0, Math.min(quota, candidates.size()));

        List<List<List<Integer>>> lists = new ArrayList<>();
        for (int g = 0; g < langs; g++) {
            List<List<Integer>> lang = new ArrayList<>();
            for (int l = 0; l < layers; l++) lang.add(new ArrayList<>());
            lists.add(lang);
        }
        for (Candidate c : chosen)
            for (int g = 0; g < langs; g++)
                if (p[g][c.flat / width][c.flat % width] > activationBar)
                    lists.get(g).get(c.flat / width).add(c.flat % width);
        int[][][] selected = new int[langs][layers][];
        for (int g = 0; g < langs; g++)
            for (int l = 0; l < layers; l++) {
                List<Integer> js = lists.get(g).get(l);
                Collections.sort(js);
                selected[g][l] = js.stream().mapToInt(Integer::intValue).toArray();
            }
        return new Reference(p, entropy, filterBar, activationBar, selected, chosen.size());
    }

    private static int pythonRoundClamped(double x, int n) {
        int k = new BigDecimal(x).setScale(0, RoundingMode.HALF_EVEN).intValueExact();
        return Math.max(1, Math.min(n, k));
    }

    private static void assertSelected(NeuronSelectivity.Result r, int[][][] expected) {
        assertEquals(expected.length, r.selected().length, "languages");
        for (int g = 0; g < expected.length; g++) {
            assertEquals(expected[g].length, r.selected()[g].length, "layers of language " + g);
            for (int l = 0; l < expected[g].length; l++)
                assertArrayEquals(expected[g][l], r.selected()[g][l], "language " + g + " layer " + l);
        }
    }

    @Test
    void entropyOfUniformAndOneHotRows() {
        for (int langs : new int[] {2, 3, 5, 20}) {
            double[][][] p = new double[langs][1][2];
            for (int g = 0; g < langs; g++) {
                p[g][0][0] = 0.37;
                p[g][0][1] = g == langs - 1 ? 0.8 : 0;
            }
            double[][] h = NeuronSelectivity.entropy(p);
            assertEquals(Math.log(langs), h[0][0], 1e-12, "uniform over " + langs);
            assertEquals(0.0, h[0][1], "one-hot over " + langs);
        }
    }

    @Test
    void usageAlignment() {
        Random rnd = new Random(7);
        double[] v = new double[64];
        for (int j = 0; j < v.length; j++) v[j] = rnd.nextDouble();
        double[][] a = {v, {1, 0, 0, 1}, {0, 0, 0}, {0.5, 0.5}};
        double[][] b = {v.clone(), {0, 1, 1, 0}, {1, 2, 3}, {0.2, 0.8}};
        double[] nua = NeuronSelectivity.usageAlignment(a, b);
        assertEquals(1.0, nua[0], 1e-15, "identical");
        assertEquals(0.0, nua[1], "orthogonal");
        assertTrue(Double.isNaN(nua[2]), "zero vector");
        assertEquals(0.5 / Math.sqrt(0.5 * 0.68), nua[3], 1e-15);
        assertThrows(IllegalArgumentException.class,
                () -> NeuronSelectivity.usageAlignment(new double[][] {{1, 2}}, new double[][] {{1, 2, 3}}));
        assertThrows(IllegalArgumentException.class,
                () -> NeuronSelectivity.usageAlignment(new double[][] {{1}}, new double[][] {{1}, {2}}));
    }

    @Test
    void argumentErrors() {
        NeuronSelectivity.Params ok = NeuronSelectivity.Params.lape();
        assertMessage("language 1", () -> NeuronSelectivity.select(HAND_COUNTS, new long[] {10, 0, 20}, ok));
        assertMessage("language 2 layer 1 neuron 2", () -> NeuronSelectivity.select(HAND_COUNTS,
                new long[] {10, 10, 13}, ok));
        long[][][] negative = {{{1, 2}}, {{3, -1}}};
        assertMessage("language 1 layer 0 neuron 1", () -> NeuronSelectivity.select(negative, new long[] {5, 5}, ok));
        long[][][] ragged = {{{1, 2}, {1, 2}}, {{1, 2}, {1}}};
        assertMessage("language 1 layer 1", () -> NeuronSelectivity.select(ragged, new long[] {5, 5}, ok));
        long[][][] fewerLayers = {{{1, 2}, {1, 2}}, {{1, 2}}};
        assertMessage("language 1", () -> NeuronSelectivity.select(fewerLayers, new long[] {5, 5}, ok));
        assertMessage("languages", () -> NeuronSelectivity.select(HAND_COUNTS, new long[] {10, 10}, ok));
        assertMessage("no languages", () -> NeuronSelectivity.select(new long[0][][], new long[0], ok));
        assertMessage("rho", () -> new NeuronSelectivity.Params(0.5, 0, 0.5));
        assertMessage("filterRate", () -> new NeuronSelectivity.Params(1.5, 0.1, 0.5));
        assertMessage("tau", () -> new NeuronSelectivity.Params(0.5, 0.1, Double.NaN));
        assertMessage("neuron 0", () -> NeuronSelectivity.entropy(new double[][][] {{{-0.1}}}));
        assertThrows(NullPointerException.class, () -> NeuronSelectivity.select(HAND_COUNTS, HAND_TOKENS, null));
    }

    private static void assertMessage(String part, org.junit.jupiter.api.function.Executable call) {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, call);
        assertTrue(e.getMessage().contains(part), "'" + e.getMessage() + "' should name " + part);
    }
}
