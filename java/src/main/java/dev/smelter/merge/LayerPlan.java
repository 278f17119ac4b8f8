package dev.smelter.merge;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import dev.smelter.DType;
import dev.smelter.config.ConfigException;
import dev.smelter.config.MergeConfig;
import dev.smelter.config.ParameterValue;
import dev.smelter.config.SliceDefinition;
import dev.smelter.config.TensorNames;
import dev.smelter.io.Checkpoint;
import dev.smelter.io.CheckpointFormatException;
import dev.smelter.io.SafetensorsDType;
import dev.smelter.io.TensorInfo;
import dev.smelter.methods.MergeMethods.Method;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Set;
import java.util.function.Consumer;
import java.util.function.Function;

/**
 * The output of a {@code slices:} config ({@link SliceDefinition}), tensor by tensor, as mergekit's planner lays it
 * out ({@code MergePlanner.plan_module}): the tensors before the layers (embeddings) merged from the first slice's
 * sources, then each slice's layers in order, renumbered from 0, then the tensors after the layers (final norm, head)
 * from the last slice's sources. Output layer {@code o}, the {@code i}-th of its slice, reads layer
 * {@code start + i} of every source; the same input layer may be read for several output layers (self-stacking), and
 * is read again for each, never held. Gradients are evaluated at {@code t = i / (length - 1)} within the slice (1 for
 * a one-layer slice), the tensors outside the layers at t = 0.
 *
 * <p>Tensor names are architecture-free: a layer's tensors are those of the slice's reference source (its base
 * model, else its first source) in that layer, renamed to the output layer ({@link TensorNames#withLayer}).
 */
final class LayerPlan {
    private LayerPlan() {}

    /** One input of an output tensor: a tensor of an opened checkpoint. */
    record Input(Checkpoint checkpoint, String name) {
        TensorInfo info() {
            return checkpoint.info(name);
        }
    }

    /**
     * What one output tensor of a sliced config reads and how it is merged: {@code base} (null where the method has
     * none) and {@code models} are its inputs; {@code forConfig} gives, for the config (or a sweep's configuration of
     * it), the method over these inputs with every parameter resolved for this tensor ({@link #resolve}).
     */
    record Sources(Input base, List<Input> models, Function<MergeConfig, MergeConfig> forConfig) {
        /** The input a copied tensor comes from. */
        Input copyFrom() {
            return base != null ? base : models.get(0);
        }

        /** Every input, the base first. */
        List<Input> all() {
            List<Input> all = new ArrayList<>();
            if (base != null) all.add(base);
            all.addAll(models);
            return all;
        }
    }

