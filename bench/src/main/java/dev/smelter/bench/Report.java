package dev.smelter.bench;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.io.PrintStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Objects;
import java.util.Optional;
import java.util.TreeMap;
import java.util.function.Predicate;

/**
 * Turns JMH JSON results ({@code -rf json}) and, optionally, {@code torch_merge.py}'s JSON into
 * Markdown tables: GB/s of minimal bytes next to the copy bandwidth measured in the same results,
 * GFLOP/s for CKA, call overheads, speedups over PyTorch, and the performance targets.
 *
 * <pre>
 * java -cp bench/target/benchmarks.jar dev.smelter.bench.Report [--torch torch.json] jmh.json...
 * </pre>
 */
public final class Report {
    /** A CUDA merge of the task-arithmetic family reaches this share of the device copy. */
    static final double CUDA_TARGET = 0.85;
    /** A CPU merge reaches this share of the CPU copy (on 2 cores). */
    static final double CPU_TARGET = 0.70;
    /** Speedups over the PyTorch (mergekit) implementation, N=4 bf16 tensors of 256Mi elements. */
    static final Map<String, Double> TORCH_SPEEDUP = Map.of("ties", 15.0, "dare", 10.0, "dare_l1", 10.0, "ta", 4.0);
    /** Smelter's feature CKA may take at most this multiple of torch's time. */
    static final double CKA_SLOWDOWN = 1.5;

    /** One JMH result: benchmark class and method, parameters, seconds per operation. */
    record Row(String bench, String op, Map<String, String> params, double seconds, double error) {
        String p(String name) {
            return params.getOrDefault(name, "");
        }

        String backend() {
            if (bench.equals("CopyBenchmark")) return p("copy").equals("cuda") ? "cuda" : "cpu";
            return p("backend").isEmpty() ? "cpu" : p("backend").toLowerCase(Locale.ROOT);
        }

        long elements() {
            return BenchSupport.parseCount(p("elements"));
        }

        int dtypeSize() {
            return p("dtype").equalsIgnoreCase("F32") ? 4 : 2;
        }
    }

    private final List<Row> rows = new ArrayList<>();
    private final List<JsonNode> torch = new ArrayList<>();
    private JsonNode torchMeta;
    private final PrintStream out;

    Report(PrintStream out) {
        this.out = out;
    }

    public static void main(String[] args) throws IOException {
        Report r = new Report(System.out);
        ObjectMapper json = new ObjectMapper();
        List<String> files = new ArrayList<>();
        for (int i = 0; i < args.length; i++) {
            if (args[i].equals("--torch")) {
                if (i + 1 >= args.length) usage();
                r.addTorch(json.readTree(Path.of(args[++i]).toFile()));
            } else if (args[i].startsWith("-")) {
                usage();
            } else {
                files.add(args[i]);
            }
        }
        if (files.isEmpty() && r.torch.isEmpty()) usage();
        for (String f : files) {
            Path p = Path.of(f);
            if (!Files.isRegularFile(p) || Files.size(p) == 0) {
                System.err.println("report: " + f + " is missing or empty, left out");
                continue;
            }
            r.addJmh(json.readTree(p.toFile()));
        }
        r.print();
    }

    private static void usage() {
        System.err.println("usage: Report [--torch torch.json] jmh-result.json...");
        System.exit(2);
    }

    void addJmh(JsonNode array) {
        for (JsonNode b : array) {
            String[] name = b.path("benchmark").asText().split("\\.");
            if (name.length < 2) continue;
            Map<String, String> params = new TreeMap<>();
            b.path("params").properties().forEach(e -> params.put(e.getKey(), e.getValue().asText()));
            JsonNode m = b.path("primaryMetric");
            double unit = seconds(m.path("scoreUnit").asText());
            double score = m.path("score").asDouble(Double.NaN), err = m.path("scoreError").asDouble(Double.NaN);
            rows.add(new Row(name[name.length - 2], name[name.length - 1], params, score * unit, err * unit));
        }
    }

    void addTorch(JsonNode doc) {
        torchMeta = doc.path("meta");
        for (JsonNode r : doc.path("results")) torch.add(r);
    }

