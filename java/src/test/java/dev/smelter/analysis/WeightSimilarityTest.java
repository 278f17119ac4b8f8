package dev.smelter.analysis;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import dev.smelter.Context;
import dev.smelter.DType;
import dev.smelter.Device;
import dev.smelter.Matrix;
import dev.smelter.Smelter;
import dev.smelter.Tensor;
import dev.smelter.TestData;
import dev.smelter.cli.CliRun;
import dev.smelter.cli.SmelterCli;
import dev.smelter.config.TensorNames;
import dev.smelter.io.Checkpoint;
import java.lang.foreign.Arena;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;
import org.ejml.data.DMatrixRMaj;
import org.ejml.dense.row.factory.DecompositionFactory_DDRM;
import org.ejml.interfaces.decomposition.SingularValueDecomposition_F64;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** Stable rank against an SVD, and `smelter compare` end to end against float64 computations of every measure. */
class WeightSimilarityTest {
    @TempDir
    static Path dir;

    @BeforeAll
    static void checkpoints() {
        assertEquals(0, SmelterCli.run("demo-checkpoints", dir.toString(), "--hidden", "64", "--layers", "3", "--vocab", "97"));
    }

    static double[] svd(float[] w, int rows, int cols) {
        DMatrixRMaj m = new DMatrixRMaj(rows, cols);
        for (int i = 0; i < w.length; i++) m.data[i] = w[i];
        SingularValueDecomposition_F64<DMatrixRMaj> d = DecompositionFactory_DDRM.svd(rows, cols, false, false, true);
        assertTrue(d.decompose(m));
        double[] s = Arrays.copyOf(d.getSingularValues(), d.numberOfSingularValues());
        Arrays.sort(s);
        return s;
    }

    static double stableRankBySvd(float[] w, int rows, int cols) {
        double[] s = svd(w, rows, cols);
        double f = 0;
        for (double x : s) f += x * x;
        return f / (s[s.length - 1] * s[s.length - 1]);
    }

    /** A rows x cols matrix with a clear top singular value: rank-one spike plus noise. */
    static float[] spiked(SplittableRandom r, int rows, int cols, double spike) {
        double[] u = new double[rows], v = new double[cols];
        for (int i = 0; i < rows; i++) u[i] = TestData.gaussian(r) / Math.sqrt(rows);
        for (int j = 0; j < cols; j++) v[j] = TestData.gaussian(r) / Math.sqrt(cols);
        float[] w = new float[rows * cols];
        for (int i = 0; i < rows; i++)
            for (int j = 0; j < cols; j++) w[i * cols + j] = (float) (spike * u[i] * v[j] + 0.1 * TestData.gaussian(r) / Math.sqrt(cols));
        return w;
    }

    @Test
    void stableRankMatchesTheSvdForEveryDtype() {
        SplittableRandom r = new SplittableRandom(17);
        try (Arena arena = Arena.ofConfined(); Context ctx = Smelter.open(Device.cpu())) {
            for (DType dtype : DType.values())
                for (int[] s : new int[][] {{37, 53}, {130, 65}, {1, 9}}) {
                    float[] w = spiked(r, s[0], s[1], 3.0);
                    Tensor t = TestData.tensor(arena, dtype, w);
                    float[] rounded = t.toFloatArray();
                    double expected = stableRankBySvd(rounded, s[0], s[1]);
                    double got = WeightSimilarity.stableRank(ctx, new Matrix(t, s[0], s[1]), 100);
                    assertEquals(expected, got, 1e-6 * expected, dtype + " " + Arrays.toString(s));
                    assertTrue(got >= 1 - 1e-6);
                }
        }
    }

    static float[] withSingularValues(SplittableRandom r, int d, double[] s) {
        double[][] u = CkaTest.randomOrthogonal(r, d), v = CkaTest.randomOrthogonal(r, d);
        float[] w = new float[d * d];
        for (int i = 0; i < d; i++)
            for (int j = 0; j < d; j++) {
                double x = 0;
                for (int k = 0; k < d; k++) x += u[i][k] * s[k] * v[j][k];
                w[i * d + j] = (float) x;
            }
        return w;
    }

