package dev.smelter.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.stream.Stream;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The output of merge and sweep is never an input, inside one, or a directory holding one (real paths, links
 * resolved): refused with exit 2 before anything is written, every input byte for byte as before.
 */
class OutputSafetyTest {
    @TempDir
    static Path dir;

    static Path models;

    @BeforeAll
    static void checkpoints() throws IOException {
        models = dir.resolve("models");
        assertEquals(0, SmelterCli.run("demo-checkpoints", models.toString(), "--hidden", "32", "--layers", "2", "--vocab", "31"));
        Files.createSymbolicLink(dir.resolve("link-to-base"), models.resolve("base"));
    }

    /** Every file under the models folder with its bytes. */
    static Map<String, byte[]> snapshot() throws IOException {
        Map<String, byte[]> files = new TreeMap<>();
        try (Stream<Path> s = Files.walk(models)) {
            for (Path p : s.filter(Files::isRegularFile).toList()) files.put(models.relativize(p).toString(), Files.readAllBytes(p));
        }
        return files;
    }

    @Test
    void anOutputThatWouldReplaceAnInputIsRefused() throws IOException {
        Map<String, byte[]> before = snapshot();
        String cfg = models.resolve("ties.yml").toString();
        for (Path out : List.of(models.resolve("base"), models.resolve("expert-de"), models, models.resolve("base/sub"),
                dir.resolve("link-to-base"))) {
            for (String command : List.of("merge", "sweep")) {
                List<String> args = new ArrayList<>(List.of(command, "--device", "cpu", "-q", cfg, out.toString(), "--overwrite"));
                if (command.equals("sweep")) args.addAll(List.of("--grid", "density=0.3,0.5"));
                CliRun.Run r = CliRun.cli(args.toArray(String[]::new));
                assertEquals(2, r.code(), command + " to " + out + ": " + r.err());
                assertTrue(r.err().contains("choose an output outside every input"), r.err());
            }
        }
        Map<String, byte[]> after = snapshot();
        assertEquals(before.keySet(), after.keySet());
        for (String f : before.keySet()) assertEquals(-1, java.util.Arrays.mismatch(before.get(f), after.get(f)), f);
        try (Stream<Path> s = Files.list(models)) {
            assertTrue(s.noneMatch(p -> p.getFileName().toString().startsWith(".")), "no temporary directories left");
        }
    }
}
