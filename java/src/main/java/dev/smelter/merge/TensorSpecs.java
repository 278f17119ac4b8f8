package dev.smelter.merge;

import dev.smelter.MergeSpec;
import dev.smelter.config.MergeConfig;
import dev.smelter.config.ParameterValue;
import dev.smelter.methods.ComposedMethods;
import dev.smelter.methods.MergeMethods;
import dev.smelter.methods.MergeMethods.Method;
import dev.smelter.methods.MergeMethods.TensorMerge;
import dev.smelter.methods.SceMerge;
import java.util.List;
import java.util.Map;
import java.util.function.Function;

/** A config's parameters resolved for one tensor (its name and layer) into how that tensor is merged. */
public final class TensorSpecs {
    private TensorSpecs() {}

    /** How the tensor {@code tensorName} (at {@code layer}, -1 for none) is merged. */
    public static TensorMerge tensorMerge(MergeConfig config, String tensorName, int layer, int layerCount) {
        Method m = config.method();
        if (!m.composed()) return new TensorMerge(spec(config, tensorName, layer, layerCount), null, null);
        Map<String, ParameterValue> g = config.parameters();
        java.util.function.ToDoubleFunction<String> global = key -> g.containsKey(key)
                ? g.get(key).resolve(tensorName, layer, layerCount) : numeric(m.defaultOf(key));
        boolean hasBase = config.baseModel() != null;
        Function<double[], MergeSpec> linear = w -> MergeSpec.linear(toFloats(w)).toBuilder().normalize(false)
                .tensorName(tensorName).build();
        // Methods on task vectors merge as base + sum c_i (x_i - base): a large c_i is never cancelled by the base's.
        Function<double[], MergeSpec> taskVectors = c -> MergeSpec.taskArithmetic(toFloats(c)).toBuilder()
                .normalize(false).tensorName(tensorName).build();
        return switch (m) {
            case SLERP -> {
                double t = global.applyAsDouble("t");
                yield new TensorMerge(null, TensorMerge.StatsOf.POINTS,
                        s -> linear.apply(ComposedMethods.slerp(t, s)));
            }
            case MODEL_STOCK -> {  // filter_wise: true is refused by MergeConfig
                yield new TensorMerge(null, TensorMerge.StatsOf.TASK_VECTORS,
                        s -> taskVectors.apply(ComposedMethods.modelStock(s, tensorName)));
            }
            case KARCHER -> {
                double maxIter = global.applyAsDouble("max_iter");
                if (maxIter < 0 || maxIter != Math.rint(maxIter))
                    throw new IllegalArgumentException("karcher max_iter must be a whole number >= 0, got " + maxIter
                            + " for tensor " + tensorName);
                double tol = global.applyAsDouble("tol");
                yield new TensorMerge(null, TensorMerge.StatsOf.POINTS,
                        s -> linear.apply(ComposedMethods.karcher(s, (int) maxIter, tol)));
            }
            case FISHER -> {
                // Coefficients before the normalization by each Fisher's norm, which needs the whole model:
                // CheckpointMerger applies it and passes the Fisher tensors as element weights.
                float[] w = new float[config.models().size()], floors = new float[w.length];
                double floor = global.applyAsDouble("fisher_floor");
                boolean favorTarget = global.applyAsDouble("favor_target_model") != 0;
                for (int i = 0; i < w.length; i++) {
                    w[i] = (float) config.models().get(i).parameters().get("weight").resolve(tensorName, layer, layerCount);
                    floors[i] = !favorTarget || i == 0 ? (float) floor : 0f;
                }
                yield new TensorMerge(MergeSpec.fisher(w, floors).toBuilder().tensorName(tensorName).build(), null, null);
            }
            case SCE, SCE_FUSECHAT -> {
                double topk = global.applyAsDouble("select_topk");
                SceMerge.Variant variant = m == Method.SCE ? SceMerge.Variant.MERGEKIT : SceMerge.Variant.FUSECHAT;
                yield new TensorMerge(null, null, null, new SceMerge.Settings(topk, variant, tensorName));
            }
            case MULTISLERP -> {
                double[] w = new double[config.models().size()];
                for (int i = 0; i < w.length; i++)
                    w[i] = config.models().get(i).parameters().get("weight").resolve(tensorName, layer, layerCount);
                boolean normalize = global.applyAsDouble("normalize_weights") != 0;
                double eps = global.applyAsDouble("eps");
                yield new TensorMerge(null, hasBase ? TensorMerge.StatsOf.TASK_VECTORS : TensorMerge.StatsOf.POINTS,
                        s -> (hasBase ? taskVectors : linear).apply(ComposedMethods.multislerp(s, w, normalize, eps, tensorName)));
            }
            default -> throw new AssertionError(m);
        };
    }

    private static double numeric(String dflt) {
        return switch (dflt) {
            case "true" -> 1;
            case "false" -> 0;
            default -> Double.parseDouble(dflt);
        };
    }

