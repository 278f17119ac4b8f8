package dev.smelter.merge;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import dev.smelter.config.SweepGrid;
import dev.smelter.io.AtomicFile;
import java.io.IOException;
import java.io.OutputStreamWriter;
import java.io.PrintWriter;
import java.io.Writer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;

/**
 * The result files of a sweep: {@code configs.csv} (one row per configuration: its values, time and whole-model
 * statistics), {@code sweep.csv} (with statistics: one row per configuration and layer) and {@code sweep.json}
 * (everything, including the timings and the sequential comparison). Numbers are written exactly (shortest
 * round-trip decimal); a quantity that is undefined (a ratio over zero elements) is empty in CSV, null in JSON.
 */
public final class SweepReport {
    public static final String CONFIGS_CSV = "configs.csv", STATS_CSV = "sweep.csv", JSON = "sweep.json";

    private SweepReport() {}

    static void write(Path dir, SweepRunner.Summary s, SweepGrid grid) throws IOException {
        List<SweepGrid.Axis> axes = grid.axes();
        String axisColumns = String.join(",", axes.stream().map(SweepGrid.Axis::name).toList());
        AtomicFile.write(dir.resolve(CONFIGS_CSV), out -> csv(out, w -> {
            w.println("config," + axisColumns + ",seconds,sequential_seconds,output,delta_norm,base_norm,"
                    + "relative_delta_norm,kept_fraction,sign_agreement,warnings");
            for (int c = 0; c < s.results().size(); c++) {
                SweepRunner.ConfigResult r = s.results().get(c);
                SweepRunner.LayerStats m = r.model();
                w.println(String.join(",", r.configuration().name(), values(r), num(r.seconds()),
                        s.sequential() == null ? "" : num(s.sequential().perConfiguration().get(c)),
                        r.output() == null ? "" : r.output().getFileName().toString(),
                        m == null ? "" : num(m.deltaNorm()), m == null ? "" : num(m.baseNorm()),
                        m == null ? "" : num(m.relativeDeltaNorm()), m == null ? "" : num(m.keptFraction()),
                        m == null ? "" : num(m.signAgreement()), Integer.toString(r.warnings().size())));
            }
        }));
        if (s.statsMethod() != null)
            AtomicFile.write(dir.resolve(STATS_CSV), out -> csv(out, w -> {
                w.println("config," + axisColumns + ",layer,elements,delta_norm,base_norm,relative_delta_norm,"
                        + "kept_fraction,sign_agreement");
                for (SweepRunner.ConfigResult r : s.results())
                    for (SweepRunner.LayerStats l : r.layers())
                        w.println(String.join(",", r.configuration().name(), values(r), l.layer(),
                                Long.toString(l.elements()), num(l.deltaNorm()), num(l.baseNorm()),
                                num(l.relativeDeltaNorm()), num(l.keptFraction()), num(l.signAgreement())));
            }));
        ObjectMapper json = new ObjectMapper();
        ObjectNode root = json(json, s, grid);
        AtomicFile.write(dir.resolve(JSON), out -> json.writerWithDefaultPrettyPrinter().writeValue(out, root));
    }