    /**
     * Gaussian matrices, whose top singular values lie close together (power iteration stopped early: 80 x 48
     * gave 18.775 for 18.104), top singular values a millionth apart and a 40-fold top: within the stated 1e-6.
     */
    @Test
    void stableRankOfRandomMatricesMatchesTheSvd() {
        SplittableRandom r = new SplittableRandom(31);
        try (Arena arena = Arena.ofConfined(); Context ctx = Smelter.open(Device.cpu())) {
            for (int[] s : new int[][] {{80, 48}, {48, 80}, {300, 200}, {200, 300}, {256, 256}, {700, 31}, {31, 700}, {2, 3}})
                for (DType dtype : DType.values()) {
                    float[] w = new float[s[0] * s[1]];
                    for (int i = 0; i < w.length; i++) w[i] = (float) TestData.gaussian(r);
                    Tensor t = TestData.tensor(arena, dtype, w);
                    double expected = stableRankBySvd(t.toFloatArray(), s[0], s[1]);
                    WeightSimilarity.StableRank got = WeightSimilarity.estimateStableRank(ctx, new Matrix(t, s[0], s[1]), 100);
                    assertTrue(got.converged(), got.toString());
                    assertEquals(expected, got.value(), 1e-6 * expected, "gaussian " + dtype + " " + Arrays.toString(s));
                    if (Math.min(s[0], s[1]) > WeightSimilarity.STABLE_RANK_BLOCK)  // not converged: NaN, not a number
                        assertTrue(Double.isNaN(WeightSimilarity.stableRank(ctx, new Matrix(t, s[0], s[1]), 1)));
                }
            int d = 120;
            double[] close = new double[d], flat = new double[d];
            for (int i = 0; i < d; i++) {
                close[i] = i == 0 ? 1 : i == 1 ? 1 - 1e-6 : 0.5 * r.nextDouble();
                flat[i] = i < 40 ? 1 : 0.3 * r.nextDouble();
            }
            for (double[] s : List.of(close, flat)) {
                Tensor t = TestData.tensor(arena, DType.F32, withSingularValues(r, d, s));
                double expected = stableRankBySvd(t.toFloatArray(), d, d);
                assertEquals(expected, WeightSimilarity.stableRank(ctx, new Matrix(t, d, d), 100), 1e-6 * expected,
                        s == close ? "top two a millionth apart" : "40-fold top");
            }
        }
    }

    static Map<String, String[]> csv(Path file) throws Exception {
        List<String> lines = Files.readAllLines(file);
        String[] header = lines.getFirst().split(",");
        Map<String, String[]> rows = new HashMap<>();
        for (String l : lines.subList(1, lines.size())) {
            String[] v = l.split(",");
            rows.put(v[0] + "|" + v[1] + "|" + v[2], v);
        }
        rows.put("header", header);
        return rows;
    }

    static double value(Map<String, String[]> csv, String key, String column) {
        List<String> h = Arrays.asList(csv.get("header"));
        return Double.parseDouble(csv.get(key)[h.indexOf(column)]);
    }

    /** k-th largest |delta| per tensor by sorting, ranked as the kernel ranks them: f32 deltas rounded to the
     *  checkpoints' dtype (bf16), so every delta tied with the threshold is kept. */
    static boolean[] mask(float[] d, double density) {
        int k = (int) Math.floor(density * d.length);
        float[] mags = new float[d.length];
        for (int i = 0; i < d.length; i++) mags[i] = Math.abs(TestData.round(DType.BF16, d[i]));
        float[] sorted = mags.clone();
        Arrays.sort(sorted);
        boolean[] keep = new boolean[d.length];
        if (k == 0) return keep;
        float t = sorted[d.length - k];
        for (int i = 0; i < d.length; i++) keep[i] = mags[i] >= t;
        return keep;
    }

