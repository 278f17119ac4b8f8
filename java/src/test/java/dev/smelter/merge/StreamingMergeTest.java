package dev.smelter.merge;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.smelter.Context;
import dev.smelter.DType;
import dev.smelter.Device;
import dev.smelter.MergeSpec;
import dev.smelter.Smelter;
import dev.smelter.Tensor;
import dev.smelter.config.MergeConfig;
import dev.smelter.io.Checkpoint;
import dev.smelter.io.CheckpointWriter;
import dev.smelter.io.SafetensorsDType;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Whole-checkpoint merges stream: the host memory they allocate stays at two buffers of the largest tensor however
 * large the model, and the pipelined output (read-ahead, two buffers, write-behind) equals tensor-by-tensor merges.
 */
class StreamingMergeTest {
    @TempDir
    static Path dir;

    static final int TENSORS = 24;
    static final long ELEMENTS = 2L << 20;  // 4 MiB of bf16 per tensor, 96 MiB per checkpoint
    static final long MiB = 1 << 20;

    static void checkpoint(Path out, int seed) throws Exception {
        List<CheckpointWriter.TensorSpec> specs = new ArrayList<>();
        for (int t = 0; t < TENSORS; t++)
            specs.add(new CheckpointWriter.TensorSpec("model.layers." + t + ".mlp.up_proj.weight", SafetensorsDType.BF16,
                    new long[] {ELEMENTS / 512, 512}));
        try (Arena arena = Arena.ofConfined();
                CheckpointWriter w = new CheckpointWriter(out, specs, 40 * MiB, Map.of("format", "pt"), false)) {
            MemorySegment data = arena.allocate(ELEMENTS * 2);
            for (int t = 0; t < TENSORS; t++) {
                long x = seed * 0x9E3779B97F4A7C15L + t;
                for (long i = 0; i < ELEMENTS; i++) {
                    x = x * 6364136223846793005L + 1442695040888963407L;
                    float v = (float) ((x >>> 40) / (double) (1 << 24) - 0.5) * 0.04f;  // uniform in +-0.02, never all zero
                    data.setAtIndex(ValueLayout.JAVA_SHORT, i, (short) (Float.floatToRawIntBits(v) >>> 16));
                }
                w.write(specs.get(t).name(), data);
            }
            w.commit();
        }
    }

    @BeforeAll
    static void checkpoints() throws Exception {
        checkpoint(dir.resolve("base"), 1);
        checkpoint(dir.resolve("a"), 2);
        checkpoint(dir.resolve("b"), 3);
        Files.writeString(dir.resolve("ta.yml"), """
                merge_method: task_arithmetic
                base_model: base
                models:
                  - model: a
                    parameters: {weight: 0.6}
                  - model: b
                    parameters: {weight: 0.3}
                dtype: bfloat16
                """);
    }

    static CheckpointMerger.Summary merge(Path out) throws Exception {
        MergeConfig cfg = MergeConfig.load(dir.resolve("ta.yml"));
        try (CheckpointMerger m = new CheckpointMerger(cfg, new CheckpointMerger.Options(Device.cpu(), out, 40 * MiB,
                true, false))) {
            return m.run(m.plan(), done -> {});
        }
    }

    @Test
    void hostMemoryStaysAtOneTensorsBuffersAndTheOutputEqualsTensorByTensorMerges() throws Exception {
        merge(dir.resolve("warm-up"));  // JIT, heap and allocator settle
        long before = CheckpointMerger.anonymousResidentBytes();
        CheckpointMerger.Summary s = merge(dir.resolve("merged"));
        assertEquals(2 * 3 * ELEMENTS * 2 + 2 * ELEMENTS * 2, s.plan().peakHostBytes(),
                "two banks of the largest tensor's inputs (base and two models: one read ahead) and two output buffers");
        assertEquals(TENSORS * ELEMENTS * 2, s.bytesWritten());
        if (before > 0) {
            long grown = s.peakAnonymousBytes() - before;
            System.out.printf("streaming merge of %d MiB: anonymous memory grew by %.1f MiB (buffers %d MiB)%n",
                    s.bytesWritten() / MiB, grown / (double) MiB, s.plan().peakHostBytes() / MiB);
            // A merge that held the output (96 MiB) or an input in memory would grow by far more than this.
            assertTrue(grown < s.plan().peakHostBytes() + 40 * MiB, "anonymous memory grew by " + grown / MiB
                    + " MiB while merging " + s.bytesWritten() / MiB + " MiB");
        }
        try (Checkpoint base = Checkpoint.open(dir.resolve("base")); Checkpoint a = Checkpoint.open(dir.resolve("a"));
                Checkpoint b = Checkpoint.open(dir.resolve("b")); Checkpoint merged = Checkpoint.open(dir.resolve("merged"));
                Context ctx = Smelter.openCpu(1); Arena arena = Arena.ofConfined()) {
            Tensor expected = Tensor.allocate(arena, DType.BF16, ELEMENTS);
            assertEquals(base.tensorNames(), merged.tensorNames(), "every tensor, in order");
            assertTrue(merged.tensorNames().size() == TENSORS && Files.exists(dir.resolve("merged/model.safetensors.index.json")));
            for (String name : base.tensorNames()) {
                ctx.merge(MergeSpec.taskArithmetic(new float[] {0.6f, 0.3f}), base.tensor(name),
                        List.of(a.tensor(name), b.tensor(name)), expected);
                assertEquals(-1, expected.data().mismatch(merged.data(name)), name);
            }
        }
    }
}
