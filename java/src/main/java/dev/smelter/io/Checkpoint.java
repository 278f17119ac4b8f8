package dev.smelter.io;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.JsonNode;
import dev.smelter.DType;
import dev.smelter.Tensor;
import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Collections;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;

/**
 * A Hugging Face-style checkpoint: a directory with {@code model.safetensors.index.json} and its
 * shards, or one safetensors file. All shards are opened (memory-mapped) up front and validated
 * against the index. Tensor order is on-disk order: shards by file name, tensors by offset, so a
 * pass over {@link #tensorNames()} reads every file sequentially.
 */
public final class Checkpoint implements AutoCloseable {
    public static final String INDEX = "model.safetensors.index.json";
    public static final String SINGLE = "model.safetensors";
    /** PyTorch checkpoints, read when a folder has no safetensors ({@link TorchCheckpoint}). */
    public static final String TORCH_INDEX = "pytorch_model.bin.index.json", TORCH_SINGLE = "pytorch_model.bin";

    private final Path directory;
    private final List<SafetensorsFile> files;
    private final Map<String, SafetensorsFile> fileOf;
    private final List<String> names;
    private final Map<String, String> metadata;
    private LoraAdapter lora;  // applied as tensors are read, or null
    private final Map<String, String> aliases = new java.util.LinkedHashMap<>();  // tied weights: name -> stored name

    private Checkpoint(Path directory, List<SafetensorsFile> files, Map<String, SafetensorsFile> fileOf,
            Map<String, String> metadata) {
        this.directory = directory;
        this.files = files;
        this.fileOf = fileOf;
        this.metadata = metadata;
        List<String> n = new ArrayList<>();
        for (SafetensorsFile f : files) n.addAll(f.tensors().keySet());
        this.names = Collections.unmodifiableList(n);
    }

    /** Opens a checkpoint directory, an index json, or a single .safetensors file. */
    public static Checkpoint open(Path path) throws IOException {
        if (Files.isDirectory(path)) {
            if (Files.isRegularFile(path.resolve(INDEX))) return openIndex(path.resolve(INDEX));
            if (Files.isRegularFile(path.resolve(SINGLE))) return openSingle(path.resolve(SINGLE));
            // As mergekit: model.safetensors first, then pytorch_model.bin (each sharded with an index, or single).
            if (Files.isRegularFile(path.resolve(TORCH_INDEX))) return openIndex(path.resolve(TORCH_INDEX));
            if (Files.isRegularFile(path.resolve(TORCH_SINGLE))) return openSingle(path.resolve(TORCH_SINGLE));
            throw new CheckpointFormatException(path + ": none of " + INDEX + ", " + SINGLE + ", " + TORCH_INDEX + ", "
                    + TORCH_SINGLE + " found");
        }
        if (!Files.isRegularFile(path)) throw new CheckpointFormatException(path + ": no such checkpoint");
        return path.getFileName().toString().endsWith(".json") ? openIndex(path) : openSingle(path);
    }

    /**
     * Opens the checkpoint at {@code path} with the PEFT LoRA adapter in {@code lora} applied as its tensors are read
     * ({@link LoraAdapter}); {@code lora} null: {@link #open(Path)}.
     */
    public static Checkpoint open(Path path, Path lora) throws IOException {
        Checkpoint c = open(path);
        if (lora == null) return c;
        try {
            c.lora = LoraAdapter.open(lora, c);
        } catch (IOException | RuntimeException e) {
            c.close();
            throw e;
        }
        return c;
    }

    /**
     * Serves {@code name}, which this checkpoint does not store, as the stored tensor {@code stored}: a model with tied
     * word embeddings keeps its output head in its input embedding (mergekit's {@code tied_names}).
     */
    public void alias(String name, String stored) {
        if (fileOf.containsKey(name)) throw new IllegalArgumentException(directory + " stores " + name + " itself");
        file(stored);  // fails naming the tensor where it is absent
        aliases.put(name, stored);
    }

    /** The stored tensor a name is read from: itself, or what {@link #alias} made it. */
    private String stored(String name) {
        return aliases.getOrDefault(name, name);
    }

    /** The LoRA adapter applied to this checkpoint's tensors, or null. */
    public LoraAdapter lora() {
        return lora;
    }

