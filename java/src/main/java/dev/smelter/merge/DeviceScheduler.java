package dev.smelter.merge;

import dev.smelter.Device;
import dev.smelter.Smelter;
import java.io.IOException;
import java.io.InterruptedIOException;
import java.io.UncheckedIOException;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;

/**
 * Several devices in one process: the tensors of a merge are spread over one lane per device, balanced by bytes, and
 * the lanes run at once. Where a tensor is merged does not change its bytes (both backends compute the same f32
 * operations in the same order) nor where it is written (the shard layout is fixed beforehand), so the checkpoint is
 * the same on any number of devices.
 */
public final class DeviceScheduler {
    private DeviceScheduler() {}

    /**
     * Parses a device list: {@code cpu}, {@code cuda:N}, {@code auto}, a comma list ({@code cuda:0,1,2,3},
     * {@code cuda:0,cuda:2}, {@code cpu,cpu}: a device may be named twice, for two contexts on it) or {@code cuda:all}
     * (every CUDA device).
     */
    public static List<Device> parse(String text) {
        String s = text.strip().toLowerCase(Locale.ROOT);
        if (s.equals("cuda:all") || s.equals("all")) {
            int n = Smelter.cudaDeviceCount();
            if (n == 0) throw new IllegalArgumentException("--device " + text + ": no CUDA device is usable here");
            List<Device> all = new ArrayList<>();
            for (int i = 0; i < n; i++) all.add(Device.cuda(i));
            return all;
        }
        List<Device> devices = new ArrayList<>();
        String kind = null;  // "cuda:0,1" : a bare number continues the previous kind
        for (String part : s.split(",", -1)) {
            String p = part.strip();
            if (p.isEmpty()) throw new IllegalArgumentException("--device " + text + ": an empty entry in the list");
            if (p.chars().allMatch(Character::isDigit)) {
                if (!"cuda".equals(kind))
                    throw new IllegalArgumentException("--device " + text + ": '" + p + "' needs cuda: before it (cuda:0,1)");
                devices.add(Device.parse("cuda:" + p));
                continue;
            }
            Device d = Device.parse(p);
            kind = d.kind() == Device.Kind.CUDA ? "cuda" : "cpu";
            devices.add(d);
        }
        return devices;
    }

    /**
     * Spreads {@code tensors} over {@code lanes}: each in turn (the plan's order, which each lane keeps) goes to the
     * lane with the fewest bytes so far (the first on ties). Deterministic.
     */
    static List<List<CheckpointMerger.TensorPlan>> spread(List<CheckpointMerger.TensorPlan> tensors, int lanes) {
        List<List<CheckpointMerger.TensorPlan>> out = new ArrayList<>();
        long[] load = new long[lanes];
        for (int i = 0; i < lanes; i++) out.add(new ArrayList<>());
        for (CheckpointMerger.TensorPlan t : tensors) {
            int best = 0;
            for (int i = 1; i < lanes; i++) if (load[i] < load[best]) best = i;
            out.get(best).add(t);
            load[best] += weight(t);
        }
        return out;
    }

    /** The work of a tensor: the bytes it reads (every input for a merge, the reference's for a copy) and writes. */
    static long weight(CheckpointMerger.TensorPlan t) {
        return t.info().byteSize() + t.outBytes();
    }

    /** One lane's work; returns the largest memory it saw. */
    @FunctionalInterface
    interface Lane {
        long run(int lane) throws IOException;
    }

    /**
     * Runs {@code lanes} lanes at once (the first on the calling thread) and returns the largest of their results; the
     * first failure stops the others (they are interrupted) and is thrown once all have ended.
     */
    static long runAll(int lanes, Lane lane) throws IOException {
        if (lanes == 1) return lane.run(0);
        ExecutorService pool = Executors.newFixedThreadPool(lanes - 1,
                r -> Thread.ofPlatform().daemon().name("smelter-device-lane").unstarted(r));
        List<Future<Long>> others = new ArrayList<>();
        try {
            for (int i = 1; i < lanes; i++) {
                final int n = i;
                others.add(pool.submit(() -> lane.run(n)));
            }
            long peak;
            try {
                peak = lane.run(0);
            } catch (IOException | RuntimeException | Error e) {
                for (Future<Long> f : others) f.cancel(true);
                drain(others, e);
                throw e;
            }
            Throwable failure = null;
            for (Future<Long> f : others) {
                try {
                    peak = Math.max(peak, f.get());
                } catch (ExecutionException e) {
                    if (failure == null) {
                        failure = e.getCause();
                        for (Future<Long> g : others) g.cancel(true);
                    }
                } catch (java.util.concurrent.CancellationException e) {
                    // stopped after another lane's failure
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                    for (Future<Long> g : others) g.cancel(true);
                    throw new InterruptedIOException("interrupted while merging");
                }
            }
            if (failure instanceof IOException io) throw io;
            if (failure instanceof UncheckedIOException u) throw u.getCause();
            if (failure instanceof RuntimeException r) throw r;
            if (failure instanceof Error err) throw err;
            if (failure != null) throw new IOException(failure.getMessage(), failure);
            return peak;
        } finally {
            // Every lane has ended before the caller frees the contexts and buffers the lanes use.
            pool.shutdownNow();
            boolean interrupted = false;
            while (true) {
                try {
                    if (pool.awaitTermination(1, java.util.concurrent.TimeUnit.MINUTES)) break;
                } catch (InterruptedException e) {
                    interrupted = true;
                }
            }
            if (interrupted) Thread.currentThread().interrupt();
        }
    }

    /** Waits for the other lanes to end after a failure, adding theirs as suppressed. */
    private static void drain(List<Future<Long>> others, Throwable first) {
        for (Future<Long> f : others) {
            try {
                f.get();
            } catch (ExecutionException e) {
                if (e.getCause() != first) first.addSuppressed(e.getCause());
            } catch (java.util.concurrent.CancellationException | InterruptedException e) {
                // stopped
            }
        }
    }
}
