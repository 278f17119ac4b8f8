package dev.smelter.io;

import com.fasterxml.jackson.core.JsonParser;
import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.Collections;
import java.util.Comparator;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * One safetensors file, memory-mapped read-only, with its header validated as strictly as the
 * reference implementation: header length within the file and at most 100 MB, UTF-8 JSON object,
 * known dtypes, shapes whose byte size matches the offsets, and offsets that tile the data section
 * exactly (sorted, no gaps, no overlap, ending at the end of the file).
 */
public final class SafetensorsFile implements AutoCloseable {
    static final long MAX_HEADER = 100_000_000L;
    static final ObjectMapper JSON = new ObjectMapper().enable(JsonParser.Feature.STRICT_DUPLICATE_DETECTION);
    private static final ValueLayout.OfLong U64_LE = ValueLayout.JAVA_LONG_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);

    private final Path path;
    private final Arena arena;
    private final MemorySegment file;
    private final long dataStart;
    private final Map<String, TensorInfo> tensors;
    private final Map<String, String> metadata;

    private SafetensorsFile(Path path, Arena arena, MemorySegment file, long dataStart, Map<String, TensorInfo> tensors,
            Map<String, String> metadata) {
        this.path = path;
        this.arena = arena;
        this.file = file;
        this.dataStart = dataStart;
        this.tensors = tensors;
        this.metadata = metadata;
    }

    public static SafetensorsFile open(Path path) throws IOException {
        Arena arena = Arena.ofShared();
        try (FileChannel ch = FileChannel.open(path, StandardOpenOption.READ)) {
            long size = ch.size();
            if (size < 8) throw new CheckpointFormatException(path + ": " + size + " bytes is too short for a safetensors file");
            MemorySegment file = ch.map(FileChannel.MapMode.READ_ONLY, 0, size, arena);
            long n = file.get(U64_LE, 0);
            if (n < 0 || n > MAX_HEADER)
                throw new CheckpointFormatException(path + ": header length " + Long.toUnsignedString(n)
                        + " exceeds the 100000000-byte limit (corrupt or not a safetensors file)");
            if (8 + n > size)
                throw new CheckpointFormatException(path + ": header length " + n + " runs past the end of the "
                        + size + "-byte file (truncated?)");
            byte[] headerBytes = file.asSlice(8, n).toArray(ValueLayout.JAVA_BYTE);
            String header;
            try {
                header = StandardCharsets.UTF_8.newDecoder().onMalformedInput(CodingErrorAction.REPORT)
                        .onUnmappableCharacter(CodingErrorAction.REPORT).decode(ByteBuffer.wrap(headerBytes)).toString();
            } catch (CharacterCodingException e) {
                throw new CheckpointFormatException(path + ": header is not valid UTF-8");
            }
            JsonNode root;
            try {
                root = JSON.readTree(header);
            } catch (JsonProcessingException e) {
                throw new CheckpointFormatException(path + ": header is not valid JSON: " + e.getOriginalMessage());
            }
            if (root == null || !root.isObject()) throw new CheckpointFormatException(path + ": header is not a JSON object");
            Map<String, String> metadata = new LinkedHashMap<>();
            List<TensorInfo> infos = new ArrayList<>();
            for (Iterator<Map.Entry<String, JsonNode>> it = root.fields(); it.hasNext(); ) {
                Map.Entry<String, JsonNode> e = it.next();
                if (e.getKey().equals("__metadata__")) parseMetadata(path, e.getValue(), metadata);
                else infos.add(parseTensor(path, e.getKey(), e.getValue()));
            }
            long dataLength = size - 8 - n;
            checkTiling(path, infos, dataLength);
            Map<String, TensorInfo> tensors = new LinkedHashMap<>();
            infos.stream().sorted(Comparator.comparingLong(TensorInfo::dataBegin)).forEach(t -> tensors.put(t.name(), t));
            return new SafetensorsFile(path, arena, file, 8 + n, Collections.unmodifiableMap(tensors),
                    Collections.unmodifiableMap(metadata));
        } catch (IOException | RuntimeException e) {
            arena.close();
            throw e;
        }
    }

    private static void parseMetadata(Path path, JsonNode node, Map<String, String> out) throws CheckpointFormatException {
        if (!node.isObject()) throw new CheckpointFormatException(path + ": __metadata__ is not an object");
        for (Iterator<Map.Entry<String, JsonNode>> it = node.fields(); it.hasNext(); ) {
            Map.Entry<String, JsonNode> e = it.next();
            if (!e.getValue().isTextual())
                throw new CheckpointFormatException(path + ": __metadata__." + e.getKey() + " is not a string");
            out.put(e.getKey(), e.getValue().asText());
        }
    }

    private static TensorInfo parseTensor(Path path, String name, JsonNode node) throws CheckpointFormatException {
        String where = path + ": tensor " + name;
        if (!node.isObject()) throw new CheckpointFormatException(where + ": entry is not an object");
        JsonNode dt = node.get("dtype"), shape = node.get("shape"), offsets = node.get("data_offsets");
        if (dt == null || !dt.isTextual()) throw new CheckpointFormatException(where + ": missing dtype");
        SafetensorsDType dtype = SafetensorsDType.parse(dt.asText())
                .orElseThrow(() -> new CheckpointFormatException(where + ": unknown dtype '" + dt.asText() + "'"));
        if (shape == null || !shape.isArray()) throw new CheckpointFormatException(where + ": missing shape");
        long[] dims = new long[shape.size()];
        long elements = 1;
        for (int i = 0; i < dims.length; i++) {
            JsonNode d = shape.get(i);
            if (!d.isIntegralNumber() || !d.canConvertToLong() || d.asLong() < 0)
                throw new CheckpointFormatException(where + ": shape entry " + d + " is not a non-negative integer");
            dims[i] = d.asLong();
            try {
                elements = Math.multiplyExact(elements, dims[i]);
            } catch (ArithmeticException e) {
                throw new CheckpointFormatException(where + ": shape " + shape + " overflows");
            }
        }
        if (offsets == null || !offsets.isArray() || offsets.size() != 2 || !offsets.get(0).canConvertToLong()
                || !offsets.get(1).canConvertToLong() || !offsets.get(0).isIntegralNumber() || !offsets.get(1).isIntegralNumber())
            throw new CheckpointFormatException(where + ": data_offsets must be [begin, end]");
        long begin = offsets.get(0).asLong(), end = offsets.get(1).asLong();
        if (begin < 0 || end < begin) throw new CheckpointFormatException(where + ": data_offsets " + offsets + " are invalid");
        long bytes;
        try {
            bytes = Math.multiplyExact(elements, dtype.byteSize());
        } catch (ArithmeticException e) {
            throw new CheckpointFormatException(where + ": shape " + shape + " overflows");
        }
        if (bytes != end - begin)
            throw new CheckpointFormatException(where + ": shape " + shape + " of " + dtype + " is " + bytes
                    + " bytes but data_offsets " + offsets + " span " + (end - begin));
        return new TensorInfo(name, dtype, dims, begin, end, path);
    }

    private static void checkTiling(Path path, List<TensorInfo> infos, long dataLength) throws CheckpointFormatException {
        List<TensorInfo> sorted = new ArrayList<>(infos);
        sorted.sort(Comparator.comparingLong(TensorInfo::dataBegin).thenComparingLong(TensorInfo::dataEnd));
        long expected = 0;
        TensorInfo previous = null;
        for (TensorInfo t : sorted) {
            if (t.dataBegin() < expected)
                throw new CheckpointFormatException(path + ": tensor " + t.name() + " overlaps tensor "
                        + previous.name() + " (offsets " + t.dataBegin() + " < " + expected + ")");
            if (t.dataBegin() > expected)
                throw new CheckpointFormatException(path + ": gap of " + (t.dataBegin() - expected) + " bytes before tensor "
                        + t.name());
            expected = t.dataEnd();
            previous = t;
        }
        if (expected != dataLength)
            throw new CheckpointFormatException(path + ": tensors cover " + expected + " bytes but the data section has "
                    + dataLength + (expected > dataLength ? " (truncated file?)" : " (trailing bytes)")
                    + (previous != null && expected > dataLength ? "; last tensor " + previous.name() : ""));
    }

    public Path path() {
        return path;
    }

    /** Tensors in file order. */
    public Map<String, TensorInfo> tensors() {
        return tensors;
    }

    public Map<String, String> metadata() {
        return metadata;
    }

    /** The bytes of a tensor, without copying (valid until this file is closed). */
    public MemorySegment data(String name) {
        TensorInfo t = tensors.get(name);
        if (t == null) throw new IllegalArgumentException(path + " has no tensor " + name);
        return file.asSlice(dataStart + t.dataBegin(), t.byteSize());
    }

    @Override
    public void close() {
        arena.close();
    }
}
