package dev.smelter.analysis;

import dev.smelter.io.AtomicFile;
import java.awt.BasicStroke;
import java.awt.Color;
import java.awt.Paint;
import java.awt.image.BufferedImage;
import java.io.IOException;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import javax.imageio.ImageIO;
import org.jfree.chart.ChartRenderingInfo;
import org.jfree.chart.JFreeChart;
import org.jfree.chart.axis.AxisLocation;
import org.jfree.chart.axis.NumberAxis;
import org.jfree.chart.axis.SymbolAxis;
import org.jfree.chart.plot.PlotOrientation;
import org.jfree.chart.plot.XYPlot;
import org.jfree.chart.renderer.PaintScale;
import org.jfree.chart.renderer.xy.XYBlockRenderer;
import org.jfree.chart.renderer.xy.XYLineAndShapeRenderer;
import org.jfree.chart.title.PaintScaleLegend;
import org.jfree.chart.ui.RectangleAnchor;
import org.jfree.chart.ui.RectangleEdge;
import org.jfree.chart.ui.RectangleInsets;
import org.jfree.data.xy.DefaultXYZDataset;
import org.jfree.data.xy.XYSeries;
import org.jfree.data.xy.XYSeriesCollection;

/**
 * PNG charts of analysis results (layer x layer similarity heatmaps, per-layer curves), rendered
 * headless with JFreeChart. Every PNG is written atomically: a reader never sees a partial file
 * under the target name, and invalid arguments are rejected before anything is written.
 */
public final class Plots {
    static {
        // Must run before any AWT toolkit initialises; an explicit -Djava.awt.headless wins.
        if (System.getProperty("java.awt.headless") == null) {
            System.setProperty("java.awt.headless", "true");
        }
    }

    /** Largest accepted image side in pixels: bounds the raster (4 bytes a pixel) to about 1 GiB. */
    static final int MAX_SIDE = 16_384;

    /**
     * Line colours in series order: Okabe and Ito's palette (distinguishable with the common colour vision
     * deficiencies), without its yellow, which is hard to see on white.
     */
    static final Color[] SERIES_COLORS = {
        new Color(0x0072B2), new Color(0xD55E00), new Color(0x009E73), new Color(0xCC79A7),
        new Color(0x56B4E9), new Color(0xE69F00), new Color(0x000000),
    };

    /** Colour of NaN heatmap cells: a neutral grey that no viridis colour comes close to. */
    static final Color NAN_COLOR = new Color(0x9E, 0x9E, 0x9E);

    private Plots() {}

    /**
     * Writes a heatmap of {@code values[row][col]}: column c is drawn at x = c, row r at y = r, with
     * row 0 at the top (matrix orientation, as a layer x layer similarity matrix is usually read).
     * Colours follow viridis from {@code min} (dark violet) to {@code max} (yellow); values outside
     * [min, max] (infinities included) are clamped, NaN cells are grey.
     *
     * @param xTicks one label per column, or null for integer column indices
     * @param yTicks one label per row, or null for integer row indices
     */
    public static void heatmap(Path png, String title, String xLabel, String yLabel, List<String> xTicks,
            List<String> yTicks, double[][] values, double min, double max, int width, int height)
            throws IOException {
        requirePath(png);
        requireSize(width, height);
        JFreeChart chart = heatmapChart(title, xLabel, yLabel, xTicks, yTicks, values, min, max);
        write(png, render(chart, width, height, null));
    }

    /**
     * Writes line curves with markers, one per entry of {@code series} (insertion order is legend
     * order), all over the same {@code x}. NaN y values leave a gap in their curve.
     */
    public static void lines(Path png, String title, String xLabel, String yLabel, double[] x,
            Map<String, double[]> series, int width, int height) throws IOException {
        requirePath(png);
        requireSize(width, height);
        JFreeChart chart = linesChart(title, xLabel, yLabel, x, series);
        write(png, render(chart, width, height, null));
    }

