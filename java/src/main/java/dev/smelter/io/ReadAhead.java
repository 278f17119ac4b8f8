package dev.smelter.io;

import java.lang.foreign.MemorySegment;
import java.util.List;
import java.util.concurrent.atomic.AtomicLong;

/**
 * Reads memory-mapped inputs ahead of the thread that merges them: a daemon thread faults in the pages of
 * the next steps' segments ({@link MemorySegment#load()}) while the current step computes, so disk reads
 * overlap with merging and writing instead of stalling the merge on page faults.
 *
 * <p>It runs at most {@code budgetBytes} ahead of the consumer (always at least one step), so the page cache it
 * fills stays bounded; the consumer calls {@link #consumed(int)} after each step. Reading ahead is advisory:
 * a failure here (an I/O error while faulting a page) stops the read-ahead and the consumer meets the error
 * itself, where it is reported with the tensor's name. Close it before unmapping the inputs.
 */
public final class ReadAhead implements AutoCloseable {
    private final List<List<MemorySegment>> steps;
    private final long budgetBytes;
    private final long[] prefix;  // prefix[i]: bytes of steps 0..i-1
    private final AtomicLong bytesLoaded = new AtomicLong();
    private final Thread thread;
    private int consumed;  // steps the consumer finished; guarded by this
    private boolean closed;  // guarded by this

    /**
     * @param steps for each step in order, the segments it reads (non-mapped segments are skipped)
     * @param budgetBytes how many bytes of later steps may be loaded beyond the step being consumed
     */
    public ReadAhead(List<List<MemorySegment>> steps, long budgetBytes) {
        this.steps = List.copyOf(steps);
        this.budgetBytes = budgetBytes;
        this.prefix = new long[this.steps.size() + 1];
        for (int i = 0; i < this.steps.size(); i++) {
            long n = 0;
            for (MemorySegment seg : this.steps.get(i)) n += seg.byteSize();
            prefix[i + 1] = prefix[i] + n;
        }
        this.thread = Thread.ofPlatform().daemon().name("smelter-read-ahead").unstarted(this::run);
        thread.start();
    }

    /** The consumer finished steps {@code 0..step}: their bytes no longer count against the budget. */
    public synchronized void consumed(int step) {
        consumed = Math.max(consumed, step + 1);
        notifyAll();
    }

    /** Bytes faulted in so far (for tests and summaries). */
    public long bytesLoaded() {
        return bytesLoaded.get();
    }

    private static final long CHUNK = 32L << 20;  // loaded in pieces, so close() never waits for a whole tensor

    private void run() {
        try {
            for (int step = 0; step < steps.size(); step++) {
                int room = awaitRoom(step);
                if (room < 0) return;
                if (room == 0) continue;
                for (MemorySegment s : steps.get(step)) {
                    if (!s.isMapped()) continue;
                    for (long off = 0; off < s.byteSize(); off += CHUNK) {
                        synchronized (this) {
                            if (closed || consumed > step) break;
                        }
                        long len = Math.min(CHUNK, s.byteSize() - off);
                        s.asSlice(off, len).load();
                        bytesLoaded.addAndGet(len);
                    }
                }
            }
        } catch (RuntimeException | Error e) {
            // Advisory only: the consumer reads the same pages and reports what went wrong, with context.
        }
    }

    /**
     * Waits until {@code step} is at most the budget ahead of the step being consumed (the next one always is).
     * Returns 1 to load it, 0 to skip it (the consumer is past it), -1 once closed.
     */
    private synchronized int awaitRoom(int step) {
        while (!closed) {
            if (step < consumed) return 0;
            if (step <= consumed + 1 || prefix[step + 1] - prefix[consumed + 1] <= budgetBytes) return 1;
            try {
                wait();
            } catch (InterruptedException e) {
                return -1;
            }
        }
        return -1;
    }

    /** Stops reading ahead and waits for the thread, so the inputs can be unmapped safely. */
    @Override
    public void close() {
        synchronized (this) {
            closed = true;
            notifyAll();
        }
        boolean interrupted = false;
        while (thread.isAlive()) {
            try {
                thread.join();
            } catch (InterruptedException e) {
                interrupted = true;
            }
        }
        if (interrupted) Thread.currentThread().interrupt();
    }
}
