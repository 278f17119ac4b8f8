package dev.smelter.cli;

import dev.smelter.Device;
import dev.smelter.Smelter;
import dev.smelter.config.ConfigException;
import dev.smelter.config.MergeConfig;
import dev.smelter.config.SweepGrid;
import dev.smelter.io.OutputGuard;
import dev.smelter.io.WorkDirs;
import dev.smelter.merge.ArchitectureCheck;
import dev.smelter.merge.CheckpointMerger;
import dev.smelter.merge.SweepReport;
import dev.smelter.merge.SweepPartitions;
import dev.smelter.merge.SweepRunner;
import java.io.IOException;
import java.io.PrintStream;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Locale;
import java.util.concurrent.Callable;
import java.util.stream.Stream;
import picocli.CommandLine.Command;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;
import picocli.CommandLine.Spec;

/**
 * {@code smelter sweep CONFIG --grid density=0.4:0.9:0.1 --grid lambda=0.5,1 -o OUTDIR}: every configuration of a
 * parameter grid from one pass over the inputs ({@link SweepRunner}).
 */
@Command(name = "sweep", mixinStandardHelpOptions = true,
        description = {"Merge every configuration of a parameter grid, reading each input tensor once: a checkpoint "
                + "per configuration in OUTDIR/<name>/, or with --stats-only per-layer statistics of the merged task "
                + "vectors; configs.csv, sweep.csv and sweep.json list the configurations, timings and statistics.",
                "Axes: NAME=START:STOP:STEP (stop included) or NAME=V1,V2,...; NAME is a parameter of the method "
                        + "(smelter methods), per-model ones set for every model or NAME@I for models[I] only, "
                        + "or seed (dare methods). Without --grid, the config's smelter.grid is used."})
final class SweepCommand implements Callable<Integer> {
    @Parameters(index = "0", paramLabel = "CONFIG", description = "mergekit-style YAML config (the values the grid does not set)")
    Path config;

    @Option(names = "--grid", paramLabel = "AXIS", description = "a grid axis, e.g. density=0.4:0.9:0.1 or lambda=0.5,1 "
            + "(repeatable; replaces the config's smelter.grid)")
    List<String> grid = new ArrayList<>();

    @Parameters(index = "1", arity = "0..1", paramLabel = "OUTDIR", description = "output directory (or -o)")
    Path outputArgument;

    @Option(names = {"-o", "--output"}, paramLabel = "OUTDIR", description = "output directory (or OUTDIR)")
    Path outputOption;

    @Option(names = "--stats-only", description = "write no weights: per-layer statistics of each configuration's "
            + "merged task vector (norms, kept fraction, sign agreement)")
    boolean statsOnly;

    @Option(names = "--no-stats", description = "with checkpoints: skip the statistics")
    boolean noStats;

    @Option(names = "--compare-sequential", description = "afterwards, merge every configuration on its own (as smelter "
            + "merge does), time it and check the outputs are identical; reports both times")
    boolean compareSequential;

    @Option(names = "--dry-run", description = "print the configurations and the plan; write nothing")
    boolean dryRun;

    @Option(names = "--finalize",
            description = "after sweeps with --partition I/N: check every partition finished, join their checkpoints "
                    + "and result files and put the sweep in place (the same config, grid and options)")
    boolean finalizeSweep;

    @Mixin
    MergeOptions options;

    @Spec
    CommandSpec spec;

