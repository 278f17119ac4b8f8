package dev.smelter.config;

import dev.smelter.MergeSpec;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.stream.Collectors;

/** The mergekit method names Smelter runs, their parameters and defaults (as in mergekit's registry). */
public final class MergeMethods {
    private MergeMethods() {}

    /** Parameters mergekit has that do not change Smelter's result, with the reason. */
    static final Map<String, String> IGNORED_PARAMETERS = Map.of(
            "int8_mask", "it only saves memory in mergekit; Smelter's masks never take tensor memory");

    public enum Method {
        LINEAR("linear", false, true, false, MergeSpec.Sparsify.NONE, MergeSpec.Consensus.NONE,
                Set.of("weight"), Set.of("normalize")),
        TASK_ARITHMETIC("task_arithmetic", true, false, false, MergeSpec.Sparsify.NONE, MergeSpec.Consensus.NONE,
                Set.of("weight"), Set.of("normalize", "lambda")),
        TIES("ties", true, true, false, MergeSpec.Sparsify.MAGNITUDE, MergeSpec.Consensus.SUM,
                Set.of("weight", "density"), Set.of("normalize", "lambda", "rescale")),
        DARE_LINEAR("dare_linear", true, false, true, MergeSpec.Sparsify.RANDOM, MergeSpec.Consensus.NONE,
                Set.of("weight", "density"), Set.of("normalize", "lambda", "rescale")),
        DARE_TIES("dare_ties", true, false, true, MergeSpec.Sparsify.RANDOM, MergeSpec.Consensus.SUM,
                Set.of("weight", "density"), Set.of("normalize", "lambda", "rescale"));

        private final String mergekitName;
        private final boolean needsBase, defaultNormalize, defaultRescale;
        private final MergeSpec.Sparsify sparsify;
        private final MergeSpec.Consensus consensus;
        private final Set<String> tensorParameters, methodParameters;

        Method(String name, boolean needsBase, boolean defaultNormalize, boolean defaultRescale,
                MergeSpec.Sparsify sparsify, MergeSpec.Consensus consensus, Set<String> tensorParameters,
                Set<String> methodParameters) {
            this.mergekitName = name;
            this.needsBase = needsBase;
            this.defaultNormalize = defaultNormalize;
            this.defaultRescale = defaultRescale;
            this.sparsify = sparsify;
            this.consensus = consensus;
            this.tensorParameters = tensorParameters;
            this.methodParameters = methodParameters;
        }

        public String mergekitName() {
            return mergekitName;
        }

        public boolean needsBase() {
            return needsBase;
        }

        /** Per-model, per-tensor parameters (weight, density). */
        public Set<String> tensorParameters() {
            return tensorParameters;
        }

        Set<String> requiredTensorParameters() {
            return Set.of("weight");
        }

        /** Parameters allowed under the top-level {@code parameters:} (also per-tensor defaults). */
        public Set<String> globalParameters() {
            return union(methodParameters, tensorParameters);
        }

        public boolean defaultNormalize() {
            return defaultNormalize;
        }

        public boolean defaultRescale() {
            return defaultRescale;
        }
    }

    public static Method byName(String name) throws ConfigException {
        for (Method m : Method.values()) if (m.mergekitName.equals(name)) return m;
        throw new ConfigException("merge_method '" + name + "' is not supported (supported: "
                + Arrays.stream(Method.values()).map(Method::mergekitName).collect(Collectors.joining(", ")) + ")");
    }

    /** The spec for one tensor: parameters resolved for its name and layer. */
    public static MergeSpec spec(MergeConfig config, String tensorName, int layer, int layerCount) {
        Method m = config.method();
        List<MergeConfig.ModelEntry> models = config.models();
        float[] weights = new float[models.size()];
        float[] densities = new float[models.size()];
        for (int i = 0; i < weights.length; i++) {
            Map<String, ParameterValue> p = models.get(i).parameters();
            weights[i] = (float) p.get("weight").resolve(tensorName, layer, layerCount);
            ParameterValue d = p.get("density");
            densities[i] = d == null ? 1.0f : (float) d.resolve(tensorName, layer, layerCount);
        }
        Map<String, ParameterValue> g = config.parameters();
        boolean normalize = flag(g, "normalize", m.defaultNormalize(), tensorName, layer, layerCount);
        boolean rescale = flag(g, "rescale", m.defaultRescale(), tensorName, layer, layerCount);
        float lambda = g.containsKey("lambda") ? (float) g.get("lambda").resolve(tensorName, layer, layerCount) : 1.0f;
        MergeSpec base = m == Method.LINEAR ? MergeSpec.linear(weights) : MergeSpec.taskArithmetic(weights);
        return base.toBuilder()
                .densities(m.sparsify == MergeSpec.Sparsify.NONE ? null : densities)
                .sparsify(m.sparsify)
                .consensus(m.consensus)
                .rescale(rescale && m.sparsify != MergeSpec.Sparsify.NONE ? MergeSpec.Rescale.INVERSE_DENSITY
                        : MergeSpec.Rescale.NONE)
                .normalize(normalize)
                .lambda(lambda)
                .seed(config.seed())
                .tensorName(tensorName)
                .build();
    }

    private static boolean flag(Map<String, ParameterValue> g, String key, boolean dflt, String t, int l, int n) {
        return g.containsKey(key) ? g.get(key).resolve(t, l, n) != 0 : dflt;
    }

    private static Set<String> union(Set<String> a, Set<String> b) {
        return java.util.stream.Stream.concat(a.stream(), b.stream()).collect(Collectors.toUnmodifiableSet());
    }
}
