package dev.smelter.cli;

import dev.smelter.DType;
import dev.smelter.io.CheckpointWriter;
import dev.smelter.io.SafetensorsDType;
import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.SplittableRandom;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;

/**
 * {@code smelter demo-checkpoints DIR}: writes a small random Llama-style base model and three
 * "language experts" (base + small task vectors) as sharded bf16 (or f16, f32) safetensors checkpoints with a
 * transformers-compatible config.json, plus mergekit configs that merge them.
 */
@Command(name = "demo-checkpoints", mixinStandardHelpOptions = true,
        description = "Write a random Llama-style base, three experts and merge configs for trying Smelter.")
final class DemoCheckpoints implements Callable<Integer> {
    @Parameters(index = "0", paramLabel = "DIR")
    Path dir;

    @Option(names = "--hidden", defaultValue = "256", description = "hidden size (default 256)")
    int hidden;

    @Option(names = "--layers", defaultValue = "4", description = "decoder layers (default 4)")
    int layers;

    @Option(names = "--vocab", defaultValue = "1000", description = "vocabulary size (default 1000)")
    int vocab;

    @Option(names = "--seed", defaultValue = "1", description = "random seed")
    long seed;

    @Option(names = "--dtype", defaultValue = "bf16", paramLabel = "DTYPE", description = "bf16 (default), f16 or f32")
    String dtype;

    @Option(names = "--max-shard-size", defaultValue = "2MB", paramLabel = "SIZE",
            description = "shard size limit (default 2MB: small demos come out sharded, as real checkpoints do)")
    String maxShardSize;

    record Shape(String name, long[] shape) {}

    @Override
    public Integer call() throws IOException {
        SafetensorsDType type = switch (dtype.toLowerCase(Locale.ROOT)) {
            case "bf16", "bfloat16" -> SafetensorsDType.BF16;
            case "f16", "fp16", "float16" -> SafetensorsDType.F16;
            case "f32", "fp32", "float32" -> SafetensorsDType.F32;
            default -> throw new IllegalArgumentException("--dtype is bf16, f16 or f32, not '" + dtype + "'");
        };
        String yamlType = torchDType(type);
        int inter = hidden * 11 / 4;
        List<Shape> shapes = new ArrayList<>();
        shapes.add(new Shape("model.embed_tokens.weight", new long[] {vocab, hidden}));
        for (int l = 0; l < layers; l++) {
            String p = "model.layers." + l + ".";
            for (String proj : List.of("q_proj", "k_proj", "v_proj", "o_proj"))
                shapes.add(new Shape(p + "self_attn." + proj + ".weight", new long[] {hidden, hidden}));
            shapes.add(new Shape(p + "mlp.gate_proj.weight", new long[] {inter, hidden}));
            shapes.add(new Shape(p + "mlp.up_proj.weight", new long[] {inter, hidden}));
            shapes.add(new Shape(p + "mlp.down_proj.weight", new long[] {hidden, inter}));
            shapes.add(new Shape(p + "input_layernorm.weight", new long[] {hidden}));
            shapes.add(new Shape(p + "post_attention_layernorm.weight", new long[] {hidden}));
        }
        shapes.add(new Shape("model.norm.weight", new long[] {hidden}));
        shapes.add(new Shape("lm_head.weight", new long[] {vocab, hidden}));

        SplittableRandom rnd = new SplittableRandom(seed);
        long[] baseSeeds = shapes.stream().mapToLong(s -> rnd.nextLong()).toArray();
        write(dir.resolve("base"), shapes, baseSeeds, 0L, inter, type);
        for (String expert : List.of("expert-de", "expert-fr", "expert-sw"))
            write(dir.resolve(expert), shapes, baseSeeds, rnd.nextLong(), inter, type);
        Files.writeString(dir.resolve("ties.yml"), """
                # TIES merge of three language experts (mergekit format; paths relative to this file)
                merge_method: ties
                base_model: base
                models:
                  - model: expert-de
                    parameters: {weight: 0.4, density: 0.5}
                  - model: expert-fr
                    parameters: {weight: 0.3, density: 0.5}
                  - model: expert-sw
                    parameters: {weight: [0.2, 0.4], density: 0.5}   # a gradient over the layers
                parameters: {normalize: true}
                dtype: bfloat16
                """.replace("bfloat16", yamlType));
        Files.writeString(dir.resolve("dare_ties.yml"), """
                merge_method: dare_ties
                base_model: base
                models:
                  - model: expert-de
                    parameters: {weight: 0.5, density: 0.3}
                  - model: expert-fr
                    parameters: {weight: 0.5, density: 0.3}
                dtype: bfloat16
                smelter: {seed: 42}
                """.replace("bfloat16", yamlType));
        System.out.printf(Locale.ROOT, "wrote base, expert-de, expert-fr, expert-sw, ties.yml and dare_ties.yml to %s%n", dir);
        return 0;
    }