    @Override
    public Integer call() throws IOException, ConfigException {
        MergeConfig cfg = MergeConfig.load(config);
        Path output = SmelterCli.output(spec, outputArgument, outputOption);
        SweepGrid sweep = cfg.grid();
        if (!grid.isEmpty()) {
            List<SweepGrid.Axis> axes = new ArrayList<>();
            for (String a : grid) axes.add(SweepGrid.parseAxis(a));
            sweep = SweepGrid.of(axes);
        }
        if (sweep == null)
            throw new ConfigException("no grid: give --grid NAME=START:STOP:STEP (or NAME=V1,V2,...), or a smelter.grid "
                    + "in " + config);
        if (statsOnly && noStats) throw new ConfigException("--stats-only and --no-stats leave nothing to do");
        cfg = options.apply(cfg);
        PrintStream err = System.err;
        for (String n : options.notes()) err.println("note: " + n);
        for (String w : cfg.warnings()) err.println("warning: " + w);
        if (!grid.isEmpty() && cfg.grid() != null) err.println("note: --grid replaces the config's smelter.grid");
        Device dev = options.device();
        var partition = options.partition();
        if (finalizeSweep && partition != null)
            throw new IllegalArgumentException("--finalize joins the partitions' sweeps: give it without --partition");
        if (finalizeSweep && dryRun) throw new IllegalArgumentException("--finalize and --dry-run: give one");
        List<Device> devices = options.devices();
        if (devices.size() > 1 && partition != null)
            throw new IllegalArgumentException("--device " + options.device + " and --partition: a partition of a sweep "
                    + "runs on one device (give each partition its own)");
        if (devices.size() > 1 && compareSequential)
            throw new IllegalArgumentException("--compare-sequential compares on one device: give one --device");
        ArchitectureCheck.check(cfg, options.allowCrimes, w -> err.println("warning: " + w));
        OutputGuard.check(output, SmelterCli.withConfig(CheckpointMerger.inputs(cfg), config));
        if (!dryRun) for (String s : WorkDirs.removeStale(output)) err.println("note: " + s);
        String existing = SmelterCli.describeExisting(output, options.overwrite);
        if (!options.overwrite && !dryRun && existing != null && !finalizeSweep) throw new ConfigException(existing);
        var sweepOptions = new SweepRunner.Options(dev, output, options.maxShardBytes(), options.overwrite,
                options.allowVocabMismatch, options.nonFinite(), !statsOnly, !noStats, compareSequential,
                options.memoryLimit());
        SweepPartitions partitions = null;
        Path writeTo = output;
        if (finalizeSweep || partition != null) {
            String description;
            try (SweepRunner whole = new SweepRunner(cfg, sweep, sweepOptions)) {
                description = SweepPartitions.description(whole, "checkpoints " + !statsOnly + " stats " + !noStats);
            }
            partitions = SweepPartitions.of(output, description, partition == null ? 0 : partition.count());
            if (finalizeSweep) {
                boolean joined = partitions.finalizeSweep(sweep, options.overwrite);
                err.println(joined ? "finalized " + output + " from its partitions"
                        : "nothing to finalize: " + output + " is in place and no partition of this sweep is staged "
                                + "(finalized before)");
                return 0;
            }
            if (!dryRun) writeTo = partitions.prepare(partition.index(), options.overwrite);
            sweepOptions = new SweepRunner.Options(dev, writeTo, options.maxShardBytes(), false,
                    options.allowVocabMismatch, options.nonFinite(), !statsOnly, !noStats, compareSequential,
                    options.memoryLimit());
        }
        if (devices.size() > 1 && !finalizeSweep) return onDevices(cfg, sweep, sweepOptions, devices, output, err);
        try (SweepRunner runner = new SweepRunner(cfg, sweep, sweepOptions)) {
            if (partition != null) {
                runner.keepOnly(partition);
                if (runner.configurations().isEmpty()) {
                    err.println("partition " + partition + " has no configurations (" + sweep.size() + " in the grid)");
                    if (dryRun) return 0;
                    partitions.markEmpty(partition.index());
                    finishPartition(partitions, partition, sweep, output, err);
                    return 0;
                }
            }
            SweepRunner.SweepPlan plan = runner.plan();
            for (String w : plan.merge().warnings()) err.println("warning: " + w);
            int n = plan.configurations();
            if (options.verbose())
                for (CheckpointMerger.TensorPlan t : plan.merge().tensors())
                    if (!t.note().isEmpty()) err.println("note: tensor " + t.name() + ": " + t.note());
            if (dryRun) {
                printPlan(runner, plan, cfg, dev, System.out);
                System.out.println(existing != null ? existing : "output " + output + " (a new directory)");
                return 0;
            }
            if (!noStats && !runner.statsEnabled())
                err.println("note: no statistics (they measure task vectors against base_model, and the config has none)");
            err.printf(Locale.ROOT, "sweeping %d configurations of %s (%s) over %d tensors on %s (%s)%s%n", n,
                    cfg.method().mergekitName(), describe(sweep), plan.merge().tensors().size(), dev,
                    Smelter.deviceName(dev), statsOnly ? ", statistics only" : ", " + Sizes.format(plan.bytesWritten())
                            + " of checkpoints");
            SweepRunner.Summary s;
            try (Progress progress = Progress.start(plan.workBytes(), options.quiet)) {
                s = runner.run(plan, progress::update);
            }
            print(s, System.out);
            for (SweepRunner.ConfigResult r : s.results())
                for (String w : r.warnings()) err.println("warning: " + w);
            err.printf(Locale.ROOT, "sweep: %d configurations in %.3f s%s, %.3f s per configuration (%.3f s shared: "
                    + "reading%s, thresholds, statistics of the inputs); peak anonymous memory %s%n", n, s.seconds(),
                    cpu(s.cpuSeconds()), s.secondsPerConfiguration(), s.sharedSeconds(),
                    plan.deviceCopies() ? " and device copies" : "",
                    s.peakAnonymousBytes() < 0 ? "unknown" : Sizes.format(s.peakAnonymousBytes()));
            if (s.sequential() != null) {
                SweepRunner.Sequential q = s.sequential();
                err.printf(Locale.ROOT, "one by one (measured, each configuration merged on its own, writing its "
                        + "checkpoint): %.3f s%s, %.3f s per configuration; the sweep took %.2fx that time (%.2fx faster)%s%n",
                        q.seconds(), cpu(q.cpuSeconds()), q.seconds() / n, s.seconds() / q.seconds(), q.seconds() / s.seconds(),
                        q.identical() == null ? "" : q.identical() ? "; outputs identical"
                                : "; OUTPUTS DIFFER: " + String.join(", ", q.differences()));
                if (Boolean.FALSE.equals(q.identical())) return SmelterCli.EXIT_FAILURE;
            }
            err.printf(Locale.ROOT, "wrote %s (%s%s, %s)%n", partition == null ? output : "partition " + partition
                    + " of " + output, statsOnly ? "" : n + " checkpoints, ",
                    SweepReport.CONFIGS_CSV + (s.statsMethod() != null ? ", " + SweepReport.STATS_CSV : ""), SweepReport.JSON);
            if (partition != null) finishPartition(partitions, partition, sweep, output, err);
            return 0;
        }
    }

