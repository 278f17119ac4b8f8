package dev.smelter.merge;

import dev.smelter.Context;
import dev.smelter.DType;
import dev.smelter.Device;
import dev.smelter.MergeSpec;
import dev.smelter.PairStats;
import dev.smelter.Smelter;
import dev.smelter.SmelterException;
import dev.smelter.Tensor;
import dev.smelter.TopK;
import dev.smelter.config.MergeConfig;
import dev.smelter.methods.MergeMethods;
import dev.smelter.methods.NanOutput;
import dev.smelter.config.TensorNames;
import dev.smelter.io.Checkpoint;
import dev.smelter.io.CheckpointFormatException;
import dev.smelter.io.CheckpointWriter;
import dev.smelter.io.ModelConfig;
import dev.smelter.io.OutputGuard;
import dev.smelter.io.PartitionStaging;
import dev.smelter.io.PartitionWriter;
import dev.smelter.io.SafetensorsDType;
import dev.smelter.io.ReadAhead;
import dev.smelter.io.ShardLayout;
import dev.smelter.io.TensorSink;
import dev.smelter.io.TensorInfo;
import dev.smelter.io.WriteBehind;
import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashSet;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.Future;
import java.util.function.Consumer;

/**
 * Merges whole checkpoints as a mergekit config describes: plans every tensor, then streams them
 * one at a time, writing a sharded safetensors checkpoint that appears under the output path only once it
 * is complete. Three things overlap: a read-ahead thread faults in the memory-mapped inputs of the next
 * tensors, the calling thread merges tensor i, and a write-behind thread writes tensor i-1 (and syncs
 * every 256 MiB, so writeback does not pile up for the end).
 *
 * <p>Each tensor's inputs are read into {@link InputBuffers} with positional reads (native code never reads a
 * mapping another process could truncate), and every input file is checked unchanged before the output is
 * committed. Host memory is bounded by those input buffers and two output buffers of the largest tensor
 * (page-locked on CUDA), plus, on CUDA, device staging buffers for the inputs and output of that tensor. The page cache filled by reading ahead is bounded by {@link #readAheadBytes}.
 */
public final class CheckpointMerger implements AutoCloseable {
    /** Side files copied from the base model (or the first model) into the output. */
    static final List<String> SIDE_FILES = List.of("config.json", "generation_config.json", "tokenizer.json",
            "tokenizer_config.json", "tokenizer.model", "special_tokens_map.json", "vocab.json", "merges.txt",
            "added_tokens.json", "chat_template.jinja");

    /** The tokenizer files among {@link #SIDE_FILES}: left out with {@code copyTokenizer} false. */
    static final Set<String> TOKENIZER_FILES = Set.of("tokenizer.json", "tokenizer_config.json", "tokenizer.model",
            "special_tokens_map.json", "vocab.json", "merges.txt", "added_tokens.json", "chat_template.jinja");

    /** What a merged tensor with NaN or infinite values does: nothing, a warning, or a failed merge. */
    public enum NonFinite { IGNORE, WARN, FAIL }

    /**
     * @param memoryLimit bytes one merge call works on at once (0: the default, see {@link Context#setMemoryLimit})
     * @param copyTokenizer copy the tokenizer files ({@link #TOKENIZER_FILES}) of the base (or the first model)
     * @param configText the config as given: written as {@code mergekit_config.yml} with a model card {@code README.md}
     *     ({@link ModelCard}), as mergekit does; null writes neither
     */
    public record Options(Device device, Path output, long maxShardBytes, boolean overwrite, boolean allowVocabMismatch,
            NonFinite nonFinite, long memoryLimit, boolean copyTokenizer, String configText) {
        public Options(Device device, Path output, long maxShardBytes, boolean overwrite, boolean allowVocabMismatch,
                NonFinite nonFinite, long memoryLimit) {
            this(device, output, maxShardBytes, overwrite, allowVocabMismatch, nonFinite, memoryLimit, true, null);
        }

        public Options(Device device, Path output, long maxShardBytes, boolean overwrite, boolean allowVocabMismatch,
                NonFinite nonFinite) {
            this(device, output, maxShardBytes, overwrite, allowVocabMismatch, nonFinite, 0);
        }

        public Options(Device device, Path output, long maxShardBytes, boolean overwrite, boolean allowVocabMismatch) {
            this(device, output, maxShardBytes, overwrite, allowVocabMismatch, NonFinite.WARN);
        }
    }

    /** What happens to one output tensor. */
    public enum Action { MERGE, COPY }

    /**
     * @param computeDType mergekit's compute dtype for this tensor: the config's {@code dtype}, else f32 when the
     *     models and base hold it in different float dtypes, else theirs; deltas are ranked in it
     * @param convertedInputs the inputs are merged from copies rounded to {@code computeDType} (their dtypes differ
     *     from it, and it is not simply f32 over one 16-bit dtype, which the merge reads exactly as it is)
     * @param sources for a config of slices, which tensor of which checkpoint each input is and the method's
     *     parameters for this tensor ({@link LayerPlan}); null otherwise (the tensor of this name in the base and
     *     models)
     */
    public record TensorPlan(String name, TensorInfo info, Action action, DType outDType, long mergedElements,
            String note, DType computeDType, boolean convertedInputs, LayerPlan.Sources sources) {
        public TensorPlan(String name, TensorInfo info, Action action, DType outDType, long mergedElements,
                String note, DType computeDType, boolean convertedInputs) {
            this(name, info, action, outDType, mergedElements, note, computeDType, convertedInputs, null);
        }

        public long outBytes() {
            return action == Action.COPY ? info.byteSize() : info.elementCount() * outDType.byteSize();
        }
    }

    /**
     * @param warnings what the plan leaves out that a user should hear about (tensors only some models have)
     * @param inputSlots inputs read per tensor (base, models, Fishers), each into a buffer of {@code inputSlotBytes}
     */
    public record Plan(List<TensorPlan> tensors, long bytesRead, long bytesWritten, long largestOutputBytes,
            long largestInputBytes, int modelCount, MergeConfig.TrimScope trimScope, List<String> warnings,
            long largestConvertBytes, int inputSlots, long inputSlotBytes) {
        /**
         * Host memory Smelter allocates itself: the inputs of the largest tensor (read into buffers, see
         * {@link InputBuffers}), two output buffers of the largest tensor (one merged into while the other is
         * written), and copies of inputs converted to the compute dtype. The read-ahead fills the page cache by at
         * most {@link #readAheadBytes} beyond that.
         */
        public long peakHostBytes() {
            return peakHostBytes(inputBanks());
        }

        /** {@link #peakHostBytes()} with {@code banks} sets of input buffers (the sweep reads into one). */
        public long peakHostBytes(int banks) {
            return banks * (long) inputSlots * inputSlotBytes + 2 * largestOutputBytes + largestConvertBytes;
        }

        /** Input buffer sets: two (one read ahead while the other merges) unless one set is above 2 GiB. */
        public int inputBanks() {
            int wanted = Integer.getInteger("smelter.inputBanks", 2);
            return (long) inputSlots * inputSlotBytes <= (2L << 30) ? Math.max(1, Math.min(2, wanted)) : 1;
        }

        /** Device memory on CUDA: staging for the inputs and the output of the largest tensor. */
        public long peakDeviceBytes() {
            return largestInputBytes * (modelCount + 1) + largestOutputBytes;
        }
    }

