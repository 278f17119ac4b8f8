package dev.smelter.analysis;

import static dev.smelter.cli.CliRun.cli;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.smelter.cli.CliRun.Run;
import dev.smelter.cli.SmelterCli;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * An input of cka, neurons or compare changed by another process while the command runs: truncated after it was
 * opened (native code reading a file mapping would die of SIGBUS, taking the JVM with it: the command runs in a child
 * JVM, {@link ChangingInputRun}) or rewritten in place (a silent mix of old and new bytes). Both must end in exit 1
 * with the file named and nothing written. Also: {@code -o} must not write over an input.
 */
class AnalysisInputChangeTest {
    @TempDir
    Path dir;

    static final int ROWS = 700, D = 24, FF = 40;

    static double[][] random(SplittableRandom r, int rows, int cols, double offset) {
        double[][] m = new double[rows][cols];
        for (double[] row : m) for (int j = 0; j < cols; j++) row[j] = offset + r.nextGaussian();
        return m;
    }

    /** hidden.0..2 and mlp_act.0..1 (F32), mask.src (every other row), sentence_ids (5 rows each). */
    static Path activations(Path file, long seed) throws IOException {
        SplittableRandom r = new SplittableRandom(seed);
        ActivationFileWriter w = new ActivationFileWriter();
        for (int l = 0; l < 3; l++) w.matrix("hidden." + l, random(r, ROWS, D, 0), false);
        for (int l = 0; l < 2; l++) w.matrix("mlp_act." + l, random(r, ROWS, FF, -0.3), false);
        boolean[] keep = new boolean[ROWS];
        for (int i = 0; i < ROWS; i++) keep[i] = i % 2 == 0;
        long[] ids = new long[ROWS];
        for (int i = 0; i < ROWS; i++) ids[i] = i / 5;
        return w.mask("src", keep).sentenceIds(ids).write(file);
    }

    record Outcome(int code, String output) {}

    Outcome changing(String action, Path victim, String trigger, String... command) throws Exception {
        String java = Path.of(System.getProperty("java.home"), "bin", "java").toString();
        List<String> cmd = new ArrayList<>(List.of(java, "--enable-native-access=ALL-UNNAMED", "-cp",
                System.getProperty("java.class.path"), ChangingInputRun.class.getName(), action, victim.toString(), trigger));
        cmd.addAll(List.of(command));
        // in the temporary folder: a JVM killed by SIGBUS leaves its hs_err file there
        Process p = new ProcessBuilder(cmd).directory(dir.toFile()).redirectErrorStream(true).start();
        String text = new String(p.getInputStream().readAllBytes());
        assertTrue(p.waitFor(120, TimeUnit.SECONDS));
        return new Outcome(p.exitValue(), text);
    }

    static void assertFailsNaming(Outcome o, Path victim, String what) {
        assertEquals(1, o.code(), o.output());  // 134 would be the JVM killed by SIGBUS
        assertFalse(o.output().contains("SIGBUS") || o.output().contains("hs_err"), o.output());
        assertTrue(o.output().contains("smelter: ") && o.output().contains(victim.toString()), o.output());
        assertTrue(o.output().contains(what), o.output());
    }

    static void assertEmpty(Path out) throws IOException {
        if (!Files.exists(out)) return;
        try (Stream<Path> s = Files.list(out)) {
            assertEquals(List.of(), s.toList(), "nothing written");
        }
    }

    static final String TRUNCATED = "truncated or replaced while in use", REWRITTEN = "changed while it was read";

    @Test
    void ckaFailsNamingATruncatedOrRewrittenFile() throws Exception {
        for (String form : new String[] {"feature", "gram", "minibatch"})
            for (String action : new String[] {"truncate", "rewrite"}) {
                Path a = activations(dir.resolve(form + action + "-a.safetensors"), 1);
                Path b = activations(dir.resolve(form + action + "-b.safetensors"), 2);
                Path out = dir.resolve("out-cka-" + form + action);
                Outcome o = changing(action, b, "CKA of", "cka", a.toString(), b.toString(), "--device", "cpu", "--form", form,
                        "--batch", "128", "-o", out.toString());
                assertFailsNaming(o, b, action.equals("truncate") ? TRUNCATED : REWRITTEN);
                assertEmpty(out);
            }
        // a masked feature form reads the rows the same way; with --pool mean the rows are read (and pooled) before
        // "CKA of": the truncation after them is found by the check at the end
        for (String pool : new String[] {"none", "mean"}) {
            Path a = activations(dir.resolve(pool + "-a.safetensors"), 1), b = activations(dir.resolve(pool + "-b.safetensors"), 2);
            Outcome o = changing("truncate", a, "CKA of", "cka", a.toString(), b.toString(), "--device", "cpu", "--form",
                    "feature", "--mask", "src", "--pool", pool);
            assertFailsNaming(o, a, pool.equals("none") ? TRUNCATED : REWRITTEN);
        }
    }

