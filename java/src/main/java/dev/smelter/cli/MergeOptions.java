package dev.smelter.cli;

import dev.smelter.Device;
import dev.smelter.config.ConfigException;
import dev.smelter.config.MergeConfig;
import dev.smelter.merge.CheckpointMerger;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import picocli.CommandLine.Option;

/**
 * The options `merge` and `sweep` share (a picocli mixin), and what they mean. mergekit-yaml's options are taken
 * under their own names; those that change nothing here are accepted with a note saying why ({@link #notes}).
 */
final class MergeOptions {
    /** The shard size limit without --max-shard-size or --out-shard-size (mergekit's default, 5B bytes). */
    static final long DEFAULT_SHARD_BYTES = 5_000_000_000L;

    @Option(names = "--device", paramLabel = "DEV",
            description = "cpu, cuda, cuda:N or auto (default); merge: several at once, cuda:0,1,2,3 or cuda:all (the "
                    + "tensors spread over them by bytes, the same output)")
    String device;

    @Option(names = "--partition", paramLabel = "I/N",
            description = "merge: write partition I (0-based) of N of the output's shards into a staging directory "
                    + "beside it; the last partition to finish (or merge --finalize) puts the checkpoint in place "
                    + "(a Slurm job array: --partition $SLURM_ARRAY_TASK_ID/N)")
    String partition;

    @Option(names = "--cuda", negatable = true, description = "merge on the GPU: --device cuda (mergekit's --cuda)")
    boolean cuda;

    @Option(names = "--max-shard-size", paramLabel = "SIZE",
            description = "shard size limit with a byte unit: KB, MB, GB, TB or KiB, MiB, GiB, TiB (default 5GB); a bare "
                    + "number or B is refused, see --out-shard-size")
    String maxShardSize;

    @Option(names = "--out-shard-size", paramLabel = "SIZE",
            description = "shard size limit as mergekit-yaml takes it: bytes, K/M/B for thousand/million/billion bytes "
                    + "(5B = 5GB; 0: one shard)")
    String outShardSize;

    @Option(names = "--overwrite", description = "replace an existing output directory (only once the new one is complete)")
    boolean overwrite;

    @Option(names = "--allow-vocab-mismatch", description = "merge the shared rows of embeddings/lm_head whose vocabulary sizes differ")
    boolean allowVocabMismatch;

    @Option(names = "--allow-crimes", negatable = true,
            description = "merge models whose config.json (model_type, architectures, layers, sizes) or layer count "
                    + "differ: a warning instead of an error (mergekit's --allow-crimes)")
    boolean allowCrimes;

    @Option(names = "--trim-scope", paramLabel = "SCOPE", description = "TIES trimming per 'tensor' (mergekit) or per 'model' (TIES paper); overrides the config")
    String trimScope;

    @Option(names = "--seed", paramLabel = "N", description = "seed of the random masks (DARE, DELLA); overrides the config")
    Long seed;

    @Option(names = "--random-seed", paramLabel = "N", description = "the same as --seed (mergekit's name)")
    Long randomSeed;

    @Option(names = "--memory-limit", paramLabel = "SIZE",
            description = "most memory one merge step works on at once (e.g. 8GiB); larger tensors merge in pieces, with "
                    + "the same result (default: the free GPU memory on CUDA, no limit on the CPU)")
    String memoryLimit;

    @Option(names = {"-q", "--quiet"}, negatable = true, description = "no progress bar")
    boolean quiet;

    @Option(names = {"-v", "--verbose"}, description = "more detail: the inputs, the output dtype, notes on tensors")
    boolean[] verbose = new boolean[0];

    @Option(names = "--on-nonfinite", defaultValue = "warn", paramLabel = "ACTION",
            description = "merged values that are NaN or infinite (from such inputs, or overflowing a 16-bit out_dtype): "
                    + "warn (default), fail (write nothing) or ignore")
    String onNonFinite;

    // mergekit-yaml options that change nothing here: accepted, so mergekit command lines run, with a note each.