    @Test
    void compareCliMatchesFloat64ComputationsOfEveryMeasure() throws Exception {
        Path out = dir.resolve("cmp");
        CliRun.Run run = CliRun.cli("compare", dir.resolve("expert-de").toString(), dir.resolve("expert-fr").toString(),
                "--base", dir.resolve("base").toString(), "--density", "0.3", "--device", "cpu",
                "-o", out.toString());
        assertEquals(0, run.code(), run.err());
        assertTrue(run.out().contains("task_cosine"), run.out());
        for (String f : List.of("compare.csv", "compare.json", "compare-cosine.png", "compare-conflicts.png", "compare-norms.png",
                "compare-stable-rank.png"))
            assertTrue(Files.size(out.resolve(f)) > 100, f);
        Map<String, String[]> rows = csv(out.resolve("compare.csv"));
        try (Checkpoint de = Checkpoint.open(dir.resolve("expert-de")); Checkpoint fr = Checkpoint.open(dir.resolve("expert-fr"));
                Checkpoint base = Checkpoint.open(dir.resolve("base"))) {
            Map<String, double[]> sums = new HashMap<>();  // group -> aa, bb, ab, task aa, bb, ab, conflicts, both, kept a, b, both
            Map<String, List<double[]>> ranks = new HashMap<>();
            for (String name : de.tensorNames()) {
                int layer = TensorNames.layerIndex(name);
                String g = layer >= 0 ? Integer.toString(layer) : TensorNames.isAfterLayers(name) ? "final" : "embed";
                float[] a = de.tensor(name).toFloatArray(), b = fr.tensor(name).toFloatArray(), z = base.tensor(name).toFloatArray();
                float[] da = new float[a.length], db = new float[a.length];
                for (int i = 0; i < a.length; i++) {
                    da[i] = a[i] - z[i];
                    db[i] = b[i] - z[i];
                }
                boolean[] ka = mask(da, 0.3), kb = mask(db, 0.3);
                double[] s = sums.computeIfAbsent(g, k -> new double[11]);
                for (int i = 0; i < a.length; i++) {
                    s[0] += (double) a[i] * a[i];
                    s[1] += (double) b[i] * b[i];
                    s[2] += (double) a[i] * b[i];
                    s[3] += (double) da[i] * da[i];
                    s[4] += (double) db[i] * db[i];
                    s[5] += (double) da[i] * db[i];
                    if (da[i] != 0 && db[i] != 0) {
                        s[7]++;
                        if ((da[i] > 0) != (db[i] > 0)) s[6]++;
                    }
                    if (ka[i]) s[8]++;
                    if (kb[i]) s[9]++;
                    if (ka[i] && kb[i]) s[10]++;
                }
                long[] shape = de.info(name).shape();
                if (shape.length == 2) {
                    int rr = (int) shape[0], cc = (int) shape[1];
                    ranks.computeIfAbsent(g, k -> new ArrayList<>()).add(new double[] {stableRankBySvd(a, rr, cc),
                        stableRankBySvd(b, rr, cc), stableRankBySvd(da, rr, cc), stableRankBySvd(db, rr, cc)});
                }
            }
            assertEquals(sums.size(), rows.size() - 1, "one row per group");
            for (Map.Entry<String, double[]> e : sums.entrySet()) {
                String key = e.getKey() + "|expert-de|expert-fr";
                double[] s = e.getValue();
                assertTrue(rows.containsKey(key), key);
                assertEquals(s[2] / Math.sqrt(s[0] * s[1]), value(rows, key, "cosine"), 1e-12, key);
                assertEquals(Math.sqrt(s[0]) - Math.sqrt(s[1]), value(rows, key, "norm_diff"), 1e-9, key);
                assertEquals(Math.sqrt(s[3] + s[4] - 2 * s[5]), value(rows, key, "task_distance"), 1e-9, key);
                assertEquals(s[5] / Math.sqrt(s[3] * s[4]), value(rows, key, "task_cosine"), 1e-12, key);
                assertEquals(s[6] / s[7], value(rows, key, "sign_conflict_rate"), 1e-15, key);
                assertEquals(s[10] / (s[8] + s[9] - s[10]), value(rows, key, "mask_jaccard"), 1e-15, key);
                List<double[]> rk = ranks.get(e.getKey());
                if (rk == null) {
                    assertTrue(Double.isNaN(value(rows, key, "stable_rank_a")), key);
                    continue;
                }
                double[] mean = new double[4];
                for (double[] x : rk) for (int i = 0; i < 4; i++) mean[i] += x[i] / rk.size();
                // Random matrices, with close top singular values: still the stated 1e-6.
                assertEquals(mean[0], value(rows, key, "stable_rank_a"), 1e-6 * mean[0], key);
                assertEquals(mean[3], value(rows, key, "task_stable_rank_b"), 1e-6 * mean[3], key);
            }
        }
        JsonNode json = new ObjectMapper().readTree(out.resolve("compare.json").toFile());
        assertEquals(0.3, json.get("density").asDouble());
        assertEquals(rows.size() - 1, json.get("rows").size());
    }

