package dev.smelter.io;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.Future;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** The read-ahead and write-behind threads of checkpoint streaming. */
class StreamingIoTest {
    @TempDir
    Path dir;

    static final long MiB = 1 << 20;

    /** A 16-step file of 1 MiB steps, mapped; the test's arena owns the mapping. */
    List<List<MemorySegment>> steps(Arena arena) throws IOException {
        Path file = dir.resolve("data.bin");
        Files.write(file, new byte[(int) (16 * MiB)]);
        MemorySegment all;
        try (FileChannel ch = FileChannel.open(file, StandardOpenOption.READ)) {
            all = ch.map(FileChannel.MapMode.READ_ONLY, 0, 16 * MiB, arena);
        }
        List<List<MemorySegment>> steps = new ArrayList<>();
        for (int i = 0; i < 16; i++) steps.add(List.of(all.asSlice(i * MiB, MiB)));
        return steps;
    }

    static void waitFor(ReadAhead ahead, long bytes) throws InterruptedException {
        for (int i = 0; i < 500 && ahead.bytesLoaded() < bytes; i++) Thread.sleep(10);
    }

    @Test
    void readAheadStaysWithinItsBudgetAndFollowsTheConsumer() throws Exception {
        try (Arena arena = Arena.ofShared()) {
            List<List<MemorySegment>> steps = steps(arena);
            try (ReadAhead ahead = new ReadAhead(steps, 3 * MiB)) {
                // The consumer is on step 0: steps 0..4 may be loaded (the current one and 3 MiB ahead), no more.
                waitFor(ahead, 4 * MiB);
                Thread.sleep(100);
                assertEquals(4 * MiB, ahead.bytesLoaded(), "current step and 3 MiB ahead");
                ahead.consumed(5);  // steps 0..5 done: it skips step 5 and loads 6..9
                waitFor(ahead, 8 * MiB);
                Thread.sleep(100);
                assertEquals(8 * MiB, ahead.bytesLoaded());
                ahead.consumed(15);
                ahead.close();
                assertEquals(8 * MiB, ahead.bytesLoaded(), "steps the consumer passed are not loaded");
            }
            // Heap segments and an empty plan are fine; a budget of 0 still reads the next step.
            try (ReadAhead ahead = new ReadAhead(List.of(List.of(MemorySegment.ofArray(new byte[8]))), 0)) {
                ahead.consumed(0);
            }
            new ReadAhead(List.of(), 0).close();
            try (ReadAhead ahead = new ReadAhead(steps, 0)) {
                waitFor(ahead, 2 * MiB);
                Thread.sleep(100);
                assertEquals(2 * MiB, ahead.bytesLoaded(), "budget 0: the current and the next step");
            }
        }
    }

    static final List<CheckpointWriter.TensorSpec> SPECS = List.of(
            new CheckpointWriter.TensorSpec("a", SafetensorsDType.BF16, new long[] {1000}),
            new CheckpointWriter.TensorSpec("b", SafetensorsDType.BF16, new long[] {1000}),
            new CheckpointWriter.TensorSpec("c", SafetensorsDType.BF16, new long[] {1000}));

    @Test
    void writeBehindWritesEverythingInOrderFromTwoBuffers() throws IOException {
        Path out = dir.resolve("ok");
        try (Arena arena = Arena.ofShared();  // the write-behind thread reads the buffers
                CheckpointWriter w = new CheckpointWriter(out, SPECS, 1 << 20, Map.of(), false);
                WriteBehind behind = new WriteBehind()) {
            MemorySegment[] buffers = {arena.allocate(2000), arena.allocate(2000)};
            Future<?>[] writes = new Future<?>[2];
            for (int i = 0; i < SPECS.size(); i++) {
                int b = i & 1;
                behind.await(writes[b]);
                buffers[b].fill((byte) (i + 1));
                writes[b] = behind.write(w, SPECS.get(i).name(), buffers[b]);
            }
            behind.finish();
            w.commit();
        }
        try (Checkpoint c = Checkpoint.open(out)) {
            for (int i = 0; i < SPECS.size(); i++) {
                MemorySegment d = c.data(SPECS.get(i).name());
                for (long j = 0; j < d.byteSize(); j++) assertEquals(i + 1, d.get(ValueLayout.JAVA_BYTE, j));
            }
        }
    }

    @Test
    void aFailedWriteFailsTheNextCallAndNothingIsLeftBehind() throws IOException {
        Path out = dir.resolve("failed");
        try (Arena arena = Arena.ofShared();  // the write-behind thread reads the buffers
                CheckpointWriter w = new CheckpointWriter(out, SPECS, 1 << 20, Map.of(), false);
                WriteBehind behind = new WriteBehind()) {
            Future<?> bad = behind.write(w, "a", arena.allocate(3));  // wrong size: fails on the write-behind thread
            IOException e = assertThrows(IOException.class, () -> {
                behind.await(bad);
            });
            assertTrue(e.getMessage().contains("tensor a: 3 bytes given, 2000 planned"), e.getMessage());
            assertThrows(IOException.class, () -> behind.write(w, "b", arena.allocate(2000)), "later writes fail too");
            assertThrows(IOException.class, behind::finish);
        }
        try (Stream<Path> s = Files.list(dir)) {
            assertEquals(List.of(), s.toList(), "neither output nor temporary directory remains");
        }
    }
}
