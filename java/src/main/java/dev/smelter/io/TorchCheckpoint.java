package dev.smelter.io;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * PyTorch {@code .bin} checkpoints ({@code torch.save} of a state dict, the zip format of torch 1.6 and later) read
 * without running any of their code: {@code archive/data.pkl} is interpreted by a restricted unpickler that knows
 * only the opcodes a state dict uses and accepts only the globals it needs ({@code collections.OrderedDict},
 * {@code torch._utils._rebuild_tensor_v2}, {@code torch._utils._rebuild_parameter} and the {@code torch.*Storage}
 * types); any other global is refused by name, as mergekit's lazy unpickler does. Each tensor is a contiguous range
 * of its storage, {@code archive/data/<key>}, stored uncompressed in the zip: the result is a table of byte ranges of
 * the file, read like a safetensors file's ({@link SafetensorsFile#ofRanges}). Non-contiguous tensors, compressed
 * storages, big-endian files and the legacy (pre-zip) format are refused with the command that converts the file.
 */
public final class TorchCheckpoint {
    /** How to convert a file this reader refuses into safetensors. */
    public static final String CONVERT = "convert it to safetensors with `python -c \"import torch, safetensors.torch as s; "
            + "s.save_file({k: v.contiguous() for k, v in torch.load('pytorch_model.bin', weights_only=True).items()}, "
            + "'model.safetensors', metadata={'format': 'pt'})\"` (for a sharded model, each shard and the index)";

    private static final int MAX_PICKLE = 64 << 20;
    private static final int MAX_ENTRIES = 1 << 20;

    private TorchCheckpoint() {}

    /** Opens {@code file} as a table of its tensors. */
    public static SafetensorsFile open(Path file) throws IOException {
        try (FileChannel ch = FileChannel.open(file, StandardOpenOption.READ)) {
            Zip zip = Zip.read(file, ch);
            String pkl = null;
            for (String name : zip.entries.keySet())
                if (name.endsWith("/data.pkl") && name.indexOf('/') == name.length() - "/data.pkl".length()) {
                    if (pkl != null) throw bad(file, "holds two pickles (" + pkl + ", " + name + ")");
                    pkl = name;
                }
            if (pkl == null) throw bad(file, "is a zip file without ARCHIVE/data.pkl: not a torch checkpoint");
            String prefix = pkl.substring(0, pkl.length() - "data.pkl".length());
            Entry order = zip.entries.get(prefix + "byteorder");
            if (order != null && !new String(zip.bytes(ch, order, 16), StandardCharsets.US_ASCII).equals("little"))
                throw bad(file, "stores big-endian tensors; " + CONVERT);
            Entry p = zip.entries.get(pkl);
            if (p.size > MAX_PICKLE) throw bad(file, pkl + " is " + p.size + " bytes, more than a state dict's");
            Object root = new Unpickler(file, zip.bytes(ch, p, MAX_PICKLE)).load();
            if (!(root instanceof Dict dict))
                throw bad(file, "holds a " + describe(root) + ", not a state dict (a mapping of names to tensors)");
            Map<String, TensorInfo> tensors = new LinkedHashMap<>();
            for (Map.Entry<Object, Object> e : dict.items.entrySet()) {
                if (!(e.getKey() instanceof String name))
                    throw bad(file, "has a key " + describe(e.getKey()) + " that is not a tensor name");
                if (!(e.getValue() instanceof TensorRef t))
                    throw bad(file, "entry '" + name + "' is a " + describe(e.getValue()) + ", not a tensor");
                tensors.put(name, t.info(file, ch, name, zip, prefix));
            }
            Map<String, String> metadata = new LinkedHashMap<>();
            metadata.put("format", "pt");
            return SafetensorsFile.ofRanges(file, tensors, metadata);
        }
    }

    static CheckpointFormatException bad(Path file, String message) {
        return new CheckpointFormatException(file, message);
    }

    private static String describe(Object o) {
        return o == null ? "None" : o instanceof Global g ? "global " + g.module + "." + g.name
                : o.getClass().getSimpleName().toLowerCase(java.util.Locale.ROOT);
    }

    // ---- the zip container ------------------------------------------------------------------------------------

    /** A zip entry: where its data begins in the file, its size, its compression method. */
    private record Entry(String name, long localHeader, long size, long compressedSize, int method) {}

