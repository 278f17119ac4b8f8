package dev.smelter.cli;

import dev.smelter.Device;
import dev.smelter.config.ConfigException;
import dev.smelter.config.MergeConfig;
import dev.smelter.merge.CheckpointMerger;
import picocli.CommandLine.Option;

/** The options `merge` and `sweep` share (a picocli mixin), and what they mean. */
final class MergeOptions {
    @Option(names = "--device", defaultValue = "auto", paramLabel = "DEV", description = "cpu, cuda, cuda:N or auto (default)")
    String device;

    @Option(names = "--max-shard-size", defaultValue = "5GB", paramLabel = "SIZE", description = "shard size limit (e.g. 2GB, 500MB)")
    String maxShardSize;

    @Option(names = "--overwrite", description = "replace an existing output directory (only once the new one is complete)")
    boolean overwrite;

    @Option(names = "--allow-vocab-mismatch", description = "merge the shared rows of embeddings/lm_head whose vocabulary sizes differ")
    boolean allowVocabMismatch;

    @Option(names = "--trim-scope", paramLabel = "SCOPE", description = "TIES trimming per 'tensor' (mergekit) or per 'model' (TIES paper); overrides the config")
    String trimScope;

    @Option(names = "--seed", paramLabel = "N", description = "seed of the random masks (DARE, DELLA); overrides the config")
    Long seed;

    @Option(names = "--memory-limit", paramLabel = "SIZE",
            description = "most memory one merge step works on at once (e.g. 8GiB); larger tensors merge in pieces, with "
                    + "the same result (default: the free GPU memory on CUDA, no limit on the CPU)")
    String memoryLimit;

    @Option(names = {"-q", "--quiet"}, description = "no progress bar")
    boolean quiet;

    @Option(names = "--on-nonfinite", defaultValue = "warn", paramLabel = "ACTION",
            description = "merged values that are NaN or infinite (from such inputs, or overflowing a 16-bit out_dtype): "
                    + "warn (default), fail (write nothing) or ignore")
    String onNonFinite;

    /** The config with --trim-scope and --seed applied. */
    MergeConfig apply(MergeConfig cfg) throws ConfigException {
        if (trimScope == null && seed == null) return cfg;
        return cfg.with(cfg.models(), cfg.parameters(), trimScope != null ? MergeConfig.trimScope(trimScope) : cfg.trimScope(),
                seed != null ? seed : cfg.seed(), cfg.grid());
    }

    Device device() {
        return Device.parse(device);
    }

    long maxShardBytes() {
        return Sizes.parse(maxShardSize);
    }

    long memoryLimit() {
        return memoryLimit == null ? 0 : Sizes.parse(memoryLimit);
    }

    CheckpointMerger.NonFinite nonFinite() {
        return switch (onNonFinite) {
            case "warn" -> CheckpointMerger.NonFinite.WARN;
            case "fail" -> CheckpointMerger.NonFinite.FAIL;
            case "ignore" -> CheckpointMerger.NonFinite.IGNORE;
            default -> throw new IllegalArgumentException("--on-nonfinite is warn, fail or ignore, not '" + onNonFinite + "'");
        };
    }
}
