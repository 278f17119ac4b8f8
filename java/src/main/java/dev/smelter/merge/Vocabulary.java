package dev.smelter.merge;

import com.fasterxml.jackson.databind.JsonNode;
import dev.smelter.DType;
import dev.smelter.config.TokenizerSettings;
import dev.smelter.io.Checkpoint;
import dev.smelter.io.CheckpointFormatException;
import dev.smelter.io.ModelConfig;
import dev.smelter.io.TokenizerFile;
import dev.smelter.io.TokenizerFile.AddedToken;
import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;

/**
 * The output vocabulary of a merge with a tokenizer source (mergekit's {@code BuildTokenizer} and
 * {@code PermutedEmbeddings}), and for every input model where each output row of an embedding matrix comes from.
 *
 * <p>The vocabulary is the base's (stripped of tokens beyond its {@code vocab_size}), a model's, or their union:
 * the base's tokens keep their ids, the other models' tokens are appended in model order, then their added tokens
 * (with their settings; the first model that has one decides them). Tokens named under {@code tokenizer.tokens} are
 * added where missing. Each input's embedding rows are then gathered into the output order: a model's own row where
 * it has the token (and the token is not forced), else the token's fallback: the configured source, else the only
 * model that has it, else zeros when none has it, else the base's row where the base has it, else the mean of the
 * models that have it. Rows beyond the vocabulary ({@code pad_to_multiple_of}) are the mean of the model's rows.
 */
public final class Vocabulary {
    /** Tensor names of token embeddings and output heads (mergekit's architectures mark them {@code is_embed}). */
    private static final List<String> EMBEDDING_SUFFIXES = List.of("embed_tokens.weight", "lm_head.weight", "wte.weight",
            "embed_in.weight", "embed_out.weight", "word_embeddings.weight", "tok_embeddings.weight", "shared.weight",
            "lm_head.decoder.weight", "lm_head.linear.weight", "output_layer.weight", "vocab_projector.weight",
            "backbone.embeddings.weight");

    private enum Fallback { OWN_ROW_OF_SOURCE, TOKEN_ROW, ZERO, MEAN }

    private final List<Path> inputs;  // distinct models, as the config names them: the base first
    private final byte[] tokenizerJson;  // the output's tokenizer.json (the source's JSON tree is not kept)
    private final TreeMap<Long, AddedToken> outAdded;
    private final LinkedHashMap<String, Long> outVocab;
    private final boolean stripped;
    private final Path tokenizerDir;  // where the output's tokenizer_config.json and special tokens come from
    private final long size, rows;  // tokens, and rows with padding
    private final int[][] perm;  // [input][output id]: the input's row, or -1
    private final boolean[] forced;
    private final Fallback[] fallback;
    private final int[] fallbackInput;
    private final long[] fallbackRow;
    private final List<String> warnings;

    private Vocabulary(List<Path> inputs, byte[] tokenizerJson, TreeMap<Long, AddedToken> outAdded,
            LinkedHashMap<String, Long> outVocab, boolean stripped, Path tokenizerDir, long rows, int[][] perm,
            boolean[] forced, Fallback[] fallback, int[] fallbackInput, long[] fallbackRow, List<String> warnings) {
        this.inputs = inputs;
        this.tokenizerJson = tokenizerJson;
        this.outAdded = outAdded;
        this.outVocab = outVocab;
        this.stripped = stripped;
        this.tokenizerDir = tokenizerDir;
        this.size = outVocab.size();
        this.rows = rows;
        this.perm = perm;
        this.forced = forced;
        this.fallback = fallback;
        this.fallbackInput = fallbackInput;
        this.fallbackRow = fallbackRow;
        this.warnings = warnings;
    }

    /** Whether a tensor holds one row per token: a token embedding or an output head (2-D, by its name). */
    public static boolean isEmbedding(String name, long[] shape) {
        if (shape.length != 2) return false;
        if (name.equals("output.weight")) return true;
        for (String s : EMBEDDING_SUFFIXES) if (name.equals(s) || name.endsWith("." + s)) return true;
        return false;
    }

