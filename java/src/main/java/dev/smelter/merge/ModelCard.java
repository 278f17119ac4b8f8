package dev.smelter.merge;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.dataformat.yaml.YAMLFactory;
import dev.smelter.config.MergeConfig;
import dev.smelter.methods.MergeMethods;
import java.io.IOException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.regex.Pattern;

/**
 * The {@code README.md} of a merged checkpoint, in the shape mergekit gives it: Hugging Face front matter
 * ({@code base_model}, {@code library_name: transformers}, {@code tags: [mergekit, merge]}), the merge method, the
 * models and the config as given. Models are named as the config writes them; a name of the form {@code org/name}
 * (a Hub ID, optionally {@code @revision}) is listed under {@code base_model} and linked to the Hub.
 */
public final class ModelCard {
    private static final Pattern HUB_ID = Pattern.compile("[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*(@[A-Za-z0-9._/-]+)?");

    /** Display name and reference of each method mergekit names. */
    private static final Map<String, String> METHODS = Map.ofEntries(
            Map.entry("linear", "[Linear](https://arxiv.org/abs/2203.05482)"),
            Map.entry("task_arithmetic", "[Task Arithmetic](https://arxiv.org/abs/2212.04089)"),
            Map.entry("ties", "[TIES](https://arxiv.org/abs/2306.01708)"),
            Map.entry("dare_linear", "[Linear DARE](https://arxiv.org/abs/2311.03099)"),
            Map.entry("dare_ties", "[DARE TIES](https://arxiv.org/abs/2311.03099)"),
            Map.entry("breadcrumbs", "[Model Breadcrumbs](https://arxiv.org/abs/2312.06795)"),
            Map.entry("breadcrumbs_ties", "[Model Breadcrumbs](https://arxiv.org/abs/2312.06795) with TIES"),
            Map.entry("della", "[DELLA](https://arxiv.org/abs/2406.11617)"),
            Map.entry("della_linear", "[Linear DELLA](https://arxiv.org/abs/2406.11617)"),
            Map.entry("sce", "[SCE](https://arxiv.org/abs/2408.07990)"),
            Map.entry("slerp", "[SLERP](https://en.wikipedia.org/wiki/Slerp)"),
            Map.entry("model_stock", "[Model Stock](https://arxiv.org/abs/2403.19522)"),
            Map.entry("karcher", "[Karcher Mean](https://en.wikipedia.org/wiki/Karcher_mean)"),
            Map.entry("multislerp", "Multi-SLERP"),
            Map.entry("fisher", "[Fisher-weighted averaging](https://arxiv.org/abs/2111.09832)"),
            Map.entry("nuslerp", "NuSLERP"),
            Map.entry("nearswap", "[NearSwap](https://huggingface.co/alchemonaut/QuartetAnemoi-70B-t0.0001)"),
            Map.entry("arcee_fusion", "[Arcee Fusion](https://arcee.ai)"),
            Map.entry("ram", "[Reinforced Agent Merging](https://arxiv.org/abs/2601.13572)"),
            Map.entry("ramplus_tl", "[Reinforced Agent Merging Plus (Tensor-Local)](https://arxiv.org/abs/2601.13572)"));

    private ModelCard() {}

    /**
     * The card of the merge of {@code config} (parsed from {@code configYaml}, the text as given) written to a directory
     * named {@code name}.
     */
    public static String markdown(String name, MergeConfig config, String configYaml) {
        String method = config.method().mergekitName();
        // The paths as the config writes them (the parsed config holds them resolved).
        String base = config.baseModel() == null ? null : config.baseModel().toString();
        List<String> models = new ArrayList<>();
        try {
            JsonNode root = new ObjectMapper(new YAMLFactory()).readTree(configYaml);
            if (root != null && root.path("base_model").isValueNode()) base = root.get("base_model").asText();
            for (JsonNode m : root == null ? List.<JsonNode>of() : root.path("models"))
                if (m.path("model").isValueNode()) models.add(m.get("model").asText());
        } catch (IOException e) {
            models.clear();
        }
        if (models.isEmpty()) for (MergeConfig.ModelEntry m : config.models()) models.add(m.path().toString());
        // mergekit lists slerp's base among the models, since the merge interpolates between them.
        boolean slerp = config.method() == MergeMethods.Method.SLERP;
        List<String> all = new ArrayList<>();
        if (base != null) all.add(base);
        for (String m : models) if (!all.contains(m)) all.add(m);

        StringBuilder md = new StringBuilder("---\n");
        // model+lora: both parts are listed (each a Hub ID or not).
        List<String> hub = all.stream().flatMap(m -> java.util.Arrays.stream(m.split("\\+"))).filter(ModelCard::isHubId)
                .map(ModelCard::withoutRevision).distinct().toList();
        if (hub.isEmpty()) md.append("base_model: []\n");
        else {
            md.append("base_model:\n");
            for (String h : hub) md.append("- ").append(h).append('\n');
        }
        md.append("library_name: transformers\ntags:\n- mergekit\n- merge\n---\n");
        md.append("# ").append(name).append("\n\n");
        md.append("This is a merge of pre-trained language models created with Smelter, from a ")
                .append("[mergekit](https://github.com/arcee-ai/mergekit) configuration.\n\n");
        md.append("## Merge Details\n### Merge Method\n\n");
        md.append("This model was merged using the ").append(METHODS.getOrDefault(method, method)).append(" merge method");
        if (base != null && !slerp) md.append(" using ").append(link(base)).append(" as a base");
        md.append(".\n\n### Models Merged\n\nThe following models were included in the merge:\n");
        for (String m : all) if (slerp || !m.equals(base)) md.append("* ").append(link(m)).append('\n');
        md.append("\n### Configuration\n\nThe following YAML configuration was used to produce this model:\n\n```yaml\n")
                .append(configYaml.strip()).append("\n```\n");
        return md.toString();
    }

    /** The name of the output directory, as the card's title. */
    public static String name(Path output) {
        Path n = output.toAbsolutePath().normalize().getFileName();
        return n == null ? "Untitled Model (1)" : n.toString();
    }

    static boolean isHubId(String path) {
        return HUB_ID.matcher(path).matches() && !path.contains("..");
    }

    private static String withoutRevision(String id) {
        int at = id.indexOf('@');
        return at < 0 ? id : id.substring(0, at);
    }

    private static String link(String path) {
        return isHubId(path) ? "[" + path + "](https://huggingface.co/" + withoutRevision(path) + ")" : path;
    }
}
