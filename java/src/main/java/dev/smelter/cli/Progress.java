package dev.smelter.cli;

import me.tongfei.progressbar.ProgressBar;
import me.tongfei.progressbar.ProgressBarBuilder;
import me.tongfei.progressbar.ProgressBarStyle;

/** A progress bar with bytes/s and ETA on a terminal; silent when output goes to a log or CI. */
final class Progress implements AutoCloseable {
    private final ProgressBar bar;

    private Progress(ProgressBar bar) {
        this.bar = bar;
    }

    static Progress start(long totalBytes, boolean quiet) {
        boolean terminal = System.console() != null && System.getenv("CI") == null;
        if (quiet || !terminal) return new Progress(null);
        ProgressBar bar = new ProgressBarBuilder().setTaskName("merge").setInitialMax(totalBytes)
                .setStyle(ProgressBarStyle.ASCII).setUnit(" MB", 1_000_000).showSpeed().setConsumer(
                        new me.tongfei.progressbar.ConsoleProgressBarConsumer(System.err))
                .build();
        return new Progress(bar);
    }

    void update(long doneBytes) {
        if (bar != null) bar.stepTo(doneBytes);
    }

    @Override
    public void close() {
        if (bar != null) bar.close();
    }
}
