package dev.smelter.merge;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.smelter.Device;
import dev.smelter.cli.CliRun;
import dev.smelter.config.MergeConfig;
import dev.smelter.io.PartitionStaging;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.stream.Stream;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * A merge split into partitions (processes, Slurm array tasks) or spread over several devices writes the same bytes as
 * one process on one device: TIES with model-wide trimming (thresholds over every tensor) and DARE-TIES (random masks),
 * many shards, more partitions than shards; nothing looks finished before every partition is done, a failed or killed
 * partition is rerun on its own, and a finalize of another job is refused.
 */
class PartitionMergeTest {
    @TempDir
    static Path dir;

    static final String SHARD = "40KB";  // about 20 shards of the demo checkpoints below

    @BeforeAll
    static void checkpoints() {
        assertEquals(0, CliRun.cli("demo-checkpoints", dir.resolve("m").toString(), "--hidden", "64", "--layers", "3",
                "--vocab", "97", "--dtype", "bf16").code());
    }

    static CliRun.Run merge(String config, Path out, String... more) {
        List<String> a = new ArrayList<>(List.of("merge", dir.resolve("m").resolve(config).toString(), out.toString(),
                "-q", "--max-shard-size", SHARD, "--trim-scope", "model"));
        a.addAll(List.of(more));
        return CliRun.cli(a.toArray(String[]::new));
    }

    /** The one-process, one-device output of {@code config}, merged once. */
    static Path reference(String config) {
        Path out = dir.resolve("ref-" + config).resolve("merged");
        if (!Files.isDirectory(out)) {
            CliRun.Run r = merge(config, out, "--device", "cpu");
            assertEquals(0, r.code(), r.err());
        }
        return out;
    }

    /** Both directories hold the same files with the same bytes. */
    static void assertSameBytes(Path expected, Path actual) throws IOException {
        List<String> names = list(expected);
        assertEquals(names, list(actual));
        assertTrue(names.size() > 10, "several shards: " + names);
        for (String n : names) assertArrayEquals(Files.readAllBytes(expected.resolve(n)), Files.readAllBytes(actual.resolve(n)), n);
    }

    static List<String> list(Path d) throws IOException {
        try (Stream<Path> s = Files.list(d)) {
            return s.map(p -> p.getFileName().toString()).sorted().toList();
        }
    }

    static List<String> hidden(Path parent) throws IOException {
        try (Stream<Path> s = Files.list(parent)) {
            return s.map(p -> p.getFileName().toString()).filter(n -> n.startsWith(".")).sorted().toList();
        }
    }

    @Test
    void partitionsWriteTheOneProcessBytes() throws Exception {
        for (String config : List.of("ties.yml", "dare_ties.yml"))
            for (int n : new int[] {1, 3, 40}) {  // 40: more partitions than shards, some write none
                Path out = dir.resolve("p" + n + "-" + config).resolve("merged");
                for (int i = 0; i < n; i++) {
                    assertFalse(Files.exists(out), "nothing appears before every partition is done");
                    CliRun.Run r = merge(config, out, "--device", "cpu", "--partition", i + "/" + n);
                    assertEquals(0, r.code(), r.err());
                }
                assertSameBytes(reference(config), out);
                assertEquals(List.of(), hidden(out.getParent()), "the staging directory is gone");
                CliRun.Run again = merge(config, out, "--finalize");
                assertEquals(0, again.code(), again.err());
                assertTrue(again.err().contains("nothing to finalize"), again.err());
            }
    }

    @Test
    void severalDevicesWriteTheOneDeviceBytes() throws Exception {
        for (String config : List.of("ties.yml", "dare_ties.yml")) {
            Path out = dir.resolve("dev-" + config).resolve("merged");
            CliRun.Run r = merge(config, out, "--device", "cpu,cpu,cpu");
            assertEquals(0, r.code(), r.err());
            assertTrue(r.err().contains("3 devices"), r.err());
            assertSameBytes(reference(config), out);
            if (dev.smelter.Smelter.cudaDeviceCount() > 0) {  // two lanes, each with its own context and stream, on GPU 0
                Path gpu = dir.resolve("cuda-" + config).resolve("merged");
                CliRun.Run g = merge(config, gpu, "--device", "cuda:0,cuda:0");
                assertEquals(0, g.code(), g.err());
                assertSameBytes(reference(config), gpu);
            }
            // Devices and partitions together.
            Path both = dir.resolve("devpart-" + config).resolve("merged");
            for (int i = 0; i < 2; i++)
                assertEquals(0, merge(config, both, "--device", "cpu,cpu", "--partition", i + "/2").code());
            assertSameBytes(reference(config), both);
        }
    }

