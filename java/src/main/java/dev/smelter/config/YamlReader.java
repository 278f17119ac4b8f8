package dev.smelter.config;

import com.fasterxml.jackson.core.JsonToken;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.JsonNodeFactory;
import com.fasterxml.jackson.databind.node.ObjectNode;
import com.fasterxml.jackson.dataformat.yaml.YAMLFactory;
import com.fasterxml.jackson.dataformat.yaml.YAMLParser;
import java.io.IOException;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

/**
 * Reads YAML documents into Jackson trees with anchors and aliases resolved, as mergekit's {@code yaml.safe_load}
 * does ({@code model: *e1} is the node anchored {@code &e1}, not the text "e1"). Jackson's YAML tree reader leaves
 * an alias as its name. The expanded size is bounded, so a "billion laughs" config fails fast instead of
 * exhausting memory.
 */
public final class YamlReader {
    /** Values (scalars, lists, mappings) one config may expand to: far above any merge config. */
    static final long MAX_VALUES = 1_000_000;

    private final YAMLParser parser;
    private final Map<String, JsonNode> anchored = new HashMap<>();
    private final Map<JsonNode, Long> sizes = new java.util.IdentityHashMap<>();
    private long values;

    private YamlReader(YAMLParser parser) {
        this.parser = parser;
    }

    /** Every document of {@code text}, aliases resolved; empty documents are left out. */
    public static List<JsonNode> readAll(String text) throws IOException, ConfigException {
        List<JsonNode> documents = new ArrayList<>();
        try (YAMLParser p = new YAMLFactory().createParser(text)) {
            YamlReader r = new YamlReader(p);
            for (JsonToken t = p.nextToken(); t != null; t = p.nextToken()) {
                JsonNode d = r.value(t);
                if (d != null && !d.isNull()) documents.add(d);
            }
        }
        return documents;
    }

    private JsonNode value(JsonToken t) throws IOException, ConfigException {
        String anchor = parser.getObjectId() instanceof String s ? s : null;
        JsonNode node;
        long size = 1;
        if (t == JsonToken.VALUE_STRING && parser.isCurrentAlias()) {
            String alias = parser.getText();
            JsonNode target = anchored.get(alias);
            if (target == null) throw new ConfigException("YAML alias *" + alias + " names no anchor &" + alias + " before it");
            size = sizes.getOrDefault(target, 1L);
            count(size);
            node = target.deepCopy();
            sizes.put(node, size);
            return node;
        }
        switch (t) {
            case START_OBJECT -> {
                ObjectNode o = JsonNodeFactory.instance.objectNode();
                for (JsonToken k = parser.nextToken(); k != JsonToken.END_OBJECT; k = parser.nextToken()) {
                    String key = parser.currentName();
                    if (o.has(key)) throw new ConfigException("the key '" + key + "' appears twice in one mapping");
                    JsonNode v = value(parser.nextToken());
                    o.set(key, v);
                    size += sizes.getOrDefault(v, 1L);
                }
                node = o;
            }
            case START_ARRAY -> {
                ArrayNode a = JsonNodeFactory.instance.arrayNode();
                for (JsonToken e = parser.nextToken(); e != JsonToken.END_ARRAY; e = parser.nextToken()) {
                    JsonNode v = value(e);
                    a.add(v);
                    size += sizes.getOrDefault(v, 1L);
                }
                node = a;
            }
            case VALUE_NUMBER_INT -> node = JsonNodeFactory.instance.numberNode(parser.getBigIntegerValue());
            case VALUE_NUMBER_FLOAT -> node = JsonNodeFactory.instance.numberNode(floatValue(parser.getText()));
            case VALUE_TRUE, VALUE_FALSE -> node = JsonNodeFactory.instance.booleanNode(t == JsonToken.VALUE_TRUE);
            case VALUE_NULL -> node = JsonNodeFactory.instance.nullNode();
            default -> node = JsonNodeFactory.instance.textNode(parser.getText());
        }
        count(1);
        if (size > 1) sizes.put(node, size);
        if (anchor != null) anchored.put(anchor, node);
        return node;
    }

    /** A YAML float, its special values ({@code .nan}, {@code .inf}, {@code -.inf}) included. */
    private double floatValue(String text) throws IOException {
        return switch (text.toLowerCase(java.util.Locale.ROOT)) {
            case ".nan" -> Double.NaN;
            case ".inf", "+.inf" -> Double.POSITIVE_INFINITY;
            case "-.inf" -> Double.NEGATIVE_INFINITY;
            default -> parser.getDoubleValue();
        };
    }

    private void count(long n) throws ConfigException {
        values += n;
        if (values > MAX_VALUES)
            throw new ConfigException("the YAML expands to more than " + MAX_VALUES + " values (aliases repeating "
                    + "aliases); a merge config is far smaller");
    }
}
