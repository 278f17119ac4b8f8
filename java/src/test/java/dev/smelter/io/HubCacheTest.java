package dev.smelter.io;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** The Hugging Face cache as huggingface_hub lays it out: models--org--name/{refs,snapshots,blobs}. */
public class HubCacheTest {
    @TempDir
    Path root;

    public static final String MAIN = "0123456789abcdef0123456789abcdef01234567", V1 = "89abcdef0123456789abcdef0123456789abcdef",
            PR = "fedcba9876543210fedcba9876543210fedcba98";

    /** A cached repository with main, tag v1 and refs/pr/1, each a snapshot whose file links into blobs/. */
    public static Path cache(Path root) throws Exception {
        Path repo = root.resolve("models--org--name");
        Files.createDirectories(repo.resolve("blobs"));
        for (String[] ref : new String[][] {{"main", MAIN}, {"v1", V1}, {"refs/pr/1", PR}}) {
            Path r = repo.resolve("refs").resolve(ref[0]);
            Files.createDirectories(r.getParent());
            Files.writeString(r, ref[1]);  // huggingface_hub writes the hash without a newline
            Path blob = Files.writeString(repo.resolve("blobs").resolve("blob-" + ref[1]), "{\"rev\": \"" + ref[0] + "\"}");
            Path snap = Files.createDirectories(repo.resolve("snapshots").resolve(ref[1]));
            Files.createSymbolicLink(snap.resolve("config.json"), snap.relativize(blob));
            // a snapshot without weights is refused when a config names it; the contents are not read here
            Files.createSymbolicLink(snap.resolve("model.safetensors"), snap.relativize(blob));
        }
        return root;
    }

    @Test
    void cacheFolderAsHuggingfaceHubChoosesIt() {
        Path home = Path.of("/home/u");
        assertEquals(Path.of("/c/hub"), HubCache.locate(Map.of("HF_HUB_CACHE", "/c/hub", "HF_HOME", "/h"), home));
        assertEquals(Path.of("/old"), HubCache.locate(Map.of("HUGGINGFACE_HUB_CACHE", "/old", "HF_HOME", "/h"), home));
        assertEquals(Path.of("/h/hub"), HubCache.locate(Map.of("HF_HOME", "/h", "XDG_CACHE_HOME", "/x"), home));
        assertEquals(Path.of("/x/huggingface/hub"), HubCache.locate(Map.of("XDG_CACHE_HOME", "/x"), home));
        assertEquals(Path.of("/home/u/.cache/huggingface/hub"), HubCache.locate(Map.of(), home));
        assertEquals(Path.of("/home/u/hf/hub"), HubCache.locate(Map.of("HF_HOME", "~/hf"), home));
        assertEquals(Path.of("/home/u/.cache/huggingface/hub"), HubCache.locate(Map.of("HF_HUB_CACHE", ""), home));
    }

    @Test
    void revisionsAreBranchesTagsOrFullCommits() throws Exception {
        HubCache c = new HubCache(cache(root));
        Path snaps = root.resolve("models--org--name/snapshots");
        assertEquals(snaps.resolve(MAIN), c.snapshot("org/name"));
        assertEquals(snaps.resolve(MAIN), c.snapshot("org/name@main"));
        assertEquals(snaps.resolve(V1), c.snapshot("org/name@v1"));
        assertEquals(snaps.resolve(PR), c.snapshot("org/name@refs/pr/1"));
        assertEquals(snaps.resolve(V1), c.snapshot("org/name@" + V1));
        assertEquals("{\"rev\": \"v1\"}", Files.readString(c.snapshot("org/name@v1").resolve("config.json")));

        var e = assertThrows(HubCache.NotCached.class, () -> c.snapshot("org/other"));
        assertTrue(e.getMessage().contains(root.resolve("models--org--other") + " does not exist")
                && e.getMessage().contains("`huggingface-cli download org/other`") && e.getMessage().contains("never downloads"),
                e.getMessage());
        e = assertThrows(HubCache.NotCached.class, () -> c.snapshot("org/name@v2"));
        assertTrue(e.getMessage().contains(root.resolve("models--org--name/refs/v2") + " does not exist")
                && e.getMessage().contains("huggingface-cli download org/name --revision v2"), e.getMessage());
        // A short hash is not a revision huggingface_hub resolves offline.
        e = assertThrows(HubCache.NotCached.class, () -> c.snapshot("org/name@0123456"));
        assertTrue(e.getMessage().contains("full 40-digit commit hash"), e.getMessage());
        // A commit whose snapshot is not there.
        String missing = "1111111111111111111111111111111111111111";
        e = assertThrows(HubCache.NotCached.class, () -> c.snapshot("org/name@" + missing));
        assertTrue(e.getMessage().contains("snapshots/" + missing), e.getMessage());
        // A ref that leaves refs/ is refused; a damaged ref is named.
        assertThrows(HubCache.NotCached.class, () -> c.snapshot("org/name@../../x"));
        Files.writeString(root.resolve("models--org--name/refs/bad"), "not a hash");
        e = assertThrows(HubCache.NotCached.class, () -> c.snapshot("org/name@bad"));
        assertTrue(e.getMessage().contains("40-digit commit hash, holds 'not a hash'"), e.getMessage());
    }
}
