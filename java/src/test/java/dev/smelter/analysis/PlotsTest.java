package dev.smelter.analysis;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.awt.Color;
import java.awt.geom.Rectangle2D;
import java.awt.image.BufferedImage;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.stream.Stream;
import javax.imageio.ImageIO;
import org.jfree.chart.ChartRenderingInfo;
import org.jfree.chart.JFreeChart;
import org.jfree.chart.plot.XYPlot;
import org.jfree.chart.title.LegendTitle;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.function.Executable;
import org.junit.jupiter.api.io.TempDir;

class PlotsTest {
    private static final int ROWS = 7;
    private static final int COLS = 5;
    private static final int W = 520;
    private static final int H = 420;
    private static final List<String> X_TICKS = List.of("c0", "c1", "c2", "c3", "c4");
    private static final List<String> Y_TICKS = List.of("L0", "L1", "L2", "L3", "L4", "L5", "L6");

    @TempDir
    Path dir;

    /** values[r][c] = r * COLS + c: lowest at (0, 0), highest at (ROWS - 1, COLS - 1). */
    private static double[][] gradient() {
        double[][] v = new double[ROWS][COLS];
        for (int r = 0; r < ROWS; r++) {
            for (int c = 0; c < COLS; c++) {
                v[r][c] = r * COLS + c;
            }
        }
        return v;
    }

    /** Pixel centre of cell (row, col), from the data area of the chart laid out at W x H. */
    private static int[] cellCentre(JFreeChart chart, int row, int col) {
        ChartRenderingInfo info = new ChartRenderingInfo();
        Plots.render(chart, W, H, info);
        Rectangle2D area = info.getPlotInfo().getDataArea();
        assertTrue(area.getWidth() > 50 && area.getHeight() > 50, "data area too small: " + area);
        XYPlot plot = chart.getXYPlot();
        double x = plot.getDomainAxis().valueToJava2D(col, area, plot.getDomainAxisEdge());
        double y = plot.getRangeAxis().valueToJava2D(row, area, plot.getRangeAxisEdge());
        return new int[] {(int) Math.floor(x), (int) Math.floor(y)};
    }

    private static Color pixel(BufferedImage image, int[] xy) {
        return new Color(image.getRGB(xy[0], xy[1]), false);
    }

    private static void assertColor(Color expected, Color actual, String what) {
        int d = Math.max(Math.abs(expected.getRed() - actual.getRed()),
                Math.max(Math.abs(expected.getGreen() - actual.getGreen()),
                        Math.abs(expected.getBlue() - actual.getBlue())));
        assertTrue(d <= 2, what + ": expected " + expected + ", got " + actual);
    }

    private static int distance(Color a, Color b) {
        return Math.abs(a.getRed() - b.getRed()) + Math.abs(a.getGreen() - b.getGreen())
                + Math.abs(a.getBlue() - b.getBlue());
    }

    private List<Path> listing() throws IOException {
        try (Stream<Path> s = Files.list(dir)) {
            return s.sorted().toList();
        }
    }

    @Test
    void heatmapColoursCellsByTheScale() throws IOException {
        double[][] v = gradient();
        Path png = dir.resolve("cka.png");
        Plots.heatmap(png, "CKA", "layer", "layer", X_TICKS, Y_TICKS, v, 0, ROWS * COLS - 1, W, H);

        BufferedImage image = ImageIO.read(png.toFile());
        assertNotNull(image, "PNG does not decode");
        assertEquals(W, image.getWidth());
        assertEquals(H, image.getHeight());

        JFreeChart chart = Plots.heatmapChart("CKA", "layer", "layer", X_TICKS, Y_TICKS, v, 0, ROWS * COLS - 1);
        int[] low = cellCentre(chart, 0, 0);
        int[] high = cellCentre(chart, ROWS - 1, COLS - 1);
        // Row 0 at the top, column 0 at the left.
        assertTrue(low[1] < high[1] && low[0] < high[0], "orientation: low " + low[0] + "," + low[1]
                + " high " + high[0] + "," + high[1]);

        Plots.ViridisScale scale = new Plots.ViridisScale(0, ROWS * COLS - 1);
        Color lowColor = pixel(image, low);
        Color highColor = pixel(image, high);
        assertTrue(distance(lowColor, highColor) > 200, "low " + lowColor + " vs high " + highColor);
        assertColor(scale.color(0), lowColor, "lowest cell");
        assertColor(scale.color(ROWS * COLS - 1), highColor, "highest cell");
        // A middle cell sits between the two ends, not at either.
        Color mid = pixel(image, cellCentre(chart, 3, 2));
        assertColor(scale.color(17), mid, "middle cell");
        assertTrue(distance(mid, lowColor) > 60 && distance(mid, highColor) > 60, "middle " + mid);
    }