    /**
     * @param peakAnonymousBytes the largest anonymous resident memory of the process seen after each tensor
     *     (Linux {@code RssAnon}: the JVM heap and Smelter's buffers, not the memory-mapped inputs); -1 if unknown
     * @param warnings non-finite values found, one line per tensor
     * @param notes what a partition found or did beyond its shards (shards kept from a killed run, the assembly)
     */
    public record Summary(Plan plan, double seconds, long bytesRead, long bytesWritten, long peakAnonymousBytes,
            List<String> warnings, List<String> notes) {
        public Summary(Plan plan, double seconds, long bytesRead, long bytesWritten, long peakAnonymousBytes,
                List<String> warnings) {
            this(plan, seconds, bytesRead, bytesWritten, peakAnonymousBytes, warnings, List.of());
        }

        public double gigabytesPerSecond() {
            return (bytesRead + bytesWritten) / seconds / 1e9;
        }
    }

    private final MergeConfig config;
    private final Options options;
    private final Checkpoint base;
    private final List<Checkpoint> models = new ArrayList<>();
    private final List<Checkpoint> fishers = new ArrayList<>();  // merge_method fisher: one per model
    private final int layerCount;
    private final Vocabulary vocabulary;  // the output vocabulary of a config with a tokenizer source, else null
    private final List<Checkpoint> vocabularyInputs = new ArrayList<>();  // by Vocabulary input
    private int[] vocabularyInputOfSlot;  // slot 0 the base, 1 + i models[i]: its Vocabulary input
    private final TokenizerOutput tokenizerFiles;  // the tokenizer files the config asks for, or null
    private final Set<String> vocabularyTensors = new HashSet<>();  // embeddings gathered into the output vocabulary

    public CheckpointMerger(MergeConfig config, Options options) throws IOException {
        this.config = config;
        this.options = options;
        OutputGuard.check(options.output(), inputs(config));
        List<Checkpoint> opened = new ArrayList<>();
        try {
            Checkpoint b = config.baseModel() == null ? null : Checkpoint.open(config.baseModel(), config.baseLora());
            if (b != null) opened.add(b);
            for (MergeConfig.ModelEntry m : config.models()) {
                Checkpoint c = Checkpoint.open(m.path(), m.lora());
                opened.add(c);
                models.add(c);
                if (m.fisher() != null) {
                    Checkpoint f = Checkpoint.open(m.fisher());
                    opened.add(f);
                    fishers.add(f);
                }
            }
            base = b;
        } catch (IOException | RuntimeException e) {
            for (Checkpoint c : opened) c.close();
            throw e;
        }
        tieOutputEmbeddings();
        int layers = 0;
        for (String name : reference().tensorNames()) layers = Math.max(layers, TensorNames.layerIndex(name) + 1);
        layerCount = layers;
        try {
            vocabulary = buildVocabulary();
            tokenizerFiles = tokenizerOutput(options.copyTokenizer());  // read now: a bad file fails before the merge
        } catch (IOException | RuntimeException e) {
            close();
            throw e;
        }
    }

    /** Output heads and the input embeddings a model with tied word embeddings keeps them in (mergekit's tied_names). */
    private static final List<String[]> TIED_HEADS = List.of(
            new String[] {"lm_head.weight", "model.embed_tokens.weight"},
            new String[] {"lm_head.weight", "transformer.wte.weight"},
            new String[] {"lm_head.weight", "model.decoder.embed_tokens.weight"},
            new String[] {"embed_out.weight", "gpt_neox.embed_in.weight"});

    private final List<String> tiedNotes = new ArrayList<>();

    /**
     * A model with tied word embeddings stores no output head: where the reference has one, such a model's head is
     * read from its input embedding, as mergekit's tied names do (a Llama 3.2 1B fine-tune merged into an untied
     * base). A model whose config.json says {@code tie_word_embeddings: false} is not tied, and keeps the missing
     * tensor an error.
     */
    private void tieOutputEmbeddings() {
        Checkpoint ref = reference();
        List<Checkpoint> inputs = new ArrayList<>(models);
        if (base != null) inputs.add(base);
        for (String[] pair : TIED_HEADS) {
            if (!ref.contains(pair[0])) continue;
            for (Checkpoint c : inputs) {
                if (c == ref || c.contains(pair[0]) || !c.contains(pair[1]) || !tied(c)) continue;
                c.alias(pair[0], pair[1]);
                tiedNotes.add(c.directory() + " ties its output head to its input embedding: " + pair[0] + " is read from "
                        + pair[1]);
            }
        }
    }

    /** Whether a model's config.json leaves {@code tie_word_embeddings} true (transformers' default). */
    private static boolean tied(Checkpoint c) {
        com.fasterxml.jackson.databind.JsonNode tie = ModelConfig.value(c.directory(), "tie_word_embeddings", v -> true);
        return tie == null || tie.asBoolean(true);
    }

    /** The output vocabulary of a config with tokenizer_source or a tokenizer section, and the checkpoint of each of its inputs. */
    private Vocabulary buildVocabulary() throws IOException {
        if (config.tokenizer() == null || !config.tokenizer().buildsVocabulary()) return null;
        if (!fishers.isEmpty())
            throw new IllegalArgumentException("merge_method fisher with a tokenizer source is not supported: the "
                    + "Fishers' embedding rows would need the same alignment to the output vocabulary");
        List<Path> paths = config.models().stream().map(MergeConfig.ModelEntry::path).toList();
        Vocabulary v = Vocabulary.build(config.tokenizer(), config.baseModel(), paths);
        for (Path p : v.inputs())
            vocabularyInputs.add(p.equals(config.baseModel()) ? base : models.get(paths.indexOf(p)));
        vocabularyInputOfSlot = new int[1 + paths.size()];
        vocabularyInputOfSlot[0] = config.baseModel() == null ? -1 : v.inputs().indexOf(config.baseModel());
        for (int i = 0; i < paths.size(); i++) vocabularyInputOfSlot[1 + i] = v.inputs().indexOf(paths.get(i));
        return v;
    }

    /** The output vocabulary, or null where the config keeps the base's. */
    public Vocabulary vocabulary() {
        return vocabulary;
    }

    /** The tokenizer files the config asks for, or null (the base's are copied, see {@link SideFiles}). */
    TokenizerOutput tokenizerOutput(boolean copyTokenizer) throws IOException {
        List<Path> referenced = new ArrayList<>();
        if (config.baseModel() != null) referenced.add(config.baseModel());
        for (MergeConfig.ModelEntry m : config.models()) if (!referenced.contains(m.path())) referenced.add(m.path());
        return TokenizerOutput.of(config.tokenizer(), vocabulary, reference().directory(), referenced, copyTokenizer);
    }

    /**
     * Input {@code slot} (0 the base, then the models) of tensor {@code t} as the merge reads it, into {@code bank}: its
     * first {@code t.mergedElements()}, or for an embedding under an output vocabulary its rows in the output order.
     */
    Tensor readInput(InputBuffers in, int bank, int slot, Checkpoint from, TensorPlan t, long elements) throws IOException {
        if (!vocabularyTensors.contains(t.name())) return in.read(bank, slot, from, t.name(), elements);
        DType dtype = from.info(t.name()).dtype().toMergeDType().orElseThrow();
        long width = t.info().shape()[1];
        MemorySegment dst = in.slot(bank, slot, elements * dtype.byteSize());
        vocabulary.gather(vocabularyInputOfSlot[slot], t.name(), vocabularyInputs, width, dtype, dst);
        return new Tensor(dst, elements, dtype, Tensor.Memory.HOST);
    }

