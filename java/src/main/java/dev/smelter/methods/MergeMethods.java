package dev.smelter.methods;


import dev.smelter.Context;
import dev.smelter.MergeSpec;
import dev.smelter.Tensor;
import dev.smelter.PairStats;
import dev.smelter.DType;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.function.Function;
import java.util.stream.Collectors;

/**
 * The mergekit method names Smelter runs, their parameters and defaults (as in mergekit's registry), and how one
 * tensor is merged ({@link TensorMerge}). Reading a config's values for a tensor is {@code merge.TensorSpecs}.
 */
public final class MergeMethods {
    private MergeMethods() {}

    /** Parameters mergekit has that do not change Smelter's result, with the reason. */
    public static final Map<String, String> IGNORED_PARAMETERS = Map.of(
            "int8_mask", "it only saves memory in mergekit; Smelter's masks never take tensor memory");

    /** Whether some method of the table takes a parameter of this name (mergekit's names). */
    public static boolean isParameterOfSomeMethod(String name) {
        for (Method m : Method.values())
            for (Parameter p : m.parameters()) if (p.name().equals(name)) return true;
        return false;
    }

    /**
     * A parameter of a method: per model ({@code models[i].parameters}, or a default for every model under the
     * top-level {@code parameters}) or global (top-level only). {@code defaultValue} null: required.
     */
    public record Parameter(String name, boolean perModel, String defaultValue) {
        static Parameter perModel(String name, String dflt) {
            return new Parameter(name, true, dflt);
        }

        static Parameter global(String name, String dflt) {
            return new Parameter(name, false, dflt);
        }

        public boolean required() {
            return defaultValue == null;
        }
    }

    private static final Parameter WEIGHT = Parameter.perModel("weight", null);
    private static final Parameter DENSITY = Parameter.perModel("density", "1.0");
    private static final Parameter LAMBDA = Parameter.global("lambda", "1.0");
    private static final Parameter GAMMA = Parameter.perModel("gamma", "0.01");
    private static final Parameter EPSILON = Parameter.perModel("epsilon", "0.15");

