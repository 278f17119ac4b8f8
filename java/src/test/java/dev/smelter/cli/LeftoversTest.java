package dev.smelter.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.smelter.io.WorkDirs;
import java.io.File;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Instant;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * No leftovers: Ctrl-C (SIGINT) during a merge removes its hidden work directory; after SIGKILL the next run beside
 * it recognises the dead owner and removes it, while the directory of a live process is left alone.
 */
class LeftoversTest {
    @TempDir
    static Path dir;

    @BeforeAll
    static void checkpoints() {
        assertEquals(0, SmelterCli.run("demo-checkpoints", dir.resolve("m").toString(), "--hidden", "384", "--layers", "8",
                "--vocab", "4099"));
    }

    static List<Path> hidden(String name) throws Exception {
        try (Stream<Path> s = Files.list(dir)) {
            return s.filter(p -> p.getFileName().toString().startsWith("." + name + ".")).toList();
        }
    }

    /** Starts `smelter merge` in its own JVM and returns once its work directory exists (the merge is under way). */
    static Process mergeInAnotherProcess(String name) throws Exception {
        String java = Path.of(System.getProperty("java.home"), "bin", "java").toString();
        Process p = new ProcessBuilder(java, "--enable-native-access=ALL-UNNAMED", "-cp",
                System.getProperty("java.class.path"), SmelterCli.class.getName(), "merge", "--device", "cpu", "-q",
                dir.resolve("m/dare_ties.yml").toString(), dir.resolve(name).toString())
                .redirectErrorStream(true).redirectOutput(dir.resolve(name + ".log").toFile()).start();
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
        while (hidden(name).isEmpty()) {
            assertTrue(p.isAlive() && System.nanoTime() < deadline, "the merge never started: "
                    + Files.readString(dir.resolve(name + ".log")));
            Thread.sleep(2);
        }
        return p;
    }

    @Test
    void ctrlCRemovesTheWorkDirectory() throws Exception {
        Process p = mergeInAnotherProcess("interrupted");
        new ProcessBuilder("kill", "-INT", Long.toString(p.pid())).start().waitFor();
        assertTrue(p.waitFor(60, TimeUnit.SECONDS));
        if (Files.exists(dir.resolve("interrupted"))) {
            System.out.println("LeftoversTest: the merge finished before SIGINT");
            return;
        }
        assertEquals(List.of(), hidden("interrupted"), "work directory left after SIGINT");
    }

    @Test
    void afterSigkillTheNextRunRemovesWhatTheDeadProcessLeft() throws Exception {
        Process p = mergeInAnotherProcess("killed");
        p.destroyForcibly();
        assertTrue(p.waitFor(60, TimeUnit.SECONDS));
        List<Path> left = hidden("killed");
        if (left.isEmpty()) {
            System.out.println("LeftoversTest: the merge finished before SIGKILL");
            return;
        }
        CliRun.Run r = CliRun.cli("merge", "--device", "cpu", "-q", dir.resolve("m/dare_ties.yml").toString(),
                dir.resolve("killed").toString(), "--overwrite");
        assertEquals(0, r.code(), r.err());
        assertTrue(r.err().contains("left by an interrupted run"), r.err());
        assertEquals(List.of(), hidden("killed"));
        assertTrue(Files.isDirectory(dir.resolve("killed")));
    }

    @Test
    void theWorkDirectoryOfALiveProcessIsLeftAlone() throws Exception {
        Path out = dir.resolve("shared");
        Path mine = dir.resolve(".shared.tmp-0123abcd"), dead = dir.resolve(".shared.tmp-89abcdef");
        Files.createDirectories(mine);
        Files.createDirectories(dead);
        ProcessHandle self = ProcessHandle.current();
        Files.writeString(mine.resolve(".smelter-owner"), self.pid() + " " + self.info().startInstant().map(Instant::toString).orElse("?"));
        Files.writeString(dead.resolve(".smelter-owner"), self.pid() + " 1970-01-01T00:00:00Z");  // a reused pid
        List<String> said = WorkDirs.removeStale(out);
        assertTrue(Files.isDirectory(mine), said.toString());
        assertFalse(Files.exists(dead), said.toString());
        assertTrue(said.stream().anyMatch(s -> s.contains("still running")), said.toString());
    }
}
