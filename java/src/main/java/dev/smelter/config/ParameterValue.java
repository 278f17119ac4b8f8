package dev.smelter.config;

import com.fasterxml.jackson.databind.JsonNode;
import java.util.ArrayList;
import java.util.List;

/**
 * A mergekit parameter value: a number, a gradient (a list of numbers interpolated linearly over
 * the layers), or a list of conditions ({@code {filter: substring, value: V}}, the first whose
 * filter occurs in the tensor name wins; an entry without filter, or with filter {@code "*"}, matches
 * every tensor). A list without such a catch-all has no value for a tensor no filter matches: as in
 * mergekit ({@code ConfigReader.parameter}), the next level is asked then, a model's value falling back to
 * the top-level {@code parameters} ({@link Fallback}), and those to the method's default.
 */
public sealed interface ParameterValue {
    /** The value for a tensor, or null where a list of conditions has none for it (mergekit's None). */
    Double lookup(String tensorName, int layer, int layerCount);

    /**
     * The value for a tensor; IllegalArgumentException where there is none (a list of conditions without a
     * catch-all that no filter matches). {@code layer} is its layer index (-1 for non-layer tensors).
     */
    default double resolve(String tensorName, int layer, int layerCount) {
        Double v = lookup(tensorName, layer, layerCount);
        if (v == null) throw new IllegalArgumentException("no filter matches tensor " + tensorName);
        return v;
    }

    /** The value for a tensor, or {@code dflt} where there is none. */
    default double resolveOr(String tensorName, int layer, int layerCount, double dflt) {
        Double v = lookup(tensorName, layer, layerCount);
        return v == null ? dflt : v;
    }

    /** Whether some tensor may have no value here (a list of conditions without a catch-all). */
    default boolean mayMiss() {
        return switch (this) {
            case Constant c -> false;
            case Gradient g -> false;
            case Conditional c -> {
                for (int i = 0; i < c.filters().size(); i++)
                    if (Conditional.matchesAll(c.filters().get(i))) yield c.values().get(i).mayMiss();
                yield true;
            }
            case Fallback f -> f.first().mayMiss() && f.then().mayMiss();
        };
    }

    /** {@code value}, or where it may have no value for some tensor, that falling back to {@code then}. */
    static ParameterValue orElse(ParameterValue value, ParameterValue then) {
        return value.mayMiss() && then != null ? new Fallback(value, then) : value;
    }

    /**
     * Every value written in the config (a gradient's points, each condition's values): a tensor's value lies
     * between them, so range checks on these hold for every tensor.
     */
    default java.util.stream.DoubleStream written() {
        return switch (this) {
            case Constant c -> java.util.stream.DoubleStream.of(c.value());
            case Gradient g -> java.util.Arrays.stream(g.values());
            case Conditional c -> c.values().stream().flatMapToDouble(ParameterValue::written);
            case Fallback f -> java.util.stream.DoubleStream.concat(f.first().written(), f.then().written());
        };
    }

    record Constant(double value) implements ParameterValue {
        @Override
        public Double lookup(String tensorName, int layer, int layerCount) {
            return value;
        }
    }

    /** A model's value, and where it has none for a tensor, the top-level one (mergekit's order of lookup). */
    record Fallback(ParameterValue first, ParameterValue then) implements ParameterValue {
        @Override
        public Double lookup(String tensorName, int layer, int layerCount) {
            Double v = first.lookup(tensorName, layer, layerCount);
            return v != null ? v : then.lookup(tensorName, layer, layerCount);
        }
    }

    /**
     * Values at evenly spaced points from the first to the last layer, linearly interpolated (mergekit's
     * gradients), evaluated where mergekit's planner ({@code plan.py}) evaluates them: layer i of n at
     * {@code t = i / (n - 1)}, the only layer of a one-layer model at t = 1, and every tensor outside the layers
     * (embeddings, final norm, lm_head) at t = 0. The interpolation is mergekit's {@code evaluate_setting}:
     * {@code (1 - frac) v[i0] + frac v[i1]} in double.
     */
    record Gradient(double[] values) implements ParameterValue {
        @Override
        public Double lookup(String tensorName, int layer, int layerCount) {
            double t = layer < 0 ? 0.0 : layerCount <= 1 ? 1.0 : (double) layer / (layerCount - 1);
            double scaled = t * (values.length - 1);
            int i0 = (int) scaled, i1 = Math.min(values.length - 1, i0 + 1);
            double frac = scaled - i0;
            return (1 - frac) * values[i0] + frac * values[i1];
        }
    }

    /**
     * mergekit's list of conditions: the first entry whose filter is absent, {@code "*"} or a substring of the
     * tensor name gives the value (which may itself have none); no match: no value.
     */
    record Conditional(List<String> filters, List<ParameterValue> values) implements ParameterValue {
        @Override
        public Double lookup(String tensorName, int layer, int layerCount) {
            for (int i = 0; i < filters.size(); i++) {
                String f = filters.get(i);
                if (matchesAll(f) || tensorName.contains(f)) return values.get(i).lookup(tensorName, layer, layerCount);
            }
            return null;
        }

        static boolean matchesAll(String filter) {
            return filter == null || filter.equals("*");
        }
    }

    /** Parses a YAML node; {@code where} names it in errors ("models[1].parameters.density"). */
    static ParameterValue parse(JsonNode node, String where) throws ConfigException {
        if (node.isNumber()) return new Constant(node.doubleValue());
        if (node.isBoolean()) return new Constant(node.booleanValue() ? 1 : 0);
        if (node.isArray() && node.size() > 0 && node.get(0).isNumber()) {
            double[] v = new double[node.size()];
            for (int i = 0; i < v.length; i++) {
                if (!node.get(i).isNumber()) throw new ConfigException(where + "[" + i + "] is not a number");
                v[i] = node.get(i).doubleValue();
            }
            return new Gradient(v);
        }
        if (node.isArray() && node.size() > 0) {
            List<String> filters = new ArrayList<>();
            List<ParameterValue> values = new ArrayList<>();
            for (int i = 0; i < node.size(); i++) {
                JsonNode c = node.get(i);
                String at = where + "[" + i + "]";
                if (!c.isObject() || !c.has("value"))
                    throw new ConfigException(at + " must be {filter: ..., value: ...} or a number");
                for (var it = c.fieldNames(); it.hasNext(); ) {
                    String k = it.next();
                    if (!k.equals("filter") && !k.equals("value"))
                        throw new ConfigException(at + " has unknown key '" + k + "' (expected filter, value)");
                }
                String filter = c.has("filter") ? c.get("filter").asText() : null;
                filters.add(filter);
                values.add(parse(c.get("value"), at + ".value"));
            }
            return new Conditional(filters, values);
        }
        throw new ConfigException(where + " must be a number, a list of numbers (gradient) or a list of "
                + "{filter, value} conditions, got: " + node);
    }
}
