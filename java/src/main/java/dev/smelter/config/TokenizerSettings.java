package dev.smelter.config;

import com.fasterxml.jackson.databind.JsonNode;
import java.nio.file.Path;
import java.util.Collections;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Set;

/**
 * mergekit's tokenizer keys: {@code tokenizer_source} ({@code base}, {@code union} or a model path), the
 * {@code tokenizer:} section ({@code source}, {@code tokens}, {@code pad_to_multiple_of}) and {@code chat_template}.
 *
 * @param source the output vocabulary, or null where none is built (the tokenizer files of the base are copied)
 * @param sourceModel the model whose tokenizer is the output's, for {@link Source#MODEL}
 * @param tokens per-token embedding settings, in the config's order (each token is added to the vocabulary)
 * @param padToMultipleOf the output vocabulary's rows are padded to a multiple of this (0: no padding)
 * @param chatTemplate null, {@code "auto"} (the most common template of the inputs) or a Jinja template's text
 *     (a built-in name is replaced by its text when the config is read)
 */
public record TokenizerSettings(Source source, Path sourceModel, Map<String, TokenEmbedding> tokens,
        int padToMultipleOf, String chatTemplate) {

    /** Where the output vocabulary comes from. */
    public enum Source { BASE, UNION, MODEL }

    /** Where a token's fallback embedding comes from: a model's row of that token, another token's row, or zeros. */
    public enum EmbeddingKind { MODEL, MODEL_TOKEN, ZERO }

    /**
     * One entry of {@code tokenizer.tokens}.
     *
     * @param model the source model (MODEL, MODEL_TOKEN)
     * @param tokenId MODEL_TOKEN by id (-1: by {@code token})
     * @param token MODEL_TOKEN by the token's text (null: by {@code tokenId})
     * @param force every model takes this embedding, also those that have the token
     */
    public record TokenEmbedding(EmbeddingKind kind, Path model, long tokenId, String token, boolean force) {}

    /** Whether an output vocabulary is built (and the embeddings aligned to it). */
    public boolean buildsVocabulary() {
        return source != null;
    }

    /** Resolves a model path as the config's model paths are resolved. */
    interface PathResolver {
        Path resolve(String path, String where) throws ConfigException;
    }

    /** The tokenizer keys of a config, or null where it has none. */
    static TokenizerSettings parse(JsonNode root, PathResolver paths) throws ConfigException {
        JsonNode legacy = root.get("tokenizer_source"), section = root.get("tokenizer"), template = root.get("chat_template");
        boolean hasLegacy = legacy != null && !legacy.isNull(), hasSection = section != null && !section.isNull();
        boolean hasTemplate = template != null && !template.isNull();
        if (!hasLegacy && !hasSection && !hasTemplate) return null;
        if (hasLegacy && hasSection)
            throw new ConfigException("tokenizer_source and tokenizer are both given; mergekit takes one or the other "
                    + "(tokenizer.source is tokenizer_source)");
        Source source = null;
        Path sourceModel = null;
        Map<String, TokenEmbedding> tokens = new LinkedHashMap<>();
        int pad = 0;
        if (hasLegacy) {
            String s = text(legacy, "tokenizer_source");
            source = source(s);
            if (source == Source.MODEL)
                sourceModel = paths.resolve(modelPath(s), "tokenizer_source (base, union or a model path)");
        }
        if (hasSection) {
            if (!section.isObject())
                throw new ConfigException("tokenizer must be a mapping with source, tokens and pad_to_multiple_of");
            checkKeys(section, Set.of("source", "tokens", "pad_to_multiple_of"), "tokenizer");
            source = Source.UNION;  // mergekit's default
            JsonNode s = section.get("source");
            if (s != null && !s.isNull()) {
                String text = text(s, "tokenizer.source");
                source = source(text);
                if (source == Source.MODEL)
                    sourceModel = paths.resolve(modelPath(text), "tokenizer.source (base, union or a model path)");
            }
            JsonNode p = section.get("pad_to_multiple_of");
            if (p != null && !p.isNull()) {
                if (!p.canConvertToInt() || !p.isIntegralNumber() || p.asInt() < 1)
                    throw new ConfigException("tokenizer.pad_to_multiple_of must be a whole number >= 1, got " + p);
                pad = p.asInt();
            }
            JsonNode t = section.get("tokens");
            if (t != null && !t.isNull()) {
                if (!t.isObject()) throw new ConfigException("tokenizer.tokens must be a mapping of token to {source, force}");
                for (Iterator<Map.Entry<String, JsonNode>> it = t.fields(); it.hasNext(); ) {
                    Map.Entry<String, JsonNode> e = it.next();
                    tokens.put(e.getKey(), tokenEmbedding(e.getValue(), "tokenizer.tokens['" + e.getKey() + "']", paths));
                }
            }
        }
        String chat = hasTemplate ? chatTemplate(text(template, "chat_template")) : null;
        return new TokenizerSettings(source, sourceModel, Collections.unmodifiableMap(tokens), pad, chat);
    }

    /** Every token's source model must be merged (mergekit asserts it while building the embeddings). */
    void checkSources(Path base, java.util.List<Path> models) throws ConfigException {
        for (Map.Entry<String, TokenEmbedding> e : tokens.entrySet()) {
            Path m = e.getValue().model();
            if (m != null && !m.equals(base) && !models.contains(m))
                throw new ConfigException("tokenizer.tokens['" + e.getKey() + "'] names " + m
                        + ", which is not one of the models merged (base_model or models)");
        }
    }

    private static TokenEmbedding tokenEmbedding(JsonNode node, String where, PathResolver paths) throws ConfigException {
        if (node == null || !node.isObject()) throw new ConfigException(where + " must be a mapping with source and force");
        checkKeys(node, Set.of("source", "force"), where);
        boolean force = false;
        JsonNode f = node.get("force");
        if (f != null && !f.isNull()) {
            if (!f.isBoolean()) throw new ConfigException(where + ".force must be true or false, got " + f);
            force = f.asBoolean();
        }
        JsonNode s = node.get("source");
        // mergekit accepts an entry without a source and then fails on it when the embeddings are built.
        if (s == null || s.isNull())
            throw new ConfigException(where + ".source is missing: give a model path, {kind: model_token, model: PATH, "
                    + "token: TEXT | token_id: N} or {kind: zero}");
        if (s.isValueNode())
            return new TokenEmbedding(EmbeddingKind.MODEL, paths.resolve(text(s, where + ".source"), where + ".source"),
                    -1, null, force);
        if (!s.isObject()) throw new ConfigException(where + ".source must be a model path or a mapping with 'kind'");
        String kind = s.has("kind") ? text(s.get("kind"), where + ".source.kind") : null;
        if ("zero".equals(kind)) {
            checkKeys(s, Set.of("kind"), where + ".source");
            return new TokenEmbedding(EmbeddingKind.ZERO, null, -1, null, force);
        }
        if (!"model_token".equals(kind))
            throw new ConfigException(where + ".source.kind must be 'model_token' or 'zero', got " + s.get("kind"));
        checkKeys(s, Set.of("kind", "model", "token", "token_id"), where + ".source");
        if (!s.has("model")) throw new ConfigException(where + ".source.model is missing");
        Path model = paths.resolve(text(s.get("model"), where + ".source.model"), where + ".source.model");
        boolean byId = s.has("token_id") && !s.get("token_id").isNull(), byText = s.has("token") && !s.get("token").isNull();
        if (byId == byText)
            throw new ConfigException(where + ".source needs exactly one of token and token_id");
        if (byId) {
            JsonNode id = s.get("token_id");
            if (!id.isIntegralNumber() || !id.canConvertToLong() || id.asLong() < 0)
                throw new ConfigException(where + ".source.token_id must be a whole number >= 0, got " + id);
            return new TokenEmbedding(EmbeddingKind.MODEL_TOKEN, model, id.asLong(), null, force);
        }
        return new TokenEmbedding(EmbeddingKind.MODEL_TOKEN, model, -1, text(s.get("token"), where + ".source.token"), force);
    }

    private static Source source(String s) {
        return switch (s) {
            case "base" -> Source.BASE;
            case "union" -> Source.UNION;
            default -> Source.MODEL;
        };
    }

    /** A model source, with the {@code model:} prefix older mergekit versions wrote. */
    private static String modelPath(String s) {
        return s.startsWith("model:") ? s.substring("model:".length()) : s;
    }

    /** mergekit's chat_template: {@code auto}, a built-in name, or a Jinja template (at least 20 characters with a '{'). */
    static String chatTemplate(String value) throws ConfigException {
        if (value.equals("auto")) return value;
        String builtIn = ChatTemplates.named(value);
        if (builtIn != null) return builtIn;
        if (value.length() < 20 || !value.contains("{"))
            throw new ConfigException("chat_template '" + value + "' is neither 'auto', a built-in template ("
                    + String.join(", ", ChatTemplates.names()) + ") nor a Jinja template");
        return value;
    }

    private static String text(JsonNode v, String where) throws ConfigException {
        if (v == null || !v.isValueNode() || v.isNull()) throw new ConfigException(where + " must be a string");
        return v.asText();
    }

    private static void checkKeys(JsonNode node, Set<String> allowed, String where) throws ConfigException {
        for (Iterator<String> it = node.fieldNames(); it.hasNext(); ) {
            String k = it.next();
            if (!allowed.contains(k))
                throw new ConfigException(where + " has unknown key '" + k + "' (allowed: "
                        + String.join(", ", allowed.stream().sorted().toList()) + ")");
        }
    }
}
