package dev.smelter.io;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import dev.smelter.DType;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.SplittableRandom;

/** Small safetensors files written byte by byte for tests (independent of {@link CheckpointWriter}). */
public final class SafetensorsFixture {
    /** A tensor: dtype, shape and its values (already representable in the dtype). */
    public record T(DType dtype, long[] shape, float[] values) {}

    private final Map<String, T> tensors = new LinkedHashMap<>();

    public T get(String name) {
        return tensors.get(name);
    }

    public SafetensorsFixture put(String name, T t) {
        tensors.put(name, t);
        return this;
    }

    /** Random values rounded to {@code dtype} (Gaussian times {@code scale}). */
    public static T random(DType dtype, SplittableRandom r, double scale, long... shape) {
        long n = 1;
        for (long d : shape) n *= d;
        float[] v = new float[(int) n];
        for (int i = 0; i < v.length; i++) v[i] = round(dtype, (float) (gaussian(r) * scale));
        return new T(dtype, shape, v);
    }

    public static double gaussian(SplittableRandom r) {
        double u = Math.max(r.nextDouble(), 1e-300), w = r.nextDouble();
        return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * w);
    }

    /** {@code v} rounded to nearest even in {@code dtype}. */
    public static float round(DType dtype, float v) {
        return switch (dtype) {
            case F32 -> v;
            case F16 -> Float.float16ToFloat(Float.floatToFloat16(v));
            case BF16 -> {
                int bits = Float.floatToRawIntBits(v);
                yield Float.intBitsToFloat(((bits + 0x7FFF + ((bits >>> 16) & 1)) >>> 16) << 16);
            }
        };
    }

    public static String name(DType d) {
        return switch (d) {
            case F32 -> "F32";
            case F16 -> "F16";
            case BF16 -> "BF16";
        };
    }

    public Path write(Path file) throws IOException {
        ObjectMapper json = new ObjectMapper();
        ObjectNode header = json.createObjectNode();
        ByteArrayOutputStream data = new ByteArrayOutputStream();
        for (Map.Entry<String, T> e : tensors.entrySet()) {
            T t = e.getValue();
            ByteBuffer b = ByteBuffer.allocate(t.values().length * t.dtype().byteSize()).order(ByteOrder.LITTLE_ENDIAN);
            for (float v : t.values())
                switch (t.dtype()) {
                    case F32 -> b.putFloat(v);
                    case F16 -> b.putShort(Float.floatToFloat16(v));
                    case BF16 -> b.putShort((short) (Float.floatToRawIntBits(v) >>> 16));
                }
            ObjectNode n = header.putObject(e.getKey());
            n.put("dtype", name(t.dtype()));
            var shape = n.putArray("shape");
            for (long d : t.shape()) shape.add(d);
            n.putArray("data_offsets").add(data.size()).add(data.size() + b.capacity());
            data.write(b.array());
        }
        byte[] h = json.writeValueAsString(header).getBytes(StandardCharsets.UTF_8);
        ByteBuffer len = ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN).putLong(h.length);
        Files.createDirectories(file.toAbsolutePath().getParent());
        ByteArrayOutputStream all = new ByteArrayOutputStream();
        all.write(len.array());
        all.write(h);
        all.write(data.toByteArray());
        Files.write(file, all.toByteArray());
        return file;
    }
}