    @Test
    void scaleIsViridisAndClamps() {
        Plots.ViridisScale scale = new Plots.ViridisScale(-1, 1);
        assertEquals(new Color(0x440154), scale.color(-1));
        assertEquals(new Color(0x21918C), scale.color(0));
        assertEquals(new Color(0xFDE725), scale.color(1));
        assertEquals(scale.color(-1), scale.color(-5));
        assertEquals(scale.color(1), scale.color(Double.POSITIVE_INFINITY));
        assertEquals(Plots.NAN_COLOR, scale.color(Double.NaN));
    }

    @Test
    void nanCellIsGrey() throws IOException {
        double[][] v = gradient();
        v[3][2] = Double.NaN;
        Path png = dir.resolve("nan.png");
        Plots.heatmap(png, null, null, null, null, null, v, 0, ROWS * COLS - 1, W, H);

        BufferedImage image = ImageIO.read(png.toFile());
        JFreeChart chart = Plots.heatmapChart(null, null, null, null, null, v, 0, ROWS * COLS - 1);
        Color nan = pixel(image, cellCentre(chart, 3, 2));
        assertColor(Plots.NAN_COLOR, nan, "NaN cell");
        assertEquals(nan.getRed(), nan.getGreen());
        assertEquals(nan.getGreen(), nan.getBlue());
        // Its neighbour is a real colour.
        assertColor(new Plots.ViridisScale(0, ROWS * COLS - 1).color(16), pixel(image, cellCentre(chart, 3, 1)),
                "neighbour");
    }

    @Test
    void linesWritesANonBlankPng() throws IOException {
        double[] x = {0, 1, 2, 3, 4, 5};
        Map<String, double[]> series = new LinkedHashMap<>();
        series.put("cos", new double[] {1, 0.9, 0.8, Double.NaN, 0.6, 0.5});
        series.put("l2", new double[] {0.1, 0.2, 0.4, 0.3, 0.5, 0.7});
        Path png = dir.resolve("lines.png");
        Plots.lines(png, "per layer", "layer", "value", x, series, 640, 360);

        BufferedImage image = ImageIO.read(png.toFile());
        assertNotNull(image, "PNG does not decode");
        assertEquals(640, image.getWidth());
        assertEquals(360, image.getHeight());
        Set<Integer> colours = new HashSet<>();
        for (int y = 0; y < image.getHeight(); y++) {
            for (int i = 0; i < image.getWidth(); i++) {
                colours.add(image.getRGB(i, y));
            }
        }
        assertTrue(colours.size() > 1, "blank image");

        // Legend order is insertion order.
        JFreeChart chart = Plots.linesChart("t", "x", "y", x, series);
        assertEquals("cos", chart.getXYPlot().getDataset().getSeriesKey(0));
        assertEquals("l2", chart.getXYPlot().getDataset().getSeriesKey(1));
        LegendTitle legend = chart.getLegend();
        assertNotNull(legend);
        assertEquals(List.of(png), listing());
        // Series take the palette in order; whole-number layers get integer ticks, fractional values do not.
        assertEquals(Plots.SERIES_COLORS[0], chart.getXYPlot().getRenderer().getSeriesPaint(0));
        assertEquals(Plots.SERIES_COLORS[1], chart.getXYPlot().getRenderer().getSeriesPaint(1));
        assertIntegerTicks(true, chart.getXYPlot().getDomainAxis());
        assertIntegerTicks(false, chart.getXYPlot().getRangeAxis());
        JFreeChart counts = Plots.linesChart("t", "x", "y", new double[] {0.5, 1.5}, Map.of("n", new double[] {3, Double.NaN}));
        assertIntegerTicks(false, counts.getXYPlot().getDomainAxis());
        assertIntegerTicks(true, counts.getXYPlot().getRangeAxis());
    }

