package dev.smelter;

import java.lang.foreign.Arena;
import java.lang.foreign.ValueLayout;
import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Assumptions;

/** Random tensors (never zeros) in every dtype, dtype rounding, and the backends to test. */
public final class TestData {
    private TestData() {}

    /** A base ~ N(0, 0.02) and experts = base + N(0, 0.001) task vectors; 1% of deltas are exactly zero. */
    record Models(Tensor base, List<Tensor> models) {}

    static Models experts(Arena arena, DType dtype, long n, int count, long seed) {
        SplittableRandom r = new SplittableRandom(seed);
        float[] base = new float[(int) n];
        for (int i = 0; i < n; i++) base[i] = round(dtype, (float) (0.02 * gaussian(r)));
        List<Tensor> models = new ArrayList<>();
        for (int m = 0; m < count; m++) {
            float[] x = new float[(int) n];
            for (int i = 0; i < n; i++)
                x[i] = r.nextInt(100) == 0 ? base[i] : round(dtype, base[i] + (float) (0.001 * gaussian(r)));
            models.add(tensor(arena, dtype, x));
        }
        return new Models(tensor(arena, dtype, base), models);
    }

    public static Tensor tensor(Arena arena, DType dtype, float[] values) {
        Tensor t = Tensor.allocate(arena, dtype, values.length);
        for (int i = 0; i < values.length; i++) {
            switch (dtype) {
                case F32 -> t.data().setAtIndex(ValueLayout.JAVA_FLOAT, i, values[i]);
                case F16 -> t.data().setAtIndex(ValueLayout.JAVA_SHORT, i, Float.floatToFloat16(values[i]));
                case BF16 -> t.data().setAtIndex(ValueLayout.JAVA_SHORT, i, (short) bf16Bits(values[i]));
            }
        }
        return t;
    }

    /** f32 -> bf16 bits, round to nearest even (written independently of the native code). */
    static int bf16Bits(float f) {
        if (Float.isNaN(f)) return 0x7FC0;
        int b = Float.floatToRawIntBits(f);
        int lower = b & 0xFFFF, upper = b >>> 16;
        if (lower > 0x8000 || (lower == 0x8000 && (upper & 1) == 1)) upper++;
        return upper & 0xFFFF;
    }

    public static float round(DType dtype, float v) {
        return switch (dtype) {
            case F32 -> v;
            case F16 -> Float.float16ToFloat(Float.floatToFloat16(v));
            case BF16 -> Float.intBitsToFloat(bf16Bits(v) << 16);
        };
    }

    public static double gaussian(SplittableRandom r) {
        double u = r.nextDouble(Double.MIN_VALUE, 1.0), v = r.nextDouble();
        return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
    }

    /** Contexts to test: the CPU always; CUDA device 0 when present (else the test is skipped, saying why). */
    static List<Device> devices() {
        List<Device> d = new ArrayList<>(List.of(Device.cpu()));
        if (Smelter.cudaDeviceCount() > 0) d.add(Device.cuda(0));
        return d;
    }

    public static void assumeCuda() {
        int n = Smelter.cudaDeviceCount();
        if (n == 0) {
            String why = "no CUDA device visible (" + Smelter.buildInfo() + "); CUDA tests run on the GPU machine, "
                    + "see scripts/gpu-test.sh and bench/RESULTS.md";
            System.out.println("SKIPPED CUDA test: " + why);
            Assumptions.abort(why);
        }
    }
}