    /**
     * The methods, with mergekit's names, parameters and defaults. Generalized task arithmetic runs as one merge
     * call; the composed methods (slerp, model_stock, karcher, multislerp) first take the tensor's exact pairwise
     * dot products ({@link dev.smelter.Context#pairStats}) and compute their coefficients from them, then run one
     * linear merge over the models and the base (see {@link TensorMerge}).
     */
    public enum Method {
        LINEAR("linear", false, MergeSpec.Sparsify.NONE, MergeSpec.Consensus.NONE,
                "weighted average of the models, sum w_i x_i / sum w_i",
                WEIGHT, Parameter.global("normalize", "true")),
        TASK_ARITHMETIC("task_arithmetic", true, MergeSpec.Sparsify.NONE, MergeSpec.Consensus.NONE,
                "base + lambda * sum w_i (x_i - base)",
                WEIGHT, Parameter.global("normalize", "false"), LAMBDA),
        TIES("ties", true, MergeSpec.Sparsify.MAGNITUDE, MergeSpec.Consensus.SUM,
                "task vectors trimmed to their top density by magnitude, sign elected by weighted sum, "
                        + "mean of the agreeing deltas",
                WEIGHT, DENSITY, Parameter.global("normalize", "true"), LAMBDA, Parameter.global("rescale", "false")),
        DARE_LINEAR("dare_linear", true, MergeSpec.Sparsify.RANDOM, MergeSpec.Consensus.NONE,
                "task vector entries dropped at random (kept with probability density), rescaled to the task "
                        + "vector's L1 norm (rescale), weighted sum",
                WEIGHT, DENSITY, Parameter.global("normalize", "false"), LAMBDA, Parameter.global("rescale", "true")),
        DARE_TIES("dare_ties", true, MergeSpec.Sparsify.RANDOM, MergeSpec.Consensus.SUM,
                "DARE drop and rescale, then TIES sign election and mean of the agreeing deltas",
                WEIGHT, DENSITY, Parameter.global("normalize", "false"), LAMBDA, Parameter.global("rescale", "true")),
        BREADCRUMBS("breadcrumbs", true, MergeSpec.Sparsify.MAGNITUDE_OUTLIERS, MergeSpec.Consensus.NONE,
                "task vectors with the largest gamma and the smallest magnitudes dropped per tensor, keeping "
                        + "density; weighted sum",
                WEIGHT, DENSITY, GAMMA, Parameter.global("normalize", "false"), LAMBDA,
                Parameter.global("rescale", "false")),
        BREADCRUMBS_TIES("breadcrumbs_ties", true, MergeSpec.Sparsify.MAGNITUDE_OUTLIERS, MergeSpec.Consensus.SUM,
                "breadcrumbs trimming, then TIES sign election and sum of the agreeing deltas",
                WEIGHT, DENSITY, GAMMA, Parameter.global("normalize", "false"), LAMBDA,
                Parameter.global("rescale", "false")),
        DELLA("della", true, MergeSpec.Sparsify.RANKED, MergeSpec.Consensus.SUM,
                "entries dropped at random with keep probabilities ranked by magnitude within each row, from "
                        + "density - epsilon to density + epsilon; rescaled (rescale); TIES election, mean of the "
                        + "agreeing deltas",
                WEIGHT, DENSITY, EPSILON, Parameter.global("normalize", "true"), LAMBDA,
                Parameter.global("rescale", "true")),
        DELLA_LINEAR("della_linear", true, MergeSpec.Sparsify.RANKED, MergeSpec.Consensus.NONE,
                "DELLA's ranked random drop and rescale, weighted sum without sign election",
                WEIGHT, DENSITY, EPSILON, Parameter.global("normalize", "false"), LAMBDA,
                Parameter.global("rescale", "true")),
        PASSTHROUGH("passthrough", false, MergeSpec.Sparsify.NONE, MergeSpec.Consensus.NONE,
                "one model's tensors copied, each multiplied by its scale (bytes copied where the scale is 1 and the "
                        + "dtype stays); with slices, layers stacked or dropped (frankenmerges)",
                Parameter.perModel("scale", "1.0")),
        SLERP("slerp", true, MergeSpec.Sparsify.NONE, MergeSpec.Consensus.NONE,
                "spherical interpolation by the angle between base_model (t=0) and the one other model (t=1); "
                        + "linear when they are nearly parallel",
                Parameter.global("t", null)),
        MODEL_STOCK("model_stock", true, MergeSpec.Sparsify.NONE, MergeSpec.Consensus.NONE,
                "base + t (mean of the models - base), t = N cos / (1 + (N-1) cos) from the mean pairwise cosine "
                        + "of the task vectors (N >= 2 models besides the base); with filter_wise one t per row (the "
                        + "last dimension)",
                Parameter.global("filter_wise", "false")),
        KARCHER("karcher", false, MergeSpec.Sparsify.NONE, MergeSpec.Consensus.NONE,
                "Riemannian (Karcher) mean of the directions of the models (and base_model) on the unit sphere, "
                        + "equal weights, scaled by their mean norm",
                Parameter.global("max_iter", "10"), Parameter.global("tol", "1e-5")),
        MULTISLERP("multislerp", false, MergeSpec.Sparsify.NONE, MergeSpec.Consensus.NONE,
                "weighted spherical interpolation of the models (task vectors about base_model if given) through "
                        + "the tangent space at their weighted mean direction, scaled by their weighted mean norm",
                WEIGHT, Parameter.global("normalize_weights", "true"), Parameter.global("eps", "1e-8")),
        FISHER("fisher", false, MergeSpec.Sparsify.NONE, MergeSpec.Consensus.NONE,
                "Fisher-weighted average (Matena and Raffel 2022): sum_i c_i F_i x_i / sum_i c_i F_i, F_i the diagonal "
                        + "Fisher from models[i].fisher, c_i = weight / (the L2 norm of the model's whole Fisher when "
                        + "normalize_fishers), F_i raised to fisher_floor (the first model's only when "
                        + "favor_target_model) (Smelter's name)",
                WEIGHT, Parameter.global("fisher_floor", "1e-6"), Parameter.global("favor_target_model", "true"),
                Parameter.global("normalize_fishers", "true")),
        SCE("sce", true, MergeSpec.Sparsify.NONE, MergeSpec.Consensus.SUM_UNWEIGHTED,
                "positions with the top select_topk variance of the task vectors across models kept, per-model "
                        + "weights from the mean squared kept delta, sign elected by the kept deltas' sum, weighted "
                        + "mean of the agreeing deltas (mergekit's variant: the mask also masks the task vectors)",
                Parameter.global("select_topk", "1.0")),
        SCE_FUSECHAT("sce_fusechat", true, MergeSpec.Sparsify.NONE, MergeSpec.Consensus.SUM_UNWEIGHTED,
                "SCE as in the FuseChat code: the variance mask only feeds the weights; sign election and the "
                        + "weighted mean of the agreeing deltas use the whole task vectors (Smelter's name)",
                Parameter.global("select_topk", "1.0")),
        NUSLERP("nuslerp", false, MergeSpec.Sparsify.NONE, MergeSpec.Consensus.NONE,
                "spherical interpolation of exactly two models (of their task vectors about base_model if given) "
                        + "at t = w_1 / (w_0 + w_1) (0.5 when the weights sum to about 0): over the whole tensor "
                        + "(nuslerp_flatten), else per row (the last dimension) or with nuslerp_row_wise per column "
                        + "(the first dimension); linear where the vectors are colinear",
                WEIGHT, Parameter.global("nuslerp_row_wise", "false"), Parameter.global("nuslerp_flatten", "true")),
        NEARSWAP("nearswap", true, MergeSpec.Sparsify.NONE, MergeSpec.Consensus.NONE,
                "per element, base_model moved towards the one other model by w = clamp(t / max(|base - x|, 1e-6), "
                        + "0, 1): w x + (1 - w) base (elements that differ by at most t take the model's value)",
                Parameter.global("t", null)),
        ARCEE_FUSION("arcee_fusion", true, MergeSpec.Sparsify.NONE, MergeSpec.Consensus.NONE,
                "base_model plus the one other model's delta where it is important: importance |x - base| times "
                        + "the KL divergence of the row's softmaxes (x's against base's, last dimension); kept where "
                        + "the importance is at least median + 1.5 IQR of the tensor's importances",
                new Parameter[0]),
        RAM("ram", true, MergeSpec.Sparsify.NONE, MergeSpec.Consensus.NONE,
                "Reinforced Agent Merging: per element, the task vectors with |delta| > epsilon; a delta no other "
                        + "model shares is kept whole, shared ones are averaged over the models that have them",
                Parameter.global("epsilon", "1e-5")),
        RAMPLUS_TL("ramplus_tl", true, MergeSpec.Sparsify.NONE, MergeSpec.Consensus.NONE,
                "RAM, with each model's unshared deltas scaled by 1 + r * clamp(shared / unique, 0, alpha) from "
                        + "the counts of its shared and unshared deltas in the tensor",
                Parameter.global("r", "0.1"), Parameter.global("alpha", "0.2"), Parameter.global("epsilon", "1e-5"));