    /** {@link #readInput} into bank 0, I/O errors as UncheckedIOException (for callbacks). */
    Tensor readInputUnchecked(InputBuffers in, int slot, Checkpoint from, TensorPlan t) {
        try {
            return readInput(in, 0, slot, from, t, t.mergedElements());
        } catch (IOException e) {
            throw new java.io.UncheckedIOException(e);
        }
    }

    /** An embedding tensor under the output vocabulary: every input has it, and its shape is the vocabulary's rows. */
    private TensorInfo vocabularyTensor(String name, TensorInfo info) throws CheckpointFormatException {
        List<long[]> shapes = new ArrayList<>();
        List<Path> files = new ArrayList<>();
        for (Checkpoint c : vocabularyInputs) {
            if (!c.contains(name))
                throw new CheckpointFormatException(c.directory() + ": tensor " + name + " is missing (present in "
                        + reference().directory() + ")");
            shapes.add(c.info(name).shape());
            files.add(c.directory());
        }
        vocabulary.checkTensor(name, shapes, files);
        long[] shape = {vocabulary.rows(), info.shape()[1]};
        vocabularyTensors.add(name);
        return new TensorInfo(name, info.dtype(), shape, info.dataBegin(),
                info.dataBegin() + info.dtype().sizeInBytes(shape[0] * shape[1]), info.file());
    }

    /** Every checkpoint the config reads, named as the config names it ("base_model", "models[1]", ...). */
    public static Map<String, Path> inputs(MergeConfig config) {
        Map<String, Path> inputs = new java.util.LinkedHashMap<>();
        if (config.baseModel() != null) inputs.put("base_model", config.baseModel());
        if (config.baseLora() != null) inputs.put("base_model's LoRA adapter", config.baseLora());
        for (int i = 0; i < config.models().size(); i++) {
            inputs.put("models[" + i + "]", config.models().get(i).path());
            if (config.models().get(i).lora() != null)
                inputs.put("models[" + i + "]'s LoRA adapter", config.models().get(i).lora());
            if (config.models().get(i).fisher() != null) inputs.put("models[" + i + "].fisher", config.models().get(i).fisher());
        }
        return inputs;
    }

    /** The checkpoint that defines the output's tensors: the base, or the first model for LINEAR. */
    Checkpoint reference() {
        return base != null ? base : models.get(0);
    }

    /** The base model, or null. */
    Checkpoint baseCheckpoint() {
        return base;
    }

    List<Checkpoint> modelCheckpoints() {
        return models;
    }

    /** merge_method fisher: each model's Fisher checkpoint, in model order (empty otherwise). */
    List<Checkpoint> fisherCheckpoints() {
        return fishers;
    }

    /** Whether some merged tensor of the plan is normalized by the Fisher norms under {@code cfg}. */
    boolean normalizesFishers(MergeConfig cfg, Plan plan) {
        return !fishers.isEmpty() && plan.tensors().stream().anyMatch(t -> t.action() == Action.MERGE
                && TensorSpecs.normalizesFishers(cfg, t.name(), TensorNames.layerIndex(t.name()), layerCount));
    }

    /** The Fisher merge of one tensor: the config's weights, divided by the models' Fisher norms where it normalizes. */
    MergeSpec fisherSpec(MergeConfig cfg, MergeSpec spec, String name, double[] norms) {
        float[] c = spec.weights().clone();
        if (TensorSpecs.normalizesFishers(cfg, name, TensorNames.layerIndex(name), layerCount))
            for (int i = 0; i < c.length; i++) c[i] = (float) (c[i] / norms[i]);
        return spec.toBuilder().weights(c).build();
    }

    /** Each input path's checkpoint (base and models). */
    private Map<Path, Checkpoint> opened() {
        Map<Path, Checkpoint> opened = new java.util.HashMap<>();
        if (base != null) opened.put(config.baseModel(), base);
        for (int i = 0; i < models.size(); i++) opened.put(config.models().get(i).path(), models.get(i));
        return opened;
    }

    /** The bytes a copied tensor is written from: the reference's tensor, or for slices its source. */
    MemorySegment copySource(TensorPlan t) {
        if (t.sources() == null) return reference().data(t.name());
        LayerPlan.Input from = t.sources().copyFrom();
        return from.checkpoint().data(from.name());
    }

    /**
     * How tensor {@code t} is merged under {@code cfg} (this merger's config, or a sweep's configuration of it); for
     * slices from the tensor's sources, its parameters resolved for its slice and place.
     */
    MergeMethods.TensorMerge tensorMerge(MergeConfig cfg, TensorPlan t) {
        if (t.sources() != null) return TensorSpecs.tensorMerge(t.sources().forConfig().apply(cfg), t.name(), -1, 1);
        return TensorSpecs.tensorMerge(cfg, t.name(), TensorNames.layerIndex(t.name()), layerCount);
    }

    /** {@link TensorSpecs#checkTensor} of tensor {@code t} under {@code cfg}, as {@link #tensorMerge} resolves it. */
    void checkTensor(MergeConfig cfg, TensorPlan t) {
        if (t.sources() != null) TensorSpecs.checkTensor(t.sources().forConfig().apply(cfg), t.name(), -1, 1);
        else TensorSpecs.checkTensor(cfg, t.name(), TensorNames.layerIndex(t.name()), layerCount);
    }

    /** Layers of the reference checkpoint (1 + the largest layer index in its tensor names). */
    int layerCount() {
        return layerCount;
    }

