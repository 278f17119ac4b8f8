package dev.smelter.config;

import dev.smelter.methods.MergeMethods;

import com.fasterxml.jackson.databind.JsonNode;
import java.math.BigDecimal;
import java.math.MathContext;
import java.math.RoundingMode;
import java.util.ArrayList;
import java.util.Collections;
import java.util.HashMap;
import java.util.HashSet;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Set;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * The parameter grid of a sweep: axes, each a method parameter and its values; the configurations are their
 * cartesian product (the first axis varies slowest).
 *
 * <p>An axis is written {@code name=start:stop:step} (stop included when the steps reach it; a last step within
 * 1e-9 steps of it gives the stop itself) or {@code name=v1,v2,...}; values are decimal numbers, or {@code true}/{@code false} for flags. The name
 * is a parameter of the merge method: a global one ({@code lambda}, {@code normalize}, {@code t}, ...), a
 * per-model one ({@code density}, {@code weight}) set for every model, or {@code name@i} for {@code models[i]}
 * only (counted without the base model); {@code seed} sweeps the DARE seed. In a config the grid is
 * {@code smelter: {grid: {density: [0.4, 0.5], lambda: "0.1:0.5:0.1"}}}.
 */
public record SweepGrid(List<Axis> axes) {
    /** The DARE seed, swept like a parameter ({@code smelter.seed} in a config). */
    public static final String SEED = "seed";
    /** More values than this on one axis is a mistake (a step that is too small). */
    public static final int MAX_VALUES = 10_000;

    private static final Pattern NAME = Pattern.compile("([A-Za-z_][A-Za-z0-9_]*)(?:@(\\d+))?");
    private static final double RANGE_TOLERANCE = 1e-9;

    /** One value: the number, and how it is written in configuration names ("0.4", "true"). */
    public record Value(double value, String text) {}

    /** A parameter ({@code model} -1: every model, or a global parameter) and its values. */
    public record Axis(String parameter, int model, List<Value> values) {
        public Axis {
            values = List.copyOf(values);
        }

        /** {@code density}, or {@code density@1} for one model. */
        public String name() {
            return model < 0 ? parameter : parameter + "@" + model;
        }
    }

    /** One configuration of the grid: one value per axis. */
    public record Point(List<Axis> axes, List<Value> values) {
        public Point {
            axes = List.copyOf(axes);
            values = List.copyOf(values);
        }

        /** {@code density=0.4_lambda=0.1}: unique within the grid, usable as a directory name. */
        public String name() {
            StringBuilder b = new StringBuilder();
            for (int i = 0; i < axes.size(); i++) {
                if (i > 0) b.append('_');
                b.append(axes.get(i).name()).append('=').append(values.get(i).text());
            }
            return b.toString();
        }

        /** Axis name to value, in axis order. */
        public Map<String, Double> parameters() {
            Map<String, Double> m = new LinkedHashMap<>();
            for (int i = 0; i < axes.size(); i++) m.put(axes.get(i).name(), values.get(i).value());
            return Collections.unmodifiableMap(m);
        }
    }

    public SweepGrid {
        axes = List.copyOf(axes);
    }

    /** A grid of these axes: at least one, each with at least one value, no name twice. */
    public static SweepGrid of(List<Axis> axes) throws ConfigException {
        if (axes.isEmpty()) throw new ConfigException("the grid has no axes");
        Set<String> names = new HashSet<>();
        for (Axis a : axes) {
            if (!names.add(a.name())) throw new ConfigException("grid axis " + a.name() + " is given twice");
            if (a.values().isEmpty()) throw new ConfigException("grid axis " + a.name() + " has no values");
        }
        SweepGrid g = new SweepGrid(axes);
        g.size();  // refuses a product that overflows
        return g;
    }

    /** Parses {@code name=start:stop:step} or {@code name=v1,v2,...} (the command line's {@code --grid}). */
    public static Axis parseAxis(String spec) throws ConfigException {
        int eq = spec.indexOf('=');
        if (eq < 0)
            throw new ConfigException("grid axis '" + spec + "' must be NAME=START:STOP:STEP or NAME=V1,V2,... "
                    + "(e.g. density=0.4:0.9:0.1, lambda=0.5,1)");
        String name = spec.substring(0, eq).trim();
        return axis(name, values(spec.substring(eq + 1).trim(), "grid axis " + name));
    }

