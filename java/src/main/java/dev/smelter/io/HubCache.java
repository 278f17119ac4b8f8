package dev.smelter.io;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.InvalidPathException;
import java.nio.file.Path;
import java.util.Map;
import java.util.regex.Pattern;

/**
 * The local Hugging Face Hub cache, read as huggingface_hub lays it out and as offline machines have it: a model
 * {@code org/name} lives in {@code <cache>/models--org--name/}, whose {@code refs/<branch or tag>} files hold commit
 * hashes and whose {@code snapshots/<commit>/} folders hold the files (links into {@code blobs/}). Nothing is ever
 * downloaded: a model that is not there is an error naming the folder searched and the command that fetches it.
 *
 * <p>The cache folder is huggingface_hub's: {@code HF_HUB_CACHE}, else {@code HUGGINGFACE_HUB_CACHE} (its older
 * name), else {@code HF_HOME/hub}, else {@code $XDG_CACHE_HOME/huggingface/hub}, else
 * {@code ~/.cache/huggingface/hub}. A revision is a branch or tag name (a file under {@code refs/}, so
 * {@code refs/pr/1} too) or a full 40-digit commit hash, as huggingface_hub accepts offline; no revision is
 * {@code main}.
 */
public final class HubCache {
    /** {@code org/name}, optionally {@code @revision}: what mergekit passes to huggingface_hub. */
    public static final Pattern HUB_ID =
            Pattern.compile("[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*(@[A-Za-z0-9._/-]+)?");
    private static final Pattern COMMIT = Pattern.compile("[0-9a-f]{40}");

    private final Path root;

    public HubCache(Path root) {
        this.root = root.toAbsolutePath().normalize();
    }

    /** The cache of this process's environment. */
    public static HubCache fromEnvironment() {
        return new HubCache(locate(System.getenv(), Path.of(System.getProperty("user.home"))));
    }

    /** huggingface_hub's choice of the cache folder from {@code env} and the home folder. */
    public static Path locate(Map<String, String> env, Path home) {
        for (String k : new String[] {"HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"})
            if (set(env, k)) return expand(env.get(k), home);
        if (set(env, "HF_HOME")) return expand(env.get("HF_HOME"), home).resolve("hub");
        Path cache = set(env, "XDG_CACHE_HOME") ? expand(env.get("XDG_CACHE_HOME"), home) : home.resolve(".cache");
        return cache.resolve("huggingface").resolve("hub");
    }

    private static boolean set(Map<String, String> env, String key) {
        return env.get(key) != null && !env.get(key).isEmpty();
    }

    private static Path expand(String p, Path home) {
        return p.equals("~") ? home : p.startsWith("~/") ? home.resolve(p.substring(2)) : Path.of(p);
    }

    public Path root() {
        return root;
    }

    /** Whether {@code text} is written as a Hub ID ({@code org/name[@revision]}, no {@code ..}). */
    public static boolean isHubId(String text) {
        return HUB_ID.matcher(text).matches() && !text.contains("..");
    }

    /** The folder of repository {@code org/name} in the cache (it may not exist). */
    public Path repoFolder(String repoId) {
        return root.resolve("models--" + repoId.replace("/", "--"));
    }

    /**
     * The snapshot folder of {@code id} ({@code org/name} or {@code org/name@revision}).
     *
     * @throws NotCached when the cache does not hold it; the message names what was searched and how to fetch it
     */
    public Path snapshot(String id) throws NotCached {
        int at = id.indexOf('@');
        String repo = at < 0 ? id : id.substring(0, at);
        String revision = at < 0 ? "main" : id.substring(at + 1);
        Path folder = repoFolder(repo);
        String fetch = "`huggingface-cli download " + repo + (at < 0 ? "" : " --revision " + revision)
                + "` on a machine with network access (it fills this cache; copy " + folder + " here, or set "
                + "HF_HUB_CACHE to a cache that has it)";
        if (!Files.isDirectory(folder))
            throw new NotCached(repo + " is not in the Hugging Face cache: " + folder + " does not exist (cache "
                    + root + ", from HF_HUB_CACHE, HF_HOME or ~/.cache/huggingface/hub). Smelter never downloads; fetch "
                    + "it with " + fetch);
        String commit;
        if (COMMIT.matcher(revision).matches()) {
            commit = revision;
        } else {
            Path ref;
            try {
                ref = folder.resolve("refs").resolve(revision).normalize();
            } catch (InvalidPathException e) {
                throw new NotCached("revision '" + revision + "' of " + repo + " is not a valid ref name");
            }
            if (!ref.startsWith(folder.resolve("refs")) || !Files.isRegularFile(ref))
                throw new NotCached("revision '" + revision + "' of " + repo + " is not in the Hugging Face cache: "
                        + folder.resolve("refs").resolve(revision) + " does not exist (a revision is a branch or tag "
                        + "name under refs/, or a full 40-digit commit hash). Smelter never downloads; fetch it with "
                        + fetch);
            try {
                commit = Files.readString(ref, StandardCharsets.UTF_8).strip();
            } catch (IOException e) {
                throw new NotCached(ref + " cannot be read: " + e.getMessage());
            }
            if (!COMMIT.matcher(commit).matches())
                throw new NotCached(ref + " should hold a 40-digit commit hash, holds '"
                        + (commit.length() > 60 ? commit.substring(0, 60) + "..." : commit) + "' (a damaged cache)");
        }
        Path snapshot = folder.resolve("snapshots").resolve(commit);
        if (!Files.isDirectory(snapshot))
            throw new NotCached(repo + (at < 0 ? "" : "@" + revision) + " is commit " + commit + ", whose snapshot "
                    + snapshot + " is not in the Hugging Face cache. Smelter never downloads; fetch it with " + fetch);
        return snapshot;
    }

    /** A model the cache does not hold. */
    public static final class NotCached extends Exception {
        public NotCached(String message) {
            super(message);
        }
    }
}
