package dev.smelter;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.lang.foreign.Arena;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.function.Executable;

/** Bad arguments through the Java API and the ABI give exceptions that say what is wrong. */
class ErrorTest {
    static void expect(Status status, String fragment, Executable call) {
        SmelterException e = assertThrows(SmelterException.class, call);
        assertEquals(status, e.status(), e.getMessage());
        assertTrue(e.getMessage().contains(fragment), "message '" + e.getMessage() + "' lacks '" + fragment + "'");
    }

    @Test
    void invalidMerges() {
        try (Arena arena = Arena.ofConfined(); Context ctx = Smelter.open(Device.cpu())) {
            Tensor a = TestData.tensor(arena, DType.F32, new float[] {1, 2, 3});
            Tensor shorter = TestData.tensor(arena, DType.F32, new float[] {1, 2});
            Tensor bf = TestData.tensor(arena, DType.BF16, new float[] {1, 2, 3});
            Tensor out = Tensor.allocate(arena, DType.F32, 3);
            float[] w2 = {1, 1};
            expect(Status.INVALID_ARGUMENT, "models[1] has 2 elements", () -> ctx.merge(MergeSpec.linear(w2), null, List.of(a, shorter), out));
            expect(Status.INVALID_ARGUMENT, "models[1] is bf16, models[0] is f32", () -> ctx.merge(MergeSpec.linear(w2), null, List.of(a, bf), out));
            expect(Status.INVALID_ARGUMENT, "base is bf16", () -> ctx.merge(MergeSpec.taskArithmetic(1f), bf, List.of(a), out));
            expect(Status.INVALID_ARGUMENT, "out has 2 elements", () -> ctx.merge(MergeSpec.linear(1f), null, List.of(a), shorter));
            for (float bad : new float[] {0f, 1.5f, Float.NaN, -0.1f})
                expect(Status.INVALID_ARGUMENT, "densities[0] must be in (0, 1]",
                        () -> ctx.merge(MergeSpec.ties(new float[] {1}, new float[] {bad}), a, List.of(a), out));
            expect(Status.INVALID_ARGUMENT, "weights[0] is not finite",
                    () -> ctx.merge(MergeSpec.taskArithmetic(Float.POSITIVE_INFINITY), a, List.of(a), out));
            expect(Status.INVALID_ARGUMENT, "LINEAR takes no sparsify",
                    () -> ctx.merge(MergeSpec.linear(1f).toBuilder().sparsify(MergeSpec.Sparsify.MAGNITUDE).build(), null, List.of(a), out));
            expect(Status.INVALID_ARGUMENT, "rescale needs a sparsify method",
                    () -> ctx.merge(MergeSpec.taskArithmetic(1f).toBuilder().rescale(MergeSpec.Rescale.L1).build(), a, List.of(a), out));
            expect(Status.INVALID_ARGUMENT, "thresholds are given but sparsify is not MAGNITUDE",
                    () -> ctx.merge(MergeSpec.taskArithmetic(1f).toBuilder().thresholds(new int[] {1}).build(), a, List.of(a), out));
            expect(Status.INVALID_ARGUMENT, "weights that do not sum to 0",
                    () -> ctx.merge(MergeSpec.linear(1f, -1f), null, List.of(a, a), out));
            expect(Status.INVALID_ARGUMENT, "lambda must be finite",
                    () -> ctx.merge(MergeSpec.taskArithmetic(1f).toBuilder().lambda(Float.NaN).build(), a, List.of(a), out));
            expect(Status.INVALID_ARGUMENT, "partially overlaps",
                    () -> ctx.merge(MergeSpec.linear(1f), null, List.of(a.slice(0, 2)), new Tensor(a.data().asSlice(4), 2, DType.F32, Tensor.Memory.HOST)));
            Tensor device = new Tensor(a.data(), 3, DType.F32, Tensor.Memory.DEVICE);
            expect(Status.INVALID_ARGUMENT, "device memory, which a CPU context cannot read",
                    () -> ctx.merge(MergeSpec.linear(1f), null, List.of(device), out));
            expect(Status.UNSUPPORTED, "CPU context has no device memory", () -> ctx.allocate(DType.F32, 4, Tensor.Memory.DEVICE));
            assertThrows(IllegalArgumentException.class, () -> ctx.merge(MergeSpec.linear(1f), null, List.of(a, a), out),
                    "spec and model list disagree");
            assertThrows(IllegalArgumentException.class, () -> ctx.merge(MergeSpec.ties(new float[] {1}, new float[] {0.5f}), null, List.of(a), out),
                    "task arithmetic without base");
            // In-place merge into the base is allowed (element-wise).
            ctx.merge(MergeSpec.taskArithmetic(1f), a, List.of(TestData.tensor(arena, DType.F32, new float[] {2, 3, 4})), a);
            assertEquals(4f, a.getFloat(2));
        }
    }

    @Test
    void devicesAndContexts() {
        if (Smelter.buildInfo().contains("no cuda"))  // built without nvcc (-Dsmelter.cuda=OFF): the build says so
            expect(Status.UNSUPPORTED, "built without CUDA", () -> Smelter.open(Device.cuda(57)).close());
        else
            expect(Status.NO_DEVICE, "cannot open cuda:57", () -> Smelter.open(Device.cuda(57)).close());
        Context ctx = Smelter.open(Device.cpu());
        ctx.close();
        ctx.close();
        assertThrows(IllegalStateException.class, () -> ctx.synchronize());
        assertThrows(IllegalArgumentException.class, () -> Device.parse("tpu"));
        assertEquals(Device.cuda(3), Device.parse("cuda:3"));
    }
}