    /**
     * Plans a sliced config over the opened checkpoints ({@code opened}: each input path's checkpoint). A range beyond
     * a model's layers is a configuration error (IllegalArgumentException) naming the slice, the source and the layer
     * count; a tensor a source lacks, or of another shape, is a {@link CheckpointFormatException} naming both.
     */
    static CheckpointMerger.Plan plan(MergeConfig config, Map<Path, Checkpoint> opened) throws CheckpointFormatException {
        List<SliceDefinition> slices = config.slices();
        Map<Checkpoint, int[]> layers = new LinkedHashMap<>();  // per checkpoint: [layer count]
        for (int i = 0; i < slices.size(); i++) {
            List<SliceDefinition.Source> sources = slices.get(i).sources();
            for (int j = 0; j < sources.size(); j++) {
                SliceDefinition.Source s = sources.get(j);
                Checkpoint c = opened.get(s.model());
                int n = layers.computeIfAbsent(c, LayerPlan::layerCount)[0];
                if (s.end() > n)
                    throw new IllegalArgumentException("slices[" + i + "].sources[" + j + "].layer_range " + s.range()
                            + " is beyond the layers of " + s.model() + ": it has " + n + " (0 to " + (n - 1)
                            + "; the end of a range is exclusive)");
            }
        }
        Builder b = new Builder(config);
        // Before the layers: the first slice's sources; after them: the last slice's, as many as the first slice
        // has (mergekit pairs the last slice's models with the first's count of tensors).
        SliceDefinition first = slices.get(0), last = slices.get(slices.size() - 1);
        int lastIndex = slices.size() - 1, postCount = Math.min(first.sources().size(), last.sources().size());
        SliceDefinition post = slice(config, lastIndex, postCount);
        if (postCount < last.sources().size()) {
            try {
                SliceDefinition.check(post, "slices[" + lastIndex + "]", config.method(), config.parameters());
            } catch (ConfigException e) {
                throw new IllegalArgumentException("the tensors after the layers (final norm, head) are merged from the "
                        + "first " + postCount + " source" + (postCount == 1 ? "" : "s") + " of the last slice, as many "
                        + "as the first slice has (as mergekit pairs them), and those do not make a merge: "
                        + e.getMessage() + "; give the first and the last slice the same sources");
            }
        }
        Checkpoint firstRef = opened.get(reference(first).model());
        for (String name : firstRef.tensorNames())
            if (TensorNames.layerIndex(name) < 0 && !TensorNames.isAfterLayers(name))
                b.add(name, 0, first.sources().size(), sameName(first, name), opened, -1, 1);
        int out = 0;
        for (int si = 0; si < slices.size(); si++) {
            SliceDefinition s = slices.get(si);
            SliceDefinition.Source ref = reference(s);
            Checkpoint refCheckpoint = opened.get(ref.model());
            for (int i = 0; i < s.length(); i++, out++) {
                List<String> names = b.layer(refCheckpoint, ref.start() + i);
                for (String name : names) {
                    List<String> in = new ArrayList<>();
                    for (SliceDefinition.Source x : s.sources()) in.add(TensorNames.withLayer(name, x.start() + i));
                    b.add(TensorNames.withLayer(name, out), si, s.sources().size(), in, opened, i, s.length());
                }
                b.leftOut(s, names, i, opened);
            }
        }
        Checkpoint lastRef = opened.get(reference(post).model());
        for (String name : lastRef.tensorNames())
            if (TensorNames.layerIndex(name) < 0 && TensorNames.isAfterLayers(name))
                b.add(name, lastIndex, postCount, sameName(post, name), opened, -1, 1);
        CheckpointMerger.Plan plan = b.build();
        oneVocabularySize(plan, firstRef, lastRef);
        return plan;
    }

    /**
     * The embeddings come from the first slice and the output head from the last; models of different vocabularies
     * there would give a model whose embeddings and head disagree in size (mergekit writes it; transformers cannot
     * load it), so it is refused before anything is written.
     */
    private static void oneVocabularySize(CheckpointMerger.Plan plan, Checkpoint firstRef, Checkpoint lastRef)
            throws CheckpointFormatException {
        CheckpointMerger.TensorPlan before = null, after = null;
        for (CheckpointMerger.TensorPlan t : plan.tensors()) {
            if (TensorNames.layerIndex(t.name()) >= 0 || !TensorNames.isVocabMatrix(t.name()) || t.info().shape().length != 2)
                continue;
            if (TensorNames.isAfterLayers(t.name())) after = after == null ? t : after;
            else before = before == null ? t : before;
        }
        if (before != null && after != null && before.info().shape()[0] != after.info().shape()[0])
            throw new CheckpointFormatException("the embeddings come from the first slice (" + firstRef.directory() + ": "
                    + before.name() + " has " + before.info().shape()[0] + " rows) and the output head from the last ("
                    + lastRef.directory() + ": " + after.name() + " has " + after.info().shape()[0] + " rows): the merged "
                    + "model would not load (one vocabulary, one size); take the first and the last slice from models "
                    + "of the same vocabulary");
    }

    /** Slice {@code index} of {@code config} with its first {@code sources} sources. */
    static SliceDefinition slice(MergeConfig config, int index, int sources) {
        SliceDefinition s = config.slices().get(index);
        return sources == s.sources().size() ? s
                : new SliceDefinition(s.sources().subList(0, sources), s.baseModel(), s.parameters(), false);
    }

    /**
     * A {@code models:} config whose entries carry {@code layer_range}: mergekit reads every layer of such a model
     * (it ignores the key there), so only a range over all layers is accepted; any other is refused rather than
     * silently ignored.
     */
    static void checkModelRanges(MergeConfig config, Map<Path, Checkpoint> opened) {
        for (SliceDefinition.Source s : config.slices().get(0).sources()) {
            int n = layerCount(opened.get(s.model()))[0];
            if (s.start() != 0 || s.end() != n)
                throw new IllegalArgumentException("the layer_range " + s.range() + " of " + s.model() + " under "
                        + "models does not cover its " + n + " layers [0, " + n + "]: mergekit merges every layer of a "
                        + "models entry (it ignores layer_range there); use slices to merge some of the layers");
        }
    }

