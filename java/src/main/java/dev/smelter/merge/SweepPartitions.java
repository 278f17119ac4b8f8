package dev.smelter.merge;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import dev.smelter.config.SweepGrid;
import dev.smelter.io.AtomicFile;
import dev.smelter.io.CheckpointWriter;
import dev.smelter.io.PartitionStaging;
import dev.smelter.io.WorkDirs;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.FileAlreadyExistsException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.stream.Stream;

/**
 * A sweep spread over processes ({@code sweep --partition I/N}): partition I runs the configurations whose grid index
 * is I modulo N ({@link SweepRunner#keepOnly}), as a whole sweep of its own written into {@code part-I} of the staging
 * directory beside the output ({@code .OUT.part-FINGERPRINT}, shared with nothing else; {@code part-I} appears only
 * complete, as every sweep output does). The last partition to finish, or {@code sweep --finalize}, links every
 * configuration's checkpoint into one directory, joins the result files in grid order ({@code configs.csv},
 * {@code sweep.csv} row by row; {@code sweep.json} with the configurations joined and each partition's timing), and
 * renames it into place. Each configuration's checkpoint is the bytes one process writes for it.
 */
public final class SweepPartitions {
    private final Path output;
    private final Path staging;
    private final String description;
    private final int count;

    private SweepPartitions(Path output, Path staging, String description, int count) {
        this.output = output;
        this.staging = staging;
        this.description = description;
        this.count = count;
    }

    /**
     * What identifies a partitioned sweep: everything {@code runner}'s merge plan depends on (see
     * {@link CheckpointMerger}'s job description) and the grid and sweep options in {@code jobText}.
     */
    public static String description(SweepRunner runner, String jobText) throws IOException {
        CheckpointMerger m = runner.merger();
        return m.jobDescription(m.plan(), "sweep\n" + JobFingerprint.canonical(runner.grid()) + "\n" + jobText);
    }

    /** The staging directory of the sweep described by {@code description} into {@code output}. */
    public static SweepPartitions of(Path output, String description, int count) {
        Path out = output.toAbsolutePath().normalize();
        return new SweepPartitions(out, PartitionStaging.dir(out, PartitionStaging.hash(description)), description, count);
    }

    /**
     * Partitions inside one process (a sweep on several devices, one partition per device), staged in {@code dir}: a
     * work directory of this process ({@link WorkDirs}), so Ctrl-C removes it and a later run removes it after a kill.
     */
    public static SweepPartitions local(Path output, Path dir, int count) {
        return new SweepPartitions(output.toAbsolutePath().normalize(), dir, "local", count);
    }

    /**
     * Runs {@code lanes} partitions of the sweep at once, one per device, each its own {@link SweepRunner} (its own
     * context, buffers, read-ahead and write-behind) over the configurations dealt to it, and joins them into the
     * output. {@code runner} makes lane {@code i}'s runner writing into {@code dir}; returns each lane's summary
     * (null for a lane without configurations).
     */
    public static List<SweepRunner.Summary> runOnDevices(Path output, int lanes, boolean overwrite, SweepGrid grid,
            LaneRunner runner) throws IOException {
        Files.createDirectories(output.toAbsolutePath().normalize().getParent());
        Path work = WorkDirs.create(output, "sweep");
        try {
            SweepPartitions local = local(output, work, lanes);
            List<SweepRunner.Summary> summaries = new ArrayList<>(java.util.Collections.nCopies(lanes, null));
            DeviceScheduler.runAll(lanes, lane -> {
                Path part = local.part(lane);
                summaries.set(lane, runner.run(lane, part));
                if (!Files.isDirectory(part)) local.markEmpty(lane);
                return 0;
            });
            local.finalizeSweep(grid, overwrite);
            return summaries;
        } finally {
            WorkDirs.delete(work);
        }
    }

    /** One device's share of a sweep: runs it into {@code dir} (or nothing, without configurations). */
    @FunctionalInterface
    public interface LaneRunner {
        SweepRunner.Summary run(int lane, Path dir) throws IOException;
    }