    public Plan plan() throws CheckpointFormatException {
        if (config.slices() != null) {  // slices, or models with layer_range
            if (config.sliced()) return LayerPlan.plan(config, opened());
            LayerPlan.checkModelRanges(config, opened());
        }
        Checkpoint ref = reference();
        List<TensorPlan> tensors = new ArrayList<>();
        long read = 0, written = 0, largestOut = 0, largestIn = 0, largestConvert = 0;
        vocabularyTensors.clear();
        for (String name : ref.tensorNames()) {
            TensorInfo info = ref.info(name);
            boolean gathered = vocabulary != null && Vocabulary.isEmbedding(name, info.shape());
            if (gathered) info = vocabularyTensor(name, info);
            var mergeDType = info.dtype().toMergeDType();
            long merged = info.elementCount();
            String note = "";
            boolean mixed = false;
            for (int i = 0; i < models.size(); i++) {
                Checkpoint m = models.get(i);
                if (!m.contains(name))
                    throw new CheckpointFormatException(m.directory() + ": tensor " + name + " is missing (present in "
                            + ref.directory() + ")");
                TensorInfo mi = m.info(name);
                if (mi.dtype() != info.dtype()) {
                    // Float tensors of different dtypes (an f32 base, bf16 experts) merge from f32 copies.
                    if (mi.dtype().toMergeDType().isEmpty() || mergeDType.isEmpty())
                        throw new CheckpointFormatException(m.directory() + ": tensor " + name + " is " + mi.dtype() + ", "
                                + ref.directory() + " has " + info.dtype());
                    mixed = true;
                }
                if (!gathered && !Arrays.equals(mi.shape(), info.shape())) {
                    long common = vocabCommonElements(name, info.shape(), mi.shape(), m.directory());
                    merged = Math.min(merged, common);
                    note = "vocabulary rows beyond " + (common / rowElements(info.shape())) + " copied from the base";
                }
            }
            if (gathered)
                note = "rows gathered by token into the output vocabulary (" + vocabulary.size() + " tokens)";
            boolean mergeable = mergeDType.isPresent() && (base != null || merged == info.elementCount());
            if (mergeDType.isEmpty() && info.dtype().isFloat()) requireIdentical(name, info);
            if (mergeable)
                for (Checkpoint f : fishers) {  // merge_method fisher: each model's Fisher, tensor by tensor
                    if (!f.contains(name))
                        throw new CheckpointFormatException(f.directory() + ": Fisher tensor " + name + " is missing");
                    TensorInfo fi = f.info(name);
                    if (!Arrays.equals(fi.shape(), info.shape()) || fi.dtype().toMergeDType().isEmpty())
                        throw new CheckpointFormatException(f.directory() + ": Fisher tensor " + name + " is "
                                + fi.dtype() + " " + Arrays.toString(fi.shape()) + ", the model's is " + info.dtype() + " "
                                + Arrays.toString(info.shape()) + " (a float tensor of the same shape is needed)");
                }
            DType compute = !mergeable ? null
                    : config.computeDType() != null ? config.computeDType() : mixed ? DType.F32 : mergeDType.get();
            // Rounded copies are needed where an input is not of the compute dtype, except for f32 over one 16-bit
            // dtype: the merge computes in f32 from those exactly, and ranks f32 keys when told to.
            boolean convert = mergeable && (mixed || (compute != mergeDType.get() && compute != DType.F32));
            DType out = mergeable ? (config.outDType() != null ? config.outDType() : compute) : null;
            if (convert) {
                note = (note.isEmpty() ? "" : note + "; ") + (mixed ? "inputs of different dtypes: " : "")
                        + "merged from " + compute.name().toLowerCase(Locale.ROOT) + " copies";
                SafetensorsDType c = SafetensorsDType.of(compute);
                long converted = (base != null && base.info(name).dtype() != c ? 1 : 0)
                        + models.stream().filter(m -> m.info(name).dtype() != c).count();
                largestConvert = Math.max(largestConvert, converted * merged * compute.byteSize());
            }
            if (mergeable) TensorSpecs.checkTensor(config, name, TensorNames.layerIndex(name), layerCount);
            TensorPlan tp = new TensorPlan(name, info, mergeable ? Action.MERGE : Action.COPY, out, merged,
                    mergeable ? note : "not a float tensor: copied from " + ref.directory().getFileName(), compute, convert);
            tensors.add(tp);
            read += tp.action() == Action.MERGE ? info.byteSize() * (models.size() + (base != null ? 1 : 0))
                    * (TensorSpecs.readsTwice(config, name, layerCount) ? 2 : 1) : info.byteSize();  // statistics, merge
            written += tp.outBytes();
            largestOut = Math.max(largestOut, tp.outBytes());
            largestIn = Math.max(largestIn, tp.convertedInputs() ? merged * compute.byteSize() : info.byteSize());
        }
        if (config.trimScope() == MergeConfig.TrimScope.MODEL && usesMagnitude())
            read += tensors.stream().filter(t -> t.action() == Action.MERGE)
                    .mapToLong(t -> t.info().byteSize() * (models.size() + 1) * (keyDType(tensors) == DType.F32 ? 2 : 1))
                    .sum();
        // The output has the reference's tensors; a model's extra ones (an added head, an adapter) are left out.
        List<String> warnings = new ArrayList<>();
        Set<String> known = new HashSet<>(ref.tensorNames());
        for (Checkpoint m : models) {
            List<String> extra = m.tensorNames().stream().filter(t -> !known.contains(t)).toList();
            if (!extra.isEmpty())
                warnings.add(m.directory() + " has " + extra.size() + " tensor" + (extra.size() == 1 ? "" : "s") + " that "
                        + ref.directory() + " lacks, left out of the merge: " + String.join(", ",
                                extra.subList(0, Math.min(5, extra.size()))) + (extra.size() > 5 ? ", ..." : ""));
        }
        long slotBytes = 0;  // the largest merged tensor of any input, as stored
        for (TensorPlan t : tensors) {
            if (t.action() != Action.MERGE) continue;
            // An embedding under the output vocabulary is gathered into the vocabulary's rows, in each input's dtype.
            boolean gathered = vocabularyTensors.contains(t.name());
            if (base != null) slotBytes = Math.max(slotBytes, inputBytes(base, t, gathered));
            for (Checkpoint m : models) slotBytes = Math.max(slotBytes, inputBytes(m, t, gathered));
            for (Checkpoint f : fishers) slotBytes = Math.max(slotBytes, f.info(t.name()).byteSize());
        }
        if (vocabulary != null) {
            warnings.addAll(vocabulary.warnings());
            if (vocabularyTensors.isEmpty())
                warnings.add("the config builds a vocabulary of " + vocabulary.size() + " tokens, but no tensor is a "
                        + "token embedding or output head (by its name): only the tokenizer files follow it");
        }
        warnings.addAll(tiedNotes);
        return new Plan(List.copyOf(tensors), read, written, largestOut, largestIn, models.size(), config.trimScope(),
                List.copyOf(warnings), largestConvert, 1 + models.size() + fishers.size(), slotBytes);
    }

    /**
     * A float tensor of a type Smelter does not merge (FP8, FP4, FP6, F64, C64) is copied only where every input holds
     * the same bytes; otherwise copying the reference's would silently leave it unmerged. (FP8 checkpoints carry
     * block scales beside their weights: merging them needs dequantizing first.)
     */
    private void requireIdentical(String name, TensorInfo info) throws CheckpointFormatException {
        List<Checkpoint> others = new ArrayList<>(models);
        if (base != null && reference() != base) others.add(base);
        for (Checkpoint m : others) {
            TensorInfo mi = m.info(name);
            if (mi.dtype() != info.dtype() || !Arrays.equals(mi.shape(), info.shape())
                    || m.data(name).mismatch(reference().data(name)) != -1)
                throw new CheckpointFormatException(m.directory() + ": tensor " + name + " is " + mi.dtype()
                        + " and differs from " + reference().directory() + "'s; Smelter merges F32, F16 and BF16 tensors "
                        + "and copies others only when every input has the same bytes (dequantize "
                        + info.dtype() + " checkpoints to bf16 first, e.g. FP8 weights with their block scales)");
        }
    }

    private static long inputBytes(Checkpoint c, TensorPlan t, boolean gathered) {
        TensorInfo i = c.info(t.name());
        return gathered ? i.dtype().sizeInBytes(t.info().elementCount()) : i.byteSize();
    }

    private long vocabCommonElements(String name, long[] ref, long[] other, Path where) throws CheckpointFormatException {
        boolean sameTail = ref.length == other.length && ref.length >= 1
                && Arrays.equals(Arrays.copyOfRange(ref, 1, ref.length), Arrays.copyOfRange(other, 1, other.length));
        if (!sameTail || !TensorNames.isVocabMatrix(name) || !options.allowVocabMismatch())
            throw new CheckpointFormatException(where + ": tensor " + name + " has shape " + Arrays.toString(other)
                    + ", the reference has " + Arrays.toString(ref)
                    + (sameTail && TensorNames.isVocabMatrix(name)
                            ? " (a vocabulary-size difference: rerun with --allow-vocab-mismatch to merge the shared rows, "
                                    + "or give the config tokenizer_source: union (or base) to align the rows by token as "
                                    + "mergekit does)"
                            : ""));
        return Math.min(ref[0], other[0]) * rowElements(ref);
    }

    private static long rowElements(long[] shape) {
        long n = 1;
        for (int i = 1; i < shape.length; i++) n *= shape[i];
        return n;
    }

    private boolean usesMagnitude() {
        return config.method() == MergeMethods.Method.TIES;
    }

