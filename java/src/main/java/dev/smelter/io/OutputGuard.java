package dev.smelter.io;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.LinkOption;
import java.nio.file.Path;
import java.util.Map;

/**
 * An output that replaces a directory must not be an input, lie inside one, or contain one: with {@code --overwrite}
 * that would delete a checkpoint. Paths are compared as real paths (symbolic links resolved), the output's through
 * its nearest existing ancestor.
 */
public final class OutputGuard {
    private OutputGuard() {}

    /**
     * Refuses {@code output} against {@code inputs} (what each is, e.g. "base_model", to the path it names) with an
     * IllegalArgumentException (a usage error) naming both.
     */
    public static void check(Path output, Map<String, Path> inputs) throws IOException {
        Path out = real(output);
        for (Map.Entry<String, Path> e : inputs.entrySet()) {
            if (e.getValue() == null) continue;
            Path in = real(e.getValue());
            String how = out.equals(in) ? "is" : out.startsWith(in) ? "lies inside" : in.startsWith(out) ? "contains" : null;
            if (how != null)
                throw new IllegalArgumentException("the output " + output + " " + how + " the input " + e.getValue()
                        + " (" + e.getKey() + (in.equals(e.getValue().toAbsolutePath().normalize()) ? "" : ", " + in)
                        + "): writing it would replace that input; choose an output outside every input (nothing was written)");
        }
    }

    /** The real path of {@code p}, or for a path that does not exist yet that of its nearest existing ancestor plus the rest. */
    static Path real(Path p) throws IOException {
        Path abs = p.toAbsolutePath().normalize();
        Path existing = abs;
        while (existing != null && !Files.exists(existing, LinkOption.NOFOLLOW_LINKS)) existing = existing.getParent();
        if (existing == null) return abs;
        return existing.toRealPath().resolve(existing.relativize(abs)).normalize();
    }
}
