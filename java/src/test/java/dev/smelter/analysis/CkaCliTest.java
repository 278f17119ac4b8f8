package dev.smelter.analysis;

import static dev.smelter.cli.CliRun.cli;

import dev.smelter.cli.CliRun.Run;
import static dev.smelter.analysis.CkaTest.referenceCka;
import static dev.smelter.analysis.ProductKernelTest.random;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** {@code smelter cka} end to end on activation files written byte by byte. */
class CkaCliTest {
    @TempDir
    Path dir;

    static final int TOKENS = 600, D = 12;

    /** An activation file: hidden.0..n-1 (F32), mask.src (U8, every other token), sentence_ids (3 tokens each). */
    static Path activationFile(Path file, List<double[][]> layers) throws IOException {
        ActivationFileWriter w = new ActivationFileWriter();
        for (int l = 0; l < layers.size(); l++) w.matrix("hidden." + l, layers.get(l), false);
        boolean[] src = new boolean[TOKENS];
        long[] ids = new long[TOKENS];
        for (int i = 0; i < TOKENS; i++) {
            src[i] = i % 2 == 1;
            ids[i] = i / 3;
        }
        return w.mask("src", src).sentenceIds(ids).write(file);
    }


    @Test
    void layerwiseCkaMatchesTheReferenceAndWritesCsvJsonPng() throws IOException {
        SplittableRandom r = new SplittableRandom(17);
        List<double[][]> a = new ArrayList<>(), b = new ArrayList<>();
        for (int l = 0; l < 3; l++) {
            double[][] x = random(r, TOKENS, D, 2.0 * l, 1.0);
            a.add(x);
            b.add(CkaTest.related(r, x, D, 10.0 * (l + 1)));
        }
        Path fa = activationFile(dir.resolve("a.safetensors"), a), fb = activationFile(dir.resolve("b.safetensors"), b);
        Path out = dir.resolve("out");
        Run run = cli("cka", fa.toString(), fb.toString(), "-o", out.toString(), "--device", "cpu", "--angles", "2");
        assertEquals(0, run.code(), run.err());
        List<String> csv = Files.readAllLines(out.resolve("cka.csv"));
        assertEquals("layer,cka,median_angle_rad", csv.getFirst());
        for (int l = 0; l < 3; l++) {
            String[] f = csv.get(l + 1).split(",");
            assertEquals(l, Integer.parseInt(f[0]));
            assertEquals(referenceCka(f32(a.get(l)), f32(b.get(l))), Double.parseDouble(f[1]), 1e-12, "layer " + l);
        }
        assertTrue(Files.size(out.resolve("cka.png")) > 1000);
        assertTrue(Files.readString(out.resolve("cka.json")).contains("\"form\" : \"gram\""));

        // every pair, masked and pooled per sentence, in the feature form
        Path all = dir.resolve("all");
        run = cli("cka", fa.toString(), fb.toString(), "-o", all.toString(), "--device", "cpu", "--pairs", "all",
                "--form", "feature", "--mask", "src", "--pool", "mean");
        assertEquals(0, run.code(), run.err());
        List<String> rows = Files.readAllLines(all.resolve("cka.csv"));
        assertEquals(1 + 9, rows.size());
        // sentences of 3 tokens, mask on odd tokens: sentence s pools the tokens with odd index
        double[][] pa = pooled(a.get(0)), pb = pooled(b.get(2));
        String[] f = rows.get(1 + 2).split(",");
        assertEquals("0", f[0]);
        assertEquals("2", f[1]);
        assertEquals(referenceCka(pa, pb), Double.parseDouble(f[2]), 1e-12);
    }

    static double[][] f32(double[][] m) {  // as the file stores them
        double[][] r = new double[m.length][];
        for (int i = 0; i < m.length; i++) {
            r[i] = new double[m[i].length];
            for (int j = 0; j < m[i].length; j++) r[i][j] = (float) m[i][j];
        }
        return r;
    }