    /**
     * The other mergekit features go through the same lanes and partitions: a frankenmerge of slices (tensors read
     * from other layers, renumbered, config.json's layer count set), a method computed in Java (nearswap) and a
     * composed one (slerp) write the one-process bytes on several devices and in partitions.
     */
    @Test
    void slicesAndJavaComputedMethodsSpreadToo() throws Exception {
        Map<String, String> configs = new LinkedHashMap<>();
        configs.put("slices.yml", """
                merge_method: passthrough
                slices:
                  - sources: [{model: base, layer_range: [0, 2]}]
                  - sources:
                      - model: expert-de
                        layer_range: [1, 3]
                        parameters: {scale: [{filter: o_proj, value: 0.5}, {value: 1.0}]}
                """);
        configs.put("nearswap.yml", """
                merge_method: nearswap
                base_model: base
                models: [{model: expert-de}]
                parameters: {t: 0.001}
                """);
        configs.put("slerp.yml", """
                merge_method: slerp
                base_model: base
                models: [{model: base}, {model: expert-fr}]
                parameters: {t: [0.2, 0.7]}
                """);
        for (Map.Entry<String, String> c : configs.entrySet()) {
            Path cfg = dir.resolve("m").resolve(c.getKey());
            Files.writeString(cfg, c.getValue());
            java.util.function.BiFunction<Path, String[], CliRun.Run> run = (out, more) -> {
                List<String> a = new ArrayList<>(List.of("merge", cfg.toString(), out.toString(), "-q",
                        "--max-shard-size", SHARD));
                a.addAll(List.of(more));
                return CliRun.cli(a.toArray(String[]::new));
            };
            Path ref = dir.resolve("ref-" + c.getKey()).resolve("merged");
            CliRun.Run r = run.apply(ref, new String[] {"--device", "cpu"});
            assertEquals(0, r.code(), c.getKey() + ": " + r.err());
            Path devices = dir.resolve("dev-" + c.getKey()).resolve("merged");
            r = run.apply(devices, new String[] {"--device", "cpu,cpu"});
            assertEquals(0, r.code(), c.getKey() + ": " + r.err());
            assertSameBytes(ref, devices);
            Path parts = dir.resolve("part-" + c.getKey()).resolve("merged");
            for (int i = 0; i < 3; i++) {
                r = run.apply(parts, new String[] {"--device", "cpu", "--partition", i + "/3"});
                assertEquals(0, r.code(), c.getKey() + " partition " + i + ": " + r.err());
            }
            assertSameBytes(ref, parts);
        }
        assertTrue(Files.readString(dir.resolve("part-slices.yml/merged/config.json")).contains("\"num_hidden_layers\": 4"),
                "the finalize step writes the sliced layer count");
    }

    @Test
    void theFinalizeStepChecksEveryPartitionAndTheJob() throws Exception {
        Path out = dir.resolve("fin").resolve("merged");
        for (int i = 0; i < 2; i++) assertEquals(0, merge("ties.yml", out, "--device", "cpu", "--partition", i + "/3").code());
        CliRun.Run early = merge("ties.yml", out, "--finalize");
        assertEquals(1, early.code(), early.err());
        assertTrue(early.err().contains("partitions [2] of 3 have not finished"), early.err());
        assertFalse(Files.exists(out));
        CliRun.Run other = merge("ties.yml", out, "--finalize", "--seed", "9");  // another config: another job
        assertEquals(2, other.code(), other.err());
        assertTrue(other.err().contains("belongs to another job"), other.err());
        CliRun.Run otherCount = merge("ties.yml", out, "--device", "cpu", "--partition", "0/4");
        assertEquals(2, otherCount.code(), otherCount.err());
        assertTrue(otherCount.err().contains("split into 3 partitions"), otherCount.err());
        // The last partition finds the finalize lock taken (a finalizer that died): it leaves the work to --finalize.
        Path staging = PartitionStaging.others(out).get(0);
        Files.writeString(staging.resolve("finalize.lock"), "1\n");
        assertEquals(0, merge("ties.yml", out, "--device", "cpu", "--partition", "2/3").code());
        assertFalse(Files.exists(out));
        CliRun.Run fin = merge("ties.yml", out, "--finalize");
        assertEquals(0, fin.code(), fin.err());
        assertTrue(fin.err().contains("finalized"), fin.err());
        assertSameBytes(reference("ties.yml"), out);
        assertEquals(List.of(), hidden(out.getParent()));
        // A second job into the same output is refused unless --overwrite.
        CliRun.Run exists = merge("ties.yml", out, "--device", "cpu", "--partition", "0/2");
        assertEquals(2, exists.code(), exists.err());
        assertTrue(exists.err().contains("exists and is not empty"), exists.err());
    }

