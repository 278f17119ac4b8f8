package dev.smelter.methods;

import dev.smelter.Context;
import dev.smelter.Tensor;

/**
 * The output of a method whose coefficients come from whole-tensor statistics (slerp, karcher, multislerp,
 * model_stock, SCE) when an input holds NaN or infinity: every coefficient is NaN in mergekit, and so is every
 * output element. Smelter writes that NaN tensor itself (the native merge refuses non-finite weights) and reports
 * it through the non-finite check like any other.
 */
public final class NanOutput {
    private NanOutput() {}

    /** Fills {@code out} with the quiet NaN of its dtype; the counts say every element is non-finite. */
    public static Context.MergeCounts fill(Context ctx, Tensor out) {
        Tensor host = out.memory() == Tensor.Memory.HOST ? out : ctx.allocate(out.dtype(), out.count(), Tensor.Memory.HOST);
        try {
            for (long i = 0; i < out.count(); i++) host.setFloat(i, Float.NaN);
            if (host != out) ctx.copy(out, host);
        } finally {
            if (host != out) ctx.free(host);
        }
        return new Context.MergeCounts(0, 0, 0, out.count());
    }
}