    private static float[] toFloats(double[] v) {
        float[] f = new float[v.length];
        for (int i = 0; i < v.length; i++) f[i] = (float) v[i];
        return f;
    }

    /** The spec for one tensor of a direct (generalized task arithmetic) method: parameters resolved for its name and layer. */
    public static MergeSpec spec(MergeConfig config, String tensorName, int layer, int layerCount) {
        Method m = config.method();
        if (m.composed()) throw new IllegalArgumentException(m.mergekitName() + " is a composed method: use tensorMerge");
        List<MergeConfig.ModelEntry> models = config.models();
        if (m == Method.PASSTHROUGH) {  // mergekit multiplies the one tensor by its scale (none: 1)
            ParameterValue scale = models.get(0).parameters().get("scale");
            float s = scale == null ? 1f : (float) scale.resolve(tensorName, layer, layerCount);
            return MergeSpec.linear(new float[] {s}).toBuilder().normalize(false).tensorName(tensorName).build();
        }
        float[] weights = new float[models.size()];
        // Densities and gammas stay in double: the kernels count floor(density * n) as mergekit's int(density * n).
        double[] densities = new double[models.size()], gammas = new double[models.size()];
        float[] epsilons = new float[models.size()];
        for (int i = 0; i < weights.length; i++) {
            Map<String, ParameterValue> p = models.get(i).parameters();
            weights[i] = (float) p.get("weight").resolve(tensorName, layer, layerCount);
            ParameterValue d = p.get("density");
            densities[i] = d == null ? 1.0 : d.resolve(tensorName, layer, layerCount);
            ParameterValue g = p.get("gamma"), e = p.get("epsilon");
            gammas[i] = g == null ? 0.01 : g.resolve(tensorName, layer, layerCount);
            epsilons[i] = e == null ? 0.15f : (float) e.resolve(tensorName, layer, layerCount);
        }
        Map<String, ParameterValue> g = config.parameters();
        boolean normalize = flag(g, "normalize", m.defaultNormalize(), tensorName, layer, layerCount);
        boolean rescale = flag(g, "rescale", m.defaultRescale(), tensorName, layer, layerCount);
        float lambda = g.containsKey("lambda") ? (float) g.get("lambda").resolve(tensorName, layer, layerCount) : 1.0f;
        MergeSpec base = m == Method.LINEAR ? MergeSpec.linear(weights) : MergeSpec.taskArithmetic(weights);
        return base.toBuilder()
                .densities(m.sparsify() == MergeSpec.Sparsify.NONE ? null : densities)
                .sparsify(m.sparsify())
                .consensus(m.consensus())
                // mergekit's rescale=true is the L1 rescale (since 2025; the DARE paper's 1/density is
                // MergeSpec.Rescale.INVERSE_DENSITY in the Java API).
                .rescale(rescale && m.sparsify() != MergeSpec.Sparsify.NONE ? MergeSpec.Rescale.L1
                        : MergeSpec.Rescale.NONE)
                .normalize(normalize)
                .lambda(lambda)
                .gammas(m.sparsify() == MergeSpec.Sparsify.MAGNITUDE_OUTLIERS ? gammas : null)
                .epsilons(m.sparsify() == MergeSpec.Sparsify.RANKED ? epsilons : null)
                .seed(config.seed())
                .tensorName(tensorName)
                .build();
    }

    /**
     * The checks a tensor's resolved values need beyond each parameter's range (done when the config is read):
     * DELLA's keep probabilities {@code density +- epsilon} must lie in (0, 1] where density is below 1 (mergekit
     * refuses them too). A failure is a configuration error (IllegalArgumentException, exit 2), found by the planner
     * before anything is read.
     */
    public static void checkTensor(MergeConfig config, String tensorName, int layer, int layerCount) {
        if (config.method().composed() || config.method().sparsify() != MergeSpec.Sparsify.RANKED) return;
        MergeSpec s = spec(config, tensorName, layer, layerCount);
        for (int i = 0; i < s.modelCount(); i++) {
            double d = s.densities()[i], e = s.epsilons()[i];
            if (d < 1 && !(d - e > 0 && d + e <= 1))
                throw new IllegalArgumentException("models[" + i + "] at tensor " + tensorName + ": density " + d
                        + " and epsilon " + e + " give keep probabilities from " + (d - e) + " to " + (d + e)
                        + "; density +- epsilon must lie in (0, 1] (lower epsilon)");
        }
    }

    /** merge_method fisher: whether this tensor's coefficients are divided by each model's Fisher norm. */
    public static boolean normalizesFishers(MergeConfig config, String tensorName, int layer, int layerCount) {
        return flag(config.parameters(), "normalize_fishers", "true".equals(Method.FISHER.defaultOf("normalize_fishers")),
                tensorName, layer, layerCount);
    }

    private static boolean flag(Map<String, ParameterValue> g, String key, boolean dflt, String t, int l, int n) {
        return g.containsKey(key) ? g.get(key).resolve(t, l, n) != 0 : dflt;
    }

}