    /** Parses the {@code smelter.grid} mapping of a config: axis name to a list, a range string or a number. */
    public static SweepGrid parse(JsonNode node, String where) throws ConfigException {
        if (node == null || !node.isObject() || node.isEmpty())
            throw new ConfigException(where + " must be a non-empty mapping of parameter to values, e.g. "
                    + "{density: [0.4, 0.5], lambda: \"0.1:0.5:0.1\"}");
        List<Axis> axes = new ArrayList<>();
        for (Iterator<String> it = node.fieldNames(); it.hasNext(); ) {
            String name = it.next();
            JsonNode v = node.get(name);
            String at = where + "." + name;
            List<Value> values = new ArrayList<>();
            if (v.isTextual()) {
                values.addAll(values(v.asText().trim(), at));
            } else if (v.isArray()) {
                if (v.isEmpty()) throw new ConfigException(at + " has no values");
                for (int i = 0; i < v.size(); i++) values.add(scalar(v.get(i), at + "[" + i + "]"));
            } else {
                values.add(scalar(v, at));
            }
            axes.add(axis(name, values));
        }
        return of(axes);
    }

    private static Axis axis(String name, List<Value> values) throws ConfigException {
        Matcher m = NAME.matcher(name);
        if (!m.matches())
            throw new ConfigException("grid axis name '" + name + "' must be a parameter name, or NAME@INDEX for one "
                    + "model (e.g. density@1)");
        Set<Double> seen = new HashSet<>();
        for (Value v : values)
            if (!seen.add(v.value())) throw new ConfigException("grid axis " + name + " lists " + v.text() + " twice");
        int model = m.group(2) == null ? -1 : parseIndex(m.group(2), name);
        return new Axis(m.group(1), model, values);
    }

    private static int parseIndex(String digits, String name) throws ConfigException {
        try {
            return Integer.parseInt(digits);
        } catch (NumberFormatException e) {
            throw new ConfigException("grid axis " + name + ": model index " + digits + " is too large");
        }
    }

    private static Value scalar(JsonNode v, String at) throws ConfigException {
        if (v.isBoolean()) return flag(v.booleanValue());
        if (v.isNumber()) {
            if (!v.isIntegralNumber() && !Double.isFinite(v.doubleValue()))
                throw new ConfigException(at + " is " + v.doubleValue() + "; a grid value must be a finite number");
            BigDecimal d = v.isIntegralNumber() ? new BigDecimal(v.bigIntegerValue()) : BigDecimal.valueOf(v.doubleValue());
            return number(d, at);
        }
        if (v.isTextual()) return text(v.asText().trim(), at);
        throw new ConfigException(at + " must be a number or true/false, got: " + v);
    }

    /** A range {@code a:b:s}, or a comma-separated list. */
    static List<Value> values(String text, String where) throws ConfigException {
        if (text.isEmpty()) throw new ConfigException(where + " has no values");
        if (text.contains(":")) {
            String[] p = text.split(":", -1);
            if (p.length != 3)
                throw new ConfigException(where + ": a range is START:STOP:STEP, got '" + text + "'");
            return range(decimal(p[0], where), decimal(p[1], where), decimal(p[2], where), where);
        }
        List<Value> out = new ArrayList<>();
        for (String s : text.split(",", -1)) {
            if (s.isBlank()) throw new ConfigException(where + ": empty value in '" + text + "'");
            out.add(text(s.trim(), where));
        }
        return out;
    }

    private static List<Value> range(BigDecimal start, BigDecimal stop, BigDecimal step, String where)
            throws ConfigException {
        String written = start.toPlainString() + ":" + stop.toPlainString() + ":" + step.toPlainString();
        if (step.signum() == 0) throw new ConfigException(where + ": the step of " + written + " is 0");
        BigDecimal steps = stop.subtract(start).divide(step, MathContext.DECIMAL64);
        if (steps.signum() < 0)
            throw new ConfigException(where + ": the range " + written + " is empty (the step goes away from the stop)");
        // Inclusive stop: a step count within the tolerance below a whole number reaches it.
        BigDecimal whole = steps.add(BigDecimal.valueOf(RANGE_TOLERANCE)).setScale(0, RoundingMode.FLOOR);
        if (whole.compareTo(BigDecimal.valueOf(MAX_VALUES)) >= 0)
            throw new ConfigException(where + ": the range " + written + " has more than " + MAX_VALUES + " values");
        boolean nearlyReached = whole.compareTo(steps.setScale(0, RoundingMode.FLOOR)) > 0;
        List<Value> out = new ArrayList<>();
        for (int i = 0; i <= whole.intValue(); i++) {
            // The last step that only reaches the stop within the tolerance gives the stop itself.
            boolean last = i == whole.intValue() && nearlyReached;
            out.add(number(last ? stop : start.add(step.multiply(BigDecimal.valueOf(i))), where));
        }
        return out;
    }

