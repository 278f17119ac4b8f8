package dev.smelter.config;

import com.fasterxml.jackson.databind.JsonNode;
import dev.smelter.methods.MergeMethods.Method;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * One output slice of mergekit's {@code slices:} syntax: a run of output layers, each merged from one layer of every
 * source ({@code layer_range: [start, end)}, the same length for every source), with the slice's own
 * {@code base_model} and {@code parameters} over the config's.
 *
 * <pre>
 * slices:
 *   - sources:
 *       - model: ./a
 *         layer_range: [0, 24]
 *   - sources:
 *       - model: ./b
 *         layer_range: [8, 32]
 *         parameters: {scale: [{filter: o_proj, value: 0.0}, {value: 1.0}]}
 * merge_method: passthrough
 * </pre>
 *
 * <p>A parameter of a source's model is looked up as mergekit's {@code ConfigReader} does: the first source of the
 * slice with that model, then the slice's {@code parameters}, then the config's; a global parameter in the slice's,
 * then the config's. Gradients are evaluated at the layer's place within its slice ({@link ParameterValue.Gradient}
 * with the slice's length). {@code underModels}: the slice stands for a {@code models:} config whose entries carry
 * {@code layer_range} (mergekit-evolve writes them; mergekit reads every layer of such a model, so the ranges are only
 * checked to cover all layers).
 *
 * @param baseModel the slice's {@code base_model}, else the config's (null if neither)
 */
public record SliceDefinition(List<Source> sources, Path baseModel, Map<String, ParameterValue> parameters,
        boolean underModels) {

    /** One source of a slice: layers {@code [start, end)} of {@code model}, with its own parameters. */
    public record Source(Path model, int start, int end, Map<String, ParameterValue> parameters) {
        public int length() {
            return end - start;
        }

        /** "[start, end]", as the config writes it. */
        public String range() {
            return "[" + start + ", " + end + "]";
        }
    }

    /** Output layers of the slice (the length of every source's range). */
    public int length() {
        return sources.get(0).length();
    }

    /** Whether the slice's base model is one of its sources (where a method that needs a base finds its layers). */
    public boolean hasBaseSource() {
        return baseModel != null && sources.stream().anyMatch(s -> s.model().equals(baseModel));
    }

    /**
     * A parameter of the source {@code i}'s model at a tensor: the first source with that model that sets it, else
     * the slice's, else {@code global} (the config's); null where none sets it.
     */
    public ParameterValue modelParameter(int i, String name, Map<String, ParameterValue> global) {
        Path model = sources.get(i).model();
        for (Source s : sources)
            if (s.model().equals(model) && s.parameters().containsKey(name)) return s.parameters().get(name);
        return globalParameter(name, global);
    }

    /**
     * Where a model's parameter is looked up for one tensor, in order: the first source of that model that sets it,
     * the slice, the config. As in mergekit's ConfigReader, a level whose filter list matches nothing for the tensor
     * passes to the next ({@link ParameterValue#lookup}).
     */
    public List<ParameterValue> modelParameterChain(int i, String name, Map<String, ParameterValue> global) {
        List<ParameterValue> chain = new java.util.ArrayList<>();
        Path model = sources.get(i).model();
        for (Source s : sources)
            if (s.model().equals(model) && s.parameters().containsKey(name)) {
                chain.add(s.parameters().get(name));
                break;
            }
        chain.addAll(globalParameterChain(name, global));
        return chain;
    }

    /** Where a global parameter is looked up: the slice, then the config. */
    public List<ParameterValue> globalParameterChain(String name, Map<String, ParameterValue> global) {
        List<ParameterValue> chain = new java.util.ArrayList<>();
        if (parameters.containsKey(name)) chain.add(parameters.get(name));
        if (global.containsKey(name)) chain.add(global.get(name));
        return chain;
    }

    /** A global parameter: the slice's, else the config's; null where neither sets it. */
    public ParameterValue globalParameter(String name, Map<String, ParameterValue> global) {
        return parameters.containsKey(name) ? parameters.get(name) : global.get(name);
    }

    /** What parsing needs from {@link MergeConfig}: path resolution and parameter maps, with its messages. */
    interface Reader {
        Path path(String text, String where) throws ConfigException;

        /** {@code perModel}: a source's parameters (the method's per-model ones), else a slice's (any). */
        Map<String, ParameterValue> parameters(JsonNode node, String where, boolean perModel) throws ConfigException;
    }

    /**
     * Parses {@code slices:}; checks what can be checked without the checkpoints (ranges well formed, one length per
     * slice, no model twice in a slice, the sources the method needs, required parameters, every value's range).
     * Ranges beyond a model's layers are refused by the planner.
     */
    static List<SliceDefinition> parse(JsonNode node, Method method, Path configBase, Map<String, ParameterValue> global,
            Reader reader, List<String> warnings) throws ConfigException {
        if (node == null || !node.isArray() || node.isEmpty())
            throw new ConfigException("'slices' must be a non-empty list of {sources: [{model: path, layer_range: "
                    + "[start, end]}, ...]}");
        List<SliceDefinition> slices = new ArrayList<>();
        for (int i = 0; i < node.size(); i++) {
            String at = "slices[" + i + "]";
            JsonNode s = node.get(i);
            if (!s.isObject()) throw new ConfigException(at + " must be a mapping with 'sources'");
            checkKeys(s, Set.of("sources", "base_model", "parameters", "residual_weight"), at);
            if (s.has("residual_weight"))
                warnings.add(at + ".residual_weight is ignored: mergekit's planner does not read it either");
            Path base = s.has("base_model") && !s.get("base_model").isNull()
                    ? reader.path(s.get("base_model").asText(), at + ".base_model") : configBase;
            JsonNode src = s.get("sources");
            if (src == null || !src.isArray() || src.isEmpty())
                throw new ConfigException(at + ".sources must be a non-empty list of {model: path, layer_range: "
                        + "[start, end]}");
            List<Source> sources = new ArrayList<>();
            Set<Path> seen = new HashSet<>();
            for (int j = 0; j < src.size(); j++) {
                String sat = at + ".sources[" + j + "]";
                JsonNode e = src.get(j);
                if (!e.isObject()) throw new ConfigException(sat + " must be a mapping with 'model' and 'layer_range'");
                checkKeys(e, Set.of("model", "layer_range", "parameters"), sat);
                if (!e.has("model") || !e.get("model").isValueNode())
                    throw new ConfigException(sat + ".model is missing");
                Path model = reader.path(e.get("model").asText(), sat + ".model");
                if (!seen.add(model))
                    throw new ConfigException(sat + ": " + model + " is already a source of " + at + " (mergekit "
                            + "keeps one tensor per model and slice; stack it with another slice instead)");
                int[] range = range(e.get("layer_range"), sat + ".layer_range");
                sources.add(new Source(model, range[0], range[1], reader.parameters(e.get("parameters"), sat + ".parameters", true)));
            }
            for (Source x : sources)
                if (x.length() != sources.get(0).length())
                    throw new ConfigException(at + ": every source of a slice needs the same number of layers, but "
                            + sources.get(0).model() + " " + sources.get(0).range() + " has " + sources.get(0).length()
                            + " and " + x.model() + " " + x.range() + " has " + x.length());
            slices.add(new SliceDefinition(List.copyOf(sources), base,
                    reader.parameters(s.get("parameters"), at + ".parameters", false), false));
        }
        for (int i = 0; i < slices.size(); i++) check(slices.get(i), "slices[" + i + "]", method, global);
        return List.copyOf(slices);
    }

    /** {@code layer_range: [start, end]}: whole numbers, 0 <= start < end. */
    static int[] range(JsonNode node, String where) throws ConfigException {
        if (node == null || node.isNull()) throw new ConfigException(where + " is missing (e.g. [0, 32])");
        if (!node.isArray() || node.size() != 2 || !node.get(0).canConvertToInt() || !node.get(1).canConvertToInt()
                || !node.get(0).isIntegralNumber() || !node.get(1).isIntegralNumber())
            throw new ConfigException(where + " must be two whole numbers [start, end] (layers start to end - 1), got "
                    + node);
        int start = node.get(0).intValue(), end = node.get(1).intValue();
        if (start < 0 || end <= start)
            throw new ConfigException(where + " [" + start + ", " + end + "] is empty or negative: it must be [start, "
                    + "end] with 0 <= start < end (layers start to end - 1)");
        return new int[] {start, end};
    }

    /** What the method needs of one slice's sources and parameters, and every written value's range. */
    public static void check(SliceDefinition s, String at, Method method, Map<String, ParameterValue> global)
            throws ConfigException {
        int n = s.sources().size();
        boolean usesBase = usesBase(method) && s.hasBaseSource();
        int others = usesBase ? n - 1 : n;
        switch (method) {
            case PASSTHROUGH -> {
                if (n != 1)
                    throw new ConfigException(at + " has " + n + " sources; passthrough copies one source per slice "
                            + "(put each source in a slice of its own)");
            }
            case SLERP -> {
                if (n != 1 && (!s.hasBaseSource() || n != 2))
                    throw new ConfigException(at + ": slerp interpolates two sources, the base model (t=0) and one "
                            + "other (t=1), or copies a slice's one source; the slice has " + n + " sources"
                            + (s.baseModel() == null ? " and no base_model" : s.hasBaseSource() ? ""
                                    : " and base_model " + s.baseModel() + " is not among them"));
            }
            case MODEL_STOCK -> {
                if (!s.hasBaseSource() || (n > 1 && others < 2))
                    throw new ConfigException(at + ": model_stock needs the base model and at least two other models "
                            + "among the slice's sources (or the base model alone, copied)");
            }
            case KARCHER, MULTISLERP -> {}  // one source alone is copied
            case FISHER -> throw new ConfigException("merge_method fisher reads each model's Fisher checkpoint "
                    + "(models[i].fisher); it is not available with slices");
            default -> {
                if (method.needsBase() && !s.hasBaseSource())
                    throw new ConfigException(at + ": merge_method " + method.mergekitName() + " needs the base model's "
                            + "layers among the slice's sources (mergekit reads the base from them); "
                            + (s.baseModel() == null ? "give base_model" : "add " + s.baseModel() + " with the same "
                                    + "layer_range length"));
            }
        }
        if (n > MergeConfig.MAX_MODELS)
            throw new ConfigException(at + " has " + n + " sources; Smelter merges at most " + MergeConfig.MAX_MODELS);
        for (int j = 0; j < n; j++) {
            boolean isBase = usesBase && s.sources().get(j).model().equals(s.baseModel());
            for (String req : method.requiredTensorParameters())
                if (!isBase && s.modelParameter(j, req, global) == null)
                    throw new ConfigException(at + ".sources[" + j + "].parameters." + req + " is required for "
                            + method.mergekitName() + " (or the slice's or the top-level parameters." + req + ")");
            for (Map.Entry<String, ParameterValue> p : s.sources().get(j).parameters().entrySet())
                MergeConfig.checkRange(at + ".sources[" + j + "].parameters." + p.getKey(), method, p.getKey(), p.getValue());
        }
        for (String req : method.requiredGlobalParameters())
            if (s.globalParameter(req, global) == null)
                throw new ConfigException("parameters." + req + " is required for " + method.mergekitName()
                        + " (top-level, or in " + at + ".parameters)");
        for (Map.Entry<String, ParameterValue> p : s.parameters().entrySet())
            MergeConfig.checkRange(at + ".parameters." + p.getKey(), method, p.getKey(), p.getValue());
    }

    /**
     * Whether a slice's layers are one source's unchanged, as mergekit's methods return a single input tensor as it
     * is (slerp, karcher, multislerp; the task-vector methods and model_stock when the one source is the base).
     * linear and passthrough merge one source by their own rule (its weight, its scale).
     */
    public static boolean copiesItsSource(SliceDefinition s, Method method) {
        return s.sources().size() == 1 && method != Method.LINEAR && method != Method.PASSTHROUGH;
    }

    /**
     * Whether the method takes the base model as its base (task vectors, slerp's t=0, ...) rather than as one more
     * weighted model (linear) or not at all (passthrough).
     */
    public static boolean usesBase(Method method) {
        return method != Method.LINEAR && method != Method.PASSTHROUGH;
    }

    /** The distinct models of the slices besides {@code base}, in order of first appearance. */
    static List<MergeConfig.ModelEntry> models(List<SliceDefinition> slices, Path base) {
        Map<Path, MergeConfig.ModelEntry> out = new LinkedHashMap<>();
        for (SliceDefinition s : slices)
            for (Source x : s.sources())
                if (!x.model().equals(base)) out.putIfAbsent(x.model(), new MergeConfig.ModelEntry(x.model(), new LinkedHashMap<>()));
        return List.copyOf(out.values());
    }

    private static void checkKeys(JsonNode node, Set<String> allowed, String where) throws ConfigException {
        for (var it = node.fieldNames(); it.hasNext(); ) {
            String k = it.next();
            if (!allowed.contains(k))
                throw new ConfigException(where + " has unknown key '" + k + "' (allowed: "
                        + String.join(", ", allowed.stream().sorted().toList()) + ")");
        }
    }
}