    /**
     * A sweep on several devices: the configurations are dealt to one lane per device (each its own sweep over its
     * share, with its own context, buffers and pipeline), then joined into the output in grid order.
     */
    private int onDevices(MergeConfig cfg, SweepGrid sweep, SweepRunner.Options whole, List<Device> devices, Path output,
            PrintStream err) throws IOException, ConfigException {
        SweepRunner.SweepPlan plan;
        try (SweepRunner runner = new SweepRunner(cfg, sweep, whole)) {
            plan = runner.plan();
            for (String w : plan.merge().warnings()) err.println("warning: " + w);
            if (dryRun) {
                printPlan(runner, plan, cfg, devices.get(0), System.out);
                System.out.println("on " + devices.size() + " devices: " + devices);
                return 0;
            }
            runner.checkOutput(plan);
        }
        int lanes = devices.size();
        err.printf(Locale.ROOT, "sweeping %d configurations of %s (%s) over %d tensors on %d devices (%s)%s%n",
                plan.configurations(), cfg.method().mergekitName(), describe(sweep), plan.merge().tensors().size(), lanes,
                String.join(", ", devices.stream().map(Device::toString).toList()),
                statsOnly ? ", statistics only" : ", " + Sizes.format(plan.bytesWritten()) + " of checkpoints");
        long t0 = System.nanoTime();
        java.util.concurrent.atomic.AtomicLong done = new java.util.concurrent.atomic.AtomicLong();
        List<SweepRunner.Summary> summaries;
        try (Progress progress = Progress.start(plan.workBytes(), options.quiet)) {
            summaries = SweepPartitions.runOnDevices(output, lanes, options.overwrite, sweep, (lane, dir) -> {
                var o = new SweepRunner.Options(devices.get(lane), dir, whole.maxShardBytes(), false,
                        whole.allowVocabMismatch(), whole.nonFinite(), whole.writeCheckpoints(), whole.stats(), false,
                        whole.memoryLimit());
                try (SweepRunner r = new SweepRunner(cfg, sweep, o)) {
                    r.keepOnly(new dev.smelter.merge.Partition(lane, lanes));
                    if (r.configurations().isEmpty()) return null;
                    long[] last = {0};
                    return r.run(r.plan(), bytes -> {
                        long total = done.addAndGet(bytes - last[0]);
                        last[0] = bytes;
                        synchronized (progress) {
                            progress.update(total);
                        }
                    });
                } catch (ConfigException e) {
                    throw new IllegalArgumentException(e.getMessage(), e);
                }
            });
        }
        for (int lane = 0; lane < lanes; lane++) {
            SweepRunner.Summary s = summaries.get(lane);
            if (s == null) continue;
            System.out.println("device " + devices.get(lane) + ":");
            print(s, System.out);
            for (SweepRunner.ConfigResult r : s.results())
                for (String w : r.warnings()) err.println("warning: " + w);
        }
        err.printf(Locale.ROOT, "sweep: %d configurations on %d devices in %.3f s%n", plan.configurations(), lanes,
                (System.nanoTime() - t0) / 1e9);
        err.printf(Locale.ROOT, "wrote %s (%s%s, %s)%n", output, statsOnly ? "" : plan.configurations() + " checkpoints, ",
                SweepReport.CONFIGS_CSV + (summaries.stream().anyMatch(s -> s != null && s.statsMethod() != null)
                        ? ", " + SweepReport.STATS_CSV : ""), SweepReport.JSON);
        return 0;
    }

