package dev.smelter.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.Test;

class SizesTest {
    @Test
    void byteUnitsDecimalAndBinaryAnyCase() {
        assertEquals(5_000_000_000L, Sizes.parseShardSize("5GB"));
        assertEquals(5_000_000_000L, Sizes.parseShardSize("5gb"));
        assertEquals(500_000_000L, Sizes.parseShardSize("500MB"));
        assertEquals(100_000L, Sizes.parseShardSize("100kB"));
        assertEquals(1_500L, Sizes.parseShardSize("1.5KB"));
        assertEquals(2L << 30, Sizes.parseShardSize("2GiB"));
        assertEquals(2L << 30, Sizes.parseShardSize("2gib"));
        assertEquals(512L << 20, Sizes.parseShardSize("512 MiB"));
        assertEquals(1536L << 20, Sizes.parseShardSize("1.5GiB"));
        assertEquals(1L << 40, Sizes.parseShardSize("1TiB"));
        assertEquals(3_000_000_000_000L, Sizes.parseShardSize("3TB"));
        assertEquals(64L << 10, Sizes.parse("--memory-limit", "64KiB"));
    }

    @Test
    void bareNumbersAndBAreRefused() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> Sizes.parseShardSize("5B"));
        assertTrue(e.getMessage().contains("ambiguous") && e.getMessage().contains("--out-shard-size 5B")
                && e.getMessage().contains("write 5GB"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> Sizes.parseShardSize("5000000000"));
        assertTrue(e.getMessage().contains("has no unit") && e.getMessage().contains("--out-shard-size 5000000000"), e.getMessage());
        for (String bad : new String[] {"5b", "1.5B", "5", "5G", "5M", "5K", "5 gigabytes", "", "GB", "0GB", "-5GB"})
            assertThrows(IllegalArgumentException.class, () -> Sizes.parseShardSize(bad), bad);
        e = assertThrows(IllegalArgumentException.class, () -> Sizes.parse("--memory-limit", "8000"));
        assertTrue(e.getMessage().startsWith("--memory-limit 8000 has no unit") && !e.getMessage().contains("--out-shard-size"),
                e.getMessage());
    }

    @Test
    void mergekitKmbCountsBytes() {
        assertEquals(5_000_000_000L, Sizes.parseKmb("--out-shard-size", "5B"));
        assertEquals(5_000_000_000L, Sizes.parseKmb("--out-shard-size", "5b"));
        assertEquals(500_000_000L, Sizes.parseKmb("--out-shard-size", "500M"));
        assertEquals(100_000L, Sizes.parseKmb("--out-shard-size", "100k"));
        assertEquals(12345L, Sizes.parseKmb("--out-shard-size", "12345"));
        assertEquals(Long.MAX_VALUE, Sizes.parseKmb("--out-shard-size", "0"), "0: no limit, as in mergekit's writer");
        for (String bad : new String[] {"5GB", "5G", "5KB", "x", ""})
            assertThrows(IllegalArgumentException.class, () -> Sizes.parseKmb("--out-shard-size", bad), bad);
    }
}