    static ObjectNode json(ObjectMapper json, SweepRunner.Summary s, SweepGrid grid) {
        ObjectNode root = json.createObjectNode();
        SweepRunner.Configuration first = s.results().get(0).configuration();
        root.put("method", first.config().method().mergekitName());
        root.put("device", s.device());
        root.put("checkpoints", s.plan().bytesWritten() > 0);
        root.put("statistics", s.statsMethod());
        ArrayNode axes = root.putArray("axes");
        for (SweepGrid.Axis a : grid.axes()) {
            ObjectNode o = axes.addObject();
            o.put("name", a.name());
            ArrayNode v = o.putArray("values");
            for (SweepGrid.Value x : a.values()) v.add(x.value());
        }
        ObjectNode timing = root.putObject("timing");
        int n = s.results().size();
        timing.put("configurations", n);
        timing.put("seconds", s.seconds());
        if (s.cpuSeconds() >= 0) timing.put("cpu_seconds", s.cpuSeconds());
        timing.put("seconds_per_configuration", s.secondsPerConfiguration());
        timing.put("shared_seconds", s.sharedSeconds());
        timing.put("configuration_seconds", s.results().stream().mapToDouble(SweepRunner.ConfigResult::seconds).sum());
        if (s.sequential() != null) {
            ObjectNode q = timing.putObject("sequential");
            q.put("what", "each configuration merged on its own (CheckpointMerger, as smelter merge, in this process), "
                    + "writing its checkpoint, after the sweep");
            q.put("seconds", s.sequential().seconds());
            if (s.sequential().cpuSeconds() >= 0) q.put("cpu_seconds", s.sequential().cpuSeconds());
            q.put("seconds_per_configuration", s.sequential().seconds() / n);
            q.put("speedup", s.sequential().seconds() / s.seconds());
            if (s.sequential().identical() != null) q.put("identical", s.sequential().identical());
            ArrayNode d = q.putArray("differences");
            s.sequential().differences().forEach(d::add);
        }
        root.put("bytes_read", s.plan().bytesRead());
        root.put("bytes_written", s.plan().bytesWritten());
        root.put("peak_host_buffer_bytes", s.plan().peakHostBytes());
        if (s.peakAnonymousBytes() >= 0) root.put("peak_anonymous_bytes", s.peakAnonymousBytes());
        ArrayNode configs = root.putArray("configurations");
        for (int c = 0; c < n; c++) {
            SweepRunner.ConfigResult r = s.results().get(c);
            ObjectNode o = configs.addObject();
            o.put("name", r.configuration().name());
            ObjectNode p = o.putObject("parameters");
            for (Map.Entry<String, Double> e : r.configuration().point().parameters().entrySet())
                p.put(e.getKey(), e.getValue());
            if (r.output() != null) o.put("output", r.output().getFileName().toString());
            o.put("seconds", r.seconds());
            if (s.sequential() != null) o.put("sequential_seconds", s.sequential().perConfiguration().get(c));
            ArrayNode w = o.putArray("warnings");
            r.warnings().forEach(w::add);
            ArrayNode layers = o.putArray("layers");
            for (SweepRunner.LayerStats l : r.layers()) {
                ObjectNode x = layers.addObject();
                x.put("layer", l.layer());
                x.put("elements", l.elements());
                put(x, "delta_norm", l.deltaNorm());
                put(x, "base_norm", l.baseNorm());
                put(x, "relative_delta_norm", l.relativeDeltaNorm());
                put(x, "kept_fraction", l.keptFraction());
                put(x, "sign_agreement", l.signAgreement());
                ArrayNode per = x.putArray("sign_agreement_per_model");
                for (int i = 0; i < l.agreeing().length; i++) {
                    double v = l.signAgreement(i);
                    if (Double.isFinite(v)) per.add(v);
                    else per.addNull();
                }
            }
        }
        return root;
    }

    private static void put(ObjectNode o, String key, double v) {
        if (Double.isFinite(v)) o.put(key, v);
        else o.putNull(key);
    }

    private static String values(SweepRunner.ConfigResult r) {
        return String.join(",", r.configuration().point().values().stream().map(SweepGrid.Value::text).toList());
    }

    private static String num(double v) {
        return Double.isFinite(v) ? Double.toString(v) : "";
    }

    private interface Rows {
        void write(PrintWriter w);
    }

    private static void csv(java.io.OutputStream out, Rows rows) throws IOException {
        Writer writer = new OutputStreamWriter(out, StandardCharsets.UTF_8);
        PrintWriter w = new PrintWriter(writer);
        rows.write(w);
        w.flush();
        if (w.checkError()) throw new IOException("cannot write CSV");
    }
}