    @Test
    void aFailedOrKilledPartitionIsRerunOnItsOwn() throws Exception {
        Path out = dir.resolve("kill").resolve("merged");
        MergeConfig loaded = MergeConfig.load(dir.resolve("m").resolve("ties.yml"));
        MergeConfig cfg = loaded.with(loaded.models(), loaded.parameters(), MergeConfig.TrimScope.MODEL, loaded.seed(), null);
        var options = new CheckpointMerger.Options(Device.cpu(), out, 40_000, false, false,
                CheckpointMerger.NonFinite.WARN, 0, true, null);
        CheckpointMerger.Scale[] parts = new CheckpointMerger.Scale[3];
        for (int i = 0; i < 3; i++) parts[i] = new CheckpointMerger.Scale(List.of(Device.cpu()), new Partition(i, 3), "");
        try (CheckpointMerger m = new CheckpointMerger(cfg, options)) {
            CheckpointMerger.Plan plan = m.plan();
            var first = m.run(plan, parts[0], b -> {});
            assertTrue(first.notes().stream().anyMatch(n -> n.startsWith("model-wide statistics computed")), first.notes().toString());
            // Partition 1 fails after its first tensors: its unfinished shards are removed, it is not done.
            long[] seen = {0};
            assertThrows(IllegalStateException.class, () -> m.run(plan, parts[1], b -> {
                if (++seen[0] == 3) throw new IllegalStateException("stopped");
            }));
            Path staging = PartitionStaging.others(out).get(0);
            assertFalse(Files.exists(staging.resolve("done").resolve("1")));
            try (Stream<Path> s = Files.list(staging.resolve("shards"))) {
                assertTrue(s.noneMatch(p -> p.getFileName().toString().endsWith(".partial")), "no partial file left");
            }
            // Partition 2 is killed midway: what SIGKILL leaves is a partial file of one of its shards, garbage.
            List<Integer> shards2 = parts[2].partition().shards(m.layout(plan));
            Path partial = staging.resolve("shards").resolve("." + m.layout(plan).shardName(shards2.get(0)) + ".partial");
            Files.write(partial, new byte[1000]);
            assertFalse(Files.exists(out));
            // The reruns, each on its own; the last finished assembles the output.
            var third = m.run(plan, parts[2], b -> {});
            assertTrue(third.notes().stream().anyMatch(n -> n.startsWith("model-wide statistics read from")), third.notes().toString());
            assertFalse(Files.exists(partial));
            assertFalse(Files.exists(out), "partition 1 is not done yet");
            // A shard of partition 0 lost: the rerun of partition 0 writes it again and keeps the others.
            List<Integer> shards0 = parts[0].partition().shards(m.layout(plan));
            Files.delete(staging.resolve("shards").resolve(m.layout(plan).shardName(shards0.get(1))));
            var again = m.run(plan, parts[0], b -> {});
            assertTrue(again.notes().stream().anyMatch(w -> w.contains((shards0.size() - 1) + " of its " + shards0.size()
                    + " shards were finished by an earlier run, kept")), again.notes().toString());
            assertTrue(again.bytesWritten() < m.layout(plan).totalDataBytes() / 3, "one shard written, not all");
            var s = m.run(plan, parts[1], b -> {});
            assertTrue(s.notes().stream().anyMatch(w -> w.contains("finished last")), s.notes().toString());
            assertTrue(Files.isDirectory(out));
        }
        // The same bytes as the one-process merge through the same API.
        Path one = dir.resolve("kill-ref").resolve("merged");
        try (CheckpointMerger m = new CheckpointMerger(cfg, new CheckpointMerger.Options(Device.cpu(), one, 40_000, false,
                false, CheckpointMerger.NonFinite.WARN, 0, true, null))) {
            m.run(m.plan(), b -> {});
        }
        assertSameBytes(one, out);
    }

