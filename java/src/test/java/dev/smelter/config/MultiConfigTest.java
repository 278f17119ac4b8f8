package dev.smelter.config;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** mergekit-multi's documents: names, references, order, and when each intermediate may go. */
class MultiConfigTest {
    @TempDir
    Path dir;

    static String doc(String name, String... models) {
        StringBuilder s = new StringBuilder(name == null ? "" : "name: " + name + "\n");
        s.append("merge_method: linear\nmodels:\n");
        for (String m : models) s.append("  - model: ").append(m).append("\n    parameters: {weight: 1}\n");
        return s.toString();
    }

    MultiConfig load(String... docs) throws Exception {
        return MultiConfig.load(Files.writeString(dir.resolve("multi.yml"), String.join("---\n", docs)));
    }

    static List<String> names(MultiConfig m) {
        return m.order().stream().map(d -> d.name() == null ? "(final)" : d.name()).toList();
    }

    @Test
    void orderAndLastUses() throws Exception {
        // a <- b <- final, and c used by final only; d unused: left out with a warning.
        MultiConfig m = load(doc(null, "b", "c+lora"), doc("d", "x"), doc("b", "a@main", "y"), doc("c", "z"), doc("a", "w"));
        assertEquals(List.of("a", "b", "c", "(final)"), names(m));
        assertEquals(1, m.lastUse("a"), "a goes once b is merged");
        assertEquals(3, m.lastUse("b"));
        assertEquals(3, m.lastUse("c"));
        assertEquals(List.of("document 2 (name: d) is not used by the final merge and is left out"), m.warnings());
        assertTrue(m.order().get(3).yaml().contains("c+lora") && !m.order().get(3).yaml().contains("name:"));
        // Every document named: the one no other uses is the final merge.
        m = load(doc("top", "mid"), doc("mid", "x"));
        assertEquals(List.of("mid", "top"), names(m));
        var e = assertThrows(ConfigException.class, () -> load(doc("p", "x"), doc("q", "y")));
        assertTrue(e.getMessage().contains("2 are used by no other (p, q)"), e.getMessage());
        e = assertThrows(ConfigException.class, () -> load(doc("p", "p")));
        assertTrue(e.getMessage().contains("uses its own result 'p'"), e.getMessage());
        e = assertThrows(ConfigException.class, () -> load(doc("../x", "p"), doc(null, "y")));
        assertTrue(e.getMessage().contains("must be a simple name"), e.getMessage());
    }

    @Test
    void tokenizerSourcesNamingAnIntermediateReadItsFolder() throws Exception {
        // mergekit-multi replaces every model reference, the tokenizer's sources included.
        for (String m : List.of("x", "y", "inter/chat")) {
            Files.createDirectories(dir.resolve(m));
            Files.writeString(dir.resolve(m).resolve("model.safetensors"), "");
        }
        String last = doc(null, "chat", "y") + """
                tokenizer:
                  source: chat
                  tokens:
                    "<|im_start|>": {source: chat}
                    "<|im_end|>": {source: {kind: model_token, model: chat@main, token: "</s>"}}
                """;
        MultiConfig m = load(doc("chat", "x"), last);
        assertEquals(List.of("chat", "(final)"), names(m));
        MergeConfig c = m.config(m.order().get(1), dir.resolve("inter"), dir, new dev.smelter.io.HubCache(dir.resolve("hub")));
        Path chat = dir.resolve("inter/chat");
        assertEquals(chat, c.tokenizer().sourceModel());
        assertEquals(chat, c.tokenizer().tokens().get("<|im_start|>").model());
        assertEquals(chat, c.tokenizer().tokens().get("<|im_end|>").model());
        // tokenizer_source, the older key, as well.
        m = load(doc("chat", "x"), doc(null, "chat", "y") + "tokenizer_source: chat\n");
        c = m.config(m.order().get(1), dir.resolve("inter"), dir, new dev.smelter.io.HubCache(dir.resolve("hub")));
        assertEquals(chat, c.tokenizer().sourceModel());
    }
}
