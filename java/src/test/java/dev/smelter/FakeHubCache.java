package dev.smelter;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import dev.smelter.io.LoraAdapter;
import dev.smelter.io.SafetensorsFixture;
import dev.smelter.io.TorchCheckpointTest;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;
import java.util.stream.Stream;

/**
 * A Hugging Face Hub cache (as huggingface_hub lays it out: blobs, snapshots of links, refs) holding tiny stand-ins
 * for the models that real mergekit configs name: Llama-style and Mistral-style checkpoints of hidden size 16 with
 * config.json, tokenizer.json and tokenizer_config.json. The real models' layer counts are divided by four (Mistral
 * and Llama 3: 32 -> 8 layers; Llama 2 13B: 40 -> 10), so configs keep their shape with scaled layer ranges.
 * Fine-tunes are their family's base plus small task vectors, as real fine-tunes are. As in the real repositories,
 * the Llama 2 13B models are sharded (WizardLM as .bin shards), and orca_mini ships only a slow tokenizer
 * (tokenizer.model).
 */
final class FakeHubCache {
    private FakeHubCache() {}

    static final ObjectMapper JSON = new ObjectMapper();
    static final int HIDDEN = 16, INTERMEDIATE = 40;
    static final String COMMIT = "5f2ab1c1b7b4d6e2a0c3b9e8d7f6a5b4c3d2e1f0";
    /** A pull request's revision of Mistral-7B-Instruct-v0.2 (refs/pr/1), a second snapshot. */
    static final String PR_COMMIT = "0e1d2c3b4a5f6e7d8c9b0a1f2e3d4c5b6a7f8e9d";

    /** A model family: architecture, layers, attention shape, dtype, the base vocabulary and the base's seed. */
    record Family(String architecture, String modelType, int layers, int heads, int kvHeads, DType dtype,
            List<String> vocab, List<String> specials, long seed, boolean tied, boolean qkvBias, int paddedRows) {
        Family(String architecture, String modelType, int layers, int heads, int kvHeads, DType dtype, List<String> vocab,
                List<String> specials, long seed) {
            this(architecture, modelType, layers, heads, kvHeads, dtype, vocab, specials, seed, false, false, 0);
        }
    }

    static final List<String> LETTERS = List.of("a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l", "m", "n",
            "o", "p", "q", "r", "s", "t", "u", "v", "w", "x", "y", "z");

    static List<String> vocab(List<String> first, List<String> merges) {
        List<String> v = new ArrayList<>(first);
        v.addAll(LETTERS);
        v.addAll(merges);
        return v;
    }

    /** Mistral 7B: 32 layers, grouped-query attention (8 kv heads of 32); a 32000-token SentencePiece vocabulary. */
    static final Family MISTRAL = new Family("MistralForCausalLM", "mistral", 8, 4, 2, DType.BF16,
            vocab(List.of("<unk>", "<s>", "</s>"), List.of("th", "he", "in")), List.of(), 11);
    /** Llama 2 13B: 40 layers, multi-head attention, 32000 tokens, stored in f16 by most repositories. */
    static final Family LLAMA2 = new Family("LlamaForCausalLM", "llama", 10, 4, 4, DType.F16,
            vocab(List.of("<unk>", "<s>", "</s>"), List.of("th", "he", "in")), List.of(), 22);
    /** Llama 3 8B: 32 layers, grouped-query attention, a byte-level vocabulary whose specials are added tokens. */
    static final Family LLAMA3 = new Family("LlamaForCausalLM", "llama", 8, 4, 2, DType.BF16,
            vocab(List.of(), List.of("th", "he", "in", "er", "an")),
            List.of("<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"), 33);

    /** Llama 3.2 1B: 16 layers, the output head tied to the embeddings (no lm_head tensor). */
    static final Family LLAMA32 = new Family("LlamaForCausalLM", "llama", 4, 4, 2, DType.BF16,
            LLAMA3.vocab(), LLAMA3.specials(), 44, true, false, 0);
    /**
     * Qwen2.5 7B: 28 layers, biases on q, k and v, and embeddings padded beyond the tokenizer (vocab_size 152064 for
     * 151665 tokens): here 34 tokens in 40 rows.
     */
    static final Family QWEN2 = new Family("Qwen2ForCausalLM", "qwen2", 7, 4, 2, DType.BF16,
            vocab(List.of(), List.of("th", "he", "in", "er", "an")), List.of("<|endoftext|>", "<|im_start|>", "<|im_end|>"),
            55, false, true, 40);

