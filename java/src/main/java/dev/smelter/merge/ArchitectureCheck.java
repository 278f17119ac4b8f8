package dev.smelter.merge;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import dev.smelter.config.ConfigException;
import dev.smelter.config.MergeConfig;
import dev.smelter.config.TensorNames;
import dev.smelter.io.Checkpoint;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Objects;
import java.util.function.Consumer;

/**
 * Before a merge: do the inputs have one architecture and size? Each input's {@code config.json} is compared with the
 * base's (or the first model's) on {@link #KEYS} (each where both have it, also inside {@code text_config}), and the
 * layer counts of their tensor names. A difference is an error unless crimes are allowed (mergekit's
 * {@code --allow-crimes}), then a warning: a merge across architectures or layer counts pairs tensors that do not
 * correspond, or leaves layers out.
 */
public final class ArchitectureCheck {
    /** The config.json keys compared. */
    public static final List<String> KEYS = List.of("model_type", "architectures", "num_hidden_layers", "hidden_size",
            "intermediate_size", "num_attention_heads", "num_key_value_heads");

    private static final ObjectMapper JSON = new ObjectMapper();

    private ArchitectureCheck() {}

    /**
     * Checks the base and models of {@code config}; {@code warnings} receives an input without config.json, and with
     * {@code allowCrimes} the differences. Throws a {@link ConfigException} naming both inputs, the key and both
     * values when they differ and crimes are not allowed.
     */
    public static void check(MergeConfig config, boolean allowCrimes, Consumer<String> warnings)
            throws ConfigException, IOException {
        List<Path> inputs = new ArrayList<>();
        if (config.baseModel() != null) inputs.add(config.baseModel());
        for (MergeConfig.ModelEntry m : config.models()) inputs.add(m.path());
        List<String> differences = new ArrayList<>();
        Path ref = directory(inputs.get(0));
        JsonNode refConfig = readConfig(ref, warnings);
        int refLayers = layers(inputs.get(0));
        for (Path input : inputs.subList(1, inputs.size())) {
            Path dir = directory(input);
            JsonNode c = dir.equals(ref) ? null : readConfig(dir, warnings);  // files in one folder share a config.json
            boolean layersCompared = false;
            if (refConfig != null && c != null) {
                for (String key : KEYS) {
                    if (config.sliced() && key.equals("num_hidden_layers")) continue;  // slices pick layers
                    boolean both = compare(ref, refConfig, dir, c, key, "", differences);
                    layersCompared |= both && key.equals("num_hidden_layers");
                    compare(ref, refConfig.path("text_config"), dir, c.path("text_config"), key, "text_config.", differences);
                }
            }
            int layers = layers(input);
            if (!layersCompared && layers != refLayers && !config.sliced())
                differences.add(dir + " has " + layers + " layers, " + ref + " has " + refLayers
                        + " (counted in their tensor names)");
        }
        if (differences.isEmpty()) return;
        if (!allowCrimes)
            throw new ConfigException("the models differ in architecture or size: " + String.join("; ", differences)
                    + ". Merging them pairs tensors that do not correspond or leaves layers out; --allow-crimes merges "
                    + "anyway");
        for (String d : differences) warnings.accept(d + " (--allow-crimes: merging anyway)");
    }

    /** Adds a difference when both have {@code key} and its values differ; returns whether both have it. */
    private static boolean compare(Path refDir, JsonNode ref, Path dir, JsonNode other, String key, String prefix,
            List<String> differences) {
        JsonNode a = ref.get(key), b = other.get(key);
        if (a == null || b == null || a.isNull() || b.isNull()) return false;
        if (!equal(a, b))
            differences.add(refDir + " has " + prefix + key + " " + a + ", " + dir + " has " + b + " (config.json)");
        return true;
    }

    private static boolean equal(JsonNode a, JsonNode b) {
        if (a.isNumber() && b.isNumber()) return a.decimalValue().compareTo(b.decimalValue()) == 0;
        return Objects.equals(a, b);
    }

    /** The directory of a checkpoint given as a directory, an index json or a .safetensors file. */
    static Path directory(Path input) {
        Path p = input.toAbsolutePath().normalize();
        return Files.isDirectory(p) || p.getParent() == null ? p : p.getParent();
    }

    private static JsonNode readConfig(Path dir, Consumer<String> warnings) {
        Path file = dir.resolve("config.json");
        if (!Files.isRegularFile(file)) {
            warnings.accept(dir + " has no config.json: its architecture is not checked (only its layer count)");
            return null;
        }
        try {
            JsonNode n = JSON.readTree(file.toFile());
            if (n != null && n.isObject()) return n;
            warnings.accept(file + " is not a JSON object: the architecture of " + dir + " is not checked");
        } catch (IOException e) {
            warnings.accept(file + " cannot be read (" + e.getMessage() + "): the architecture of " + dir + " is not checked");
        }
        return null;
    }

    /** 1 + the largest layer index in the checkpoint's tensor names. */
    private static int layers(Path input) throws IOException {
        try (Checkpoint c = Checkpoint.open(input)) {
            int layers = 0;
            for (String name : c.tensorNames()) layers = Math.max(layers, TensorNames.layerIndex(name) + 1);
            return layers;
        }
    }
}