    /** The folder of a model path (a checkpoint file's folder). */
    static Path folder(Path model) {
        return Files.isDirectory(model) ? model : model.toAbsolutePath().getParent();
    }

    /**
     * Builds the output vocabulary.
     *
     * @param base the config's base_model, or null
     * @param models the models to merge, in config order (the base may be among them)
     */
    public static Vocabulary build(TokenizerSettings settings, Path base, List<Path> models) throws IOException {
        List<String> warnings = new ArrayList<>();
        LinkedHashSet<Path> distinct = new LinkedHashSet<>();
        if (base != null) distinct.add(base);
        distinct.addAll(models);
        List<Path> inputs = List.copyOf(distinct);
        Path donor = inputs.get(0);  // mergekit: the base, else the first model

        // Each input's tokenizer and vocab_size; the donor's is stripped of tokens beyond its vocab_size.
        Map<Path, TokenizerFile> tokenizers = new LinkedHashMap<>();
        Map<Path, Long> vocabSizes = new LinkedHashMap<>();
        boolean stripped = false;
        for (Path m : inputs) {
            Path file = folder(m).resolve("tokenizer.json");
            Long vs = configVocabSize(folder(m));
            vocabSizes.put(m, vs);
            if (m.equals(donor)) {
                TokenizerFile t = TokenizerFile.read(file);
                TokenizerFile s = t.stripped(vs != null ? vs : t.vocabulary().size());
                stripped = s != t;
                tokenizers.put(m, s);
            } else if (Files.exists(file)) {
                tokenizers.put(m, TokenizerFile.read(file));
            } else {
                warnings.add(m + " has no tokenizer.json: its vocabulary is taken to be " + donor + "'s, as mergekit does");
            }
        }
        TokenizerFile donorTok = tokenizers.get(donor);

        TokenizerFile outFile;
        Path tokenizerDir;
        switch (settings.source()) {
            case BASE -> {
                outFile = donorTok;
                tokenizerDir = folder(donor);
            }
            case MODEL -> {
                outFile = TokenizerFile.read(folder(settings.sourceModel()).resolve("tokenizer.json"));
                tokenizerDir = folder(settings.sourceModel());
            }
            case UNION -> {
                outFile = donorTok;
                tokenizerDir = folder(donor);
            }
            default -> throw new IllegalStateException();
        }
        stripped &= outFile == donorTok;
        AddedVocabulary out = new AddedVocabulary(outFile);
        if (settings.source() == TokenizerSettings.Source.UNION) {
            LinkedHashSet<String> union = new LinkedHashSet<>();
            LinkedHashMap<String, AddedToken> unionAdded = new LinkedHashMap<>();
            for (Map.Entry<Path, TokenizerFile> e : tokenizers.entrySet()) {
                TokenizerFile t = e.getValue();
                long vs = vocabSizes.get(e.getKey()) != null ? vocabSizes.get(e.getKey()) : t.modelVocabSize();
                int beyond = 0;
                for (Map.Entry<String, Long> v : sortedById(t.vocabulary())) {
                    if (v.getValue() >= vs) beyond++;
                    else union.add(v.getKey());
                }
                if (beyond > 0)
                    warnings.add(e.getKey() + ": " + beyond + " tokens have ids >= its vocab_size " + vs + " and are left out");
                for (AddedToken a : t.addedTokens().values()) {
                    if (a.id() >= vs) continue;
                    AddedToken first = unionAdded.putIfAbsent(a.content(), a);
                    if (first != null && !first.sameSettings(a) && !warnedSettings(warnings, a.content()))
                        warnings.add("token " + quote(a.content()) + " is added with different settings; "
                                + "the first model's are used");
                }
            }
            Map<String, Long> baseVocab = donorTok.vocabulary();
            for (String tok : union)
                if (!unionAdded.containsKey(tok) && !baseVocab.containsKey(tok))
                    out.add(new AddedToken(-1, tok, false, false, false, true, false));
            for (AddedToken a : unionAdded.values()) out.add(a);
        }
        for (String tok : settings.tokens().keySet())
            if (out.idOf(tok) == null) out.add(new AddedToken(-1, tok, false, false, false, true, false));

        LinkedHashMap<String, Long> vocab = out.vocabulary();
        long n = vocab.size();
        boolean[] seen = new boolean[Math.toIntExact(n)];
        for (Map.Entry<String, Long> e : vocab.entrySet()) {
            long id = e.getValue();
            if (id < 0 || id >= n || seen[(int) id])
                throw new CheckpointFormatException(outFile.file(), "the output vocabulary's ids are not 0.." + (n - 1)
                        + " each once (token " + quote(e.getKey()) + " has id " + id + "); the embedding rows cannot follow it");
            seen[(int) id] = true;
        }
        String[] byId = new String[(int) n];
        for (Map.Entry<String, Long> e : vocab.entrySet()) byId[e.getValue().intValue()] = e.getKey();
        long rows = n;
        int pad = settings.padToMultipleOf();
        if (pad > 0 && rows % pad != 0) rows = (rows / pad + 1) * pad;

        // Where each input's row of each output token is (mergekit's permutations).
        int[][] perm = new int[inputs.size()][(int) n];
        Map<Path, Map<String, Long>> original = new LinkedHashMap<>();
        for (int i = 0; i < inputs.size(); i++) {
            Path m = inputs.get(i);
            TokenizerFile t = tokenizers.getOrDefault(m, donorTok);
            Map<String, Long> mv = t.vocabulary();
            original.put(m, mv);
            long vs = vocabSizes.get(m) != null ? vocabSizes.get(m) : mv.size();
            int padding = 0;
            for (int id = 0; id < n; id++) {
                Long row = mv.get(byId[id]);
                // mergekit fails on a token whose row is beyond vocab_size (padding); it is absent here.
                if (row != null && row >= vs) padding++;
                perm[i][id] = row == null || row >= vs ? -1 : row.intValue();
            }
            if (padding > 0)
                warnings.add(m + ": " + padding + " tokens have ids >= its vocab_size " + vs + " (padding?) and count as absent");
        }

        // Each token's fallback (mergekit's assign_embedding_sources and compute_default_embedding).
        boolean[] forced = new boolean[(int) n];
        Fallback[] fallback = new Fallback[(int) n];
        int[] fallbackInput = new int[(int) n];
        long[] fallbackRow = new long[(int) n];
        int baseIndex = base == null ? -1 : inputs.indexOf(base);
        int missingEverywhere = 0;
        for (int id = 0; id < n; id++) {
            String tok = byId[id];
            TokenizerSettings.TokenEmbedding cfg = settings.tokens().get(tok);
            if (cfg != null) {
                forced[id] = cfg.force();
                switch (cfg.kind()) {
                    case ZERO -> fallback[id] = Fallback.ZERO;
                    case MODEL -> {
                        int k = inputOf(inputs, cfg.model(), tok);
                        if (perm[k][id] < 0)
                            throw new CheckpointFormatException(folder(cfg.model()), "tokenizer.tokens['" + tok + "'] takes "
                                    + "its embedding from " + cfg.model() + ", which does not have that token");
                        fallback[id] = Fallback.OWN_ROW_OF_SOURCE;
                        fallbackInput[id] = k;
                        fallbackRow[id] = perm[k][id];
                    }
                    case MODEL_TOKEN -> {
                        int k = inputOf(inputs, cfg.model(), tok);
                        long row = cfg.tokenId();
                        if (cfg.token() != null) {
                            Long r = original.get(inputs.get(k)).get(cfg.token());
                            if (r == null)
                                throw new CheckpointFormatException(folder(cfg.model()), "tokenizer.tokens['" + tok
                                        + "']: token " + quote(cfg.token()) + " is not in " + cfg.model() + "'s vocabulary");
                            row = r;
                        }
                        fallback[id] = Fallback.TOKEN_ROW;
                        fallbackInput[id] = k;
                        fallbackRow[id] = row;
                    }
                }
                continue;
            }
            int present = 0, only = -1;
            for (int i = 0; i < inputs.size(); i++) if (perm[i][id] >= 0) {
                present++;
                only = i;
            }
            if (present == 1) {
                fallback[id] = Fallback.OWN_ROW_OF_SOURCE;
                fallbackInput[id] = only;
                fallbackRow[id] = perm[only][id];
            } else if (present == 0) {
                fallback[id] = Fallback.ZERO;
                if (missingEverywhere++ < 5) warnings.add("token " + quote(tok) + " is in no model: its embedding is zero");
            } else if (baseIndex >= 0 && perm[baseIndex][id] >= 0) {
                fallback[id] = Fallback.OWN_ROW_OF_SOURCE;
                fallbackInput[id] = baseIndex;
                fallbackRow[id] = perm[baseIndex][id];
            } else {
                fallback[id] = Fallback.MEAN;
            }
        }
        if (missingEverywhere > 5) warnings.add((missingEverywhere - 5) + " more tokens are in no model (zero embeddings)");
        return new Vocabulary(inputs, outFile.withAddedTokens(out.added), out.added, vocab, stripped, tokenizerDir, rows, perm, forced, fallback,
                fallbackInput, fallbackRow, List.copyOf(warnings));
    }