    /** One ranking precision for the whole model: f32 if any merged tensor is f32, else the 16-bit type. */
    static DType keyDType(List<TensorPlan> tensors) {
        DType key = null;
        for (TensorPlan t : tensors) {
            if (t.action() != Action.MERGE) continue;
            DType d = t.computeDType();
            key = key == null || key == d ? d : DType.F32;
        }
        return key == null ? DType.F32 : key;
    }

    /** Runs the plan on {@link Options#device()} in this process; {@code progress} receives the bytes done after each tensor. */
    public Summary run(Plan plan, Consumer<Long> progress) throws IOException {
        return run(plan, Scale.of(options.device()), progress);
    }

    /**
     * How a merge is spread: over one context per device in this process ({@link DeviceScheduler}), and over
     * processes that each write whole shards ({@link Partition}, null: this process writes every shard).
     * {@code jobText} describes the job beyond the config (the CLI's options) for the partitions' fingerprint.
     */
    public record Scale(List<Device> devices, Partition partition, String jobText) {
        public Scale {
            if (devices.isEmpty()) throw new IllegalArgumentException("no device");
            devices = List.copyOf(devices);
        }

        public static Scale of(Device device) {
            return new Scale(List.of(device), null, "");
        }
    }

    /**
     * Runs the plan as {@code scale} says. With several devices the tensors are spread over them by bytes, each device
     * with its own buffers, read-ahead and write-behind; the checkpoint is the same bytes as on one. With a partition
     * this process writes its shards into the output's staging directory ({@link PartitionStaging}), and the last
     * partition to finish assembles the checkpoint ({@link #finalizePartitions}).
     */
    public Summary run(Plan plan, Scale scale, Consumer<Long> progress) throws IOException {
        long t0 = System.nanoTime();
        ShardLayout layout = layout(plan);
        List<String> warnings = new ArrayList<>();
        if (scale.partition() != null) return runPartition(plan, layout, scale, progress, t0);
        long peakAnon;
        try (CheckpointWriter writer = new CheckpointWriter(options.output(), layout, options.overwrite())) {
            peakAnon = execute(plan, plan.tensors(), writer, scale.devices(), progress, warnings);
            writeSideFiles(writer, plan, warnings);
            checkInputsUnchanged();  // a file rewritten in place meanwhile would give a silent mix
            writer.commit();
        }
        double seconds = (System.nanoTime() - t0) / 1e9;
        return new Summary(plan, seconds, plan.bytesRead(), plan.bytesWritten(), peakAnon, List.copyOf(warnings));
    }

    /** The output's shards: the same for any number of devices or partitions. */
    ShardLayout layout(Plan plan) {
        List<CheckpointWriter.TensorSpec> specs = new ArrayList<>();
        for (TensorPlan t : plan.tensors())
            specs.add(new CheckpointWriter.TensorSpec(t.name(),
                    t.action() == Action.COPY ? t.info().dtype() : SafetensorsDType.of(t.outDType()), t.info().shape()));
        return new ShardLayout(specs, options.maxShardBytes(), outputMetadata());
    }

    /** The shards partition {@code part} writes, by name, with their file sizes (for --dry-run). */
    public Map<String, Long> partitionShards(Plan plan, Partition part) {
        ShardLayout layout = layout(plan);
        Map<String, Long> shards = new java.util.LinkedHashMap<>();
        for (int s : part.shards(layout)) shards.put(layout.shardName(s), layout.fileBytes(s));
        return shards;
    }

    /** config.json, the tokenizer and the model card, as the options say. */
    private void writeSideFiles(CheckpointWriter writer, Plan plan, List<String> warnings) throws IOException {
        warnings.addAll(SideFiles.write(writer, reference().directory(), SideFiles.outputDType(plan), options.copyTokenizer(),
                tokenizerFiles, config.sliced() ? LayerPlan.configEdit(config, warnings::add) : null));
        if (options.configText() != null) {
            writer.writeFile("README.md", ModelCard.markdown(ModelCard.name(options.output()), config,
                    options.configText()).getBytes(StandardCharsets.UTF_8));
            writer.writeFile("mergekit_config.yml", options.configText().getBytes(StandardCharsets.UTF_8));
        }
    }

    /**
     * What identifies a partitioned job: the config as resolved, the options that shape the output, the job text,
     * the plan's tensors and every input file's path, size and modification time. Partitions and the finalize step
     * of one job agree on it; a different config, option or input gives another.
     */
    String jobDescription(Plan plan, String jobText) throws IOException {
        StringBuilder s = new StringBuilder();
        s.append("smelter ").append(Smelter.version()).append('\n').append(JobFingerprint.canonical(config)).append('\n');
        s.append(options.maxShardBytes()).append(' ').append(options.allowVocabMismatch()).append(' ')
                .append(options.nonFinite()).append(' ').append(options.copyTokenizer()).append('\n');
        s.append(options.configText()).append('\n').append(jobText).append('\n');
        for (TensorPlan t : plan.tensors())
            s.append(t.name()).append(' ').append(t.action()).append(' ').append(t.outDType()).append(' ')
                    .append(Arrays.toString(t.info().shape())).append('\n');
        List<Checkpoint> all = new ArrayList<>();
        if (base != null) all.add(base);
        all.addAll(models);
        all.addAll(fishers);
        for (Checkpoint c : all)
            try (var files = Files.list(c.directory())) {
                for (Path f : files.filter(f -> f.getFileName().toString().endsWith(".safetensors")).sorted().toList())
                    s.append(f.toAbsolutePath()).append(' ').append(Files.size(f)).append(' ')
                            .append(Files.getLastModifiedTime(f).toMillis()).append('\n');
            }
        return s.toString();
    }

    private Summary runPartition(Plan plan, ShardLayout layout, Scale scale, Consumer<Long> progress, long t0)
            throws IOException {
        Partition part = scale.partition();
        PartitionStaging staging = PartitionStaging.open(options.output(), jobDescription(plan, scale.jobText()),
                part.count(), layout, options.overwrite());
        staging.unmarkDone(part.index());  // a rerun is not done until it has finished again
        List<Integer> mine = part.shards(layout);
        List<Integer> todo = new ArrayList<>();
        for (int s : mine) if (!staging.hasShard(s)) todo.add(s);
        Set<String> names = new HashSet<>();
        for (int s : todo) for (CheckpointWriter.TensorSpec t : layout.tensors(s)) names.add(t.name());
        List<TensorPlan> tensors = plan.tensors().stream().filter(t -> names.contains(t.name())).toList();
        List<String> warnings = new ArrayList<>(), notes = new ArrayList<>();
        if (todo.size() < mine.size())
            notes.add("partition " + part + ": " + (mine.size() - todo.size()) + " of its " + mine.size()
                    + " shards were finished by an earlier run, kept");
        long peakAnon;
        try (PartitionWriter writer = staging.writer(part.index(), todo)) {
            peakAnon = tensors.isEmpty() ? anonymousResidentBytes()
                    : execute(plan, tensors, writer, scale.devices(), progress, warnings, staging, notes);
            writer.finish();
        }
        checkInputsUnchanged();
        staging.markDone(part.index());
        long written = tensors.stream().mapToLong(TensorPlan::outBytes).sum();
        long read = plan.bytesRead() * written / Math.max(1, plan.bytesWritten());  // pro rata
        if (staging.allDone() && staging.tryLock()) {
            notes.add("partition " + part + " finished last: assembled " + options.output());
            finalizePartitions(plan, scale.jobText(), warnings);
        }
        double seconds = (System.nanoTime() - t0) / 1e9;
        return new Summary(plan, seconds, read, written, peakAnon, List.copyOf(warnings), List.copyOf(notes));
    }

