package dev.smelter.config;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** Relative model paths as mergekit resolves them: the working directory first, then the config's folder. */
class ConfigPathsTest {
    @TempDir
    Path root;

    Path config(String text) throws Exception {
        Path c = root.resolve("configs/merge.yml");
        Files.createDirectories(c.getParent());
        Files.writeString(c, text);
        return c;
    }

    static final String LINEAR = """
            merge_method: linear
            models:
              - model: a
                parameters: {weight: 1}
              - model: b
                parameters: {weight: 1}
            """;

    @Test
    void workingDirectoryFirstThenTheConfigsFolder() throws Exception {
        Path work = root.resolve("work");
        Files.createDirectories(work.resolve("a"));             // a: in the working directory only
        Files.createDirectories(root.resolve("configs/b"));     // b: beside the config only
        MergeConfig c = MergeConfig.load(config(LINEAR), work);
        assertEquals(work.resolve("a"), c.models().get(0).path());
        assertEquals(root.resolve("configs/b"), c.models().get(1).path());
        assertEquals(0, c.warnings().size(), c.warnings().toString());

        // In both: the working directory's, as mergekit; a warning says which.
        Files.createDirectories(root.resolve("configs/a"));
        c = MergeConfig.load(config(LINEAR), work);
        assertEquals(work.resolve("a"), c.models().get(0).path());
        assertEquals(1, c.warnings().size(), c.warnings().toString());
        String w = c.warnings().get(0);
        assertTrue(w.contains("models[0].model 'a' is " + work.resolve("a") + " (relative to the working directory")
                && w.contains("not " + root.resolve("configs/a") + " (relative to the config's folder)"), w);

        // Absolute paths are themselves; the working directory is the config's folder: no question.
        c = MergeConfig.load(config(LINEAR.replace("model: a", "model: " + work.resolve("a"))), root.resolve("configs"));
        assertEquals(work.resolve("a"), c.models().get(0).path());
        assertEquals(0, c.warnings().size(), c.warnings().toString());
    }

    @Test
    void missingPathsAndHubIds() throws Exception {
        Path work = root.resolve("work");
        Files.createDirectories(work.resolve("a"));
        ConfigException e = assertThrows(ConfigException.class, () -> MergeConfig.load(config(LINEAR), work, EMPTY));
        assertTrue(e.getMessage().equals("models[1].model 'b' does not exist (searched " + work.resolve("b") + " and "
                + root.resolve("configs/b") + ")"), e.getMessage());
        e = assertThrows(ConfigException.class, () -> MergeConfig.load(config(LINEAR.replace("model: b",
                "model: mistralai/Mistral-7B-v0.1@refs/pr/1")), work, EMPTY));
        assertTrue(e.getMessage().startsWith("models[1].model 'mistralai/Mistral-7B-v0.1@refs/pr/1' is not a local "
                + "checkpoint (searched " + work.resolve("mistralai/Mistral-7B-v0.1@refs/pr/1")), e.getMessage());
        assertTrue(e.getMessage().contains("is not in the Hugging Face cache") && e.getMessage().contains(
                "`huggingface-cli download mistralai/Mistral-7B-v0.1 --revision refs/pr/1`"), e.getMessage());
        // A Hub ID downloaded into a folder of that name is found (with the revision left off).
        Files.createDirectories(work.resolve("mistralai/Mistral-7B-v0.1"));
        MergeConfig c = MergeConfig.load(config(LINEAR.replace("model: b", "model: mistralai/Mistral-7B-v0.1@main")), work);
        assertEquals(work.resolve("mistralai/Mistral-7B-v0.1"), c.models().get(1).path());
        // ./ paths are not Hub IDs.
        e = assertThrows(ConfigException.class, () -> MergeConfig.load(config(LINEAR.replace("model: b", "model: ./org/x")), work));
        assertTrue(e.getMessage().contains("does not exist"), e.getMessage());
    }

    /** An empty Hugging Face cache. */
    final dev.smelter.io.HubCache EMPTY = new dev.smelter.io.HubCache(Path.of("/nonexistent/hf-cache"));

    @Test
    void hubIdsFromTheHuggingFaceCache() throws Exception {
        Path work = Files.createDirectories(root.resolve("work"));
        Files.createDirectories(work.resolve("a"));
        Path hf = dev.smelter.io.HubCacheTest.cache(Files.createDirectories(root.resolve("hf")));
        var cache = new dev.smelter.io.HubCache(hf);
        Path snaps = hf.resolve("models--org--name/snapshots");
        MergeConfig c = MergeConfig.load(config(LINEAR.replace("model: b", "model: org/name@v1")), work, cache);
        assertEquals(snaps.resolve(dev.smelter.io.HubCacheTest.V1), c.models().get(1).path());
        c = MergeConfig.load(config(LINEAR.replace("model: b", "model: org/name")), work, cache);
        assertEquals(snaps.resolve(dev.smelter.io.HubCacheTest.MAIN), c.models().get(1).path());
        // A local folder of that name comes first, as in mergekit.
        Files.createDirectories(work.resolve("org/name"));
        c = MergeConfig.load(config(LINEAR.replace("model: b", "model: org/name")), work, cache);
        assertEquals(work.resolve("org/name"), c.models().get(1).path());
        ConfigException e = assertThrows(ConfigException.class, () -> MergeConfig.load(config(LINEAR.replace("model: b",
                "model: org/absent@v3")), work, cache));
        assertTrue(e.getMessage().startsWith("models[1].model 'org/absent@v3' is not a local checkpoint (searched ")
                && e.getMessage().contains(hf.resolve("models--org--absent") + " does not exist")
                && e.getMessage().contains("huggingface-cli download org/absent --revision v3"), e.getMessage());
    }

    @Test
    void parseWithoutAWorkingDirectoryChecksNothing() throws Exception {
        MergeConfig c = MergeConfig.parse(new com.fasterxml.jackson.databind.ObjectMapper(
                new com.fasterxml.jackson.dataformat.yaml.YAMLFactory()).readTree(LINEAR), Path.of("/models"));
        assertEquals(Path.of("/models/a"), c.models().get(0).path());
    }
}