    private static boolean warnedSettings(List<String> warnings, String content) {
        return warnings.stream().anyMatch(w -> w.startsWith("token " + quote(content) + " is added with different"));
    }

    private static int inputOf(List<Path> inputs, Path model, String token) throws CheckpointFormatException {
        int k = inputs.indexOf(model);
        if (k < 0)
            throw new CheckpointFormatException(model, "tokenizer.tokens['" + token + "'] names " + model
                    + ", which is not one of the models merged");
        return k;
    }

    static String quote(String token) {
        return "'" + token.replace("\n", "\\n") + "'";
    }

    private static List<Map.Entry<String, Long>> sortedById(Map<String, Long> vocab) {
        List<Map.Entry<String, Long>> l = new ArrayList<>(vocab.entrySet());
        l.sort(Map.Entry.comparingByValue());
        return l;
    }

    /** {@code vocab_size} of a model's config.json (or of its {@code text_config}), or null. */
    static Long configVocabSize(Path dir) {
        JsonNode v = ModelConfig.value(dir, "vocab_size", JsonNode::isIntegralNumber);
        return v != null && v.asLong() > 0 ? v.asLong() : null;
    }

    /**
     * transformers' added vocabulary over a tokenizer's model (the rules of {@code add_tokens} in the tokenizers
     * library): a token already there keeps its id (its settings replaced), a new one takes the next id after the
     * model's vocabulary and the added tokens.
     */
    private static final class AddedVocabulary {
        final TokenizerFile model;
        final Map<String, Long> modelVocab;
        final TreeMap<Long, AddedToken> added;
        final Map<String, Long> addedIds = new LinkedHashMap<>();