    static final String CHATML = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
            + "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}"
            + "{{ '<|im_start|>assistant\\n' }}{% endif %}";
    static final String MISTRAL_TEMPLATE = "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}"
            + "{{ '[INST] ' + message['content'] + ' [/INST]' }}{% else %}{{ message['content'] + eos_token }}{% endif %}"
            + "{% endfor %}";

    /** The tensors of a Llama-style decoder: name to shape. */
    static Map<String, long[]> shapes(Family f, int vocabRows) {
        Map<String, long[]> s = new LinkedHashMap<>();
        int headDim = HIDDEN / f.heads(), kv = f.kvHeads() * headDim;
        s.put("model.embed_tokens.weight", new long[] {vocabRows, HIDDEN});
        for (int l = 0; l < f.layers(); l++) {
            String p = "model.layers." + l + ".";
            s.put(p + "self_attn.q_proj.weight", new long[] {HIDDEN, HIDDEN});
            s.put(p + "self_attn.k_proj.weight", new long[] {kv, HIDDEN});
            s.put(p + "self_attn.v_proj.weight", new long[] {kv, HIDDEN});
            if (f.qkvBias()) {
                s.put(p + "self_attn.q_proj.bias", new long[] {HIDDEN});
                s.put(p + "self_attn.k_proj.bias", new long[] {kv});
                s.put(p + "self_attn.v_proj.bias", new long[] {kv});
            }
            s.put(p + "self_attn.o_proj.weight", new long[] {HIDDEN, HIDDEN});
            s.put(p + "mlp.gate_proj.weight", new long[] {INTERMEDIATE, HIDDEN});
            s.put(p + "mlp.up_proj.weight", new long[] {INTERMEDIATE, HIDDEN});
            s.put(p + "mlp.down_proj.weight", new long[] {HIDDEN, INTERMEDIATE});
            s.put(p + "input_layernorm.weight", new long[] {HIDDEN});
            s.put(p + "post_attention_layernorm.weight", new long[] {HIDDEN});
        }
        s.put("model.norm.weight", new long[] {HIDDEN});
        if (!f.tied()) s.put("lm_head.weight", new long[] {vocabRows, HIDDEN});
        return s;
    }

    /**
     * One model of {@code f}: the base's values plus a task vector from {@code delta} (0: the base itself); rows of
     * added tokens are new random rows. Returns the tensors in order.
     */
    static Map<String, SafetensorsFixture.T> weights(Family f, int vocabRows, long delta) {
        Map<String, SafetensorsFixture.T> out = new LinkedHashMap<>();
        SplittableRandom base = new SplittableRandom(f.seed()), d = new SplittableRandom(delta);
        for (Map.Entry<String, long[]> e : shapes(f, vocabRows).entrySet()) {
            long[] shape = e.getValue();
            boolean norm = shape.length == 1 && e.getKey().contains("norm"), rows = e.getKey().contains("embed_tokens") || e.getKey().equals("lm_head.weight");
            // the base's rows of the family's own vocabulary come first, whatever this model adds after them
            int baseRows = Math.max(f.paddedRows(), f.vocab().size() + f.specials().size());
            long n = 1;
            for (long x : shape) n *= x;
            float[] v = new float[(int) n];
            for (int i = 0; i < n; i++) {
                boolean added = rows && i / HIDDEN >= baseRows;
                double b = norm ? 1 + 0.05 * TestData.gaussian(base) : 0.02 * TestData.gaussian(added ? d : base);
                if (delta != 0) b += (norm ? 0.002 : 0.001) * TestData.gaussian(d);
                v[i] = TestData.round(f.dtype(), (float) b);
            }
            out.put(e.getKey(), new SafetensorsFixture.T(f.dtype(), shape, v));
        }
        return out;
    }

    /** Files of a model's folder (before it goes into the cache). */
    static void model(Path dir, Family f, long delta, List<String> added, String chatTemplate, boolean torchBin)
            throws IOException {
        model(dir, f, delta, added, chatTemplate, torchBin, false);
    }

