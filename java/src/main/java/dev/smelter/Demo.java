package dev.smelter;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.SplittableRandom;

/**
 * Merges generated expert tensors (a base plus three fine-tunes, bf16) with Task Arithmetic, TIES
 * (per tensor and model-wide), DARE-linear and DARE-TIES on the best device, checks every result
 * against the CPU backend, and prints times and throughput.
 *
 * <p>Usage: {@code Demo [--device cpu|cuda[:N]|auto] [--elements N]}
 */
public final class Demo {
    private Demo() {}

    public static void main(String[] args) {
        Device device = Device.parse("auto");
        long elements = 8_000_003;
        for (int i = 0; i < args.length; i++) {
            switch (args[i]) {
                case "--device" -> device = Device.parse(args[++i]);
                case "--elements" -> elements = Long.parseLong(args[++i]);
                default -> {
                    System.err.println("usage: Demo [--device cpu|cuda[:N]|auto] [--elements N]");
                    System.exit(2);
                }
            }
        }
        System.out.println(Smelter.buildInfo());
        System.out.println("device: " + device + " (" + Smelter.deviceName(device) + ")");
        int experts = 3;
        try (Arena arena = Arena.ofShared(); Context ctx = Smelter.open(device); Context cpu = Smelter.open(Device.cpu())) {
            SplittableRandom rnd = new SplittableRandom(7);
            Tensor base = randomBf16(arena, elements, rnd, 0.0f, 0.02f, null);
            List<Tensor> models = new ArrayList<>();
            for (int m = 0; m < experts; m++) models.add(randomBf16(arena, elements, rnd, 0.0f, 0.002f, base));
            float[] weights = {0.5f, 0.3f, 0.2f};
            float[] densities = {0.4f, 0.4f, 0.4f};
            System.out.printf(Locale.ROOT, "%d experts x %,d bf16 elements (%.1f MB each)%n", experts, elements,
                    base.byteSize() / 1e6);
            List<MergeSpec> specs = List.of(
                    MergeSpec.taskArithmetic(weights).toBuilder().lambda(0.8f).build(),
                    MergeSpec.ties(weights, densities),
                    MergeSpec.dareLinear(weights, densities, 42).toBuilder().tensorName("demo.weight").build(),
                    MergeSpec.dareTies(weights, densities, 42).toBuilder().tensorName("demo.weight").build());
            Tensor out = Tensor.allocate(arena, DType.BF16, elements);
            Tensor check = Tensor.allocate(arena, DType.BF16, elements);
            for (MergeSpec spec : specs) run(ctx, cpu, spec, base, models, out, check);
            // Model-wide trimming: thresholds from every tensor of a model (here: two halves).
            int[] thresholds = new int[experts];
            long half = elements / 2;
            for (int m = 0; m < experts; m++) {
                try (TopK topK = ctx.topK(DType.BF16)) {
                    TopK.Selection s;
                    do {
                        topK.add(base.slice(0, half), models.get(m).slice(0, half));
                        topK.add(base.slice(half, elements - half), models.get(m).slice(half, elements - half));
                        s = topK.select((long) Math.floor((double) densities[m] * elements));
                    } while (s.morePasses());
                    thresholds[m] = s.threshold();
                }
            }
            run(ctx, cpu, MergeSpec.ties(weights, densities).toBuilder().thresholds(thresholds).build(), base, models,
                    out, check);
        }
    }

    private static void run(Context ctx, Context cpu, MergeSpec spec, Tensor base, List<Tensor> models, Tensor out,
            Tensor check) {
        ctx.merge(spec, base, models, out); // warm-up
        long t0 = System.nanoTime();
        ctx.merge(spec, base, models, out);
        double seconds = (System.nanoTime() - t0) / 1e9;
        long bytes = base.byteSize() * (models.size() + 2);
        String agreement = "";
        if (ctx.device().kind() != Device.Kind.CPU) {
            cpu.merge(spec, base, models, check);
            agreement = out.data().mismatch(check.data()) == -1 ? ", identical to CPU" : ", DIFFERS FROM CPU";
        }
        String name = spec.sparsify() + "/" + spec.consensus() + (spec.thresholds() != null ? "/model-wide" : "");
        System.out.printf(Locale.ROOT, "%-30s %8.2f ms %8.2f GB/s (minimal bytes, host tensors)%s%n", name,
                seconds * 1e3, bytes / seconds / 1e9, agreement);
    }

    /** bf16 values mean + std * N(0,1), added to {@code onto} when given. */
    private static Tensor randomBf16(Arena arena, long n, SplittableRandom rnd, float mean, float std, Tensor onto) {
        MemorySegment s = arena.allocate(n * 2, 64);
        for (long i = 0; i < n; i++) {
            double g = gaussian(rnd);
            float v = (float) (mean + std * g) + (onto == null ? 0f : onto.getFloat(i));
            s.setAtIndex(ValueLayout.JAVA_SHORT, i, (short) (Float.floatToRawIntBits(v) >>> 16));
        }
        return new Tensor(s, n, DType.BF16, Tensor.Memory.HOST);
    }

    private static double gaussian(SplittableRandom r) {
        double u = r.nextDouble(Double.MIN_VALUE, 1.0), v = r.nextDouble();
        return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
    }
}
