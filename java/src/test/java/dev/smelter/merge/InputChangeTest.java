package dev.smelter.merge;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.smelter.Device;
import dev.smelter.cli.SmelterCli;
import dev.smelter.config.MergeConfig;
import dev.smelter.io.Checkpoint;
import java.io.IOException;
import java.io.RandomAccessFile;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.FileTime;
import java.util.List;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * An input changed by another process while it is merged: truncated (native code reading a file mapping would die
 * of SIGBUS, taking the JVM with it) or rewritten in place (a silent mix of old and new bytes). Both must end in an
 * exception naming the file, with nothing written.
 */
class InputChangeTest {
    @TempDir
    Path dir;

    CheckpointMerger opened(Path models, Path out, String method) throws Exception {
        assertEquals(0, SmelterCli.run("demo-checkpoints", models.toString(), "--hidden", "64", "--layers", "3", "--vocab", "97"));
        return new CheckpointMerger(MergeConfig.load(models.resolve(method + ".yml"), models),
                new CheckpointMerger.Options(Device.cpu(), out, 1L << 30, false, false));
    }

    static Path shard(Path checkpoint) throws IOException {
        try (Stream<Path> s = Files.list(checkpoint)) {
            return s.filter(p -> p.toString().endsWith(".safetensors")).sorted().findFirst().orElseThrow();
        }
    }

    static void assertNothingWritten(Path out) throws IOException {
        assertFalse(Files.exists(out));
        try (Stream<Path> s = Files.list(out.getParent())) {
            assertTrue(s.noneMatch(p -> p.getFileName().toString().startsWith("." + out.getFileName())), "no temporary directory");
        }
    }

    @Test
    void aTruncatedInputIsAnErrorNamingItNotACrash() throws Exception {
        for (String method : new String[] {"ties", "dare_ties"}) {
            Path models = dir.resolve("m-" + method), out = dir.resolve("out-" + method);
            try (CheckpointMerger m = opened(models, out, method)) {
                CheckpointMerger.Plan plan = m.plan();
                Path victim = shard(models.resolve("expert-de"));
                try (RandomAccessFile f = new RandomAccessFile(victim.toFile(), "rw")) {
                    f.setLength(f.length() / 3);  // what `truncate` does to a checkpoint being merged
                }
                IOException e = assertThrows(IOException.class, () -> m.run(plan, done -> {}));
                assertTrue(e.getMessage().contains(victim.getFileName().toString()), e.getMessage());
            }
            assertNothingWritten(out);
        }
    }

    @Test
    void aTruncatedInputFailsASweepToo() throws Exception {
        Path models = dir.resolve("m-sweep"), out = dir.resolve("out-sweep");
        assertEquals(0, SmelterCli.run("demo-checkpoints", models.toString(), "--hidden", "64", "--layers", "3", "--vocab", "97"));
        MergeConfig cfg = MergeConfig.load(models.resolve("ties.yml"), models);
        var grid = dev.smelter.config.SweepGrid.of(List.of(dev.smelter.config.SweepGrid.parseAxis("density=0.3,0.6")));
        try (SweepRunner r = new SweepRunner(cfg, grid, new SweepRunner.Options(Device.cpu(), out, 1L << 30, false, false,
                CheckpointMerger.NonFinite.WARN, true, true, false, 0))) {
            SweepRunner.SweepPlan plan = r.plan();
            Path victim = shard(models.resolve("expert-fr"));
            try (RandomAccessFile f = new RandomAccessFile(victim.toFile(), "rw")) {
                f.setLength(f.length() / 2);
            }
            IOException e = assertThrows(IOException.class, () -> r.run(plan, done -> {}));
            assertTrue(e.getMessage().contains(victim.getFileName().toString()), e.getMessage());
        }
        assertNothingWritten(out);
    }

    @Test
    void anInputRewrittenInPlaceIsAnErrorNamingIt() throws Exception {
        Path models = dir.resolve("m"), out = dir.resolve("out");
        try (CheckpointMerger m = opened(models, out, "ties")) {
            CheckpointMerger.Plan plan = m.plan();
            Path victim = shard(models.resolve("expert-fr"));
            try (RandomAccessFile f = new RandomAccessFile(victim.toFile(), "rw")) {
                f.seek(f.length() - 16);
                f.write(new byte[16]);  // same size, other bytes
            }
            Files.setLastModifiedTime(victim, FileTime.fromMillis(Files.getLastModifiedTime(victim).toMillis() + 5000));
            IOException e = assertThrows(IOException.class, () -> m.run(plan, done -> {}));
            assertTrue(e.getMessage().contains(victim.getFileName().toString()) && e.getMessage().contains("changed"),
                    e.getMessage());
        }
        assertNothingWritten(out);
        try (Checkpoint c = Checkpoint.open(models.resolve("expert-fr"))) {
            assertTrue(c.tensorNames().size() > 0, "the input itself is left as the other process wrote it");
        }
    }
}
