package dev.smelter.config;

import dev.smelter.methods.MergeMethods;

import com.fasterxml.jackson.databind.JsonNode;
import dev.smelter.DType;
import dev.smelter.io.HubCache;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Set;
import java.util.function.Consumer;
import java.util.regex.Pattern;

/**
 * A merge configuration in mergekit's YAML format (the subset Smelter runs), plus Smelter's own
 * options under the top-level key {@code smelter:}. Unknown keys are errors; keys mergekit has but
 * that change nothing here are accepted with a warning.
 *
 * <pre>
 * merge_method: ties
 * base_model: ./base
 * models:
 *   - model: ./expert-de
 *     parameters: {weight: 0.5, density: 0.4}
 *   - model: ./expert-fr
 *     parameters: {weight: [0.2, 0.8], density: 0.4}   # gradient over the layers
 * parameters: {normalize: true, lambda: 1.0}
 * dtype: float32          # compute dtype: inputs are cast to it first (Smelter accumulates in f32 always)
 * out_dtype: bfloat16     # output dtype (default: dtype, else the inputs')
 * smelter: {trim_scope: model, seed: 42}
 * </pre>
 *
 * <p>{@code smelter: {grid: {...}}} makes the config a sweep ({@link SweepGrid}, {@code grid} not null): it runs
 * with {@code smelter sweep}, one merge per point of the grid.
 */