    @Test
    void aFailingDeviceLaneStopsTheOthersAndWritesNothing() throws Exception {
        Path out = dir.resolve("lanefail").resolve("merged");
        MergeConfig cfg = MergeConfig.load(dir.resolve("m").resolve("ties.yml"));
        var options = new CheckpointMerger.Options(Device.cpu(), out, 40_000, false, false,
                CheckpointMerger.NonFinite.WARN, 0, true, null);
        var threeLanes = new CheckpointMerger.Scale(List.of(Device.cpu(), Device.cpu(), Device.cpu()), null, "");
        try (CheckpointMerger m = new CheckpointMerger(cfg, options)) {
            CheckpointMerger.Plan plan = m.plan();
            java.util.concurrent.atomic.AtomicInteger calls = new java.util.concurrent.atomic.AtomicInteger();
            IllegalStateException e = assertThrows(IllegalStateException.class, () -> m.run(plan, threeLanes, b -> {
                if (calls.incrementAndGet() == 7) throw new IllegalStateException("lane stopped");
            }));
            assertEquals("lane stopped", e.getMessage());
            assertTrue(calls.get() < plan.tensors().size(), "the other lanes stopped early: " + calls.get());
            assertFalse(Files.exists(out));
            assertEquals(List.of(), hidden(out.getParent()));
            // The same merger runs again afterwards: nothing was left half-closed.
            m.run(plan, threeLanes, b -> {});
        }
        assertSameBytes(reference40k(), out);
    }

    /** The one-process output through the API, with 40,000-byte shards and the config's own trimming. */
    static Path reference40k() throws Exception {
        Path one = dir.resolve("api-ref").resolve("merged");
        if (!Files.isDirectory(one))
            try (CheckpointMerger m = new CheckpointMerger(MergeConfig.load(dir.resolve("m").resolve("ties.yml")),
                    new CheckpointMerger.Options(Device.cpu(), one, 40_000, false, false, CheckpointMerger.NonFinite.WARN,
                            0, true, null))) {
                m.run(m.plan(), b -> {});
            }
        return one;
    }

    static CliRun.Run sweep(Path out, String... more) {
        List<String> a = new ArrayList<>(List.of("sweep", dir.resolve("m").resolve("ties.yml").toString(), out.toString(),
                "-q", "--max-shard-size", SHARD, "--trim-scope", "model", "--grid", "density=0.4,0.6,0.8",
                "--grid", "lambda=0.5,1"));
        a.addAll(List.of(more));
        return CliRun.cli(a.toArray(String[]::new));
    }

    /** configs.csv without its timing columns (seconds, sequential_seconds). */
    static List<String> untimed(Path csv) throws IOException {
        return Files.readAllLines(csv).stream().map(l -> {
            String[] f = l.split(",", -1);
            f[3] = "";
            f[4] = "";
            return String.join(",", f);
        }).toList();
    }

    @Test
    void sweepPartitionsWriteTheOneProcessCheckpoints() throws Exception {
        Path one = dir.resolve("sweep-one").resolve("out");
        CliRun.Run r = sweep(one);
        assertEquals(0, r.code(), r.err());
        for (int n : new int[] {2, 7}) {  // 7: more partitions than the 6 configurations
            Path out = dir.resolve("sweep-p" + n).resolve("out");
            for (int i = 0; i < n; i++) {
                assertFalse(Files.exists(out), "nothing appears before every partition is done");
                if (i == n - 1) {
                    CliRun.Run early = sweep(out, "--finalize");
                    assertEquals(1, early.code(), early.err());
                    assertTrue(early.err().contains("partitions [" + i + "] of " + n), early.err());
                }
                r = sweep(out, "--partition", i + "/" + n);
                assertEquals(0, r.code(), r.err());
            }
            assertTrue(r.err().contains("finished last: assembled"), r.err());
            assertEquals(list(one), list(out));
            for (String name : list(one)) {
                if (Files.isDirectory(one.resolve(name))) assertSameBytes(one.resolve(name), out.resolve(name));
            }
            assertArrayEquals(Files.readAllBytes(one.resolve("sweep.csv")), Files.readAllBytes(out.resolve("sweep.csv")));
            assertEquals(untimed(one.resolve("configs.csv")), untimed(out.resolve("configs.csv")));
            assertEquals(List.of(), hidden(out.getParent()));
            CliRun.Run again = sweep(out, "--finalize");
            assertEquals(0, again.code(), again.err());
            assertTrue(again.err().contains("nothing to finalize"), again.err());
        }
        // Several devices: the configurations spread over one lane per device, the same checkpoints.
        Path devices = dir.resolve("sweep-dev").resolve("out");
        r = CliRun.cli("sweep", dir.resolve("m").resolve("ties.yml").toString(), devices.toString(), "-q",
                "--device", "cpu,cpu,cpu,cpu", "--max-shard-size", SHARD, "--trim-scope", "model", "--grid",
                "density=0.4,0.6,0.8", "--grid", "lambda=0.5,1");
        assertEquals(0, r.code(), r.err());
        assertTrue(r.err().contains("on 4 devices"), r.err());
        assertEquals(list(one), list(devices));
        for (String name : list(one))
            if (Files.isDirectory(one.resolve(name))) assertSameBytes(one.resolve(name), devices.resolve(name));
        assertArrayEquals(Files.readAllBytes(one.resolve("sweep.csv")), Files.readAllBytes(devices.resolve("sweep.csv")));
        assertEquals(untimed(one.resolve("configs.csv")), untimed(devices.resolve("configs.csv")));
        assertEquals(List.of(), hidden(devices.getParent()));
        r = sweep(dir.resolve("sw-both").resolve("out"), "--partition", "0/2", "--device", "cpu,cpu");
        assertEquals(2, r.code(), r.err());
    }