        AddedVocabulary(TokenizerFile file) {
            model = file;
            Map<String, Long> v = new LinkedHashMap<>(file.vocabulary());
            for (AddedToken a : file.addedTokens().values())
                if (v.get(a.content()) != null && v.get(a.content()) == a.id()) v.remove(a.content());
            modelVocab = v;
            added = file.addedTokens();
            for (AddedToken a : added.values()) addedIds.put(a.content(), a.id());
        }

        Long idOf(String token) {
            Long id = addedIds.get(token);
            return id != null ? id : modelVocab.get(token);
        }

        void add(AddedToken token) {
            if (token.content().isEmpty()) return;
            Long same = addedIds.get(token.content());
            if (same != null && added.get(same).sameSettings(token)) return;  // already there as it is
            Long id = idOf(token.content());
            if (id == null) {
                long modelSize = model.modelVocabSize();
                long max = added.isEmpty() ? -1 : added.lastKey();
                id = added.isEmpty() ? modelSize : (max >= modelSize || modelSize == 0 ? max + 1 : modelSize);
            }
            added.put(id, token.withId(id));
            addedIds.put(token.content(), id);
        }

        LinkedHashMap<String, Long> vocabulary() {
            LinkedHashMap<String, Long> v = new LinkedHashMap<>(modelVocab);
            for (AddedToken a : added.values()) v.put(a.content(), a.id());
            return v;
        }
    }

    /** The models whose rows are gathered, as the config names them (the base first). */
    public List<Path> inputs() {
        return inputs;
    }

