package dev.smelter.config;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import com.fasterxml.jackson.databind.node.TextNode;
import com.fasterxml.jackson.dataformat.yaml.YAMLFactory;
import com.fasterxml.jackson.dataformat.yaml.YAMLGenerator;
import com.fasterxml.jackson.databind.ObjectMapper;
import dev.smelter.io.HubCache;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.regex.Pattern;

/**
 * A config of several YAML documents, as mergekit-multi runs them: each document is a merge; a document with
 * {@code name: NAME} is an intermediate merge that later documents use as a model ({@code model: NAME},
 * {@code base_model: NAME}, {@code NAME+lora}), and the one without a name is the final merge, written to the
 * command's output. Documents run in dependency order (file order where free); each intermediate is kept only until
 * the last document that uses it has run. Documents the final merge does not need are left out with a warning.
 *
 * <p>With every document named, the one no other document uses is the final merge (mergekit-multi writes every named
 * merge to its intermediate folder; Smelter writes one output).
 */
public final class MultiConfig {
    /** One merge of the file: its name (null for the final, unnamed one), its mapping without {@code name}. */
    public record Document(String name, int position, ObjectNode root, Set<String> uses) {
        /** "document 2 (name: merged-a)", for messages. */
        public String describe() {
            return "document " + (position + 1) + (name == null ? "" : " (name: " + name + ")");
        }

        /** The document as YAML text (for the model card and mergekit_config.yml). */
        public String yaml() {
            try {
                return YAML.writeValueAsString(root);
            } catch (IOException e) {
                return root.toString();
            }
        }
    }

    private static final Pattern NAME = Pattern.compile("[A-Za-z0-9][A-Za-z0-9._-]*");
    private static final ObjectMapper YAML = new ObjectMapper(new YAMLFactory()
            .disable(YAMLGenerator.Feature.WRITE_DOC_START_MARKER).enable(YAMLGenerator.Feature.MINIMIZE_QUOTES));

    private final Path file;
    private final List<Document> order;
    private final List<String> warnings;

    private MultiConfig(Path file, List<Document> order, List<String> warnings) {
        this.file = file;
        this.order = order;
        this.warnings = warnings;
    }

    /** The number of YAML documents in {@code file} (0 for an empty file); a YAML error is a ConfigException. */
    public static int documentCount(Path file) throws IOException, ConfigException {
        return documents(file).size();
    }

    private static List<JsonNode> documents(Path file) throws IOException, ConfigException {
        if (Files.isDirectory(file)) throw new ConfigException(file + " is a directory, not a config file");
        if (!Files.exists(file)) throw new ConfigException("config file " + file + " does not exist");
        try {
            return YamlReader.readAll(Files.readString(file));
        } catch (ConfigException e) {
            throw new ConfigException(file + ": " + e.getMessage());
        } catch (IOException | RuntimeException e) {
            throw new ConfigException(file + ": not valid YAML: " + e.getMessage());
        }
    }

    /**
     * Reads a multi-document config: names, references between documents and their order. Each document is also
     * parsed as a merge (paths unchecked) so that a mistake in the last one fails before the first runs.
     */
    public static MultiConfig load(Path file) throws IOException, ConfigException {
        List<JsonNode> docs = documents(file);
        List<Document> all = new ArrayList<>();
        Map<String, Document> byName = new LinkedHashMap<>();
        Document unnamed = null;
        for (int i = 0; i < docs.size(); i++) {
            JsonNode d = docs.get(i);
            String at = file + ": document " + (i + 1);
            if (d == null || !d.isObject()) throw new ConfigException(at + " must be a YAML mapping (a merge config)");
            ObjectNode root = ((ObjectNode) d).deepCopy();
            String name = null;
            if (root.has("name")) {
                JsonNode n = root.remove("name");
                if (!n.isValueNode() || !NAME.matcher(n.asText()).matches() || n.asText().contains(".."))
                    throw new ConfigException(at + ": name '" + n.asText() + "' must be a simple name (letters, digits, "
                            + "'.', '_', '-'): it names the intermediate merge's folder and the models that use it");
                name = n.asText();
                if (byName.containsKey(name))
                    throw new ConfigException(at + ": name '" + name + "' is also " + byName.get(name).describe()
                            + "; each intermediate merge needs its own name");
            } else if (unnamed != null) {
                throw new ConfigException(at + " has no name, and neither has " + unnamed.describe() + ": only the "
                        + "final merge is unnamed (as mergekit-multi takes it); name the intermediate ones");
            }
            Document doc = new Document(name, i, root, new LinkedHashSet<>());
            all.add(doc);
            if (name != null) byName.put(name, doc);
            else unnamed = doc;
        }
        for (Document d : all) {
            for (JsonNode ref : references(d.root())) {
                String base = referencedName(ref.asText());
                if (byName.containsKey(base)) {
                    if (base.equals(d.name()))
                        throw new ConfigException(file + ": " + d.describe() + " uses its own result '" + base + "' as a model");
                    d.uses().add(base);
                }
            }
        }
        Document last = unnamed;
        if (last == null) {
            Set<String> used = new LinkedHashSet<>();
            for (Document d : all) used.addAll(d.uses());
            List<Document> sinks = all.stream().filter(d -> !used.contains(d.name())).toList();
            if (sinks.size() != 1)
                throw new ConfigException(file + ": every document is named, and " + (sinks.isEmpty() ? "each is used by "
                        + "another (a cycle)" : sinks.size() + " are used by no other (" + String.join(", ",
                                sinks.stream().map(Document::name).toList()) + ")") + "; leave the name out of the final "
                        + "merge, whose result is the output");
            last = sinks.get(0);
        }
        // Depth-first from the final merge: dependencies first, in file order; a cycle is named.
        List<Document> order = new ArrayList<>();
        visit(last, byName, order, new ArrayList<>(), file);
        List<String> warnings = new ArrayList<>();
        for (Document d : all)
            if (!order.contains(d))
                warnings.add(d.describe() + " is not used by the final merge and is left out");
        for (Document d : order) {
            try {
                MergeConfig.parse(substituted(d, byName.keySet(), name -> Path.of("/intermediate").resolve(name)),
                        file.toAbsolutePath().getParent(), null);
            } catch (ConfigException e) {
                throw new ConfigException(file + ": " + d.describe() + ": " + e.getMessage());
            }
        }
        return new MultiConfig(file, List.copyOf(order), List.copyOf(warnings));
    }

