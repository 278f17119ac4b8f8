package dev.smelter.analysis;

import java.util.Arrays;
import java.util.Objects;

/**
 * Language-specific MLP neurons by activation probability entropy (LAPE; Tang et al. 2024, "Language-Specific
 * Neurons: The Key to Multilingual Capabilities in Large Language Models"), and Neuron Usage Alignment between
 * two models.
 *
 * <p>Input: {@code counts[g][l][j]}, the number of tokens of language (or group) {@code g} on which neuron
 * {@code j} of MLP layer {@code l} had gate activation &gt; 0, and {@code tokens[g]}, the tokens of language
 * {@code g}. The selection, as in the paper's code:
 * <ol>
 *   <li>{@code p[g][l][j] = counts[g][l][j] / tokens[g]};
 *   <li>per neuron, {@code q[g] = p[g] / sum_g p[g]} and entropy {@code H = -sum_g q[g] ln q[g]}
 *       ({@code 0 ln 0 = 0}; a neuron that never fires gets +infinity);
 *   <li>{@code filterBar} = the {@code k}-th smallest of all {@code p} (flattened over g, l, j) with
 *       {@code k = round(n * filterRate)}; a neuron with {@code p <= filterBar} in every language gets
 *       +infinity, so rarely-firing neurons are not called specific;
 *   <li>the {@code round(L * D * rho)} neurons of lowest entropy over all layers together are selected, ties
 *       by the lower flattened index {@code l * D + j}; a neuron of infinite entropy never is;
 *   <li>{@code activationBar} = the {@code k}-th smallest {@code p} with {@code k = round(n * tau)}; a
 *       selected neuron belongs to every language whose {@code p > activationBar} (several, or none).
 * </ol>
 * {@code round} is half-to-even (Python's {@code round}, which the paper's code uses), and {@code k} is clamped
 * to {@code [1, n]}.
 */
public final class NeuronSelectivity {
    private NeuronSelectivity() {}

    /**
     * Selection parameters, each in (0, 1].
     *
     * @param filterRate percentile of all activation probabilities a neuron must exceed in some language
     * @param rho fraction of all neurons (over all layers) selected by lowest entropy
     * @param tau percentile of all activation probabilities a selected neuron must exceed to belong to a language
     */
    public record Params(double filterRate, double rho, double tau) {
        public Params {
            checkRate("filterRate", filterRate);
            checkRate("rho", rho);
            checkRate("tau", tau);
        }

        /** The LAPE paper code's defaults: filterRate 0.95, rho 0.01, tau 0.95. */
        public static Params lape() {
            return new Params(0.95, 0.01, 0.95);
        }

        /** A wider selection for seed studies: filterRate 0.95, rho 0.1, tau 0.8. */
        public static Params seedStudy() {
            return new Params(0.95, 0.1, 0.8);
        }

        private static void checkRate(String name, double r) {
            if (!(r > 0 && r <= 1)) throw new IllegalArgumentException(name + " must be in (0, 1], got " + r);
        }
    }

    /**
     * The outcome of {@link #select}. Arrays are shared, not copied.
     *
     * @param probability activation probability {@code [g][l][j]}
     * @param entropy entropy used for ranking {@code [l][j]}: +infinity where the neuron never fires or was
     *     filtered out by {@code filterBar} (the unfiltered values: {@link #entropy})
     * @param filterBar the filter percentile's activation probability
     * @param activationBar the membership percentile's activation probability
     * @param selected {@code [g][l]}: sorted indices {@code j} of the selected neurons that belong to language g
     * @param selectedTotal neurons selected by entropy, including those that belong to no language
     */
    public record Result(double[][][] probability, double[][] entropy, double filterBar, double activationBar,
            int[][][] selected, int selectedTotal) {}

