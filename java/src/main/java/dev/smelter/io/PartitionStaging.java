package dev.smelter.io;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.DirectoryStream;
import java.nio.file.FileAlreadyExistsException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;
import java.util.stream.Stream;

/**
 * The staging directory that the partitions of one merge share: {@code .OUT.part-FINGERPRINT} beside the output, its
 * name fixed by the job's fingerprint (config, options, inputs), so processes on any node of a shared file system
 * find the same one. It holds
 * <ul>
 *   <li>{@code job.json}: the fingerprint and the number of partitions; {@code job.txt}: what was hashed;</li>
 *   <li>{@code shards/}: finished shards under their final names ({@code .NAME.partial} while written);</li>
 *   <li>{@code done/I}: partition I finished (its fingerprint inside);</li>
 *   <li>{@code model-stats.txt}: model-wide TIES thresholds and Fisher norms, left by the first partition to compute
 *       them;</li>
 *   <li>{@code finalize.lock}: taken by the partition that finished last, which assembles the checkpoint.</li>
 * </ul>
 * Unlike the one-process work directories ({@link WorkDirs}) it belongs to no process: a partition killed midway
 * leaves it for its rerun, and only the finalize step removes it, after the checkpoint is in place.
 */
public final class PartitionStaging {
    static final String PREFIX = "part-";

    private final Path dir;
    private final String fingerprint;
    private final int partitions;
    private final ShardLayout layout;

    private PartitionStaging(Path dir, String fingerprint, int partitions, ShardLayout layout) {
        this.dir = dir;
        this.fingerprint = fingerprint;
        this.partitions = partitions;
        this.layout = layout;
    }

    /** A short hex SHA-256 of {@code text}: a job's fingerprint. */
    public static String hash(String text) {
        try {
            byte[] d = MessageDigest.getInstance("SHA-256").digest(text.getBytes(StandardCharsets.UTF_8));
            return HexFormat.of().formatHex(d, 0, 8);
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException(e);
        }
    }

    /** The staging directory of job {@code fingerprint} for {@code output}. */
    public static Path dir(Path output, String fingerprint) {
        Path out = output.toAbsolutePath().normalize();
        return out.resolveSibling("." + out.getFileName() + "." + PREFIX + fingerprint);
    }

    /**
     * Opens (creating it if needed) the staging directory for a partition of {@code partitions}. Refuses an output
     * that exists and is not empty (unless {@code overwrite}), and a staging directory of the same job started with
     * another number of partitions.
     */
    public static PartitionStaging open(Path output, String description, int partitions, ShardLayout layout,
            boolean overwrite) throws IOException {
        String fingerprint = hash(description);
        Path out = output.toAbsolutePath().normalize();
        if (Files.exists(out) && !overwrite) {
            if (!Files.isDirectory(out)) throw new IOException(out + " exists and is not a directory");
            try (Stream<Path> s = Files.list(out)) {
                if (s.findAny().isPresent())
                    throw new IOException(out + " exists and is not empty (use --overwrite to replace it)");
            }
        }
        Path dir = dir(out, fingerprint);
        Files.createDirectories(dir.resolve("shards"));
        Files.createDirectories(dir.resolve("done"));
        Path job = dir.resolve("job.json");
        if (Files.exists(job)) {
            int had = readPartitions(job);
            if (had != partitions)
                throw new IllegalArgumentException(dir + " holds this job split into " + had + " partitions, not "
                        + partitions + ": run the partitions with --partition I/" + had + ", or delete it to start over");
        } else {
            ObjectNode root = SafetensorsFile.JSON.createObjectNode();
            root.put("fingerprint", fingerprint).put("partitions", partitions).put("shards", layout.shardCount());
            byte[] bytes = SafetensorsFile.JSON.writerWithDefaultPrettyPrinter().writeValueAsBytes(root);
            AtomicFile.write(job, o -> o.write(bytes));  // partitions starting at once write the same bytes
        }
        byte[] text = description.getBytes(StandardCharsets.UTF_8);
        Path described = dir.resolve("job.txt");
        if (!Files.exists(described)) AtomicFile.write(described, o -> o.write(text));
        return new PartitionStaging(dir, fingerprint, partitions, layout);
    }

    /**
     * The staging directory of job {@code fingerprint} for the finalize step; null when there is none and the output
     * is in place (finalized before). Refuses the staging directory of another job (a different config, options or
     * inputs) and an output with no staging directory at all.
     */
    public static PartitionStaging find(Path output, String description, ShardLayout layout) throws IOException {
        String fingerprint = hash(description);
        Path out = output.toAbsolutePath().normalize();
        Path dir = dir(out, fingerprint);
        if (Files.isDirectory(dir)) {
            Path job = dir.resolve("job.json");
            if (!Files.exists(job)) throw new IOException(dir + " has no job.json: no partition of this job has started");
            return new PartitionStaging(dir, fingerprint, readPartitions(job), layout);
        }
        List<Path> others = others(out);
        if (!others.isEmpty())
            throw new IllegalArgumentException("the staging directory " + others.get(0) + " belongs to another job (a "
                    + "different config, options or inputs than this finalize was given" + difference(others.get(0), description)
                    + "): finalize with the partitions' config and options, or delete it and rerun the partitions");
        if (Files.isDirectory(out)) return null;
        throw new IOException("nothing to finalize for " + out + ": no partition of this job has run (no " + dir + ")");
    }