    private static double seconds(String unit) {
        return switch (unit) {
            case "s/op" -> 1;
            case "ms/op" -> 1e-3;
            case "us/op" -> 1e-6;
            case "ns/op" -> 1e-9;
            default -> throw new IllegalArgumentException("unexpected JMH unit " + unit + " (use -bm avgt)");
        };
    }

    // ---- minimal bytes and flops ------------------------------------------------------------

    /** Bytes a merge must move at least: each input read once, the output written once. */
    static long minimalBytes(String method, int models, long elements, int dtypeSize) {
        int tensors = method.equals("linear") ? models + 1 : models + 2;
        return (long) tensors * elements * dtypeSize;
    }

    static long bytesOf(Row r) {
        return switch (r.bench()) {
            case "MergeBenchmark" ->
                    minimalBytes(r.p("method"), Integer.parseInt(r.p("models")), r.elements(), r.dtypeSize());
            case "CopyBenchmark" -> 2 * BenchSupport.parseCount(r.p("bytes"));
            case "TopKBenchmark" -> r.elements() * r.dtypeSize();
            default -> 0;
        };
    }

    static double flopsOf(Row r) {
        double rows = BenchSupport.parseCount(r.p("rows")), cols = BenchSupport.parseCount(r.p("cols"));
        return (r.op().equals("feature") ? 3 : 1) * 2 * rows * cols * cols;
    }

    static double gbps(long bytes, double seconds) {
        return bytes / seconds / 1e9;
    }

    /** The copy floor of a backend: the fastest copy at the largest size measured for it. */
    Optional<Row> floor(String backend) {
        List<Row> copies = select(r -> r.bench().equals("CopyBenchmark") && r.backend().equals(backend));
        long largest = copies.stream().mapToLong(Report::bytesOf).max().orElse(0);
        return copies.stream().filter(r -> bytesOf(r) == largest)
                .max(Comparator.comparingDouble(r -> gbps(bytesOf(r), r.seconds())));
    }

    double floorGbps(String backend) {
        return floor(backend).map(r -> gbps(bytesOf(r), r.seconds())).orElse(Double.NaN);
    }

    private List<Row> select(Predicate<Row> p) {
        return rows.stream().filter(p).toList();
    }

    // ---- printing -----------------------------------------------------------------------------

    void print() {
        printCopies();
        printMerges();
        printThresholds();
        printCka();
        printOverhead();
        printTorchMerges();
        printTargets();
    }

    private void table(String title, String... header) {
        out.println();
        out.println("### " + title);
        out.println();
        out.println("| " + String.join(" | ", header) + " |");
        out.println("|" + "---|".repeat(header.length));
    }

    private void line(Object... cells) {
        StringBuilder b = new StringBuilder("|");
        for (Object c : cells) b.append(' ').append(c).append(" |");
        out.println(b);
    }

    static String size(long bytes) {
        if (bytes >= 1L << 30 && bytes % (1L << 30) == 0) return (bytes >> 30) + " GiB";
        if (bytes >= 1L << 20) return fmt(bytes / (double) (1L << 20)) + " MiB";
        if (bytes >= 1L << 10) return fmt(bytes / 1024.0) + " KiB";
        return bytes + " B";
    }

    static String count(long n) {
        if (n >= 1L << 20 && n % (1L << 20) == 0) return (n >> 20) + "Mi";
        if (n >= 1L << 10 && n % (1L << 10) == 0) return (n >> 10) + "Ki";
        return Long.toString(n);
    }

    static String fmt(double v) {
        if (Double.isNaN(v)) return "—";
        double a = Math.abs(v);
        if (a >= 100) return String.format(Locale.ROOT, "%.0f", v);
        if (a >= 10) return String.format(Locale.ROOT, "%.1f", v);
        if (a >= 1) return String.format(Locale.ROOT, "%.2f", v);
        return String.format(Locale.ROOT, "%.3g", v);
    }

    static String ms(Row r) {
        return fmt(r.seconds() * 1e3) + " ± " + fmt(r.error() * 1e3);
    }

