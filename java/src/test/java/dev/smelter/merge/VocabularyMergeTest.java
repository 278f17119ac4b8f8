package dev.smelter.merge;

import static dev.smelter.merge.TokenizerFixtures.EMBED;
import static dev.smelter.merge.TokenizerFixtures.HEAD;
import static dev.smelter.merge.TokenizerFixtures.JSON;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import dev.smelter.DType;
import dev.smelter.cli.CliRun;
import dev.smelter.config.ChatTemplates;
import dev.smelter.merge.TokenizerFixtures.Added;
import dev.smelter.merge.TokenizerFixtures.Input;
import dev.smelter.merge.TokenizerFixtures.TokenRule;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Merges of models whose vocabularies differ, with mergekit's tokenizer keys: the output's tokenizer files and ids,
 * and every embedding and head row against a float64 reading of mergekit's rules (PermutedEmbeddings), merged by
 * the method's float64 formula.
 */
class VocabularyMergeTest {
    @TempDir
    static Path dir;

    static final int HIDDEN = 7;
    static final List<String> BASE_VOCAB = List.of("<unk>", "<s>", "</s>", "a", "b", "c", "ab", "bc", "abc", "d");
    static final List<String> OTHER_VOCAB = List.of("<unk>", "<s>", "</s>", "a", "b", "c", "e", "ce", "abc", "f");
    static final String TEMPLATE_X = "{% for m in messages %}X{{ m['content'] }}{% endfor %}";
    static final String TEMPLATE_Y = "{% for m in messages %}Y{{ m['content'] }}{% endfor %}";

    /** base: llama2-like specials in the vocabulary and one added special; chat: + two ChatML tokens; other: other tokens. */
    static List<Added> specials() {
        return new ArrayList<>(List.of(new Added(0, "<unk>", true), new Added(1, "<s>", true), new Added(2, "</s>", true)));
    }

    static JsonNode baseTok, chatTok, otherTok;

    @BeforeAll
    static void checkpoints() throws Exception {
        List<Added> base = specials();
        base.add(new Added(10, "<|eot|>", true));
        baseTok = TokenizerFixtures.bpe(BASE_VOCAB, base);
        List<Added> chat = new ArrayList<>(base);
        chat.add(new Added(11, "<|im_start|>", true));
        chat.add(new Added(12, "<|im_end|>", true));
        chatTok = TokenizerFixtures.bpe(BASE_VOCAB, chat);
        List<Added> other = specials();
        other.add(new Added(10, "<|im_end|>", true));
        otherTok = TokenizerFixtures.bpe(OTHER_VOCAB, other);
        for (DType d : List.of(DType.F32, DType.BF16)) {
            String s = d.name().toLowerCase();
            TokenizerFixtures.model(dir.resolve("base-" + s), d, 11, 11, HIDDEN, 1, baseTok, TEMPLATE_X);
            // rows beyond the tokenizer (padding to 16), as real checkpoints have them
            TokenizerFixtures.model(dir.resolve("chat-" + s), d, 16, 16, HIDDEN, 2, chatTok, TEMPLATE_Y);
            TokenizerFixtures.model(dir.resolve("other-" + s), d, 11, 11, HIDDEN, 3, otherTok, TEMPLATE_Y);
        }
    }

    static CliRun.Run merge(Path config, Path out, String... extra) {
        List<String> a = new ArrayList<>(List.of("merge", "--device", "cpu", "-q", config.toString(), out.toString()));
        a.addAll(List.of(extra));
        return CliRun.cli(a.toArray(String[]::new));
    }

    /** The union's ids, worked out by hand from mergekit's build_union_tokenizer and the tokenizers' add_tokens. */
    static List<String> unionTokens() {
        List<String> t = new ArrayList<>(BASE_VOCAB);
        t.add("<|eot|>");  // 10: the base's added token
        t.addAll(List.of("e", "ce", "f"));  // 11-13: other's model tokens the base lacks, as plain added tokens
        t.addAll(List.of("<|im_start|>", "<|im_end|>"));  // 14-15: the models' added tokens
        return t;
    }