    /** Tokens in the output vocabulary. */
    public long size() {
        return size;
    }

    /** Rows of every output embedding matrix: the tokens, padded to {@code pad_to_multiple_of}. */
    public long rows() {
        return rows;
    }

    /** The output vocabulary, token to id. */
    public Map<String, Long> vocabulary() {
        return outVocab;
    }

    /** The output's added tokens, by id. */
    public TreeMap<Long, AddedToken> addedTokens() {
        return new TreeMap<>(outAdded);
    }

    /** The output's tokenizer.json: the source's, with the output's added tokens. */
    public byte[] tokenizerJson() {
        return tokenizerJson.clone();
    }

    /** Whether the output tokenizer lost tokens the model has no rows for (its slow files no longer match). */
    public boolean stripped() {
        return stripped;
    }

    /** The folder whose tokenizer_config.json and special_tokens_map.json the output's are made from. */
    public Path tokenizerDir() {
        return tokenizerDir;
    }

    public List<String> warnings() {
        return warnings;
    }

    /** The row of input {@code input} that output row {@code id} takes, or -1 where it takes the token's fallback. */
    public long sourceRow(int input, long id) {
        if (id >= size || forced[(int) id]) return -1;
        return perm[input][(int) id];
    }

    /**
     * Checks an embedding tensor of every input ({@code shapes[i]} of input i) against the vocabulary: one width,
     * and a row for every token the tokenizers give it.
     */
    public void checkTensor(String name, List<long[]> shapes, List<Path> files) throws CheckpointFormatException {
        long width = shapes.get(0)[1];
        for (int i = 0; i < inputs.size(); i++) {
            long[] s = shapes.get(i);
            if (s.length != 2 || s[1] != width)
                throw new CheckpointFormatException(files.get(i), name, "shape " + Arrays.toString(s) + ", "
                        + files.get(0) + " has rows of " + width + ": embeddings of different widths cannot merge");
            long most = -1;
            for (int r : perm[i]) most = Math.max(most, r);
            if (most >= s[0])
                throw new CheckpointFormatException(files.get(i), name, s[0] + " rows, but its tokenizer has a token with id "
                        + most);
        }
        for (int id = 0; id < size; id++)
            if (fallback[id] == Fallback.TOKEN_ROW && fallbackRow[id] >= shapes.get(fallbackInput[id])[0])
                throw new CheckpointFormatException(files.get(fallbackInput[id]), name, "token id " + fallbackRow[id]
                        + " (the source of " + quote(tokenOf(id)) + ") is beyond its " + shapes.get(fallbackInput[id])[0] + " rows");
    }

    private String tokenOf(long id) {
        for (Map.Entry<String, Long> e : outVocab.entrySet()) if (e.getValue() == id) return e.getKey();
        return "#" + id;
    }

