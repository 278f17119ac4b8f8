package dev.smelter.cli;

import dev.smelter.Context;
import dev.smelter.DType;
import dev.smelter.Device;
import dev.smelter.MergeSpec;
import dev.smelter.SelfCheck;
import dev.smelter.Smelter;
import dev.smelter.SmelterException;
import dev.smelter.Tensor;
import java.io.PrintStream;
import java.lang.foreign.Arena;
import java.util.List;
import java.util.Locale;

/** {@code smelter doctor}: what Smelter finds on this machine, and a quick throughput check per device. */
final class DoctorCheck {
    private DoctorCheck() {}

    static int run(PrintStream out) {
        out.printf(Locale.ROOT, "java      %s (%s)%n", Runtime.version(), System.getProperty("java.home"));
        try {
            out.printf(Locale.ROOT, "library   %s%n", Smelter.libraryPath());
            out.printf(Locale.ROOT, "build     %s%n", Smelter.buildInfo());
        } catch (SmelterException | UnsatisfiedLinkError e) {
            out.println("library   NOT LOADED: " + e.getMessage());
            return SmelterCli.EXIT_FAILURE;
        }
        out.printf(Locale.ROOT, "cpu       %s%n", Smelter.deviceName(Device.cpu()));
        int gpus = Smelter.cudaDeviceCount();
        out.printf(Locale.ROOT, "cuda      %d device(s)%n", gpus);
        for (int i = 0; i < gpus; i++) out.printf(Locale.ROOT, "  cuda:%d  %s%n", i, Smelter.deviceName(Device.cuda(i)));
        check(out, Device.cpu());
        for (int i = 0; i < gpus; i++) check(out, Device.cuda(i));
        int failed = selfCheck(out, "cpu (all threads)", () -> Smelter.open(Device.cpu()));
        for (int i = 0; i < gpus; i++) {
            Device d = Device.cuda(i);
            failed += selfCheck(out, d.toString(), () -> Smelter.openUnchecked(d));
        }
        return failed == 0 ? 0 : SmelterCli.EXIT_FAILURE;
    }

    /** Every kernel of {@code subject} against a one-thread CPU context: a table, and the number that failed. */
    private static int selfCheck(PrintStream out, String name, java.util.function.Supplier<Context> subject) {
        out.printf(Locale.ROOT, "%nself-check of %s against the CPU (1 thread):%n", name);
        out.printf(Locale.ROOT, "  %-42s %-44s %-6s %9s  %s%n", "kernel", "inputs", "result", "time", "detail");
        int failed = 0;
        try (Context ref = Smelter.openCpu(1); Context ctx = subject.get()) {
            for (SelfCheck.Result r : SelfCheck.run(ref, ctx, false)) {
                out.printf(Locale.ROOT, "  %-42s %-44s %-6s %7.2f ms  %s%n", r.kernel(), r.inputs(),
                        r.passed() ? "ok" : "FAIL", r.millis(), r.detail());
                if (!r.passed()) failed++;
            }
        } catch (SmelterException e) {
            out.printf(Locale.ROOT, "  could not run: %s%n", e.getMessage());
            failed++;
        }
        out.printf(Locale.ROOT, "  %s%n", failed == 0 ? "every kernel agrees" : failed + " kernel(s) disagree: use --device cpu");
        return failed;
    }

    /** Task arithmetic of 4 bf16 models of 16M elements: GB/s of the bytes a merge must move. */
    private static void check(PrintStream out, Device device) {
        long n = 16L << 20;
        int models = 4;
        try (Arena arena = Arena.ofConfined(); Context ctx = Smelter.open(device)) {
            boolean onDevice = device.kind() == Device.Kind.CUDA;
            Tensor base = alloc(ctx, arena, n, onDevice);
            List<Tensor> inputs = new java.util.ArrayList<>();
            for (int i = 0; i < models; i++) inputs.add(alloc(ctx, arena, n, onDevice));
            Tensor outT = alloc(ctx, arena, n, onDevice);
            MergeSpec spec = MergeSpec.taskArithmetic(new float[] {0.25f, 0.25f, 0.25f, 0.25f});
            ctx.merge(spec, base, inputs, outT);
            int reps = 5;
            long t0 = System.nanoTime();
            for (int r = 0; r < reps; r++) ctx.merge(spec, base, inputs, outT);
            double s = (System.nanoTime() - t0) / 1e9 / reps;
            out.printf(Locale.ROOT, "check     %-7s task arithmetic, 4 x %d M bf16: %.2f ms, %.1f GB/s%n", device,
                    n >> 20, s * 1e3, (models + 2) * n * 2 / s / 1e9);
            if (onDevice) {
                ctx.free(base);
                ctx.free(outT);
                for (Tensor t : inputs) ctx.free(t);
            }
        } catch (SmelterException e) {
            out.printf(Locale.ROOT, "check     %-7s FAILED: %s%n", device, e.getMessage());
        }
    }

    private static Tensor alloc(Context ctx, Arena arena, long n, boolean onDevice) {
        Tensor host = Tensor.allocate(arena, DType.BF16, n);
        host.data().fill((byte) 0x3c);
        if (!onDevice) return host;
        Tensor d = ctx.allocate(DType.BF16, n, Tensor.Memory.DEVICE);
        ctx.copy(d, host);
        return d;
    }
}