    /** The heatmap chart, unrendered; package-private so tests can locate cells. */
    static JFreeChart heatmapChart(String title, String xLabel, String yLabel, List<String> xTicks,
            List<String> yTicks, double[][] values, double min, double max) {
        if (values == null || values.length == 0) {
            throw new IllegalArgumentException("values: matrix is null or has no rows");
        }
        int rows = values.length;
        if (values[0] == null || values[0].length == 0) {
            throw new IllegalArgumentException("values: row 0 is null or empty");
        }
        int cols = values[0].length;
        for (int r = 1; r < rows; r++) {
            if (values[r] == null || values[r].length != cols) {
                throw new IllegalArgumentException("values: ragged matrix, row " + r + " has "
                        + (values[r] == null ? "null" : values[r].length + " columns") + ", row 0 has " + cols);
            }
        }
        requireTicks("xTicks", xTicks, cols, "columns");
        requireTicks("yTicks", yTicks, rows, "rows");
        if (!Double.isFinite(min) || !Double.isFinite(max) || !(min < max)) {
            throw new IllegalArgumentException("min/max: need finite min < max, got min=" + min + ", max=" + max);
        }

        double[] xs = new double[rows * cols];
        double[] ys = new double[rows * cols];
        double[] zs = new double[rows * cols];
        for (int r = 0, i = 0; r < rows; r++) {
            for (int c = 0; c < cols; c++, i++) {
                xs[i] = c;
                ys[i] = r;
                zs[i] = values[r][c];
            }
        }
        DefaultXYZDataset dataset = new DefaultXYZDataset();
        dataset.addSeries("values", new double[][] {xs, ys, zs});

        NumberAxis xAxis = indexAxis(xLabel, xTicks, cols);
        NumberAxis yAxis = indexAxis(yLabel, yTicks, rows);
        yAxis.setInverted(true);  // row 0 at the top
        // Labels such as "L10" run together side by side once there are more than a few columns.
        xAxis.setVerticalTickLabels(xTicks != null && cols > 10);

        ViridisScale scale = new ViridisScale(min, max);
        XYBlockRenderer renderer = new XYBlockRenderer();
        renderer.setBlockWidth(1.0);
        renderer.setBlockHeight(1.0);
        renderer.setBlockAnchor(RectangleAnchor.CENTER);
        renderer.setPaintScale(scale);

        XYPlot plot = new XYPlot(dataset, xAxis, yAxis, renderer);
        plot.setOrientation(PlotOrientation.VERTICAL);
        plot.setBackgroundPaint(Color.WHITE);
        // Gridlines would run through the cell centres.
        plot.setDomainGridlinesVisible(false);
        plot.setRangeGridlinesVisible(false);
        plot.setAxisOffset(RectangleInsets.ZERO_INSETS);

        NumberAxis legendAxis = new NumberAxis();
        legendAxis.setRange(min, max);
        PaintScaleLegend legend = new PaintScaleLegend(scale, legendAxis);
        legend.setPosition(RectangleEdge.RIGHT);
        legend.setAxisLocation(AxisLocation.TOP_OR_RIGHT);
        legend.setStripWidth(14.0);
        legend.setSubdivisionCount(256);
        legend.setMargin(new RectangleInsets(8, 8, 8, 8));
        legend.setBackgroundPaint(Color.WHITE);

        JFreeChart chart = new JFreeChart(title, JFreeChart.DEFAULT_TITLE_FONT, plot, false);
        chart.addSubtitle(legend);
        chart.setBackgroundPaint(Color.WHITE);
        return chart;
    }

    /** The line chart, unrendered; package-private for tests. */
    static JFreeChart linesChart(String title, String xLabel, String yLabel, double[] x,
            Map<String, double[]> series) {
        if (x == null || x.length == 0) {
            throw new IllegalArgumentException("x: null or empty");
        }
        for (int i = 0; i < x.length; i++) {
            if (!Double.isFinite(x[i])) {
                throw new IllegalArgumentException("x: value " + i + " is not finite: " + x[i]);
            }
        }
        if (series == null || series.isEmpty()) {
            throw new IllegalArgumentException("series: null or empty");
        }
        XYSeriesCollection dataset = new XYSeriesCollection();
        for (Map.Entry<String, double[]> e : series.entrySet()) {
            String name = e.getKey();
            double[] y = e.getValue();
            if (name == null) {
                throw new IllegalArgumentException("series: null name");
            }
            if (y == null || y.length != x.length) {
                throw new IllegalArgumentException("series '" + name + "': length "
                        + (y == null ? "null" : y.length) + " != x length " + x.length);
            }
            // Unsorted with duplicates allowed: keep the caller's points exactly as given.
            XYSeries s = new XYSeries(name, false, true);
            for (int i = 0; i < x.length; i++) {
                // A null y (not NaN) is the documented way to break a line in JFreeChart.
                s.add(Double.valueOf(x[i]), Double.isNaN(y[i]) ? null : Double.valueOf(y[i]), false);
            }
            dataset.addSeries(s);
        }

        NumberAxis xAxis = new NumberAxis(xLabel);
        xAxis.setAutoRangeIncludesZero(false);
        NumberAxis yAxis = new NumberAxis(yLabel);
        yAxis.setAutoRangeIncludesZero(false);
        // Layers and counts: no ticks at 0.5.
        if (integral(x)) xAxis.setStandardTickUnits(NumberAxis.createIntegerTickUnits());
        if (series.values().stream().allMatch(Plots::integral)) yAxis.setStandardTickUnits(NumberAxis.createIntegerTickUnits());
        XYLineAndShapeRenderer renderer = new XYLineAndShapeRenderer(true, true);
        renderer.setDefaultStroke(new BasicStroke(1.5f));
        renderer.setAutoPopulateSeriesStroke(false);
        for (int i = 0; i < series.size(); i++) renderer.setSeriesPaint(i, SERIES_COLORS[i % SERIES_COLORS.length]);

        XYPlot plot = new XYPlot(dataset, xAxis, yAxis, renderer);
        plot.setBackgroundPaint(Color.WHITE);
        plot.setDomainGridlinePaint(Color.LIGHT_GRAY);
        plot.setRangeGridlinePaint(Color.LIGHT_GRAY);

        JFreeChart chart = new JFreeChart(title, JFreeChart.DEFAULT_TITLE_FONT, plot, true);
        chart.setBackgroundPaint(Color.WHITE);
        return chart;
    }

