package dev.smelter.cli;

import dev.smelter.Device;
import dev.smelter.Smelter;
import dev.smelter.config.ConfigException;
import dev.smelter.config.MergeConfig;
import dev.smelter.io.Checkpoint;
import dev.smelter.io.CheckpointFormatException;
import dev.smelter.io.TensorInfo;
import dev.smelter.merge.CheckpointMerger;
import java.io.IOException;
import java.io.PrintStream;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.Locale;
import java.util.concurrent.Callable;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;

/** The {@code smelter} command line: merge, sweep, cka, neurons, compare, info, doctor, demo-checkpoints, methods. */
@Command(name = "smelter", mixinStandardHelpOptions = true, versionProvider = SmelterCli.Version.class,
        description = "Fast, exact merging of LLM checkpoints (mergekit configs) on CUDA or CPU.",
        subcommands = {SmelterCli.Merge.class, SweepCommand.class, CkaCommand.class, NeuronsCommand.class, CompareCommand.class, SmelterCli.Info.class,
                SmelterCli.Doctor.class, DemoCheckpoints.class, MethodsCommand.class})
public final class SmelterCli {
    /** Exit codes: 0 ok, 1 merge/IO failure, 2 usage or config error (picocli's convention). */
    static final int EXIT_FAILURE = 1, EXIT_USAGE = 2;

    public static void main(String[] args) {
        System.exit(run(args));
    }

    public static int run(String... args) {
        CommandLine cli = new CommandLine(new SmelterCli());
        cli.setExecutionExceptionHandler((e, cmd, parsed) -> {
            cmd.getErr().println("smelter: " + message(e));
            return e instanceof ConfigException || e instanceof IllegalArgumentException ? EXIT_USAGE : EXIT_FAILURE;
        });
        return cli.execute(args);
    }

    static String message(Throwable e) {
        String m = e.getMessage();
        return m == null ? e.toString() : m;
    }

    static final class Version implements CommandLine.IVersionProvider {
        @Override
        public String[] getVersion() {
            return new String[] {Smelter.buildInfo()};
        }
    }

    @Command(name = "merge", mixinStandardHelpOptions = true,
            description = "Merge checkpoints as a mergekit YAML config says; the output appears only when complete.")
    static final class Merge implements Callable<Integer> {
        @Parameters(index = "0", paramLabel = "CONFIG", description = "mergekit-style YAML config")
        Path config;

        @Option(names = {"-o", "--output"}, required = true, paramLabel = "DIR", description = "output checkpoint directory")
        Path output;

        @Option(names = "--dry-run", description = "print the plan (tensors, bytes, peak memory) and write nothing")
        boolean dryRun;

        @Mixin
        MergeOptions options;

        @Override
        public Integer call() throws IOException, ConfigException {
            MergeConfig cfg = MergeConfig.load(config);
            if (cfg.grid() != null)
                throw new ConfigException(config + " has a smelter.grid (" + cfg.grid().size() + " configurations): run "
                        + "it with smelter sweep, or remove the grid to merge one configuration");
            cfg = options.apply(cfg);
            PrintStream err = System.err;
            for (String w : cfg.warnings()) err.println("warning: " + w);
            Device dev = options.device();
            var mergeOptions = new CheckpointMerger.Options(dev, output, options.maxShardBytes(), options.overwrite,
                    options.allowVocabMismatch, options.nonFinite(), options.memoryLimit());
            try (CheckpointMerger merger = new CheckpointMerger(cfg, mergeOptions)) {
                CheckpointMerger.Plan plan = merger.plan();
                for (String w : plan.warnings()) err.println("warning: " + w);
                if (dryRun) {
                    PlanPrinter.print(plan, cfg, dev, System.out);
                    return 0;
                }
                err.printf(Locale.ROOT, "merging %d tensors (%s) with %s on %s (%s)%n", plan.tensors().size(),
                        Sizes.format(plan.bytesWritten()), cfg.method().mergekitName(), dev, Smelter.deviceName(dev));
                CheckpointMerger.Summary s;
                try (Progress progress = Progress.start(plan.bytesWritten(), options.quiet)) {
                    s = merger.run(plan, progress::update);
                }
                for (String w : s.warnings()) err.println("warning: " + w);
                err.printf(Locale.ROOT, "wrote %s in %.2f s: %.2f GB/s (read %s + written %s); host buffers %s, peak anonymous memory %s%n",
                        output, s.seconds(), s.gigabytesPerSecond(), Sizes.format(s.bytesRead()),
                        Sizes.format(s.bytesWritten()), Sizes.format(plan.peakHostBytes()),
                        s.peakAnonymousBytes() < 0 ? "unknown" : Sizes.format(s.peakAnonymousBytes()));
                return 0;
            }
        }
    }

    @Command(name = "info", mixinStandardHelpOptions = true, description = "List a checkpoint's tensors, dtypes and sizes.")
    static final class Info implements Callable<Integer> {
        @Parameters(index = "0", paramLabel = "CHECKPOINT", description = "directory, index json or .safetensors file")
        Path checkpoint;

        @Override
        public Integer call() throws IOException {
            try (Checkpoint c = Checkpoint.open(checkpoint)) {
                System.out.printf(Locale.ROOT, "%s: %d tensors, %s%n", c.directory(), c.tensorNames().size(), Sizes.format(c.totalBytes()));
                for (String name : c.tensorNames()) {
                    TensorInfo t = c.info(name);
                    System.out.printf(Locale.ROOT, "  %-60s %-5s %-20s %10s%n", name, t.dtype(), Arrays.toString(t.shape()),
                            Sizes.format(t.byteSize()));
                }
            } catch (CheckpointFormatException e) {
                System.err.println("smelter: " + e.getMessage());
                return EXIT_FAILURE;
            }
            return 0;
        }
    }

    @Command(name = "doctor", mixinStandardHelpOptions = true, description = "Check the JDK, the native library and the GPUs.")
    static final class Doctor implements Callable<Integer> {
        @Override
        public Integer call() {
            return DoctorCheck.run(System.out);
        }
    }
}