    /** A safetensors file, or a PyTorch one ({@code .bin}, {@code .pt}, {@code .pth}). */
    private static SafetensorsFile openFile(Path file) throws IOException {
        String n = file.getFileName().toString();
        return n.endsWith(".bin") || n.endsWith(".pt") || n.endsWith(".pth") ? TorchCheckpoint.open(file)
                : SafetensorsFile.open(file);
    }

    private static Checkpoint openSingle(Path file) throws IOException {
        SafetensorsFile f = openFile(file);
        Map<String, SafetensorsFile> fileOf = new LinkedHashMap<>();
        for (String name : f.tensors().keySet()) fileOf.put(name, f);
        Path dir = file.toAbsolutePath().normalize().getParent();
        return new Checkpoint(dir, List.of(f), fileOf, f.metadata());
    }

    private static Checkpoint openIndex(Path index) throws IOException {
        Path dir = index.toAbsolutePath().normalize().getParent();  // "../base" is inside "../base"
        JsonNode root;
        try {
            root = SafetensorsFile.JSON.readTree(utf8(index));
        } catch (JsonProcessingException e) {
            throw new CheckpointFormatException(index + ": not valid JSON: " + e.getOriginalMessage());
        }
        JsonNode map = root == null ? null : root.get("weight_map");
        if (map == null || !map.isObject()) throw new CheckpointFormatException(index + ": no weight_map object");
        Map<String, String> metadata = new LinkedHashMap<>();
        JsonNode meta = root.get("metadata");
        if (meta != null && meta.isObject())
            for (Iterator<Map.Entry<String, JsonNode>> it = meta.fields(); it.hasNext(); ) {
                Map.Entry<String, JsonNode> e = it.next();
                metadata.put(e.getKey(), e.getValue().asText());
            }
        Map<String, String> shardOf = new LinkedHashMap<>();
        TreeMap<String, Path> shards = new TreeMap<>();
        for (Iterator<Map.Entry<String, JsonNode>> it = map.fields(); it.hasNext(); ) {
            Map.Entry<String, JsonNode> e = it.next();
            if (!e.getValue().isTextual())
                throw new CheckpointFormatException(index + ": weight_map entry " + e.getKey() + " is not a file name");
            String shard = e.getValue().asText();
            Path p;
            try {
                p = dir.resolve(shard).normalize();
            } catch (java.nio.file.InvalidPathException x) {
                throw new CheckpointFormatException(index + ": shard '" + shard + "' of tensor " + e.getKey()
                        + " is not a valid file name: " + x.getReason());
            }
            if (!p.startsWith(dir) || Path.of(shard).isAbsolute())
                throw new CheckpointFormatException(index + ": shard '" + shard + "' of tensor " + e.getKey()
                        + " lies outside the checkpoint directory");
            shardOf.put(e.getKey(), shard);
            shards.put(shard, p);
        }
        List<SafetensorsFile> files = new ArrayList<>();
        Map<String, SafetensorsFile> fileOf = new LinkedHashMap<>();
        try {
            for (Map.Entry<String, Path> s : shards.entrySet()) {
                if (!Files.isRegularFile(s.getValue()))
                    throw new CheckpointFormatException(index + ": shard " + s.getKey() + " is missing");
                SafetensorsFile f = openFile(s.getValue());
                files.add(f);
                for (String name : f.tensors().keySet()) {
                    String listed = shardOf.get(name);
                    if (listed == null)
                        throw new CheckpointFormatException(s.getValue() + ": tensor " + name + " is not in " + index);
                    if (!listed.equals(s.getKey()))
                        throw new CheckpointFormatException(s.getValue() + ": tensor " + name + " is listed in " + index
                                + " under shard " + listed);
                    fileOf.put(name, f);
                }
            }
            for (Map.Entry<String, String> e : shardOf.entrySet())
                if (!fileOf.containsKey(e.getKey()))
                    throw new CheckpointFormatException(index + ": tensor " + e.getKey() + " is not in its shard " + e.getValue());
        } catch (IOException | RuntimeException e) {
            for (SafetensorsFile f : files) f.close();
            throw e;
        }
        return new Checkpoint(dir, List.copyOf(files), fileOf, Collections.unmodifiableMap(metadata));
    }