        private final String mergekitName, description;
        private final boolean needsBase;
        private final MergeSpec.Sparsify sparsify;
        private final MergeSpec.Consensus consensus;
        private final List<Parameter> parameters;

        Method(String name, boolean needsBase, MergeSpec.Sparsify sparsify, MergeSpec.Consensus consensus,
                String description, Parameter... parameters) {
            this.mergekitName = name;
            this.needsBase = needsBase;
            this.sparsify = sparsify;
            this.consensus = consensus;
            this.description = description;
            this.parameters = List.of(parameters);
        }

        public MergeSpec.Sparsify sparsify() {
            return sparsify;
        }

        public MergeSpec.Consensus consensus() {
            return consensus;
        }

        public String mergekitName() {
            return mergekitName;
        }

        /** One line on what the method computes. */
        public String description() {
            return description;
        }

        public boolean needsBase() {
            return needsBase;
        }

        /**
         * Whether the method is not generalized task arithmetic: its merge depends on the tensors themselves (the
         * coefficients from their pairwise statistics, or Java over the host tensors; see {@link TensorMerge}).
         */
        public boolean composed() {
            return ordinal() >= SLERP.ordinal();
        }

        /** Every parameter, in the order mergekit lists them. */
        public List<Parameter> parameters() {
            return parameters;
        }

        /** Per-model, per-tensor parameters (weight, density). */
        public Set<String> tensorParameters() {
            return names(p -> p.perModel());
        }

        public Set<String> requiredTensorParameters() {
            return names(p -> p.perModel() && p.required());
        }

        public Set<String> requiredGlobalParameters() {
            return names(p -> !p.perModel() && p.required());
        }

        /** Parameters allowed under the top-level {@code parameters:} (also per-tensor defaults). */
        public Set<String> globalParameters() {
            return names(p -> true);
        }