    static void model(Path dir, Family f, long delta, List<String> added, String chatTemplate, boolean torchBin,
            boolean slowTokenizerOnly) throws IOException {
        Files.createDirectories(dir);
        List<String> specials = new ArrayList<>(f.specials());
        specials.addAll(added);
        int rows = Math.max(f.paddedRows(), f.vocab().size() + specials.size());
        Map<String, SafetensorsFixture.T> w = weights(f, rows, delta);
        // Llama 2 13B repositories are sharded (an index and two files here), as save_pretrained writes them.
        boolean sharded = f == LLAMA2;
        List<Map<String, SafetensorsFixture.T>> shards = new ArrayList<>();
        if (sharded) {
            shards.add(new LinkedHashMap<>());
            shards.add(new LinkedHashMap<>());
            int i = 0;
            for (Map.Entry<String, SafetensorsFixture.T> e : w.entrySet()) shards.get(i++ < w.size() / 2 ? 0 : 1).put(e.getKey(), e.getValue());
        } else shards.add(w);
        ObjectNode weightMap = JSON.createObjectNode();
        long total = 0;
        for (int k = 0; k < shards.size(); k++) {
            String file = !sharded ? (torchBin ? "pytorch_model.bin" : "model.safetensors")
                    : String.format(torchBin ? "pytorch_model-%05d-of-%05d.bin" : "model-%05d-of-%05d.safetensors", k + 1, shards.size());
            if (torchBin) writeBin(dir.resolve(file), shards.get(k));
            else {
                SafetensorsFixture st = new SafetensorsFixture();
                shards.get(k).forEach(st::put);
                st.write(dir.resolve(file));
            }
            for (Map.Entry<String, SafetensorsFixture.T> e : shards.get(k).entrySet()) {
                weightMap.put(e.getKey(), file);
                total += (long) e.getValue().values().length * e.getValue().dtype().byteSize();
            }
        }
        if (sharded) {
            ObjectNode index = JSON.createObjectNode();
            index.putObject("metadata").put("total_size", total);
            index.set("weight_map", weightMap);
            Files.write(dir.resolve(torchBin ? "pytorch_model.bin.index.json" : "model.safetensors.index.json"),
                    JSON.writerWithDefaultPrettyPrinter().writeValueAsBytes(index));
        }
        ObjectNode cfg = JSON.createObjectNode();
        cfg.putArray("architectures").add(f.architecture());
        cfg.put("model_type", f.modelType()).put("hidden_size", HIDDEN).put("intermediate_size", INTERMEDIATE)
                .put("num_hidden_layers", f.layers()).put("num_attention_heads", f.heads())
                .put("num_key_value_heads", f.kvHeads()).put("vocab_size", rows).put("max_position_embeddings", 4096)
                .put("rms_norm_eps", 1e-5).put("rope_theta", 10000.0).put("tie_word_embeddings", false)
                .put("hidden_act", "silu").put("torch_dtype", f.dtype() == DType.F16 ? "float16" : "bfloat16");
        cfg.put("tie_word_embeddings", f.tied());
        if (f == MISTRAL) cfg.put("sliding_window", 4096);
        Files.write(dir.resolve("config.json"), JSON.writerWithDefaultPrettyPrinter().writeValueAsBytes(cfg));
        // Some Llama 2 fine-tunes ship only the slow SentencePiece tokenizer (tokenizer.model), no tokenizer.json.
        if (slowTokenizerOnly) Files.write(dir.resolve("tokenizer.model"), new byte[] {0x0a, 0x0b, 0x0a, 0x05, '<', 'u', 'n', 'k', '>'});
        else Files.write(dir.resolve("tokenizer.json"), JSON.writeValueAsBytes(tokenizer(f, specials)));
        ObjectNode tc = JSON.createObjectNode();
        boolean llama3 = f.specials().contains("<|begin_of_text|>"), qwen = f == QWEN2;
        tc.put("tokenizer_class", llama3 ? "PreTrainedTokenizerFast" : qwen ? "Qwen2Tokenizer" : "LlamaTokenizer");
        if (!qwen) tc.put("bos_token", llama3 ? "<|begin_of_text|>" : "<s>");
        tc.put("eos_token", llama3 ? "<|end_of_text|>" : qwen ? "<|im_end|>" : "</s>");
        if (chatTemplate != null) tc.put("chat_template", chatTemplate);
        Files.write(dir.resolve("tokenizer_config.json"), JSON.writerWithDefaultPrettyPrinter().writeValueAsBytes(tc));
    }