    /** The source whose tensor names the slice's output takes: its base model where that is a source, else the first. */
    static SliceDefinition.Source reference(SliceDefinition s) {
        for (SliceDefinition.Source x : s.sources()) if (x.model().equals(s.baseModel())) return x;
        return s.sources().get(0);
    }

    private static List<String> sameName(SliceDefinition s, String name) {
        return s.sources().stream().map(x -> name).toList();
    }

    /** [1 + the largest layer index], after checking the layers form one stack (one name before the index). */
    private static int[] layerCount(Checkpoint c) {
        int n = 0;
        String stack = null;
        for (String name : c.tensorNames()) {
            String st = TensorNames.layerStack(name);
            if (st == null) continue;
            if (stack != null && !stack.equals(st))
                throw new IllegalArgumentException(c.directory() + " has two stacks of layers ('" + stack + "N' and '"
                        + st + "N', e.g. an encoder and a decoder or a vision tower); slices take models with one");
            stack = st;
            n = Math.max(n, TensorNames.layerIndex(name) + 1);
        }
        return new int[] {n};
    }

    /** Each layer's tensor names, in the checkpoint's order. */
    private static Map<Integer, List<String>> byLayer(Checkpoint c) {
        Map<Integer, List<String>> byLayer = new java.util.HashMap<>();
        for (String name : c.tensorNames()) {
            int l = TensorNames.layerIndex(name);
            if (l >= 0) byLayer.computeIfAbsent(l, x -> new ArrayList<>()).add(name);
        }
        return byLayer;
    }

    /** For each output layer, the layer of the slice's first source it comes from (config.json's per-layer lists). */
    static int[] sourceLayers(MergeConfig config) {
        List<Integer> out = new ArrayList<>();
        for (SliceDefinition s : config.slices())
            for (int i = 0; i < s.length(); i++) out.add(s.sources().get(0).start() + i);
        return out.stream().mapToInt(Integer::intValue).toArray();
    }

    /** config.json keys of the layer count (mergekit's architectures name one of these). */
    static final List<String> LAYER_COUNT_KEYS = List.of("num_hidden_layers", "n_layer", "num_layers", "n_layers");

    /**
     * The output's config.json for a sliced config: the layer count keys ({@link #LAYER_COUNT_KEYS}, at the top level,
     * else under {@code text_config}) set to the output's layer count, as mergekit sets its architecture's key; and
     * per-layer lists ({@code layer_types}) taken at each output layer's source layer, so that they keep one entry per
     * layer. {@code warnings} hears when no key was found.
     */
    static Consumer<ObjectNode> configEdit(MergeConfig config, Consumer<String> warnings) {
        int[] from = sourceLayers(config);
        return root -> {
            ObjectNode target = root;
            if (LAYER_COUNT_KEYS.stream().noneMatch(root::has) && root.get("text_config") instanceof ObjectNode t
                    && LAYER_COUNT_KEYS.stream().anyMatch(t::has))
                target = t;
            boolean set = false;
            Integer before = null;
            for (String k : LAYER_COUNT_KEYS)
                if (target.has(k) && target.get(k).canConvertToInt()) {
                    before = target.get(k).intValue();
                    target.put(k, from.length);
                    set = true;
                }
            if (!set) {
                warnings.accept("config.json has no layer count (" + String.join(", ", LAYER_COUNT_KEYS)
                        + "): set it to " + from.length + " by hand");
                return;
            }
            for (String k : List.of("layer_types")) {
                JsonNode v = target.get(k);
                if (!(v instanceof ArrayNode a)) continue;
                if (before == null || a.size() != before) {
                    warnings.accept("config.json's " + k + " has " + a.size() + " entries for " + before
                            + " layers: left as it is");
                    continue;
                }
                ArrayNode remapped = a.arrayNode();
                for (int layer : from) remapped.add(layer < a.size() ? a.get(layer) : a.get(a.size() - 1));
                target.set(k, remapped);
            }
        };
    }