    private static void assertIntegerTicks(boolean expected, org.jfree.chart.axis.ValueAxis axis) {
        // The smallest unit at least 0.3 apart: 1 with integer units, 0.5 or less otherwise.
        double size = axis.getStandardTickUnits().getCeilingTickUnit(0.3).getSize();
        assertEquals(expected, size == 1.0, axis.getLabel() + ": tick unit " + size);
    }

    @Test
    void successLeavesOnlyTheTargetAndReplacesIt() throws IOException {
        Path png = dir.resolve("m.png");
        Files.write(png, new byte[] {1, 2, 3});
        Plots.heatmap(png, "t", "x", "y", null, null, gradient(), 0, 34, 300, 200);
        assertEquals(List.of(png), listing(), "temporary files left behind");
        BufferedImage image = ImageIO.read(png.toFile());
        assertNotNull(image);
        assertEquals(300, image.getWidth());
    }

    @Test
    void invalidValuesLeaveTargetUntouched() throws IOException {
        Path png = dir.resolve("keep.png");
        byte[] before = {9, 8, 7, 6};
        Files.write(png, before);
        double[][] ragged = {{1, 2}, {3}};
        assertThrows(IllegalArgumentException.class,
                () -> Plots.heatmap(png, "t", "x", "y", null, null, ragged, 0, 1, 100, 100));
        assertThrows(IllegalArgumentException.class,
                () -> Plots.lines(png, "t", "x", "y", new double[] {1, 2}, Map.of("a", new double[] {1}), 100, 100));
        assertArrayEquals(before, Files.readAllBytes(png));
        assertEquals(List.of(png), listing());
    }

    @Test
    void argumentErrorsNameTheProblem() {
        Path png = dir.resolve("e.png");
        double[][] ok = gradient();
        expect("ragged", () -> Plots.heatmap(png, "t", "x", "y", null, null,
                new double[][] {{1, 2}, {3}}, 0, 1, 100, 100));
        expect("values", () -> Plots.heatmap(png, "t", "x", "y", null, null, new double[0][], 0, 1, 100, 100));
        expect("values", () -> Plots.heatmap(png, "t", "x", "y", null, null, new double[][] {{}}, 0, 1, 100, 100));
        expect("values", () -> Plots.heatmap(png, "t", "x", "y", null, null, null, 0, 1, 100, 100));
        expect("xTicks", () -> Plots.heatmap(png, "t", "x", "y", List.of("a"), null, ok, 0, 1, 100, 100));
        expect("yTicks", () -> Plots.heatmap(png, "t", "x", "y", null, X_TICKS, ok, 0, 1, 100, 100));
        expect("min/max", () -> Plots.heatmap(png, "t", "x", "y", null, null, ok, 1, 1, 100, 100));
        expect("min/max", () -> Plots.heatmap(png, "t", "x", "y", null, null, ok, 2, 1, 100, 100));
        expect("min/max", () -> Plots.heatmap(png, "t", "x", "y", null, null, ok, Double.NaN, 1, 100, 100));
        expect("width/height", () -> Plots.heatmap(png, "t", "x", "y", null, null, ok, 0, 1, 0, 100));
        expect("width/height", () -> Plots.heatmap(png, "t", "x", "y", null, null, ok, 0, 1, 100, -1));
        expect("png", () -> Plots.heatmap(null, "t", "x", "y", null, null, ok, 0, 1, 100, 100));

        double[] x = {0, 1, 2};
        expect("series 'a'", () -> Plots.lines(png, "t", "x", "y", x, Map.of("a", new double[] {1, 2}), 100, 100));
        expect("series", () -> Plots.lines(png, "t", "x", "y", x, Map.of(), 100, 100));
        expect("x", () -> Plots.lines(png, "t", "x", "y", new double[0], Map.of("a", new double[0]), 100, 100));
        expect("x", () -> Plots.lines(png, "t", "x", "y", new double[] {0, Double.NaN, 2},
                Map.of("a", x), 100, 100));
        expect("width/height", () -> Plots.lines(png, "t", "x", "y", x, Map.of("a", x), 100, 0));
        assertFalse(Files.exists(png), "an invalid call wrote the target");
    }

    private static void expect(String fragment, Executable call) {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, call);
        assertTrue(e.getMessage().contains(fragment), "message '" + e.getMessage() + "' lacks '" + fragment + "'");
    }
}