    private static double[][] pooled(double[][] x) {
        double[][] p = new double[TOKENS / 3][D];
        int[] n = new int[TOKENS / 3];
        for (int i = 0; i < TOKENS; i++) {
            if (i % 2 == 0) continue;
            for (int j = 0; j < D; j++) p[i / 3][j] += (float) x[i][j];
            n[i / 3]++;
        }
        for (int s = 0; s < p.length; s++) for (int j = 0; j < D; j++) p[s][j] = (float) (p[s][j] / n[s]);  // pooled rows are f32
        return p;
    }

    static double f16(double v) {
        return Float.float16ToFloat(Float.floatToFloat16((float) v));
    }

    static double[][] keptRows(double[][] m, boolean[] keep) {
        List<double[]> out = new ArrayList<>();
        for (int i = 0; i < m.length; i++) if (keep[i]) out.add(m[i]);
        return out.toArray(double[][]::new);
    }

    static double[] referenceCovariance(double[][] m) {
        double[][] c = CkaTest.centered(m);
        int d = m[0].length;
        double[] cov = new double[d * d];
        for (int i = 0; i < d; i++)
            for (int j = 0; j < d; j++) {
                double s = 0;
                for (double[] row : c) s += row[i] * row[j];
                cov[i * d + j] = s;
            }
        return cov;
    }

    /**
     * A mask excludes BOS, whose activations overflow an f16 dump: rows outside the mask that hold infinities
     * or NaN must not reach the arithmetic (CKA and principal angles of the kept rows, not NaN).
     */
    @Test
    void rowsOutsideTheMaskMayHoldInfinities() throws IOException {
        SplittableRandom r = new SplittableRandom(31);
        int tokens = 6000, d = 16, sentence = 20;
        double[][] x = random(r, tokens, d, 0.5, 1.0), y = CkaTest.related(r, x, d, 25.0);
        boolean[] target = new boolean[tokens];
        long[] ids = new long[tokens];
        for (int i = 0; i < tokens; i++) {
            target[i] = i % sentence >= 14;  // 30% of the tokens
            ids[i] = i / sentence;
            for (int j = 0; j < d; j++) {
                x[i][j] = f16(x[i][j]);
                y[i][j] = f16(y[i][j]);
            }
        }
        double[][] xk = keptRows(x, target), yk = keptRows(y, target);
        double expected = referenceCka(xk, yk);
        assertTrue(expected > 0.2 && expected < 0.95, "test data gives a CKA of " + expected);
        double expectedAngle = PrincipalAngles.median(
                PrincipalAngles.ofCovariances(referenceCovariance(xk), referenceCovariance(yk), d, 4));
        for (int i = 0; i < tokens; i += sentence) {  // BOS: beyond f16's range
            x[i][3] = 1e6;
            y[i][5] = -1e6;
            x[i + 1][0] = Double.NaN;
        }
        Path fa = new ActivationFileWriter().matrix("hidden.0", x, true).mask("target", target).sentenceIds(ids)
                .write(dir.resolve("a16.safetensors"));
        Path fb = new ActivationFileWriter().matrix("hidden.0", y, true).mask("target", target).sentenceIds(ids)
                .write(dir.resolve("b16.safetensors"));
        Path out = dir.resolve("inf");
        Run run = cli("cka", fa.toString(), fb.toString(), "--mask", "target", "--angles", "4", "--device", "cpu",
                "-o", out.toString());
        assertEquals(0, run.code(), run.err());
        String[] f = Files.readAllLines(out.resolve("cka.csv")).get(1).split(",");
        assertEquals(expected, Double.parseDouble(f[1]), 1e-12, "cka");
        assertEquals(expectedAngle, Double.parseDouble(f[2]), 1e-10, "median angle");
    }

    static double[][] pooled(double[][] x, long[] ids, boolean[] keep) {
        int sentences = (int) ids[ids.length - 1] + 1, d = x[0].length;
        List<double[]> out = new ArrayList<>();
        for (int s = 0; s < sentences; s++) {
            double[] sum = new double[d];
            int n = 0;
            for (int i = 0; i < ids.length; i++)
                if (ids[i] == s && keep[i]) {
                    for (int j = 0; j < d; j++) sum[j] += (float) x[i][j];
                    n++;
                }
            if (n == 0) continue;
            for (int j = 0; j < d; j++) sum[j] = (float) (sum[j] / n);
            out.add(sum);
        }
        return out.toArray(double[][]::new);
    }