        public boolean defaultNormalize() {
            return "true".equals(defaultOf("normalize"));
        }

        public boolean defaultRescale() {
            return "true".equals(defaultOf("rescale"));
        }

        public String defaultOf(String name) {
            for (Parameter p : parameters) if (p.name().equals(name)) return p.defaultValue();
            return null;
        }

        private Set<String> names(java.util.function.Predicate<Parameter> which) {
            return parameters.stream().filter(which).map(Parameter::name).collect(Collectors.toUnmodifiableSet());
        }
    }

    /** The method of this mergekit name; IllegalArgumentException naming the supported ones otherwise. */
    public static Method byName(String name) {
        for (Method m : Method.values()) if (m.mergekitName.equals(name)) return m;
        throw new IllegalArgumentException("merge_method '" + name + "' is not supported (supported: "
                + Arrays.stream(Method.values()).map(Method::mergekitName).collect(Collectors.joining(", ")) + ")");
    }

    /**
     * How one tensor is merged. A direct method has its {@code spec} from the config alone, to run over (base,
     * models). A composed method ({@link #composed()}) takes an unnormalized spec from {@code resolver}, computed
     * from the pairwise statistics of {@code statsOf}: for the task vectors {@code models[i] - base} a
     * TASK_ARITHMETIC spec over (base, models); for the points a LINEAR spec over {@code [models..., base]} (base
     * last, when there is one). A method computed in Java has {@code host} ({@link HostMerge}) instead.
     */
    public record TensorMerge(MergeSpec spec, StatsOf statsOf, Function<PairStats, MergeSpec> resolver,
            SceMerge.Settings sce, HostMerge host) {
        public enum StatsOf { TASK_VECTORS, POINTS }

        /**
         * SCE ({@code sce} not null) runs its own sequence of native calls per tensor: the variance, its top-k, the
         * masked squares, the merge. This runs them all; a sweep shares the variance between configurations.
         */
        public Context.MergeCounts mergeSce(Context ctx, Tensor base, List<Tensor> models, Tensor out) {
            Tensor scratch = sce.selectTopK() < 1 ? ctx.allocate(DType.F32, base.count(), base.memory()) : null;
            try {
                return SceMerge.merge(ctx, base, models, sce.selectTopK(), sce.variant(), sce.tensorName(), scratch, out);
            } finally {
                if (scratch != null) ctx.free(scratch);
            }
        }

        public TensorMerge(MergeSpec spec, StatsOf statsOf, Function<PairStats, MergeSpec> resolver) {
            this(spec, statsOf, resolver, null, null);
        }

        public TensorMerge(MergeSpec spec, StatsOf statsOf, Function<PairStats, MergeSpec> resolver,
                SceMerge.Settings sce) {
            this(spec, statsOf, resolver, sce, null);
        }

        /** A method computed in Java over the host tensors ({@link HostMerge}). */
        public static TensorMerge onHost(HostMerge host) {
            return new TensorMerge(null, null, null, null, host);
        }

        public boolean composed() {
            return resolver != null;
        }

        /**
         * The spec for these tensors: for a composed method, from one {@link Context#pairStats} pass over them; null
         * when an input holds NaN or infinity (the coefficients are NaN: write {@link NanOutput} instead).
         */
        public MergeSpec resolve(Context ctx, Tensor base, List<Tensor> models) {
            if (!composed()) return spec;
            List<Tensor> vectors = statsOf == StatsOf.TASK_VECTORS ? models : inputs(base, models);
            PairStats stats = new PairStats(vectors.size());
            ctx.pairStats(vectors, statsOf == StatsOf.TASK_VECTORS ? base : null, null, null, stats);
            return resolveWith(stats);
        }

        /** A composed method's spec from the statistics of its vectors; null where some value is not finite. */
        public MergeSpec resolveWith(PairStats stats) {
            for (int i = 0; i < stats.size(); i++) if (stats.nonfinite(i) > 0) return null;
            return resolver.apply(stats);
        }

        /**
         * The model tensors of the merge call: {@code models} (about the base for methods on task vectors), or for a
         * composed method on points the points {@code [models..., base]}.
         */
        public List<Tensor> inputs(Tensor base, List<Tensor> models) {
            if (!composed() || base == null || statsOf == StatsOf.TASK_VECTORS) return models;
            List<Tensor> points = new java.util.ArrayList<>(models);
            points.add(base);
            return points;
        }
    }

}