    private static final class Zip {
        final Path file;
        final Map<String, Entry> entries = new LinkedHashMap<>();

        Zip(Path file) {
            this.file = file;
        }

        static Zip read(Path file, FileChannel ch) throws IOException {
            long size = ch.size();
            if (size < 4 || readAt(file, ch, 0, 4).getInt(0) != 0x04034b50)
                throw bad(file, "is not a zip file: an old torch checkpoint (saved before torch 1.6 or with "
                        + "_use_new_zipfile_serialization=False), which Smelter does not read; " + CONVERT);
            if (size < 22) throw bad(file, "is " + size + " bytes: too short for a torch checkpoint");
            // End of central directory: the last 22 bytes plus a comment of at most 65535.
            int tail = (int) Math.min(size, 22 + 65535);
            ByteBuffer end = readAt(file, ch, size - tail, tail);
            int eocd = -1;
            for (int i = tail - 22; i >= 0; i--)
                if (end.getInt(i) == 0x06054b50) {
                    eocd = i;
                    break;
                }
            if (eocd < 0) throw bad(file, "has no zip central directory (truncated?)");
            long count = end.getShort(eocd + 10) & 0xFFFF;
            long cdSize = end.getInt(eocd + 12) & 0xFFFFFFFFL;
            long cdOffset = end.getInt(eocd + 16) & 0xFFFFFFFFL;
            if (count == 0xFFFF || cdSize == 0xFFFFFFFFL || cdOffset == 0xFFFFFFFFL) {  // zip64
                long locator = size - tail + eocd - 20;
                if (locator < 0) throw bad(file, "has a damaged zip64 directory");
                ByteBuffer loc = readAt(file, ch, locator, 20);
                if (loc.getInt(0) != 0x07064b50) throw bad(file, "has a damaged zip64 directory locator");
                long at = loc.getLong(8);
                if (at < 0 || at > size - 56) throw bad(file, "has a zip64 directory outside the file");
                ByteBuffer z = readAt(file, ch, at, 56);
                if (z.getInt(0) != 0x06064b50) throw bad(file, "has a damaged zip64 end of directory");
                count = z.getLong(32);
                cdSize = z.getLong(40);
                cdOffset = z.getLong(48);
            }
            if (count < 0 || count > MAX_ENTRIES || cdSize < 0 || cdSize > Integer.MAX_VALUE - 8 || cdOffset < 0
                    || cdOffset + cdSize > size)
                throw bad(file, "has a zip directory that does not fit the file (" + count + " entries, " + cdSize
                        + " bytes at " + cdOffset + ")");
            ByteBuffer cd = readAt(file, ch, cdOffset, (int) cdSize);
            Zip zip = new Zip(file);
            int p = 0;
            for (long i = 0; i < count; i++) {
                if (p + 46 > cdSize || cd.getInt(p) != 0x02014b50) throw bad(file, "has a damaged zip directory entry " + i);
                int method = cd.getShort(p + 10) & 0xFFFF;
                long compressed = cd.getInt(p + 20) & 0xFFFFFFFFL, plain = cd.getInt(p + 24) & 0xFFFFFFFFL;
                int nameLen = cd.getShort(p + 28) & 0xFFFF, extraLen = cd.getShort(p + 30) & 0xFFFF,
                        commentLen = cd.getShort(p + 32) & 0xFFFF;
                long local = cd.getInt(p + 42) & 0xFFFFFFFFL;
                if (p + 46L + nameLen + extraLen + commentLen > cdSize) throw bad(file, "has a damaged zip directory entry " + i);
                byte[] nameBytes = new byte[nameLen];
                cd.get(p + 46, nameBytes);
                String name = new String(nameBytes, StandardCharsets.UTF_8);
                // zip64 extended information: the fields that are 0xFFFFFFFF, in this order.
                for (int e = p + 46 + nameLen; e + 4 <= p + 46 + nameLen + extraLen; ) {
                    int id = cd.getShort(e) & 0xFFFF, len = cd.getShort(e + 2) & 0xFFFF;
                    if (e + 4 + len > p + 46 + nameLen + extraLen) break;
                    if (id == 1) {
                        int q = e + 4;
                        if (plain == 0xFFFFFFFFL && q + 8 <= e + 4 + len) { plain = cd.getLong(q); q += 8; }
                        if (compressed == 0xFFFFFFFFL && q + 8 <= e + 4 + len) { compressed = cd.getLong(q); q += 8; }
                        if (local == 0xFFFFFFFFL && q + 8 <= e + 4 + len) local = cd.getLong(q);
                    }
                    e += 4 + len;
                }
                if (plain < 0 || compressed < 0 || local < 0 || local > size)
                    throw bad(file, "zip entry " + name + " lies outside the file");
                zip.entries.put(name, new Entry(name, local, plain, compressed, method));
                p += 46 + nameLen + extraLen + commentLen;
            }
            return zip;
        }

