package dev.smelter.merge;

import dev.smelter.io.ShardLayout;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;

/**
 * Partition {@code index} of {@code count} of a merge spread over processes (a Slurm job array, several nodes): it
 * writes whole shards of the one-process layout, so no two processes write one file and the assembled checkpoint has
 * the same bytes. The shards are dealt by bytes: largest first, each to the partition with the fewest bytes so far
 * (the lowest index on ties), so the same layout and count always give the same partitions.
 */
public record Partition(int index, int count) {
    public Partition {
        if (count < 1 || index < 0 || index >= count)
            throw new IllegalArgumentException("partition " + index + "/" + count + ": needs 0 <= I < N");
    }

    /** Parses {@code I/N} (0-based, as Slurm's SLURM_ARRAY_TASK_ID with --array=0-(N-1)). */
    public static Partition parse(String text) {
        String[] f = text.strip().split("/");
        int index, count;
        try {
            if (f.length == 2) {
                index = Integer.parseInt(f[0].strip());
                count = Integer.parseInt(f[1].strip());
                if (count >= 1 && index >= 0 && index < count) return new Partition(index, count);
                throw new IllegalArgumentException("--partition " + text + ": I is 0-based and below N"
                        + (count >= 1 ? " (0 to " + (count - 1) + ")" : ", and N at least 1"));
            }
        } catch (NumberFormatException e) {
            // below
        }
        throw new IllegalArgumentException("--partition " + text + ": give I/N, the 0-based partition I of N (e.g. 0/4)");
    }

    /** The shards of {@code layout} this partition writes, in file order. */
    public List<Integer> shards(ShardLayout layout) {
        List<Integer> order = new ArrayList<>();
        for (int s = 0; s < layout.shardCount(); s++) order.add(s);
        order.sort(Comparator.comparingLong((Integer s) -> -layout.fileBytes(s)).thenComparingInt(s -> s));
        long[] load = new long[count];
        List<Integer> mine = new ArrayList<>();
        for (int s : order) {
            int best = 0;
            for (int p = 1; p < count; p++) if (load[p] < load[best]) best = p;
            load[best] += layout.fileBytes(s);
            if (best == index) mine.add(s);
        }
        mine.sort(null);
        return mine;
    }

    @Override
    public String toString() {
        return index + "/" + count;
    }
}
