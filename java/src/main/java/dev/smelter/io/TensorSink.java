package dev.smelter.io;

import java.io.IOException;
import java.lang.foreign.MemorySegment;

/** Where merged tensors go: a whole checkpoint ({@link CheckpointWriter}) or a partition's shards ({@link PartitionWriter}). */
public interface TensorSink {
    /** Writes one tensor's bytes (any order; each tensor exactly once). */
    void write(String name, MemorySegment data) throws IOException;
}
