package dev.smelter.merge;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.smelter.cli.SmelterCli;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.Test;

/**
 * The Slurm scripts on a real single-node cluster: {@code scripts/slurm-test.sh} starts munged, slurmctld and slurmd
 * on this machine, submits {@code scripts/slurm/merge-array.sbatch} as a job array with {@code finalize.sbatch} after
 * it, and compares the checkpoint byte for byte with a one-process merge; then a missing partition, rerun alone; a
 * sweep as an array; partition 0 first, leaving the model-wide thresholds to the others.
 * Skipped with the reason where Slurm is not installed (Debian: {@code apt-get install slurm-wlm munge}), the test
 * does not run as root, or the daemons do not start; {@code -Dsmelter.slurmTest=false} skips it too.
 */
class SlurmClusterTest {
    @Test
    void anArrayJobAndItsFinalizeWriteTheOneProcessBytes() throws Exception {
        Assumptions.assumeFalse("false".equals(System.getProperty("smelter.slurmTest")), "-Dsmelter.slurmTest=false");
        Assumptions.assumeTrue(onPath("slurmctld") && onPath("slurmd") && onPath("munged") && onPath("sbatch"),
                "Slurm is not installed (apt-get install slurm-wlm munge, or SMELTER_SLURM_INSTALL=1 scripts/slurm-test.sh)");
        Path script = script();
        String java = Path.of(System.getProperty("java.home"), "bin", "java").toString();
        ProcessBuilder pb = new ProcessBuilder("bash", script.toString()).redirectErrorStream(true);
        pb.environment().put("SMELTER", java + " --enable-native-access=ALL-UNNAMED -cp "
                + System.getProperty("java.class.path") + " " + SmelterCli.class.getName());
        Process p = pb.start();
        byte[] out;
        boolean ended;
        try (var in = p.getInputStream()) {
            out = in.readAllBytes();
            ended = p.waitFor(10, TimeUnit.MINUTES);
        }
        String text = new String(out, StandardCharsets.UTF_8);
        assertTrue(ended, text);
        if (p.exitValue() == 77) {
            String reason = text.lines().filter(l -> l.startsWith("SKIP: ")).findFirst().orElse(text);
            Assumptions.abort(reason);
        }
        System.out.println(text);
        assertEquals(0, p.exitValue(), text);
        assertTrue(text.contains("byte-identical to the one-process merge"), text);
        assertTrue(text.contains("rerun alone, it completes a byte-identical checkpoint"), text);
        assertTrue(text.contains("every checkpoint byte-identical to the one-process sweep"), text);
        assertTrue(text.contains("partition 0 computed the thresholds and the other"), text);
    }

    static boolean onPath(String command) {
        for (String d : System.getenv().getOrDefault("PATH", "").split(":"))
            if (Files.isExecutable(Path.of(d, command))) return true;
        return Files.isExecutable(Path.of("/usr/sbin", command));
    }

    /** scripts/slurm-test.sh of this repository (the tests run in java/). */
    static Path script() throws IOException {
        for (Path d = Path.of("").toAbsolutePath(); d != null; d = d.getParent()) {
            Path s = d.resolve("scripts").resolve("slurm-test.sh");
            if (Files.isRegularFile(s)) return s;
        }
        throw new IOException("scripts/slurm-test.sh not found above " + Path.of("").toAbsolutePath());
    }
}