    /** Whether every non-NaN value is a whole number (NaN marks a gap). */
    private static boolean integral(double[] values) {
        for (double v : values) if (!Double.isNaN(v) && v != Math.rint(v)) return false;
        return true;
    }

    /** Renders opaque RGB (no alpha channel: smaller PNGs, exact colours); info may be null. */
    static BufferedImage render(JFreeChart chart, int width, int height, ChartRenderingInfo info) {
        return chart.createBufferedImage(width, height, BufferedImage.TYPE_INT_RGB, info);
    }

    /** An axis over cell indices -0.5 .. n-0.5 with a tick per labelled cell, or integer ticks. */
    private static NumberAxis indexAxis(String label, List<String> ticks, int n) {
        NumberAxis axis;
        if (ticks != null) {
            SymbolAxis symbols = new SymbolAxis(label, ticks.toArray(new String[0]));
            symbols.setGridBandsVisible(false);
            axis = symbols;
        } else {
            axis = new NumberAxis(label);
            axis.setStandardTickUnits(NumberAxis.createIntegerTickUnits());
        }
        axis.setAutoRangeIncludesZero(false);
        axis.setLowerMargin(0.0);
        axis.setUpperMargin(0.0);
        axis.setRange(-0.5, n - 0.5);
        return axis;
    }

    private static void requireTicks(String what, List<String> ticks, int n, String unit) {
        if (ticks != null && ticks.size() != n) {
            throw new IllegalArgumentException(what + ": " + ticks.size() + " labels for " + n + " " + unit);
        }
    }

    private static void requirePath(Path png) {
        if (png == null || png.getFileName() == null) {
            throw new IllegalArgumentException("png: null or has no file name: " + png);
        }
    }

    private static void requireSize(int width, int height) {
        if (width <= 0 || height <= 0 || width > MAX_SIDE || height > MAX_SIDE) {
            throw new IllegalArgumentException("width/height: need 1.." + MAX_SIDE + ", got " + width + "x" + height);
        }
    }

    private static void write(Path png, BufferedImage image) throws IOException {
        AtomicFile.write(png, out -> {
            if (!ImageIO.write(image, "png", out)) throw new IOException("no PNG writer available in ImageIO");
        });
    }

    /**
     * Viridis (perceptually uniform, readable in greyscale and by most colour-blind readers), linearly
     * interpolated between 11 stops sampled at 0, 0.1, ..., 1.
     */
    static final class ViridisScale implements PaintScale {
        private static final int[] STOPS = {
            0x440154, 0x482475, 0x414487, 0x355F8D, 0x2A788E, 0x21918C,
            0x22A884, 0x44BF70, 0x7AD151, 0xBDDF26, 0xFDE725,
        };

        private final double lower;
        private final double upper;

        ViridisScale(double lower, double upper) {
            if (!Double.isFinite(lower) || !Double.isFinite(upper) || !(lower < upper)) {
                throw new IllegalArgumentException("scale bounds: need finite lower < upper, got "
                        + lower + ", " + upper);
            }
            this.lower = lower;
            this.upper = upper;
        }

        @Override
        public double getLowerBound() {
            return lower;
        }

        @Override
        public double getUpperBound() {
            return upper;
        }

        @Override
        public Paint getPaint(double value) {
            return color(value);
        }

        Color color(double value) {
            if (Double.isNaN(value)) {
                return NAN_COLOR;
            }
            double t = Math.clamp((value - lower) / (upper - lower), 0.0, 1.0);
            double pos = t * (STOPS.length - 1);
            int i = Math.min((int) pos, STOPS.length - 2);
            double f = pos - i;
            int a = STOPS[i];
            int b = STOPS[i + 1];
            return new Color(mix(a >> 16, b >> 16, f), mix(a >> 8, b >> 8, f), mix(a, b, f));
        }

        private static int mix(int a, int b, double f) {
            return (int) Math.round((a & 0xFF) + ((b & 0xFF) - (a & 0xFF)) * f);
        }
    }
}