    /**
     * The finalize step of a partitioned merge: checks that every partition of the job ({@code jobText} as the
     * partitions had it) is done and every shard is there, writes the index, config and model card, and renames the
     * checkpoint into place; then removes the staging directory. Returns false, having done nothing, when the output
     * is already in place and no staging directory of this job is left (an earlier finalize did it).
     */
    public boolean finalizePartitions(Plan plan, String jobText, List<String> warnings) throws IOException {
        ShardLayout layout = layout(plan);
        PartitionStaging staging = PartitionStaging.find(options.output(), jobDescription(plan, jobText), layout);
        if (staging == null) return false;
        staging.checkComplete();
        try (CheckpointWriter writer = new CheckpointWriter(options.output(), layout, options.overwrite())) {
            for (int s = 0; s < layout.shardCount(); s++) writer.adopt(s, staging.shard(s));
            writeSideFiles(writer, plan, warnings);
            checkInputsUnchanged();
            writer.commit();
        }
        staging.delete();
        return true;
    }

    /**
     * Merges (or copies) {@code tensors} of the plan into {@code sink} on {@code devices}: one lane per device, each
     * with its own context, input buffers, read-ahead and write-behind, the tensors spread by bytes
     * ({@link DeviceScheduler}). Model-wide statistics (TIES thresholds, Fisher norms) are over the whole plan.
     * Returns the peak anonymous memory seen.
     */
    private long execute(Plan plan, List<TensorPlan> tensors, TensorSink sink, List<Device> devices,
            Consumer<Long> progress, List<String> warnings) throws IOException {
        return execute(plan, tensors, sink, devices, progress, warnings, null, new ArrayList<>());
    }

    /**
     * {@link #execute(Plan, List, TensorSink, List, Consumer, List)} for a partition: the model-wide statistics are
     * read from {@code staging} where another partition of the job (or an earlier run) left them, else computed and
     * left there ({@link PartitionStaging#modelStats}); {@code notes} says which.
     */
    private long execute(Plan plan, List<TensorPlan> tensors, TensorSink sink, List<Device> devices,
            Consumer<Long> progress, List<String> warnings, PartitionStaging staging, List<String> notes)
            throws IOException {
        List<Context> contexts = new ArrayList<>();
        try {
            for (Device d : devices) {
                Context ctx = Smelter.open(d);
                contexts.add(ctx);
                ctx.setMemoryLimit(options.memoryLimit());
            }
            // Model-wide statistics first, on the first device, into buffers of their own (freed before the lanes start).
            boolean trim = config.trimScope() == MergeConfig.TrimScope.MODEL && usesMagnitude();
            boolean norms = normalizesFishers(config, plan);
            int[] thresholds = null;
            fisherNorms = null;
            Map<String, String> cached = staging == null ? Map.of() : staging.modelStats();
            if (trim && cached.containsKey("thresholds")) thresholds = parseInts(cached.get("thresholds"));
            if (norms && cached.containsKey("fisher_norms")) fisherNorms = parseDoubles(cached.get("fisher_norms"));
            boolean computeTrim = trim && thresholds == null, computeNorms = norms && fisherNorms == null;
            if (staging != null && (trim || norms))
                notes.add((computeTrim || computeNorms ? "model-wide statistics computed over every tensor and left in "
                        : "model-wide statistics read from ") + staging.modelStatsFile());
            if (computeTrim || computeNorms) {
                Context first = contexts.get(0);
                try (InputBuffers in = inputBuffers(first, plan, 1)) {
                    Tensor convert = convertBuffer(first, plan);
                    try {
                        if (computeTrim) thresholds = modelThresholds(first, in, plan, convert);
                        // One pass over every Fisher, only when some tensor is normalized by their norms.
                        if (computeNorms) fisherNorms = fisherNorms(first, in, plan);
                    } finally {
                        if (convert != null) first.free(convert);
                    }
                }
                if (staging != null) {
                    Map<String, String> stats = new java.util.LinkedHashMap<>();
                    if (thresholds != null)
                        stats.put("thresholds", String.join(" ", Arrays.stream(thresholds).mapToObj(Integer::toString).toList()));
                    if (fisherNorms != null)
                        stats.put("fisher_norms", String.join(" ", Arrays.stream(fisherNorms).mapToObj(Double::toString).toList()));
                    staging.writeModelStats(stats);
                }
            }
            final int[] laneThresholds = thresholds;
            DType key = thresholds != null ? keyDType(plan.tensors()) : null;
            List<List<TensorPlan>> lanes = DeviceScheduler.spread(tensors, contexts.size());
            java.util.concurrent.atomic.AtomicLong done = new java.util.concurrent.atomic.AtomicLong();
            Consumer<Long> laneProgress = bytes -> {
                long d = done.addAndGet(bytes);
                synchronized (progress) {
                    progress.accept(d);
                }
            };
            Map<String, List<String>> byTensor = new java.util.concurrent.ConcurrentHashMap<>();
            long peak = DeviceScheduler.runAll(lanes.size(), lane -> runLane(contexts.get(lane), plan, lanes.get(lane),
                    sink, laneThresholds, key, laneProgress, byTensor));
            for (TensorPlan t : tensors) warnings.addAll(byTensor.getOrDefault(t.name(), List.of()));
            return peak;
        } finally {
            for (Context c : contexts) c.close();
        }
    }

    private static int[] parseInts(String text) {
        return Arrays.stream(text.trim().split(" ")).mapToInt(Integer::parseInt).toArray();
    }

    private static double[] parseDoubles(String text) {
        return Arrays.stream(text.trim().split(" ")).mapToDouble(Double::parseDouble).toArray();
    }

    /** Copies of inputs in the compute dtype, where the plan has tensors that need them (else null). */
    private static Tensor convertBuffer(Context ctx, Plan plan) {
        return plan.largestConvertBytes() > 0
                ? ctx.allocate(DType.F32, (plan.largestConvertBytes() + 3) / 4, Tensor.Memory.HOST) : null;
    }