    static Map<String, Long> ids(List<String> tokens) {
        Map<String, Long> m = new LinkedHashMap<>();
        for (int i = 0; i < tokens.size(); i++) m.put(tokens.get(i), (long) i);
        return m;
    }

    @Test
    void unionTaskArithmeticFollowsMergekitRowByRow() throws Exception {
        Path cfg = dir.resolve("union-ta.yml"), out = dir.resolve("union-ta");
        Files.writeString(cfg, """
                merge_method: task_arithmetic
                base_model: base-f32
                models:
                  - model: chat-f32
                    parameters: {weight: 0.7}
                  - model: other-f32
                    parameters: {weight: 0.4}
                tokenizer_source: union
                chat_template: auto
                """);
        CliRun.Run r = merge(cfg, out);
        assertEquals(0, r.code(), r.err());
        List<String> tokens = unionTokens();
        assertEquals(ids(tokens), TokenizerFixtures.vocabulary(out.resolve("tokenizer.json")));
        JsonNode tj = JSON.readTree(out.resolve("tokenizer.json").toFile());
        JsonNode e = null, imEnd = null;
        for (JsonNode a : tj.get("added_tokens")) {
            if (a.get("content").asText().equals("e")) e = a;
            if (a.get("content").asText().equals("<|im_end|>")) imEnd = a;
        }
        assertTrue(e != null && !e.get("special").asBoolean() && e.get("normalized").asBoolean(), "a plain added token: " + e);
        assertTrue(imEnd != null && imEnd.get("special").asBoolean() && imEnd.get("id").asLong() == 15, "" + imEnd);
        assertEquals(tj.get("model"), baseTok.get("model"), "the base's model section is kept");
        JsonNode tc = JSON.readTree(out.resolve("tokenizer_config.json").toFile());
        assertEquals("<|im_start|>", tc.get("added_tokens_decoder").get("14").get("content").asText());
        assertTrue(tc.get("added_tokens_decoder").get("14").get("special").asBoolean());
        assertEquals(TEMPLATE_Y, tc.get("chat_template").asText(), "auto: the template two of three models have");
        assertEquals(16, JSON.readTree(out.resolve("config.json").toFile()).get("vocab_size").asLong());
        assertTrue(Files.isRegularFile(out.resolve("special_tokens_map.json")));

        for (String tensor : List.of(EMBED, HEAD)) {
            List<Input> in = List.of(
                    TokenizerFixtures.input(dir.resolve("base-f32"), tensor, TokenizerFixtures.vocabulary(baseTok), 11),
                    TokenizerFixtures.input(dir.resolve("chat-f32"), tensor, TokenizerFixtures.vocabulary(chatTok), 16),
                    TokenizerFixtures.input(dir.resolve("other-f32"), tensor, TokenizerFixtures.vocabulary(otherTok), 11));
            double[][][] p = TokenizerFixtures.permuted(in, 0, tokens, tokens.size(), Map.of());
            double[][] got = TokenizerFixtures.rows(out, tensor);
            assertEquals(tokens.size(), got.length, tensor);
            for (int id = 0; id < tokens.size(); id++)
                for (int j = 0; j < HIDDEN; j++) {
                    double want = p[0][id][j] + 0.7 * (p[1][id][j] - p[0][id][j]) + 0.4 * (p[2][id][j] - p[0][id][j]);
                    assertEquals(want, got[id][j], 1e-6 * Math.max(1e-2, Math.abs(want)), tensor + " row " + tokens.get(id));
                }
            // Tokens only the ChatML model has come through unchanged: every model takes its row, all deltas are zero.
            double[] chatImStart = in.get(1).rows()[11];
            for (int j = 0; j < HIDDEN; j++) assertEquals(chatImStart[j], got[14][j], 1e-7, "<|im_start|> is the chat model's row");
        }
    }

