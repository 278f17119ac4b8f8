package dev.smelter.io;

import com.fasterxml.jackson.databind.node.ObjectNode;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * Where every tensor of a sharded safetensors checkpoint goes: the shard files (greedy in tensor order under a size
 * limit), their headers, and each tensor's byte range. It depends only on the tensors, the limit and the metadata, so
 * a checkpoint written by one process, by several devices or by several partitions that each write whole shards has
 * the same bytes.
 */
public final class ShardLayout {
    /** A tensor's place: its shard, its absolute byte position in that file, its size. */
    public record Placement(int shard, long position, long bytes) {}

    private final List<String> shardNames = new ArrayList<>();
    private final List<List<CheckpointWriter.TensorSpec>> shards;
    private final List<byte[]> headers = new ArrayList<>();
    private final List<Long> fileBytes = new ArrayList<>();
    private final Map<String, Placement> placements = new LinkedHashMap<>();
    private long dataBytes;

    public ShardLayout(List<CheckpointWriter.TensorSpec> tensors, long maxShardBytes, Map<String, String> metadata) {
        if (maxShardBytes <= 0) throw new IllegalArgumentException("maxShardBytes must be positive");
        shards = planShards(tensors, maxShardBytes);
        for (int s = 0; s < shards.size(); s++) {
            shardNames.add(shards.size() == 1 ? Checkpoint.SINGLE
                    : String.format("model-%05d-of-%05d.safetensors", s + 1, shards.size()));
            header(s, shards.get(s), metadata);
        }
    }

    /** Greedy in the given order; a tensor larger than the limit gets a shard of its own. */
    private static List<List<CheckpointWriter.TensorSpec>> planShards(List<CheckpointWriter.TensorSpec> tensors, long max) {
        List<List<CheckpointWriter.TensorSpec>> shards = new ArrayList<>();
        List<CheckpointWriter.TensorSpec> current = new ArrayList<>();
        long bytes = 0;
        Set<String> seen = new HashSet<>();
        for (CheckpointWriter.TensorSpec t : tensors) {
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

    private void header(int shard, List<CheckpointWriter.TensorSpec> tensors, Map<String, String> metadata) {
        ObjectNode root = SafetensorsFile.JSON.createObjectNode();
        ObjectNode meta = root.putObject("__metadata__");
        new java.util.TreeMap<>(metadata).forEach(meta::put);  // sorted: the same bytes whatever the map's order
        long offset = 0;
        List<long[]> ranges = new ArrayList<>();
        for (CheckpointWriter.TensorSpec t : tensors) {
            ObjectNode e = root.putObject(t.name());
            e.put("dtype", t.dtype().name());
            var shape = e.putArray("shape");
            for (long d : t.shape()) shape.add(d);
            long end = offset + t.byteSize();
            e.putArray("data_offsets").add(offset).add(end);
            ranges.add(new long[] {offset, t.byteSize()});
            offset = end;
        }
        byte[] json;
        try {
            json = SafetensorsFile.JSON.writeValueAsBytes(root);
        } catch (com.fasterxml.jackson.core.JsonProcessingException e) {
            throw new IllegalStateException(e);
        }
        int padded = (json.length + 7) / 8 * 8;  // spaces to a multiple of 8, as the reference writer does
        ByteBuffer head = ByteBuffer.allocate(8 + padded).order(ByteOrder.LITTLE_ENDIAN);
        head.putLong(padded).put(json);
        while (head.hasRemaining()) head.put((byte) ' ');
        headers.add(head.array());
        long dataStart = 8L + padded;
        for (int i = 0; i < tensors.size(); i++)
            placements.put(tensors.get(i).name(), new Placement(shard, dataStart + ranges.get(i)[0], ranges.get(i)[1]));
        fileBytes.add(dataStart + offset);
        dataBytes += offset;
    }

    public int shardCount() {
        return shards.size();
    }

    public String shardName(int shard) {
        return shardNames.get(shard);
    }

    public List<String> shardNames() {
        return List.copyOf(shardNames);
    }

    /** The tensors of one shard, in file order. */
    public List<CheckpointWriter.TensorSpec> tensors(int shard) {
        return List.copyOf(shards.get(shard));
    }

    /** The header bytes (length prefix, JSON, padding) that start a shard's file. */
    public byte[] header(int shard) {
        return headers.get(shard).clone();
    }

    /** The size of a shard's finished file. */
    public long fileBytes(int shard) {
        return fileBytes.get(shard);
    }

    /** Bytes of tensor data in a shard (its file less its header). */
    public long dataBytes(int shard) {
        return fileBytes.get(shard) - headers.get(shard).length;
    }

    /** Tensor data of all shards (the index's {@code total_size}). */
    public long totalDataBytes() {
        return dataBytes;
    }

    /** Where tensor {@code name} goes, or null if it is not in the layout. */
    public Placement placement(String name) {
        return placements.get(name);
    }

    /** Every tensor's shard, in tensor order. */
    public Map<String, Integer> shardOfTensors() {
        Map<String, Integer> m = new LinkedHashMap<>();
        placements.forEach((n, p) -> m.put(n, p.shard()));
        return m;
    }
}
