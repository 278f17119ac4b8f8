package dev.smelter;

import dev.smelter.methods.SceMerge;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.lang.foreign.Arena;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

/**
 * CPU and CUDA must agree bit for bit: both run merge_element() with the same f32 operations in
 * the same order, the same exact thresholds and the same Philox draws. Skipped (with the reason
 * printed) where no GPU is visible; run on the GPU machine with scripts/gpu-test.sh.
 */
class CudaAgreementTest {
    @BeforeEach
    void needsCuda() {
        TestData.assumeCuda();
    }

    @Test
    void hostTensorsStagedThroughTheGpuGiveIdenticalBytes() {
        try (Arena arena = Arena.ofConfined(); Context cpu = Smelter.open(Device.cpu()); Context gpu = Smelter.open(Device.cuda(0))) {
            for (DType in : DType.values())
                for (int size : new int[] {1, 7, 4099, 1_000_003}) {
                    TestData.Models data = TestData.experts(arena, in, size, 3, size + in.ordinal());
                    for (Map.Entry<String, MergeSpec> e : MergeReferenceTest.specs(3).entrySet())
                        for (DType out : DType.values()) {
                            MergeSpec s = e.getValue();
                            Tensor base = s.method() == MergeSpec.Method.LINEAR ? null : data.base();
                            Tensor a = Tensor.allocate(arena, out, size), b = Tensor.allocate(arena, out, size);
                            Context.MergeCounts ca = cpu.merge(s, base, data.models(), a);
                            Context.MergeCounts cb = gpu.merge(s, base, data.models(), b);
                            long at = a.data().mismatch(b.data());
                            assertEquals(-1, at, e.getKey() + " " + in + "->" + out + " n=" + size + ": CPU and CUDA differ at byte " + at);
                            assertEquals(ca, cb, e.getKey() + " sign counts");
                        }
                }
        }
    }

    @Test
    void newerMethodsGiveIdenticalBytes() {
        // Breadcrumbs, DELLA (CUB row sort vs the CPU's radix sort), the position select, the unweighted
        // election, Fisher weights, the variance, and whole SCE merges.
        try (Arena arena = Arena.ofConfined(); Context cpu = Smelter.open(Device.cpu()); Context gpu = Smelter.open(Device.cuda(0))) {
            for (DType in : DType.values())
                for (int size : new int[] {1, 91, 4095, 1_000_090}) {
                    TestData.Models data = TestData.experts(arena, in, size, 3, size + 5L * in.ordinal());
                    for (Map.Entry<String, MergeSpec> e : MethodsReferenceTest.specs(3, size).entrySet()) {
                        MergeSpec s = e.getValue();
                        Tensor base = s.method() == MergeSpec.Method.LINEAR ? null : data.base();
                        DType out = s.method() == MergeSpec.Method.VARIANCE ? DType.F32 : in;
                        Context.Selection select = null;
                        List<Tensor> ew = null;
                        if (e.getKey().startsWith("sum-unweighted")) {
                            MethodsReferenceTest.Select r = MethodsReferenceTest.Select.random(arena, size, size);
                            select = new Context.Selection(r.scores(), r.threshold());
                        }
                        if (e.getKey().startsWith("fisher")) ew = data.models();  // any non-negative-ish weights do
                        Tensor a = Tensor.allocate(arena, out, size), b = Tensor.allocate(arena, out, size);
                        cpu.merge(s, base, data.models(), select, ew, a);
                        gpu.merge(s, base, data.models(), select, ew, b);
                        long at = a.data().mismatch(b.data());
                        assertEquals(-1, at, e.getKey() + " " + in + " n=" + size + ": CPU and CUDA differ at byte " + at);
                    }
                    for (SceMerge.Variant v : SceMerge.Variant.values()) {
                        Tensor a = Tensor.allocate(arena, in, size), b = Tensor.allocate(arena, in, size);
                        Tensor scratch = Tensor.allocate(arena, DType.F32, size);
                        SceMerge.merge(cpu, data.base(), data.models(), 0.3, v, "t", scratch, a);
                        SceMerge.merge(gpu, data.base(), data.models(), 0.3, v, "t", scratch, b);
                        assertEquals(-1, a.data().mismatch(b.data()), "SCE " + v + " " + in + " n=" + size);
                    }
                }
        }
    }

