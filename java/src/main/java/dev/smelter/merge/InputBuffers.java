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
    private final int slots, banks;

    /**
     * {@code banks} sets (one being merged, one being read ahead, see {@link InputPrefetch}) of {@code slots} buffers
     * of {@code slotBytes} each (rounded up to 64 bytes).
     */
    InputBuffers(Context ctx, int banks, int slots, long slotBytes) {
        this.ctx = ctx;
        this.slots = slots;
        this.banks = banks;
        this.slotBytes = (Math.max(slotBytes, 64) + 63) & ~63L;
        this.buffer = ctx.allocate(DType.BF16, this.slotBytes * slots * banks / 2, Tensor.Memory.HOST);
    }

    int banks() {
        return banks;
    }

    /** {@link #read(int, int, Checkpoint, String, long)} into bank 0. */
    Tensor read(int slot, Checkpoint from, String name, long elements) throws IOException {
        return read(0, slot, from, name, elements);
    }

    /** Reads the first {@code elements} of tensor {@code name} of {@code from} into {@code slot} of {@code bank}. */
    Tensor read(int bank, int slot, Checkpoint from, String name, long elements) throws IOException {
        if (slot < 0 || slot >= slots || bank < 0 || bank >= banks)
            throw new IllegalArgumentException("slot " + slot + " of " + slots + ", bank " + bank + " of " + banks);
        DType dtype = from.info(name).dtype().toMergeDType().orElseThrow(
                () -> new IllegalArgumentException(from.directory() + ": tensor " + name + " is not a float tensor"));
        long bytes = elements * dtype.byteSize();
        if (bytes > slotBytes)
            throw new IllegalStateException("tensor " + name + " needs " + bytes + " bytes, a slot holds " + slotBytes);
        var dst = buffer.data().asSlice((bank * (long) slots + slot) * slotBytes, bytes);
        from.read(name, 0, dst);
        return new Tensor(dst, elements, dtype, Tensor.Memory.HOST);
    }

    /** The first {@code bytes} of {@code slot} of {@code bank}, for a caller that fills it itself. */
    java.lang.foreign.MemorySegment slot(int bank, int slot, long bytes) {
        if (slot < 0 || slot >= slots || bank < 0 || bank >= banks || bytes > slotBytes)
            throw new IllegalArgumentException("slot " + slot + " of " + slots + ", bank " + bank + " of " + banks + ", "
                    + bytes + " bytes of " + slotBytes);
        return buffer.data().asSlice((bank * (long) slots + slot) * slotBytes, bytes);
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
        return slotBytes * slots * banks;
    }

    @Override
    public void close() {
        ctx.free(buffer);
    }
}