    private static Value text(String s, String where) throws ConfigException {
        String l = s.toLowerCase(Locale.ROOT);
        if (l.equals("true") || l.equals("false")) return flag(l.equals("true"));
        return number(decimal(s, where), where);
    }

    private static BigDecimal decimal(String s, String where) throws ConfigException {
        try {
            return new BigDecimal(s.trim());
        } catch (NumberFormatException e) {
            throw new ConfigException(where + ": '" + s.trim() + "' is not a number");
        }
    }

    private static Value number(BigDecimal d, String where) throws ConfigException {
        double v = d.doubleValue();
        if (!Double.isFinite(v)) throw new ConfigException(where + ": " + d + " is out of range");
        String text = d.signum() == 0 ? "0" : d.stripTrailingZeros().toPlainString();
        return new Value(v, text);
    }

    private static Value flag(boolean b) {
        return new Value(b ? 1 : 0, b ? "true" : "false");
    }

    /** Number of configurations (the product of the axis lengths). */
    public int size() {
        long n = 1;
        for (Axis a : axes) {
            n *= a.values().size();
            if (n > Integer.MAX_VALUE) throw new IllegalStateException("the grid has more than 2^31 configurations");
        }
        return (int) n;
    }

    /** Every configuration, the first axis varying slowest. */
    public List<Point> points() {
        List<Point> out = new ArrayList<>();
        int[] at = new int[axes.size()];
        for (int k = 0, n = size(); k < n; k++) {
            List<Value> v = new ArrayList<>();
            for (int i = 0; i < axes.size(); i++) v.add(axes.get(i).values().get(at[i]));
            out.add(new Point(axes, v));
            for (int i = axes.size() - 1; i >= 0; i--) {
                if (++at[i] < axes.get(i).values().size()) break;
                at[i] = 0;
            }
        }
        return out;
    }

    /**
     * Checks that {@code config}'s method has every axis, with values it accepts: densities in (0, 1], flags 0 or
     * 1, whole seeds and iteration counts, model indices that exist.
     */
    public void validate(MergeConfig config) throws ConfigException {
        MergeMethods.Method m = config.method();
        Map<String, Set<Integer>> perModel = new HashMap<>();
        for (Axis a : axes) {
            String at = "grid axis " + a.name();
            if (a.parameter().equals(SEED)) {
                if (m != MergeMethods.Method.DARE_LINEAR && m != MergeMethods.Method.DARE_TIES)
                    throw new ConfigException(at + ": " + m.mergekitName() + " draws no random masks; seed is an "
                            + "axis of dare_linear and dare_ties");
                if (a.model() >= 0) throw new ConfigException(at + ": the seed is one for all models");
                for (Value v : a.values())
                    if (v.value() != Math.rint(v.value()) || Math.abs(v.value()) > 0x1p53)
                        throw new ConfigException(at + ": " + v.text() + " is not a whole number");
                continue;
            }
            MergeMethods.Parameter p = m.parameters().stream().filter(q -> q.name().equals(a.parameter())).findFirst()
                    .orElseThrow(() -> new ConfigException(at + ": merge_method " + m.mergekitName()
                            + " has no parameter '" + a.parameter() + "' (its parameters: " + parameterNames(m) + ")"));
            if (a.model() >= 0 && config.sliced())
                throw new ConfigException(at + ": with slices an axis sets the value of every source and slice; "
                        + "models[" + a.model() + "] names no one source (write " + p.name() + " without @)");
            if (a.model() >= 0) {
                if (!p.perModel())
                    throw new ConfigException(at + ": " + p.name() + " is a global parameter, not one per model");
                if (a.model() >= config.models().size())
                    throw new ConfigException(at + ": there is no models[" + a.model() + "] (the config merges "
                            + config.models().size() + " model" + (config.models().size() == 1 ? "" : "s")
                            + " besides the base, counted from 0)");
            }
            if (p.perModel()) {
                Set<Integer> models = perModel.computeIfAbsent(p.name(), k -> new HashSet<>());
                boolean clash = a.model() < 0 ? !models.isEmpty() : models.contains(-1) || models.contains(a.model());
                if (clash)
                    throw new ConfigException(at + " and another " + p.name() + " axis both set the same model's "
                            + p.name());
                models.add(a.model());
            }
            boolean isFlag = "true".equals(p.defaultValue()) || "false".equals(p.defaultValue());
            for (Value v : a.values()) {
                double x = v.value();
                if (isFlag && x != 0 && x != 1)
                    throw new ConfigException(at + ": " + p.name() + " is true or false (1 or 0), got " + v.text());
                if (!isFlag) MergeConfig.checkRange(at, m, p.name(), new ParameterValue.Constant(x));
            }
        }
    }

