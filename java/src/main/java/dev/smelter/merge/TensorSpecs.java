package dev.smelter.merge;

import dev.smelter.MergeSpec;
import dev.smelter.config.MergeConfig;
import dev.smelter.config.ParameterValue;
import dev.smelter.methods.ComposedMethods;
import dev.smelter.methods.MergeMethods;
import dev.smelter.methods.MergeMethods.Method;
import dev.smelter.methods.MergeMethods.TensorMerge;
import dev.smelter.methods.SceMerge;
import dev.smelter.methods.ArceeFusion;
import dev.smelter.methods.ModelStockRows;
import dev.smelter.methods.NearSwap;
import dev.smelter.methods.NuSlerp;
import dev.smelter.methods.RamMerge;
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
        java.util.function.ToDoubleFunction<String> global = key -> global(config, key, tensorName, layer, layerCount);
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
            case MODEL_STOCK -> {
                if (global.applyAsDouble("filter_wise") != 0) yield TensorMerge.onHost(ModelStockRows.of(tensorName));
                yield new TensorMerge(null, TensorMerge.StatsOf.TASK_VECTORS,
                        s -> taskVectors.apply(ComposedMethods.modelStock(s, tensorName)));
            }
            case NUSLERP -> {
                double t = NuSlerp.t(weight(config, 0, tensorName, layer, layerCount),
                        weight(config, 1, tensorName, layer, layerCount));
                if (global.applyAsDouble("nuslerp_flatten") == 0)
                    yield TensorMerge.onHost(NuSlerp.perVector(t, global.applyAsDouble("nuslerp_row_wise") != 0));
                yield new TensorMerge(null, hasBase ? TensorMerge.StatsOf.TASK_VECTORS : TensorMerge.StatsOf.POINTS,
                        s -> (hasBase ? taskVectors : linear).apply(NuSlerp.coefficients(t, s)));
            }
            case NEARSWAP -> TensorMerge.onHost(NearSwap.of(global.applyAsDouble("t")));
            case ARCEE_FUSION -> TensorMerge.onHost(ArceeFusion.of());
            case RAM -> TensorMerge.onHost(RamMerge.ram(global.applyAsDouble("epsilon")));
            case RAMPLUS_TL -> TensorMerge.onHost(RamMerge.ramPlus(global.applyAsDouble("r"),
                    global.applyAsDouble("alpha"), global.applyAsDouble("epsilon")));
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
                    w[i] = (float) weight(config, i, tensorName, layer, layerCount);
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
                for (int i = 0; i < w.length; i++) w[i] = weight(config, i, tensorName, layer, layerCount);
                boolean normalize = global.applyAsDouble("normalize_weights") != 0;
                double eps = global.applyAsDouble("eps");
                yield new TensorMerge(null, hasBase ? TensorMerge.StatsOf.TASK_VECTORS : TensorMerge.StatsOf.POINTS,
                        s -> (hasBase ? taskVectors : linear).apply(ComposedMethods.multislerp(s, w, normalize, eps, tensorName)));
            }
            default -> throw new AssertionError(m);
        };
    }

    /**
     * A global parameter's value for a tensor: the top-level {@code parameters}, else (absent, or a filter list that
     * has no value for this tensor) the method's default, as mergekit's {@code ConfigReader.parameter}; a required
     * parameter without a value is a configuration error naming it (mergekit fails there too).
     */
    static double global(MergeConfig config, String key, String tensorName, int layer, int layerCount) {
        ParameterValue v = config.parameters().get(key);
        Double x = v == null ? null : v.lookup(tensorName, layer, layerCount);
        if (x != null) return x;
        String dflt = config.method().defaultOf(key);
        if (dflt == null)
            throw new IllegalArgumentException("parameters." + key + " has no value for tensor " + tensorName + " (no "
                    + "filter matches it) and " + config.method().mergekitName() + " requires it; add an entry without "
                    + "a filter");
        return numeric(dflt);
    }

    /**
     * A per-model parameter's value for a tensor: the model's, else the top-level one (MergeConfig chains them), else
     * the method's default ({@code dflt}: mergekit's); null {@code dflt}: required, a configuration error naming it.
     */
    static double perModel(MergeConfig config, int model, String key, Double dflt, String tensorName, int layer,
            int layerCount) {
        ParameterValue v = config.models().get(model).parameters().get(key);
        Double x = v == null ? null : v.lookup(tensorName, layer, layerCount);
        if (x != null) return x;
        if (dflt == null)
            throw new IllegalArgumentException("models[" + model + "].parameters." + key + " has no value for tensor "
                    + tensorName + " (no filter matches it, here or in the top-level parameters) and "
                    + config.method().mergekitName() + " requires it; add an entry without a filter");
        return dflt;
    }

    private static double weight(MergeConfig config, int model, String tensorName, int layer, int layerCount) {
        return perModel(config, model, "weight", null, tensorName, layer, layerCount);
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
            weights[i] = (float) weight(config, i, tensorName, layer, layerCount);
            densities[i] = perModel(config, i, "density", 1.0, tensorName, layer, layerCount);
            gammas[i] = perModel(config, i, "gamma", 0.01, tensorName, layer, layerCount);
            epsilons[i] = (float) perModel(config, i, "epsilon", 0.15, tensorName, layer, layerCount);
        }
        boolean normalize = global(config, "normalize", tensorName, layer, layerCount) != 0;
        boolean rescale = m.defaultOf("rescale") != null && global(config, "rescale", tensorName, layer, layerCount) != 0;
        float lambda = m.defaultOf("lambda") != null ? (float) global(config, "lambda", tensorName, layer, layerCount) : 1.0f;
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
     * every parameter has a value for it (mergekit fails at a required one that a filter list leaves without), and
     * DELLA's keep probabilities {@code density +- epsilon} must lie in (0, 1] where density is below 1 (mergekit
     * refuses them too). A failure is a configuration error (IllegalArgumentException, exit 2), found by the planner
     * before anything is read.
     */
    public static void checkTensor(MergeConfig config, String tensorName, int layer, int layerCount) {
        // Every parameter resolves for this tensor: a required one a filter list leaves without a value fails here.
        if (mayMiss(config)) tensorMerge(config, tensorName, layer, layerCount);
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

    /**
     * Whether merging the tensor reads its inputs twice: a composed method's statistics pass, then the merge (the
     * methods computed in Java read the host inputs in memory).
     */
    public static boolean readsTwice(MergeConfig config, String tensorName, int layerCount) {
        if (!config.method().composed()) return false;
        try {
            return tensorMerge(config, tensorName, dev.smelter.config.TensorNames.layerIndex(tensorName), layerCount).host() == null;
        } catch (IllegalArgumentException e) {
            return true;  // reported by checkTensor
        }
    }

    /** Whether some parameter of the config is a filter list that may have no value for a tensor. */
    private static boolean mayMiss(MergeConfig config) {
        if (config.parameters().values().stream().anyMatch(ParameterValue::mayMiss)) return true;
        for (MergeConfig.ModelEntry m : config.models())
            if (m.parameters().values().stream().anyMatch(ParameterValue::mayMiss)) return true;
        return false;
    }

    /** merge_method fisher: whether this tensor's coefficients are divided by each model's Fisher norm. */
    public static boolean normalizesFishers(MergeConfig config, String tensorName, int layer, int layerCount) {
        return global(config, "normalize_fishers", tensorName, layer, layerCount) != 0;
    }

}
