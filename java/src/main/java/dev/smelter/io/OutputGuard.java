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

    /**
     * For a command that writes the files {@code names} into the folder {@code output} (an analysis's {@code -o}):
     * refuses, with an IllegalArgumentException (a usage error) naming both, an output folder that is one of the
     * {@code inputs} (what each is, e.g. "A", to its path), contains an input folder (a checkpoint), or in which one of
     * the files written would be an input file. Writing next to an input file is fine.
     */
    public static void checkFiles(Path output, java.util.List<String> names, Map<String, Path> inputs) throws IOException {
        Path out = real(output);
        for (Map.Entry<String, Path> e : inputs.entrySet()) {
            if (e.getValue() == null) continue;
            Path in = real(e.getValue());
            String what = "the input " + e.getValue() + " (" + e.getKey()
                    + (in.equals(e.getValue().toAbsolutePath().normalize()) ? "" : ", " + in) + ")";
            if (out.equals(in))
                throw new IllegalArgumentException("the output folder " + output + " is " + what
                        + ": choose an output folder outside every input (nothing was written)");
            if (in.startsWith(out) && Files.isDirectory(in))
                throw new IllegalArgumentException("the output folder " + output + " contains " + what
                        + ": choose an output folder that holds no input checkpoint (nothing was written)");
            for (String name : names)
                if (real(output.resolve(name)).equals(in))
                    throw new IllegalArgumentException("the output folder " + output + " would get " + name + " written over "
                            + what + ": choose another output folder (nothing was written)");
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
