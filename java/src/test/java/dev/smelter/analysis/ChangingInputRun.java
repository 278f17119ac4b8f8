package dev.smelter.analysis;

import dev.smelter.cli.SmelterCli;
import java.io.IOException;
import java.io.OutputStream;
import java.io.PrintStream;
import java.io.RandomAccessFile;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.FileTime;
import java.util.Arrays;

/**
 * Runs the CLI (in a child JVM of {@link AnalysisInputChangeTest}) and changes an input file as another process
 * would, at a chosen moment: when the command prints a line containing TRIGGER to stderr (after it opened its
 * inputs, before it reads their data). Arguments: {@code truncate|rewrite FILE TRIGGER COMMAND ARGS...}.
 */
public final class ChangingInputRun {
    private ChangingInputRun() {}

    public static void main(String[] args) {
        String action = args[0], trigger = args[2];
        Path victim = Path.of(args[1]);
        PrintStream real = System.err;
        System.setErr(new PrintStream(new OutputStream() {
            private final StringBuilder seen = new StringBuilder();
            private boolean done;

            @Override
            public void write(int b) {
                real.write(b);
                if (done) return;
                seen.append((char) b);
                if (seen.indexOf(trigger) >= 0) {
                    done = true;
                    change(action, victim);
                }
            }
        }, true, StandardCharsets.ISO_8859_1));
        System.exit(SmelterCli.run(Arrays.copyOfRange(args, 3, args.length)));
    }

    static void change(String action, Path victim) {
        try {
            if (action.equals("truncate")) {
                try (RandomAccessFile f = new RandomAccessFile(victim.toFile(), "rw")) {
                    f.setLength(f.length() / 3);  // what `truncate` does to a file being read
                }
            } else {  // the same size, other data bytes, as a writer rewriting it in place leaves it
                FileTime before = Files.getLastModifiedTime(victim);
                try (RandomAccessFile f = new RandomAccessFile(victim.toFile(), "rw")) {
                    long at = f.length() - 16;
                    f.seek(at);
                    byte[] b = new byte[16];
                    f.readFully(b);
                    for (int i = 0; i < b.length; i++) b[i] ^= 0x5A;
                    f.seek(at);
                    f.write(b);
                }
                Files.setLastModifiedTime(victim, FileTime.fromMillis(before.toMillis() + 5_000));
            }
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }
}
