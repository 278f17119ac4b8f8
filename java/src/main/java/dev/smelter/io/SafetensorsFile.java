package dev.smelter.io;

import com.fasterxml.jackson.core.JsonFactory;
import com.fasterxml.jackson.core.JsonParser;
import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.core.JsonToken;
import com.fasterxml.jackson.core.StreamReadConstraints;
import com.fasterxml.jackson.core.StreamReadFeature;
import com.fasterxml.jackson.databind.DeserializationFeature;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.ObjectReader;
import com.fasterxml.jackson.databind.json.JsonMapper;
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
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.atomic.AtomicBoolean;

/**
 * One safetensors file, memory-mapped read-only, with its header validated as strictly as the
 * reference implementation (the Rust {@code safetensors} crate):
 *
 * <ul>
 *   <li>at least 8 bytes; the little-endian u64 header length at most 100,000,000 and within the file;
 *   <li>the header is UTF-8 holding exactly one JSON object (trailing spaces allowed, as the reference
 *       writer pads with them); names are unique;
 *   <li>{@code __metadata__}, if present, maps strings to strings;
 *   <li>every tensor has a known dtype, a shape of non-negative integers whose element count and byte
 *       size do not overflow, and {@code data_offsets [begin, end]} spanning exactly dtype x shape bytes;
 *   <li>sorted by offset, the tensors tile the data section exactly: no gap, no overlap, and the last
 *       one ends at the end of the file.
 * </ul>
 *
 * Every violation is a {@link CheckpointFormatException} naming the file and, where one is
 * involved, the tensor.
 *
 * <p>{@link #tensors()} is in file order (by data offset), which need not be the header's key
 * order. {@link #data(String)} slices the mapping without copying; the slices are valid until
 * {@link #close()} (the arena is shared, so any thread may read them). As with any memory map, a
 * file truncated by another process while mapped makes reads of the lost pages fail.
 */
public final class SafetensorsFile implements AutoCloseable {
    /** The reference implementation's header size limit. */
    public static final long MAX_HEADER = 100_000_000L;

    /** The key of the string-to-string metadata map in a header. */
    public static final String METADATA_KEY = "__metadata__";

    /** JSON for headers and index files: strict, no trailing content, duplicate keys rejected. */
    static final ObjectMapper JSON = JsonMapper.builder(JsonFactory.builder()
                    .enable(StreamReadFeature.STRICT_DUPLICATE_DETECTION)
                    .streamReadConstraints(StreamReadConstraints.builder()
                            .maxStringLength((int) MAX_HEADER)
                            .maxNameLength((int) MAX_HEADER)
                            .build())
                    .build())
            .enable(DeserializationFeature.FAIL_ON_TRAILING_TOKENS)
            .enable(DeserializationFeature.FAIL_ON_READING_DUP_TREE_KEY)
            .build();

    /** Reads one value out of a header being streamed: the rest of the header is not "trailing". */
    private static final ObjectReader VALUE_IN_STREAM = JSON.readerFor(JsonNode.class)
            .without(DeserializationFeature.FAIL_ON_TRAILING_TOKENS);

