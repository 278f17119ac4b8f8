package dev.smelter;

import dev.smelter.ffi.smelter_h;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.function.Consumer;

/**
 * Exact k-th largest magnitude key over many tensors, streaming: the threshold of model-wide TIES
 * trimming. Add every tensor of one model, then {@link #select(long)}; when it asks for another
 * pass (f32 keys), add the same tensors again and select again.
 */
public final class TopK implements AutoCloseable {
    private final Context context;
    private MemorySegment handle;

    /** The result of a select: either another pass is needed, or the threshold key. */
    public record Selection(boolean morePasses, int threshold) {}

    TopK(Context context, DType keyDType) {
        this.context = context;
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment out = arena.allocate(ValueLayout.ADDRESS);
            Native.check(smelter_h.smelter_topk_create(context.handle(), keyDType.code(), out), "topk create");
            handle = out.get(ValueLayout.ADDRESS, 0);
        }
    }

    /** Adds the keys of |model - base| (base null: |model|). */
    public void add(Tensor base, Tensor model) {
        synchronized (context) {
            try (Arena arena = Arena.ofConfined()) {
                MemorySegment b = base == null ? MemorySegment.NULL : Context.struct(arena, base);
                Native.check(smelter_h.smelter_topk_add(open(), b, Context.struct(arena, model)), "topk add");
            }
        }
    }

    /** Elements added in the current pass. */
    public long count() {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment n = arena.allocate(ValueLayout.JAVA_LONG);
            Native.check(smelter_h.smelter_topk_count(open(), n), "topk count");
            return n.get(ValueLayout.JAVA_LONG, 0);
        }
    }

    /**
     * The whole protocol: {@code pass} adds every tensor once, and runs again while {@link #select} asks for
     * another pass (f32 keys); returns the exact k-th largest key.
     */
    public int threshold(long k, Consumer<TopK> pass) {
        Selection s;
        do {
            pass.accept(this);
            s = select(k);
        } while (s.morePasses());
        return s.threshold();
    }

    public Selection select(long k) {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment more = arena.allocate(ValueLayout.JAVA_INT);
            MemorySegment threshold = arena.allocate(ValueLayout.JAVA_INT);
            Native.check(smelter_h.smelter_topk_select(open(), k, more, threshold), "topk select k=" + k);
            return new Selection(more.get(ValueLayout.JAVA_INT, 0) != 0, threshold.get(ValueLayout.JAVA_INT, 0));
        }
    }

    private MemorySegment open() {
        if (handle == null) throw new IllegalStateException("TopK is closed");
        return handle;
    }

    @Override
    public void close() {
        if (handle != null) {
            smelter_h.smelter_topk_destroy(handle);
            handle = null;
        }
    }
}