    @Test
    void tokenSettingsPaddingAndLinearWithoutBaseInBf16() throws Exception {
        Path cfg = dir.resolve("union-linear.yml"), out = dir.resolve("union-linear");
        Files.writeString(cfg, """
                merge_method: linear
                models:
                  - model: base-bf16
                    parameters: {weight: 0.5}
                  - model: chat-bf16
                    parameters: {weight: 0.3}
                  - model: other-bf16
                    parameters: {weight: 0.2}
                tokenizer:
                  source: union
                  pad_to_multiple_of: 8
                  tokens:
                    "<|im_start|>": {source: {kind: zero}}
                    d: {source: chat-bf16, force: true}
                    "<|new|>": {source: {kind: model_token, model: other-bf16, token: f}}
                    "<|one|>": {source: {kind: model_token, model: chat-bf16, token_id: 3}}
                chat_template: chatml
                """);
        CliRun.Run r = merge(cfg, out);
        assertEquals(0, r.code(), r.err());
        List<String> tokens = new ArrayList<>(unionTokens());
        tokens.addAll(List.of("<|new|>", "<|one|>"));  // 16, 17: added for their settings
        assertEquals(ids(tokens), TokenizerFixtures.vocabulary(out.resolve("tokenizer.json")));
        assertEquals(24, JSON.readTree(out.resolve("config.json").toFile()).get("vocab_size").asLong(), "18 padded to 8s");
        assertEquals(ChatTemplates.named("chatml"),
                JSON.readTree(out.resolve("tokenizer_config.json").toFile()).get("chat_template").asText());

        Map<String, TokenRule> rules = new HashMap<>();
        rules.put("<|im_start|>", new TokenRule("zero", -1, null, -1, false));
        rules.put("d", new TokenRule("model", 1, null, -1, true));
        rules.put("<|new|>", new TokenRule("model_token", 2, "f", -1, false));
        rules.put("<|one|>", new TokenRule("model_token", 1, null, 3, false));
        for (String tensor : List.of(EMBED, HEAD)) {
            List<Input> in = List.of(
                    TokenizerFixtures.input(dir.resolve("base-bf16"), tensor, TokenizerFixtures.vocabulary(baseTok), 11),
                    TokenizerFixtures.input(dir.resolve("chat-bf16"), tensor, TokenizerFixtures.vocabulary(chatTok), 16),
                    TokenizerFixtures.input(dir.resolve("other-bf16"), tensor, TokenizerFixtures.vocabulary(otherTok), 11));
            double[][][] p = TokenizerFixtures.permuted(in, -1, tokens, 24, rules);  // no base_model: no base rule
            double[][] got = TokenizerFixtures.rows(out, tensor);
            assertEquals(24, got.length);
            for (int id = 0; id < 24; id++)
                for (int j = 0; j < HIDDEN; j++) {
                    double want = TokenizerFixtures.round(0.5 * p[0][id][j] + 0.3 * p[1][id][j] + 0.2 * p[2][id][j], DType.BF16);
                    String what = tensor + " row " + (id < tokens.size() ? tokens.get(id) : "padding " + id);
                    assertEquals(want, got[id][j], Math.abs(want) * 0x1p-7 + 1e-9, what);
                }
            // The forced token is the chat model's row in every model, so the output is that row.
            double[] chatD = in.get(1).rows()[9];
            for (int j = 0; j < HIDDEN; j++) assertEquals(chatD[j], got[9][j], Math.abs(chatD[j]) * 0x1p-8, "forced d");
        }
    }