    private static final ValueLayout.OfLong U64_LE = ValueLayout.JAVA_LONG_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);

    private final Path path;
    private final Arena arena;
    private final MemorySegment file;
    private final long dataStart;
    private final Map<String, TensorInfo> tensors;
    private final Map<String, String> metadata;
    private final FileChannel channel;  // positional reads: a truncated file is a short read, never a signal
    private final Identity identity;
    private final AtomicBoolean closed = new AtomicBoolean();

    /** What identifies the file's contents for {@link #checkUnchanged()}: its size, modification time and inode. */
    private record Identity(long size, java.nio.file.attribute.FileTime modified, Object key) {
        static Identity of(Path path) throws IOException {
            var a = java.nio.file.Files.readAttributes(path, java.nio.file.attribute.BasicFileAttributes.class);
            return new Identity(a.size(), a.lastModifiedTime(), a.fileKey());
        }
    }

    private SafetensorsFile(Path path, Arena arena, MemorySegment file, long dataStart, Map<String, TensorInfo> tensors,
            Map<String, String> metadata, FileChannel channel, Identity identity) {
        this.path = path;
        this.channel = channel;
        this.identity = identity;
        this.arena = arena;
        this.file = file;
        this.dataStart = dataStart;
        this.tensors = tensors;
        this.metadata = metadata;
    }

    /**
     * Maps and validates a safetensors file.
     *
     * @throws CheckpointFormatException if the file is not a valid safetensors file
     * @throws IOException if it cannot be opened or mapped
     */
    public static SafetensorsFile open(Path path) throws IOException {
        Arena arena = Arena.ofShared();
        FileChannel ch = FileChannel.open(path, StandardOpenOption.READ);
        try {
            Identity identity = Identity.of(path);
            long size = ch.size();
            if (size < 8)
                throw new CheckpointFormatException(path, size + " bytes is too short for a safetensors file (at least 8)");
            MemorySegment file = ch.map(FileChannel.MapMode.READ_ONLY, 0, size, arena);
            long n = file.get(U64_LE, 0);
            if (n < 0 || n > MAX_HEADER)
                throw new CheckpointFormatException(path, "header length " + Long.toUnsignedString(n)
                        + " exceeds the limit of " + MAX_HEADER + " bytes (corrupt, or not a safetensors file)");
            if (8 + n > size)
                throw new CheckpointFormatException(path, "header length " + n + " runs past the end of the "
                        + size + "-byte file (truncated?)");
            Header h = parseHeader(path, file.asSlice(8, n).toArray(ValueLayout.JAVA_BYTE));
            long dataLength = size - 8 - n;
            List<TensorInfo> sorted = checkTiling(path, h.tensors(), dataLength);
            Map<String, TensorInfo> byName = new LinkedHashMap<>();
            for (TensorInfo t : sorted) byName.put(t.name(), t);
            return new SafetensorsFile(path, arena, file, 8 + n, Collections.unmodifiableMap(byName),
                    Collections.unmodifiableMap(h.metadata()), ch, identity);
        } catch (IOException | RuntimeException | Error e) {
            arena.close();
            ch.close();
            throw e;
        }
    }

    /**
     * A file of another format whose tensors are the byte ranges {@code tensors} gives (offsets from the file's start,
     * each validated against the file's size), read as a safetensors file's ({@link TorchCheckpoint}). Ranges may
     * overlap (tied weights share a storage). Tensors are ordered by offset.
     */
    static SafetensorsFile ofRanges(Path path, Map<String, TensorInfo> tensors, Map<String, String> metadata)
            throws IOException {
        Arena arena = Arena.ofShared();
        FileChannel ch = FileChannel.open(path, StandardOpenOption.READ);
        try {
            Identity identity = Identity.of(path);
            long size = ch.size();
            List<TensorInfo> sorted = new java.util.ArrayList<>(tensors.values());
            for (TensorInfo t : sorted)
                if (t.dataEnd() > size || t.byteSize() != t.dtype().sizeInBytes(t.elementCount()))
                    throw new CheckpointFormatException(path, t.name(), "bytes " + t.dataBegin() + ".." + t.dataEnd()
                            + " do not fit the " + size + "-byte file or its dtype and shape");
            sorted.sort(java.util.Comparator.comparingLong(TensorInfo::dataBegin));
            Map<String, TensorInfo> byName = new LinkedHashMap<>();
            for (TensorInfo t : sorted) byName.put(t.name(), t);
            MemorySegment file = ch.map(FileChannel.MapMode.READ_ONLY, 0, size, arena);
            return new SafetensorsFile(path, arena, file, 0, Collections.unmodifiableMap(byName),
                    Collections.unmodifiableMap(new LinkedHashMap<>(metadata)), ch, identity);
        } catch (IOException | RuntimeException | Error e) {
            arena.close();
            ch.close();
            throw e;
        }
    }

    private record Header(List<TensorInfo> tensors, Map<String, String> metadata) {}

    private static Header parseHeader(Path path, byte[] bytes) throws CheckpointFormatException {
        String text;
        try {
            text = StandardCharsets.UTF_8.newDecoder().onMalformedInput(CodingErrorAction.REPORT)
                    .onUnmappableCharacter(CodingErrorAction.REPORT).decode(ByteBuffer.wrap(bytes)).toString();
        } catch (CharacterCodingException e) {
            throw new CheckpointFormatException(path, null, "header is not valid UTF-8", e);
        }
        Map<String, String> metadata = new LinkedHashMap<>();
        List<TensorInfo> infos = new ArrayList<>();
        Set<String> names = new HashSet<>();
        String current = null;  // the entry being parsed, for error messages
        try (JsonParser p = JSON.createParser(text)) {
            // Duplicates are checked here, with the name, rather than by the parser.
            p.disable(JsonParser.Feature.STRICT_DUPLICATE_DETECTION);
            if (p.nextToken() != JsonToken.START_OBJECT)
                throw new CheckpointFormatException(path, "header is not a JSON object");
            JsonToken t;
            while ((t = p.nextToken()) == JsonToken.FIELD_NAME) {
                current = p.currentName();
                if (!names.add(current))
                    throw new CheckpointFormatException(path, current.equals(METADATA_KEY) ? null : current,
                            "duplicate " + (current.equals(METADATA_KEY) ? METADATA_KEY : "tensor name") + " in the header");
                p.nextToken();
                JsonNode value = VALUE_IN_STREAM.readValue(p);
                if (current.equals(METADATA_KEY)) parseMetadata(path, value, metadata);
                else infos.add(parseTensor(path, current, value));
                current = null;
            }
            if (t != JsonToken.END_OBJECT) throw new CheckpointFormatException(path, "header is not a JSON object");
            if (p.nextToken() != null)
                throw new CheckpointFormatException(path, "header has content after its JSON object");
        } catch (JsonProcessingException e) {
            String where = current == null || current.equals(METADATA_KEY) ? "" : " in the entry of tensor '" + current + "'";
            throw new CheckpointFormatException(path, null, "header is not valid JSON" + where + ": " + e.getOriginalMessage(), e);
        } catch (CheckpointFormatException e) {
            throw e;
        } catch (IOException e) {  // cannot happen reading a String
            throw new CheckpointFormatException(path, null, "cannot parse header: " + e.getMessage(), e);
        }
        return new Header(infos, metadata);
    }

    private static void parseMetadata(Path path, JsonNode node, Map<String, String> out) throws CheckpointFormatException {
        if (!node.isObject())
            throw new CheckpointFormatException(path, METADATA_KEY + " is " + node.getNodeType() + ", not a string-to-string object");
        for (Map.Entry<String, JsonNode> e : node.properties()) {
            if (!e.getValue().isTextual())
                throw new CheckpointFormatException(path, METADATA_KEY + " entry '" + e.getKey() + "' is "
                        + e.getValue().getNodeType() + ", not a string");
            out.put(e.getKey(), e.getValue().textValue());
        }
    }

    private static TensorInfo parseTensor(Path path, String name, JsonNode node) throws CheckpointFormatException {
        if (!node.isObject()) throw new CheckpointFormatException(path, name, "header entry is not an object");
        JsonNode dt = node.get("dtype"), shape = node.get("shape"), offsets = node.get("data_offsets");
        if (dt == null || !dt.isTextual()) throw new CheckpointFormatException(path, name, "missing or non-string dtype");
        SafetensorsDType dtype = SafetensorsDType.parse(dt.textValue()).orElseThrow(() ->
                new CheckpointFormatException(path, name, "unknown dtype '" + dt.textValue() + "'"));
        if (shape == null || !shape.isArray()) throw new CheckpointFormatException(path, name, "missing or non-array shape");
        long[] dims = new long[shape.size()];
        long elements = 1;
        for (int i = 0; i < dims.length; i++) {
            JsonNode d = shape.get(i);
            if (!d.isIntegralNumber() || !d.canConvertToLong() || d.longValue() < 0)
                throw new CheckpointFormatException(path, name, "shape " + shape + ": entry " + i + " (" + d
                        + ") is not a non-negative 64-bit integer");
            dims[i] = d.longValue();
        }
        try {
            elements = TensorInfo.elements(dims);
        } catch (ArithmeticException e) {
            throw new CheckpointFormatException(path, name, "shape " + shape + ": element count overflows 64 bits");
        }
        long bytes;
        try {
            bytes = dtype.sizeInBytes(elements);
        } catch (ArithmeticException e) {
            throw new CheckpointFormatException(path, name, "shape " + shape + " of " + dtype + ": " + e.getMessage());
        }
        if (offsets == null || !offsets.isArray() || offsets.size() != 2)
            throw new CheckpointFormatException(path, name, "data_offsets must be [begin, end], not " + offsets);
        for (JsonNode o : offsets)
            if (!o.isIntegralNumber() || !o.canConvertToLong() || o.longValue() < 0)
                throw new CheckpointFormatException(path, name, "data_offsets " + offsets + " are not non-negative 64-bit integers");
        long begin = offsets.get(0).longValue(), end = offsets.get(1).longValue();
        if (end < begin) throw new CheckpointFormatException(path, name, "data_offsets " + offsets + " end before they begin");
        if (bytes != end - begin)
            throw new CheckpointFormatException(path, name, "shape " + shape + " of " + dtype + " is " + bytes
                    + " bytes but data_offsets " + offsets + " span " + (end - begin));
        return new TensorInfo(name, dtype, dims, begin, end, path);
    }

    /** Sorts by (begin, end) and checks that the tensors tile [0, dataLength) exactly. */
    private static List<TensorInfo> checkTiling(Path path, List<TensorInfo> infos, long dataLength)
            throws CheckpointFormatException {
        List<TensorInfo> sorted = new ArrayList<>(infos);
        sorted.sort(Comparator.comparingLong(TensorInfo::dataBegin).thenComparingLong(TensorInfo::dataEnd));
        long expected = 0;
        TensorInfo previous = null;
        for (TensorInfo t : sorted) {
            if (t.dataBegin() < expected)
                throw new CheckpointFormatException(path, t.name(), "data_offsets [" + t.dataBegin() + ", " + t.dataEnd()
                        + "] overlap tensor '" + previous.name() + "' [" + previous.dataBegin() + ", " + previous.dataEnd() + "]");
            if (t.dataBegin() > expected)
                throw new CheckpointFormatException(path, t.name(), "gap of " + (t.dataBegin() - expected)
                        + " bytes before it (data_offsets begin at " + t.dataBegin() + ", previous data ends at " + expected + ")");
            if (t.dataEnd() > dataLength)
                throw new CheckpointFormatException(path, t.name(), "data_offsets [" + t.dataBegin() + ", " + t.dataEnd()
                        + "] run past the " + dataLength + "-byte data section (truncated file?)");
            expected = t.dataEnd();
            previous = t;
        }
        if (expected != dataLength)
            throw new CheckpointFormatException(path, "tensors cover " + expected + " bytes but the data section has "
                    + dataLength + " (" + (dataLength - expected) + " trailing bytes)");
        return sorted;
    }

    public Path path() {
        return path;
    }

    /** Tensors by name, in file order (by data offset). */
    public Map<String, TensorInfo> tensors() {
        return tensors;
    }

    /** The header's {@code __metadata__} (empty if absent), in header order. */
    public Map<String, String> metadata() {
        return metadata;
    }

    /** File offset of the data section (8 + header length). */
    public long dataStart() {
        return dataStart;
    }

    /**
     * The bytes of a tensor: a read-only slice of the mapping, without copying, valid until this
     * file is closed.
     *
     * @throws IllegalArgumentException if there is no such tensor
     */
    public MemorySegment data(String name) {
        TensorInfo t = tensors.get(name);
        if (t == null) throw new IllegalArgumentException(path + " has no tensor '" + name + "'");
        return file.asSlice(dataStart + t.dataBegin(), t.byteSize());
    }

    /** Positional reads of at most this many bytes (a ByteBuffer holds less than 2 GiB). */
    private static final long READ_CHUNK = 1L << 30;

    /**
     * Copies {@code dst.byteSize()} bytes of tensor {@code name}, from byte {@code byteOffset} of its data, into
     * {@code dst} with positional reads. Unlike reading the mapping from native code, a file truncated by another
     * process meanwhile is an exception naming the file and the tensor, never a SIGBUS. Thread-safe.
     */
    public void read(String name, long byteOffset, MemorySegment dst) throws IOException {
        TensorInfo t = tensors.get(name);
        if (t == null) throw new IllegalArgumentException(path + " has no tensor '" + name + "'");
        if (byteOffset < 0 || byteOffset + dst.byteSize() > t.byteSize())
            throw new IllegalArgumentException("bytes " + byteOffset + ".." + (byteOffset + dst.byteSize()) + " of tensor "
                    + name + " (" + t.byteSize() + " bytes)");
        long position = dataStart + t.dataBegin() + byteOffset;
        for (long done = 0; done < dst.byteSize(); ) {
            ByteBuffer buffer = dst.asSlice(done, Math.min(READ_CHUNK, dst.byteSize() - done)).asByteBuffer();
            while (buffer.hasRemaining()) {
                int n = channel.read(buffer, position + done);
                if (n < 0)
                    throw new CheckpointFormatException(path, name, "the file ends at byte " + (position + done)
                            + ", inside this tensor: it was truncated or replaced while in use (it had "
                            + identity.size() + " bytes)");
                done += n;
            }
        }
    }

    /**
     * Fails if the file is not the one opened any more: another size, modification time or inode (a file rewritten
     * in place, truncated or replaced while it was read).
     */
    public void checkUnchanged() throws IOException {
        Identity now;
        try {
            now = Identity.of(path);
        } catch (IOException e) {
            throw new CheckpointFormatException(path, "is gone or unreadable since it was opened: " + e.getMessage());
        }
        if (!now.equals(identity))
            throw new CheckpointFormatException(path, "changed while it was read (" + (now.size() != identity.size()
                    ? "size " + identity.size() + " -> " + now.size() : !now.modified().equals(identity.modified())
                    ? "modified at " + now.modified() + ", opened at " + identity.modified() : "replaced by another file")
                    + "): the result would mix old and new contents");
    }

    /** Unmaps and closes the file; segments from {@link #data} become inaccessible. Idempotent. */
    @Override
    public void close() {
        if (closed.compareAndSet(false, true)) {
            arena.close();
            try {
                channel.close();
            } catch (IOException e) {
                // read-only: nothing to lose
            }
        }
    }
}