    /** A BPE tokenizer.json: the family's tokens (id = position), then the specials as added tokens. */
    static ObjectNode tokenizer(Family f, List<String> specials) {
        ObjectNode root = JSON.createObjectNode();
        root.put("version", "1.0");
        root.putNull("truncation");
        root.putNull("padding");
        ArrayNode a = root.putArray("added_tokens");
        List<String> all = new ArrayList<>();
        for (String t : List.of("<unk>", "<s>", "</s>"))
            if (f.vocab().contains(t)) a.add(added(f.vocab().indexOf(t), t));
        for (int i = 0; i < specials.size(); i++) a.add(added(f.vocab().size() + i, specials.get(i)));
        all.addAll(f.vocab());
        root.putNull("normalizer");
        ObjectNode model = root.putObject("model");
        model.put("type", "BPE");
        model.putNull("dropout");
        if (f.vocab().contains("<unk>")) model.put("unk_token", "<unk>");
        else model.putNull("unk_token");
        ObjectNode v = model.putObject("vocab");
        for (int i = 0; i < all.size(); i++) v.put(all.get(i), i);
        ArrayNode merges = model.putArray("merges");
        for (String t : all) if (t.length() == 2 && Character.isLetter(t.charAt(0))) merges.add(t.charAt(0) + " " + t.charAt(1));
        return root;
    }

    private static ObjectNode added(int id, String content) {
        return JSON.createObjectNode().put("id", id).put("content", content).put("single_word", false).put("lstrip", false)
                .put("rstrip", false).put("normalized", false).put("special", true);
    }

    /** pytorch_model.bin as torch.save writes a state dict: a zip of a pickle and one storage per tensor. */
    static void writeBin(Path file, Map<String, SafetensorsFixture.T> tensors) throws IOException {
        var pickle = new TorchCheckpointTest.Pickle().op(0x80, 2);
        pickle.global("collections", "OrderedDict").op(')', 'R', 'q', pickle.memo++, '(');
        List<byte[]> storages = new ArrayList<>();
        for (Map.Entry<String, SafetensorsFixture.T> e : tensors.entrySet()) {
            SafetensorsFixture.T t = e.getValue();
            long[] shape = t.shape(), stride = new long[shape.length];
            for (int i = shape.length - 1, s = 1; i >= 0; s *= (int) shape[i], i--) stride[i] = s;
            String storage = t.dtype() == DType.F16 ? "HalfStorage" : t.dtype() == DType.BF16 ? "BFloat16Storage" : "FloatStorage";
            pickle.tensor(e.getKey(), storage, storages.size(), t.values().length, 0, shape, stride);
            ByteBuffer b = ByteBuffer.allocate(t.values().length * t.dtype().byteSize()).order(ByteOrder.LITTLE_ENDIAN);
            for (float x : t.values())
                switch (t.dtype()) {
                    case F32 -> b.putFloat(x);
                    case F16 -> b.putShort(Float.floatToFloat16(x));
                    case BF16 -> b.putShort((short) (Float.floatToRawIntBits(x) >>> 16));
                }
            storages.add(b.array());
        }
        pickle.op('u', '.');
        Files.write(file, TorchCheckpointTest.torchZip("archive", pickle.bytes(), storages));
    }

    /** A PEFT LoRA adapter (rank 4) of {@code f} on q_proj and v_proj of every layer. */
    static void lora(Path dir, Family f, String baseRepo, long seed) throws IOException {
        Files.createDirectories(dir);
        Files.writeString(dir.resolve(LoraAdapter.CONFIG), """
                {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": 4, "lora_alpha": 8, "lora_dropout": 0.05,
                 "base_model_name_or_path": "%s", "target_modules": ["q_proj", "v_proj"], "bias": "none"}"""
                .formatted(baseRepo));
        SplittableRandom r = new SplittableRandom(seed);
        SafetensorsFixture st = new SafetensorsFixture();
        Map<String, long[]> shapes = shapes(f, 1);
        for (int l = 0; l < f.layers(); l++)
            for (String proj : List.of("q_proj", "v_proj")) {
                String p = "base_model.model.model.layers." + l + ".self_attn." + proj;
                long out = shapes.get("model.layers." + l + ".self_attn." + proj + ".weight")[0];
                st.put(p + ".lora_A.weight", SafetensorsFixture.random(DType.F32, r, 0.05, 4, HIDDEN));
                st.put(p + ".lora_B.weight", SafetensorsFixture.random(DType.F32, r, 0.01, out, 4));
            }
        st.write(dir.resolve(LoraAdapter.WEIGHTS));
    }

    /** Puts the files of {@code model} into {@code hub} as huggingface_hub caches them; {@code ref} may be null. */
    static void cache(Path hub, String repo, String ref, String commit, Path model) throws IOException {
        Path folder = hub.resolve("models--" + repo.replace("/", "--"));
        Path snapshot = Files.createDirectories(folder.resolve("snapshots").resolve(commit));
        Files.createDirectories(folder.resolve("blobs"));
        try (Stream<Path> files = Files.list(model)) {
            for (Path f : files.toList()) {
                Path blob = Files.copy(f, folder.resolve("blobs").resolve(commit + "-" + f.getFileName()));
                Files.createSymbolicLink(snapshot.resolve(f.getFileName()), snapshot.relativize(blob));
            }
        }
        if (ref != null) {
            Path r = folder.resolve("refs").resolve(ref);
            Files.createDirectories(r.getParent());
            Files.writeString(r, commit);
        }
    }