    /** Collects the tensor plans and the sizes the merger needs. */
    private static final class Builder {
        final MergeConfig config;
        final List<CheckpointMerger.TensorPlan> tensors = new ArrayList<>();
        final List<String> warnings = new ArrayList<>();
        final Set<String> outNames = new HashSet<>();
        /** Each checkpoint's tensor names by layer, found once: a deep stack asks for every layer. */
        final Map<Checkpoint, Map<Integer, List<String>>> layers = new java.util.IdentityHashMap<>();
        long read, written, largestOut, largestIn, largestConvert, slotBytes;
        int slots = 1;

        Builder(MergeConfig config) {
            this.config = config;
        }

        /** The tensor names of one layer of {@code c}, in its order. */
        List<String> layer(Checkpoint c, int layer) {
            List<String> names = layers.computeIfAbsent(c, LayerPlan::byLayer).getOrDefault(layer, List.of());
            if (names.isEmpty())
                throw new IllegalArgumentException(c.directory() + " has no tensors in layer " + layer);
            return names;
        }

        /** An embedding or output head whose shapes differ in their rows only: models of other vocabularies. */
        private static boolean vocabularySizesDiffer(String name, long[] a, long[] b) {
            return TensorNames.isVocabMatrix(name) && a.length == b.length && a.length >= 1
                    && Arrays.equals(Arrays.copyOfRange(a, 1, a.length), Arrays.copyOfRange(b, 1, b.length));
        }

