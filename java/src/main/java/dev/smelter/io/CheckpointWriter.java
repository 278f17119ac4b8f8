package dev.smelter.io;

import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.AtomicMoveNotSupportedException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.stream.Stream;

/**
 * Writes a (sharded) safetensors checkpoint so that it either appears complete or not at all:
 * everything goes into a hidden temporary directory beside the output, and {@link #commit()}
 * renames it into place after every tensor was written and synced. Closing without committing
 * (an error, a full disk, Ctrl-C) deletes the temporary directory.
 *
 * <p>Data is written with positional channel writes, never through a writable memory map, so a
 * full disk is an {@link IOException} naming the file, not a crash.
 */
public final class CheckpointWriter implements AutoCloseable {
    /** One output tensor: name, dtype, shape. */
    public record TensorSpec(String name, SafetensorsDType dtype, long[] shape) {
        long byteSize() {
            try {
                return dtype.sizeInBytes(TensorInfo.elements(shape));  // sub-byte types included
            } catch (ArithmeticException e) {
                throw new IllegalArgumentException("tensor " + name + ": shape " + java.util.Arrays.toString(shape)
                        + " of " + dtype + ": " + e.getMessage());
            }
        }
    }

    private record Placement(int shard, long position, long bytes) {}

    private final Path output;
    private final Path temp;
    private final boolean overwrite;
    private final List<String> shardNames = new ArrayList<>();
    private final List<FileChannel> channels = new ArrayList<>();
    private final Map<String, Placement> placements = new LinkedHashMap<>();
    private final Map<String, Integer> shardOf = new LinkedHashMap<>();
    private final Set<String> written = new HashSet<>();
    private final List<Long> unsynced = new ArrayList<>();  // bytes written per shard since its last sync
    private long totalBytes;
    private boolean committed;

    /**
     * Each shard is synced to disk after this many bytes written to it, so its writeback runs while later tensors
     * are computed (not all at {@link #commit()}) and dirty pages in the page cache stay bounded.
     */
    static final long SYNC_BYTES = 256L << 20;

    public CheckpointWriter(Path output, List<TensorSpec> tensors, long maxShardBytes, Map<String, String> metadata,
            boolean overwrite) throws IOException {
        if (maxShardBytes <= 0) throw new IllegalArgumentException("maxShardBytes must be positive");
        this.output = output.toAbsolutePath().normalize();
        this.overwrite = overwrite;
        checkOutput();
        Path parent = this.output.getParent();
        Files.createDirectories(parent);
        this.temp = WorkDirs.create(this.output, "tmp");
        try {
            List<List<TensorSpec>> shards = planShards(tensors, maxShardBytes);
            for (int s = 0; s < shards.size(); s++) {
                String name = shards.size() == 1 ? Checkpoint.SINGLE
                        : String.format("model-%05d-of-%05d.safetensors", s + 1, shards.size());
                shardNames.add(name);
                writeHeader(s, name, shards.get(s), metadata);
            }
        } catch (IOException | RuntimeException e) {
            close();
            throw e;
        }
    }

    private void checkOutput() throws IOException {
        if (!Files.exists(output)) return;
        if (!Files.isDirectory(output)) throw new IOException(output + " exists and is not a directory");
        WorkDirs.checkReplaceable(output);
        try (Stream<Path> s = Files.list(output)) {
            if (s.findAny().isPresent() && !overwrite)
                throw new IOException(output + " exists and is not empty (use --overwrite to replace it)");
        }
    }

    /** Greedy in the given order; a tensor larger than the limit gets a shard of its own. */
    private static List<List<TensorSpec>> planShards(List<TensorSpec> tensors, long max) {
        List<List<TensorSpec>> shards = new ArrayList<>();
        List<TensorSpec> current = new ArrayList<>();
        long bytes = 0;
        Set<String> seen = new HashSet<>();
        for (TensorSpec t : tensors) {
            if (!seen.add(t.name())) throw new IllegalArgumentException("tensor " + t.name() + " is listed twice");
            long b = t.byteSize();
            if (!current.isEmpty() && bytes + b > max) {
                shards.add(current);
                current = new ArrayList<>();
                bytes = 0;
            }
            current.add(t);
            bytes += b;
        }
        if (!current.isEmpty() || shards.isEmpty()) shards.add(current);
        return shards;
    }

    private void writeHeader(int shard, String fileName, List<TensorSpec> tensors, Map<String, String> metadata)
            throws IOException {
        ObjectNode root = SafetensorsFile.JSON.createObjectNode();
        ObjectNode meta = root.putObject("__metadata__");
        new java.util.TreeMap<>(metadata).forEach(meta::put);  // sorted: the same bytes whatever the map's order
        long offset = 0;
        for (TensorSpec t : tensors) {
            ObjectNode e = root.putObject(t.name());
            e.put("dtype", t.dtype().name());
            var shape = e.putArray("shape");
            for (long d : t.shape()) shape.add(d);
            long end = offset + t.byteSize();
            e.putArray("data_offsets").add(offset).add(end);
            placements.put(t.name(), new Placement(shard, offset, t.byteSize()));
            shardOf.put(t.name(), shard);
            offset = end;
        }
        byte[] json = SafetensorsFile.JSON.writeValueAsBytes(root);
        int padded = (json.length + 7) / 8 * 8;  // spaces to a multiple of 8, as the reference writer does
        ByteBuffer head = ByteBuffer.allocate(8 + padded).order(ByteOrder.LITTLE_ENDIAN);
        head.putLong(padded).put(json);
        while (head.hasRemaining()) head.put((byte) ' ');
        head.flip();
        Path file = temp.resolve(fileName);
        FileChannel ch = FileChannel.open(file, StandardOpenOption.CREATE_NEW, StandardOpenOption.WRITE);
        channels.add(ch);
        unsynced.add(0L);
        writeFully(ch, head, 0, file);
        // Shift this shard's placements past its header.
        long dataStart = 8L + padded;
        for (TensorSpec t : tensors) {
            Placement p = placements.get(t.name());
            placements.put(t.name(), new Placement(p.shard(), dataStart + p.position(), p.bytes()));
        }
        totalBytes += offset;
    }

