package dev.smelter.merge;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.util.List;

/**
 * Reads the inputs of the next merged tensor into the other bank of {@link InputBuffers} while the current one
 * merges, on a daemon thread, so the copy into Smelter's buffers overlaps the merge instead of adding to it. With
 * one bank (inputs too large to hold twice) every tensor is read when it is asked for.
 *
 * @param <T> what one tensor's read inputs are
 */
final class InputPrefetch<T> implements AutoCloseable {
    /** Reads step {@code step}'s inputs into {@code bank}. */
    interface Loader<T> {
        T load(int bank, int step) throws IOException;
    }

    private final Loader<T> loader;
    private final int steps, banks;
    private final Object[] loaded;  // by bank: what the last load put there
    private final Thread thread;
    private int ready = -1;  // the last step loaded; guarded by this
    private int released = -1;  // the last step the consumer is done with; guarded by this
    private Throwable error;  // guarded by this
    private boolean closed;  // guarded by this

    InputPrefetch(Loader<T> loader, int steps, int banks) {
        this.loader = loader;
        this.steps = steps;
        this.banks = banks;
        this.loaded = new Object[banks];
        this.thread = banks < 2 ? null : Thread.ofPlatform().daemon().name("smelter-input-reader").start(this::run);
    }

    private void run() {
        try {
            for (int step = 0; step < steps; step++) {
                synchronized (this) {
                    while (!closed && released < step - banks) wait();  // its bank still holds step - banks
                    if (closed) return;
                }
                T t = loader.load(step % banks, step);
                synchronized (this) {
                    loaded[step % banks] = t;
                    ready = step;
                    notifyAll();
                }
            }
        } catch (Throwable e) {
            synchronized (this) {
                error = e;
                notifyAll();
            }
        }
    }

    /** The inputs of step {@code step}, waiting for the reader; its I/O error, with the file named, if it failed. */
    @SuppressWarnings("unchecked")
    T await(int step) throws IOException {
        if (thread == null) return loader.load(0, step);
        synchronized (this) {
            while (ready < step && error == null) {
                try {
                    wait();
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                    throw new IOException("interrupted while reading the inputs", e);
                }
            }
            if (ready < step) {
                if (error instanceof IOException io) throw io;
                if (error instanceof UncheckedIOException u) throw u.getCause();
                if (error instanceof RuntimeException r) throw r;
                if (error instanceof Error x) throw x;
                throw new IOException(error);
            }
            return (T) loaded[step % banks];
        }
    }

    /** The consumer is done with step {@code step}: its bank may take a later step. */
    synchronized void release(int step) {
        released = Math.max(released, step);
        notifyAll();
    }

    @Override
    public void close() {
        synchronized (this) {
            closed = true;
            notifyAll();
        }
        if (thread != null) {
            try {
                thread.join();  // no read may still write a buffer when it is freed
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        }
    }
}