    /**
     * Prepares the staging directory for a partition: refuses an output that exists and is not empty (unless
     * {@code overwrite}) and a staging directory of this sweep started with another number of partitions; returns
     * where partition {@code index} writes its sweep (replacing an earlier run's).
     */
    public Path prepare(int index, boolean overwrite) throws IOException {
        if (Files.exists(output) && !overwrite) {
            try (Stream<Path> s = Files.list(output)) {
                if (s.findAny().isPresent())
                    throw new IOException(output + " exists and is not empty (use --overwrite to replace it)");
            }
        }
        Files.createDirectories(staging);
        Path job = staging.resolve("job.json");
        if (Files.exists(job)) {
            int had = new ObjectMapper().readTree(job.toFile()).path("partitions").asInt(-1);
            if (had != count)
                throw new IllegalArgumentException(staging + " holds this sweep split into " + had + " partitions, not "
                        + count + ": run the partitions with --partition I/" + had + ", or delete it to start over");
        } else {
            byte[] bytes = ("{\"fingerprint\": \"" + PartitionStaging.hash(description) + "\", \"partitions\": " + count
                    + ", \"kind\": \"sweep\"}\n").getBytes(StandardCharsets.UTF_8);
            AtomicFile.write(job, o -> o.write(bytes));
        }
        Path described = staging.resolve("job.txt");
        byte[] text = description.getBytes(StandardCharsets.UTF_8);
        if (!Files.exists(described)) AtomicFile.write(described, o -> o.write(text));
        Path part = part(index);
        if (Files.exists(part)) CheckpointWriter.deleteTree(part);  // a rerun replaces what the partition wrote
        return part;
    }

    private Path part(int index) {
        return staging.resolve("part-" + index);
    }

    /** A partition without configurations (more partitions than configurations): done at once. */
    public void markEmpty(int index) throws IOException {
        Files.createDirectories(part(index));
    }

    /** The partitions whose sweep is not in place yet. */
    public List<Integer> pending() {
        List<Integer> missing = new ArrayList<>();
        for (int i = 0; i < count; i++) if (!Files.isDirectory(part(i))) missing.add(i);
        return missing;
    }

    /** Takes the finalize lock when every partition is done; false when some are not, or another took it. */
    public boolean lastToFinish() throws IOException {
        if (!pending().isEmpty()) return false;
        try {
            Files.writeString(staging.resolve("finalize.lock"), ProcessHandle.current().pid() + "\n",
                    StandardCharsets.UTF_8, StandardOpenOption.CREATE_NEW, StandardOpenOption.WRITE);
            return true;
        } catch (FileAlreadyExistsException e) {
            return false;
        }
    }

    /**
     * The finalize step for the sweep of {@code grid}: fails naming the partitions not done; returns false, doing
     * nothing, when there is no staging directory of this sweep and the output is in place. Refuses the staging
     * directory of another sweep.
     */
    public boolean finalizeSweep(SweepGrid grid, boolean overwrite) throws IOException {
        if (!Files.isDirectory(staging)) {
            List<Path> others = PartitionStaging.others(output);
            if (!others.isEmpty())
                throw new IllegalArgumentException("the staging directory " + others.get(0) + " belongs to another job (a "
                        + "different config, grid, options or inputs than this finalize was given): finalize with the "
                        + "partitions' config and options, or delete it and rerun the partitions");
            if (Files.isDirectory(output)) return false;
            throw new IOException("nothing to finalize for " + output + ": no partition of this sweep has run (no "
                    + staging + ")");
        }
        Path job = staging.resolve("job.json");
        int had = Files.exists(job) ? new ObjectMapper().readTree(job.toFile()).path("partitions").asInt(-1) : count;
        SweepPartitions all = had == count ? this : new SweepPartitions(output, staging, description, had);
        List<Integer> missing = all.pending();
        if (had < 1 || !missing.isEmpty())
            throw new IOException("partitions " + missing + " of " + had + " of the sweep have not finished (no "
                    + staging.resolve("part-I") + "): rerun them (--partition I/" + had + "), then finalize");
        Map<String, Integer> order = new HashMap<>();
        for (SweepGrid.Point p : grid.points()) order.put(p.name(), order.size());
        Path temp = WorkDirs.create(output, "sweep");
        boolean done = false;
        try {
            List<String> reports = List.of(SweepReport.CONFIGS_CSV, SweepReport.STATS_CSV, SweepReport.JSON);
            for (int i = 0; i < had; i++)
                try (Stream<Path> s = Files.list(all.part(i))) {
                    for (Path p : s.sorted().toList()) {
                        String name = p.getFileName().toString();
                        if (reports.contains(name) || name.startsWith(".")) continue;
                        link(p, temp.resolve(name));
                    }
                }
            joinCsv(all, had, SweepReport.CONFIGS_CSV, order, temp);
            joinCsv(all, had, SweepReport.STATS_CSV, order, temp);
            joinJson(all, had, order, temp);
            if (Files.exists(output) && !overwrite)
                try (Stream<Path> s = Files.list(output)) {
                    if (s.findAny().isPresent())
                        throw new IOException(output + " exists and is not empty (use --overwrite to replace it)");
                }
            Path old = WorkDirs.replace(temp, output);
            done = true;
            if (old != null) WorkDirs.delete(old);
        } finally {
            if (!done) WorkDirs.delete(temp);
        }
        CheckpointWriter.deleteTree(staging);
        return true;
    }

