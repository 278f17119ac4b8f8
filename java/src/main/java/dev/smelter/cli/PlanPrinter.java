package dev.smelter.cli;

import dev.smelter.Device;
import dev.smelter.config.MergeConfig;
import dev.smelter.merge.CheckpointMerger;
import java.io.PrintStream;
import java.util.Arrays;
import java.util.Locale;

/** Prints a merge plan for --dry-run. */
final class PlanPrinter {
    private PlanPrinter() {}

    static void print(CheckpointMerger.Plan plan, MergeConfig cfg, Device device, PrintStream out) {
        out.printf(Locale.ROOT, "method %s, %d models%s, trim scope %s, device %s%n", cfg.method().mergekitName(),
                cfg.models().size(), cfg.baseModel() != null ? " + base " + cfg.baseModel() : "",
                plan.trimScope().name().toLowerCase(Locale.ROOT), device);
        if (cfg.sliced())
            out.printf(Locale.ROOT, "%d slices, %d output layers%n", cfg.slices().size(),
                    cfg.slices().stream().mapToInt(s -> s.length()).sum());
        for (CheckpointMerger.TensorPlan t : plan.tensors()) {
            out.printf(Locale.ROOT, "  %-5s %-60s %-5s -> %-5s %-20s %10s%s%n", t.action(), t.name(), t.info().dtype(),
                    t.action() == CheckpointMerger.Action.MERGE ? t.outDType() : t.info().dtype(),
                    Arrays.toString(t.info().shape()), Sizes.format(t.outBytes()),
                    t.note().isEmpty() ? "" : "  (" + t.note() + ")");
        }
        out.printf(Locale.ROOT, "read %s, write %s%n", Sizes.format(plan.bytesRead()), Sizes.format(plan.bytesWritten()));
        out.printf(Locale.ROOT, "peak host memory %s (the largest tensor's inputs and two output buffers of it)%n",
                Sizes.format(plan.peakHostBytes()));
        if (device.kind() == Device.Kind.CUDA)
            out.printf(Locale.ROOT, "peak device memory %s (inputs and output of the largest tensor; less where it merges "
                    + "in pieces under --memory-limit or the free device memory)%n", Sizes.format(plan.peakDeviceBytes()));
    }
}
