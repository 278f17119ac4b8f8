package dev.smelter.io;

import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

/**
 * Writes one partition's whole shards into a staging directory: each shard goes to a hidden {@code .NAME.partial}
 * file, and only once its last tensor is written and synced is it renamed to {@code NAME}. A partition killed midway
 * leaves partial files only, which are never taken for shards and which its rerun replaces.
 */
public final class PartitionWriter implements TensorSink, AutoCloseable {
    private final Path dir;
    private final ShardLayout layout;
    private final Map<Integer, FileChannel> channels = new HashMap<>();
    private final Map<Integer, Long> remaining = new HashMap<>();
    private final java.util.Set<String> written = new java.util.HashSet<>();

    /** Starts the shards {@code shards} of {@code layout} in {@code dir}, replacing partial files a killed run left. */
    public PartitionWriter(Path dir, ShardLayout layout, List<Integer> shards) throws IOException {
        this.dir = dir;
        this.layout = layout;
        try {
            for (int s : shards) {
                Path file = partial(s);
                Files.deleteIfExists(file);
                FileChannel ch = FileChannel.open(file, StandardOpenOption.CREATE_NEW, StandardOpenOption.WRITE);
                channels.put(s, ch);
                ByteBuffer head = ByteBuffer.wrap(layout.header(s));
                long at = 0;
                while (head.hasRemaining()) at += ch.write(head, at);
                remaining.put(s, layout.dataBytes(s));
                if (layout.dataBytes(s) == 0) complete(s);
            }
        } catch (IOException | RuntimeException e) {
            close();
            throw e;
        }
    }

    private Path partial(int shard) {
        return dir.resolve("." + layout.shardName(shard) + ".partial");
    }

    @Override
    public void write(String name, MemorySegment data) throws IOException {
        ShardLayout.Placement p = layout.placement(name);
        FileChannel ch;
        synchronized (this) {
            ch = p == null ? null : channels.get(p.shard());
            if (ch == null) throw new IllegalArgumentException("tensor " + name + " is not in this partition's shards");
            if (data.byteSize() != p.bytes())
                throw new IllegalArgumentException("tensor " + name + ": " + data.byteSize() + " bytes given, " + p.bytes() + " planned");
            if (!written.add(name)) throw new IllegalStateException("tensor " + name + " written twice");
        }
        Path file = partial(p.shard());
        long chunk = 1L << 30;
        try {
            for (long off = 0; off < p.bytes(); off += chunk) {
                ByteBuffer buf = data.asSlice(off, Math.min(chunk, p.bytes() - off)).asByteBuffer();
                long at = p.position() + off;
                while (buf.hasRemaining()) at += ch.write(buf, at);
            }
        } catch (IOException e) {
            throw new IOException("cannot write " + file + ": " + e.getMessage() + " (disk full?)", e);
        }
        boolean last;
        synchronized (this) {
            long left = remaining.get(p.shard()) - p.bytes();
            remaining.put(p.shard(), left);
            last = left == 0;
        }
        if (last) complete(p.shard());
    }

    /** Syncs a shard whose every tensor is written and renames it to its final name. */
    private void complete(int shard) throws IOException {
        FileChannel ch;
        synchronized (this) {
            ch = channels.remove(shard);
        }
        Path file = partial(shard);
        try {
            ch.force(true);
            ch.close();
        } catch (IOException e) {
            throw new IOException("cannot write " + file + ": " + e.getMessage() + " (disk full?)", e);
        }
        CheckpointWriter.move(file, dir.resolve(layout.shardName(shard)));
    }

    /** Fails unless every shard was completed. */
    public synchronized void finish() {
        if (!channels.isEmpty())
            throw new IllegalStateException("not every shard of the partition was written: " + channels.keySet().stream()
                    .sorted().map(layout::shardName).toList());
    }

    /** Closes and deletes the shards not completed. */
    @Override
    public synchronized void close() throws IOException {
        IOException failure = null;
        for (Map.Entry<Integer, FileChannel> e : channels.entrySet()) {
            try {
                e.getValue().close();
                Files.deleteIfExists(partial(e.getKey()));
            } catch (IOException x) {
                if (failure == null) failure = x;
            }
        }
        channels.clear();
        if (failure != null) throw failure;
    }
}
