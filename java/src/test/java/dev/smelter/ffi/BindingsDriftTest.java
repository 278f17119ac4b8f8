package dev.smelter.ffi;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.lang.reflect.Method;
import java.lang.reflect.Modifier;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.util.Arrays;
import java.util.HexFormat;
import java.util.List;
import java.util.Set;
import java.util.TreeSet;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.stream.Collectors;
import org.junit.jupiter.api.Test;

/** Fails when native/include/smelter.h changed but the committed jextract bindings were not regenerated. */
class BindingsDriftTest {
    private static final Path HEADER = Path.of(System.getProperty("smelter.header", "../native/include/smelter.h")).toAbsolutePath();
    private static final Path GENERATED_INFO =
            HEADER.getParent().getParent().getParent().resolve("java/src/main/java/dev/smelter/ffi/GENERATED.txt");

    @Test
    void headerHashMatchesTheOneTheBindingsWereGeneratedFrom() throws Exception {
        String recorded = Files.readAllLines(GENERATED_INFO).stream()
                .filter(l -> l.startsWith("header-sha256: "))
                .map(l -> l.substring("header-sha256: ".length()).trim())
                .findFirst()
                .orElseThrow(() -> new AssertionError("no header-sha256 line in " + GENERATED_INFO));
        String actual = HexFormat.of().formatHex(MessageDigest.getInstance("SHA-256").digest(Files.readAllBytes(HEADER)));
        assertEquals(recorded, actual, HEADER + " changed since the bindings were generated: run scripts/regen-bindings.sh"
                + " (jextract on PATH) and commit the result");
    }

    @Test
    void everyExportedFunctionHasABinding() throws IOException {
        Set<String> declared = exportedFunctions(Files.readString(HEADER));
        assertFalse(declared.isEmpty(), "found no SMELTER_API functions in " + HEADER);
        Set<String> bound = Arrays.stream(smelter_h.class.getMethods())
                .filter(m -> Modifier.isStatic(m.getModifiers()))
                .map(Method::getName)
                .collect(Collectors.toCollection(TreeSet::new));
        List<String> missing = declared.stream().filter(f -> !bound.contains(f)).toList();
        assertTrue(missing.isEmpty(), "functions in smelter.h without a binding: " + missing);
    }

    @Test
    void headerParserSeesKnownFunctions() {
        // Guards the parser above: a broken regex would make the previous test pass vacuously.
        Set<String> found = exportedFunctions("SMELTER_API smelter_status smelter_merge(smelter_context *ctx,\n"
                + "SMELTER_API const char *smelter_last_error(void);\nSMELTER_API void smelter_merge_params_init(x);");
        assertEquals(Set.of("smelter_merge", "smelter_last_error", "smelter_merge_params_init"), found);
    }

    static Set<String> exportedFunctions(String header) {
        Matcher m = Pattern.compile("SMELTER_API\\s+[\\w\\s\\*]*?\\b(smelter_\\w+)\\s*\\(").matcher(header);
        Set<String> names = new TreeSet<>();
        while (m.find()) names.add(m.group(1));
        return names;
    }
}