    @Test
    void laterPartitionsTakeTheModelWideThresholdsTheFirstLeft() throws Exception {
        // Thresholds of 0 keep every delta: if partition 1 uses the file, its shards differ from the one-process merge.
        Path out = dir.resolve("stats").resolve("merged");
        assertEquals(0, merge("ties.yml", out, "--device", "cpu", "--partition", "0/2").code());
        Path stats = PartitionStaging.others(out).get(0).resolve("model-stats.txt");
        String line = Files.readAllLines(stats).get(0);
        assertTrue(line.matches("thresholds: \\d+ \\d+ \\d+"), line);
        Files.writeString(stats, "thresholds: 0 0 0\n");
        CliRun.Run r = merge("ties.yml", out, "--device", "cpu", "--partition", "1/2");
        assertEquals(0, r.code(), r.err());
        assertTrue(r.err().contains("model-wide statistics read from"), r.err());
        Path expected = reference("ties.yml");
        boolean differs = false;
        for (String n : list(expected))
            differs |= !java.util.Arrays.equals(Files.readAllBytes(expected.resolve(n)), Files.readAllBytes(out.resolve(n)));
        assertTrue(differs, "partition 1 merged with the thresholds it read");
    }

    @Test
    void dryRunSaysWhatAPartitionWrites() throws Exception {
        Path out = dir.resolve("dry").resolve("merged");
        List<String> all = new ArrayList<>();
        for (int p = 0; p < 3; p++) {
            final int i = p;
            CliRun.Run r = merge("ties.yml", out, "--dry-run", "--partition", i + "/3", "--device", "cpu,cpu");
            assertEquals(0, r.code(), r.err());
            assertTrue(r.out().contains("on 2 devices (cpu, cpu)"), r.out());
            String line = r.out().lines().filter(l -> l.startsWith("partition " + i + "/3 writes")).findFirst().orElseThrow();
            all.addAll(List.of(line.substring(line.indexOf("): ") + 3).split(", ")));
        }
        List<String> shards = list(reference("ties.yml")).stream().filter(n -> n.endsWith(".safetensors")).toList();
        assertEquals(shards, all.stream().sorted().toList(), "every shard once");
        assertFalse(Files.exists(out.getParent()) && !hidden(out.getParent()).isEmpty());
    }

    @Test
    void shardsAreDealtByBytesAndDevicesParse() {
        assertEquals(List.of(Device.cpu(), Device.cpu()), DeviceScheduler.parse("cpu,cpu"));
        assertEquals(List.of(Device.cuda(0), Device.cuda(1), Device.cuda(3)), DeviceScheduler.parse("cuda:0,1,cuda:3"));
        assertThrows(IllegalArgumentException.class, () -> DeviceScheduler.parse("0,1"));
        assertThrows(IllegalArgumentException.class, () -> DeviceScheduler.parse("cuda:0,,1"));
        assertThrows(IllegalArgumentException.class, () -> Partition.parse("3/3"));
        assertThrows(IllegalArgumentException.class, () -> Partition.parse("1-3"));
        assertEquals(new Partition(2, 4), Partition.parse(" 2/4 "));
    }
}
