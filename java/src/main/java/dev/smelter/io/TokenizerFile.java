package dev.smelter.io;

import com.fasterxml.jackson.core.JsonGenerator;
import com.fasterxml.jackson.databind.DeserializationFeature;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.json.JsonMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.JsonNodeFactory;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.HashSet;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;

/**
 * A Hugging Face fast tokenizer ({@code tokenizer.json}), read and written as JSON: the model's vocabulary (BPE,
 * WordPiece and WordLevel map tokens to ids; Unigram, as SentencePiece models convert, lists pieces whose index is
 * the id) and the added tokens. Its vocabulary is what transformers' {@code get_vocab()} returns: the model's tokens
 * and the added ones, an added token's id winning where both have the text. Everything else in the file is kept as
 * it is when the file is written back.
 */
public final class TokenizerFile {
    /** JSON with numbers kept as written (Unigram scores, normalizer settings). */
    public static final ObjectMapper JSON = JsonMapper.builder()
            .enable(DeserializationFeature.USE_BIG_DECIMAL_FOR_FLOATS)
            .nodeFactory(JsonNodeFactory.withExactBigDecimals(true))
            .build();

    /** The model types whose vocabulary is read. */
    public static final Set<String> MODEL_TYPES = Set.of("BPE", "Unigram", "WordPiece", "WordLevel");

    /** An entry of {@code added_tokens}, with the settings transformers keeps for it. */
    public record AddedToken(long id, String content, boolean singleWord, boolean lstrip, boolean rstrip,
            boolean normalized, boolean special) {
        /** The same token under another id. */
        public AddedToken withId(long newId) {
            return new AddedToken(newId, content, singleWord, lstrip, rstrip, normalized, special);
        }

        /** Whether the settings (not the id) are the same. */
        public boolean sameSettings(AddedToken o) {
            return content.equals(o.content) && singleWord == o.singleWord && lstrip == o.lstrip && rstrip == o.rstrip
                    && normalized == o.normalized && special == o.special;
        }

        ObjectNode json() {
            ObjectNode n = JSON.createObjectNode();
            n.put("id", id);
            n.put("content", content);
            n.put("single_word", singleWord);
            n.put("lstrip", lstrip);
            n.put("rstrip", rstrip);
            n.put("normalized", normalized);
            n.put("special", special);
            return n;
        }
    }

    private final Path file;
    private final ObjectNode root;
    private final String modelType;
    private final LinkedHashMap<String, Long> modelVocab;  // token -> id, in the file's order
    private final TreeMap<Long, AddedToken> added;  // by id

    private TokenizerFile(Path file, ObjectNode root, String modelType, LinkedHashMap<String, Long> modelVocab,
            TreeMap<Long, AddedToken> added) {
        this.file = file;
        this.root = root;
        this.modelType = modelType;
        this.modelVocab = modelVocab;
        this.added = added;
    }

    /** Reads {@code tokenizer.json}; a file that is not a fast tokenizer of a handled model type fails naming it. */
    public static TokenizerFile read(Path file) throws IOException {
        if (!Files.isRegularFile(file))
            throw new CheckpointFormatException(file, "no tokenizer.json here: Smelter builds vocabularies from Hugging "
                    + "Face fast tokenizers (tokenizer.json); save the tokenizer with transformers "
                    + "(AutoTokenizer.from_pretrained(...).save_pretrained(DIR)) to write one");
        JsonNode tree;
        try {
            tree = JSON.readTree(Files.readString(file, StandardCharsets.UTF_8));
        } catch (IOException | RuntimeException e) {
            throw new CheckpointFormatException(file, "not a JSON tokenizer file: " + e.getMessage());
        }
        if (!(tree instanceof ObjectNode root) || !(root.get("model") instanceof ObjectNode model))
            throw new CheckpointFormatException(file, "not a tokenizer.json: it has no 'model' object");
        String type = model.path("type").asText(null);
        if (type == null) type = model.has("merges") ? "BPE" : null;  // early files left the BPE type out
        if (type == null || !MODEL_TYPES.contains(type))
            throw new CheckpointFormatException(file, "tokenizer model type " + (type == null ? "(none)" : "'" + type + "'")
                    + " is not handled; Smelter reads " + String.join(", ", MODEL_TYPES.stream().sorted().toList())
                    + " tokenizers");
        LinkedHashMap<String, Long> vocab = new LinkedHashMap<>();
        JsonNode v = model.get("vocab");
        if (type.equals("Unigram")) {
            if (!(v instanceof ArrayNode pieces))
                throw new CheckpointFormatException(file, "Unigram model.vocab must be a list of [piece, score]");
            for (int i = 0; i < pieces.size(); i++) {
                JsonNode p = pieces.get(i);
                if (!p.isArray() || p.isEmpty() || !p.get(0).isTextual())
                    throw new CheckpointFormatException(file, "Unigram model.vocab[" + i + "] is not [piece, score]");
                vocab.putIfAbsent(p.get(0).asText(), (long) i);
            }
        } else {
            if (!(v instanceof ObjectNode map))
                throw new CheckpointFormatException(file, type + " model.vocab must be a mapping of token to id");
            for (Iterator<Map.Entry<String, JsonNode>> it = map.fields(); it.hasNext(); ) {
                Map.Entry<String, JsonNode> e = it.next();
                if (!e.getValue().canConvertToLong() || !e.getValue().isIntegralNumber() || e.getValue().asLong() < 0)
                    throw new CheckpointFormatException(file, "model.vocab['" + e.getKey() + "'] is not an id: " + e.getValue());
                vocab.put(e.getKey(), e.getValue().asLong());
            }
        }
        TreeMap<Long, AddedToken> added = new TreeMap<>();
        JsonNode a = root.get("added_tokens");
        if (a != null && !a.isNull()) {
            if (!a.isArray()) throw new CheckpointFormatException(file, "added_tokens must be a list");
            for (JsonNode t : a) {
                if (!t.path("id").isIntegralNumber() || !t.path("content").isTextual())
                    throw new CheckpointFormatException(file, "added_tokens entry without an id and content: " + t);
                added.put(t.get("id").asLong(), new AddedToken(t.get("id").asLong(), t.get("content").asText(),
                        t.path("single_word").asBoolean(false), t.path("lstrip").asBoolean(false),
                        t.path("rstrip").asBoolean(false), t.path("normalized").asBoolean(true),
                        t.path("special").asBoolean(false)));
            }
        }
        return new TokenizerFile(file, root, type, vocab, added);
    }