        /** The file offset of {@code e}'s data (after its local header), checked against the file. */
        long dataStart(FileChannel ch, Entry e) throws IOException {
            if (e.method() != 0)
                throw bad(file, "zip entry " + e.name() + " is compressed (method " + e.method() + "); torch.save "
                        + "stores tensors uncompressed, so this file was repacked; " + CONVERT);
            if (e.localHeader() + 30 > ch.size()) throw bad(file, "zip entry " + e.name() + " lies outside the file");
            ByteBuffer h = readAt(file, ch, e.localHeader(), 30);
            if (h.getInt(0) != 0x04034b50) throw bad(file, "zip entry " + e.name() + " has a damaged local header");
            long start = e.localHeader() + 30 + (h.getShort(26) & 0xFFFF) + (h.getShort(28) & 0xFFFF);
            if (start + e.size() > ch.size() || e.size() != e.compressedSize())
                throw bad(file, "zip entry " + e.name() + " (" + e.size() + " bytes) runs past the end of the file");
            return start;
        }

        byte[] bytes(FileChannel ch, Entry e, int limit) throws IOException {
            if (e.size() > limit) throw bad(file, "zip entry " + e.name() + " is too large");
            long start = dataStart(ch, e);
            ByteBuffer b = readAt(file, ch, start, (int) e.size());
            byte[] out = new byte[(int) e.size()];
            b.get(0, out);
            return out;
        }

        private static ByteBuffer readAt(Path file, FileChannel ch, long position, int length) throws IOException {
            ByteBuffer b = ByteBuffer.allocate(length).order(ByteOrder.LITTLE_ENDIAN);
            while (b.hasRemaining()) {
                int n = ch.read(b, position + b.position());
                if (n < 0) throw bad(file, "ends at byte " + (position + b.position()) + ", inside a zip structure "
                        + "(truncated?)");
            }
            return b.flip();
        }
    }

    // ---- the restricted unpickler -----------------------------------------------------------------------------

    /** A global the pickle names: only those of a state dict are accepted. */
    private record Global(String module, String name) {}

    /** A storage: its element type and its entry under ARCHIVE/data/. */
    private record Storage(SafetensorsDType dtype, String key, long elements) {}

    /** A tensor: a view of a storage. */
    private record TensorRef(Storage storage, long offset, long[] shape, long[] stride) {
        TensorInfo info(Path file, FileChannel ch, String name, Zip zip, String prefix) throws IOException {
            try {
                return checkedInfo(file, ch, name, zip, prefix);
            } catch (ArithmeticException | IllegalArgumentException e) {
                throw bad(file, "tensor " + name + " has a shape, stride or offset out of range (" + e.getMessage() + ")");
            }
        }

        private TensorInfo checkedInfo(Path file, FileChannel ch, String name, Zip zip, String prefix) throws IOException {
            long expect = 1;
            for (int i = shape.length - 1; i >= 0; i--) {
                if (shape[i] != 1 && stride[i] != expect)
                    throw bad(file, "tensor " + name + " is not contiguous (shape " + java.util.Arrays.toString(shape)
                            + ", stride " + java.util.Arrays.toString(stride) + "); " + CONVERT);
                expect = Math.multiplyExact(expect, shape[i]);
            }
            long elements = TensorInfo.elements(shape);
            long bytesPer = storage.dtype().byteSize();
            Entry e = zip.entries.get(prefix + "data/" + storage.key());
            if (e == null) throw bad(file, "tensor " + name + ": its storage " + prefix + "data/" + storage.key() + " is missing");
            long begin = Math.multiplyExact(offset, bytesPer), end = Math.addExact(begin, Math.multiplyExact(elements, bytesPer));
            if (offset < 0 || end > e.size())
                throw bad(file, "tensor " + name + " (" + elements + " elements from " + offset + ") runs past its storage "
                        + storage.key() + " of " + e.size() + " bytes");
            long start = zip.dataStart(ch, e);
            return new TensorInfo(name, storage.dtype(), shape, start + begin, start + end, file);
        }
    }