    /** One device's share: read ahead, merge into two output buffers in turn, write behind. Returns the peak memory. */
    private long runLane(Context ctx, Plan plan, List<TensorPlan> tensors, TensorSink sink, int[] thresholds, DType key,
            Consumer<Long> progress, Map<String, List<String>> warnings) throws IOException {
        long peakAnon = anonymousResidentBytes();
        // Two output buffers (page-locked on CUDA): tensor i is merged into one while tensor i-1 is written
        // from the other; the inputs of the next tensors are read ahead meanwhile.
        Tensor[] buffers = new Tensor[2];
        Future<?>[] writes = new Future<?>[2];
        Tensor convert = null;
        try (WriteBehind behind = new WriteBehind()) {
            try (ReadAhead ahead = new ReadAhead(inputSegments(tensors), readAheadBytes(plan));
                    InputBuffers in = inputBuffers(ctx, plan, plan.inputBanks())) {
                convert = convertBuffer(ctx, plan);
                for (int b = 0; b < 2; b++)
                    buffers[b] = ctx.allocate(DType.BF16, (Math.max(plan.largestOutputBytes(), 2) + 1) / 2, Tensor.Memory.HOST);
                List<TensorPlan> steps = tensors.stream().filter(t -> t.action() == Action.MERGE).toList();
                InputPrefetch<Inputs> prefetch = new InputPrefetch<>((bank, k) -> read(in, bank, steps.get(k)),
                        steps.size(), in.banks());
                int step = 0;  // merged tensors so far: the prefetch's steps
                try (prefetch) {
                    for (int i = 0; i < tensors.size(); i++) {
                        TensorPlan t = tensors.get(i);
                        if (t.action() == Action.COPY) {
                            behind.write(sink, t.name(), copySource(t));
                        } else {
                            int b = i & 1;
                            behind.await(writes[b]);  // the write that last read this buffer
                            MemorySegment outBuffer = buffers[b].data();
                            long nonFinite;
                            Inputs inputs = prefetch.await(step);
                            try {
                                nonFinite = mergeTensor(ctx, inputs, t, thresholds, key, outBuffer, convert);
                            } catch (SmelterException e) {  // e.g. device out of memory: say which tensor
                                throw e.within(String.format(Locale.ROOT, "tensor %s (%.1f MiB per input)", t.name(),
                                        t.info().byteSize() / 1048576.0));
                            }
                            List<String> said = new ArrayList<>();
                            checkFinite(ctx, inputs.base(), inputs.models(), t, nonFinite, "", options.nonFinite(), said);
                            if (!said.isEmpty()) warnings.put(t.name(), said);
                            prefetch.release(step++);
                            writes[b] = behind.write(sink, t.name(), outBuffer.asSlice(0, t.outBytes()));
                        }
                        ahead.consumed(i);
                        peakAnon = Math.max(peakAnon, anonymousResidentBytes());
                        progress.accept(t.outBytes());
                    }
                }
                behind.finish();
            } finally {
                behind.close();  // no write may still read a buffer when it is freed
                for (Tensor b : buffers) if (b != null) ctx.free(b);
                if (convert != null) ctx.free(convert);
            }
        }
        return peakAnon;
    }

    /** The {@code __metadata__} of every merged shard: the same for the same version, whatever the build. */
    static Map<String, String> outputMetadata() {
        return Map.of("format", "pt", "merged_by", "smelter " + Smelter.version());
    }

    /** One slot per input (base, models, Fishers), each as large as the largest merged tensor of any input. */
    InputBuffers inputBuffers(Context ctx, Plan plan, int banks) {
        return new InputBuffers(ctx, banks, plan.inputSlots(), plan.inputSlotBytes());
    }

    /** One merged tensor's inputs as read into a bank of the input buffers: the whole base tensor, models, Fishers. */
    record Inputs(Tensor base, List<Tensor> models, List<Tensor> fishers) {}

    /** Reads tensor {@code t}'s inputs into {@code bank}: the base whole, the models' and Fishers' merged elements. */
    Inputs read(InputBuffers in, int bank, TensorPlan t) throws IOException {
        String name = t.name();
        long n = t.mergedElements();
        if (t.sources() != null) {  // slices: the base (if any) in slot 0, the models after it
            LayerPlan.Input sb = t.sources().base();
            Tensor b = sb == null ? null : in.read(bank, 0, sb.checkpoint(), sb.name(), n);
            List<Tensor> m = new ArrayList<>();
            for (int i = 0; i < t.sources().models().size(); i++) {
                LayerPlan.Input x = t.sources().models().get(i);
                m.add(in.read(bank, sb == null ? i : 1 + i, x.checkpoint(), x.name(), n));
            }
            return new Inputs(b, m, List.of());
        }
        Tensor b = base == null ? null : readInput(in, bank, 0, base, t, t.info().elementCount());
        List<Tensor> m = new ArrayList<>(), f = new ArrayList<>();
        for (int i = 0; i < models.size(); i++) m.add(readInput(in, bank, 1 + i, models.get(i), t, n));
        for (int i = 0; i < fishers.size(); i++) f.add(in.read(bank, 1 + models.size() + i, fishers.get(i), name, n));
        return new Inputs(b, m, f);
    }

    /** The tensors of the plan that are merged (not copied), in order. */
    static List<TensorPlan> merged(Plan plan) {
        return plan.tensors().stream().filter(t -> t.action() == Action.MERGE).toList();
    }

    /** Fails naming the file if an input changed since it was opened (size, modification time, inode). */
    void checkInputsUnchanged() throws IOException {
        if (base != null) base.checkUnchanged();
        for (Checkpoint m : models) m.checkUnchanged();
        for (Checkpoint f : fishers) f.checkUnchanged();
    }

    /** What each tensor of the plan reads, in order, for the read-ahead: base, models and Fishers, or the copied tensor. */
    List<List<MemorySegment>> inputSegments(Plan plan) {
        return inputSegments(plan.tensors());
    }

    /** {@link #inputSegments(Plan)} of some of the plan's tensors, in the order given. */
    List<List<MemorySegment>> inputSegments(List<TensorPlan> tensors) {
        List<List<MemorySegment>> steps = new ArrayList<>();
        for (TensorPlan t : tensors) {
            List<MemorySegment> step = new ArrayList<>();
            if (t.action() == Action.COPY) {
                step.add(copySource(t));
            } else if (t.sources() != null) {
                for (LayerPlan.Input x : t.sources().all()) step.add(x.checkpoint().data(x.name()));
            } else {
                if (base != null) step.add(base.data(t.name()));
                for (Checkpoint m : models) step.add(m.data(t.name()));
                for (Checkpoint f : fishers) step.add(f.data(t.name()));
            }
            steps.add(step);
        }
        return steps;
    }

    /** How far to read ahead: the inputs of the largest tensor, at least 256 MiB (many small tensors in a row). */
    static long readAheadBytes(Plan plan) {
        return Math.max(plan.largestInputBytes() * (plan.modelCount() + 1), 256L << 20);
    }

    /**
     * The non-finite check of one merged tensor ({@code bad} values), shared with the sweep ({@code prefix} names the
     * configuration there): nothing, a warning naming the input checkpoints that hold such values, or a failure.
     * NaN inputs give NaN outputs, and values beyond a 16-bit output's range become infinite, so the merge's count
     * of non-finite outputs finds both; only when it is not zero are the inputs (already read) scanned, to say where
     * they came from.
     */
    void checkFinite(Context ctx, Tensor baseInput, List<Tensor> modelInputs, TensorPlan t, long bad, String prefix,
            NonFinite action, List<String> warnings) throws IOException {
        if (action == NonFinite.IGNORE || bad == 0) return;
        List<String> sources = new ArrayList<>();
        Checkpoint baseOf = t.sources() == null ? base
                : t.sources().base() == null ? null : t.sources().base().checkpoint();
        List<Checkpoint> modelsOf = t.sources() == null ? models
                : t.sources().models().stream().map(LayerPlan.Input::checkpoint).toList();
        if (baseOf != null) {
            long b = ctx.countNonFinite(baseInput);
            if (b > 0) sources.add(b + " in " + baseOf.directory());
        }
        for (int i = 0; i < modelsOf.size(); i++) {
            long b = ctx.countNonFinite(modelInputs.get(i));
            if (b > 0) sources.add(b + " in " + modelsOf.get(i).directory());
        }
        String message = prefix + "tensor " + t.name() + ": " + bad + " of " + t.info().elementCount() + " merged values are NaN or infinite ("
                + (sources.isEmpty() ? "the inputs are finite: the result overflows " + t.outDType() : "non-finite inputs: "
                        + String.join(", ", sources)) + ")";
        if (action == NonFinite.FAIL)
            throw new CheckpointFormatException(message + "; nothing was written (--on-nonfinite warn keeps going)");
        warnings.add(message);
    }