    /**
     * Hard-links (copies where links are not possible) a configuration's files into the output being assembled: the
     * staging directory stays whole until the output is in place, so a finalize that fails can simply be rerun.
     */
    private static void link(Path from, Path to) throws IOException {
        if (!Files.isDirectory(from)) {
            try {
                Files.createLink(to, from);
            } catch (IOException | UnsupportedOperationException e) {
                Files.copy(from, to);
            }
            return;
        }
        Files.createDirectory(to);
        try (Stream<Path> s = Files.list(from)) {
            for (Path p : s.sorted().toList()) link(p, to.resolve(p.getFileName().toString()));
        }
    }

    /** One CSV of every partition's rows, in grid order (the first column names the configuration). */
    private static void joinCsv(SweepPartitions all, int had, String file, Map<String, Integer> order, Path temp)
            throws IOException {
        String header = null;
        List<String> rows = new ArrayList<>();
        for (int i = 0; i < had; i++) {
            Path f = all.part(i).resolve(file);
            if (!Files.exists(f)) continue;
            List<String> lines = Files.readAllLines(f, StandardCharsets.UTF_8);
            if (lines.isEmpty()) continue;
            header = lines.get(0);
            rows.addAll(lines.subList(1, lines.size()));
        }
        if (header == null) return;
        // Stable: a configuration's rows (one per layer in sweep.csv) keep their order.
        rows.sort(Comparator.comparingInt(r -> order.getOrDefault(r.substring(0, Math.max(0, r.indexOf(','))), -1)));
        StringBuilder b = new StringBuilder(header).append('\n');
        for (String r : rows) b.append(r).append('\n');
        byte[] bytes = b.toString().getBytes(StandardCharsets.UTF_8);
        AtomicFile.write(temp.resolve(file), o -> o.write(bytes));
    }

    /** sweep.json of the whole sweep: the configurations joined in grid order, each partition's timing and sizes. */
    private static void joinJson(SweepPartitions all, int had, Map<String, Integer> order, Path temp) throws IOException {
        ObjectMapper json = new ObjectMapper();
        ObjectNode root = null;
        List<JsonNode> configurations = new ArrayList<>();
        ArrayNode partitions = json.createArrayNode();
        long read = 0, written = 0;
        for (int i = 0; i < had; i++) {
            Path f = all.part(i).resolve(SweepReport.JSON);
            if (!Files.exists(f)) continue;
            ObjectNode part = (ObjectNode) json.readTree(f.toFile());
            if (root == null) root = part.deepCopy();
            part.path("configurations").forEach(configurations::add);
            ObjectNode p = partitions.addObject();
            p.put("partition", i);
            p.set("timing", part.path("timing"));
            p.set("bytes_read", part.path("bytes_read"));
            p.set("peak_anonymous_bytes", part.path("peak_anonymous_bytes"));
            read += part.path("bytes_read").asLong();
            written += part.path("bytes_written").asLong();
        }
        if (root == null) return;
        configurations.sort(Comparator.comparingInt(c -> order.getOrDefault(c.path("name").asText(), -1)));
        root.remove("timing");
        root.remove("peak_anonymous_bytes");
        root.put("bytes_read", read);
        root.put("bytes_written", written);
        root.set("partitions", partitions);
        ArrayNode c = root.putArray("configurations");
        configurations.forEach(c::add);
        ObjectNode done = root;
        AtomicFile.write(temp.resolve(SweepReport.JSON), o -> json.writerWithDefaultPrettyPrinter().writeValue(o, done));
    }
}
