package dev.smelter.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * A memory allocation that fails (on a GPU: an out-of-memory; here injected with SMELTER_FAULT_ALLOC_AT=N, on the
 * CPU backend) before or in the middle of a merge: a SmelterException naming what failed, exit 1, the JVM alive,
 * nothing written and no work directory left.
 */
class FaultInjectionTest {
    @TempDir
    static Path dir;

    @BeforeAll
    static void checkpoints() {
        assertEquals(0, SmelterCli.run("demo-checkpoints", dir.resolve("m").toString(), "--hidden", "64", "--layers", "3",
                "--vocab", "97"));
    }

    record Outcome(int code, String output) {}

    static Outcome merge(String config, String out, int failAt) throws Exception {
        String java = Path.of(System.getProperty("java.home"), "bin", "java").toString();
        ProcessBuilder pb = new ProcessBuilder(java, "--enable-native-access=ALL-UNNAMED", "-cp",
                System.getProperty("java.class.path"), SmelterCli.class.getName(), "merge", "--device", "cpu", "-q",
                dir.resolve("m").resolve(config).toString(), dir.resolve(out).toString()).redirectErrorStream(true);
        pb.environment().put("SMELTER_FAULT_ALLOC_AT", Integer.toString(failAt));
        Process p = pb.start();
        String text = new String(p.getInputStream().readAllBytes());
        assertTrue(p.waitFor(120, TimeUnit.SECONDS));
        return new Outcome(p.exitValue(), text);
    }

    static List<Path> leftovers(String name) throws Exception {
        try (Stream<Path> s = Files.list(dir)) {
            return s.filter(p -> p.getFileName().toString().startsWith("." + name)).toList();
        }
    }

    @Test
    void aFailedAllocationEndsTheMergeCleanly() throws Exception {
        // Allocations 1..3 are the merge's buffers; the SCE merge allocates scratch per tensor, so 6 fails mid-merge.
        for (var c : List.of(new Object[] {"ties.yml", 1}, new Object[] {"ties.yml", 3}, new Object[] {"sce.yml", 6})) {
            String config = (String) c[0];
            int at = (Integer) c[1];
            if (config.equals("sce.yml"))
                Files.writeString(dir.resolve("m/sce.yml"), """
                        merge_method: sce
                        base_model: base
                        models: [{model: expert-de}, {model: expert-fr}]
                        parameters: {select_topk: 0.5}
                        """);
            String out = "out-" + config.replace(".yml", "") + "-" + at;
            Outcome o = merge(config, out, at);
            assertEquals(1, o.code(), o.output());
            assertTrue(o.output().contains("SMELTER_FAULT_ALLOC_AT") && o.output().contains("out of memory")
                    || o.output().contains("OUT_OF_MEMORY"), o.output());
            assertFalse(o.output().contains("hs_err") || o.output().contains("SIGSEGV"), o.output());
            assertFalse(Files.exists(dir.resolve(out)), out);
            assertEquals(List.of(), leftovers(out));
        }
        Outcome ok = merge("ties.yml", "out-ok", 0);
        assertEquals(0, ok.code(), ok.output());
    }
}