    @Test
    void deviceTensorsAndManyModels() {
        try (Arena arena = Arena.ofConfined(); Context cpu = Smelter.open(Device.cpu()); Context gpu = Smelter.open(Device.cuda(0))) {
            for (int n : new int[] {1, 2, 5, 9, 17, 64}) {
                int size = 70_001;
                TestData.Models data = TestData.experts(arena, DType.BF16, size, n, n);
                List<Tensor> owned = new ArrayList<>();
                Tensor dBase = upload(gpu, data.base(), owned);
                List<Tensor> dModels = new ArrayList<>();
                for (Tensor t : data.models()) dModels.add(upload(gpu, t, owned));
                Tensor dOut = gpu.allocate(DType.BF16, size, Tensor.Memory.DEVICE);
                owned.add(dOut);
                for (Map.Entry<String, MergeSpec> e : MergeReferenceTest.specs(n).entrySet()) {
                    MergeSpec s = e.getValue();
                    boolean linear = s.method() == MergeSpec.Method.LINEAR;
                    Tensor a = Tensor.allocate(arena, DType.BF16, size), b = Tensor.allocate(arena, DType.BF16, size);
                    cpu.merge(s, linear ? null : data.base(), data.models(), a);
                    gpu.merge(s, linear ? null : dBase, dModels, dOut);
                    gpu.copy(b, dOut);
                    gpu.synchronize();
                    assertEquals(-1, a.data().mismatch(b.data()), e.getKey() + " with " + n + " device-resident models");
                }
                for (Tensor t : owned) gpu.free(t);
            }
        }
    }

    @Test
    void topKThresholdsAgree() {
        try (Arena arena = Arena.ofConfined(); Context cpu = Smelter.open(Device.cpu()); Context gpu = Smelter.open(Device.cuda(0))) {
            for (DType key : DType.values()) {
                List<TestData.Models> tensors = new ArrayList<>();
                for (int s : TopKTest.SIZES) tensors.add(TestData.experts(arena, key, s, 2, s * 3L));
                long total = 0;
                for (int s : TopKTest.SIZES) total += s;
                for (long k : new long[] {1, total / 3, total})
                    assertEquals(TopKTest.threshold(cpu, key, tensors, 0, k), TopKTest.threshold(gpu, key, tensors, 0, k),
                            key + " k=" + k);
            }
        }
    }

    @Test
    void pairStatisticsAreBitIdentical() {
        try (Arena arena = Arena.ofConfined(); Context cpu = Smelter.open(Device.cpu()); Context gpu = Smelter.open(Device.cuda(0))) {
            for (DType dtype : DType.values())
                for (int n : new int[] {1, 3, 9})
                    for (int size : new int[] {1, 257, 65_537, 17_000_001}) {
                        if (size > 1_000_000 && n > 3) continue;
                        List<Tensor> v = PairStatsTest.vectors(arena, dtype, n + 1, size, new java.util.SplittableRandom(size + n));
                        int[] thresholds = new int[n];
                        for (int i = 0; i < n; i++) thresholds[i] = 0x3000 + 0x100 * i;
                        PairStats a = new PairStats(n), b = new PairStats(n), c = new PairStats(n);
                        cpu.pairStats(v.subList(1, n + 1), v.get(0), thresholds, DType.BF16, a);
                        gpu.pairStats(v.subList(1, n + 1), v.get(0), thresholds, DType.BF16, b);
                        List<Tensor> owned = new ArrayList<>();
                        List<Tensor> dv = new ArrayList<>();
                        for (Tensor t : v.subList(1, n + 1)) dv.add(upload(gpu, t, owned));
                        gpu.pairStats(dv, upload(gpu, v.get(0), owned), thresholds, DType.BF16, c);
                        owned.forEach(gpu::free);
                        String what = dtype + " n=" + n + " size=" + size;
                        for (PairStats g : List.of(b, c))
                            for (int i = 0; i < n; i++) {
                                assertEquals(a.nonfinite(i), g.nonfinite(i), what);
                                for (int j = 0; j < n; j++) {
                                    assertEquals(Double.doubleToRawLongBits(a.dot(i, j)), Double.doubleToRawLongBits(g.dot(i, j)),
                                            what + " dot " + i + "," + j + ": " + a.dot(i, j) + " vs " + g.dot(i, j));
                                    assertEquals(Double.doubleToRawLongBits(a.squaredDistance(i, j)),
                                            Double.doubleToRawLongBits(g.squaredDistance(i, j)), what + " squared distance " + i + "," + j);
                                    assertEquals(a.signConflicts(i, j), g.signConflicts(i, j), what);
                                    assertEquals(a.bothNonzero(i, j), g.bothNonzero(i, j), what);
                                    assertEquals(a.bothKept(i, j), g.bothKept(i, j), what);
                                }
                            }
                    }
        }
    }

    @Test
    void deviceOutOfMemoryIsAnExceptionNotACrash() {
        try (Context gpu = Smelter.open(Device.cuda(0))) {
            SmelterException e = assertThrows(SmelterException.class,
                    () -> gpu.allocate(DType.F32, 1L << 42, Tensor.Memory.DEVICE));
            assertEquals(Status.OUT_OF_MEMORY, e.status(), e.getMessage());
            assertTrue(e.getMessage().contains("cudaErrorMemoryAllocation"), e.getMessage());
            gpu.synchronize();  // the context stays usable
        }
    }

    private static Tensor upload(Context gpu, Tensor host, List<Tensor> owned) {
        Tensor d = gpu.allocate(host.dtype(), host.count(), Tensor.Memory.DEVICE);
        gpu.copy(d, host);
        owned.add(d);
        return d;
    }
}
