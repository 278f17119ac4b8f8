package dev.smelter;

import java.util.Arrays;
import java.util.List;

/**
 * An independent float64 implementation of every merge, written from the definitions in
 * smelter.h (mergekit's generalized task arithmetic). Only the decisions that are defined on f32
 * values are reproduced exactly: the trim key (|x_i - x_0| computed in f32, rounded to the key
 * dtype) and the DARE draw (Philox); every value is computed in double.
 */
final class Float64Reference {
    private Float64Reference() {}

    /**
     * values: the exact merged values; tolerance: a bound on f32 evaluation error for each element;
     * ambiguous: the elected sign is within rounding of zero (f32 may elect either); counts: +, -, none.
     */
    record Result(double[] values, double[] tolerance, boolean[] ambiguous, long[] signCounts) {}

    static Result merge(MergeSpec spec, float[] base, float[][] models, DType inDType) {
        return merge(spec, base, models, inDType, null, null);
    }

    /**
     * With the tensor-valued inputs: {@code selected} (may be null) masks positions for every model;
     * {@code elementWeights} (LINEAR, may be null) are per-element weights, raised to the spec's floors.
     */
    static Result merge(MergeSpec spec, float[] base, float[][] models, DType inDType, boolean[] selected,
            float[][] elementWeights) {
        int n = models.length, len = models[0].length;
        double[] out = new double[len], tol = new double[len];
        boolean[] ambiguous = new boolean[len];
        long[] counts = new long[3];
        float[] w = new float[n];
        double[] d = new double[n];  // as the ABI takes them: counts and keep limits from the double
        for (int i = 0; i < n; i++) {
            w[i] = spec.weights()[i];
            d[i] = spec.densities() == null ? 1 : spec.densities()[i];
        }
        final double eps = Math.scalb(1.0, -24);
        if (spec.method() == MergeSpec.Method.LINEAR) {
            double sw = 0;
            for (float x : w) sw += x;
            for (int j = 0; j < len; j++) {
                double acc = 0, mag = 0, ew = 0, ewMag = 0;
                boolean nan = false;
                for (int i = 0; i < n; i++) {
                    double wi = w[i];
                    if (elementWeights != null) {
                        double floor = spec.elementWeightFloors() == null ? 0 : spec.elementWeightFloors()[i];
                        wi *= Math.max(elementWeights[i][j], floor);
                        ew += wi;
                        ewMag += Math.abs(wi);
                    }
                    acc += wi * models[i][j];
                    mag += Math.abs(wi * models[i][j]);
                    nan |= Float.isNaN(models[i][j]);
                }
                double div = spec.normalize() ? (elementWeights != null ? ew : sw) : 1;
                out[j] = nan ? Double.NaN : acc / div;
                tol[j] = (n + 3) * eps * mag / Math.abs(div)
                        + (elementWeights != null && spec.normalize() ? (n + 3) * eps * ewMag * Math.abs(acc) / (div * div) : 0);
                counts[2]++;  // no consensus: every position elects nothing
            }
            return new Result(out, tol, ambiguous, counts);
        }
        if (spec.method() == MergeSpec.Method.VARIANCE) {
            for (int j = 0; j < len; j++) {
                double mean = 0, sq = 0, mag = 0;
                boolean nan = Float.isNaN(base[j]);
                for (int i = 0; i < n; i++) {
                    mean += (double) (models[i][j] - base[j]) / n;  // the f32 delta, as the kernel forms it
                    nan |= Float.isNaN(models[i][j]);
                }
                for (int i = 0; i < n; i++) {
                    double c = (double) (models[i][j] - base[j]) - mean;
                    sq += c * c;
                    mag += (double) (models[i][j] - base[j]) * (models[i][j] - base[j]);
                }
                out[j] = nan ? Double.NaN : sq / n;
                tol[j] = (4 * n + 8) * eps * mag / n;
                counts[2]++;
            }
            return new Result(out, tol, ambiguous, counts);
        }

        // Keep decisions per model and element.
        boolean[][] keep = new boolean[n][len];
        double[] scale = new double[n];
        double[][] elementScale = new double[n][];  // RANKED with INVERSE_DENSITY: 1/p per element
        DType keyDType = spec.keyDType() != null ? spec.keyDType() : inDType;
        for (int i = 0; i < n; i++) {
            long[] keys = new long[len];
            for (int j = 0; j < len; j++) keys[j] = key(models[i][j] - base[j], keyDType);
            switch (spec.sparsify()) {
                case NONE -> Arrays.fill(keep[i], true);
                case MAGNITUDE -> {
                    long threshold = spec.thresholds() != null ? spec.thresholds()[i] & 0xFFFFFFFFL
                            : kthLargest(keys, (long) Math.floor(d[i] * len));
                    for (int j = 0; j < len; j++) keep[i][j] = keys[j] >= threshold;
                }
                case RANDOM -> {
                    for (int j = 0; j < len; j++)
                        keep[i][j] = Philox.keep(spec.seed(), spec.tensorKey(), spec.elementOffset() + j, i, d[i]);
                }
                case MAGNITUDE_OUTLIERS -> {
                    long k = (long) Math.floor(d[i] * len);
                    double gamma = spec.gammas() == null ? 0.01 : spec.gammas()[i];
                    long top = Math.min((long) Math.floor(gamma * len), len - k);
                    long lower, upper;
                    if (spec.thresholds() != null) {
                        lower = spec.thresholds()[i] & 0xFFFFFFFFL;
                        upper = spec.upperThresholds()[i] & 0xFFFFFFFFL;
                    } else {
                        lower = k == 0 ? 0xFFFFFFFFL : kthLargest(keys, top + k);
                        upper = k == 0 ? 0 : top == 0 ? 0xFFFFFFFFL : kthLargest(keys, top + 1);
                    }
                    for (int j = 0; j < len; j++) keep[i][j] = keys[j] >= lower && keys[j] <= upper;
                }
                case RANKED -> {
                    int rowLength = spec.rowLength() == 0 ? len : (int) spec.rowLength();
                    double e = spec.epsilons() == null ? 0.15f : spec.epsilons()[i];
                    long lo = d[i] >= 1 ? 1L << 24 : (long) Math.ceil((d[i] - e) * 16777216.0);
                    long span = d[i] >= 1 ? 0 : (long) Math.ceil((d[i] + e) * 16777216.0) - lo;
                    elementScale[i] = new double[len];
                    for (int r0 = 0; r0 < len; r0 += rowLength) {
                        final int start = r0;
                        Integer[] order = new Integer[rowLength];
                        for (int t = 0; t < rowLength; t++) order[t] = t;
                        Arrays.sort(order, (a, b) -> keys[start + a] != keys[start + b]
                                ? Long.compare(keys[start + a], keys[start + b]) : Integer.compare(a, b));
                        for (int rank = 0; rank < rowLength; rank++) {
                            int j = start + order[rank];
                            long limit = lo + (rowLength == 1 ? span / 2 : span * rank / (rowLength - 1));
                            keep[i][j] = Philox.draw24(spec.seed(), spec.tensorKey(), spec.elementOffset() + j, i, 1) < limit;
                            elementScale[i][j] = 16777216.0 / limit;
                        }
                    }
                }
            }
            if (selected != null)
                for (int j = 0; j < len; j++) keep[i][j] &= selected[j];
            scale[i] = switch (spec.rescale()) {
                case NONE -> 1.0;
                case INVERSE_DENSITY -> spec.sparsify() == MergeSpec.Sparsify.RANKED ? 1.0 : 1.0 / d[i];
                case L1 -> {
                    double all = 0, kept = 0;
                    for (int j = 0; j < len; j++) {
                        double delta = Math.abs((double) models[i][j] - base[j]);
                        all += delta;
                        if (keep[i][j]) kept += delta;
                        else if (selected != null && !selected[j]) all -= delta;  // unselected count as zero
                    }
                    yield all >= 1e-7 && kept >= 1e-7 ? all / kept : 1.0;  // mergekit's eps
                }
            };
        }

        double sw = 0;
        for (float x : w) sw += x;
        for (int j = 0; j < len; j++) {
            double[] wd = new double[n], dk = new double[n];
            double mag = Math.abs(base[j]);
            boolean nan = Float.isNaN(base[j]);
            for (int i = 0; i < n; i++) {
                nan |= Float.isNaN(models[i][j]);
                double delta = (double) models[i][j] - base[j];
                double s = spec.rescale() == MergeSpec.Rescale.INVERSE_DENSITY && elementScale[i] != null
                        ? elementScale[i][j] : scale[i];
                dk[i] = keep[i][j] ? delta * s : 0.0;
                wd[i] = dk[i] * w[i];
            }
            double mixed = 0, div;
            int elected = 0;
            if (spec.consensus() == MergeSpec.Consensus.NONE) {
                for (double v : wd) mixed += v;
                div = Math.abs(sw) < 1e-8 ? 1 : sw;
                counts[2]++;
            } else {
                double vote = 0, voteMag = 0;
                for (int i = 0; i < n; i++) {
                    double v = wd[i];
                    double term = switch (spec.consensus()) {
                        case SUM -> v;
                        case SUM_UNWEIGHTED -> dk[i];
                        default -> Math.signum(v);
                    };
                    vote += term;
                    voteMag += Math.abs(term);
                }
                // f32 may round a vote near zero (even an exact zero in double) to either sign; a
                // count vote is an exact integer.
                ambiguous[j] = spec.consensus() != MergeSpec.Consensus.COUNT && voteMag > 0
                        && Math.abs(vote) <= (n + 2) * 4 * eps * voteMag;
                elected = (int) Math.signum(vote);
                if (elected == 0)
                    elected = switch (spec.zeroSign()) {
                        case POSITIVE -> 1;
                        case NEGATIVE -> -1;
                        case NONE -> 0;
                    };
                div = 0;
                for (int i = 0; i < n; i++) {
                    if (elected != 0 && Math.signum(wd[i]) == elected) {
                        mixed += wd[i];
                        div += w[i];
                    }
                }
                if (spec.minDivisor() > 0 && div < spec.minDivisor()) div = spec.minDivisor();
                if (div == 0) div = 1;
                counts[elected > 0 ? 0 : elected < 0 ? 1 : 2]++;
            }
            if (!spec.normalize()) div = 1;
            double sumAbs = 0;
            for (double v : wd) sumAbs += Math.abs(v);
            out[j] = nan ? Double.NaN : base[j] + spec.lambda() * (mixed / div);
            mag += Math.abs(spec.lambda()) * sumAbs / Math.abs(div);
            tol[j] = (n + 6) * eps * mag;
        }
        return new Result(out, tol, ambiguous, counts);
    }

