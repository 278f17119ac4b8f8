package dev.smelter.analysis;

import static dev.smelter.cli.CliRun.cli;

import dev.smelter.cli.CliRun.Run;
import static dev.smelter.analysis.CkaTest.referenceCka;
import static dev.smelter.analysis.ProductKernelTest.random;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
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
        Map<String, byte[]> tensors = new LinkedHashMap<>();
        Map<String, String> heads = new LinkedHashMap<>();
        for (int l = 0; l < layers.size(); l++) {
            double[][] m = layers.get(l);
            ByteBuffer b = ByteBuffer.allocate(m.length * m[0].length * 4).order(ByteOrder.LITTLE_ENDIAN);
            for (double[] row : m) for (double v : row) b.putFloat((float) v);
            tensors.put("hidden." + l, b.array());
            heads.put("hidden." + l, "\"dtype\":\"F32\",\"shape\":[" + m.length + "," + m[0].length + "]");
        }
        byte[] mask = new byte[TOKENS];
        for (int i = 0; i < TOKENS; i++) mask[i] = (byte) (i % 2);
        tensors.put("mask.src", mask);
        heads.put("mask.src", "\"dtype\":\"U8\",\"shape\":[" + TOKENS + "]");
        ByteBuffer ids = ByteBuffer.allocate(TOKENS * 8).order(ByteOrder.LITTLE_ENDIAN);
        for (int i = 0; i < TOKENS; i++) ids.putLong(i / 3);
        tensors.put("sentence_ids", ids.array());
        heads.put("sentence_ids", "\"dtype\":\"I64\",\"shape\":[" + TOKENS + "]");
        StringBuilder h = new StringBuilder("{\"__metadata__\":{\"smelter.format\":\"activations/1\"}");
        long at = 0;
        for (var e : tensors.entrySet()) {
            h.append(",\"").append(e.getKey()).append("\":{").append(heads.get(e.getKey())).append(",\"data_offsets\":[")
                    .append(at).append(',').append(at + e.getValue().length).append("]}");
            at += e.getValue().length;
        }
        h.append('}');
        byte[] header = h.toString().getBytes(StandardCharsets.UTF_8);
        ByteBuffer out = ByteBuffer.allocate((int) (8 + header.length + at)).order(ByteOrder.LITTLE_ENDIAN);
        out.putLong(header.length).put(header);
        for (byte[] t : tensors.values()) out.put(t);
        Files.write(file, out.array());
        return file;
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
            assertEquals(referenceCka(a.get(l), b.get(l)), Double.parseDouble(f[1]), 1e-5, "layer " + l);
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
        assertEquals(referenceCka(pa, pb), Double.parseDouble(f[2]), 1e-5);
    }

    private static double[][] pooled(double[][] x) {
        double[][] p = new double[TOKENS / 3][D];
        int[] n = new int[TOKENS / 3];
        for (int i = 0; i < TOKENS; i++) {
            if (i % 2 == 0) continue;
            for (int j = 0; j < D; j++) p[i / 3][j] += (float) x[i][j];
            n[i / 3]++;
        }
        for (int s = 0; s < p.length; s++) for (int j = 0; j < D; j++) p[s][j] /= n[s];
        return p;
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