    /** One checkpoint: base weights from baseSeeds, plus a task vector from deltaSeed (0 = none). */
    private void write(Path out, List<Shape> shapes, long[] baseSeeds, long deltaSeed, int inter, SafetensorsDType type)
            throws IOException {
        List<CheckpointWriter.TensorSpec> specs = shapes.stream()
                .map(s -> new CheckpointWriter.TensorSpec(s.name(), type, s.shape()))
                .toList();
        SplittableRandom deltas = new SplittableRandom(deltaSeed);
        try (Arena arena = Arena.ofConfined();
                CheckpointWriter w = new CheckpointWriter(out, specs, Sizes.parse("--max-shard-size", maxShardSize), Map.of("format", "pt"), true)) {
            for (int t = 0; t < shapes.size(); t++) {
                Shape s = shapes.get(t);
                long n = 1;
                for (long d : s.shape()) n *= d;
                boolean norm = s.shape().length == 1;
                SplittableRandom r = new SplittableRandom(baseSeeds[t]);
                MemorySegment data = arena.allocate(n * type.byteSize(), 8);
                for (long i = 0; i < n; i++) {
                    double v = norm ? 1.0 + 0.05 * gaussian(r) : 0.02 * gaussian(r);
                    if (deltaSeed != 0) v += (norm ? 0.002 : 0.001) * gaussian(deltas);
                    switch (type) {
                        case F32 -> data.setAtIndex(ValueLayout.JAVA_FLOAT, i, (float) v);
                        case F16 -> data.setAtIndex(ValueLayout.JAVA_SHORT, i, Float.floatToFloat16((float) v));
                        default -> data.setAtIndex(ValueLayout.JAVA_SHORT, i, DType.bfloat16Bits((float) v));
                    }
                }
                w.write(s.name(), data);
            }
            Path tmp = Files.createTempDirectory("smelter-demo");
            Path config = tmp.resolve("config.json");
            try {
                Files.writeString(config, String.format(Locale.ROOT, """
                        {
                          "architectures": ["LlamaForCausalLM"],
                          "model_type": "llama",
                          "hidden_size": %d,
                          "intermediate_size": %d,
                          "num_hidden_layers": %d,
                          "num_attention_heads": %d,
                          "num_key_value_heads": %d,
                          "vocab_size": %d,
                          "max_position_embeddings": 256,
                          "rms_norm_eps": 1e-5,
                          "rope_theta": 10000.0,
                          "tie_word_embeddings": false,
                          "torch_dtype": "%s",
                          "hidden_act": "silu"
                        }
                        """, hidden, inter, layers, Math.max(1, hidden / 64), Math.max(1, hidden / 64), vocab, torchDType(type)));
                w.copyFile(config);
            } finally {
                Files.deleteIfExists(config);
                Files.deleteIfExists(tmp);
            }
            w.commit();
        }
    }

    private static String torchDType(SafetensorsDType type) {
        return type == SafetensorsDType.BF16 ? "bfloat16" : type == SafetensorsDType.F16 ? "float16" : "float32";
    }

    private static double gaussian(SplittableRandom r) {
        double u = r.nextDouble(Double.MIN_VALUE, 1.0), v = r.nextDouble();
        return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
    }
}