    /** A list (mutable, unlike tuples). */
    private record PyList(List<Object> items) {}

    /** A dict (OrderedDict or {}): insertion order kept. */
    private static final class Dict {
        final Map<Object, Object> items = new LinkedHashMap<>();
    }

    private static final Map<String, SafetensorsDType> STORAGES = Map.ofEntries(
            Map.entry("FloatStorage", SafetensorsDType.F32), Map.entry("HalfStorage", SafetensorsDType.F16),
            Map.entry("BFloat16Storage", SafetensorsDType.BF16), Map.entry("DoubleStorage", SafetensorsDType.F64),
            Map.entry("LongStorage", SafetensorsDType.I64), Map.entry("IntStorage", SafetensorsDType.I32),
            Map.entry("ShortStorage", SafetensorsDType.I16), Map.entry("CharStorage", SafetensorsDType.I8),
            Map.entry("ByteStorage", SafetensorsDType.U8), Map.entry("BoolStorage", SafetensorsDType.BOOL));

    private static final Object MARK = new Object();

    /** Executes only data-building opcodes; REDUCE only on the accepted globals. */
    private static final class Unpickler {
        private final Path file;
        private final ByteBuffer in;
        private final List<Object> stack = new ArrayList<>();
        private final Map<Long, Object> memo = new HashMap<>();

        Unpickler(Path file, byte[] bytes) {
            this.file = file;
            this.in = ByteBuffer.wrap(bytes).order(ByteOrder.LITTLE_ENDIAN);
        }

        private CheckpointFormatException error(String message) {
            return bad(file, "data.pkl at byte " + in.position() + ": " + message);
        }

        private void need(int n) throws CheckpointFormatException {
            if (n < 0 || in.remaining() < n) throw error("ends inside an opcode (truncated?)");
        }

        private int u8() throws CheckpointFormatException {
            need(1);
            return in.get() & 0xFF;
        }

        private String text(int n, boolean utf8) throws CheckpointFormatException {
            need(n);
            byte[] b = new byte[n];
            in.get(b);
            return new String(b, utf8 ? StandardCharsets.UTF_8 : StandardCharsets.ISO_8859_1);
        }

        private String line() throws CheckpointFormatException {
            StringBuilder s = new StringBuilder();
            for (int c; (c = u8()) != '\n'; ) {
                if (s.length() > 256) throw error("a GLOBAL name longer than 256 bytes");
                s.append((char) c);
            }
            return s.toString();
        }

        private Object pop() throws CheckpointFormatException {
            if (stack.isEmpty() || stack.get(stack.size() - 1) == MARK) throw error("pops an empty stack");
            return stack.remove(stack.size() - 1);
        }

        private Object top() throws CheckpointFormatException {
            if (stack.isEmpty() || stack.get(stack.size() - 1) == MARK) throw error("reads an empty stack");
            return stack.get(stack.size() - 1);
        }

        /** Pops everything down to the topmost MARK (and the mark). */
        private List<Object> popMark() throws CheckpointFormatException {
            int m = stack.lastIndexOf(MARK);
            if (m < 0) throw error("has no MARK to pop to");
            List<Object> items = new ArrayList<>(stack.subList(m + 1, stack.size()));
            stack.subList(m, stack.size()).clear();
            return items;
        }

        private void push(Object o) throws CheckpointFormatException {
            if (stack.size() > 1_000_000) throw error("grows its stack past 1000000 entries");
            stack.add(o);
        }

        private void put(long index) throws CheckpointFormatException {
            if (memo.size() > 10_000_000) throw error("memoizes too much");
            memo.put(index, top());
        }

        private Object get(long index) throws CheckpointFormatException {
            if (!memo.containsKey(index)) throw error("reads memo entry " + index + ", which was never stored");
            return memo.get(index);
        }

