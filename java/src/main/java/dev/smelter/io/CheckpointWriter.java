package dev.smelter.io;

import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.AtomicMoveNotSupportedException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.HashSet;
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
public final class CheckpointWriter implements AutoCloseable, TensorSink {
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

    private final Path output;
    private final Path temp;
    private final boolean overwrite;
    private final ShardLayout layout;
    private final List<String> shardNames;
    private final List<FileChannel> channels = new ArrayList<>();
    private final Set<String> written = new HashSet<>();
    private final List<Long> unsynced = new ArrayList<>();  // bytes written per shard since its last sync
    private boolean committed;

    /**
     * Each shard is synced to disk after this many bytes written to it, so its writeback runs while later tensors
     * are computed (not all at {@link #commit()}) and dirty pages in the page cache stay bounded.
     */
    static final long SYNC_BYTES = 256L << 20;

    public CheckpointWriter(Path output, List<TensorSpec> tensors, long maxShardBytes, Map<String, String> metadata,
            boolean overwrite) throws IOException {
        this(output, new ShardLayout(tensors, maxShardBytes, metadata), overwrite);
    }

    /** A writer of the checkpoint {@code layout} describes. */
    public CheckpointWriter(Path output, ShardLayout layout, boolean overwrite) throws IOException {
        this.output = output.toAbsolutePath().normalize();
        this.overwrite = overwrite;
        this.layout = layout;
        this.shardNames = layout.shardNames();
        checkOutput();
        Path parent = this.output.getParent();
        Files.createDirectories(parent);
        this.temp = WorkDirs.create(this.output, "tmp");
        try {
            for (int s = 0; s < layout.shardCount(); s++) {
                Path file = temp.resolve(shardNames.get(s));
                FileChannel ch = FileChannel.open(file, StandardOpenOption.CREATE_NEW, StandardOpenOption.WRITE);
                channels.add(ch);
                unsynced.add(0L);
                writeFully(ch, ByteBuffer.wrap(layout.header(s)), 0, file);
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

    /**
     * Takes a finished shard file written elsewhere (by a partition of the merge) in the place of shard
     * {@code shard}: it is hard-linked (copied where links are not possible) into the checkpoint, so {@code file}
     * stays until the checkpoint is committed. Its size must be the layout's; its tensors count as written.
     */
    public void adopt(int shard, Path file) throws IOException {
        long size = Files.size(file);
        if (size != layout.fileBytes(shard))
            throw new IOException(file + " has " + size + " bytes, shard " + shardNames.get(shard) + " needs "
                    + layout.fileBytes(shard));
        for (TensorSpec t : layout.tensors(shard))
            if (!written.add(t.name())) throw new IllegalStateException("tensor " + t.name() + " written twice");
        channels.get(shard).close();
        Path target = temp.resolve(shardNames.get(shard));
        Files.delete(target);
        try {
            Files.createLink(target, file);
        } catch (IOException | UnsupportedOperationException e) {
            Files.copy(file, target);
        }
    }

    /** Writes one tensor's bytes (any order; each tensor exactly once; from any thread, e.g. one per device). */
    @Override
    public void write(String name, MemorySegment data) throws IOException {
        ShardLayout.Placement p = layout.placement(name);
        if (p == null) throw new IllegalArgumentException("tensor " + name + " is not in this checkpoint's plan");
        if (data.byteSize() != p.bytes())
            throw new IllegalArgumentException("tensor " + name + ": " + data.byteSize() + " bytes given, " + p.bytes() + " planned");
        synchronized (written) {
            if (!written.add(name)) throw new IllegalStateException("tensor " + name + " written twice");
        }
        Path file = temp.resolve(shardNames.get(p.shard()));
        long chunk = 1L << 30;
        for (long off = 0; off < p.bytes(); off += chunk) {
            long len = Math.min(chunk, p.bytes() - off);
            writeFully(channels.get(p.shard()), data.asSlice(off, len).asByteBuffer(), p.position() + off, file);
        }
        boolean sync;
        synchronized (unsynced) {
            long since = unsynced.get(p.shard()) + p.bytes();
            sync = since >= SYNC_BYTES;
            unsynced.set(p.shard(), sync ? 0 : since);
        }
        if (sync) {
            try {
                channels.get(p.shard()).force(false);
            } catch (IOException e) {
                throw new IOException("cannot write " + file + ": " + e.getMessage() + " (disk full?)", e);
            }
        }
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
        List<String> missing = layout.shardOfTensors().keySet().stream().filter(n -> !written.contains(n)).toList();
        if (!missing.isEmpty())
            throw new IllegalStateException("not every tensor was written: missing " + missing.size() + " ("
                    + String.join(", ", missing.subList(0, Math.min(5, missing.size()))) + ")");
        for (FileChannel ch : channels) {
            if (!ch.isOpen()) continue;  // an adopted shard: synced by whoever wrote it
            ch.force(true);
            ch.close();
        }
        if (shardNames.size() > 1) {
            ObjectNode root = SafetensorsFile.JSON.createObjectNode();
            root.putObject("metadata").put("total_size", layout.totalDataBytes());
            ObjectNode map = root.putObject("weight_map");
            layout.shardOfTensors().entrySet().stream().sorted(Map.Entry.comparingByKey())
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
