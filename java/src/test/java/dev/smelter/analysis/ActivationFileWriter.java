package dev.smelter.analysis;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Map;

/** Writes activation files (docs/ACTIVATIONS.md) byte by byte, for tests: any layers, masks and sentence ids. */
final class ActivationFileWriter {
    private final Map<String, byte[]> data = new LinkedHashMap<>();
    private final Map<String, String> heads = new LinkedHashMap<>();

    /** {@code hidden.L} (or any 2-D tensor) as F32, or as F16 where {@code f16} (values rounded, infinities kept). */
    ActivationFileWriter matrix(String name, double[][] m, boolean f16) {
        int rows = m.length, cols = m[0].length;
        ByteBuffer b = ByteBuffer.allocate(rows * cols * (f16 ? 2 : 4)).order(ByteOrder.LITTLE_ENDIAN);
        for (double[] row : m)
            for (double v : row) {
                if (f16) b.putShort(Float.floatToFloat16((float) v));
                else b.putFloat((float) v);
            }
        return put(name, f16 ? "F16" : "F32", "[" + rows + "," + cols + "]", b.array());
    }

    ActivationFileWriter mask(String name, boolean[] keep) {
        byte[] b = new byte[keep.length];
        for (int i = 0; i < keep.length; i++) b[i] = (byte) (keep[i] ? 1 : 0);
        return put("mask." + name, "U8", "[" + keep.length + "]", b);
    }

    ActivationFileWriter sentenceIds(long[] ids) {
        ByteBuffer b = ByteBuffer.allocate(ids.length * 8).order(ByteOrder.LITTLE_ENDIAN);
        for (long id : ids) b.putLong(id);
        return put("sentence_ids", "I64", "[" + ids.length + "]", b.array());
    }

    private ActivationFileWriter put(String name, String dtype, String shape, byte[] bytes) {
        data.put(name, bytes);
        heads.put(name, "\"dtype\":\"" + dtype + "\",\"shape\":" + shape);
        return this;
    }

    Path write(Path file) throws IOException {
        StringBuilder h = new StringBuilder("{\"__metadata__\":{\"smelter.format\":\"activations/1\"}");
        long at = 0;
        for (var e : data.entrySet()) {
            h.append(",\"").append(e.getKey()).append("\":{").append(heads.get(e.getKey())).append(",\"data_offsets\":[")
                    .append(at).append(',').append(at + e.getValue().length).append("]}");
            at += e.getValue().length;
        }
        h.append('}');
        byte[] header = h.toString().getBytes(StandardCharsets.UTF_8);
        ByteBuffer out = ByteBuffer.allocate((int) (8 + header.length + at)).order(ByteOrder.LITTLE_ENDIAN);
        out.putLong(header.length).put(header);
        for (byte[] t : data.values()) out.put(t);
        Files.write(file, out.array());
        return file;
    }
}
