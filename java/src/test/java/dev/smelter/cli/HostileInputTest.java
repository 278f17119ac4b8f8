package dev.smelter.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.smelter.io.CheckpointWriter;
import dev.smelter.io.SafetensorsDType;
import java.lang.foreign.Arena;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** Valid but unusual checkpoints: huge layer indices, empty tensors with huge dimensions. A message names them. */
class HostileInputTest {
    @TempDir
    Path dir;

    void checkpoint(Path out, List<CheckpointWriter.TensorSpec> specs) throws Exception {
        checkpoint(out, specs, (byte) 0);
    }

    /** Every tensor's bytes are {@code fill}. */
    void checkpoint(Path out, List<CheckpointWriter.TensorSpec> specs, byte fill) throws Exception {
        try (Arena arena = Arena.ofConfined();
                CheckpointWriter w = new CheckpointWriter(out, specs, 1L << 30, Map.of("format", "pt"), false)) {
            for (CheckpointWriter.TensorSpec s : specs) {
                long bytes = s.dtype().sizeInBytes(java.util.Arrays.stream(s.shape()).reduce(1, (x, y) -> x * y));
                w.write(s.name(), arena.allocate(Math.max(1, bytes)).asSlice(0, bytes).fill(fill));
            }
            w.commit();
        }
    }

    CliRun.Run merge(List<CheckpointWriter.TensorSpec> specs) throws Exception {
        checkpoint(dir.resolve("base"), specs);
        checkpoint(dir.resolve("a"), specs);
        Files.writeString(dir.resolve("c.yml"), """
                merge_method: task_arithmetic
                base_model: base
                models: [{model: a, parameters: {weight: 0.5}}]
                """);
        return CliRun.cli("merge", "--device", "cpu", "-q", dir.resolve("c.yml").toString(), dir.resolve("out").toString());
    }

    /** FP8 weights: copied where every input holds the same bytes; where they differ, refused naming tensor and dtype. */
    @Test
    void fp8TensorsAreCopiedOnlyWhenIdentical() throws Exception {
        List<CheckpointWriter.TensorSpec> specs = List.of(
                new CheckpointWriter.TensorSpec("model.layers.0.mlp.up_proj.weight", SafetensorsDType.F8_E4M3, new long[] {4, 8}),
                new CheckpointWriter.TensorSpec("model.layers.0.mlp.up_proj.weight_scale_inv", SafetensorsDType.F32, new long[] {1, 1}),
                new CheckpointWriter.TensorSpec("model.norm.weight", SafetensorsDType.BF16, new long[] {8}));
        CliRun.Run same = merge(specs);
        assertEquals(0, same.code(), same.err());
        try (var c = dev.smelter.io.Checkpoint.open(dir.resolve("out"))) {
            assertEquals(SafetensorsDType.F8_E4M3, c.info("model.layers.0.mlp.up_proj.weight").dtype());
        }
        checkpoint(dir.resolve("a2"), specs, (byte) 0x21);
        Files.writeString(dir.resolve("c2.yml"), """
                merge_method: task_arithmetic
                base_model: base
                models: [{model: a2, parameters: {weight: 0.5}}]
                """);
        CliRun.Run r = CliRun.cli("merge", "--device", "cpu", "-q", dir.resolve("c2.yml").toString(), dir.resolve("out2").toString());
        assertEquals(1, r.code(), r.err());
        assertTrue(r.err().contains("model.layers.0.mlp.up_proj.weight is F8_E4M3 and differs"), r.err());
        assertFalse(Files.exists(dir.resolve("out2")));
    }

    /** Outputs that cannot be: under a read-only folder, or a mount point. Each message names the output and why. */
    @Test
    void unwritableOutputsAreNamed() throws Exception {
        merge(List.of(new CheckpointWriter.TensorSpec("model.norm.weight", SafetensorsDType.BF16, new long[] {8})));
        String cfg = dir.resolve("c.yml").toString();
        CliRun.Run r = CliRun.cli("merge", "--device", "cpu", "-q", cfg, "/proc/smelter-output");
        assertEquals(1, r.code(), r.err());
        assertTrue(r.err().contains("cannot write the output /proc/smelter-output") && r.err().contains("writable folder"), r.err());
        CliRun.Run m = CliRun.cli("merge", "--device", "cpu", "-q", cfg, "/proc", "--overwrite");
        assertTrue(m.code() != 0 && m.err().contains("/proc is a mount point"), m.err());
    }

    @Test
    void anIndexThatIsNotUtf8IsNamedWithTheOffset() throws Exception {
        Path ckpt = dir.resolve("sharded");
        List<CheckpointWriter.TensorSpec> specs = List.of(
                new CheckpointWriter.TensorSpec("a", SafetensorsDType.BF16, new long[] {64}),
                new CheckpointWriter.TensorSpec("b", SafetensorsDType.BF16, new long[] {64}));
        try (Arena arena = Arena.ofConfined(); CheckpointWriter w = new CheckpointWriter(ckpt, specs, 100, Map.of(), false)) {
            for (CheckpointWriter.TensorSpec s : specs) w.write(s.name(), arena.allocate(128));
            w.commit();
        }
        Path index = ckpt.resolve(dev.smelter.io.Checkpoint.INDEX);
        byte[] bytes = Files.readAllBytes(index);
        bytes[10] = (byte) 0xFF;
        Files.write(index, bytes);
        CliRun.Run r = CliRun.cli("info", ckpt.toString());
        assertTrue(r.err().contains(index.toString()) && r.err().contains("not valid UTF-8 at byte 10"), r.err());
    }

    @Test
    void aLayerIndexBeyondAnIntIsNamed() throws Exception {
        String name = "model.layers.99999999999.mlp.up_proj.weight";
        CliRun.Run r = merge(List.of(new CheckpointWriter.TensorSpec(name, SafetensorsDType.BF16, new long[] {2, 3})));
        assertTrue(r.err().contains(name) && !r.err().contains("For input string"), r.err());
        assertFalse(Files.exists(dir.resolve("out")));
    }

    @Test
    void anEmptyTensorWithAHugeDimensionMerges() throws Exception {
        CliRun.Run r = merge(List.of(
                new CheckpointWriter.TensorSpec("model.layers.0.empty.weight", SafetensorsDType.BF16, new long[] {1L << 62, 0}),
                new CheckpointWriter.TensorSpec("model.layers.0.mlp.up_proj.weight", SafetensorsDType.BF16, new long[] {4, 3})));
        assertEquals(0, r.code(), r.err());
        assertFalse(r.err().contains("overflow"), r.err());
    }
}
