package dev.smelter.merge;

import dev.smelter.Context;
import dev.smelter.DType;
import dev.smelter.Tensor;
import dev.smelter.io.Checkpoint;
import java.io.IOException;
import java.io.UncheckedIOException;

/**
 * Host buffers, one slot per input (base, models, Fishers), that a tensor's inputs are read into with positional
 * reads before native code sees them. Native code reading a file mapping dies of SIGBUS when another process
 * truncates the file; a positional read returns short instead, and the merge fails with the file and tensor named.
 * The read-ahead still faults the mapping in from Java beforehand, so these reads copy from the page cache. On CUDA
 * the buffers are page-locked, so the device copies from them are DMA.
 */
final class InputBuffers implements AutoCloseable {
    private final Context ctx;
    private final Tensor buffer;
    private final long slotBytes;
    private final int slots;

    /** {@code slots} buffers of {@code slotBytes} each (rounded up to 64 bytes). */
    InputBuffers(Context ctx, int slots, long slotBytes) {
        this.ctx = ctx;
        this.slots = slots;
        this.slotBytes = (Math.max(slotBytes, 64) + 63) & ~63L;
        this.buffer = ctx.allocate(DType.BF16, this.slotBytes * slots / 2, Tensor.Memory.HOST);
    }

    /** Reads the first {@code elements} of tensor {@code name} of {@code from} into {@code slot}; a view of them. */
    Tensor read(int slot, Checkpoint from, String name, long elements) throws IOException {
        if (slot < 0 || slot >= slots) throw new IllegalArgumentException("slot " + slot + " of " + slots);
        DType dtype = from.info(name).dtype().toMergeDType().orElseThrow(
                () -> new IllegalArgumentException(from.directory() + ": tensor " + name + " is not a float tensor"));
        long bytes = elements * dtype.byteSize();
        if (bytes > slotBytes)
            throw new IllegalStateException("tensor " + name + " needs " + bytes + " bytes, a slot holds " + slotBytes);
        var dst = buffer.data().asSlice(slot * slotBytes, bytes);
        from.read(name, 0, dst);
        return new Tensor(dst, elements, dtype, Tensor.Memory.HOST);
    }

    /** {@link #read} for use inside callbacks that cannot throw: I/O errors come out as UncheckedIOException. */
    Tensor readUnchecked(int slot, Checkpoint from, String name, long elements) {
        try {
            return read(slot, from, name, elements);
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    long bytes() {
        return slotBytes * slots;
    }

    @Override
    public void close() {
        ctx.free(buffer);
    }
}
