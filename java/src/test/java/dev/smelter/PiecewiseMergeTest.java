package dev.smelter;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import java.lang.foreign.Arena;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;

/**
 * A merge over a memory limit runs in pieces (each pass over the tensor visits them in order: thresholds, L1 sums,
 * ranks, the merge) and must give the bytes and counts of the merge in one piece, for every method and option.
 * On CUDA this is how tensors larger than device memory merge.
 */
class PiecewiseMergeTest {
    static final int ROW = 1009, ROWS = 297, N = ROW * ROWS;  // odd sizes; DELLA ranks whole rows of 1009

    static Map<String, MergeSpec> specs() {
        Map<String, MergeSpec> m = new LinkedHashMap<>(MergeReferenceTest.specs(3));
        float[] w = {0.5f, 0.3f, 0.4f}, d = {0.4f, 0.7f, 0.55f};
        m.put("breadcrumbs", MergeSpec.breadcrumbs(w, d, new float[] {0.01f, 0.05f, 0.02f}, false));
        m.put("breadcrumbs-ties", MergeSpec.breadcrumbs(w, d, new float[] {0.01f, 0.05f, 0.02f}, true));
        m.put("della-l1", MergeSpec.della(w, d, new float[] {0.1f, 0.15f, 0.2f}, ROW, 77, true).toBuilder()
                .rescale(MergeSpec.Rescale.L1).tensorName("t").build());
        m.put("della-inverse", MergeSpec.della(w, d, new float[] {0.1f, 0.15f, 0.2f}, ROW, 78, false));
        return m;
    }

    @Test
    void piecesGiveTheBytesAndCountsOfOneMerge() {
        for (Device device : TestData.devices())
            for (DType dtype : new DType[] {DType.BF16, DType.F32})
                try (Arena arena = Arena.ofConfined(); Context ctx = Smelter.open(device)) {
                    TestData.Models data = TestData.experts(arena, dtype, N, 3, 41 + dtype.ordinal());
                    Tensor scores = TestData.experts(arena, DType.F32, N, 1, 5).models().get(0);
                    List<Tensor> fishers = TestData.experts(arena, dtype, N, 3, 6).models();
                    Tensor whole = Tensor.allocate(arena, DType.BF16, N), pieces = Tensor.allocate(arena, DType.BF16, N);
                    // About seven pieces: the bytes of the inputs, output and ranks, over 7.
                    long limit = (long) N * (4 * dtype.byteSize() + 2 + 4 * 3 + 16) / 7;
                    for (Map.Entry<String, MergeSpec> e : specs().entrySet()) {
                        MergeSpec s = e.getValue();
                        Tensor base = s.method() == MergeSpec.Method.LINEAR ? null : data.base();
                        Context.Selection select = s.method() == MergeSpec.Method.TASK_ARITHMETIC
                                ? new Context.Selection(scores, Float.floatToRawIntBits(0.02f)) : null;
                        List<Tensor> weights = s.method() == MergeSpec.Method.LINEAR ? fishers : null;
                        String what = device + " " + dtype + " " + e.getKey();
                        for (boolean extras : new boolean[] {false, true}) {
                            ctx.setMemoryLimit(0);
                            Context.MergeCounts a = ctx.merge(s, base, data.models(), extras ? select : null,
                                    extras ? weights : null, whole);
                            ctx.setMemoryLimit(limit);
                            Context.MergeCounts b = ctx.merge(s, base, data.models(), extras ? select : null,
                                    extras ? weights : null, pieces);
                            long at = whole.data().mismatch(pieces.data());
                            assertEquals(-1, at, what + (extras ? " with select/element weights" : "")
                                    + ": the merge in pieces differs at byte " + at);
                            assertEquals(a, b, what + ": counts");
                        }
                    }
                    // A row larger than the limit is one piece of its own; a negative limit is refused.
                    ctx.setMemoryLimit(1);
                    MergeSpec della = specs().get("della-l1");
                    ctx.merge(della, data.base(), data.models(), pieces);
                    ctx.setMemoryLimit(0);
                    ctx.merge(della, data.base(), data.models(), whole);
                    assertEquals(-1, whole.data().mismatch(pieces.data()), device + " " + dtype + ": one row per piece");
                    assertThrows(SmelterException.class, () -> ctx.setMemoryLimit(-1));
                }
    }
}
