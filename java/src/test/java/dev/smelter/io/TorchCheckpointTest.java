package dev.smelter.io;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import dev.smelter.DType;
import dev.smelter.Tensor;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.SplittableRandom;
import java.util.concurrent.TimeUnit;
import java.util.zip.CRC32;
import java.util.zip.ZipEntry;
import java.util.zip.ZipOutputStream;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * PyTorch .bin checkpoints through the restricted unpickler: files written here opcode by opcode (as torch.save writes
 * a state dict), files written by torch itself where /usr/bin/python3 has it, hostile pickles, and mutated files.
 */
public class TorchCheckpointTest {
    @TempDir
    Path dir;

    /** The value of element i of test tensor k, exact in every dtype used (multiples of 1/8, small). */
    static float value(int k, int i) {
        return (float) (((i * 7 + k * 3) % 29) - 14) / 8;
    }

    /** A torch zip checkpoint as torch.save writes one: ARCHIVE/data.pkl (protocol 2), ARCHIVE/data/KEY, version. */
    public static byte[] torchZip(String archive, byte[] pickle, List<byte[]> storages) throws IOException {
        ByteArrayOutputStream bytes = new ByteArrayOutputStream();
        try (ZipOutputStream z = new ZipOutputStream(bytes)) {
            stored(z, archive + "/data.pkl", pickle);
            stored(z, archive + "/byteorder", "little".getBytes(StandardCharsets.US_ASCII));
            for (int i = 0; i < storages.size(); i++) stored(z, archive + "/data/" + i, storages.get(i));
            stored(z, archive + "/version", "3\n".getBytes(StandardCharsets.US_ASCII));
        }
        return bytes.toByteArray();
    }

    static void stored(ZipOutputStream z, String name, byte[] data) throws IOException {
        ZipEntry e = new ZipEntry(name);
        e.setMethod(ZipEntry.STORED);
        e.setSize(data.length);
        CRC32 crc = new CRC32();
        crc.update(data);
        e.setCrc(crc.getValue());
        z.putNextEntry(e);
        z.write(data);
        z.closeEntry();
    }

    /** Pickle opcodes, as Python's pickler writes them at protocol 2. */
    public static final class Pickle {
        final ByteArrayOutputStream out = new ByteArrayOutputStream();
        public int memo;

        public Pickle op(int... bytes) {
            for (int b : bytes) out.write(b);
            return this;
        }

        public Pickle global(String module, String name) {
            op('c');
            out.writeBytes((module + "\n" + name + "\n").getBytes(StandardCharsets.US_ASCII));
            return op('q', memo++);
        }

        Pickle str(String s) {
            byte[] b = s.getBytes(StandardCharsets.UTF_8);
            op('X', b.length & 0xFF, (b.length >> 8) & 0xFF, 0, 0);
            out.writeBytes(b);
            return this;
        }

        Pickle integer(long v) {
            return v < 256 ? op('K', (int) v) : op('J', (int) v & 0xFF, (int) (v >> 8) & 0xFF, (int) (v >> 16) & 0xFF, (int) (v >> 24) & 0xFF);
        }

        Pickle tuple(long... v) {
            op('(');
            for (long x : v) integer(x);
            return op('t');
        }

        /** One state-dict entry: _rebuild_tensor_v2((storage pid), offset, shape, stride, False, OrderedDict()). */
        public Pickle tensor(String name, String storage, int key, long numel, long offset, long[] shape, long[] stride) {
            str(name);
            global("torch._utils", "_rebuild_tensor_v2");
            op('(', '(');
            str("storage");
            global("torch", storage);
            str(Integer.toString(key)).str("cpu").integer(numel).op('t', 'Q');
            integer(offset).tuple(shape).tuple(stride).op(0x89);
            global("collections", "OrderedDict").op(')', 'R');
            return op('t', 'R');
        }

        public byte[] bytes() {
            return out.toByteArray();
        }
    }

    static byte[] le(DType d, float[] v) {
        ByteBuffer b = ByteBuffer.allocate(v.length * d.byteSize()).order(ByteOrder.LITTLE_ENDIAN);
        for (float x : v)
            switch (d) {
                case F32 -> b.putFloat(x);
                case F16 -> b.putShort(Float.floatToFloat16(x));
                case BF16 -> b.putShort((short) (Float.floatToRawIntBits(x) >>> 16));
            }
        return b.array();
    }

    static float[] values(int k, int n) {
        float[] v = new float[n];
        for (int i = 0; i < n; i++) v[i] = value(k, i);
        return v;
    }

    /** A state dict: a f32 [5, 7], a bf16 [6], an f16 view [4] at offset 3 of a storage of 10, and a tied entry. */
    static byte[] stateDict() throws IOException {
        return torchZip("archive", stateDictPickle(), List.of(le(DType.F32, values(0, 35)), le(DType.BF16, values(1, 6)),
                le(DType.F16, values(2, 10))));
    }