    private static void visit(Document d, Map<String, Document> byName, List<Document> order, List<String> path,
            Path file) throws ConfigException {
        if (order.contains(d)) return;
        if (d.name() != null && path.contains(d.name())) {
            List<String> cycle = new ArrayList<>(path.subList(path.indexOf(d.name()), path.size()));
            cycle.add(d.name());
            throw new ConfigException(file + ": the documents use each other in a cycle: " + String.join(" -> ", cycle));
        }
        if (d.name() != null) path.add(d.name());
        List<Document> deps = d.uses().stream().map(byName::get)
                .sorted(java.util.Comparator.comparingInt(Document::position)).toList();
        for (Document dep : deps) visit(dep, byName, order, path, file);
        if (d.name() != null) path.remove(path.size() - 1);
        order.add(d);
    }

    /** Where a document names a model: a text value under {@code key} of {@code holder}. */
    private record Slot(ObjectNode holder, String key) {}

    /**
     * The model references of a document: base_model, models[].model and .fisher, slices[].sources[].model, and the
     * tokenizer's model sources (tokenizer_source, tokenizer.source, tokenizer.tokens.*.source and its model), all of
     * which mergekit-multi replaces.
     */
    private static List<Slot> slots(ObjectNode root) {
        List<ObjectNode> holders = new ArrayList<>();
        holders.add(root);
        for (JsonNode m : root.path("models")) if (m.isObject()) holders.add((ObjectNode) m);
        for (JsonNode s : root.path("slices"))
            for (JsonNode src : s.path("sources")) if (src.isObject()) holders.add((ObjectNode) src);
        List<Slot> slots = new ArrayList<>();
        for (ObjectNode h : holders)
            for (String key : new String[] {"base_model", "model", "fisher"})
                if (h.path(key).isTextual()) slots.add(new Slot(h, key));
        if (isModelSource(root.path("tokenizer_source"))) slots.add(new Slot(root, "tokenizer_source"));
        if (root.path("tokenizer").isObject()) {
            ObjectNode tokenizer = (ObjectNode) root.get("tokenizer");
            if (isModelSource(tokenizer.path("source"))) slots.add(new Slot(tokenizer, "source"));
            for (JsonNode t : tokenizer.path("tokens")) {
                if (!t.isObject()) continue;
                if (t.path("source").isTextual()) slots.add(new Slot((ObjectNode) t, "source"));
                else if (t.path("source").path("model").isTextual()) slots.add(new Slot((ObjectNode) t.get("source"), "model"));
            }
        }
        return slots;
    }

    /** A tokenizer source that names a model (not {@code base} or {@code union}). */
    private static boolean isModelSource(JsonNode n) {
        return n.isTextual() && !n.asText().equals("base") && !n.asText().equals("union");
    }

    private static List<JsonNode> references(ObjectNode root) {
        return slots(root).stream().map(s -> s.holder().get(s.key())).toList();
    }

    /** The model part of a reference ({@code NAME}, {@code NAME@revision}, {@code NAME+lora}). */
    private static String referencedName(String ref) {
        String model = ref.split("\\+", -1)[0];
        int at = model.indexOf('@');
        return at < 0 ? model : model.substring(0, at);
    }

    /** {@code d}'s mapping with each reference to an intermediate merge replaced by {@code where.apply(name)}. */
    private static ObjectNode substituted(Document d, Set<String> names, java.util.function.Function<String, Path> where) {
        ObjectNode copy = d.root().deepCopy();
        for (Slot s : slots(copy)) {
            String ref = s.holder().get(s.key()).asText();
            String name = referencedName(ref);
            if (!names.contains(name)) continue;
            int plus = ref.indexOf('+');
            s.holder().set(s.key(), new TextNode(where.apply(name).toString() + (plus < 0 ? "" : ref.substring(plus))));
        }
        return copy;
    }

    /** The documents to run, in order: every intermediate merge before the documents that use it; the final last. */
    public List<Document> order() {
        return order;
    }

    public List<String> warnings() {
        return warnings;
    }

    /**
     * The merge of {@code d}, its references to intermediate merges replaced by their folders under {@code workDir}
     * (which exist by now); other paths resolved as {@link MergeConfig#load(Path, Path, HubCache)} resolves them.
     */
    public MergeConfig config(Document d, Path intermediates, Path workDir, HubCache hubCache) throws ConfigException {
        Set<String> names = new LinkedHashSet<>();
        for (Document o : order) if (o.name() != null) names.add(o.name());
        try {
            return MergeConfig.parse(substituted(d, names, intermediates::resolve), file.toAbsolutePath().getParent(),
                    workDir.toAbsolutePath(), hubCache);
        } catch (ConfigException e) {
            throw new ConfigException(file + ": " + d.describe() + ": " + e.getMessage());
        }
    }

    /** The position in {@link #order()} of the last document that uses intermediate {@code name}. */
    public int lastUse(String name) {
        int last = -1;
        for (int i = 0; i < order.size(); i++) if (order.get(i).uses().contains(name)) last = i;
        return last;
    }
}