    @Test
    void baseAndModelSourcesAndTheMeanRule() throws Exception {
        // tokenizer_source: a model outside the merge's base: the chat model's vocabulary; the base lacks the ChatML
        // tokens, the other model has <|im_end|> at another id; with a base, the mean is of the models that have it.
        Path cfg = dir.resolve("model-src.yml"), out = dir.resolve("model-src");
        Files.writeString(cfg, """
                merge_method: task_arithmetic
                base_model: base-f32
                models:
                  - model: chat-f32
                    parameters: {weight: 0.5}
                  - model: other-f32
                    parameters: {weight: 0.5}
                tokenizer_source: model:chat-f32
                """);
        CliRun.Run r = merge(cfg, out);
        assertEquals(0, r.code(), r.err());
        List<String> tokens = new ArrayList<>(BASE_VOCAB);
        tokens.addAll(List.of("<|eot|>", "<|im_start|>", "<|im_end|>"));
        assertEquals(ids(tokens), TokenizerFixtures.vocabulary(out.resolve("tokenizer.json")));
        List<Input> in = List.of(
                TokenizerFixtures.input(dir.resolve("base-f32"), EMBED, TokenizerFixtures.vocabulary(baseTok), 11),
                TokenizerFixtures.input(dir.resolve("chat-f32"), EMBED, TokenizerFixtures.vocabulary(chatTok), 16),
                TokenizerFixtures.input(dir.resolve("other-f32"), EMBED, TokenizerFixtures.vocabulary(otherTok), 11));
        double[][][] p = TokenizerFixtures.permuted(in, 0, tokens, tokens.size(), Map.of());
        double[][] got = TokenizerFixtures.rows(out, EMBED);
        for (int id = 0; id < tokens.size(); id++)
            for (int j = 0; j < HIDDEN; j++) {
                double want = p[0][id][j] + 0.5 * (p[1][id][j] - p[0][id][j]) + 0.5 * (p[2][id][j] - p[0][id][j]);
                assertEquals(want, got[id][j], 1e-6 * Math.max(1e-2, Math.abs(want)), tokens.get(id));
            }
        // <|im_end|>: the base's row is the mean of chat's (id 12) and other's (id 10)
        for (int j = 0; j < HIDDEN; j++)
            assertEquals((float) ((in.get(1).rows()[12][j] + in.get(2).rows()[10][j]) / 2), p[0][12][j], 0);

        // tokenizer_source: base: the base's 11 tokens; the others' rows are gathered by token
        Path base = dir.resolve("base-src.yml"), outBase = dir.resolve("base-src");
        Files.writeString(base, Files.readString(cfg).replace("tokenizer_source: model:chat-f32", "tokenizer_source: base"));
        assertEquals(0, merge(base, outBase).code());
        assertEquals(ids(tokens.subList(0, 11)), TokenizerFixtures.vocabulary(outBase.resolve("tokenizer.json")));
        assertEquals(11, TokenizerFixtures.rows(outBase, HEAD).length);
        assertEquals(TEMPLATE_X, JSON.readTree(outBase.resolve("tokenizer_config.json").toFile()).get("chat_template").asText(),
                "the base's tokenizer_config.json, its template kept");
    }

    @Test
    void modelWideTiesTrimsTheAlignedRows() throws Exception {
        // trim_scope: model ranks every aligned row: a token only one model has has zero deltas everywhere, so the
        // output is that model's row whatever the threshold; the dry run says which tensors are gathered.
        Path cfg = dir.resolve("ties-model.yml"), out = dir.resolve("ties-model");
        Files.writeString(cfg, """
                merge_method: ties
                base_model: base-f32
                models:
                  - model: chat-f32
                    parameters: {weight: 0.6, density: 0.5}
                  - model: other-f32
                    parameters: {weight: 0.4, density: 0.5}
                tokenizer_source: union
                smelter: {trim_scope: model}
                """);
        CliRun.Run dry = merge(cfg, out, "--dry-run");
        assertEquals(0, dry.code(), dry.err());
        assertTrue(dry.out().contains("rows gathered by token into the output vocabulary (16 tokens)"), dry.out());
        CliRun.Run r = merge(cfg, out);
        assertEquals(0, r.code(), r.err());
        double[][] got = TokenizerFixtures.rows(out, EMBED), chat = TokenizerFixtures.rows(dir.resolve("chat-f32"), EMBED),
                other = TokenizerFixtures.rows(dir.resolve("other-f32"), EMBED);
        assertEquals(16, got.length);
        for (int j = 0; j < HIDDEN; j++) {
            assertEquals(chat[11][j], got[14][j], 0, "<|im_start|>: the chat model's row");
            assertEquals(other[7][j], got[12][j], 0, "ce: the other model's row");
        }
    }