    static String pct(double v) {
        return Double.isNaN(v) ? "—" : String.format(Locale.ROOT, "%.0f%%", 100 * v);
    }

    private static final Comparator<Row> ORDER = Comparator.comparing(Row::backend)
            .thenComparing(r -> methodRank(r.p("method")))
            .thenComparing(r -> r.p("models").isEmpty() ? 0 : Integer.parseInt(r.p("models")))
            .thenComparing(r -> r.p("dtype"))
            .thenComparingLong(r -> r.p("elements").isEmpty() ? 0 : r.elements());

    private static int methodRank(String m) {
        int i = List.of("linear", "ta", "ties", "ties_global", "dare", "dare_l1").indexOf(m);
        return i < 0 ? 99 : i;
    }

    private void printCopies() {
        List<Row> copies = select(r -> r.bench().equals("CopyBenchmark"));
        if (copies.isEmpty()) return;
        table("Copy bandwidth (the floor; GB/s of bytes read + written)", "backend", "copy", "size", "ms/op", "GB/s");
        for (Row r : copies.stream().sorted(Comparator.comparing(Row::backend).thenComparing(r -> r.p("copy"))
                .thenComparingLong(Report::bytesOf)).toList())
            line(r.backend(), r.p("copy"), size(bytesOf(r) / 2), ms(r), fmt(gbps(bytesOf(r), r.seconds())));
        out.println();
        for (String b : List.of("cpu", "cuda"))
            floor(b).ifPresent(r -> out.println("Floor " + b + ": " + fmt(gbps(bytesOf(r), r.seconds())) + " GB/s ("
                    + r.p("copy") + " copy of " + size(bytesOf(r) / 2) + ")."));
    }

    private void printMerges() {
        List<Row> merges = select(r -> r.bench().equals("MergeBenchmark"));
        if (merges.isEmpty()) return;
        table("Merges (GB/s of minimal bytes; % of the same backend's copy)", "backend", "method", "N", "dtype",
                "elements", "tensor", "ms/op", "GB/s", "% of copy");
        for (Row r : merges.stream().sorted(ORDER).toList()) {
            double g = gbps(bytesOf(r), r.seconds());
            line(r.backend(), r.p("method"), r.p("models"), r.p("dtype"), count(r.elements()),
                    size(r.elements() * r.dtypeSize()), ms(r), fmt(g), pct(g / floorGbps(r.backend())));
        }
    }

    private Optional<JsonNode> torchResult(Predicate<JsonNode> p) {
        return torch.stream().filter(t -> !t.has("error")).filter(p).findFirst();
    }

    private static boolean sameDtype(JsonNode t, Row r) {
        return t.path("dtype").asText().equalsIgnoreCase(r.p("dtype"));
    }

    private void printThresholds() {
        List<Row> topk = select(r -> r.bench().equals("TopKBenchmark"));
        if (topk.isEmpty()) return;
        table("Exact top-k threshold (k-th largest |x|; GB/s of the tensor read once)", "backend", "dtype",
                "elements", "density", "ms/op", "GB/s", "% of copy", "torch.kthvalue ms", "torch.topk ms",
                "speedup vs faster torch");
        for (Row r : topk.stream().sorted(ORDER).toList()) {
            double g = gbps(bytesOf(r), r.seconds());
            double kth = torchMs("kthvalue", r), top = torchMs("topk", r);
            double best = Double.isNaN(kth) ? top : Double.isNaN(top) ? kth : Math.min(kth, top);
            line(r.backend(), r.p("dtype"), count(r.elements()), r.p("density"), ms(r), fmt(g),
                    pct(g / floorGbps(r.backend())), fmt(kth), fmt(top),
                    Double.isNaN(best) ? "—" : fmt(best / (r.seconds() * 1e3)) + "x");
        }
    }

    private double torchMs(String op, Row r) {
        if (!r.backend().equals(torchDevice())) return Double.NaN;
        return torchResult(t -> t.path("kind").asText().equals("threshold") && t.path("op").asText().equals(op)
                && sameDtype(t, r) && t.path("elements").asLong() == r.elements())
                .map(t -> t.path("ms").asDouble()).orElse(Double.NaN);
    }