        Object load() throws CheckpointFormatException {
            while (true) {
                int op = u8();
                switch (op) {
                    case 0x80 -> { // PROTO
                        int v = u8();
                        if (v > 5) throw error("pickle protocol " + v + " is newer than any torch writes");
                    }
                    case 0x95 -> { need(8); in.getLong(); } // FRAME: a length hint
                    case '.' -> { // STOP
                        Object result = pop();
                        return result;
                    }
                    case '(' -> push(MARK);
                    case ')' -> push(List.of());
                    case '}' -> push(new Dict());
                    case ']' -> push(new PyList(new ArrayList<>()));
                    case 'N' -> push(null);
                    case 0x88 -> push(Boolean.TRUE);
                    case 0x89 -> push(Boolean.FALSE);
                    case 'K' -> push((long) u8());
                    case 'M' -> { need(2); push((long) (in.getShort() & 0xFFFF)); }
                    case 'J' -> { need(4); push((long) in.getInt()); }
                    case 0x8a -> { // LONG1
                        int n = u8();
                        need(n);
                        if (n > 8) throw error("an integer of " + n + " bytes");
                        long v = 0;
                        for (int i = 0; i < n; i++) v |= (long) (in.get() & 0xFF) << (8 * i);
                        if (n > 0 && n < 8 && (v >>> (8 * n - 1) & 1) == 1) v |= -1L << (8 * n);  // sign
                        push(v);
                    }
                    case 'G' -> { need(8); push(in.order(ByteOrder.BIG_ENDIAN).getDouble()); in.order(ByteOrder.LITTLE_ENDIAN); }
                    case 'X' -> { need(4); int n = in.getInt(); push(text(n, true)); }
                    case 0x8c -> push(text(u8(), true)); // SHORT_BINUNICODE
                    case 0x8d -> { need(8); long n = in.getLong(); if (n > Integer.MAX_VALUE) throw error("a huge string"); push(text((int) n, true)); }
                    case 'U' -> push(text(u8(), false)); // SHORT_BINSTRING
                    case 'T' -> { need(4); push(text(in.getInt(), false)); }
                    case 'C' -> push(text(u8(), false)); // SHORT_BINBYTES, as a string
                    case 'B' -> { need(4); push(text(in.getInt(), false)); }
                    case 'q' -> put(u8());
                    case 'r' -> { need(4); put(in.getInt() & 0xFFFFFFFFL); }
                    case 0x94 -> put(memo.size()); // MEMOIZE
                    case 'h' -> push(get(u8()));
                    case 'j' -> { need(4); push(get(in.getInt() & 0xFFFFFFFFL)); }
                    case 'c' -> push(global(line(), line()));
                    case 0x93 -> { // STACK_GLOBAL
                        Object name = pop(), module = pop();
                        if (!(module instanceof String m) || !(name instanceof String n)) throw error("STACK_GLOBAL of non-strings");
                        push(global(m, n));
                    }
                    case 't' -> push(List.copyOf(nonNull(popMark())));
                    case 0x85 -> push(tuple(pop()));
                    case 0x86 -> { Object b = pop(), a = pop(); push(tuple(a, b)); }
                    case 0x87 -> { Object c = pop(), b = pop(), a = pop(); push(tuple(a, b, c)); }
                    case 'l' -> push(new PyList(new ArrayList<>(popMark())));
                    case 'd' -> {
                        List<Object> kv = popMark();
                        Dict d = new Dict();
                        setItems(d, kv);
                        push(d);
                    }
                    case 'a' -> { Object v = pop(); list(top()).add(v); }
                    case 'e' -> { List<Object> items = popMark(); list(top()).addAll(items); }
                    case 's' -> { Object v = pop(), k = pop(); setItems(dict(top()), java.util.Arrays.asList(k, v)); }
                    case 'u' -> { List<Object> kv = popMark(); setItems(dict(top()), kv); }
                    case 'Q' -> push(persistent(pop()));
                    case 'R' -> { Object args = pop(), f = pop(); push(reduce(f, args)); }
                    case 'b' -> { // BUILD: an OrderedDict's attributes (_metadata) are not needed
                        Object state = pop();
                        Object target = top();
                        if (!(target instanceof Dict) && !(target instanceof TensorRef))
                            throw error("BUILD on a " + describe(target));
                    }
                    default -> throw error(String.format("opcode 0x%02x is not one a torch state dict uses; refused", op));
                }
            }
        }

        private List<Object> nonNull(List<Object> items) {
            List<Object> out = new ArrayList<>(items.size());
            for (Object o : items) out.add(o == null ? NONE : o);
            return out;
        }

        private List<Object> tuple(Object... items) {
            return List.copyOf(nonNull(java.util.Arrays.asList(items)));
        }

