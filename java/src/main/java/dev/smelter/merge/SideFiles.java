package dev.smelter.merge;

import com.fasterxml.jackson.core.JsonGenerator;
import com.fasterxml.jackson.core.util.DefaultIndenter;
import com.fasterxml.jackson.core.util.DefaultPrettyPrinter;
import com.fasterxml.jackson.core.util.Separators;
import com.fasterxml.jackson.databind.DeserializationFeature;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.json.JsonMapper;
import com.fasterxml.jackson.databind.node.JsonNodeFactory;
import com.fasterxml.jackson.databind.node.ObjectNode;
import dev.smelter.DType;
import dev.smelter.io.CheckpointWriter;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.EnumMap;
import java.util.List;
import java.util.Map;
import java.util.function.Consumer;

/**
 * The files beside the tensors of a merged checkpoint: {@code config.json} with {@code torch_dtype} set to the dtype
 * the merged tensors are written in (transformers loads the model in it), {@code generation_config.json}, and the
 * tokenizer files, taken from the base (or the first model).
 */
public final class SideFiles {
    private static final ObjectMapper JSON = JsonMapper.builder()
            .enable(DeserializationFeature.USE_BIG_DECIMAL_FOR_FLOATS)  // numbers written back as they were read
            .nodeFactory(JsonNodeFactory.withExactBigDecimals(true))
            .build();

    private SideFiles() {}

    /**
     * Copies the side files found in {@code source} into {@code writer}: config.json with its dtype set to
     * {@code dtype} (unchanged when null), the tokenizer files only with {@code copyTokenizer}. Where a config with
     * tokenizer keys gives the tokenizer files ({@code tokenizer} not null), those replace the source's and
     * config.json gets their {@code vocab_size}; {@code configEdit} (if not null) is applied to config.json last (a
     * sliced merge's layer count). Returns warnings.
     */
    public static List<String> write(CheckpointWriter writer, Path source, DType dtype, boolean copyTokenizer,
            TokenizerOutput tokenizer, Consumer<ObjectNode> configEdit) throws IOException {
        List<String> warnings = new ArrayList<>();
        long vocabSize = tokenizer == null ? -1 : tokenizer.vocabSize();
        for (String f : CheckpointMerger.SIDE_FILES) {
            Path p = source.resolve(f);
            boolean tokenizerFile = CheckpointMerger.TOKENIZER_FILES.contains(f);
            if (!Files.isRegularFile(p) || (tokenizerFile && (!copyTokenizer || tokenizer != null))) continue;
            if (f.equals("config.json") && (dtype != null || vocabSize >= 0 || configEdit != null)) {
                try {
                    writer.writeFile(f, withDType(Files.readString(p), dtype, vocabSize, configEdit));
                    continue;
                } catch (IOException | RuntimeException e) {
                    warnings.add(p + " is copied unchanged (its " + (dtype != null ? "torch_dtype not set to "
                            + torchName(dtype) : vocabSize >= 0 ? "vocab_size not set to " + vocabSize
                            : "layer count not set") + "): it cannot be read as JSON: " + e.getMessage());
                }
            }
            writer.copyFile(p);
        }
        if (tokenizer != null) {
            tokenizer.write(writer);
            warnings.addAll(tokenizer.warnings());
        }
        return warnings;
    }

    /**
     * The dtype of the merged tensors: the config's out_dtype or dtype, else the inputs'; where tensors differ, the one
     * most bytes are written in. Null when nothing is merged.
     */
    public static DType outputDType(CheckpointMerger.Plan plan) {
        Map<DType, Long> bytes = new EnumMap<>(DType.class);
        for (CheckpointMerger.TensorPlan t : plan.tensors())
            if (t.action() == CheckpointMerger.Action.MERGE) bytes.merge(t.outDType(), t.outBytes(), Long::sum);
        return bytes.entrySet().stream().max(Map.Entry.comparingByValue()).map(Map.Entry::getKey).orElse(null);
    }

    /** transformers' name of a dtype, as config.json writes it. */
    public static String torchName(DType dtype) {
        return switch (dtype) {
            case F32 -> "float32";
            case F16 -> "float16";
            case BF16 -> "bfloat16";
        };
    }

    /**
     * config.json with {@code torch_dtype} set to {@code dtype}, and {@code dtype} too where it has that key (newer
     * transformers write it; {@code dtype} null: unchanged); with {@code vocabSize >= 0} its {@code vocab_size} (that
     * of its {@code text_config} where only that has one) set to it; then {@code edit} if not null. Keys keep their
     * order, numbers their digits.
     */
    static byte[] withDType(String configJson, DType dtype, long vocabSize, Consumer<ObjectNode> edit) throws IOException {
        JsonNode root = JSON.readTree(configJson);
        if (!(root instanceof ObjectNode o)) throw new IOException("not a JSON object");
        if (dtype != null) {
            String name = torchName(dtype);
            o.put("torch_dtype", name);
            if (o.has("dtype")) o.put("dtype", name);
        }
        if (vocabSize >= 0) {
            if (!o.has("vocab_size") && o.get("text_config") instanceof ObjectNode text && text.has("vocab_size"))
                text.put("vocab_size", vocabSize);
            else o.put("vocab_size", vocabSize);
        }
        if (edit != null) edit.accept(o);
        DefaultPrettyPrinter pretty = new DefaultPrettyPrinter()
                .withSeparators(Separators.createDefaultInstance()
                        .withObjectFieldValueSpacing(Separators.Spacing.AFTER)
                        .withObjectEmptySeparator("").withArrayEmptySeparator(""))
                .withArrayIndenter(DefaultIndenter.SYSTEM_LINEFEED_INSTANCE);
        String text = JSON.writer(pretty).without(JsonGenerator.Feature.WRITE_BIGDECIMAL_AS_PLAIN)
                .writeValueAsString(o);
        return (text + "\n").getBytes(StandardCharsets.UTF_8);
    }
}
