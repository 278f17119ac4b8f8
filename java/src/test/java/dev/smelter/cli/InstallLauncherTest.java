package dev.smelter.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.smelter.Smelter;
import java.io.File;
import java.io.OutputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.jar.Attributes;
import java.util.jar.JarOutputStream;
import java.util.jar.Manifest;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * scripts/install-launcher.sh (what `smelter-dev install` runs once the jar is built): it installs a jar and a
 * `smelter` launcher that runs it. The jar here is a small one whose manifest points at this test's classpath, so the
 * test needs no packaged build.
 */
class InstallLauncherTest {
    @TempDir
    Path dir;

    static Path repositoryRoot() {
        String header = System.getProperty("smelter.header");  // <root>/native/include/smelter.h, set by the pom
        return header != null ? Path.of(header).toAbsolutePath().getParent().getParent().getParent()
                : Path.of("").toAbsolutePath().getParent();
    }

    static Path classpathJar(Path file) throws Exception {
        Manifest m = new Manifest();
        m.getMainAttributes().put(Attributes.Name.MANIFEST_VERSION, "1.0");
        m.getMainAttributes().put(Attributes.Name.MAIN_CLASS, SmelterCli.class.getName());
        List<String> urls = new ArrayList<>();
        for (String p : System.getProperty("java.class.path").split(File.pathSeparator))
            if (!p.isEmpty()) urls.add(Path.of(p).toAbsolutePath().toUri().toString());  // directories end in '/'
        m.getMainAttributes().put(Attributes.Name.CLASS_PATH, String.join(" ", urls));
        try (OutputStream out = Files.newOutputStream(file); JarOutputStream jar = new JarOutputStream(out, m)) {
            // the manifest is all
        }
        return file;
    }

    static String run(int expectedCode, List<String> command) throws Exception {
        ProcessBuilder pb = new ProcessBuilder(command).redirectErrorStream(true);
        pb.environment().remove("SMELTER_JAVA_HOME");
        Process p = pb.start();
        String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        assertTrue(p.waitFor(120, TimeUnit.SECONDS), "finished: " + command);
        assertEquals(expectedCode, p.exitValue(), out);
        return out;
    }

    @Test
    void installsTheJarAndALauncherThatRunsIt() throws Exception {
        Path script = repositoryRoot().resolve("scripts/install-launcher.sh");
        assertTrue(Files.isRegularFile(script), script.toString());
        Path jar = classpathJar(dir.resolve("smelter-cli.jar"));
        Path prefix = dir.resolve("prefix with space");
        String jdk = System.getProperty("java.home");
        String out = run(0, List.of("bash", script.toString(), jar.toString(), prefix.toString(), jdk));
        Path launcher = prefix.resolve("bin/smelter");
        assertTrue(out.contains("installed " + launcher), out);
        assertTrue(Files.isExecutable(launcher));
        assertEquals(Files.size(jar), Files.size(prefix.resolve("share/smelter/smelter-cli.jar")));

        String version = run(0, List.of(launcher.toString(), "--version"));
        assertTrue(version.contains(Smelter.buildInfo()), version);
        // Arguments reach the CLI as given, exit codes come back.
        String usage = run(2, List.of(launcher.toString(), "merge", "no such config.yml", "out"));
        assertTrue(usage.contains("config file no such config.yml does not exist"), usage);

        // Installing again replaces both; a missing jar is a usage error.
        run(0, List.of("bash", script.toString(), jar.toString(), prefix.toString(), jdk));
        String missing = run(2, List.of("bash", script.toString(), dir.resolve("none.jar").toString(), prefix.toString()));
        assertTrue(missing.contains("none.jar not found"), missing);
    }
}
