package dev.smelter.config;

import java.util.regex.Matcher;
import java.util.regex.Pattern;

/** Layer structure read from Hugging Face tensor names ("model.layers.12.mlp.up_proj.weight"). */
public final class TensorNames {
    private static final Pattern LAYER = Pattern.compile("(?:^|\\.)(?:layers|h|blocks|layer)\\.(\\d+)\\.");

    private TensorNames() {}

    /** The layer index of a tensor, or -1 when it belongs to no layer (embeddings, final norm, head). */
    public static int layerIndex(String name) {
        Matcher m = LAYER.matcher(name);
        return m.find() ? Integer.parseInt(m.group(1)) : -1;
    }

    /** Non-layer tensors that come after the layers: the final norm and the output head. */
    public static boolean isAfterLayers(String name) {
        return name.contains("lm_head") || name.matches("(?:^|.*\\.)(?:norm|ln_f|final_layernorm|final_layer_norm)\\.\\w+$");
    }

    /** Embedding and output-head matrices, whose first dimension is the vocabulary. */
    public static boolean isVocabMatrix(String name) {
        return name.contains("embed_tokens") || name.contains("lm_head") || name.contains("wte") || name.contains("word_embeddings");
    }
}
