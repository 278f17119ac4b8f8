package dev.smelter.bench;

import dev.smelter.Device;
import dev.smelter.Smelter;

/** One line about the library and devices the benchmarks run on (for the results' headers). */
public final class Info {
    private Info() {}

    public static void main(String[] args) {
        StringBuilder b = new StringBuilder(Smelter.buildInfo());
        b.append("; ").append(Smelter.deviceName(Device.cpu()));
        int gpus = Smelter.cudaDeviceCount();
        for (int i = 0; i < gpus; i++)
            b.append("; cuda:").append(i).append(' ').append(Smelter.deviceName(Device.cuda(i)));
        if (gpus == 0) b.append("; no CUDA device");
        System.out.println(b);
    }
}
