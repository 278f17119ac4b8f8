package dev.smelter.merge;

import com.fasterxml.jackson.core.JsonGenerator;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import dev.smelter.config.TokenizerSettings;
import dev.smelter.io.CheckpointWriter;
import dev.smelter.io.TokenizerFile;
import dev.smelter.io.TokenizerFile.AddedToken;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * The tokenizer files of a merge whose config has tokenizer keys (as mergekit saves its tokenizer): with an output
 * vocabulary, {@code tokenizer.json} with its added tokens, {@code tokenizer_config.json} with its
 * {@code added_tokens_decoder}, the special tokens map and the slow tokenizer's files of the tokenizer source (where
 * the vocabulary kept all of its tokens); with a {@code chat_template} alone, the base's tokenizer files with that
 * template. The chat template goes into {@code tokenizer_config.json} (a {@code chat_template.jinja} of the source is
 * then left out, since transformers would prefer it).
 */
public final class TokenizerOutput {
    private final Map<String, byte[]> files = new LinkedHashMap<>();
    private final List<Path> copies = new ArrayList<>();
    private final List<String> warnings = new ArrayList<>();
    private long vocabSize = -1;

    private TokenizerOutput() {}

    /**
     * The tokenizer files to write, or null where the config has no tokenizer keys (the base's files are copied as
     * they are, see {@link SideFiles}).
     *
     * @param donor the folder of the base (or the first model)
     * @param referenced every model of the config, the base first (for {@code chat_template: auto})
     */
    public static TokenizerOutput of(TokenizerSettings settings, Vocabulary vocab, Path donor, List<Path> referenced,
            boolean copyTokenizer) throws IOException {
        if (settings == null) return null;
        TokenizerOutput out = new TokenizerOutput();
        String template = settings.chatTemplate();
        if ("auto".equals(template)) {
            template = autoTemplate(referenced);
            if (template == null) out.warnings.add("chat_template auto: no model has a chat template; none is set");
        }
        if (vocab != null) {
            Path dir = vocab.tokenizerDir();
            out.files.put("tokenizer.json", vocab.tokenizerJson());
            ObjectNode cfg = readObject(dir.resolve("tokenizer_config.json"));
            cfg.set("added_tokens_decoder", decoder(vocab.addedTokens()));
            if (template != null) cfg.put("chat_template", template);
            out.files.put("tokenizer_config.json", json(cfg));
            List<String> copied = new ArrayList<>(List.of("special_tokens_map.json"));
            if (!vocab.stripped()) copied.addAll(List.of("tokenizer.model", "vocab.json", "merges.txt"));
            if (template == null) copied.add("chat_template.jinja");
            for (String f : copied) if (Files.isRegularFile(dir.resolve(f))) out.copies.add(dir.resolve(f));
            out.vocabSize = vocab.rows();
            return out;
        }
        if (!copyTokenizer) {
            if (settings.chatTemplate() != null)
                out.warnings.add("chat_template is not written: --no-copy-tokenizer writes no tokenizer files");
            return out;
        }
        for (String f : CheckpointMerger.TOKENIZER_FILES) {
            Path p = donor.resolve(f);
            if (!Files.isRegularFile(p) || f.equals("tokenizer_config.json")) continue;
            if (template != null && f.equals("chat_template.jinja")) continue;
            out.copies.add(p);
        }
        Path cfgFile = donor.resolve("tokenizer_config.json");
        if (template != null) {
            ObjectNode cfg = readObject(cfgFile);
            cfg.put("chat_template", template);
            out.files.put("tokenizer_config.json", json(cfg));
        } else if (Files.isRegularFile(cfgFile)) {
            out.copies.add(cfgFile);
        }
        return out;
    }

    /** transformers' {@code added_tokens_decoder}: each added token's settings under its id. */
    private static ObjectNode decoder(Map<Long, AddedToken> added) {
        ObjectNode d = TokenizerFile.JSON.createObjectNode();
        for (AddedToken a : added.values()) {
            ObjectNode t = d.putObject(Long.toString(a.id()));
            t.put("content", a.content());
            t.put("lstrip", a.lstrip());
            t.put("normalized", a.normalized());
            t.put("rstrip", a.rstrip());
            t.put("single_word", a.singleWord());
            t.put("special", a.special());
        }
        return d;
    }

    /**
     * mergekit's {@code chat_template: auto}: the template most of the models have (compared without surrounding
     * whitespace), the first of equally common ones in config order; null where none has one.
     */
    static String autoTemplate(List<Path> models) {
        Map<String, Integer> counts = new LinkedHashMap<>();
        for (Path m : models) {
            String t = templateOf(Vocabulary.folder(m));
            if (t != null && !t.isBlank()) counts.merge(t.strip(), 1, Integer::sum);
        }
        String best = null;
        for (Map.Entry<String, Integer> e : counts.entrySet())
            if (best == null || e.getValue() > counts.get(best)) best = e.getKey();
        return best;
    }

    /**
     * A model's chat template as transformers loads it: {@code chat_template.jinja}, else {@code chat_template.json},
     * else {@code tokenizer_config.json} (a list of named templates gives the one named "default"); null if none.
     */
    static String templateOf(Path dir) {
        try {
            Path jinja = dir.resolve("chat_template.jinja");
            if (Files.isRegularFile(jinja)) return Files.readString(jinja);
            for (String f : List.of("chat_template.json", "tokenizer_config.json")) {
                Path p = dir.resolve(f);
                if (!Files.isRegularFile(p)) continue;
                JsonNode t = TokenizerFile.JSON.readTree(Files.readString(p)).path("chat_template");
                if (t.isTextual()) return t.asText();
                if (t.isArray())
                    for (JsonNode named : t)
                        if ("default".equals(named.path("name").asText(null)) && named.path("template").isTextual())
                            return named.get("template").asText();
            }
        } catch (IOException | RuntimeException e) {
            return null;  // as mergekit: a tokenizer that cannot be read offers no template
        }
        return null;
    }

    private static ObjectNode readObject(Path p) throws IOException {
        if (!Files.isRegularFile(p)) return TokenizerFile.JSON.createObjectNode();
        JsonNode n;
        try {
            n = TokenizerFile.JSON.readTree(Files.readString(p));
        } catch (IOException | RuntimeException e) {
            throw new dev.smelter.io.CheckpointFormatException(p, "not valid JSON: " + e.getMessage());
        }
        if (!(n instanceof ObjectNode o)) throw new dev.smelter.io.CheckpointFormatException(p, "not a JSON object");
        return o;
    }

    static byte[] json(JsonNode n) throws IOException {
        return (TokenizerFile.JSON.writerWithDefaultPrettyPrinter().without(JsonGenerator.Feature.WRITE_BIGDECIMAL_AS_PLAIN)
                .writeValueAsString(n) + "\n").getBytes(StandardCharsets.UTF_8);
    }

    /** {@code vocab_size} for config.json: the output's embedding rows, or -1 to leave it. */
    public long vocabSize() {
        return vocabSize;
    }

    public List<String> warnings() {
        return warnings;
    }

    /** Writes the files into the checkpoint. */
    void write(CheckpointWriter writer) throws IOException {
        for (Map.Entry<String, byte[]> f : files.entrySet()) writer.writeFile(f.getKey(), f.getValue());
        for (Path p : copies) writer.copyFile(p);
    }
}