    /**
     * Gathers input {@code input}'s rows of embedding tensor {@code name} into the output order, into {@code dst}
     * ({@link #rows()} rows of {@code width} values in {@code dtype}, the input's dtype). Runs of the model's own rows
     * are positional reads; fallback rows are computed in double from the sources' rows and rounded once to
     * {@code dtype}; padding rows are the mean of the rows above them.
     */
    public void gather(int input, String name, List<Checkpoint> byInput, long width, DType dtype, MemorySegment dst)
            throws IOException {
        long rowBytes = width * dtype.byteSize();
        Checkpoint own = byInput.get(input);
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment scratch = arena.allocate(width * 4, 8);
            double[] acc = new double[(int) width];
            for (long id = 0; id < size; ) {
                long src = sourceRow(input, id);
                if (src >= 0) {
                    long end = id + 1;
                    while (end < size && sourceRow(input, end) == src + (end - id)) end++;
                    own.read(name, src * rowBytes, dst.asSlice(id * rowBytes, (end - id) * rowBytes));
                    id = end;
                    continue;
                }
                Arrays.fill(acc, 0);
                int idx = (int) id;
                switch (fallback[idx]) {
                    case ZERO -> {}
                    case OWN_ROW_OF_SOURCE, TOKEN_ROW ->
                            addRow(byInput.get(fallbackInput[idx]), name, fallbackRow[idx], width, scratch, acc);
                    case MEAN -> {
                        int count = 0;
                        for (int k = 0; k < inputs.size(); k++)
                            if (perm[k][idx] >= 0) {
                                addRow(byInput.get(k), name, perm[k][idx], width, scratch, acc);
                                count++;
                            }
                        for (int j = 0; j < width; j++) acc[j] /= count;
                    }
                }
                for (int j = 0; j < width; j++) store(dst, dtype, id * width + j, acc[j]);
                id++;
            }
            if (rows > size) {
                // mergekit pads with the mean of the model's rows (as rounded to the tensor dtype).
                Arrays.fill(acc, 0);
                for (long id = 0; id < size; id++)
                    for (int j = 0; j < width; j++) acc[j] += load(dst, dtype, id * width + j);
                for (int j = 0; j < width; j++) acc[j] /= size;
                for (long id = size; id < rows; id++)
                    for (int j = 0; j < width; j++) store(dst, dtype, id * width + j, acc[j]);
            }
        }
    }

    /** Adds row {@code row} of {@code from}'s tensor {@code name} to {@code acc}, in double. */
    private static void addRow(Checkpoint from, String name, long row, long width, MemorySegment scratch, double[] acc)
            throws IOException {
        DType d = from.info(name).dtype().toMergeDType().orElseThrow(() -> new CheckpointFormatException(
                from.directory(), name, "is not a float tensor"));
        MemorySegment s = scratch.asSlice(0, width * d.byteSize());
        from.read(name, row * width * d.byteSize(), s);
        for (int j = 0; j < width; j++) acc[j] += load(s, d, j);
    }

    static double load(MemorySegment s, DType d, long i) {
        return switch (d) {
            case F32 -> s.getAtIndex(ValueLayout.JAVA_FLOAT_UNALIGNED, i);
            case F16 -> Float.float16ToFloat(s.getAtIndex(ValueLayout.JAVA_SHORT_UNALIGNED, i));
            case BF16 -> Float.intBitsToFloat((s.getAtIndex(ValueLayout.JAVA_SHORT_UNALIGNED, i) & 0xFFFF) << 16);
        };
    }

    /** Stores {@code v} rounded once to nearest (ties to even) in {@code d}. */
    static void store(MemorySegment s, DType d, long i, double v) {
        switch (d) {
            case F32 -> s.setAtIndex(ValueLayout.JAVA_FLOAT_UNALIGNED, i, (float) v);
            case F16, BF16 -> s.setAtIndex(ValueLayout.JAVA_SHORT_UNALIGNED, i, nearest16(v, d));
        }
    }

    /** The 16-bit pattern of the {@code d} value nearest to {@code v} (ties to the even pattern). */
    static short nearest16(double v, DType d) {
        float f = (float) v;
        short guess = encode16(f, d);
        if (Double.isNaN(v) || Double.isInfinite(v) || Float.isInfinite(f)) return guess;
        short best = guess;
        double bestErr = Math.abs(decode16(guess, d) - v);
        for (int delta = -1; delta <= 1; delta += 2) {
            short c = (short) (guess + delta);
            double x = decode16(c, d);
            if (Double.isNaN(x) || Double.isInfinite(x) || Math.signum(x) * Math.signum(v) < 0) continue;
            double err = Math.abs(x - v);
            if (err < bestErr || (err == bestErr && (c & 1) == 0 && (best & 1) != 0)) {
                best = c;
                bestErr = err;
            }
        }
        return best;
    }

    private static short encode16(float f, DType d) {
        return d == DType.F16 ? Float.floatToFloat16(f) : DType.bfloat16Bits(f);
    }

    private static double decode16(short h, DType d) {
        return d == DType.F16 ? Float.float16ToFloat(h) : Float.intBitsToFloat((h & 0xFFFF) << 16);
    }

    /** The token texts of the output vocabulary by id. */
    public String[] tokensById() {
        String[] out = new String[(int) size];
        for (Map.Entry<String, Long> e : outVocab.entrySet()) out[e.getValue().intValue()] = e.getKey();
        return out;
    }

}