    @Test
    void theDonorIsStrippedOfTokensBeyondItsVocabSize() throws Exception {
        // mergekit's get_stripped_tokenizer: a base whose tokenizer has a token at id 11 but only 11 rows
        // (vocab_size 11) loses it, from the added tokens and from the BPE model's vocabulary and merges.
        List<Added> added = specials();
        added.add(new Added(12, "<|eot|>", true));
        // the model's "x" (10) stays, "xa" (11) and the added <|eot|> (12) are beyond the 11 rows
        ObjectNode tok = TokenizerFixtures.bpe(List.of("<unk>", "<s>", "</s>", "a", "b", "c", "ab", "bc", "abc", "d", "x",
                "xa"), added);
        ((com.fasterxml.jackson.databind.node.ArrayNode) tok.get("model").get("merges")).add("xa b");
        Path strip = dir.resolve("strip-base");
        TokenizerFixtures.model(strip, DType.F32, 11, 11, HIDDEN, 9, tok, null);
        Files.writeString(strip.resolve("tokenizer.model"), "slow");
        Path cfg = dir.resolve("strip.yml"), out = dir.resolve("strip-out");
        Files.writeString(cfg, """
                merge_method: task_arithmetic
                base_model: strip-base
                models:
                  - model: chat-f32
                    parameters: {weight: 0.5}
                tokenizer_source: base
                """);
        CliRun.Run r = merge(cfg, out);
        assertEquals(0, r.code(), r.err() + r.out());
        JsonNode written = JSON.readTree(out.resolve("tokenizer.json").toFile());
        List<String> tokens = new ArrayList<>(BASE_VOCAB);
        tokens.add("x");
        assertEquals(ids(tokens), TokenizerFixtures.vocabulary(written));
        assertFalse(written.get("model").get("vocab").has("xa"));
        assertEquals(0, written.get("added_tokens").findValuesAsText("content").stream().filter("<|eot|>"::equals).count());
        List<String> merges = new ArrayList<>();
        written.get("model").get("merges").forEach(m -> merges.add(m.asText()));
        assertEquals(List.of("a b", "b c", "x a"), merges, "merges with a part that is gone are gone (mergekit checks the parts)");
        assertFalse(Files.exists(out.resolve("tokenizer.model")), "the slow tokenizer no longer matches");
        assertEquals(11, TokenizerFixtures.rows(out, EMBED).length);
    }

    @Test
    void sweepsAlignTheEmbeddingsToo() throws Exception {
        Path cfg = dir.resolve("sweep.yml"), out = dir.resolve("sweep-out");
        Files.writeString(cfg, """
                merge_method: task_arithmetic
                base_model: base-f32
                models:
                  - model: chat-f32
                    parameters: {weight: 0.7}
                  - model: other-f32
                    parameters: {weight: 0.4}
                tokenizer_source: union
                chat_template: auto
                """);
        CliRun.Run r = CliRun.cli("sweep", "--device", "cpu", "-q", cfg.toString(), out.toString(), "--grid", "lambda=1,0.5");
        assertEquals(0, r.code(), r.err());
        Path one = out.resolve("lambda=1");
        assertTrue(Files.isDirectory(one), r.out());
        Path single = dir.resolve("sweep-single");
        assertEquals(0, merge(cfg, single).code());
        for (String t : List.of(EMBED, HEAD))
            assertTrue(java.util.Arrays.deepEquals(TokenizerFixtures.rows(single, t), TokenizerFixtures.rows(one, t)), t);
        assertEquals(Files.readString(single.resolve("tokenizer.json")), Files.readString(one.resolve("tokenizer.json")));
        assertEquals(16, JSON.readTree(one.resolve("config.json").toFile()).get("vocab_size").asLong());
    }

    @Test
    void chatTemplateWithoutVocabularyEditsTheCopiedTokenizerConfig() throws Exception {
        Path cfg = dir.resolve("tmpl.yml"), out = dir.resolve("tmpl");
        String literal = "{% for m in messages %}<<{{ m['role'] }}>>{{ m['content'] }}{% endfor %}";
        TokenizerFixtures.copyTree(dir.resolve("base-f32"), dir.resolve("base-f32-copy"));
        Files.writeString(cfg, """
                merge_method: task_arithmetic
                base_model: base-f32
                models:
                  - model: base-f32-copy
                    parameters: {weight: 0.5}
                chat_template: "%s"
                """.formatted(literal));
        CliRun.Run r = merge(cfg, out);
        assertEquals(0, r.code(), r.err());
        JsonNode tc = JSON.readTree(out.resolve("tokenizer_config.json").toFile());
        assertEquals(literal, tc.get("chat_template").asText());
        assertEquals(Files.readString(dir.resolve("base-f32/tokenizer.json")), Files.readString(out.resolve("tokenizer.json")),
                "no vocabulary: the base's tokenizer.json as it is");
        assertFalse(JSON.readTree(out.resolve("config.json").toFile()).get("vocab_size").asLong() != 11);
    }

