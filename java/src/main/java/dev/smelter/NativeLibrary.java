package dev.smelter;

import java.io.IOException;
import java.io.InputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.List;
import java.util.Locale;

/**
 * Finds and loads libsmelter once per JVM, in this order:
 * <ol>
 *   <li>the file named by system property {@code smelter.library.path} or environment variable
 *       {@code SMELTER_LIBRARY_PATH};</li>
 *   <li>the copy packaged in the jar ({@code dev/smelter/native/<os>-<arch>/libsmelter.so}),
 *       extracted to a cache directory named by its content hash
 *       ({@code $XDG_CACHE_HOME/smelter} or {@code ~/.cache/smelter}, else the temp directory).</li>
 * </ol>
 * Failures say what was searched and how to fix it.
 */
final class NativeLibrary {
    static final String PATH_PROPERTY = "smelter.library.path";
    static final String PATH_ENV = "SMELTER_LIBRARY_PATH";
    private static volatile Path loaded;

    private NativeLibrary() {}

    static synchronized Path ensureLoaded() {
        if (loaded != null) return loaded;
        List<String> searched = new ArrayList<>();
        String override = System.getProperty(PATH_PROPERTY, System.getenv(PATH_ENV));
        Path path;
        if (override != null && !override.isBlank()) {
            path = Path.of(override);
            if (!Files.isRegularFile(path))
                throw new SmelterException(Status.UNSUPPORTED, "libsmelter not found at " + path + " (set by -D"
                        + PATH_PROPERTY + " or " + PATH_ENV + ")");
        } else {
            String resource = "/dev/smelter/native/" + platform() + "/libsmelter.so";
            searched.add("classpath resource " + resource);
            path = extract(resource, searched);
        }
        try {
            System.load(path.toAbsolutePath().toString());
        } catch (UnsatisfiedLinkError e) {
            throw new SmelterException(Status.UNSUPPORTED, "cannot load " + path + ": " + e.getMessage());
        } catch (IllegalCallerException e) {
            throw new SmelterException(Status.UNSUPPORTED, "native access is disabled: run java with "
                    + "--enable-native-access=ALL-UNNAMED (or the module name that uses Smelter)");
        }
        loaded = path;
        return path;
    }

    static String platform() {
        String os = System.getProperty("os.name").toLowerCase(Locale.ROOT);
        String arch = System.getProperty("os.arch").toLowerCase(Locale.ROOT);
        String o = os.contains("linux") ? "linux" : os.contains("mac") ? "macos" : os.contains("win") ? "windows" : os;
        String a = arch.equals("amd64") ? "x86_64" : arch;
        return o + "-" + a;
    }

    private static Path extract(String resource, List<String> searched) {
        byte[] bytes;
        try (InputStream in = NativeLibrary.class.getResourceAsStream(resource)) {
            if (in == null)
                throw new SmelterException(Status.UNSUPPORTED, "no libsmelter for platform " + platform() + "; searched: "
                        + String.join(", ", searched) + ". Build it (./smelter-dev build) or point -D" + PATH_PROPERTY
                        + " at a libsmelter.so");
            bytes = in.readAllBytes();
        } catch (IOException e) {
            throw new SmelterException(Status.UNSUPPORTED, "cannot read " + resource + ": " + e.getMessage());
        }
        String hash = sha256(bytes).substring(0, 16);
        List<Path> dirs = new ArrayList<>();
        String xdg = System.getenv("XDG_CACHE_HOME");
        if (xdg != null && !xdg.isBlank()) dirs.add(Path.of(xdg, "smelter", hash));
        dirs.add(Path.of(System.getProperty("user.home"), ".cache", "smelter", hash));
        dirs.add(Path.of(System.getProperty("java.io.tmpdir"), "smelter-" + System.getProperty("user.name"), hash));
        for (Path dir : dirs) {
            Path target = dir.resolve("libsmelter.so");
            try {
                if (Files.isRegularFile(target) && Files.size(target) == bytes.length) return target;
                Files.createDirectories(dir);
                // Write to a private name, then rename: concurrent JVMs never load a half-written file.
                Path tmp = Files.createTempFile(dir, "libsmelter", ".tmp");
                Files.write(tmp, bytes);
                Files.move(tmp, target, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
                return target;
            } catch (IOException | UnsupportedOperationException e) {
                searched.add("cache " + dir + " (" + e.getMessage() + ")");
            }
        }
        throw new SmelterException(Status.UNSUPPORTED, "cannot extract libsmelter; tried: " + String.join(", ", searched));
    }

    private static String sha256(byte[] bytes) {
        try {
            return HexFormat.of().formatHex(MessageDigest.getInstance("SHA-256").digest(bytes));
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException(e);
        }
    }
}
