package dev.smelter.io;

import java.io.IOException;
import java.io.InterruptedIOException;
import java.lang.foreign.MemorySegment;
import java.util.ArrayDeque;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;

/**
 * Writes tensors into {@link CheckpointWriter}s (or any {@link TensorSink}) on a background thread, in the order given, so the next
 * tensor is merged while the previous one goes to disk. The caller owns the buffers: it may reuse a
 * buffer only after {@link #await(Future)} on the write that reads it (double buffering).
 *
 * <p>The first failed write fails every later call ({@link #write}, {@link #await}, {@link #finish}) with
 * its {@link IOException}; {@link #close()} drops writes not yet started and waits for the one running, so
 * the checkpoint writer can then delete its temporary directory safely.
 */
public final class WriteBehind implements AutoCloseable {
    private final ExecutorService thread = Executors.newSingleThreadExecutor(
            r -> Thread.ofPlatform().daemon().name("smelter-write-behind").unstarted(r));
    private final ArrayDeque<Future<?>> pending = new ArrayDeque<>();
    private IOException failure;

    public WriteBehind() {}

    /**
     * Queues one tensor's bytes; {@code data} must be readable from another thread (a shared or global arena, or
     * native memory) and stay unchanged until the returned write is done.
     */
    public Future<?> write(TensorSink writer, String name, MemorySegment data) throws IOException {
        reap();
        Future<?> f = thread.submit(() -> {
            writer.write(name, data);
            return null;
        });
        pending.add(f);
        return f;
    }

    /** Waits for one write (the buffer it read may be reused after this); rethrows any write's failure. */
    public void await(Future<?> write) throws IOException {
        if (write != null) get(write);
        reap();
    }

    /** Waits for every queued write; rethrows the first failure. */
    public void finish() throws IOException {
        while (!pending.isEmpty()) get(pending.poll());
        if (failure != null) throw failure;
    }

    // Drops finished writes from the queue, remembering the first failure.
    private void reap() throws IOException {
        while (!pending.isEmpty() && pending.peek().isDone()) get(pending.poll());
        if (failure != null) throw failure;
    }

    private void get(Future<?> f) throws IOException {
        try {
            f.get();
        } catch (ExecutionException e) {
            if (failure == null)
                failure = e.getCause() instanceof IOException io ? io : new IOException(e.getCause().getMessage(), e.getCause());
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new InterruptedIOException("interrupted while writing the checkpoint");
        }
        if (failure != null) throw failure;
    }

    /** Cancels writes not yet started and waits for the running one; idempotent. */
    @Override
    public void close() {
        for (Future<?> f : pending) f.cancel(false);
        pending.clear();
        thread.shutdown();
        boolean interrupted = false;
        while (true) {
            try {
                if (thread.awaitTermination(1, TimeUnit.MINUTES)) break;
            } catch (InterruptedException e) {
                interrupted = true;
            }
        }
        if (interrupted) Thread.currentThread().interrupt();
    }
}