    @Test
    void aBuiltTokenizerIsWrittenEvenWithNoCopyTokenizer() throws Exception {
        // mergekit saves the tokenizer it builds whatever --copy-tokenizer says; a chat template alone needs the copy.
        Path cfg = dir.resolve("nocopy.yml");
        Files.writeString(cfg, """
                merge_method: task_arithmetic
                base_model: base-f32
                models:
                  - model: chat-f32
                    parameters: {weight: 0.5}
                tokenizer_source: union
                """);
        CliRun.Run r = merge(cfg, dir.resolve("nocopy"), "--no-copy-tokenizer");
        assertEquals(0, r.code(), r.err());
        assertEquals(13, TokenizerFixtures.vocabulary(dir.resolve("nocopy/tokenizer.json")).size());

        TokenizerFixtures.copyTree(dir.resolve("base-f32"), dir.resolve("base-f32-twin"));
        Files.writeString(cfg, """
                merge_method: task_arithmetic
                base_model: base-f32
                models:
                  - model: base-f32-twin
                    parameters: {weight: 0.5}
                chat_template: llama3
                """);
        r = merge(cfg, dir.resolve("nocopy-tmpl"), "--no-copy-tokenizer");
        assertEquals(0, r.code(), r.err());
        assertTrue(r.err().contains("chat_template is not written: --no-copy-tokenizer writes no tokenizer files"), r.err());
        assertFalse(Files.exists(dir.resolve("nocopy-tmpl/tokenizer_config.json")));
        r = merge(cfg, dir.resolve("copy-tmpl"));
        assertEquals(0, r.code(), r.err());
        assertEquals(ChatTemplates.named("llama3"),
                JSON.readTree(dir.resolve("copy-tmpl/tokenizer_config.json").toFile()).get("chat_template").asText());
    }

    @Test
    void badTokenizerSettingsAreConfigErrors() throws Exception {
        String head = """
                merge_method: task_arithmetic
                base_model: base-f32
                models:
                  - model: chat-f32
                    parameters: {weight: 0.5}
                """;
        Map<String, String> cases = new LinkedHashMap<>();
        cases.put("tokenizer_source: union\ntokenizer: {source: base}\n", "tokenizer_source and tokenizer are both given");
        cases.put("tokenizer: {tokens: {x: {force: true}}}\n", "tokenizer.tokens['x'].source is missing");
        cases.put("tokenizer: {pad_to_multiple_of: 0}\n", "pad_to_multiple_of must be a whole number >= 1");
        cases.put("tokenizer: {tokens: {x: {source: {kind: model_token, model: chat-f32}}}}\n", "exactly one of token and token_id");
        cases.put("tokenizer: {tokens: {x: {source: {kind: random}}}}\n", "kind must be 'model_token' or 'zero'");
        cases.put("chat_template: chatm\n", "chat_template 'chatm' is neither 'auto', a built-in template (chatml");
        cases.put("tokenizer_source: ./nowhere\n", "tokenizer_source (base, union or a model path) './nowhere' does not exist");
        int i = 0;
        for (Map.Entry<String, String> c : cases.entrySet()) {
            Path cfg = dir.resolve("bad" + i++ + ".yml");
            Files.writeString(cfg, head + c.getKey());
            CliRun.Run r = merge(cfg, dir.resolve("bad-out"));
            assertEquals(2, r.code(), c.getKey() + r.err());
            assertTrue(r.err().contains(c.getValue()), c.getKey() + ": " + r.err());
        }
        // a token source that is not one of the merged models
        Path cfg = dir.resolve("bad-src.yml");
        Files.writeString(cfg, head + "tokenizer: {tokens: {x: {source: other-f32}}}\n");
        CliRun.Run r = merge(cfg, dir.resolve("bad-out"));
        assertEquals(2, r.code(), r.err());
        assertTrue(r.err().contains("names " + dir.resolve("other-f32") + ", which is not one of the models merged"), r.err());
        assertFalse(Files.exists(dir.resolve("bad-out")));
    }

