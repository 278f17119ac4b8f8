package dev.smelter;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.smelter.cli.CliRun;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The self-check as far as a machine without a GPU can take it: every check passes CPU against CPU (one thread
 * against all: the same bits), a simulated mismatch fails naming the kernel, the verdict is cached and a cached
 * failure is not rerun, and doctor prints the table. On a GPU, CudaAgreementTest and the gate cover the rest.
 */
class SelfCheckTest {
    @TempDir
    Path dir;

    @AfterEach
    void clean() {
        System.clearProperty("smelter.selfcheck.inject");
        SelfCheck.forget();
    }

    @Test
    void everyKernelAgreesAcrossThreadCounts() {
        try (Context one = Smelter.openCpu(1); Context all = Smelter.openCpu(0)) {
            List<SelfCheck.Result> results = SelfCheck.run(one, all, false);
            assertTrue(results.size() >= 30, results.size() + " checks");
            for (SelfCheck.Result r : results) assertTrue(r.passed(), r.toString());
            assertTrue(results.stream().anyMatch(r -> r.kernel().startsWith("product")));
            assertTrue(SelfCheck.run(one, all, true).size() < results.size(), "the quick subset is smaller");
        }
    }

    @Test
    void aMismatchFailsNamingTheKernelAndTheVerdictIsCached() throws Exception {
        System.setProperty("smelter.selfcheck.inject", "merge dare_ties (Philox masks, L1 sums)");
        SelfCheck.Verdict v = SelfCheck.verdict("test-device", () -> Smelter.openCpu(2), dir);
        assertFalse(v.passed());
        assertTrue(v.detail().startsWith("merge dare_ties (Philox masks, L1 sums)") && v.detail().contains("differs"),
                v.detail());
        Path cache = dir.resolve("selfcheck-test-device.txt");
        assertTrue(Files.readString(cache).startsWith("fail merge dare_ties"), Files.readString(cache));
        // A new process reads the cached verdict and runs nothing.
        SelfCheck.forget();
        System.clearProperty("smelter.selfcheck.inject");
        SelfCheck.Verdict cached = SelfCheck.verdict("test-device", () -> {
            throw new AssertionError("a cached verdict must not run the check again");
        }, dir);
        assertEquals(v, cached);
        // Another device key checks for itself, and passes.
        assertTrue(SelfCheck.verdict("other-device", () -> Smelter.openCpu(2), dir).passed());
        assertEquals("pass", Files.readString(dir.resolve("selfcheck-other-device.txt")).trim());
    }

    @Test
    void aValueBoundMismatchFailsToo() {
        System.setProperty("smelter.selfcheck.inject", "product (Gram)");
        try (Context one = Smelter.openCpu(1); Context all = Smelter.openCpu(0)) {
            SelfCheck.Result r = SelfCheck.run(one, all, true).stream()
                    .filter(x -> x.kernel().equals("product (Gram)")).findFirst().orElseThrow();
            assertFalse(r.passed());
            assertTrue(r.detail().contains("above the bound"), r.detail());
        }
    }

    @Test
    void doctorPrintsTheTable() {
        CliRun.Run r = CliRun.cli("doctor");
        assertEquals(0, r.code(), r.out() + r.err());
        assertTrue(r.out().contains("self-check of cpu (all threads)") && r.out().contains("every kernel agrees"), r.out());
        assertTrue(r.out().contains("merge della (row ranks)") && r.out().contains("bit-identical"), r.out());
    }
}