    @Option(names = "--gpu-rich", description = "mergekit's --cuda --low-cpu-memory --read-to-gpu --multi-gpu: here --cuda")
    boolean gpuRich;

    @Option(names = "--lazy-unpickle", negatable = true, description = "accepted; changes nothing (.bin files are always read tensor by tensor, never unpickled into memory)")
    boolean lazyUnpickle;

    @Option(names = "--lora-merge-cache", paramLabel = "DIR", description = "accepted; changes nothing (LoRA adapters are applied as tensors are read)")
    Path loraMergeCache;

    @Option(names = "--lora-merge-dtype", paramLabel = "DTYPE", description = "accepted; changes nothing (W + s B A is formed in double, rounded to each tensor's dtype)")
    String loraMergeDtype;

    @Option(names = "--low-cpu-memory", negatable = true, description = "accepted; changes nothing (host memory is one tensor's inputs and two outputs)")
    boolean lowCpuMemory;

    @Option(names = "--trust-remote-code", negatable = true, description = "accepted; changes nothing (no model code runs)")
    boolean trustRemoteCode;

    @Option(names = "--read-to-gpu", negatable = true, description = "accepted; changes nothing (CUDA stages each tensor's inputs)")
    boolean readToGpu;

    @Option(names = "--multi-gpu", negatable = true, description = "accepted; changes nothing (several GPUs: --device cuda:0,1,... or cuda:all)")
    boolean multiGpu;

    @Option(names = "--async-write", negatable = true, description = "accepted; changes nothing (writes always overlap merging)")
    boolean asyncWrite;

    @Option(names = "--clone-tensors", negatable = true, description = "accepted; changes nothing (each tensor has its own buffer)")
    boolean cloneTensors;

    @Option(names = "--safe-serialization", negatable = true, description = "accepted; changes nothing (always safetensors)")
    Boolean safeSerialization;

    @Option(names = {"-j", "--num-threads"}, paramLabel = "N", description = "accepted; changes nothing (one CPU thread per hardware thread)")
    Integer numThreads;

    @Option(names = "--write-threads", paramLabel = "N", description = "accepted; changes nothing (one write-behind thread)")
    Integer writeThreads;

    /** The config with --trim-scope and --seed (or --random-seed) applied. */
    MergeConfig apply(MergeConfig cfg) throws ConfigException {
        Long s = seed();
        if (trimScope == null && s == null) return cfg;
        return cfg.with(cfg.models(), cfg.parameters(), trimScope != null ? MergeConfig.trimScope(trimScope) : cfg.trimScope(),
                s != null ? s : cfg.seed(), cfg.grid());
    }

    private Long seed() {
        if (seed != null && randomSeed != null && !seed.equals(randomSeed))
            throw new IllegalArgumentException("--seed " + seed + " and --random-seed " + randomSeed
                    + " differ (they are the same option): give one");
        return seed != null ? seed : randomSeed;
    }

    /** The devices of --device (a list, or cuda:all), or the one of {@link #device()}. */
    List<Device> devices() {
        if (device != null && (device.contains(",") || device.strip().toLowerCase(Locale.ROOT).endsWith(":all"))) {
            List<Device> list = dev.smelter.merge.DeviceScheduler.parse(device);
            if ((cuda || gpuRich) && list.stream().anyMatch(d -> d.kind() != Device.Kind.CUDA))
                throw new IllegalArgumentException((cuda ? "--cuda" : "--gpu-rich") + " (merge on the GPU) conflicts with "
                        + "--device " + device + ": give one");
            return list;
        }
        return List.of(device());
    }

    /** --partition I/N, or null. */
    dev.smelter.merge.Partition partition() {
        return partition == null ? null : dev.smelter.merge.Partition.parse(partition);
    }

