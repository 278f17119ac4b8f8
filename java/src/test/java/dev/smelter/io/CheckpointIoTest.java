package dev.smelter.io;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class CheckpointIoTest {
    @TempDir
    Path dir;

    static final List<CheckpointWriter.TensorSpec> SPECS = List.of(
            new CheckpointWriter.TensorSpec("a.weight", SafetensorsDType.F32, new long[] {3, 5}),
            new CheckpointWriter.TensorSpec("b.weight", SafetensorsDType.BF16, new long[] {7}),
            new CheckpointWriter.TensorSpec("c.weight", SafetensorsDType.F16, new long[] {2, 2, 2}),
            new CheckpointWriter.TensorSpec("position_ids", SafetensorsDType.I64, new long[] {4}),
            new CheckpointWriter.TensorSpec("empty", SafetensorsDType.F32, new long[] {0, 3}));

    static MemorySegment bytes(Arena arena, long n, int seed) {
        MemorySegment s = arena.allocate(Math.max(n, 1)).asSlice(0, n);
        for (long i = 0; i < n; i++) s.set(java.lang.foreign.ValueLayout.JAVA_BYTE, i, (byte) (i * 31 + seed));
        return s;
    }

    void writeAll(Path out, long shardBytes) throws IOException {
        try (Arena arena = Arena.ofConfined();
                CheckpointWriter w = new CheckpointWriter(out, SPECS, shardBytes, Map.of("format", "pt"), false)) {
            for (int i = SPECS.size() - 1; i >= 0; i--) w.write(SPECS.get(i).name(), bytes(arena, SPECS.get(i).byteSize(), i));
            w.commit();
        }
    }

    /** The metadata's order in the header does not depend on the map's iteration order: same input, same bytes. */
    @Test
    void metadataIsWrittenInOneOrder() throws IOException {
        java.util.LinkedHashMap<String, String> forward = new java.util.LinkedHashMap<>(), backward = new java.util.LinkedHashMap<>();
        for (String k : List.of("format", "merged_by", "zeta", "alpha")) forward.put(k, k + "!");
        List<String> keys = List.of("alpha", "zeta", "merged_by", "format");
        for (String k : keys) backward.put(k, k + "!");
        Path a = dir.resolve("meta-a").resolve("m"), b = dir.resolve("meta-b").resolve("m");
        for (var run : List.of(Map.entry(a, forward), Map.entry(b, backward)))
            try (Arena arena = Arena.ofConfined();
                    CheckpointWriter w = new CheckpointWriter(run.getKey(), SPECS, 1 << 20, run.getValue(), false)) {
                for (int i = 0; i < SPECS.size(); i++) w.write(SPECS.get(i).name(), bytes(arena, SPECS.get(i).byteSize(), i));
                w.commit();
            }
        assertEquals(-1, Files.mismatch(a.resolve(Checkpoint.SINGLE), b.resolve(Checkpoint.SINGLE)));
    }

    /** A sharded checkpoint named through ".." (smelter info ../base) is the same checkpoint. */
    @Test
    void aPathThroughDotDotOpens() throws IOException {
        Path out = dir.resolve("dotdot").resolve("ckpt");
        writeAll(out, 40);
        Files.createDirectories(dir.resolve("dotdot/elsewhere"));
        try (Checkpoint c = Checkpoint.open(dir.resolve("dotdot/elsewhere/../ckpt"))) {
            assertEquals(SPECS.size(), c.tensorNames().size());
        }
    }

    @Test
    void roundTripSingleAndSharded() throws IOException {
        for (long shard : new long[] {1 << 20, 40}) {
            Path out = dir.resolve("out-" + shard);
            writeAll(out, shard);
            try (Arena arena = Arena.ofConfined(); Checkpoint c = Checkpoint.open(out)) {
                assertEquals(SPECS.stream().map(CheckpointWriter.TensorSpec::name).toList(), c.tensorNames());
                for (int i = 0; i < SPECS.size(); i++) {
                    TensorInfo t = c.info(SPECS.get(i).name());
                    assertEquals(SPECS.get(i).dtype(), t.dtype());
                    assertArrayEquals(SPECS.get(i).shape(), t.shape());
                    assertEquals(-1, c.data(t.name()).mismatch(bytes(arena, t.byteSize(), i)));
                }
                assertEquals(shard == 40, Files.exists(out.resolve(Checkpoint.INDEX)));
            }
            try (Stream<Path> s = Files.list(dir)) {
                assertTrue(s.noneMatch(p -> p.getFileName().toString().startsWith(".")), "no temporary directory left");
            }
        }
    }

    /** Writes a safetensors file by hand, byte by byte per the format description. */
    static Path handWritten(Path file, String header, byte[] data) throws IOException {
        byte[] h = header.getBytes(StandardCharsets.UTF_8);
        ByteBuffer b = ByteBuffer.allocate(8 + h.length + data.length).order(ByteOrder.LITTLE_ENDIAN);
        b.putLong(h.length).put(h).put(data);
        Files.write(file, b.array());
        return file;
    }

    @Test
    void readsAnIndependentlyEncodedFile() throws IOException {
        Path f = handWritten(dir.resolve("x.safetensors"),
                "{\"__metadata__\":{\"k\":\"v\"},\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                        + "\"i\":{\"dtype\":\"I8\",\"shape\":[3],\"data_offsets\":[8,11]}}",
                new byte[] {0, 0, (byte) 0x80, 0x3f, 0, 0, 0, 0x40, 1, 2, 3});
        try (Checkpoint c = Checkpoint.open(f)) {
            assertEquals(List.of("w", "i"), c.tensorNames());
            assertEquals("v", c.metadata().get("k"));
            assertArrayEquals(new float[] {1f, 2f}, c.tensor("w").toFloatArray());
            assertThrows(IllegalArgumentException.class, () -> c.tensor("i"), "I8 is not mergeable");
        }
    }

    void bad(String header, byte[] data, String fragment) throws IOException {
        Path f = handWritten(dir.resolve("bad.safetensors"), header, data);
        CheckpointFormatException e = assertThrows(CheckpointFormatException.class, () -> Checkpoint.open(f).close());
        assertTrue(e.getMessage().contains(fragment) && e.getMessage().contains("bad.safetensors"),
                "message '" + e.getMessage() + "' lacks '" + fragment + "'");
    }

    @Test
    void corruptFilesAreRejectedWithTheFileAndTensorNamed() throws IOException {
        String w = "\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}";
        bad("{" + w + "}", new byte[4], "tensor 'w': data_offsets [0, 8] run past the 4-byte data section");
        bad("{" + w + "}", new byte[12], "trailing bytes");
        bad("{\"w\":{\"dtype\":\"F33\",\"shape\":[2],\"data_offsets\":[0,8]}}", new byte[8], "tensor 'w': unknown dtype 'F33'");
        bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", new byte[8], "tensor 'w': shape [3] of F32 is 12 bytes");
        bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", new byte[8], "is not a non-negative 64-bit integer");
        bad("{" + w + ",\"v\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", new byte[8], "overlap tensor 'w'");
        bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", new byte[8], "tensor 'w': gap of 4 bytes before it");
        bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904,4],\"data_offsets\":[0,8]}}", new byte[8], "overflows");
        bad("[1,2]", new byte[0], "not a JSON object");
        bad("{\"w\":", new byte[0], "not valid JSON");
        bad("{\"__metadata__\":{\"k\":1}}", new byte[0], "__metadata__ entry 'k' is NUMBER, not a string");
        bad("{" + w + "," + w + "}", new byte[8], "tensor 'w': duplicate tensor name");
        Path shortFile = dir.resolve("short.safetensors");
        Files.write(shortFile, new byte[] {1, 2, 3});
        assertTrue(assertThrows(CheckpointFormatException.class, () -> Checkpoint.open(shortFile)).getMessage().contains("too short"));
        Path huge = dir.resolve("huge.safetensors");
        Files.write(huge, ByteBuffer.allocate(16).order(ByteOrder.LITTLE_ENDIAN).putLong(1000).array());
        assertTrue(assertThrows(CheckpointFormatException.class, () -> Checkpoint.open(huge)).getMessage().contains("runs past the end"));
    }

    @Test
    void indexProblemsAreRejected() throws IOException {
        Path out = dir.resolve("sharded");
        writeAll(out, 40);
        Path index = out.resolve(Checkpoint.INDEX);
        String original = Files.readString(index);
        Files.writeString(index, original.replace("\"a.weight\"", "\"z.weight\""));
        String m = assertThrows(CheckpointFormatException.class, () -> Checkpoint.open(out)).getMessage();
        assertTrue(m.contains("tensor a.weight is not in") || m.contains("z.weight"), m);
        Files.writeString(index, original.replaceFirst("model-00001-of-0000\\d.safetensors", "../escape.safetensors"));
        assertTrue(assertThrows(CheckpointFormatException.class, () -> Checkpoint.open(out)).getMessage().contains("outside"));
        Files.writeString(index, original);
        try (Checkpoint c = Checkpoint.open(out)) {
            assertEquals(SPECS.size(), c.tensorNames().size());
        }
    }

    @Test
    void failedWritesLeaveNothingThatLooksFinished() throws IOException {
        Path out = dir.resolve("never");
        try (Arena arena = Arena.ofConfined(); CheckpointWriter w = new CheckpointWriter(out, SPECS, 1 << 20, Map.of(), false)) {
            w.write("a.weight", bytes(arena, 60, 0));
            assertThrows(IllegalStateException.class, w::commit, "tensors missing");
            assertThrows(IllegalArgumentException.class, () -> w.write("b.weight", bytes(arena, 3, 0)), "wrong size");
            assertThrows(IllegalStateException.class, () -> w.write("a.weight", bytes(arena, 60, 0)), "written twice");
        }
        try (Stream<Path> s = Files.list(dir)) {
            assertEquals(List.of(), s.toList(), "neither output nor temporary directory remains");
        }
        Path existing = dir.resolve("existing");
        Files.createDirectories(existing);
        Files.writeString(existing.resolve("keep.txt"), "x");
        assertThrows(IOException.class, () -> new CheckpointWriter(existing, SPECS, 1 << 20, Map.of(), false).close());
        assertTrue(Files.exists(existing.resolve("keep.txt")));
    }

    @Test
    void overwriteReplacesOnlyWhenComplete() throws IOException {
        Path out = dir.resolve("model");
        writeAll(out, 1 << 20);
        try (Arena arena = Arena.ofConfined(); CheckpointWriter w = new CheckpointWriter(out, SPECS, 1 << 20, Map.of(), true)) {
            w.write("a.weight", bytes(arena, 60, 9));
        }  // abandoned: the old checkpoint must be intact
        try (Checkpoint c = Checkpoint.open(out); Arena arena = Arena.ofConfined()) {
            assertEquals(-1, c.data("a.weight").mismatch(bytes(arena, 60, 0)));
        }
        assertFalse(Files.exists(dir.resolve(".model.old")));
    }
}