    /** Runs the LAPE selection on activation counts; see the class comment. */
    public static Result select(long[][][] counts, long[] tokens, Params params) {
        Objects.requireNonNull(params, "params");
        double[][][] p = probability(counts, tokens);
        int langs = p.length;
        int layers = p[0].length;
        int width = p[0][0].length;
        double[][] h = entropyOf(p);

        long n = (long) langs * layers * width;
        if (n > Integer.MAX_VALUE - 8) throw new IllegalArgumentException(n + " activation probabilities, too many");
        // One sort serves both percentiles.
        double[] sorted = new double[(int) n];
        int at = 0;
        for (double[][] lang : p)
            for (double[] row : lang) {
                System.arraycopy(row, 0, sorted, at, width);
                at += width;
            }
        Arrays.sort(sorted);
        double filterBar = kth(sorted, params.filterRate());
        double activationBar = kth(sorted, params.tau());

        double[] max = new double[width];
        for (int l = 0; l < layers; l++) {
            Arrays.fill(max, 0);
            for (int g = 0; g < langs; g++) {
                double[] row = p[g][l];
                for (int j = 0; j < width; j++) if (row[j] > max[j]) max[j] = row[j];
            }
            for (int j = 0; j < width; j++) if (!(max[j] > filterBar)) h[l][j] = Double.POSITIVE_INFINITY;
        }

        boolean[] chosen = new boolean[layers * width];
        int total = chooseLowest(h, (int) Math.rint((double) layers * width * params.rho()), chosen);

        // Count first so every list is an exact-size int[], filled in ascending j.
        int[][] sizes = new int[langs][layers];
        for (int i = 0; i < chosen.length; i++) {
            if (!chosen[i]) continue;
            int l = i / width;
            int j = i % width;
            for (int g = 0; g < langs; g++) if (p[g][l][j] > activationBar) sizes[g][l]++;
        }
        int[][][] selected = new int[langs][layers][];
        for (int g = 0; g < langs; g++)
            for (int l = 0; l < layers; l++) selected[g][l] = new int[sizes[g][l]];
        int[][] fill = new int[langs][layers];
        for (int i = 0; i < chosen.length; i++) {
            if (!chosen[i]) continue;
            int l = i / width;
            int j = i % width;
            for (int g = 0; g < langs; g++) if (p[g][l][j] > activationBar) selected[g][l][fill[g][l]++] = j;
        }
        return new Result(p, h, filterBar, activationBar, selected, total);
    }

    /**
     * Activation probabilities {@code counts[g][l][j] / tokens[g]}, validated: at least one language, layer and
     * neuron; every language with the same layers and every layer with the same width; {@code tokens > 0};
     * {@code 0 <= counts <= tokens}.
     */
    public static double[][][] probability(long[][][] counts, long[] tokens) {
        Objects.requireNonNull(counts, "counts");
        Objects.requireNonNull(tokens, "tokens");
        if (counts.length == 0) throw new IllegalArgumentException("no languages");
        if (counts.length != tokens.length)
            throw new IllegalArgumentException(counts.length + " languages of counts but " + tokens.length
                    + " of tokens");
        int layers = -1;
        int width = -1;
        double[][][] p = new double[counts.length][][];
        for (int g = 0; g < counts.length; g++) {
            if (tokens[g] <= 0)
                throw new IllegalArgumentException("language " + g + " has " + tokens[g] + " tokens, needs > 0");
            long[][] lang = counts[g];
            if (lang == null) throw new IllegalArgumentException("language " + g + ": counts are null");
            if (layers < 0) layers = lang.length;
            if (layers == 0) throw new IllegalArgumentException("no layers");
            if (lang.length != layers)
                throw new IllegalArgumentException("language " + g + " has " + lang.length + " layers, language 0 "
                        + layers);
            double tok = tokens[g];
            p[g] = new double[layers][];
            for (int l = 0; l < layers; l++) {
                long[] row = lang[l];
                if (row == null) throw new IllegalArgumentException("language " + g + " layer " + l + ": null");
                if (width < 0) width = row.length;
                if (width == 0) throw new IllegalArgumentException("no neurons");
                if (row.length != width)
                    throw new IllegalArgumentException("language " + g + " layer " + l + " has " + row.length
                            + " neurons, expected " + width);
                double[] out = new double[width];
                for (int j = 0; j < width; j++) {
                    long c = row[j];
                    if (c < 0 || c > tokens[g])
                        throw new IllegalArgumentException("language " + g + " layer " + l + " neuron " + j
                                + ": count " + c + " outside [0, " + tokens[g] + "]");
                    out[j] = c / tok;
                }
                p[g][l] = out;
            }
        }
        return p;
    }

    /**
     * Unfiltered LAPE entropy {@code [l][j]} of activation probabilities {@code [g][l][j]}: {@code -sum_g q ln q}
     * with {@code q = p / sum_g p}, {@code 0 ln 0 = 0}, +infinity where every {@code p} is 0. Values must be
     * finite and non-negative and the array rectangular.
     */
    public static double[][] entropy(double[][][] probability) {
        Objects.requireNonNull(probability, "probability");
        if (probability.length == 0) throw new IllegalArgumentException("no languages");
        int layers = probability[0] == null ? 0 : probability[0].length;
        int width = layers == 0 || probability[0][0] == null ? 0 : probability[0][0].length;
        if (layers == 0 || width == 0) throw new IllegalArgumentException("no layers or no neurons");
        for (int g = 0; g < probability.length; g++) {
            if (probability[g] == null || probability[g].length != layers)
                throw new IllegalArgumentException("language " + g + " does not have " + layers + " layers");
            for (int l = 0; l < layers; l++) {
                double[] row = probability[g][l];
                if (row == null || row.length != width)
                    throw new IllegalArgumentException("language " + g + " layer " + l + " does not have " + width
                            + " neurons");
                for (int j = 0; j < width; j++)
                    if (!(row[j] >= 0 && row[j] < Double.POSITIVE_INFINITY))
                        throw new IllegalArgumentException("language " + g + " layer " + l + " neuron " + j
                                + ": probability " + row[j] + " is not finite and >= 0");
            }
        }
        return entropyOf(probability);
    }

