package dev.smelter.config;

import java.util.regex.Matcher;
import java.util.regex.Pattern;

/** Layer structure read from Hugging Face tensor names ("model.layers.12.mlp.up_proj.weight"). */
public final class TensorNames {
    private static final Pattern LAYER = Pattern.compile("(?:^|\\.)(?:layers|h|blocks|layer)\\.(\\d+)\\.");

    private TensorNames() {}

    /** Layer indices beyond this are refused: no model has a million layers, and the planner counts them in an int. */
    static final int MAX_LAYER = 1_000_000;

    /**
     * The layer index of a tensor, or -1 when it belongs to no layer (embeddings, final norm, head).
     *
     * @throws IllegalArgumentException naming the tensor when the index is above {@link #MAX_LAYER}
     */
    public static int layerIndex(String name) {
        Matcher m = LAYER.matcher(name);
        if (!m.find()) return -1;
        String digits = m.group(1);
        if (digits.length() > 7 || Integer.parseInt(digits) > MAX_LAYER)
            throw new IllegalArgumentException("tensor " + name + ": layer index " + digits + " is above "
                    + MAX_LAYER + " (a corrupt or hostile tensor name?)");
        return Integer.parseInt(digits);
    }

    /**
     * The same tensor in layer {@code index} ("model.layers.3.mlp.up_proj.weight" with 7: "model.layers.7.mlp...");
     * {@code name} must belong to a layer.
     */
    public static String withLayer(String name, int index) {
        Matcher m = LAYER.matcher(name);
        if (!m.find()) throw new IllegalArgumentException("tensor " + name + " belongs to no layer");
        return name.substring(0, m.start(1)) + index + name.substring(m.end(1));
    }

    /**
     * The name of the stack of layers a layer tensor belongs to: its name up to the layer index ("model.layers."),
     * null for a tensor outside the layers. Models with an encoder and a decoder, or a vision tower, have several.
     */
    public static String layerStack(String name) {
        Matcher m = LAYER.matcher(name);
        return m.find() ? name.substring(0, m.start(1)) : null;
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