    /** Builds the cache under {@code home/.cache/huggingface/hub}; {@code scratch} holds the model folders first. */
    static Path build(Path home, Path scratch) throws IOException {
        Path hub = home.resolve(".cache/huggingface/hub");
        record M(String repo, Family f, long delta, List<String> added, String template, boolean bin) {}
        List<String> chatml = List.of("<|im_start|>", "<|im_end|>");
        List<M> models = List.of(
                new M("mistralai/Mistral-7B-v0.1", MISTRAL, 0, List.of(), null, false),
                new M("mistralai/Mistral-7B-Instruct-v0.2", MISTRAL, 101, List.of(), MISTRAL_TEMPLATE, false),
                new M("BioMistral/BioMistral-7B", MISTRAL, 102, List.of(), MISTRAL_TEMPLATE, false),
                new M("NousResearch/Hermes-2-Pro-Mistral-7B", MISTRAL, 103, chatml, CHATML, false),
                new M("teknium/OpenHermes-2.5-Mistral-7B", MISTRAL, 104, chatml, CHATML, false),
                new M("HuggingFaceH4/zephyr-7b-beta", MISTRAL, 105, List.of(), null, false),
                new M("TheBloke/Llama-2-13B-fp16", LLAMA2, 0, List.of(), null, false),
                new M("psmathur/orca_mini_v3_13b", LLAMA2, 201, List.of(), null, false),
                new M("garage-bAInd/Platypus2-13B", LLAMA2, 202, List.of(), null, false),
                new M("WizardLM/WizardLM-13B-V1.2", LLAMA2, 203, List.of(), null, true),
                new M("WizardLM/WizardMath-13B-V1.0", LLAMA2, 204, List.of(), null, false),
                new M("meta-llama/Meta-Llama-3-8B", LLAMA3, 0, List.of(), null, false),
                new M("meta-llama/Meta-Llama-3-8B-Instruct", LLAMA3, 301, List.of(), null, false),
                new M("NousResearch/Hermes-2-Pro-Llama-3-8B", LLAMA3, 302, List.of(), null, false),
                new M("cognitivecomputations/dolphin-2.9-llama3-8b", LLAMA3, 303, List.of(), null, false),
                new M("meta-llama/Llama-3.2-1B", LLAMA32, 0, List.of(), null, false),
                new M("meta-llama/Llama-3.2-1B-Instruct", LLAMA32, 501, List.of(), null, false),
                new M("unsloth/Llama-3.2-1B-Instruct", LLAMA32, 502, List.of(), null, false),
                new M("Qwen/Qwen2.5-7B", QWEN2, 0, List.of(), null, false),
                new M("Qwen/Qwen2.5-7B-Instruct", QWEN2, 601, List.of(), CHATML, false),
                new M("Qwen/Qwen2.5-Math-7B", QWEN2, 602, List.of(), CHATML, false),
                new M("Qwen/Qwen2.5-Coder-7B-Instruct", QWEN2, 603, List.of(), CHATML, false));
        for (M m : models) {
            Path dir = scratch.resolve(m.repo().replace('/', '_'));
            model(dir, m.f(), m.delta(), m.added(), m.template(), m.bin(), m.repo().equals("psmathur/orca_mini_v3_13b"));
            cache(hub, m.repo(), "main", COMMIT, dir);
            if (m.repo().equals("mistralai/Mistral-7B-Instruct-v0.2")) cache(hub, m.repo(), "refs/pr/1", PR_COMMIT, dir);
        }
        // A download cut short: config.json and the tokenizer, no weights.
        Path partial = scratch.resolve("partial");
        model(partial, MISTRAL, 701, List.of(), null, false);
        Files.delete(partial.resolve("model.safetensors"));
        cache(hub, "mistralai/Mistral-7B-v0.3", "main", COMMIT, partial);
        Path adapter = scratch.resolve("lora");
        lora(adapter, MISTRAL, "mistralai/Mistral-7B-v0.1", 401);
        cache(hub, "Undi95/Mistral-7B-roleplay_alpaca-lora", "main", COMMIT, adapter);
        return hub;
    }
}