    /** Writes one tensor's bytes (any order; each tensor exactly once; one thread at a time). */
    public void write(String name, MemorySegment data) throws IOException {
        Placement p = placements.get(name);
        if (p == null) throw new IllegalArgumentException("tensor " + name + " is not in this checkpoint's plan");
        if (data.byteSize() != p.bytes())
            throw new IllegalArgumentException("tensor " + name + ": " + data.byteSize() + " bytes given, " + p.bytes() + " planned");
        if (!written.add(name)) throw new IllegalStateException("tensor " + name + " written twice");
        Path file = temp.resolve(shardNames.get(p.shard()));
        long chunk = 1L << 30;
        for (long off = 0; off < p.bytes(); off += chunk) {
            long len = Math.min(chunk, p.bytes() - off);
            writeFully(channels.get(p.shard()), data.asSlice(off, len).asByteBuffer(), p.position() + off, file);
        }
        long since = unsynced.get(p.shard()) + p.bytes();
        if (since >= SYNC_BYTES) {
            try {
                channels.get(p.shard()).force(false);
            } catch (IOException e) {
                throw new IOException("cannot write " + file + ": " + e.getMessage() + " (disk full?)", e);
            }
            since = 0;
        }
        unsynced.set(p.shard(), since);
    }

    private static void writeFully(FileChannel ch, ByteBuffer buf, long position, Path file) throws IOException {
        try {
            while (buf.hasRemaining()) position += ch.write(buf, position);
        } catch (IOException e) {
            throw new IOException("cannot write " + file + ": " + e.getMessage() + " (disk full?)", e);
        }
    }

    /** Copies a side file (config.json, tokenizer files) into the checkpoint under its own name. */
    public void copyFile(Path source) throws IOException {
        Files.copy(source, temp.resolve(source.getFileName().toString()), StandardCopyOption.REPLACE_EXISTING);
    }

    /**
     * Writes a small file (a model card, the config, an edited config.json) into the checkpoint under {@code name},
     * replacing one copied there before.
     */
    public void writeFile(String name, byte[] content) throws IOException {
        Path file = temp.resolve(name).normalize();
        if (!file.getParent().equals(temp)) throw new IllegalArgumentException("not a plain file name: " + name);
        Files.write(file, content);
    }

    /** Checks completeness, syncs, writes the index, and moves the checkpoint into place. */
    public void commit() throws IOException {
        if (committed) return;
        List<String> missing = placements.keySet().stream().filter(n -> !written.contains(n)).toList();
        if (!missing.isEmpty())
            throw new IllegalStateException("not every tensor was written: missing " + missing.size() + " ("
                    + String.join(", ", missing.subList(0, Math.min(5, missing.size()))) + ")");
        for (FileChannel ch : channels) {
            ch.force(true);
            ch.close();
        }
        if (shardNames.size() > 1) {
            ObjectNode root = SafetensorsFile.JSON.createObjectNode();
            root.putObject("metadata").put("total_size", totalBytes);
            ObjectNode map = root.putObject("weight_map");
            shardOf.entrySet().stream().sorted(Map.Entry.comparingByKey())
                    .forEach(e -> map.put(e.getKey(), shardNames.get(e.getValue())));
            Files.write(temp.resolve(Checkpoint.INDEX), SafetensorsFile.JSON.writerWithDefaultPrettyPrinter().writeValueAsBytes(root));
        }
        checkOutput();
        Path old = WorkDirs.replace(temp, output);
        committed = true;
        if (old != null) WorkDirs.delete(old);
    }

    /** Renames atomically where the file system can (a plain move where it cannot). */
    public static void move(Path from, Path to) throws IOException {
        try {
            Files.move(from, to, StandardCopyOption.ATOMIC_MOVE);
        } catch (AtomicMoveNotSupportedException e) {
            Files.move(from, to);
        }
    }

    /** Output files, for tests and messages: shard names in order. */
    public List<String> shardNames() {
        return List.copyOf(shardNames);
    }

    @Override
    public void close() throws IOException {
        if (committed) return;
        for (FileChannel ch : channels) if (ch.isOpen()) ch.close();
        WorkDirs.delete(temp);
    }

    /** Deletes a directory tree (nothing when it does not exist). */
    public static void deleteTree(Path root) throws IOException {
        if (!Files.exists(root)) return;
        try (Stream<Path> s = Files.walk(root)) {
            for (Path p : s.sorted(Comparator.reverseOrder()).toList()) Files.deleteIfExists(p);
        }
    }

}