    /** Magnitude key of a delta computed in f32, rounded to the key dtype (NaN above Inf above finite). */
    static long key(float delta, DType keyDType) {
        return switch (keyDType) {
            case F32 -> Float.floatToRawIntBits(delta) & 0x7FFFFFFFL;
            case F16 -> Float.isNaN(delta) ? 0x7E00 : Float.floatToFloat16(delta) & 0x7FFF;
            case BF16 -> TestData.bf16Bits(delta) & 0x7FFF;
        };
    }

    /** The k-th largest key (k = 0: above every key, so nothing is kept). */
    static long kthLargest(long[] keys, long k) {
        if (k == 0) return 0xFFFFFFFFL;
        long[] sorted = keys.clone();
        Arrays.sort(sorted);
        return sorted[sorted.length - (int) k];
    }

    /** Half an ulp of the output dtype at v: the most rounding the final conversion can add. */
    /**
     * The first element of {@code out} farther from {@code expect} than its output rounding plus {@code perMagnitude}
     * times the sum of the inputs' magnitudes there (the evaluation's own error), skipping {@code ambiguous} ones
     * (may be null); null where every element is within. For the comparisons of whole merged tensors.
     */
    static String firstOutside(double[] expect, boolean[] ambiguous, List<float[]> inputs, Tensor out,
            double perMagnitude) {
        for (int j = 0; j < expect.length; j++) {
            if (ambiguous != null && ambiguous[j]) continue;
            double mag = 0;
            for (float[] x : inputs) mag += Math.abs(x[j]);
            double bound = perMagnitude * mag + outputRounding(out.dtype(), expect[j]) * 1.0001 + Double.MIN_VALUE;
            double got = out.getFloat(j);
            if (!(Math.abs(got - expect[j]) <= bound))
                return "element " + j + ": got " + got + ", expected " + expect[j] + " (error "
                        + Math.abs(got - expect[j]) + " > bound " + bound + ")";
        }
        return null;
    }

    static double outputRounding(DType out, double v) {
        double a = Math.abs(v);
        return switch (out) {
            case F32 -> Math.ulp((float) a) / 2;
            case F16 -> Math.max(Math.scalb(1.0, -25), a * Math.scalb(1.0, -11));
            case BF16 -> Math.max(Math.scalb(1.0, -134), a * Math.scalb(1.0, -8));
        };
    }

    /** Compares an output with the reference; returns the first violation, or null. Skips ambiguous positions. */
    static String compare(Result ref, Tensor out) {
        for (int j = 0; j < ref.values().length; j++) {
            if (ref.ambiguous()[j]) continue;
            double expect = ref.values()[j];
            double got = out.getFloat(j);
            if (Double.isNaN(expect) || Double.isNaN(got)) {
                if (Double.isNaN(expect) != Double.isNaN(got)) return "element " + j + ": got " + got + ", expected " + expect;
                continue;
            }
            double bound = ref.tolerance()[j] + outputRounding(out.dtype(), expect) * 1.0001 + Double.MIN_VALUE;
            if (Math.abs(got - expect) > bound)
                return "element " + j + ": got " + got + ", expected " + expect + " (error " + Math.abs(got - expect)
                        + " > bound " + bound + ")";
        }
        return null;
    }
}
