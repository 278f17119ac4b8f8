package dev.smelter.io;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.DirectoryStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Instant;
import java.util.ArrayList;
import java.util.List;
import java.util.Optional;
import java.util.Set;
import java.util.UUID;
import java.util.concurrent.ConcurrentHashMap;
import java.util.regex.Pattern;

/**
 * The hidden directories an output is assembled in ({@code .OUT.tmp-*}, {@code .OUT.sweep-*}; {@code .OUT.multi-*}
 * holds the intermediate merges of a multi-document config) or moved aside to
 * while it is replaced ({@code .OUT.old-*}). Each holds an owner file naming the process, so that
 * <ul>
 *   <li>Ctrl-C (SIGINT) or SIGTERM removes them: a shutdown hook deletes every one still registered, twice, so
 *       that a file a writer thread created meanwhile goes too;</li>
 *   <li>after SIGKILL or a power loss, the next run beside them recognises those whose process is gone and removes
 *       them ({@link #removeStale}); those of a live process (a concurrent merge) are left alone.</li>
 * </ul>
 */
public final class WorkDirs {
    /** The owner file in each directory: "pid start-instant". */
    static final String OWNER = ".smelter-owner";

    private static final Pattern KINDS = Pattern.compile("\\.(tmp|sweep|old|multi)-[0-9a-f]{8}");
    private static final Set<Path> live = ConcurrentHashMap.newKeySet();
    private static volatile boolean hookInstalled;

    private WorkDirs() {}

    /** Creates {@code .NAME.KIND-xxxxxxxx} beside {@code output} (removing stale ones first), owned by this process. */
    public static Path create(Path output, String kind) throws IOException {
        Path out = output.toAbsolutePath().normalize();
        removeStale(out);
        Path dir = reserve(out, kind);
        try {
            Files.createDirectory(dir);
            claim(dir);
        } catch (IOException e) {
            try {
                CheckpointWriter.deleteTree(dir);
            } catch (IOException ignored) {
                // nothing was made
            }
            throw new IOException("cannot write the output " + out + ": its folder " + out.getParent() + " does not take "
                    + "a new directory (" + e.getClass().getSimpleName() + ": " + e.getMessage() + "); choose an output "
                    + "in a writable folder", e);
        }
        return dir;
    }

    /**
     * Refuses to replace {@code output} when it is a mount point: it is replaced by renaming, which a mount point
     * does not allow (EBUSY after the whole merge). Checked before anything is written.
     */
    public static void checkReplaceable(Path output) throws IOException {
        Path out = output.toAbsolutePath().normalize();
        if (!Files.isDirectory(out) || out.getParent() == null) return;
        if (!Files.getFileStore(out).equals(Files.getFileStore(out.getParent())))
            throw new IOException(out + " is a mount point: Smelter replaces an output by renaming a finished directory "
                    + "onto it, which a mount point does not allow; write to a directory inside it instead");
    }

    /** A fresh name {@code .NAME.KIND-xxxxxxxx} beside {@code output}, for a directory moved there. */
    public static Path reserve(Path output, String kind) {
        Path out = output.toAbsolutePath().normalize();
        return out.resolveSibling("." + out.getFileName() + "." + kind + "-" + UUID.randomUUID().toString().substring(0, 8));
    }

    /** Marks {@code dir} (a directory this process made or moved aside) as this process's, to delete on exit. */
    public static void claim(Path dir) throws IOException {
        installHook();
        live.add(dir);
        ProcessHandle self = ProcessHandle.current();
        Files.writeString(dir.resolve(OWNER), self.pid() + " " + self.info().startInstant().map(Instant::toString).orElse("?"),
                StandardCharsets.UTF_8);
    }

    /** Renames the finished work directory {@code dir} to {@code target} (atomically where it can), its owner file gone. */
    public static void commit(Path dir, Path target) throws IOException {
        Files.deleteIfExists(dir.resolve(OWNER));
        CheckpointWriter.move(dir, target);
        release(dir);
    }

    /**
     * Puts the finished work directory {@code dir} in the place of {@code target}: an existing target is first moved
     * aside to {@code .NAME.old-*} (owned by this process, so never left behind), then {@code dir} is renamed onto
     * it. Returns the directory moved aside, for the caller to delete, or null.
     */
    public static Path replace(Path dir, Path target) throws IOException {
        Path old = null;
        if (Files.exists(target)) {
            old = reserve(target, "old");
            CheckpointWriter.move(target, old);
            claim(old);
        }
        commit(dir, target);
        return old;
    }

    /** {@code dir} is done with (renamed into place, or deleted): nothing to remove on exit. */
    public static void release(Path dir) {
        live.remove(dir);
    }

    /** Deletes {@code dir} and releases it. */
    public static void delete(Path dir) throws IOException {
        try {
            CheckpointWriter.deleteTree(dir);
        } finally {
            release(dir);
        }
    }

    /**
     * Removes the work directories of {@code output} left by processes that are gone (killed, or from before a
     * reboot); returns one line per directory removed, or left because its process still runs.
     */
    public static List<String> removeStale(Path output) throws IOException {
        Path out = output.toAbsolutePath().normalize();
        Path parent = out.getParent();
        List<String> said = new ArrayList<>();
        if (parent == null || !Files.isDirectory(parent)) return said;
        String prefix = "." + out.getFileName();
        try (DirectoryStream<Path> s = Files.newDirectoryStream(parent, p -> {
            String n = p.getFileName().toString();
            return n.startsWith(prefix) && KINDS.matcher(n.substring(prefix.length())).matches();
        })) {
            for (Path dir : s) {
                if (live.contains(dir) || !Files.isDirectory(dir)) continue;
                Optional<ProcessHandle> owner = owner(dir);
                if (owner.isPresent()) {
                    said.add(dir + " belongs to process " + owner.get().pid() + ", still running: left alone");
                    continue;
                }
                CheckpointWriter.deleteTree(dir);
                said.add("removed " + dir + ", left by an interrupted run");
            }
        }
        return said;
    }

    /** The live process that owns {@code dir}, if its owner file names one (same pid and start time). */
    static Optional<ProcessHandle> owner(Path dir) {
        try {
            String[] f = Files.readString(dir.resolve(OWNER), StandardCharsets.UTF_8).trim().split(" ");
            Optional<ProcessHandle> p = ProcessHandle.of(Long.parseLong(f[0]));
            if (p.isEmpty() || !p.get().isAlive()) return Optional.empty();
            String started = p.get().info().startInstant().map(Instant::toString).orElse("?");
            return f.length > 1 && f[1].equals(started) ? p : Optional.empty();  // a reused pid is not the owner
        } catch (IOException | RuntimeException e) {
            return Optional.empty();  // no owner file: moved aside before one was written, or not readable
        }
    }

    private static synchronized void installHook() {
        if (hookInstalled) return;
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            for (int pass = 0; pass < 2; pass++) {
                for (Path dir : List.copyOf(live)) {
                    try {
                        CheckpointWriter.deleteTree(dir);
                    } catch (IOException | RuntimeException e) {
                        // best effort: the next run beside it removes what is left
                    }
                }
                try {
                    Thread.sleep(50);  // a writer thread may still create a file in the first pass
                } catch (InterruptedException e) {
                    return;
                }
            }
        }, "smelter-remove-work-dirs"));
        hookInstalled = true;
    }
}