    private String torchDevice() {
        return torchMeta == null ? "" : torchMeta.path("device").asText().startsWith("cuda") ? "cuda" : "cpu";
    }

    private void printCka() {
        List<Row> cka = select(r -> r.bench().equals("CkaBenchmark"));
        if (cka.isEmpty()) return;
        table("Feature-space linear CKA (GFLOP/s: 2 rows cols^2 per product, 3 products per CKA)", "backend",
                "benchmark", "dtype", "rows x cols", "ms/op", "GFLOP/s", "torch ms", "Smelter / torch time");
        for (Row r : cka.stream().sorted(Comparator.comparing(Row::backend).thenComparing(Row::op)
                .thenComparing(r -> r.p("dtype"))).toList()) {
            double t = r.op().equals("feature") ? torchCkaMs(r) : Double.NaN;
            line(r.backend(), r.op(), r.p("dtype"), r.p("rows") + " x " + r.p("cols"), ms(r),
                    fmt(flopsOf(r) / r.seconds() / 1e9), fmt(t),
                    Double.isNaN(t) ? "—" : fmt(r.seconds() * 1e3 / t));
        }
    }

    private double torchCkaMs(Row r) {
        if (!r.backend().equals(torchDevice())) return Double.NaN;
        long rr = BenchSupport.parseCount(r.p("rows")), cc = BenchSupport.parseCount(r.p("cols"));
        return torchResult(t -> t.path("kind").asText().equals("cka") && sameDtype(t, r)
                && t.path("rows").asLong() == rr && t.path("cols").asLong() == cc)
                .map(t -> t.path("ms").asDouble()).orElse(Double.NaN);
    }

    private void printOverhead() {
        List<Row> calls = select(r -> r.bench().equals("OverheadBenchmark"));
        if (calls.isEmpty()) return;
        table("Call overhead on tiny tensors", "backend", "call", "elements", "µs/op");
        for (Row r : calls.stream().sorted(Comparator.comparing(Row::backend).thenComparing(Row::op)).toList())
            line(r.backend(), r.op(), r.op().equals("downcall") ? "—" : r.p("elements"),
                    fmt(r.seconds() * 1e6) + " ± " + fmt(r.error() * 1e6));
    }

    /** The Smelter merge a torch result is compared with (ties_argsort: mergekit's current TIES). */
    private Optional<Row> smelterFor(JsonNode t) {
        String method = t.path("method").asText();
        String m = method.equals("ties_argsort") ? "ties" : method;
        String backend = torchDevice();
        return rows.stream().filter(r -> r.bench().equals("MergeBenchmark") && r.backend().equals(backend)
                && r.p("method").equals(m) && r.p("models").equals(t.path("models").asText()) && sameDtype(t, r)
                && r.elements() == t.path("elements").asLong()).findFirst();
    }

    private void printTorchMerges() {
        List<JsonNode> merges = torch.stream().filter(t -> t.path("kind").asText().equals("merge")).toList();
        if (merges.isEmpty()) return;
        table("Smelter vs PyTorch (mergekit's computation) on " + torchMeta.path("device_name").asText("?"),
                "method", "N", "dtype", "elements", "torch ms", "torch GB/s", "Smelter ms", "speedup", "target");
        for (JsonNode t : merges) {
            String method = t.path("method").asText();
            if (t.has("error")) {
                line(method, t.path("models").asText(), t.path("dtype").asText(),
                        count(t.path("elements").asLong()), "error: " + t.path("error").asText(), "", "", "", "");
                continue;
            }
            Optional<Row> s = smelterFor(t);
            double tm = t.path("ms").asDouble(), sm = s.map(r -> r.seconds() * 1e3).orElse(Double.NaN);
            Double target = method.equals("ties_argsort") ? null : TORCH_SPEEDUP.get(method);
            line(method, t.path("models").asText(), t.path("dtype").asText(), count(t.path("elements").asLong()),
                    fmt(tm), fmt(t.path("gbps").asDouble(Double.NaN)), fmt(sm),
                    Double.isNaN(sm) ? "—" : fmt(tm / sm) + "x",
                    target == null ? "—" : "≥ " + fmt(target) + "x: " + verdict(tm / sm >= target, sm));
        }
        torchResult(t -> t.path("kind").asText().equals("copy")).ifPresent(c -> out.println("\nTorch copy: "
                + fmt(c.path("gbps").asDouble()) + " GB/s (" + size(c.path("bytes").asLong()) + ", read + written)."));
    }