    /**
     * Checkpoints that differ by one ulp in 1000 elements of a 1000 x 1000 tensor: the distance is that of the
     * differences (not 0 from cancelling norms), the cosine at most 1.
     */
    @Test
    void nearIdenticalCheckpointsHaveTheirDistance() throws Exception {
        SplittableRandom r = new SplittableRandom(29);
        int n = 1000;
        double[][] a = new double[n][n], b = new double[n][n], z = new double[n][n];
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++) {
                a[i][j] = (float) TestData.gaussian(r);
                b[i][j] = a[i][j];
                z[i][j] = (float) (0.3 * TestData.gaussian(r));
            }
        double squares = 0, taskSquares = 0;
        for (int k = 0; k < 1000; k++) {
            int i = r.nextInt(n), j = k;
            b[i][j] = Math.nextUp((float) a[i][j]);
            double diff = b[i][j] - a[i][j];
            squares += diff * diff;
            double task = (double) ((float) b[i][j] - (float) z[i][j]) - (double) ((float) a[i][j] - (float) z[i][j]);
            taskSquares += task * task;
        }
        String name = "model.layers.0.mlp.down_proj.weight";
        Path fa = new ActivationFileWriter().matrix(name, a, false).write(dir.resolve("near-a.safetensors"));
        Path fb = new ActivationFileWriter().matrix(name, b, false).write(dir.resolve("near-b.safetensors"));
        Path fz = new ActivationFileWriter().matrix(name, z, false).write(dir.resolve("near-base.safetensors"));
        Path out = dir.resolve("near");
        CliRun.Run run = CliRun.cli("compare", fa.toString(), fb.toString(), "--base", fz.toString(), "--no-stable-rank",
                "--device", "cpu", "-o", out.toString());
        assertEquals(0, run.code(), run.err());
        Map<String, String[]> rows = csv(out.resolve("compare.csv"));
        String key = "0|near-a.safetensors|near-b.safetensors";
        assertEquals(Math.sqrt(squares), value(rows, key, "distance"), 1e-12 * Math.sqrt(squares));
        assertEquals(Math.sqrt(taskSquares), value(rows, key, "task_distance"), 1e-12 * Math.sqrt(taskSquares));
        assertTrue(value(rows, key, "cosine") <= 1.0, "cosine " + value(rows, key, "cosine"));
        assertTrue(value(rows, key, "task_cosine") <= 1.0, "task cosine " + value(rows, key, "task_cosine"));
    }

    @Test
    void badInputGivesAUsageErrorAndNoOutput() throws Exception {
        Path out = dir.resolve("bad");
        assertEquals(2, SmelterCli.run("compare", dir.resolve("expert-de").toString(), "--device", "cpu", "-o", out.toString()));
        assertEquals(2, SmelterCli.run("compare", dir.resolve("expert-de").toString(), dir.resolve("expert-fr").toString(),
                "--density", "0.5", "--device", "cpu", "-o", out.toString()), "masks need a base");
        assertEquals(1, SmelterCli.run("compare", dir.resolve("expert-de").toString(), dir.resolve("nope").toString(),
                "--device", "cpu", "-o", out.toString()));
        assertFalse(Files.exists(out));
    }
}