    @Test
    void neuronsFailNamingATruncatedOrRewrittenFile() throws Exception {
        for (String action : new String[] {"truncate", "rewrite"}) {
            Path en = activations(dir.resolve(action + "-en.safetensors"), 3);
            Path de = activations(dir.resolve(action + "-de.safetensors"), 4);
            Path out = dir.resolve("out-neurons-" + action);
            // "en: FILE, ..." is printed when en's counting starts: de is already open, and read next
            Outcome o = changing(action, de, "en: ", "neurons", "en=" + en, "de=" + de + "#src", "--device", "cpu",
                    "--chunk-rows", "64", "-o", out.toString());
            assertFailsNaming(o, de, action.equals("truncate") ? TRUNCATED : REWRITTEN);
            assertEmpty(out);
        }
    }

    @Test
    void compareFailsNamingATruncatedOrRewrittenCheckpoint() throws Exception {
        Path models = dir.resolve("models");
        assertEquals(0, SmelterCli.run("demo-checkpoints", models.toString(), "--hidden", "64", "--layers", "3", "--vocab", "97"));
        for (String action : new String[] {"truncate", "rewrite"}) {
            Path de = dir.resolve("de-" + action);
            copy(models.resolve("expert-de"), de);
            Path victim = shard(de);
            Path out = dir.resolve("out-compare-" + action);
            Outcome o = changing(action, victim, "comparing", "compare", models.resolve("expert-fr").toString(), de.toString(),
                    "--base", models.resolve("base").toString(), "--device", "cpu", "-o", out.toString());
            assertFailsNaming(o, victim, action.equals("truncate") ? TRUNCATED : REWRITTEN);
            assertEmpty(out);
        }
    }

    static void copy(Path from, Path to) throws IOException {
        Files.createDirectories(to);
        try (Stream<Path> s = Files.list(from)) {
            for (Path p : s.toList()) Files.copy(p, to.resolve(p.getFileName()));
        }
    }

    /** The last shard by name: the one holding the later layers, read after the comparison has started. */
    static Path shard(Path checkpoint) throws IOException {
        try (Stream<Path> s = Files.list(checkpoint)) {
            return s.filter(p -> p.toString().endsWith(".safetensors")).sorted().reduce((x, y) -> y).orElseThrow();
        }
    }

    @Test
    void theOutputFolderMustNotWriteOverAnInput() throws Exception {
        Path a = activations(dir.resolve("a.safetensors"), 1);
        Path b = activations(Files.createDirectories(dir.resolve("named")).resolve("cka.json"), 2);
        byte[] before = Files.readAllBytes(b);
        // -o is an input file, or the folder of an input that a written file would replace
        Run r = cli("cka", a.toString(), b.toString(), "--device", "cpu", "-o", a.toString());
        assertEquals(2, r.code(), r.err());
        assertTrue(r.err().contains("output folder " + a) && r.err().contains("is the input " + a), r.err());
        r = cli("cka", a.toString(), b.toString(), "--device", "cpu", "-o", b.getParent().toString());
        assertEquals(2, r.code(), r.err());
        assertTrue(r.err().contains("cka.json written over the input " + b) && r.err().contains(b.getParent().toString()), r.err());
        assertTrue(java.util.Arrays.equals(before, Files.readAllBytes(b)), "the input is untouched");
        Path n = activations(b.getParent().resolve("neurons.json"), 3);
        r = cli("neurons", "en=" + a, "de=" + n, "--device", "cpu", "-o", n.getParent().toString());
        assertEquals(2, r.code(), r.err());
        assertTrue(r.err().contains("neurons.json written over the input " + n) && r.err().contains("(de)"), r.err());
        // next to an input, with other names: fine
        r = cli("cka", a.toString(), b.toString(), "--device", "cpu", "-o", dir.toString());
        assertEquals(0, r.code(), r.err());
        assertTrue(Files.exists(dir.resolve("cka.json")));

        Path models = dir.resolve("models");
        assertEquals(0, SmelterCli.run("demo-checkpoints", models.toString(), "--hidden", "64", "--layers", "3", "--vocab", "97"));
        Path fr = models.resolve("expert-fr"), de = models.resolve("expert-de");
        r = cli("compare", fr.toString(), de.toString(), "--device", "cpu", "-o", de.toString());
        assertEquals(2, r.code(), r.err());
        assertTrue(r.err().contains("output folder " + de + " is the input " + de + " (model 2)"), r.err());
        assertFalse(Files.exists(de.resolve("compare.json")));
        r = cli("compare", fr.toString(), de.toString(), "--base", models.resolve("base").toString(), "--device", "cpu",
                "-o", models.toString());
        assertEquals(2, r.code(), r.err());
        assertTrue(r.err().contains("output folder " + models + " contains the input " + fr + " (model 1)"), r.err());
        assertFalse(Files.exists(models.resolve("compare.json")));
    }
}