    private static String verdict(boolean met, double measured) {
        return Double.isNaN(measured) ? "not measured" : met ? "met" : "**not met**";
    }

    /** The targets of the performance issue, evaluated at the largest tensors measured. */
    private void printTargets() {
        List<Object[]> lines = new ArrayList<>();
        for (String backend : List.of("cuda", "cpu")) {
            double floor = floorGbps(backend);
            double share = backend.equals("cuda") ? CUDA_TARGET : CPU_TARGET;
            List<Row> merges = select(r -> r.bench().equals("MergeBenchmark") && r.backend().equals(backend)
                    && !r.p("method").equals("linear"));
            if (merges.isEmpty()) continue;
            // per method, N and dtype: the largest tensor size measured
            Map<String, Row> largest = new LinkedHashMap<>();
            for (Row r : merges.stream().sorted(ORDER).toList())
                largest.merge(r.p("method") + "/" + r.p("models") + "/" + r.p("dtype"), r,
                        (a, b) -> b.elements() >= a.elements() ? b : a);
            for (Row r : largest.values()) {
                double s = gbps(bytesOf(r), r.seconds()) / floor;
                lines.add(new Object[] {backend + " " + r.p("method") + " ≥ " + pct(share) + " of copy",
                        "N=" + r.p("models") + " " + r.p("dtype") + " " + count(r.elements()), pct(s),
                        verdict(s >= share, s)});
            }
        }
        for (Row r : select(r -> r.bench().equals("TopKBenchmark") && r.backend().equals("cuda")).stream()
                .sorted(ORDER).toList()) {
            for (String op : List.of("kthvalue", "topk")) {
                double t = torchMs(op, r);
                if (Double.isNaN(t)) continue;
                lines.add(new Object[] {"top-k threshold faster than torch." + op,
                        r.p("dtype") + " " + count(r.elements()), fmt(r.seconds() * 1e3) + " vs " + fmt(t) + " ms",
                        verdict(r.seconds() * 1e3 < t, t)});
            }
        }
        for (JsonNode t : torch.stream().filter(t -> t.path("kind").asText().equals("merge") && !t.has("error"))
                .toList()) {
            Double target = TORCH_SPEEDUP.get(t.path("method").asText());
            if (target == null) continue;
            double sm = smelterFor(t).map(r -> r.seconds() * 1e3).orElse(Double.NaN);
            double sp = t.path("ms").asDouble() / sm;
            lines.add(new Object[] {t.path("method").asText() + " ≥ " + fmt(target) + "x torch",
                    "N=" + t.path("models").asText() + " " + t.path("dtype").asText() + " "
                            + count(t.path("elements").asLong()),
                    Double.isNaN(sm) ? "—" : fmt(sp) + "x", verdict(sp >= target, sm)});
        }
        for (Row r : select(r -> r.bench().equals("CkaBenchmark") && r.op().equals("feature"))) {
            double t = torchCkaMs(r);
            if (Double.isNaN(t)) continue;
            double ratio = r.seconds() * 1e3 / t;
            lines.add(new Object[] {"feature CKA within " + fmt(CKA_SLOWDOWN) + "x of torch",
                    r.backend() + " " + r.p("dtype") + " " + r.p("rows") + " x " + r.p("cols"),
                    fmt(ratio) + "x torch's time", verdict(ratio <= CKA_SLOWDOWN, ratio)});
        }
        if (!lines.isEmpty()) {
            table("Targets (at the largest tensors measured)", "target", "where", "measured", "verdict");
            for (Object[] l : lines) line(l);
        }
        if (Objects.isNull(torchMeta) && select(r -> r.backend().equals("cuda")).isEmpty())
            out.println("\n(No CUDA or PyTorch results in this report: the GPU targets are not evaluated.)");
    }
}