    /** --device, or --cuda (and --gpu-rich) as mergekit means them: CUDA device 0 unless --device names another. */
    Device device() {
        if (device != null && (device.contains(",") || device.strip().toLowerCase(Locale.ROOT).endsWith(":all")))
            return devices().get(0);
        boolean wantCuda = cuda || gpuRich;
        String flag = cuda ? "--cuda" : "--gpu-rich";
        if (device == null) return wantCuda ? Device.cuda(0) : Device.parse("auto");
        if (wantCuda && device.strip().equalsIgnoreCase("auto")) return Device.cuda(0);
        Device d = Device.parse(device);
        if (wantCuda && d.kind() != Device.Kind.CUDA)
            throw new IllegalArgumentException(flag + " (merge on the GPU) conflicts with --device " + device + ": give one");
        return d;
    }

    long maxShardBytes() {
        if (maxShardSize != null && outShardSize != null)
            throw new IllegalArgumentException("--max-shard-size and --out-shard-size both set the shard size: give one");
        if (outShardSize != null) return Sizes.parseKmb("--out-shard-size", outShardSize);
        return maxShardSize == null ? DEFAULT_SHARD_BYTES : Sizes.parseShardSize(maxShardSize);
    }

    long memoryLimit() {
        return memoryLimit == null ? 0 : Sizes.parse("--memory-limit", memoryLimit);
    }

    boolean verbose() {
        return verbose.length > 0;
    }

    CheckpointMerger.NonFinite nonFinite() {
        return switch (onNonFinite) {
            case "warn" -> CheckpointMerger.NonFinite.WARN;
            case "fail" -> CheckpointMerger.NonFinite.FAIL;
            case "ignore" -> CheckpointMerger.NonFinite.IGNORE;
            default -> throw new IllegalArgumentException("--on-nonfinite is warn, fail or ignore, not '" + onNonFinite + "'");
        };
    }

    /** One line for each mergekit option given that changes nothing here, saying why. */
    List<String> notes() {
        List<String> notes = new ArrayList<>();
        if (gpuRich)
            notes.add("--gpu-rich means --cuda here; the rest of it (--low-cpu-memory, --read-to-gpu, --multi-gpu) "
                    + "changes nothing");
        if (lazyUnpickle)
            notes.add("--lazy-unpickle changes nothing: Smelter reads .bin checkpoints tensor by tensor, with a restricted "
                    + "unpickler that runs no code");
        if (loraMergeCache != null || loraMergeDtype != null)
            notes.add("--lora-merge-cache and --lora-merge-dtype change nothing: LoRA adapters are applied to each tensor "
                    + "as it is read (W + s B A in double, rounded once to the tensor's dtype), no merged copy is written");
        if (lowCpuMemory)
            notes.add("--low-cpu-memory changes nothing: Smelter's own buffers hold one tensor's inputs and two output "
                    + "tensors, whatever the model's size (--dry-run prints the peak)");
        if (trustRemoteCode)
            notes.add("--trust-remote-code changes nothing: Smelter runs no model code, it reads config.json and the "
                    + "safetensors files");
        if (readToGpu)
            notes.add("--read-to-gpu changes nothing: on CUDA each tensor's inputs are copied to the GPU as it merges");
        if (multiGpu)
            notes.add("--multi-gpu changes nothing: merge on several GPUs by naming them, --device cuda:0,1,... or "
                    + "--device cuda:all");
        if (asyncWrite) notes.add("--async-write changes nothing: writing always overlaps merging (a write-behind thread)");
        if (cloneTensors) notes.add("--clone-tensors changes nothing: every output tensor is written from its own buffer");
        if (safeSerialization != null)
            notes.add(safeSerialization ? "--safe-serialization changes nothing: the output is always safetensors"
                    : "--no-safe-serialization is ignored: Smelter writes safetensors only");
        if (numThreads != null)
            notes.add(String.format(Locale.ROOT, "--num-threads %d changes nothing: the CPU backend runs one thread per "
                    + "hardware thread", numThreads));
        if (writeThreads != null)
            notes.add(String.format(Locale.ROOT, "--write-threads %d changes nothing: one write-behind thread writes the "
                    + "shards while the next tensors merge", writeThreads));
        return notes;
    }
}