    /** The last partition to finish joins every partition's sweep into the output. */
    private void finishPartition(SweepPartitions partitions, dev.smelter.merge.Partition partition, SweepGrid sweep,
            Path output, PrintStream err) throws IOException {
        if (partitions.lastToFinish() && partitions.finalizeSweep(sweep, options.overwrite))
            err.println("note: partition " + partition + " finished last: assembled " + output);
    }

    private static String cpu(double seconds) {
        return seconds < 0 ? "" : String.format(Locale.ROOT, " (CPU %.3f s)", seconds);
    }

    private static String describe(SweepGrid grid) {
        List<String> parts = new ArrayList<>();
        for (SweepGrid.Axis a : grid.axes()) parts.add(a.name() + " x" + a.values().size());
        return String.join(", ", parts);
    }

    /** One line per configuration: its time and whole-model statistics. */
    static void print(SweepRunner.Summary s, PrintStream out) {
        int width = s.results().stream().mapToInt(r -> r.configuration().name().length()).max().orElse(6);
        boolean stats = s.statsMethod() != null;
        out.printf(Locale.ROOT, "%-" + width + "s %9s%s%s%n", "config", "seconds",
                s.sequential() != null ? String.format(Locale.ROOT, " %11s", "sequential") : "",
                stats ? String.format(Locale.ROOT, " %12s %10s %8s %10s", "delta_norm", "rel_delta", "kept", "sign_agree") : "");
        for (int c = 0; c < s.results().size(); c++) {
            SweepRunner.ConfigResult r = s.results().get(c);
            SweepRunner.LayerStats m = r.model();
            out.printf(Locale.ROOT, "%-" + width + "s %9.4f%s%s%n", r.configuration().name(), r.seconds(),
                    s.sequential() != null ? String.format(Locale.ROOT, " %11.4f", s.sequential().perConfiguration().get(c)) : "",
                    stats && m != null ? String.format(Locale.ROOT, " %12.6g %10.6f %8.5f %10.5f", m.deltaNorm(),
                            m.relativeDeltaNorm(), m.keptFraction(), m.signAgreement()) : "");
        }
    }

    private static void printPlan(SweepRunner runner, SweepRunner.SweepPlan plan, MergeConfig cfg, Device dev, PrintStream out) {
        out.printf(Locale.ROOT, "sweep of %d configurations (%s), method %s, %d models%s, trim scope %s, device %s%n",
                plan.configurations(), describe(runner.grid()), cfg.method().mergekitName(), cfg.models().size(),
                cfg.baseModel() != null ? " + base " + cfg.baseModel() : "",
                cfg.trimScope().name().toLowerCase(Locale.ROOT), dev);
        for (SweepRunner.Configuration c : runner.configurations()) out.println("  " + c.name());
        out.printf(Locale.ROOT, "%d tensors; read %s once, write %s%n", plan.merge().tensors().size(),
                Sizes.format(plan.bytesRead()), plan.bytesWritten() == 0 ? "statistics only"
                        : plan.configurations() + " x " + Sizes.format(plan.bytesWritten() / plan.configurations()) + " = "
                                + Sizes.format(plan.bytesWritten()));
        out.printf(Locale.ROOT, "peak host memory %s (the largest tensor's inputs and two output buffers)%n",
                Sizes.format(plan.peakHostBytes()));
        if (dev.kind() == Device.Kind.CUDA)
            out.printf(Locale.ROOT, "peak device memory %s (inputs and output of the largest tensor)%n",
                    Sizes.format(plan.peakDeviceBytes()));
    }
}
