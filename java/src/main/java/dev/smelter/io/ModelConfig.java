package dev.smelter.io;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.function.Predicate;

/** Keys of a model directory's {@code config.json} (transformers' model config), read where a merge needs one. */
public final class ModelConfig {
    private static final ObjectMapper JSON = new ObjectMapper();

    private ModelConfig() {}

    /**
     * The value of {@code key} in {@code dir/config.json} where {@code usable} takes it, else that of its
     * {@code text_config} (multimodal models keep the language model's keys there); null where neither has a usable
     * one, or there is no readable config.json (whoever checks the architecture reports that).
     */
    public static JsonNode value(Path dir, String key, Predicate<JsonNode> usable) {
        Path file = dir.resolve("config.json");
        if (!Files.isRegularFile(file)) return null;
        JsonNode root;
        try {
            root = JSON.readTree(file.toFile());
        } catch (IOException | RuntimeException e) {
            return null;
        }
        if (root == null) return null;
        JsonNode v = root.path(key);
        if (!v.isMissingNode() && usable.test(v)) return v;
        v = root.path("text_config").path(key);
        return !v.isMissingNode() && usable.test(v) ? v : null;
    }
}
