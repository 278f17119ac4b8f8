package dev.smelter;

import java.nio.charset.StandardCharsets;
import java.util.Arrays;
import java.util.Objects;

/**
 * What to merge and how: the method and its parameters, independent of the tensors. Immutable;
 * build with the factory methods, adjust with {@link #toBuilder()}.
 *
 * <p>The methods follow mergekit's "generalized task arithmetic": {@code delta_i = x_i - base},
 * sparsified (TIES magnitude trim, breadcrumbs, DARE random drop, DELLA ranked drop), weighted,
 * optionally sign-elected, summed (optionally normalized), and {@code out = base + lambda * merged}.
 * See smelter.h for the exact definitions. Tensor-valued inputs (SCE's position selection, Fisher
 * weights) are arguments of {@link Context#merge(MergeSpec, Tensor, java.util.List, Context.Selection,
 * java.util.List, Tensor)}.
 */
public record MergeSpec(
        Method method,
        float[] weights,
        double[] densities,
        Sparsify sparsify,
        Consensus consensus,
        ZeroSign zeroSign,
        Rescale rescale,
        boolean normalize,
        float lambda,
        DType keyDType,
        int[] thresholds,
        long seed,
        long tensorKey,
        long elementOffset,
        double[] gammas,
        int[] upperThresholds,
        float[] epsilons,
        long rowLength,
        float minDivisor,
        float[] elementWeightFloors) {

    /** VARIANCE: the population variance of the task vectors per position (SCE's selection score). */
    public enum Method { LINEAR, TASK_ARITHMETIC, VARIANCE }

    /** MAGNITUDE_OUTLIERS: breadcrumbs (drop the largest gamma and the smallest); RANKED: DELLA. */
    public enum Sparsify { NONE, MAGNITUDE, RANDOM, MAGNITUDE_OUTLIERS, RANKED }

    /** SUM_UNWEIGHTED: elect by the sum of the kept, unweighted deltas (SCE). */
    public enum Consensus { NONE, SUM, COUNT, SUM_UNWEIGHTED }

    public enum ZeroSign { POSITIVE, NEGATIVE, NONE }

    public enum Rescale { NONE, INVERSE_DENSITY, L1 }

    public MergeSpec {
        Objects.requireNonNull(method, "method");
        Objects.requireNonNull(weights, "weights");
        Objects.requireNonNull(sparsify, "sparsify");
        Objects.requireNonNull(consensus, "consensus");
        Objects.requireNonNull(zeroSign, "zeroSign");
        Objects.requireNonNull(rescale, "rescale");
        weights = weights.clone();
        densities = densities == null ? null : densities.clone();
        thresholds = thresholds == null ? null : thresholds.clone();
        gammas = gammas == null ? null : gammas.clone();
        upperThresholds = upperThresholds == null ? null : upperThresholds.clone();
        epsilons = epsilons == null ? null : epsilons.clone();
        elementWeightFloors = elementWeightFloors == null ? null : elementWeightFloors.clone();
        requireLength(densities, weights.length, "densities");
        requireLength(thresholds, weights.length, "thresholds");
        requireLength(gammas, weights.length, "gammas");
        requireLength(upperThresholds, weights.length, "upperThresholds");
        requireLength(epsilons, weights.length, "epsilons");
        requireLength(elementWeightFloors, weights.length, "elementWeightFloors");
        if (rowLength < 0) throw new IllegalArgumentException("rowLength must be >= 0, got " + rowLength);
    }

    private static void requireLength(Object array, int models, String what) {
        if (array != null && java.lang.reflect.Array.getLength(array) != models)
            throw new IllegalArgumentException(java.lang.reflect.Array.getLength(array) + " " + what + " for " + models
                    + " models");
    }

    /** A float array widened exactly to double (null stays null). */
    static double[] widen(float[] v) {
        if (v == null) return null;
        double[] d = new double[v.length];
        for (int i = 0; i < v.length; i++) d[i] = v[i];
        return d;
    }

    private static MergeSpec of(Method m, float[] w, double[] d, Sparsify s, Consensus c, Rescale r, boolean normalize) {
        return new MergeSpec(m, w, d, s, c, ZeroSign.POSITIVE, r, normalize, 1.0f, null, null, 0, 0, 0, null, null,
                null, 0, 0.0f, null);
    }

    /** Weighted average of the models, {@code sum w_i x_i / sum w_i} (mergekit {@code linear}). */
    public static MergeSpec linear(float... weights) {
        return of(Method.LINEAR, weights, null, Sparsify.NONE, Consensus.NONE, Rescale.NONE, true);
    }

    /** {@code base + lambda * sum w_i delta_i} (mergekit {@code task_arithmetic}). */
    public static MergeSpec taskArithmetic(float... weights) {
        return of(Method.TASK_ARITHMETIC, weights, null, Sparsify.NONE, Consensus.NONE, Rescale.NONE, false);
    }

    /**
     * TIES: magnitude trim to {@code densities}, sign election by mass, disjoint mean (mergekit {@code ties}). Each
     * model keeps {@code floor(density * n)} of a tensor's n deltas, computed in double: pass the densities as
     * doubles for mergekit's counts of decimal densities (the float 0.7f keeps 699 of 1000, the double 0.7 700).
     */
    public static MergeSpec ties(float[] weights, double[] densities) {
        return of(Method.TASK_ARITHMETIC, weights, densities, Sparsify.MAGNITUDE, Consensus.SUM, Rescale.NONE, true);
    }

    /** {@link #ties(float[], double[])} with densities given as floats (widened exactly). */
    public static MergeSpec ties(float[] weights, float[] densities) {
        return ties(weights, widen(densities));
    }

    /**
     * DARE without sign election, as the DARE paper has it: drop, rescale by 1/density, sum. (mergekit's
     * {@code dare_linear} rescales to the L1 norm by default: {@code .rescale(Rescale.L1)}, as the CLI sets it.)
     */
    public static MergeSpec dareLinear(float[] weights, float[] densities, long seed) {
        return dareLinear(weights, widen(densities), seed);
    }

    /** {@link #dareLinear(float[], float[], long)} with densities in double. */
    public static MergeSpec dareLinear(float[] weights, double[] densities, long seed) {
        return of(Method.TASK_ARITHMETIC, weights, densities, Sparsify.RANDOM, Consensus.NONE, Rescale.INVERSE_DENSITY, false)
                .toBuilder().seed(seed).build();
    }

    /**
     * DARE with TIES sign election as the papers combine them: 1/density rescale, then the mean of the agreeing
     * deltas. (mergekit's {@code dare_ties} defaults differ: L1 rescale and no normalize, a sum of the agreeing
     * deltas; the CLI follows mergekit: {@code .rescale(Rescale.L1).normalize(false)}.)
     */
    public static MergeSpec dareTies(float[] weights, float[] densities, long seed) {
        return dareTies(weights, widen(densities), seed);
    }

    /** {@link #dareTies(float[], float[], long)} with densities in double. */
    public static MergeSpec dareTies(float[] weights, double[] densities, long seed) {
        return of(Method.TASK_ARITHMETIC, weights, densities, Sparsify.RANDOM, Consensus.SUM, Rescale.INVERSE_DENSITY, true)
                .toBuilder().seed(seed).build();
    }

    /**
     * Breadcrumbs (mergekit {@code breadcrumbs}, or {@code breadcrumbs_ties} with {@code ties}): per tensor, drop
     * the largest {@code gammas} and the smallest magnitudes, keeping {@code densities}; weighted sum.
     */
    public static MergeSpec breadcrumbs(float[] weights, float[] densities, float[] gammas, boolean ties) {
        return breadcrumbs(weights, widen(densities), widen(gammas), ties);
    }

    /** {@link #breadcrumbs(float[], float[], float[], boolean)} with densities and gammas in double (mergekit's counts). */
    public static MergeSpec breadcrumbs(float[] weights, double[] densities, double[] gammas, boolean ties) {
        return of(Method.TASK_ARITHMETIC, weights, densities, Sparsify.MAGNITUDE_OUTLIERS,
                ties ? Consensus.SUM : Consensus.NONE, Rescale.NONE, ties).toBuilder().gammas(gammas).build();
    }

    /**
     * DELLA (mergekit {@code della}, or {@code della_linear} without {@code ties}): per row of {@code rowLength}
     * elements, keep probabilities from {@code density - epsilon} (smallest magnitude) to {@code density +
     * epsilon} (largest), kept deltas rescaled by 1/p (the paper's rule).
     */
    public static MergeSpec della(float[] weights, float[] densities, float[] epsilons, long rowLength, long seed,
            boolean ties) {
        return della(weights, widen(densities), epsilons, rowLength, seed, ties);
    }

    /** {@link #della(float[], float[], float[], long, long, boolean)} with densities in double. */
    public static MergeSpec della(float[] weights, double[] densities, float[] epsilons, long rowLength, long seed,
            boolean ties) {
        return of(Method.TASK_ARITHMETIC, weights, densities, Sparsify.RANKED, ties ? Consensus.SUM : Consensus.NONE,
                Rescale.INVERSE_DENSITY, ties).toBuilder().epsilons(epsilons).rowLength(rowLength).seed(seed).build();
    }

    /**
     * Fisher-weighted averaging (Matena and Raffel 2022): {@code sum_i c_i F_i x_i / sum_i c_i F_i}, with the
     * diagonal Fishers {@code F_i} passed as element weights and raised to at least {@code floors[i]}.
     */
    public static MergeSpec fisher(float[] coefficients, float[] floors) {
        return linear(coefficients).toBuilder().elementWeightFloors(floors).build();
    }

    /** The per-position variance of the task vectors (SCE's selection score); write it to an f32 tensor. */
    public static MergeSpec variance(int models) {
        float[] ones = new float[models];
        Arrays.fill(ones, 1.0f);
        return of(Method.VARIANCE, ones, null, Sparsify.NONE, Consensus.NONE, Rescale.NONE, false);
    }

    public int modelCount() {
        return weights.length;
    }

    public Builder toBuilder() {
        return new Builder(this);
    }

    /** Changes some parameters of a spec: {@code MergeSpec.ties(w, d).toBuilder().lambda(0.5f).build()}. */
    public static final class Builder {
        private Method method;
        private float[] weights;
        private double[] densities, gammas;
        private Sparsify sparsify;
        private Consensus consensus;
        private ZeroSign zeroSign;
        private Rescale rescale;
        private boolean normalize;
        private float lambda;
        private DType keyDType;
        private int[] thresholds, upperThresholds;
        private long seed, tensorKey, elementOffset, rowLength;
        private float[] epsilons, elementWeightFloors;
        private float minDivisor;

        private Builder(MergeSpec s) {
            method = s.method;
            weights = s.weights;
            densities = s.densities;
            sparsify = s.sparsify;
            consensus = s.consensus;
            zeroSign = s.zeroSign;
            rescale = s.rescale;
            normalize = s.normalize;
            lambda = s.lambda;
            keyDType = s.keyDType;
            thresholds = s.thresholds;
            seed = s.seed;
            tensorKey = s.tensorKey;
            elementOffset = s.elementOffset;
            gammas = s.gammas;
            upperThresholds = s.upperThresholds;
            epsilons = s.epsilons;
            rowLength = s.rowLength;
            minDivisor = s.minDivisor;
            elementWeightFloors = s.elementWeightFloors;
        }

        public Builder weights(float... v) { weights = v; return this; }
        /** Per-model densities; counts are {@code floor(density * n)} in double. */
        public Builder densities(double... v) { densities = v; return this; }
        public Builder densities(float... v) { densities = widen(v); return this; }
        public Builder sparsify(Sparsify v) { sparsify = v; return this; }
        public Builder consensus(Consensus v) { consensus = v; return this; }
        public Builder zeroSign(ZeroSign v) { zeroSign = v; return this; }
        public Builder rescale(Rescale v) { rescale = v; return this; }
        public Builder normalize(boolean v) { normalize = v; return this; }
        public Builder lambda(float v) { lambda = v; return this; }
        /** Ranks |delta| at this precision (null: the models' dtype). */
        public Builder keyDType(DType v) { keyDType = v; return this; }
        /** Per-model trim thresholds from {@link TopK} (model-wide trimming); null: per tensor. */
        public Builder thresholds(int[] v) { thresholds = v; return this; }
        public Builder seed(long v) { seed = v; return this; }
        /** Keys the random masks to this tensor name (see {@link MergeSpec#tensorKey(String)}). */
        public Builder tensorName(String name) { tensorKey = MergeSpec.tensorKey(name); return this; }
        public Builder tensorKey(long v) { tensorKey = v; return this; }
        /** Index of the views' first element in the whole tensor, for chunked calls. */
        public Builder elementOffset(long v) { elementOffset = v; return this; }
        /** Breadcrumbs: fraction of the largest magnitudes dropped per model (null: 0.01). */
        public Builder gammas(double... v) { gammas = v; return this; }
        public Builder gammas(float... v) { gammas = widen(v); return this; }
        /** Breadcrumbs with model-wide ranking: per-model upper keys from {@link TopK} (with {@link #thresholds}). */
        public Builder upperThresholds(int[] v) { upperThresholds = v; return this; }
        /** DELLA: half-width of the keep probabilities per model (null: 0.15). */
        public Builder epsilons(float... v) { epsilons = v; return this; }
        /** DELLA: elements ranked together (a matrix's last dimension); 0: the whole tensor. */
        public Builder rowLength(long v) { rowLength = v; return this; }
        /** Consensus normalization: the divisor is at least this (SCE: 1e-6); 0: mergekit's TIES rule. */
        public Builder minDivisor(float v) { minDivisor = v; return this; }
        /** Fisher: per-model floors of the element weights (null: none). */
        public Builder elementWeightFloors(float... v) { elementWeightFloors = v; return this; }

        public MergeSpec build() {
            return new MergeSpec(method, weights, densities, sparsify, consensus, zeroSign, rescale, normalize, lambda,
                    keyDType, thresholds, seed, tensorKey, elementOffset, gammas, upperThresholds, epsilons, rowLength,
                    minDivisor, elementWeightFloors);
        }
    }

    /** FNV-1a 64 of the UTF-8 name: the same value as {@code smelter_tensor_key}. */
    public static long tensorKey(String name) {
        long h = 0xCBF29CE484222325L;
        for (byte b : name.getBytes(StandardCharsets.UTF_8)) {
            h ^= b & 0xFF;
            h *= 0x100000001B3L;
        }
        return h;
    }

    @Override
    public boolean equals(Object o) {
        return o instanceof MergeSpec m && method == m.method && Arrays.equals(weights, m.weights)
                && Arrays.equals(densities, m.densities) && sparsify == m.sparsify && consensus == m.consensus
                && zeroSign == m.zeroSign && rescale == m.rescale && normalize == m.normalize
                && Float.compare(lambda, m.lambda) == 0 && keyDType == m.keyDType
                && Arrays.equals(thresholds, m.thresholds) && seed == m.seed && tensorKey == m.tensorKey
                && elementOffset == m.elementOffset && Arrays.equals(gammas, m.gammas)
                && Arrays.equals(upperThresholds, m.upperThresholds) && Arrays.equals(epsilons, m.epsilons)
                && rowLength == m.rowLength && Float.compare(minDivisor, m.minDivisor) == 0
                && Arrays.equals(elementWeightFloors, m.elementWeightFloors);
    }

    @Override
    public int hashCode() {
        return Objects.hash(method, Arrays.hashCode(weights), Arrays.hashCode(densities), sparsify, consensus,
                zeroSign, rescale, normalize, lambda, keyDType, Arrays.hashCode(thresholds), seed, tensorKey,
                elementOffset, Arrays.hashCode(gammas), Arrays.hashCode(upperThresholds), Arrays.hashCode(epsilons),
                rowLength, minDivisor, Arrays.hashCode(elementWeightFloors));
    }

    @Override
    public String toString() {
        return "MergeSpec[" + method + ", weights=" + Arrays.toString(weights) + ", densities="
                + Arrays.toString(densities) + ", sparsify=" + sparsify + ", consensus=" + consensus + ", zeroSign="
                + zeroSign + ", rescale=" + rescale + ", normalize=" + normalize + ", lambda=" + lambda + ", seed="
                + seed + (gammas != null ? ", gammas=" + Arrays.toString(gammas) : "")
                + (epsilons != null ? ", epsilons=" + Arrays.toString(epsilons) : "")
                + (rowLength != 0 ? ", rowLength=" + rowLength : "") + (minDivisor != 0 ? ", minDivisor=" + minDivisor : "")
                + (elementWeightFloors != null ? ", elementWeightFloors=" + Arrays.toString(elementWeightFloors) : "")
                + "]";
    }
}
