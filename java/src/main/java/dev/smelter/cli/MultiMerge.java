package dev.smelter.cli;

import dev.smelter.config.ConfigException;
import dev.smelter.config.MergeConfig;
import dev.smelter.config.MultiConfig;
import dev.smelter.io.CheckpointWriter;
import dev.smelter.io.HubCache;
import dev.smelter.io.WorkDirs;
import java.io.IOException;
import java.io.PrintStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

/**
 * {@code smelter merge} of a multi-document config (mergekit-multi): the intermediate merges go into a hidden work
 * directory beside the output ({@code .OUT.multi-*}, removed on exit, Ctrl-C included, see {@link WorkDirs}), each
 * deleted as soon as no later document uses it; the final merge is written to the output as a single merge is.
 */
final class MultiMerge {
    private MultiMerge() {}

    /** One merge: {@code yaml} is the document's text, {@code last} whether it is the final merge. */
    interface Step {
        int merge(MergeConfig cfg, Path output, String yaml, boolean last) throws IOException, ConfigException;
    }

    static int run(MultiConfig multi, Path output, boolean dryRun, boolean overwrite, Step step)
            throws IOException, ConfigException {
        PrintStream err = System.err;
        for (String w : multi.warnings()) err.println("warning: " + w);
        List<MultiConfig.Document> order = multi.order();
        HubCache hub = HubCache.fromEnvironment();
        Path cwd = Path.of("").toAbsolutePath();
        if (dryRun) {
            Path nowhere = output.toAbsolutePath().resolveSibling("." + output.getFileName() + ".multi-dry-run");
            for (int i = 0; i < order.size(); i++) {
                MultiConfig.Document d = order.get(i);
                err.printf("step %d/%d: %s -> %s%n", i + 1, order.size(), d.describe(),
                        i == order.size() - 1 ? output : "intermediate " + d.name());
                if (d.uses().isEmpty()) step.merge(multi.config(d, nowhere, cwd, hub), output, d.yaml(), false);
                else err.println("  (uses " + String.join(", ", d.uses()) + ": planned once they are merged)");
            }
            return 0;
        }
        String existing = SmelterCli.describeExisting(output, overwrite);
        if (existing != null && !overwrite) throw new ConfigException(existing);  // before any intermediate is merged
        Path work = WorkDirs.create(output, "multi");
        try {
            List<String> kept = new ArrayList<>();
            for (int i = 0; i < order.size(); i++) {
                MultiConfig.Document d = order.get(i);
                boolean last = i == order.size() - 1;
                Path out = last ? output : work.resolve(d.name());
                err.printf("step %d/%d: %s%n", i + 1, order.size(), d.describe());
                int code = step.merge(multi.config(d, work, cwd, hub), out, d.yaml(), last);
                if (code != 0) return code;
                if (!last) kept.add(d.name());
                for (String name : List.copyOf(kept))
                    if (multi.lastUse(name) <= i) {  // no later document reads it
                        CheckpointWriter.deleteTree(work.resolve(name));
                        kept.remove(name);
                    }
            }
            return 0;
        } finally {
            if (Files.exists(work)) WorkDirs.delete(work);
        }
    }
}