    /**
     * Mean pooling with a mask: the two files must agree on it. Identical activations pooled over different
     * spans are not comparable rows; a different set of pooled sentences would pair different sentences.
     */
    @Test
    void pooledFilesMustAgreeOnTheMask() throws IOException {
        SplittableRandom r = new SplittableRandom(41);
        int tokens = 600, d = 8, sentence = 6;
        double[][] x = random(r, tokens, d, 0.0, 1.0);
        long[] ids = new long[tokens];
        boolean[] first = new boolean[tokens], last = new boolean[tokens];
        for (int i = 0; i < tokens; i++) {
            ids[i] = i / sentence;
            first[i] = i % sentence < 3;
            last[i] = i % sentence >= 3;
        }
        Path fa = new ActivationFileWriter().matrix("hidden.0", x, false).mask("src", first).sentenceIds(ids)
                .write(dir.resolve("first.safetensors"));
        Path fb = new ActivationFileWriter().matrix("hidden.0", x, false).mask("src", last).sentenceIds(ids)
                .write(dir.resolve("last.safetensors"));
        Run same = cli("cka", fa.toString(), fa.toString(), "--mask", "src", "--pool", "mean", "--device", "cpu");
        assertEquals(0, same.code(), same.err());
        assertTrue(same.out().contains("1.000000"), same.out());

        Run run = cli("cka", fa.toString(), fb.toString(), "--mask", "src", "--pool", "mean", "--device", "cpu");
        assertEquals(2, run.code(), run.out());
        assertTrue(run.err().contains("mask.src differs") && run.err().contains("--allow-mask-mismatch"), run.err());

        Path out = dir.resolve("mismatch");
        run = cli("cka", fa.toString(), fb.toString(), "--mask", "src", "--pool", "mean", "--allow-mask-mismatch",
                "--device", "cpu", "-o", out.toString());
        assertEquals(0, run.code(), run.err());
        assertTrue(run.err().contains("warning: mask.src differs"), run.err());
        double expected = referenceCka(pooled(x, ids, first), pooled(x, ids, last));
        assertEquals(expected, Double.parseDouble(Files.readAllLines(out.resolve("cka.csv")).get(1).split(",")[1]), 1e-12);

        // A mask that leaves out a different sentence in each file would pair different sentences: never allowed.
        boolean[] noFirst = first.clone(), noLast = first.clone();
        for (int i = 0; i < sentence; i++) {
            noFirst[i] = false;
            noLast[tokens - 1 - i] = false;
        }
        Path fc = new ActivationFileWriter().matrix("hidden.0", x, false).mask("src", noFirst).sentenceIds(ids)
                .write(dir.resolve("nofirst.safetensors"));
        Path fd = new ActivationFileWriter().matrix("hidden.0", x, false).mask("src", noLast).sentenceIds(ids)
                .write(dir.resolve("nolast.safetensors"));
        run = cli("cka", fc.toString(), fd.toString(), "--mask", "src", "--pool", "mean", "--allow-mask-mismatch",
                "--device", "cpu");
        assertEquals(2, run.code(), run.out());
        assertTrue(run.err().contains("sentence 0"), run.err());
    }

    @Test
    void mismatchedFilesAreRejectedWithTheReason() throws IOException {
        SplittableRandom r = new SplittableRandom(2);
        Path fa = activationFile(dir.resolve("a.safetensors"), List.<double[][]>of(random(r, TOKENS, D, 0, 1)));
        Path fb = activationFile(dir.resolve("b.safetensors"), List.of(random(r, TOKENS, D, 0, 1), random(r, TOKENS, D, 0, 1)));
        Run run = cli("cka", fa.toString(), fb.toString(), "--device", "cpu");
        assertEquals(2, run.code());
        assertTrue(run.err().contains("different layers"), run.err());
        run = cli("cka", fa.toString(), fa.toString(), "--device", "cpu", "--mask", "tgt");
        assertEquals(1, run.code());
        assertTrue(run.err().contains("mask.tgt") && run.err().contains("a.safetensors"), run.err());
    }
}