public record MergeConfig(
        MergeMethods.Method method,
        Path baseModel,
        List<ModelEntry> models,
        Map<String, ParameterValue> parameters,
        DType outDType,
        TrimScope trimScope,
        long seed,
        List<String> warnings,
        SweepGrid grid,
        DType computeDType,
        List<SliceDefinition> slices,
        Path baseLora,
        TokenizerSettings tokenizer) {

    /** A config without a sweep grid. */
    public MergeConfig(MergeMethods.Method method, Path baseModel, List<ModelEntry> models,
            Map<String, ParameterValue> parameters, DType outDType, TrimScope trimScope, long seed,
            List<String> warnings) {
        this(method, baseModel, models, parameters, outDType, trimScope, seed, warnings, null, null, null, null, null);
    }

    /** A config of {@code models:} (no slices). */
    public MergeConfig(MergeMethods.Method method, Path baseModel, List<ModelEntry> models,
            Map<String, ParameterValue> parameters, DType outDType, TrimScope trimScope, long seed,
            List<String> warnings, SweepGrid grid, DType computeDType) {
        this(method, baseModel, models, parameters, outDType, trimScope, seed, warnings, grid, computeDType, null, null, null);
    }

    /**
     * Whether the output's layers come from {@code slices:} (stacked, dropped or renumbered layers) rather than every
     * layer of the models; {@link #models()} then lists the slices' models (besides the base) without parameters.
     */
    public boolean sliced() {
        return slices != null && !slices.get(0).underModels();
    }

    /** The same config with other models, parameters, trimming, seed or grid (everything else kept). */
    public MergeConfig with(List<ModelEntry> models, Map<String, ParameterValue> parameters, TrimScope trimScope,
            long seed, SweepGrid grid) {
        return new MergeConfig(method, baseModel, models, parameters, outDType, trimScope, seed, warnings, grid,
                computeDType, slices, baseLora, tokenizer);
    }

    /**
     * One input model and its per-tensor parameters (weight, density, ...); {@code fisher}: its diagonal Fisher
     * checkpoint (same tensor names) for {@code merge_method: fisher}, else null; {@code lora}: the PEFT LoRA adapter
     * applied to it ({@code model: path+adapter}, as mergekit writes it), else null.
     */
    public record ModelEntry(Path path, Map<String, ParameterValue> parameters, Path fisher, Path lora) {
        public ModelEntry(Path path, Map<String, ParameterValue> parameters, Path fisher) {
            this(path, parameters, fisher, null);
        }

        public ModelEntry(Path path, Map<String, ParameterValue> parameters) {
            this(path, parameters, null, null);
        }
    }

    /** The model with its LoRA adapter, written as in the config ({@code path+adapter}). */
    public static String describe(Path path, Path lora) {
        return lora == null ? path.toString() : path + "+" + lora;
    }

    /** Where TIES trimming ranks magnitudes: within each tensor (mergekit) or the whole model (TIES paper). */
    public enum TrimScope { TENSOR, MODEL }

    private static final Set<String> TOP_KEYS = Set.of("merge_method", "base_model", "models", "parameters", "dtype",
            "out_dtype", "tokenizer_source", "tokenizer", "chat_template", "name", "smelter", "slices");
    private static final Set<String> IGNORED_TOP_KEYS = Set.of("name");

    /**
     * Reads a config file. Relative model paths resolve as mergekit resolves them, against the working directory,
     * and where nothing is there against the config's folder ({@link #parse(JsonNode, Path, Path)}).
     */
    public static MergeConfig load(Path file) throws IOException, ConfigException {
        return load(file, Path.of("").toAbsolutePath());
    }

    /** {@link #load(Path)} with {@code workDir} as the working directory. */
    public static MergeConfig load(Path file, Path workDir) throws IOException, ConfigException {
        return load(file, workDir, HubCache.fromEnvironment());
    }

    /** {@link #load(Path, Path)} with Hub IDs read from {@code hubCache}. */
    public static MergeConfig load(Path file, Path workDir, HubCache hubCache) throws IOException, ConfigException {
        if (Files.isDirectory(file)) throw new ConfigException(file + " is a directory, not a config file");
        if (!Files.exists(file)) throw new ConfigException("config file " + file + " does not exist");
        List<JsonNode> documents;
        try {
            documents = YamlReader.readAll(Files.readString(file));
        } catch (ConfigException e) {
            throw new ConfigException(file + ": " + e.getMessage());
        } catch (IOException | RuntimeException e) {
            throw new ConfigException(file + ": not valid YAML: " + e.getMessage());
        }
        if (documents.size() > 1)
            throw new ConfigException(file + " holds " + documents.size() + " YAML documents (configs separated by "
                    + "'---', as mergekit-multi takes them): smelter merge runs them (intermediate merges, then the "
                    + "final one); here one merge configuration is needed");
        return parse(documents.isEmpty() ? null : documents.get(0), file.toAbsolutePath().getParent(),
                workDir.toAbsolutePath(), hubCache);
    }

    /** Parses a config; relative model paths are resolved against {@code baseDir}. */
    public static MergeConfig parse(JsonNode root, Path baseDir) throws ConfigException {
        return parse(root, baseDir, null);
    }

    /**
     * Parses a config. With {@code workDir} null, relative model paths are resolved against {@code baseDir} (the
     * config's folder) and need not exist. Otherwise as mergekit does, against {@code workDir} (the working directory)
     * where the path exists there, else against {@code baseDir} (a warning says which is used when both exist); a
     * path found in neither is an error, which for a Hub ID ({@code org/name}) says how to download it.
     */
    public static MergeConfig parse(JsonNode root, Path baseDir, Path workDir) throws ConfigException {
        return parse(root, baseDir, workDir, workDir == null ? null : HubCache.fromEnvironment());
    }

    /**
     * {@link #parse(JsonNode, Path, Path)} with Hub IDs ({@code org/name[@revision]}) that are no local path read from
     * {@code hubCache}.
     */
    public static MergeConfig parse(JsonNode root, Path baseDir, Path workDir, HubCache hubCache) throws ConfigException {
        if (root == null || !root.isObject()) throw new ConfigException("the config must be a YAML mapping");
        if (root.has("experts") || root.has("gate_mode") || root.has("experts_per_token"))
            throw new ConfigException("this is a mergekit-moe config (experts, gate_mode, experts_per_token): it assembles "
                    + "a mixture-of-experts model from dense ones, adding router weights computed from prompts, which is "
                    + "not a weight-space merge and not something Smelter does; run it with mergekit-moe");
        List<String> warnings = new ArrayList<>();
        checkKeys(root, TOP_KEYS, "config");
        for (String k : IGNORED_TOP_KEYS)
            if (root.has(k)) warnings.add("'" + k + "' is ignored");
        String methodName = text(root, "merge_method", "config");
        MergeMethods.Method method;
        try {
            method = MergeMethods.byName(methodName);
        } catch (IllegalArgumentException e) {
            throw new ConfigException(e.getMessage());
        }

        Ref baseRef = root.has("base_model")
                ? reference(baseDir, workDir, hubCache, text(root, "base_model", "config"), "base_model", warnings) : null;
        Path base = baseRef == null ? null : baseRef.path();
        Path baseLora = baseRef == null ? null : baseRef.lora();
        if (root.has("slices")) {
            if (baseLora != null)
                throw new ConfigException("base_model: a LoRA adapter on the base ('+') is not supported with slices yet; "
                        + "apply it in a models: config first (a multi-document config can name that merge)");
            return parseSlices(root, method, base, baseDir, workDir, hubCache, warnings);
        }
        if (method == MergeMethods.Method.PASSTHROUGH && base != null)
            base = passthroughBase(root, base, baseDir, workDir, hubCache);
        if (method.needsBase() && base == null)
            throw new ConfigException("merge_method " + methodName + " needs base_model");

        JsonNode modelsNode = root.get("models");
        if (modelsNode == null || !modelsNode.isArray() || modelsNode.isEmpty())
            throw new ConfigException("'models' must be a non-empty list of {model: path, parameters: {...}}");
        List<ModelEntry> models = new ArrayList<>();
        List<String> modelPlaces = new ArrayList<>();  // "models[i]" of each entry, for messages
        List<SliceDefinition.Source> ranges = new ArrayList<>();  // models[i].layer_range, checked by the planner
        boolean baseListed = false;
        for (int i = 0; i < modelsNode.size(); i++) {
            String at = "models[" + i + "]";
            JsonNode m = modelsNode.get(i);
            if (!m.isObject()) throw new ConfigException(at + " must be a mapping with 'model'");
            checkKeys(m, method == MergeMethods.Method.FISHER ? Set.of("model", "parameters", "fisher", "layer_range")
                    : Set.of("model", "parameters", "layer_range"), at);
            Ref ref = reference(baseDir, workDir, hubCache, text(m, "model", at), at + ".model", warnings);
            Path path = ref.path();
            if (m.has("layer_range")) {  // mergekit-evolve writes [0, layers]; mergekit reads every layer regardless
                int[] r = SliceDefinition.range(m.get("layer_range"), at + ".layer_range");
                ranges.add(new SliceDefinition.Source(path, r[0], r[1], Map.of()));
            }
            Path fisher = m.has("fisher") ? resolve(baseDir, workDir, hubCache, text(m, "fisher", at), at + ".fisher", warnings) : null;
            if (method == MergeMethods.Method.FISHER && fisher == null)
                throw new ConfigException(at + ".fisher is required for merge_method fisher: the model's diagonal "
                        + "Fisher as a safetensors checkpoint with the model's tensor names");
            Map<String, ParameterValue> params = parameters(m.get("parameters"), at + ".parameters",
                    method.tensorParameters(), warnings::add);
            if (base != null && path.equals(base) && java.util.Objects.equals(ref.lora(), baseLora)) {
                if (method == MergeMethods.Method.NUSLERP)
                    throw new ConfigException(at + " is base_model: nuslerp interpolates two models other than the "
                            + "base (mergekit refuses it too); remove it from models or remove base_model");
                if (weighsTheBase(method)) {
                    baseListed = true;  // mergekit's linear: one more weighted source
                } else {
                    // Methods on task vectors (and the composed ones) take the base once, as the base.
                    if (!method.composed())
                        warnings.add(at + " is the base model: its task vector is zero and it is left out");
                    continue;
                }
            }
            models.add(new ModelEntry(path, params, fisher, ref.lora()));
            modelPlaces.add(at);
        }
        Map<String, ParameterValue> global = parameters(root.get("parameters"), "parameters",
                method.globalParameters(), warnings::add);
        if (base != null && weighsTheBase(method) && !baseListed) {
            // mergekit adds an unlisted base_model to the sources of every method; linear weighs it like the others,
            // with the top-level weight (without one mergekit fails on its missing weight).
            if (!global.containsKey("weight"))
                throw new ConfigException("merge_method " + methodName + " with base_model: mergekit merges the base as "
                        + "one more weighted model, and " + base + " has no weight; list it under models with a weight, "
                        + "give a top-level parameters.weight, or remove base_model");
            warnings.add("base_model " + base + " is merged as one more model with the top-level weight, as mergekit does");
            models.add(new ModelEntry(base, new LinkedHashMap<>(), null, baseLora));
            modelPlaces.add("base_model");
        }
        if (models.isEmpty())
            throw new ConfigException("no models to merge besides the base model");
        for (String required : method.requiredGlobalParameters())
            if (!global.containsKey(required))
                throw new ConfigException("parameters." + required + " is required for " + methodName);
        checkModelCount(method, models.size());
        if (models.size() > MAX_MODELS)
            throw new ConfigException(models.size() + " models to merge; Smelter merges at most " + MAX_MODELS
                    + " in one merge (merge them in groups, then merge the groups)");
        for (int i = 0; i < models.size(); i++)
            for (Map.Entry<String, ParameterValue> p : models.get(i).parameters().entrySet())
                checkRange(modelPlaces.get(i) + ".parameters." + p.getKey(), method, p.getKey(), p.getValue());
        for (Map.Entry<String, ParameterValue> p : global.entrySet())
            checkRange("parameters." + p.getKey(), method, p.getKey(), p.getValue());
        // mergekit also accepts per-tensor parameters at the top level as defaults for every model, and asks them
        // too where a model's filter list has no value for a tensor.
        for (int i = 0; i < models.size(); i++) {
            Map<String, ParameterValue> p = models.get(i).parameters();
            for (String name : method.tensorParameters())
                if (global.containsKey(name))
                    p.put(name, p.containsKey(name) ? ParameterValue.orElse(p.get(name), global.get(name)) : global.get(name));
            for (String required : method.requiredTensorParameters())
                if (!p.containsKey(required))
                    throw new ConfigException(modelPlaces.get(i) + ".parameters." + required + " is required for "
                            + methodName + " (or a top-level parameters." + required + " for every model)");
        }

        return finish(root, method, base, models, global, warnings,
                ranges.isEmpty() ? null : List.of(new SliceDefinition(List.copyOf(ranges), base, Map.of(), true)), baseLora,
                baseDir, workDir, hubCache);
    }

    /** A config of {@code slices:} ({@link SliceDefinition}); the top-level keys are read as for {@code models:}. */
    private static MergeConfig parseSlices(JsonNode root, MergeMethods.Method method, Path base, Path baseDir,
            Path workDir, HubCache hubCache, List<String> warnings) throws ConfigException {
        if (root.has("models"))
            throw new ConfigException("the config has both 'models' and 'slices'; mergekit takes exactly one of them");
        Map<String, ParameterValue> global = parameters(root.get("parameters"), "parameters", method.globalParameters(),
                warnings::add);
        for (Map.Entry<String, ParameterValue> p : global.entrySet())
            checkRange("parameters." + p.getKey(), method, p.getKey(), p.getValue());
        List<SliceDefinition> slices = SliceDefinition.parse(root.get("slices"), method, base, global,
                new SliceDefinition.Reader() {
                    @Override
                    public Path path(String text, String where) throws ConfigException {
                        Ref ref = reference(baseDir, workDir, hubCache, text, where, warnings);
                        if (ref.lora() != null)
                            throw new ConfigException(where + ": a LoRA adapter ('+') in a slice is not supported yet; "
                                    + "apply it in a models: config first (a multi-document config can name that merge)");
                        return ref.path();
                    }

                    @Override
                    public Map<String, ParameterValue> parameters(JsonNode node, String where, boolean perModel)
                            throws ConfigException {
                        return MergeConfig.parameters(node, where, perModel ? method.tensorParameters()
                                : method.globalParameters(), warnings::add);
                    }
                }, warnings);
        MergeConfig config = finish(root, method, base, SliceDefinition.models(slices, base), global, warnings, slices, null,
                baseDir, workDir, hubCache);
        if (config.trimScope() == TrimScope.MODEL)
            throw new ConfigException("smelter.trim_scope: model ranks one model's task vector over the whole model; "
                    + "with slices a model's layers belong to several merges: use trim_scope: tensor");
        return config;
    }

    /**
     * mergekit's passthrough takes exactly one tensor, and adds {@code base_model} to the sources of a {@code models:}
     * config: the base may only be the one model.
     */
    private static Path passthroughBase(JsonNode root, Path base, Path baseDir, Path workDir, HubCache hubCache)
            throws ConfigException {
        JsonNode models = root.get("models");
        if (models != null && models.isArray() && models.size() == 1 && models.get(0).isObject()
                && models.get(0).has("model")
                && resolve(baseDir, workDir, hubCache, text(models.get(0), "model", "models[0]"), "models[0].model",
                        new ArrayList<>()).equals(base))
            return null;
        throw new ConfigException("merge_method passthrough copies one model: with base_model it can only be that "
                + "model (mergekit adds the base to the sources, and passthrough refuses two); remove base_model");
    }

    /** The keys every config has besides its models or slices: dtypes and Smelter's options, the grid last. */
    private static MergeConfig finish(JsonNode root, MergeMethods.Method method, Path base, List<ModelEntry> models,
            Map<String, ParameterValue> global, List<String> warnings, List<SliceDefinition> slices, Path baseLora,
            Path baseDir, Path workDir, HubCache hubCache) throws ConfigException {
        // mergekit casts every input to `dtype` before the merge (GatherTensors) and writes `out_dtype`, else the
        // result's dtype: `dtype`, else the inputs'.
        DType compute = root.has("dtype") ? dtype(text(root, "dtype", "config")) : null;
        DType out = root.has("out_dtype") ? dtype(text(root, "out_dtype", "config")) : compute;

        TrimScope scope = TrimScope.TENSOR;
        long seed = 0;
        JsonNode s = root.get("smelter");
        if (s != null) {
            if (!s.isObject()) throw new ConfigException("'smelter' must be a mapping");
            checkKeys(s, Set.of("trim_scope", "seed", "grid"), "smelter");
            if (s.has("trim_scope")) scope = trimScope(text(s, "trim_scope", "smelter"));
            if (s.has("seed")) {
                if (!s.get("seed").canConvertToLong()) throw new ConfigException("smelter.seed must be an integer");
                seed = s.get("seed").asLong();
            }
        }
        TokenizerSettings tokenizer = TokenizerSettings.parse(root,
                (p, where) -> resolve(baseDir, workDir, hubCache, p, where, warnings));
        if (tokenizer != null) tokenizer.checkSources(base, models.stream().map(ModelEntry::path).toList());
        if (tokenizer != null && slices != null && !slices.get(0).underModels() && tokenizer.buildsVocabulary()
                && !(tokenizer.source() == TokenizerSettings.Source.BASE && tokenizer.tokens().isEmpty()
                        && tokenizer.padToMultipleOf() <= 1))
            throw new ConfigException("tokenizer_source/tokenizer with slices: building a vocabulary across sliced "
                    + "models is not supported yet (the base's tokenizer is copied; every model must share it): remove "
                    + "the key to copy the base's tokenizer, or, where each slice spans every layer, write the merge as a "
                    + "models: config (the same merge), where it builds the vocabulary");
        MergeConfig config = new MergeConfig(method, base, List.copyOf(models), global, out, scope, seed,
                List.copyOf(warnings), null, compute, slices, baseLora, tokenizer);
        if (s == null || !s.has("grid")) return config;
        SweepGrid grid = SweepGrid.parse(s.get("grid"), "smelter.grid");
        grid.validate(config);
        return config.with(config.models(), global, scope, seed, grid);
    }

    /** The most models one merge takes (SMELTER_MAX_MODELS of the C ABI). */
    public static final int MAX_MODELS = 64;

    /**
     * The range of a parameter, checked on every value the config writes before anything is read. Combinations
     * (DELLA's density +- epsilon) are checked per tensor by the planner.
     */
    static void checkRange(String where, MergeMethods.Method method, String name, ParameterValue value)
            throws ConfigException {
        for (double x : value.written().toArray()) {
            String must = switch (method.mergekitName() + "." + name) {  // names other methods use differently
                case "nearswap.t" -> x >= 0 && Double.isFinite(x) ? null
                        : "a finite number >= 0 (the difference below which the model's value is taken)";
                case "ram.epsilon" -> x >= 0 && Double.isFinite(x) ? null
                        : "a finite number >= 0 (the magnitude above which a delta counts)";
                case "ramplus_tl.epsilon" -> x > 0 && Double.isFinite(x) ? null
                        : "a finite number > 0 (the magnitude above which a delta counts, and the floor of the count "
                                + "of unshared deltas it divides by)";
                case "ramplus_tl.alpha" -> x >= 0 && Double.isFinite(x) ? null
                        : "a finite number >= 0 (the upper clamp of the shared / unshared ratio)";
                default -> generic(name, x);
            };
            if (must != null)
                throw new ConfigException(where + " is " + (x == Math.rint(x) && Math.abs(x) < 1e15 ? Long.toString((long) x)
                        : Double.toString(x)) + "; it must be " + must);
        }
    }

    /** What a parameter of this name must be (null: it is in range), for the methods without their own rule. */
    private static String generic(String name, double x) {
        return switch (name) {
            case "density" -> x > 0 && x <= 1 ? null : "a fraction in (0, 1] (the share of each task vector kept)";
            case "select_topk" -> x > 0 && x <= 1 ? null : "a fraction in (0, 1] (the share of positions selected)";
            case "gamma" -> x >= 0 && x <= 1 ? null : "a fraction in [0, 1] (the share of the largest magnitudes dropped)";
            case "epsilon" -> x >= 0 && x < 1 ? null : "in [0, 1) (the half-width of DELLA's keep probabilities)";
            case "max_iter" -> x >= 0 && x == Math.rint(x) && x <= 1e6 ? null : "a whole number from 0 to 1000000";
            case "tol", "eps", "fisher_floor" -> x >= 0 && Double.isFinite(x) ? null : "a finite number >= 0";
            default -> Double.isFinite(x) ? null : "a finite number";
        };
    }

    /** Methods that merge the base as a weighted point when it is among the sources (mergekit's linear). */
    private static boolean weighsTheBase(MergeMethods.Method method) {
        return method == MergeMethods.Method.LINEAR;
    }

    private static void checkModelCount(MergeMethods.Method method, int others) throws ConfigException {
        switch (method) {
            case NUSLERP -> {
                if (others != 2)
                    throw new ConfigException("nuslerp interpolates exactly two models (plus an optional base_model); "
                            + "got " + others + " besides the base");
            }
            case NEARSWAP, ARCEE_FUSION -> {
                if (others != 1)
                    throw new ConfigException(method.mergekitName() + " merges base_model and exactly one other model; "
                            + "got " + others + " besides the base");
            }
            case SLERP -> {
                if (others != 1)
                    throw new ConfigException("slerp interpolates exactly two models: base_model (t=0) and one other "
                            + "(t=1); got " + others + " besides the base");
            }
            case PASSTHROUGH -> {
                if (others != 1)
                    throw new ConfigException("passthrough copies exactly one model; got " + others + " (to stack "
                            + "layers of several models, use slices)");
            }
            case MODEL_STOCK -> {
                if (others < 2)
                    throw new ConfigException("model_stock needs at least two models besides base_model; got " + others);
            }
            default -> {}
        }
    }

    public static TrimScope trimScope(String text) throws ConfigException {
        return switch (text.toLowerCase(Locale.ROOT)) {
            case "tensor" -> TrimScope.TENSOR;
            case "model" -> TrimScope.MODEL;
            default -> throw new ConfigException("trim_scope must be 'tensor' or 'model', got '" + text + "'");
        };
    }

    static DType dtype(String text) throws ConfigException {
        String name = text.toLowerCase(Locale.ROOT);
        // mergekit's dtype_from_name drops a leading "torch." (torch prints its dtypes so)
        if (name.startsWith("torch.")) name = name.substring("torch.".length());
        return switch (name) {
            case "float32", "fp32", "f32" -> DType.F32;
            case "float16", "fp16", "f16", "half" -> DType.F16;
            case "bfloat16", "bf16" -> DType.BF16;
            default -> throw new ConfigException("unsupported dtype '" + text + "' (float32, float16, bfloat16)");
        };
    }

    private static Map<String, ParameterValue> parameters(JsonNode node, String where, Set<String> allowed,
            Consumer<String> warn) throws ConfigException {
        Map<String, ParameterValue> out = new LinkedHashMap<>();
        if (node == null || node.isNull()) return out;
        if (!node.isObject()) throw new ConfigException(where + " must be a mapping");
        for (Iterator<String> it = node.fieldNames(); it.hasNext(); ) {
            String k = it.next();
            if (MergeMethods.IGNORED_PARAMETERS.containsKey(k)) {
                warn.accept(where + "." + k + " is ignored: " + MergeMethods.IGNORED_PARAMETERS.get(k));
                continue;
            }
            if (!allowed.contains(k) && MergeMethods.isParameterOfSomeMethod(k)) {
                // mergekit ignores parameters its method does not take (e.g. `weight` in its own sce examples),
                // so existing configs run; a name no method takes is a typo and fails below.
                warn.accept(where + "." + k + " is ignored: this merge method does not take it here (allowed: "
                        + (allowed.isEmpty() ? "none" : String.join(", ", allowed)) + ")");
                continue;
            }
            if (!allowed.contains(k))
                throw new ConfigException(where + "." + k + " is not a parameter of this merge method (allowed: "
                        + String.join(", ", allowed) + ")");
            out.put(k, ParameterValue.parse(node.get(k), where + "." + k));
        }
        return out;
    }

    private static void checkKeys(JsonNode node, Set<String> allowed, String where) throws ConfigException {
        for (Iterator<String> it = node.fieldNames(); it.hasNext(); ) {
            String k = it.next();
            if (!allowed.contains(k))
                throw new ConfigException(where + " has unknown key '" + k + "' (allowed: " + String.join(", ", allowed.stream().sorted().toList()) + ")");
        }
    }

    private static String text(JsonNode node, String key, String where) throws ConfigException {
        JsonNode v = node.get(key);
        if (v == null || v.isNull()) throw new ConfigException(where + "." + key + " is missing");
        if (!v.isValueNode()) throw new ConfigException(where + "." + key + " must be a string");
        return v.asText();
    }

    /** A model reference: a checkpoint and the LoRA adapter applied to it (null: none). */
    private record Ref(Path path, Path lora) {}

    /**
     * Resolves a model reference as mergekit parses one: {@code model}, or {@code model+adapter} (a PEFT LoRA adapter
     * applied to the model); each part a path or a Hub ID. A PEFT adapter folder given alone is refused (mergekit
     * finds no model files there) with the reference to write instead.
     */
    private static Ref reference(Path baseDir, Path workDir, HubCache hubCache, String text, String where,
            List<String> warnings) throws ConfigException {
        String[] parts = text.split("\\+", -1);
        if (parts.length > 2 || (parts.length == 2 && (parts[0].isEmpty() || parts[1].isEmpty())))
            throw new ConfigException(where + " '" + text + "' is not a model reference: write a path or Hub ID, "
                    + "or MODEL+LORA for a model with a PEFT LoRA adapter (one '+')");
        Path model = resolve(baseDir, workDir, hubCache, parts[0], where, warnings);
        Path lora = parts.length == 2 ? resolve(baseDir, workDir, hubCache, parts[1], where + " (LoRA)", warnings) : null;
        if (workDir != null && lora == null && dev.smelter.io.LoraAdapter.isAdapter(model) && !hasWeights(model))
            throw new ConfigException(where + " '" + text + "' is a PEFT adapter, not a model: write it after the model "
                    + "it adapts, as '" + dev.smelter.io.LoraAdapter.baseModelName(model).orElse("BASE") + "+" + text
                    + "' (mergekit's model+lora form)");
        if (workDir != null && lora != null && !dev.smelter.io.LoraAdapter.isAdapter(lora))
            throw new ConfigException(where + " '" + text + "': " + lora + " is not a PEFT LoRA adapter (it has no "
                    + dev.smelter.io.LoraAdapter.CONFIG + ")");
        return new Ref(model, lora);
    }

    /** Whether {@code dir} holds model weights (a folder with an adapter may also hold the merged model). */
    private static boolean hasWeights(Path dir) {
        for (String f : new String[] {"model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json"})
            if (Files.isRegularFile(dir.resolve(f))) return true;
        return false;
    }

    private static Path resolve(Path baseDir, Path workDir, HubCache hubCache, String p, String where,
            List<String> warnings) throws ConfigException {
        try {
            Path.of(p);
        } catch (java.nio.file.InvalidPathException e) {
            throw new ConfigException(where + " '" + p + "' is not a valid path here: " + e.getReason());
        }
        if (workDir == null) return resolve(baseDir, p);
        boolean hub = HubCache.isHubId(p);
        int at = hub ? p.indexOf('@') : -1;
        List<Path> searched = new ArrayList<>();
        for (String variant : at < 0 ? List.of(p) : List.of(p, p.substring(0, at))) {  // org/name@revision: org/name
            List<Path> candidates = candidates(baseDir, workDir, variant);
            List<Path> found = candidates.stream().filter(Files::exists).toList();
            if (found.size() > 1)
                warnings.add(where + " '" + p + "' is " + found.get(0) + " (relative to the working directory, as "
                        + "mergekit reads it), not " + found.get(1) + " (relative to the config's folder)");
            if (!found.isEmpty()) return found.get(0);
            for (Path c : candidates) if (!searched.contains(c)) searched.add(c);
        }
        String paths = String.join(" and ", searched.stream().map(Path::toString).toList());
        if (hub) {
            // As mergekit: a path that does not exist is a Hub ID, here read from the local Hugging Face cache.
            Path snapshot;
            try {
                snapshot = hubCache.snapshot(p);
            } catch (HubCache.NotCached e) {
                throw new ConfigException(where + " '" + p + "' is not a local checkpoint (searched " + paths + "), and "
                        + e.getMessage());
            }
            // A download of some files only (config.json, the tokenizer) leaves a snapshot without weights.
            if (!hasWeights(snapshot) && !dev.smelter.io.LoraAdapter.isAdapter(snapshot))
                throw new ConfigException(where + " '" + p + "' is in the Hugging Face cache without weights: " + snapshot
                        + " has none of model.safetensors, model.safetensors.index.json, pytorch_model.bin, "
                        + "pytorch_model.bin.index.json (only some of its files were downloaded). Smelter never "
                        + "downloads; fetch the weights with `huggingface-cli download " + (at < 0 ? p : p.substring(0, at)
                        + " --revision " + p.substring(at + 1)) + "` on a machine with network access");
            return snapshot;
        }
        throw new ConfigException(where + " '" + p + "' does not exist (searched " + paths + ")");
    }

    /** Where a model path may be: itself if absolute, else in the working directory, then in the config's folder. */
    private static List<Path> candidates(Path baseDir, Path workDir, String p) {
        Path path = p.startsWith("~/") ? Path.of(System.getProperty("user.home")).resolve(p.substring(2)) : Path.of(p);
        if (path.isAbsolute()) return List.of(path.normalize());
        Path inWork = workDir.resolve(path).normalize();
        Path inConfig = baseDir == null ? inWork : baseDir.resolve(path).normalize();
        return inWork.equals(inConfig) ? List.of(inWork) : List.of(inWork, inConfig);
    }

    private static Path resolve(Path baseDir, String p) {
        Path path = Path.of(p);
        return (path.isAbsolute() || baseDir == null ? path : baseDir.resolve(path)).normalize();
    }
}