    /** A text file as UTF-8; a malformed byte is an error naming the file and the byte's offset. */
    static String utf8(Path file) throws IOException {
        byte[] bytes = Files.readAllBytes(file);
        java.nio.ByteBuffer in = java.nio.ByteBuffer.wrap(bytes);
        java.nio.CharBuffer out = java.nio.CharBuffer.allocate(bytes.length);
        java.nio.charset.CoderResult r = java.nio.charset.StandardCharsets.UTF_8.newDecoder()
                .onMalformedInput(java.nio.charset.CodingErrorAction.REPORT)
                .onUnmappableCharacter(java.nio.charset.CodingErrorAction.REPORT).decode(in, out, true);
        if (r.isError())
            throw new CheckpointFormatException(file + ": not valid UTF-8 at byte " + in.position()
                    + " (0x" + Integer.toHexString(bytes[in.position()] & 0xFF) + "); an index file is JSON text");
        return out.flip().toString();
    }

    public Path directory() {
        return directory;
    }

    /** Every tensor, in on-disk order. */
    public List<String> tensorNames() {
        if (aliases.isEmpty()) return names;
        List<String> all = new ArrayList<>(names);
        all.addAll(aliases.keySet());
        return Collections.unmodifiableList(all);
    }

    public boolean contains(String name) {
        return fileOf.containsKey(name) || aliases.containsKey(name);
    }

    /** Positional read of tensor {@code name}'s bytes from {@code byteOffset} into {@code dst} (see {@link SafetensorsFile#read}). */
    public void read(String name, long byteOffset, MemorySegment dst) throws IOException {
        name = stored(name);
        String replaced = lora == null ? null : lora.replacement(name);
        if (replaced != null) {
            lora.file().read(replaced, byteOffset, dst);
            return;
        }
        file(name).read(name, byteOffset, dst);
        if (lora != null && lora.adapts(name)) lora.addDelta(info(name), byteOffset, dst);
    }

    /** Fails naming the file if any shard changed since it was opened (see {@link SafetensorsFile#checkUnchanged}). */
    public void checkUnchanged() throws IOException {
        for (SafetensorsFile f : files) f.checkUnchanged();
        if (lora != null) lora.checkUnchanged();
    }

    public TensorInfo info(String name) {
        if (aliases.containsKey(name)) {
            TensorInfo t = info(aliases.get(name));
            return new TensorInfo(name, t.dtype(), t.shape(), t.dataBegin(), t.dataEnd(), t.file());
        }
        String replaced = lora == null ? null : lora.replacement(name);
        if (replaced != null) {
            TensorInfo t = lora.file().tensors().get(replaced);
            return new TensorInfo(name, t.dtype(), t.shape(), t.dataBegin(), t.dataEnd(), t.file());
        }
        return file(name).tensors().get(name);
    }

    /**
     * The stored bytes of a tensor (a view of the mapping, for read-ahead and comparisons of tensors that are not
     * merged). With a LoRA adapter these are the bytes before it: {@link #read} gives the adapted tensor, and
     * {@link #adapted} says which tensors differ.
     */
    public MemorySegment data(String name) {
        name = stored(name);
        String replaced = lora == null ? null : lora.replacement(name);
        if (replaced != null) return lora.file().data(replaced);
        return file(name).data(name);
    }

    /** Whether {@link #read} gives other values than {@link #data} for {@code name} (a LoRA product is added). */
    public boolean adapted(String name) {
        return lora != null && lora.adapts(stored(name));
    }

    /** A host tensor view of an F32/F16/BF16 tensor. */
    public Tensor tensor(String name) {
        if (adapted(name))
            throw new IllegalArgumentException(directory + ": tensor " + name + " is changed by the LoRA adapter "
                    + lora.directory() + " as it is read; a view of the stored bytes would leave it out");
        TensorInfo t = info(name);
        DType d = t.dtype().toMergeDType().orElseThrow(() -> new IllegalArgumentException(
                directory + ": tensor " + name + " is " + t.dtype() + ", not a float type Smelter merges"));
        return new Tensor(data(name), t.elementCount(), d, Tensor.Memory.HOST);
    }

    public long totalBytes() {
        long n = 0;
        for (String name : names) n += info(name).byteSize();
        return n;
    }

    public Map<String, String> metadata() {
        return metadata;
    }

    private SafetensorsFile file(String name) {
        SafetensorsFile f = fileOf.get(name);
        if (f == null) throw new IllegalArgumentException(directory + " has no tensor " + name);
        return f;
    }

    @Override
    public void close() {
        if (lora != null) lora.close();
        for (SafetensorsFile f : files) f.close();
    }
}
