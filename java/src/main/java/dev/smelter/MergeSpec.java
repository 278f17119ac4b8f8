package dev.smelter;

import java.nio.charset.StandardCharsets;
import java.util.Arrays;
import java.util.Objects;

/**
 * What to merge and how: the method and its parameters, independent of the tensors. Immutable;
 * build with the factory methods, adjust with {@link #toBuilder()}.
 *
 * <p>The methods follow mergekit's "generalized task arithmetic": {@code delta_i = x_i - base},
 * sparsified (TIES magnitude trim or DARE random drop), weighted, optionally sign-elected, summed
 * (optionally normalized), and {@code out = base + lambda * merged}. See smelter.h for the exact
 * definitions.
 */
public record MergeSpec(
        Method method,
        float[] weights,
        float[] densities,
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
        long elementOffset) {

    public enum Method { LINEAR, TASK_ARITHMETIC }

    public enum Sparsify { NONE, MAGNITUDE, RANDOM }

    public enum Consensus { NONE, SUM, COUNT }

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
        if (densities != null && densities.length != weights.length)
            throw new IllegalArgumentException(densities.length + " densities for " + weights.length + " models");
        if (thresholds != null && thresholds.length != weights.length)
            throw new IllegalArgumentException(thresholds.length + " thresholds for " + weights.length + " models");
    }

    private static MergeSpec of(Method m, float[] w, float[] d, Sparsify s, Consensus c, Rescale r, boolean normalize) {
        return new MergeSpec(m, w, d, s, c, ZeroSign.POSITIVE, r, normalize, 1.0f, null, null, 0, 0, 0);
    }

    /** Weighted average of the models, {@code sum w_i x_i / sum w_i} (mergekit {@code linear}). */
    public static MergeSpec linear(float... weights) {
        return of(Method.LINEAR, weights, null, Sparsify.NONE, Consensus.NONE, Rescale.NONE, true);
    }

    /** {@code base + lambda * sum w_i delta_i} (mergekit {@code task_arithmetic}). */
    public static MergeSpec taskArithmetic(float... weights) {
        return of(Method.TASK_ARITHMETIC, weights, null, Sparsify.NONE, Consensus.NONE, Rescale.NONE, false);
    }

    /** TIES: magnitude trim to {@code densities}, sign election by mass, disjoint mean (mergekit {@code ties}). */
    public static MergeSpec ties(float[] weights, float[] densities) {
        return of(Method.TASK_ARITHMETIC, weights, densities, Sparsify.MAGNITUDE, Consensus.SUM, Rescale.NONE, true);
    }

    /** DARE without sign election (mergekit {@code dare_linear}): drop, rescale by 1/density, sum. */
    public static MergeSpec dareLinear(float[] weights, float[] densities, long seed) {
        return of(Method.TASK_ARITHMETIC, weights, densities, Sparsify.RANDOM, Consensus.NONE, Rescale.INVERSE_DENSITY, false)
                .toBuilder().seed(seed).build();
    }

    /** DARE with TIES sign election (mergekit {@code dare_ties}). */
    public static MergeSpec dareTies(float[] weights, float[] densities, long seed) {
        return of(Method.TASK_ARITHMETIC, weights, densities, Sparsify.RANDOM, Consensus.SUM, Rescale.INVERSE_DENSITY, true)
                .toBuilder().seed(seed).build();
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
        private float[] weights, densities;
        private Sparsify sparsify;
        private Consensus consensus;
        private ZeroSign zeroSign;
        private Rescale rescale;
        private boolean normalize;
        private float lambda;
        private DType keyDType;
        private int[] thresholds;
        private long seed, tensorKey, elementOffset;

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
        }

        public Builder weights(float... v) { weights = v; return this; }
        public Builder densities(float... v) { densities = v; return this; }
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

        public MergeSpec build() {
            return new MergeSpec(method, weights, densities, sparsify, consensus, zeroSign, rescale, normalize, lambda,
                    keyDType, thresholds, seed, tensorKey, elementOffset);
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
                && elementOffset == m.elementOffset;
    }

    @Override
    public int hashCode() {
        return Objects.hash(method, Arrays.hashCode(weights), Arrays.hashCode(densities), sparsify, consensus,
                zeroSign, rescale, normalize, lambda, keyDType, Arrays.hashCode(thresholds), seed, tensorKey,
                elementOffset);
    }

    @Override
    public String toString() {
        return "MergeSpec[" + method + ", weights=" + Arrays.toString(weights) + ", densities="
                + Arrays.toString(densities) + ", sparsify=" + sparsify + ", consensus=" + consensus + ", zeroSign="
                + zeroSign + ", rescale=" + rescale + ", normalize=" + normalize + ", lambda=" + lambda + ", seed="
                + seed + "]";
    }
}