    /** Where the job described in {@code staging} first differs from {@code description}, or "". */
    private static String difference(Path staging, String description) {
        try {
            String[] had = Files.readString(staging.resolve("job.txt"), StandardCharsets.UTF_8).split("\n", -1);
            String[] now = description.split("\n", -1);
            for (int i = 0; i < Math.max(had.length, now.length); i++) {
                String a = i < had.length ? had[i] : "(nothing)", b = i < now.length ? now[i] : "(nothing)";
                if (!a.equals(b))
                    return "; the partitions had " + abbreviate(a) + " where this has " + abbreviate(b);
            }
        } catch (IOException | RuntimeException e) {
            // no description to compare
        }
        return "";
    }

    private static String abbreviate(String s) {
        return s.length() <= 300 ? "'" + s + "'" : "'" + s.substring(0, 300) + "...'";
    }

    /** Staging directories of any job beside {@code output}. */
    public static List<Path> others(Path output) throws IOException {
        Path out = output.toAbsolutePath().normalize();
        List<Path> found = new ArrayList<>();
        if (out.getParent() == null || !Files.isDirectory(out.getParent())) return found;
        String prefix = "." + out.getFileName() + "." + PREFIX;
        try (DirectoryStream<Path> s = Files.newDirectoryStream(out.getParent(),
                p -> p.getFileName().toString().startsWith(prefix) && Files.isDirectory(p))) {
            for (Path p : s) found.add(p);
        }
        found.sort(null);
        return found;
    }

    private static int readPartitions(Path job) throws IOException {
        JsonNode n = SafetensorsFile.JSON.readTree(job.toFile());
        if (n == null || !n.path("partitions").canConvertToInt())
            throw new IOException(job + " is not a partitioned merge's job file");
        return n.path("partitions").asInt();
    }

    public Path dir() {
        return dir;
    }

    public int partitions() {
        return partitions;
    }

    /** Shard {@code s} is finished (under its final name, at its full size). */
    public boolean hasShard(int s) throws IOException {
        Path f = shard(s);
        return Files.isRegularFile(f) && Files.size(f) == layout.fileBytes(s);
    }

    public Path shard(int s) {
        return dir.resolve("shards").resolve(layout.shardName(s));
    }

    /** A writer of this partition's {@code shards} (those not finished). */
    public PartitionWriter writer(int partition, List<Integer> shards) throws IOException {
        return new PartitionWriter(dir.resolve("shards"), layout, shards);
    }

    /** Records that partition {@code index} finished (after its shards were synced and renamed). */
    public void markDone(int index) throws IOException {
        byte[] text = (fingerprint + "\n").getBytes(StandardCharsets.UTF_8);
        AtomicFile.write(dir.resolve("done").resolve(Integer.toString(index)), o -> o.write(text));
    }

    /** Partition {@code index} is being (re)run: not done until {@link #markDone} again. */
    public void unmarkDone(int index) throws IOException {
        Files.deleteIfExists(dir.resolve("done").resolve(Integer.toString(index)));
    }

    /** The partitions not done yet. */
    public List<Integer> pending() throws IOException {
        List<Integer> missing = new ArrayList<>();
        for (int i = 0; i < partitions; i++) {
            Path f = dir.resolve("done").resolve(Integer.toString(i));
            if (!Files.isRegularFile(f) || !Files.readString(f, StandardCharsets.UTF_8).strip().equals(fingerprint))
                missing.add(i);
        }
        return missing;
    }

    public boolean allDone() throws IOException {
        return pending().isEmpty();
    }

    /** Takes the finalize lock; false when another partition took it. */
    public boolean tryLock() throws IOException {
        try {
            Files.writeString(dir.resolve("finalize.lock"), ProcessHandle.current().pid() + "\n",
                    StandardCharsets.UTF_8, java.nio.file.StandardOpenOption.CREATE_NEW, java.nio.file.StandardOpenOption.WRITE);
            return true;
        } catch (FileAlreadyExistsException e) {
            return false;
        }
    }

    /** Fails naming what is missing unless every partition is done and every shard is there at its size. */
    public void checkComplete() throws IOException {
        List<Integer> missing = pending();
        if (!missing.isEmpty())
            throw new IOException("partitions " + missing + " of " + partitions + " have not finished (no done marker in "
                    + dir.resolve("done") + "): rerun them (--partition I/" + partitions + "), then finalize");
        for (int s = 0; s < layout.shardCount(); s++)
            if (!hasShard(s))
                throw new IOException("shard " + layout.shardName(s) + " is missing or incomplete in " + dir.resolve("shards")
                        + " although every partition is marked done: rerun the partition that writes it");
    }

    public Path modelStatsFile() {
        return dir.resolve("model-stats.txt");
    }

    /**
     * Model-wide statistics a partition of this job computed over every tensor (TIES thresholds, Fisher norms), as
     * {@code name: values} lines; empty when none is there yet. They are the same for every partition (exact keys,
     * doubles written to round-trip), so the others read them instead of reading every input again.
     */
    public Map<String, String> modelStats() throws IOException {
        Map<String, String> stats = new java.util.LinkedHashMap<>();
        Path f = modelStatsFile();
        if (!Files.isRegularFile(f)) return stats;
        for (String line : Files.readAllLines(f, StandardCharsets.UTF_8)) {
            int colon = line.indexOf(':');
            if (colon > 0) stats.put(line.substring(0, colon).strip(), line.substring(colon + 1).strip());
        }
        return stats;
    }

    /** Leaves the model-wide statistics for the other partitions (atomically; partitions racing write the same). */
    public void writeModelStats(Map<String, String> stats) throws IOException {
        StringBuilder b = new StringBuilder();
        stats.forEach((k, v) -> b.append(k).append(": ").append(v).append('\n'));
        byte[] bytes = b.toString().getBytes(StandardCharsets.UTF_8);
        AtomicFile.write(modelStatsFile(), o -> o.write(bytes));
    }

    /** Removes the staging directory (after the checkpoint is in place). */
    public void delete() throws IOException {
        CheckpointWriter.deleteTree(dir);
    }
}
