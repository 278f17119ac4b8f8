package dev.smelter.cli;

import java.util.Locale;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * Byte sizes as people write them and as Smelter prints them. {@link #parse} takes only units that cannot be misread:
 * KB, MB, GB, TB (powers of 1000) and KiB, MiB, GiB, TiB (powers of 1024), any case, with an optional decimal point
 * ({@code 5GB}, {@code 500mb}, {@code 2.5GiB}). A bare number or a {@code B} suffix is refused: mergekit's
 * {@code --out-shard-size 5B} means five billion bytes, so "5B" here would silently mean something else.
 * {@link #parseKmb} reads mergekit's form (a bare number of bytes, K/M/B = thousand/million/billion bytes).
 */
final class Sizes {
    private static final Pattern SIZE = Pattern.compile("(?i)\\s*(\\d+(?:\\.\\d+)?)\\s*([kmgt])(i?)b\\s*");
    private static final Pattern NUMBER = Pattern.compile("\\s*(\\d+(?:\\.\\d+)?)\\s*([a-zA-Z]*)\\s*");
    private static final Pattern KMB = Pattern.compile("(?i)\\s*(\\d+(?:\\.\\d+)?)\\s*([kmb]?)\\s*");

    private Sizes() {}

    /** A size with an explicit byte unit, for {@code option} (named in the message when it is not one). */
    static long parse(String option, String text) {
        return parse(option, text, false);
    }

    /** {@code --max-shard-size}: as {@link #parse}, and a refusal points to {@code --out-shard-size}, mergekit's form. */
    static long parseShardSize(String text) {
        return parse("--max-shard-size", text, true);
    }

    private static long parse(String option, String text, boolean shard) {
        Matcher m = SIZE.matcher(text);
        if (!m.matches()) throw new IllegalArgumentException(refusal(option, text, shard));
        double v = Double.parseDouble(m.group(1));
        int power = "kmgt".indexOf(m.group(2).toLowerCase(Locale.ROOT)) + 1;
        double unit = Math.pow(m.group(3).isEmpty() ? 1000 : 1024, power);
        long bytes = (long) (v * unit);
        if (bytes <= 0) throw new IllegalArgumentException(option + " must be positive: '" + text + "'");
        return bytes;
    }

    private static String refusal(String option, String text, boolean shard) {
        String units = "write it with a byte unit: KB, MB, GB, TB (powers of 1000) or KiB, MiB, GiB, TiB (powers of "
                + "1024), e.g. 5GB or 512MiB";
        Matcher n = NUMBER.matcher(text);
        String v = n.matches() ? n.group(1) : text.strip();
        if (n.matches() && n.group(2).isEmpty())
            return option + " " + v + " has no unit: " + units
                    + (shard ? "; or use --out-shard-size " + v + " for mergekit's meaning (a number of bytes)" : "");
        if (n.matches() && n.group(2).equalsIgnoreCase("b"))
            return shard
                    ? option + " " + text.strip() + " is ambiguous: in mergekit (--out-shard-size " + text.strip() + ") it is "
                            + v + " billion bytes, as a byte unit " + v + " bytes; write " + v + "GB for the first, or use "
                            + "--out-shard-size " + text.strip() + " for mergekit's meaning"
                    : option + " " + text.strip() + " is ambiguous (B for bytes, or billions as mergekit's sizes count): "
                            + units;
        return option + " '" + text + "' is not a size: " + units
                + (shard ? "; or use --out-shard-size for mergekit's form (a number of bytes, K/M/B for thousand/million/"
                        + "billion bytes)" : "");
    }

    /**
     * mergekit's {@code parse_kmb}: a bare number of bytes, or K, M, B for thousands, millions, billions of bytes
     * (any case); 0 means no limit (one shard), as in mergekit's writer.
     */
    static long parseKmb(String option, String text) {
        Matcher m = KMB.matcher(text);
        if (!m.matches())
            throw new IllegalArgumentException(option + " '" + text + "' is not a size in mergekit's form: a number of "
                    + "bytes, with K, M or B for thousand, million or billion bytes (e.g. 5B, 500M)");
        double v = Double.parseDouble(m.group(1));
        double unit = switch (m.group(2).toLowerCase(Locale.ROOT)) {
            case "k" -> 1e3;
            case "m" -> 1e6;
            case "b" -> 1e9;
            default -> 1;
        };
        long bytes = (long) (v * unit);
        return bytes <= 0 ? Long.MAX_VALUE : bytes;
    }

    static String format(long bytes) {
        if (bytes < 1000) return bytes + " B";
        String[] units = {"kB", "MB", "GB", "TB"};
        double v = bytes;
        int u = -1;
        while (v >= 1000 && u < units.length - 1) {
            v /= 1000;
            u++;
        }
        return String.format(Locale.ROOT, "%.1f %s", v, units[u]);
    }
}