    /** {@link #entropy} without validation; loops run along j so rows are read contiguously. */
    private static double[][] entropyOf(double[][][] p) {
        int langs = p.length;
        int layers = p[0].length;
        int width = p[0][0].length;
        double[][] h = new double[layers][width];
        double[] sum = new double[width];
        for (int l = 0; l < layers; l++) {
            Arrays.fill(sum, 0);
            for (int g = 0; g < langs; g++) {
                double[] row = p[g][l];
                for (int j = 0; j < width; j++) sum[j] += row[j];
            }
            double[] out = h[l];
            for (int g = 0; g < langs; g++) {
                double[] row = p[g][l];
                for (int j = 0; j < width; j++) {
                    if (row[j] > 0) {
                        double q = row[j] / sum[j];
                        out[j] -= q * Math.log(q);
                    }
                }
            }
            for (int j = 0; j < width; j++) if (sum[j] == 0) out[j] = Double.POSITIVE_INFINITY;
        }
        return h;
    }

    /**
     * Marks in {@code chosen} (flattened {@code l * D + j}) the {@code want} finite entries of lowest entropy, ties
     * by index, and returns how many were marked: the k-th smallest value by one sort, then one pass in index
     * order that takes everything below it and the first ties at it.
     */
    private static int chooseLowest(double[][] h, int want, boolean[] chosen) {
        int finite = 0;
        for (double[] row : h) for (double v : row) if (v != Double.POSITIVE_INFINITY) finite++;
        int k = Math.min(want, finite);
        if (k <= 0) return 0;
        double[] values = new double[finite];
        int n = 0;
        for (double[] row : h) for (double v : row) if (v != Double.POSITIVE_INFINITY) values[n++] = v;
        Arrays.sort(values);
        double cut = values[k - 1];
        int below = 0;
        for (double v : values) if (v < cut) below++;
        int ties = k - below;
        int width = h[0].length;
        for (int l = 0; l < h.length; l++)
            for (int j = 0; j < width; j++) {
                double v = h[l][j];
                if (v < cut || (v == cut && ties-- > 0)) chosen[l * width + j] = true;
            }
        return k;
    }

    /** The k-th smallest (1-based) of sorted values, {@code k = round(n * rate)} half-to-even, clamped. */
    private static double kth(double[] sorted, double rate) {
        long k = (long) Math.rint(sorted.length * rate);
        k = Math.max(1, Math.min(sorted.length, k));
        return sorted[(int) k - 1];
    }

    /**
     * Neuron Usage Alignment per layer: the cosine similarity of the two models' usage vectors (activation
     * probability per neuron, {@code [l][j]}) of that layer, in [-1, 1]. A layer where either vector is all zeros
     * has no direction and gives NaN. Both arrays must have the same shape and finite values.
     */
    public static double[] usageAlignment(double[][] usageA, double[][] usageB) {
        Objects.requireNonNull(usageA, "usageA");
        Objects.requireNonNull(usageB, "usageB");
        if (usageA.length != usageB.length)
            throw new IllegalArgumentException("usageA has " + usageA.length + " layers, usageB " + usageB.length);
        double[] out = new double[usageA.length];
        for (int l = 0; l < usageA.length; l++) {
            double[] a = usageA[l];
            double[] b = usageB[l];
            if (a == null || b == null || a.length != b.length)
                throw new IllegalArgumentException("layer " + l + ": usage vectors are null or differ in length");
            double dot = 0;
            double aa = 0;
            double bb = 0;
            for (int j = 0; j < a.length; j++) {
                if (!Double.isFinite(a[j]) || !Double.isFinite(b[j]))
                    throw new IllegalArgumentException("layer " + l + " neuron " + j + ": usage is not finite");
                dot += a[j] * b[j];
                aa += a[j] * a[j];
                bb += b[j] * b[j];
            }
            if (aa == 0 || bb == 0) {
                out[l] = Double.NaN;
                continue;
            }
            // Rounding can push identical vectors a hair past 1.
            out[l] = Math.max(-1, Math.min(1, dot / (Math.sqrt(aa) * Math.sqrt(bb))));
        }
        return out;
    }
}
