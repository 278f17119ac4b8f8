package dev.smelter.cli;

import dev.smelter.DType;
import dev.smelter.Device;
import dev.smelter.Smelter;
import dev.smelter.config.ConfigException;
import dev.smelter.config.MultiConfig;
import dev.smelter.config.MergeConfig;
import dev.smelter.io.Checkpoint;
import dev.smelter.io.CheckpointFormatException;
import dev.smelter.io.OutputGuard;
import dev.smelter.io.WorkDirs;
import dev.smelter.io.TensorInfo;
import dev.smelter.merge.ArchitectureCheck;
import dev.smelter.merge.CheckpointMerger;
import dev.smelter.merge.SideFiles;
import java.io.IOException;
import java.io.PrintStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.Locale;
import java.util.Map;
import java.util.concurrent.Callable;
import java.util.stream.Stream;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;
import picocli.CommandLine.ParameterException;
import picocli.CommandLine.Parameters;
import picocli.CommandLine.Spec;

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
        // A usage error: the message and where the options are listed, not the whole help.
        cli.setParameterExceptionHandler((e, a) -> {
            CommandLine cmd = e.getCommandLine();
            cmd.getErr().println("smelter: " + e.getMessage());
            CommandLine.UnmatchedArgumentException.printSuggestions(e, cmd.getErr());
            cmd.getErr().println("(" + cmd.getCommandSpec().qualifiedName() + " --help lists the options)");
            return EXIT_USAGE;
        });
        return cli.execute(args);
    }

    /** The inputs of a merge and its config file, which an output must not replace either. */
    static Map<String, Path> withConfig(Map<String, Path> inputs, Path config) {
        Map<String, Path> all = new java.util.LinkedHashMap<>(inputs);
        all.put("the config", config);
        return all;
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
            description = {"Merge checkpoints as a mergekit YAML config says; the output appears only when complete.",
                    "mergekit-yaml's command line works: smelter merge CONFIG OUT with its options (those that change "
                            + "nothing here are accepted with a note)."})
    static final class Merge implements Callable<Integer> {
        @Parameters(index = "0", paramLabel = "CONFIG", description = "mergekit-style YAML config")
        Path config;

        @Parameters(index = "1", arity = "0..1", paramLabel = "OUT", description = "output checkpoint directory (or -o)")
        Path outputArgument;

        @Option(names = {"-o", "--output"}, paramLabel = "DIR", description = "output checkpoint directory (or OUT)")
        Path outputOption;

        @Option(names = "--dry-run", description = "print the plan (tensors, bytes, peak memory) and write nothing")
        boolean dryRun;

        @Option(names = "--finalize",
                description = "after merges with --partition I/N: check every partition finished, write the index and "
                        + "side files and put the checkpoint in place (run it once all partitions have ended; the same "
                        + "config and options)")
        boolean finalizeMerge;

        @Option(names = "--copy-tokenizer", negatable = true, defaultValue = "true", fallbackValue = "true",
                description = "copy the tokenizer files of the base (or first) model (default; --no-copy-tokenizer: none)")
        boolean copyTokenizer;

        @Option(names = "--write-model-card", negatable = true, defaultValue = "true", fallbackValue = "true",
                description = "write README.md (a model card: the method, the models, the config) and "
                        + "mergekit_config.yml (the config as given), as mergekit does (default; --no-write-model-card: neither)")
        boolean writeModelCard;

        @Mixin
        MergeOptions options;

        @Spec
        CommandSpec spec;

        @Override
        public Integer call() throws IOException, ConfigException {
            if (MultiConfig.documentCount(config) > 1) {  // mergekit-multi: intermediate merges, then the final one
                Path output = output(spec, outputArgument, outputOption);
                return MultiMerge.run(MultiConfig.load(config), output, dryRun, options.overwrite,
                        (cfg, out, yaml, last) -> merge(cfg, out, last && writeModelCard ? yaml : null));
            }
            MergeConfig cfg = MergeConfig.load(config);
            Path output = output(spec, outputArgument, outputOption);
            return merge(cfg, output, writeModelCard ? Files.readString(config) : null);
        }

        /** Merges {@code cfg} into {@code output}; {@code card}: the config text for the model card (null: none). */
        private int merge(MergeConfig cfg, Path output, String card) throws IOException, ConfigException {
            if (cfg.grid() != null)
                throw new ConfigException(config + " has a smelter.grid (" + cfg.grid().size() + " configurations): run "
                        + "it with smelter sweep, or remove the grid to merge one configuration");
            cfg = options.apply(cfg);
            PrintStream err = System.err;
            for (String n : options.notes()) err.println("note: " + n);
            for (String w : cfg.warnings()) err.println("warning: " + w);
            Device dev = options.device();
            java.util.List<Device> devices = options.devices();
            var partition = options.partition();
            if (finalizeMerge && partition != null)
                throw new IllegalArgumentException("--finalize assembles the partitions' output: give it without --partition");
            if (finalizeMerge && dryRun) throw new IllegalArgumentException("--finalize and --dry-run: give one");
            long shardBytes = options.maxShardBytes();
            long memoryLimit = options.memoryLimit();
            ArchitectureCheck.check(cfg, options.allowCrimes, w -> err.println("warning: " + w));
            OutputGuard.check(output, withConfig(CheckpointMerger.inputs(cfg), config));
            if (!dryRun) for (String s : WorkDirs.removeStale(output)) err.println("note: " + s);
            String existing = describeExisting(output, options.overwrite);
            if (existing != null && !dryRun && !options.overwrite && !finalizeMerge) throw new ConfigException(existing);
            var mergeOptions = new CheckpointMerger.Options(dev, output, shardBytes, options.overwrite,
                    options.allowVocabMismatch, options.nonFinite(), memoryLimit, copyTokenizer,
                    card);
            try (CheckpointMerger merger = new CheckpointMerger(cfg, mergeOptions)) {
                CheckpointMerger.Plan plan = merger.plan();
                for (String w : plan.warnings()) err.println("warning: " + w);
                if (options.verbose()) printDetails(cfg, plan, output, shardBytes, err);
                if (dryRun) {
                    PlanPrinter.print(plan, cfg, dev, System.out);
                    if (devices.size() > 1)
                        System.out.printf(Locale.ROOT, "on %d devices (%s), each with its own buffers: host memory %s in all%n",
                                devices.size(), String.join(", ", devices.stream().map(Device::toString).toList()),
                                Sizes.format(plan.peakHostBytes() * devices.size()));
                    if (partition != null) {
                        Map<String, Long> shards = merger.partitionShards(plan, partition);
                        System.out.printf(Locale.ROOT, "partition %s writes %d shards (%s): %s%n", partition, shards.size(),
                                Sizes.format(shards.values().stream().mapToLong(Long::longValue).sum()),
                                shards.isEmpty() ? "none" : String.join(", ", shards.keySet()));
                    }
                    System.out.println(existing != null ? existing : "output " + output + " (a new directory)");
                    return 0;
                }
                if (finalizeMerge) {
                    java.util.List<String> warnings = new java.util.ArrayList<>();
                    boolean assembled = merger.finalizePartitions(plan, JOB_TEXT, warnings);
                    for (String w : warnings) err.println("warning: " + w);
                    err.println(assembled ? "finalized " + output + " from its partitions"
                            : "nothing to finalize: " + output + " is in place and no partition of this job is staged "
                                    + "(finalized before)");
                    return 0;
                }
                String on = devices.size() == 1 ? dev + " (" + Smelter.deviceName(dev) + ")"
                        : devices.size() + " devices (" + String.join(", ", devices.stream().map(Device::toString).toList()) + ")";
                err.printf(Locale.ROOT, "merging %d tensors (%s) with %s on %s%s%n", plan.tensors().size(),
                        Sizes.format(plan.bytesWritten()), cfg.method().mergekitName(), on,
                        partition == null ? "" : ", partition " + partition);
                CheckpointMerger.Summary s;
                try (Progress progress = Progress.start(plan.bytesWritten(), options.quiet)) {
                    s = merger.run(plan, new CheckpointMerger.Scale(devices, partition, JOB_TEXT), progress::update);
                }
                for (String w : s.warnings()) err.println("warning: " + w);
                for (String n : s.notes()) err.println("note: " + n);
                err.printf(Locale.ROOT, "wrote %s in %.2f s: %.2f GB/s (read %s + written %s); host buffers %s, peak anonymous memory %s%n",
                        partition == null ? output : "partition " + partition + " of " + output, s.seconds(), s.gigabytesPerSecond(), Sizes.format(s.bytesRead()),
                        Sizes.format(s.bytesWritten()), Sizes.format(plan.peakHostBytes()),
                        s.peakAnonymousBytes() < 0 ? "unknown" : Sizes.format(s.peakAnonymousBytes()));
                return 0;
            }
        }

        /** -v: the inputs as resolved, the output's dtype and shards, and the tensors the plan notes something about. */
        private static void printDetails(MergeConfig cfg, CheckpointMerger.Plan plan, Path output, long shardBytes,
                PrintStream err) {
            if (cfg.baseModel() != null) err.println("base_model: " + MergeConfig.describe(cfg.baseModel(), cfg.baseLora()));
            for (MergeConfig.ModelEntry m : cfg.models()) err.println("model: " + MergeConfig.describe(m.path(), m.lora()));
            DType out = SideFiles.outputDType(plan);
            err.printf(Locale.ROOT, "output: %s, %s, shards of at most %s%n", output,
                    out == null ? "no merged tensors" : "torch_dtype " + SideFiles.torchName(out),
                    shardBytes == Long.MAX_VALUE ? "any size (one shard)" : Sizes.format(shardBytes));
            for (CheckpointMerger.TensorPlan t : plan.tensors())
                if (!t.note().isEmpty()) err.println("note: tensor " + t.name() + ": " + t.note());
        }
    }

    /** What the partitions' fingerprint holds beyond the config and the merger's options (nothing yet). */
    static final String JOB_TEXT = "";

    /** OUT (positional) or -o OUT: one of them, the same if both. */
    static Path output(CommandSpec spec, Path argument, Path option) {
        if (argument == null && option == null)
            throw new ParameterException(spec.commandLine(), "no output directory: give it after the config ("
                    + spec.qualifiedName() + " CONFIG OUT, as mergekit-yaml takes it) or with -o OUT");
        if (argument != null && option != null
                && !argument.toAbsolutePath().normalize().equals(option.toAbsolutePath().normalize()))
            throw new ParameterException(spec.commandLine(), "two output directories: " + argument + " (after the "
                    + "config) and -o " + option + "; give one");
        return argument != null ? argument : option;
    }

    /**
     * What a run would do with an output that exists: null when it does not exist (or is an empty directory), else a
     * line saying whether --overwrite replaces it.
     */
    static String describeExisting(Path output, boolean overwrite) throws IOException {
        if (!Files.exists(output)) return null;
        if (!Files.isDirectory(output)) return "output " + output + " exists and is not a directory: the merge would fail";
        try (Stream<Path> s = Files.list(output)) {
            if (s.findAny().isEmpty()) return null;
        }
        return overwrite ? "output " + output + " exists and is not empty: --overwrite replaces it once the new one is complete"
                : "output " + output + " exists and is not empty (use --overwrite to replace it once the new one is complete)";
    }

    @Command(name = "info", mixinStandardHelpOptions = true, description = "List a checkpoint's tensors, dtypes and sizes.")
    static final class Info implements Callable<Integer> {
        @Parameters(index = "0", paramLabel = "CHECKPOINT", description = "directory, index json, .safetensors or PyTorch .bin file")
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