        /**
         * Plans output tensor {@code outName} of slice {@code sliceIndex} (its first {@code sourceCount} sources) from
         * input {@code in.get(j)} of each source j, at place {@code position} of {@code length} in the slice (-1:
         * outside the layers).
         */
        void add(String outName, int sliceIndex, int sourceCount, List<String> in, Map<Path, Checkpoint> opened,
                int position, int length) throws CheckpointFormatException {
            SliceDefinition s = slice(config, sliceIndex, sourceCount);
            if (!outNames.add(outName)) throw new IllegalStateException("output tensor " + outName + " planned twice");
            boolean copyOfOne = SliceDefinition.copiesItsSource(s, config.method());
            Method method = copyOfOne ? Method.PASSTHROUGH : config.method();
            boolean useBase = SliceDefinition.usesBase(method) && s.hasBaseSource();
            Input base = null;
            List<Input> models = new ArrayList<>();
            List<String> modelNames = new ArrayList<>();
            List<Integer> modelSources = new ArrayList<>();
            for (int j = 0; j < s.sources().size(); j++) {
                SliceDefinition.Source x = s.sources().get(j);
                Checkpoint c = opened.get(x.model());
                if (!c.contains(in.get(j)))
                    throw new CheckpointFormatException(c.directory() + ": tensor " + in.get(j) + " is missing (output "
                            + outName + " reads it" + (position >= 0 ? ", layer " + (x.start() + position) + " of "
                                    + x.model() + " " + x.range() : "") + ")");
                Input input = new Input(c, in.get(j));
                if (useBase && x.model().equals(s.baseModel())) base = input;
                else {
                    models.add(input);
                    modelNames.add(in.get(j));
                    modelSources.add(j);
                }
            }
            Input ref = base != null ? base : models.get(0);
            TensorInfo info = ref.info();
            List<Input> all = new ArrayList<>();
            if (base != null) all.add(base);
            all.addAll(models);
            var mergeDType = info.dtype().toMergeDType();
            boolean mixed = false;
            for (Input x : all) {
                TensorInfo xi = x.info();
                if (!Arrays.equals(xi.shape(), info.shape()) && vocabularySizesDiffer(x.name(), xi.shape(), info.shape()))
                    throw new CheckpointFormatException(x.checkpoint().directory() + ": " + x.name() + " has "
                            + xi.shape()[0] + " rows, " + ref.checkpoint().directory() + "'s has " + info.shape()[0]
                            + " (output " + outName + " merges them): with slices every model needs the same vocabulary "
                            + "(the base's tokenizer is copied; building one across sliced models is not supported yet). "
                            + "Where each slice spans every layer, write the merge as a models: config (the same merge), "
                            + "whose tokenizer_source: base (or union) aligns the rows by token as mergekit does");
                if (!Arrays.equals(xi.shape(), info.shape()))
                    throw new CheckpointFormatException(x.checkpoint().directory() + ": tensor " + x.name() + " has shape "
                            + Arrays.toString(xi.shape()) + ", " + ref.checkpoint().directory() + "'s " + ref.name()
                            + " has " + Arrays.toString(info.shape()) + " (output " + outName + " merges them)");
                if (xi.dtype() != info.dtype()) {
                    if (xi.dtype().toMergeDType().isEmpty() || mergeDType.isEmpty())
                        throw new CheckpointFormatException(x.checkpoint().directory() + ": tensor " + x.name() + " is "
                                + xi.dtype() + ", " + ref.checkpoint().directory() + " has " + info.dtype());
                    mixed = true;
                }
            }
            boolean hasBase = base != null;
            Function<MergeConfig, MergeConfig> forConfig = copyOfOne ? cfg -> unchanged(cfg, s.sources().get(0).model())
                    : cfg -> resolve(cfg, slice(cfg, sliceIndex, sourceCount), hasBase, modelSources, modelNames,
                            outName, position, length);
            MergeConfig resolved = forConfig.apply(config);
            Sources sources = new Sources(base, List.copyOf(models), forConfig);
            if (mergeDType.isEmpty()) {  // not a float Smelter merges: copied where every input holds the same bytes
                for (Input x : all)
                    if (x != ref && x.checkpoint().data(x.name()).mismatch(ref.checkpoint().data(ref.name())) != -1)
                        throw new CheckpointFormatException(x.checkpoint().directory() + ": tensor " + x.name() + " is "
                                + info.dtype() + " and differs from " + ref.checkpoint().directory() + "'s " + ref.name()
                                + "; Smelter merges F32, F16 and BF16 tensors and copies others only when every input "
                                + "has the same bytes");
                copy(outName, info, sources, "not a float tensor: copied from " + ref.checkpoint().directory().getFileName());
                return;
            }
            DType compute = config.computeDType() != null ? config.computeDType() : mixed ? DType.F32 : mergeDType.get();
            DType out = config.outDType() != null ? config.outDType() : compute;
            // A byte copy where the scale is 1; not in a sweep (config.grid()), whose configurations may scale it.
            if (method == Method.PASSTHROUGH && (config.grid() == null || copyOfOne) && !mixed && compute == mergeDType.get() && out == mergeDType.get()
                    && TensorSpecs.spec(resolved, outName, position, length).weights()[0] == 1f) {
                copy(outName, info, sources, from(all, position));
                return;
            }
            boolean convert = mixed || (compute != mergeDType.get() && compute != DType.F32);
            String note = from(all, position);
            if (convert) {
                note = (note.isEmpty() ? "" : note + "; ") + (mixed ? "inputs of different dtypes: " : "") + "merged from "
                        + compute.name().toLowerCase(Locale.ROOT) + " copies";
                SafetensorsDType c = SafetensorsDType.of(compute);
                long converted = all.stream().filter(x -> x.info().dtype() != c).count();
                largestConvert = Math.max(largestConvert, converted * info.elementCount() * compute.byteSize());
            }
            TensorSpecs.checkTensor(resolved, outName, position, length);
            var tp = new CheckpointMerger.TensorPlan(outName, info, CheckpointMerger.Action.MERGE, out,
                    info.elementCount(), note, compute, convert, sources);
            tensors.add(tp);
            for (Input x : all) {
                read += x.info().byteSize() * (method.composed() ? 2 : 1);  // composed: statistics, then merge
                slotBytes = Math.max(slotBytes, x.info().byteSize());
            }
            slots = Math.max(slots, all.size());
            written += tp.outBytes();
            largestOut = Math.max(largestOut, tp.outBytes());
            largestIn = Math.max(largestIn, convert ? info.elementCount() * compute.byteSize() : info.byteSize());
        }

        private void copy(String outName, TensorInfo info, Sources sources, String note) {
            var tp = new CheckpointMerger.TensorPlan(outName, info, CheckpointMerger.Action.COPY, null,
                    info.elementCount(), note, null, false, sources);
            tensors.add(tp);
            read += info.byteSize();
            written += tp.outBytes();
            largestOut = Math.max(largestOut, tp.outBytes());
        }