    static byte[] stateDictPickle() {
        Pickle p = new Pickle().op(0x80, 2);
        p.global("collections", "OrderedDict").op(')', 'R', 'q', p.memo++, '(');
        p.tensor("model.layers.0.mlp.up_proj.weight", "FloatStorage", 0, 35, 0, new long[] {5, 7}, new long[] {7, 1});
        p.tensor("model.norm.weight", "BFloat16Storage", 1, 6, 0, new long[] {6}, new long[] {1});
        p.tensor("lm_head.weight", "HalfStorage", 2, 10, 3, new long[] {4}, new long[] {1});
        p.op('u', '.');
        return p.bytes();
    }

    static float[] read(Checkpoint c, String name) throws IOException {
        TensorInfo t = c.info(name);
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment m = arena.allocate(t.byteSize(), 8);
            c.read(name, 0, m);
            return new Tensor(m, t.elementCount(), t.dtype().toMergeDType().orElseThrow(), Tensor.Memory.HOST).toFloatArray();
        }
    }

    @Test
    void readsAStateDictWrittenOpcodeByOpcode() throws Exception {
        Path model = Files.createDirectories(dir.resolve("model"));
        Files.write(model.resolve("pytorch_model.bin"), stateDict());
        try (Checkpoint c = Checkpoint.open(model)) {
            assertEquals(List.of("model.layers.0.mlp.up_proj.weight", "model.norm.weight", "lm_head.weight"), c.tensorNames());
            assertArrayEquals(new long[] {5, 7}, c.info("model.layers.0.mlp.up_proj.weight").shape());
            assertEquals(SafetensorsDType.BF16, c.info("model.norm.weight").dtype());
            assertArrayEquals(values(0, 35), read(c, "model.layers.0.mlp.up_proj.weight"));
            assertArrayEquals(values(1, 6), read(c, "model.norm.weight"));
            float[] head = read(c, "lm_head.weight");
            for (int i = 0; i < 4; i++) assertEquals(value(2, 3 + i), head[i], "storage offset 3");
        }
        // A hostile global: refused by name before anything runs.
        Pickle evil = new Pickle().op(0x80, 2);
        evil.global("posix", "system").str("touch " + dir.resolve("pwned")).op(0x85, 'R', '.');
        Files.write(model.resolve("pytorch_model.bin"), torchZip("archive", evil.bytes(), List.of()));
        var e = assertThrows(CheckpointFormatException.class, () -> Checkpoint.open(model).close());
        assertTrue(e.getMessage().contains("global posix.system") && e.getMessage().contains("refused")
                && e.getMessage().contains("safetensors"), e.getMessage());
        assertTrue(!Files.exists(dir.resolve("pwned")));
        // Non-contiguous (a transposed view).
        Pickle t = new Pickle().op(0x80, 2);
        t.global("collections", "OrderedDict").op(')', 'R', 'q', t.memo++, '(');
        t.tensor("w", "FloatStorage", 0, 6, 0, new long[] {2, 3}, new long[] {1, 2}).op('u', '.');
        Files.write(model.resolve("pytorch_model.bin"), torchZip("archive", t.bytes(), List.of(le(DType.F32, values(0, 6)))));
        e = assertThrows(CheckpointFormatException.class, () -> Checkpoint.open(model).close());
        assertTrue(e.getMessage().contains("tensor w is not contiguous"), e.getMessage());
        // The pre-1.6 format: a bare pickle.
        Files.write(model.resolve("pytorch_model.bin"), new byte[] {(byte) 0x80, 2, (byte) 0x8a, 10, 0x6c, (byte) 0xfc});
        e = assertThrows(CheckpointFormatException.class, () -> Checkpoint.open(model).close());
        assertTrue(e.getMessage().contains("not a zip file") && e.getMessage().contains("s.save_file"), e.getMessage());
    }

    /** /usr/bin/python3 with torch (the python3-torch package), else null. */
    static Path torchPython() throws Exception {
        Path py = Path.of("/usr/bin/python3");
        if (!Files.isExecutable(py)) return null;
        Process p = new ProcessBuilder(py.toString(), "-c", "import torch").redirectErrorStream(true).start();
        p.getInputStream().readAllBytes();
        return p.waitFor(60, TimeUnit.SECONDS) && p.exitValue() == 0 ? py : null;
    }

    static void python(Path py, String script) throws Exception {
        Process p = new ProcessBuilder(py.toString(), "-c", script).redirectErrorStream(true).start();
        String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        assertTrue(p.waitFor(120, TimeUnit.SECONDS) && p.exitValue() == 0, out);
    }

    @Test
    void readsWhatTorchSaveWrites() throws Exception {
        Path py = torchPython();
        Assumptions.assumeTrue(py != null, "needs /usr/bin/python3 with torch (apt-get install python3-torch)");
        Path model = Files.createDirectories(dir.resolve("torch"));
        // value(k, i) in Python; a sharded checkpoint with an index, a Parameter, a view, tied weights, an int buffer.
        python(py, """
                import torch, json, collections
                def v(k, n, dt): return ((torch.arange(n, dtype=torch.float64) * 7 + k * 3) %% 29 - 14).div(8).to(dt)
                s1 = collections.OrderedDict()
                s1["model.embed_tokens.weight"] = torch.nn.Parameter(v(0, 12, torch.bfloat16).reshape(4, 3))
                s1["model.layers.0.self_attn.q_proj.weight"] = v(1, 20, torch.float16)[5:14].reshape(3, 3)
                s2 = collections.OrderedDict()
                s2["lm_head.weight"] = s1["model.embed_tokens.weight"]
                s2["model.norm.weight"] = v(2, 3, torch.float32)
                s2["model.position_ids"] = torch.arange(5, dtype=torch.int64)
                torch.save(s1, "%1$s/pytorch_model-00001-of-00002.bin")
                torch.save(s2, "%1$s/pytorch_model-00002-of-00002.bin")
                idx = {"metadata": {"total_size": 0}, "weight_map": {**{k: "pytorch_model-00001-of-00002.bin" for k in s1},
                       **{k: "pytorch_model-00002-of-00002.bin" for k in s2}}}
                json.dump(idx, open("%1$s/pytorch_model.bin.index.json", "w"))
                class Evil:
                    def __reduce__(self): return (print, ("pwned",))
                torch.save({"x": Evil()}, "%1$s/evil.bin")
                torch.save({"x": torch.zeros(2, 3).t()}, "%1$s/strided.bin")
                """.formatted(model));
        try (Checkpoint c = Checkpoint.open(model)) {
            float[] embed = read(c, "model.embed_tokens.weight");
            for (int i = 0; i < 12; i++) assertEquals(value(0, i), embed[i]);
            assertArrayEquals(embed, read(c, "lm_head.weight"), "tied");
            float[] q = read(c, "model.layers.0.self_attn.q_proj.weight");
            for (int i = 0; i < 9; i++) assertEquals(value(1, 5 + i), q[i], "view at offset 5");
            assertArrayEquals(new long[] {3, 3}, c.info("model.layers.0.self_attn.q_proj.weight").shape());
            assertArrayEquals(values(2, 3), read(c, "model.norm.weight"));
            assertEquals(SafetensorsDType.I64, c.info("model.position_ids").dtype());
        }
        var e = assertThrows(CheckpointFormatException.class, () -> TorchCheckpoint.open(model.resolve("evil.bin")));
        assertTrue(e.getMessage().contains("global __builtin__.print") && e.getMessage().contains("refused"), e.getMessage());
        e = assertThrows(CheckpointFormatException.class, () -> TorchCheckpoint.open(model.resolve("strided.bin")));
        assertTrue(e.getMessage().contains("not contiguous"), e.getMessage());
    }

    @Test
    void mutatedFilesFailWithAMessage() throws Exception {
        byte[] seed = stateDict(), pickle = stateDictPickle();
        Path file = dir.resolve("fuzz.bin");
        long end = System.nanoTime() + TimeUnit.SECONDS.toNanos(Math.max(1, ParserFuzzTest.SECONDS / 2));
        SplittableRandom r = new SplittableRandom(ParserFuzzTest.SEED);
        int runs = 0;
        while (System.nanoTime() < end) {
            // Half the runs mutate the zip, half the pickle inside an intact zip.
            byte[] input = runs % 2 == 0 ? ParserFuzzTest.mutate(seed, r) : torchZip("archive",
                    ParserFuzzTest.mutate(pickle, r), List.of(le(DType.F32, values(0, 35)), le(DType.BF16, values(1, 6)),
                            le(DType.F16, values(2, 10))));
            Files.write(file, input);
            try (SafetensorsFile f = TorchCheckpoint.open(file); Arena arena = Arena.ofConfined()) {
                for (TensorInfo t : f.tensors().values()) f.read(t.name(), 0, arena.allocate(Math.max(1, t.byteSize())).asSlice(0, t.byteSize()));
            } catch (CheckpointFormatException e) {
                if (e.getMessage() == null || e.getMessage().isBlank()) fail("no message");
            } catch (IOException | RuntimeException | Error e) {
                fail("input " + java.util.HexFormat.of().formatHex(input) + ": " + e, e);
            }
            runs++;
        }
        assertTrue(runs > 10, runs + " runs");
    }
}