    public Path file() {
        return file;
    }

    public String modelType() {
        return modelType;
    }

    /** Tokens of the model (without the added tokens): transformers' {@code vocab_size}. */
    public long modelVocabSize() {
        return modelVocab.size();
    }

    /** The added tokens by id. */
    public TreeMap<Long, AddedToken> addedTokens() {
        return new TreeMap<>(added);
    }

    /** transformers' {@code get_vocab()}: the model's tokens, then the added ones (an added token's id wins). */
    public LinkedHashMap<String, Long> vocabulary() {
        LinkedHashMap<String, Long> v = new LinkedHashMap<>(modelVocab);
        for (AddedToken t : added.values()) v.put(t.content(), t.id());
        return v;
    }

    /** The id of {@code token} as the added tokens, then the model, know it; null if neither does. */
    public Long idOf(String token) {
        for (AddedToken t : added.values()) if (t.content().equals(token)) return t.id();
        return modelVocab.get(token);
    }

    /**
     * This tokenizer without the tokens whose id is {@code vocabSize} or more (mergekit's {@code get_stripped_tokenizer}:
     * a tokenizer with more entries than the model has embedding rows): they leave the model's vocabulary, the added
     * tokens and the BPE merges. Only BPE tokenizers can be stripped, as in mergekit.
     */
    public TokenizerFile stripped(long vocabSize) throws IOException {
        Set<String> unused = new HashSet<>();
        for (Map.Entry<String, Long> e : vocabulary().entrySet()) if (e.getValue() >= vocabSize) unused.add(e.getKey());
        if (unused.isEmpty()) return this;
        if (!modelType.equals("BPE"))
            throw new CheckpointFormatException(file, unused.size() + " tokens have ids >= the model's vocab_size "
                    + vocabSize + ", and only BPE tokenizers can be stripped of them (this one is " + modelType + ")");
        ObjectNode copy = root.deepCopy();
        ObjectNode model = (ObjectNode) copy.get("model");
        ObjectNode vocab = (ObjectNode) model.get("vocab");
        LinkedHashMap<String, Long> keptVocab = new LinkedHashMap<>();
        for (Map.Entry<String, Long> e : modelVocab.entrySet()) {
            if (unused.contains(e.getKey())) vocab.remove(e.getKey());
            else keptVocab.put(e.getKey(), e.getValue());
        }
        if (model.get("merges") instanceof ArrayNode merges) {
            ArrayNode kept = JSON.createArrayNode();
            for (JsonNode m : merges) {
                List<String> parts = new ArrayList<>();
                if (m.isTextual() && m.asText().chars().filter(c -> c == ' ').count() == 1)
                    parts.addAll(List.of(m.asText().split(" ", -1)));
                else if (m.isArray()) m.forEach(p -> parts.add(p.asText()));
                else throw new CheckpointFormatException(file, "unexpected BPE merge " + m);
                if (parts.stream().noneMatch(unused::contains)) kept.add(m);
            }
            model.set("merges", kept);
        }
        TreeMap<Long, AddedToken> keptAdded = new TreeMap<>(added.headMap(vocabSize));
        return new TokenizerFile(file, copy, modelType, keptVocab, keptAdded);
    }

    /**
     * This tokenizer with {@code newAdded} as its added tokens (transformers writes them sorted by id), as the text of
     * a {@code tokenizer.json}.
     */
    public byte[] withAddedTokens(Map<Long, AddedToken> newAdded) throws IOException {
        ObjectNode copy = root.deepCopy();
        ArrayNode list = JSON.createArrayNode();
        newAdded.values().stream().sorted(Comparator.comparingLong(AddedToken::id)).forEach(t -> list.add(t.json()));
        copy.set("added_tokens", list);
        return (JSON.writerWithDefaultPrettyPrinter().without(JsonGenerator.Feature.WRITE_BIGDECIMAL_AS_PLAIN)
                .writeValueAsString(copy) + "\n").getBytes(StandardCharsets.UTF_8);
    }
}