        /** "from a layer 3, b layer 5": where a layer's inputs come from (nothing for the tensors outside the layers). */
        private static String from(List<Input> inputs, int position) {
            if (position < 0) return "";
            return "from " + String.join(", ", inputs.stream().map(x -> x.checkpoint().directory().getFileName()
                    + " layer " + TensorNames.layerIndex(x.name())).toList());
        }

        /** A warning for the tensors some source has in its layer that the slice's reference lacks (left out). */
        void leftOut(SliceDefinition s, List<String> refNames, int i, Map<Path, Checkpoint> opened) {
            SliceDefinition.Source ref = reference(s);
            Set<String> known = new HashSet<>(refNames);
            for (SliceDefinition.Source x : s.sources()) {
                if (x == ref) continue;
                List<String> extra = layers.computeIfAbsent(opened.get(x.model()), LayerPlan::byLayer)
                        .getOrDefault(x.start() + i, List.of()).stream()
                        .filter(n -> !known.contains(TensorNames.withLayer(n, ref.start() + i))).toList();
                if (!extra.isEmpty())
                    warnings.add(x.model() + " has " + extra.size() + " tensor" + (extra.size() == 1 ? "" : "s")
                            + " in layer " + (x.start() + i) + " that " + ref.model() + " lacks in layer "
                            + (ref.start() + i) + ", left out of the merge: " + String.join(", ",
                                    extra.subList(0, Math.min(5, extra.size()))) + (extra.size() > 5 ? ", ..." : ""));
            }
        }

        CheckpointMerger.Plan build() {
            return new CheckpointMerger.Plan(List.copyOf(tensors), read, written, largestOut, largestIn, slots - 1,
                    config.trimScope(), List.copyOf(warnings), largestConvert, slots, slotBytes);
        }
    }

    /** The config that leaves one input as it is (a passthrough with scale 1), cast to the config's dtypes. */
    static MergeConfig unchanged(MergeConfig config, Path model) {
        return new MergeConfig(Method.PASSTHROUGH, null, List.of(new MergeConfig.ModelEntry(model, new LinkedHashMap<>())),
                Map.of(), config.outDType(), config.trimScope(), config.seed(), List.of(), null, config.computeDType());
    }

    /**
     * The config that merges one tensor: the method over the slice's base (when it takes one) and the other sources
     * ({@code modelSources}, read as {@code modelNames}), with every parameter resolved to a constant as mergekit's
     * ConfigReader does: per model the first source of that model that sets it, the slice, the config; a global
     * parameter from the slice, the config; filters matched against the output name for global parameters and each
     * model's input name for its own (mergekit's {@code for_tensor}), gradients at the tensor's place in the slice.
     */
    static MergeConfig resolve(MergeConfig config, SliceDefinition s, boolean hasBase, List<Integer> modelSources,
            List<String> modelNames, String outName, int position, int length) {
        Method m = config.method();
        Map<String, ParameterValue> global = new LinkedHashMap<>();
        for (String p : m.globalParameters()) {
            Double v = lookup(s.globalParameterChain(p, config.parameters()), outName, position, length);
            if (v != null) global.put(p, new ParameterValue.Constant(v));
        }
        List<MergeConfig.ModelEntry> models = new ArrayList<>();
        for (int k = 0; k < modelSources.size(); k++) {
            int j = modelSources.get(k);
            Map<String, ParameterValue> params = new LinkedHashMap<>();
            for (String p : m.tensorParameters()) {
                Double v = lookup(s.modelParameterChain(j, p, config.parameters()), modelNames.get(k), position, length);
                if (v != null) params.put(p, new ParameterValue.Constant(v));
            }
            models.add(new MergeConfig.ModelEntry(s.sources().get(j).model(), params));
        }
        return new MergeConfig(m, hasBase ? s.baseModel() : null, List.copyOf(models), global, config.outDType(),
                config.trimScope(), config.seed(), List.of(), null, config.computeDType());
    }

    /** The first value the chain's levels give for the tensor (null: none, the method's default applies). */
    private static Double lookup(List<ParameterValue> chain, String tensorName, int position, int length) {
        for (ParameterValue v : chain) {
            Double d = v.lookup(tensorName, position, length);
            if (d != null) return d;
        }
        return null;
    }
}
