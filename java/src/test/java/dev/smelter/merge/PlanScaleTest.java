package dev.smelter.merge;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.smelter.Device;
import dev.smelter.config.MergeConfig;
import dev.smelter.io.CheckpointWriter;
import dev.smelter.io.SafetensorsDType;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** Planning is linear in the tensor count: 200k tensors (a large MoE's) plan in seconds, not minutes. */
class PlanScaleTest {
    @TempDir
    static Path dir;

    static final int TENSORS = 200_000;

    static void checkpoint(Path out) throws Exception {
        List<CheckpointWriter.TensorSpec> specs = new ArrayList<>();
        for (int t = 0; t < TENSORS; t++)
            specs.add(new CheckpointWriter.TensorSpec("model.layers." + (t / 1000) + ".experts." + (t % 1000) + ".w",
                    SafetensorsDType.BF16, new long[] {2}));
        try (Arena arena = Arena.ofConfined();
                CheckpointWriter w = new CheckpointWriter(out, specs, 1L << 30, Map.of("format", "pt"), false)) {
            MemorySegment data = arena.allocate(4);
            for (CheckpointWriter.TensorSpec s : specs) w.write(s.name(), data);
            w.commit();
        }
    }

    @Test
    void twoHundredThousandTensorsPlanInSeconds() throws Exception {
        checkpoint(dir.resolve("base"));
        checkpoint(dir.resolve("a"));
        Files.writeString(dir.resolve("ta.yml"), """
                merge_method: task_arithmetic
                base_model: base
                models: [{model: a, parameters: {weight: 0.5}}]
                """);
        long t0 = System.nanoTime();
        try (CheckpointMerger m = new CheckpointMerger(MergeConfig.load(dir.resolve("ta.yml")),
                new CheckpointMerger.Options(Device.cpu(), dir.resolve("out"), 1L << 30, false, false))) {
            CheckpointMerger.Plan plan = m.plan();
            assertEquals(TENSORS, plan.tensors().size());
            double planned = (System.nanoTime() - t0) / 1e9;
            assertTrue(planned < 15, "opening and planning 200k tensors took " + planned + " s");
            long t1 = System.nanoTime();
            m.run(plan, done -> {});
            double merged = (System.nanoTime() - t1) / 1e9;
            System.out.printf("200k tensors: planned in %.1f s, merged in %.1f s%n", planned, merged);
            assertTrue(merged < 60, "merging 200k tiny tensors took " + merged + " s");
        }
    }
}