    @Test
    void unknownTokenizerFormatsNameTheFile() throws Exception {
        Path noTok = dir.resolve("no-tok"), odd = dir.resolve("odd-tok");
        TokenizerFixtures.model(noTok, DType.F32, 11, 11, HIDDEN, 5, null, null);
        ObjectNode weird = baseTok.deepCopy();
        ((ObjectNode) weird.get("model")).put("type", "Sentencepiece2");
        TokenizerFixtures.model(odd, DType.F32, 11, 11, HIDDEN, 6, weird, null);
        for (Path base : List.of(noTok, odd)) {
            Path cfg = dir.resolve(base.getFileName() + ".yml");
            Files.writeString(cfg, """
                    merge_method: task_arithmetic
                    base_model: %s
                    models:
                      - model: chat-f32
                        parameters: {weight: 0.5}
                    tokenizer_source: union
                    """.formatted(base.getFileName()));
            CliRun.Run r = merge(cfg, dir.resolve("fmt-out"));
            assertEquals(1, r.code(), r.err());
            assertTrue(r.err().contains(base.resolve("tokenizer.json").toString()), r.err());
            assertTrue(r.err().contains(base == noTok ? "no tokenizer.json here" : "tokenizer model type 'Sentencepiece2' is not handled"),
                    r.err());
            assertFalse(Files.exists(dir.resolve("fmt-out")));
        }
    }

    @Test
    void unigramVocabulariesAreReadByPosition() throws Exception {
        // A SentencePiece-converted Unigram tokenizer (gemma/t5 style): ids are the positions of [piece, score] pairs.
        ObjectNode uni = JSON.createObjectNode();
        uni.putArray("added_tokens").addObject().put("id", 0).put("content", "<pad>").put("single_word", false)
                .put("lstrip", false).put("rstrip", false).put("normalized", false).put("special", true);
        ObjectNode model = uni.putObject("model");
        model.put("type", "Unigram").put("unk_id", 1);
        var pieces = model.putArray("vocab");
        for (String p : List.of("<pad>", "<unk>", "▁a", "▁b", "c", "d", "e", "f", "g", "h", "i"))
            pieces.addArray().add(p).add(-1.5);
        ObjectNode chat = uni.deepCopy();
        ((com.fasterxml.jackson.databind.node.ArrayNode) chat.get("added_tokens")).addObject().put("id", 11)
                .put("content", "<|im_start|>").put("single_word", false).put("lstrip", false).put("rstrip", false)
                .put("normalized", false).put("special", true);
        TokenizerFixtures.model(dir.resolve("uni-base"), DType.F32, 11, 11, HIDDEN, 7, uni, null);
        TokenizerFixtures.model(dir.resolve("uni-chat"), DType.F32, 12, 12, HIDDEN, 8, chat, null);
        Path cfg = dir.resolve("uni.yml"), out = dir.resolve("uni-out");
        Files.writeString(cfg, """
                merge_method: task_arithmetic
                base_model: uni-base
                models:
                  - model: uni-chat
                    parameters: {weight: 0.5}
                tokenizer_source: union
                """);
        CliRun.Run r = merge(cfg, out);
        assertEquals(0, r.code(), r.err());
        Map<String, Long> v = TokenizerFixtures.vocabulary(out.resolve("tokenizer.json"));
        assertEquals(12, v.size());
        assertEquals(11L, v.get("<|im_start|>"));
        assertEquals(2L, v.get("▁a"));
        JsonNode written = JSON.readTree(out.resolve("tokenizer.json").toFile());
        assertEquals(uni.get("model"), written.get("model"), "the pieces and their scores as they were");
        double[][] got = TokenizerFixtures.rows(out, EMBED), chatRows = TokenizerFixtures.rows(dir.resolve("uni-chat"), EMBED);
        for (int j = 0; j < HIDDEN; j++) assertEquals(chatRows[11][j], got[11][j], 1e-7);
    }
}
