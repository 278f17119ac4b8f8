package dev.smelter.methods;

import dev.smelter.Context;
import dev.smelter.Tensor;
import java.util.List;

/**
 * One tensor of a method computed in Java over host tensors ({@code nearswap}, {@code ram}, {@code ramplus_tl},
 * {@code arcee_fusion}, {@code nuslerp} per row or column, {@code model_stock} with {@code filter_wise}): methods
 * whose per-element or per-row logic no native kernel has. Each reads the inputs' values as f32 (exact for every
 * dtype), computes in f64 and rounds once to the output's dtype ({@link HostArithmetic}), one tensor at a time,
 * in parallel over fixed blocks so that the result does not depend on the thread count.
 */
@FunctionalInterface
public interface HostMerge {
    /**
     * Merges {@code models} (about {@code base}, null where the method takes none) into {@code out}; all are host
     * tensors of the same count. {@code shape} is the tensor's shape (its first dimension may cover more elements
     * than {@code out} holds: vocabulary rows only the base has are merged elsewhere). Returns the counts of the
     * merge (its non-finite outputs).
     */
    Context.MergeCounts merge(Context ctx, Tensor base, List<Tensor> models, long[] shape, Tensor out);
}