    /**
     * A sliced config with this point's values: each axis's parameter is taken out of every slice and source and set
     * at the top level, so the value replaces whatever the config had for it wherever mergekit would look it up.
     */
    private static MergeConfig applyToSlices(MergeConfig config, Point point) {
        Map<String, ParameterValue> global = new LinkedHashMap<>(config.parameters());
        Set<String> names = new HashSet<>();
        long seed = config.seed();
        for (int i = 0; i < point.axes().size(); i++) {
            Axis a = point.axes().get(i);
            double v = point.values().get(i).value();
            if (a.parameter().equals(SEED)) {
                seed = (long) v;
                continue;
            }
            global.put(a.parameter(), new ParameterValue.Constant(v));
            names.add(a.parameter());
        }
        List<SliceDefinition> slices = new ArrayList<>();
        for (SliceDefinition s : config.slices()) {
            List<SliceDefinition.Source> sources = new ArrayList<>();
            for (SliceDefinition.Source x : s.sources())
                sources.add(new SliceDefinition.Source(x.model(), x.start(), x.end(), without(x.parameters(), names)));
            slices.add(new SliceDefinition(List.copyOf(sources), s.baseModel(), without(s.parameters(), names), false));
        }
        return new MergeConfig(config.method(), config.baseModel(), config.models(), global, config.outDType(),
                config.trimScope(), seed, config.warnings(), null, config.computeDType(), List.copyOf(slices), config.baseLora(), config.tokenizer());
    }

    private static Map<String, ParameterValue> without(Map<String, ParameterValue> params, Set<String> names) {
        Map<String, ParameterValue> out = new LinkedHashMap<>(params);
        out.keySet().removeAll(names);
        return out;
    }

    private static String parameterNames(MergeMethods.Method m) {
        List<String> names = new ArrayList<>(m.parameters().stream().map(MergeMethods.Parameter::name).toList());
        if (m == MergeMethods.Method.DARE_LINEAR || m == MergeMethods.Method.DARE_TIES) names.add(SEED);
        return names.isEmpty() ? "none: there is nothing to sweep" : String.join(", ", names);
    }

    /** {@code config} with this point's values: constants replacing whatever the config had for them. */
    public static MergeConfig apply(MergeConfig config, Point point) {
        if (config.sliced()) return applyToSlices(config, point);
        Map<String, ParameterValue> global = new LinkedHashMap<>(config.parameters());
        List<Map<String, ParameterValue>> models = new ArrayList<>();
        for (MergeConfig.ModelEntry e : config.models()) models.add(new LinkedHashMap<>(e.parameters()));
        long seed = config.seed();
        for (int i = 0; i < point.axes().size(); i++) {
            Axis a = point.axes().get(i);
            double v = point.values().get(i).value();
            if (a.parameter().equals(SEED)) {
                seed = (long) v;
                continue;
            }
            boolean perModel = config.method().tensorParameters().contains(a.parameter());
            if (!perModel) {
                global.put(a.parameter(), new ParameterValue.Constant(v));
                continue;
            }
            for (int m = 0; m < models.size(); m++)
                if (a.model() < 0 || a.model() == m) models.get(m).put(a.parameter(), new ParameterValue.Constant(v));
        }
        List<MergeConfig.ModelEntry> entries = new ArrayList<>();
        for (int m = 0; m < models.size(); m++) entries.add(new MergeConfig.ModelEntry(config.models().get(m).path(), models.get(m),
                config.models().get(m).fisher(), config.models().get(m).lora()));
        return config.with(List.copyOf(entries), global, config.trimScope(), seed, null);
    }
}