    /** Linux RssAnon of this process, or -1 where /proc is not there. */
    static long anonymousResidentBytes() {
        try {
            for (String line : Files.readAllLines(Path.of("/proc/self/status")))
                if (line.startsWith("RssAnon:"))
                    return Long.parseLong(line.replaceAll("[^0-9]", "")) * 1024;
        } catch (IOException | RuntimeException e) {
            return -1;
        }
        return -1;
    }

    /** Merges one tensor into {@code outBuffer}; returns how many of its values are NaN or infinite. */
    private long mergeTensor(Context ctx, Inputs in, TensorPlan t, int[] thresholds, DType key,
            MemorySegment outBuffer, Tensor convertBuffer) throws IOException {
        String name = t.name();
        long n = t.mergedElements();
        long[] at = {0};  // where the next copy goes in convertBuffer, in bytes (converted inputs only)
        // Every input is read into Smelter's buffers first: native code never reads a mapping (see InputBuffers).
        Tensor baseWhole = in.base();
        Tensor baseTensor = baseWhole == null ? null : inputOf(ctx, t, slice(baseWhole, n), at, convertBuffer);
        List<Tensor> inputs = new ArrayList<>();
        for (Tensor m : in.models()) inputs.add(inputOf(ctx, t, m, at, convertBuffer));
        // Composed methods (slerp, model_stock, ...) take their coefficients from the tensors' statistics first.
        MergeMethods.TensorMerge how = tensorMerge(config, t);
        Tensor out = new Tensor(outBuffer.asSlice(0, t.info().elementCount() * t.outDType().byteSize()),
                t.info().elementCount(), t.outDType(), Tensor.Memory.HOST);
        Context.MergeCounts counts;
        if (!fishers.isEmpty()) {
            counts = ctx.merge(fisherSpec(config, how.spec(), name, fisherNorms), null, inputs, null, in.fishers(),
                    out.slice(0, n));
        } else if (how.sce() != null) {
            counts = how.mergeSce(ctx, baseTensor, inputs, out.slice(0, n));
        } else if (how.host() != null) {  // computed in Java over the host inputs (see HostMerge)
            counts = how.host().merge(ctx, baseTensor, inputs, t.info().shape(), out.slice(0, n));
        } else {
            MergeSpec spec = how.resolve(ctx, baseTensor, inputs);
            if (spec == null) return NanOutput.fill(ctx, out).nonFinite();  // non-finite inputs: NaN throughout, every row
            if (thresholds != null) spec = spec.toBuilder().thresholds(thresholds).keyDType(key).build();
            else if (spec.sparsify() != MergeSpec.Sparsify.NONE) spec = spec.toBuilder().keyDType(t.computeDType()).build();
            spec = withRows(spec, t.info().shape(), n);
            inputs = how.inputs(baseTensor, inputs);
            counts = ctx.merge(spec, baseTensor, inputs, out.slice(0, n));
        }
        long nonFinite = counts.nonFinite();
        if (n < t.info().elementCount()) {
            // Rows only the reference has (vocabulary mismatch): take them from the base unchanged.
            Tensor rest = baseWhole.slice(n, t.info().elementCount() - n);
            MergeSpec copy = MergeSpec.linear(1.0f);
            nonFinite += ctx.merge(copy, null, List.of(rest), out.slice(n, t.info().elementCount() - n)).nonFinite();
        }
        return nonFinite;
    }

    /**
     * An input of tensor {@code t} as the merge reads it: itself, or where the plan converts inputs a copy in the
     * compute dtype (a LINEAR merge with weight 1: exact, or rounded to nearest even as torch's cast) at byte
     * {@code at[0]} of {@code convertBuffer} (one per device).
     */
    private Tensor inputOf(Context ctx, TensorPlan t, Tensor input, long[] at, Tensor convertBuffer) {
        DType to = t.computeDType();
        if (!t.convertedInputs() || input.dtype() == to) return input;
        long bytes = input.count() * to.byteSize();
        Tensor copy = new Tensor(convertBuffer.data().asSlice(at[0], bytes), input.count(), to, Tensor.Memory.HOST);
        at[0] += bytes;
        ctx.merge(MergeSpec.linear(1.0f), null, List.of(input), copy);
        return copy;
    }

    /** DELLA ranks within rows: the trailing dimensions of the tensor (the whole tensor when it is 1-D). */
    static MergeSpec withRows(MergeSpec spec, long[] shape, long merged) {
        if (spec.sparsify() != MergeSpec.Sparsify.RANKED) return spec;
        return spec.toBuilder().rowLength(shape.length >= 2 ? rowElements(shape) : merged).build();
    }

    static Tensor slice(Tensor t, long n) {
        return n == t.count() ? t : t.slice(0, n);
    }

    private volatile double[] fisherNorms;  // during run(): set before the devices' lanes start

    /** The L2 norm of each model's whole Fisher (its merged tensors), Matena and Raffel's normalization. */
    double[] fisherNorms(Context ctx, InputBuffers in, Plan plan) throws IOException {
        double[] norms = new double[fishers.size()];
        for (int i = 0; i < fishers.size(); i++) {
            PairStats s = new PairStats(1);
            for (TensorPlan t : plan.tensors())
                if (t.action() == Action.MERGE)
                    ctx.pairStats(List.of(in.read(1 + models.size() + i, fishers.get(i), t.name(), t.mergedElements())),
                            null, null, null, s);
            norms[i] = Math.sqrt(s.dot(0, 0));
            if (!(norms[i] > 0) || !Double.isFinite(norms[i]))
                throw new IllegalArgumentException(fishers.get(i).directory() + ": the Fisher's L2 norm is " + norms[i]
                        + "; it cannot normalize (set normalize_fishers: false)");
        }
        return norms;
    }

    /** Model-wide TIES thresholds: one exact k-th largest |delta| per model over all merged tensors. */
    private int[] modelThresholds(Context ctx, InputBuffers in, Plan plan, Tensor convertBuffer) throws IOException {
        List<TensorPlan> merged = merged(plan);
        DType key = keyDType(plan.tensors());
        int[] thresholds = new int[models.size()];
        long total = merged.stream().mapToLong(TensorPlan::mergedElements).sum();
        for (int i = 0; i < models.size(); i++) {
            Checkpoint model = models.get(i);
            long k = (long) Math.floor(modelDensity(config, merged, i, layerCount) * total);
            final int slot = 1 + i;
            try (TopK topK = ctx.topK(key)) {
                thresholds[i] = topK.threshold(k, pass -> {
                    for (TensorPlan t : merged) {
                        long[] at = {0};
                        pass.add(inputOf(ctx, t, readInputUnchecked(in, 0, base, t), at, convertBuffer),
                                inputOf(ctx, t, readInputUnchecked(in, slot, model, t), at, convertBuffer));
                    }
                });
            } catch (java.io.UncheckedIOException e) {
                throw e.getCause();
            }
        }
        return thresholds;
    }

    /** The one density of model i; model-wide trimming has no meaning for per-tensor densities. */
    static double modelDensity(MergeConfig config, List<TensorPlan> merged, int model, int layerCount) {
        double density = Double.NaN;
        for (TensorPlan t : merged) {
            double d = TensorSpecs.spec(config, t.name(), TensorNames.layerIndex(t.name()), layerCount).densities()[model];
            if (Double.isNaN(density)) density = d;
            else if (d != density)
                throw new IllegalArgumentException("trim_scope: model needs one density per model, but models[" + model
                        + "] has " + density + " and " + d + " (tensor " + t.name() + "); use trim_scope: tensor");
        }
        return density;
    }

    @Override
    public void close() {
        if (base != null) base.close();
        for (Checkpoint c : models) c.close();
        for (Checkpoint c : fishers) c.close();
    }
}