        private List<Object> list(Object o) throws CheckpointFormatException {
            if (o instanceof PyList l) return l.items;
            throw error("appends to a " + describe(o) + ", not a list");
        }

        private Dict dict(Object o) throws CheckpointFormatException {
            if (o instanceof Dict d) return d;
            throw error("sets an item of a " + describe(o) + ", not a dict");
        }

        private void setItems(Dict d, List<Object> kv) throws CheckpointFormatException {
            if (kv.size() % 2 != 0) throw error("an odd number of dict items");
            for (int i = 0; i < kv.size(); i += 2) {
                Object k = kv.get(i);
                if (k != null && !(k instanceof String) && !(k instanceof Long))
                    throw error("a dict key that is a " + describe(k));
                if (d.items.size() > 10_000_000) throw error("a dict of more than 10000000 items");
                d.items.put(k, kv.get(i + 1));
            }
        }

        private Global global(String module, String name) throws CheckpointFormatException {
            boolean ok = module.equals("collections") && name.equals("OrderedDict")
                    || module.equals("torch._utils") && (name.equals("_rebuild_tensor_v2") || name.equals("_rebuild_parameter"))
                    || module.equals("torch") && STORAGES.containsKey(name);
            if (!ok)
                throw error("refers to the global " + module + "." + name + ", which a state dict of tensors does not "
                        + "need: refused (a pickle can run code through globals; Smelter runs none). If the file is "
                        + "trusted, " + CONVERT);
            return new Global(module, name);
        }

        private Object persistent(Object pid) throws CheckpointFormatException {
            // ('storage', torch.XStorage, key, location, numel)
            if (!(pid instanceof List<?> t) || t.size() != 5 || !"storage".equals(t.get(0)))
                throw error("a persistent id that is not a torch storage: " + describe(pid));
            if (!(t.get(1) instanceof Global g) || !g.module().equals("torch") || !STORAGES.containsKey(g.name()))
                throw error("a storage of type " + describe(t.get(1)));
            if (!(t.get(2) instanceof String key) || !key.matches("[A-Za-z0-9_.-]{1,64}") || key.contains(".."))
                throw error("a storage key that is not a simple name");
            if (!(t.get(4) instanceof Long n) || n < 0) throw error("a storage size that is not a count");
            return new Storage(STORAGES.get(g.name()), key, n);
        }

        private Object reduce(Object f, Object args) throws CheckpointFormatException {
            if (!(f instanceof Global g)) throw error("calls a " + describe(f) + ", not an accepted global");
            if (!(args instanceof List<?> a)) throw error("calls " + g.module() + "." + g.name() + " with non-tuple arguments");
            switch (g.name()) {
                case "OrderedDict" -> {
                    if (!a.isEmpty()) throw error("OrderedDict with arguments");
                    return new Dict();
                }
                case "_rebuild_tensor_v2" -> {
                    // (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
                    if (a.size() < 6 || !(a.get(0) instanceof Storage s) || !(a.get(1) instanceof Long offset))
                        throw error("_rebuild_tensor_v2 with arguments other than torch writes");
                    long[] shape = longs(a.get(2)), stride = longs(a.get(3));
                    if (shape.length != stride.length) throw error("a tensor whose shape and stride differ in rank");
                    for (long d : shape) if (d < 0) throw error("a negative dimension");
                    return new TensorRef(s, offset, shape, stride);
                }
                case "_rebuild_parameter" -> {
                    if (a.isEmpty() || !(a.get(0) instanceof TensorRef t)) throw error("_rebuild_parameter of a non-tensor");
                    return t;
                }
                default -> throw error("calls " + g.module() + "." + g.name() + ", which is a type, not a function");
            }
        }

        private long[] longs(Object o) throws CheckpointFormatException {
            if (!(o instanceof List<?> l) || l.size() > 64) throw error("a tensor shape that is not a tuple of integers");
            long[] out = new long[l.size()];
            for (int i = 0; i < out.length; i++) {
                if (!(l.get(i) instanceof Long v)) throw error("a tensor shape that is not a tuple of integers");
                out[i] = v;
            }
            return out;
        }
    }

    /** Python's None inside tuples (List.copyOf refuses null). */
    private static final Object NONE = new Object() {
        @Override
        public String toString() {
            return "None";
        }
    };
}
