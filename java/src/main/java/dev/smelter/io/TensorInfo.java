package dev.smelter.io;

import java.nio.file.Path;
import java.util.Arrays;

/** One tensor of a safetensors file: its dtype, shape and byte range in the file's data section. */
public record TensorInfo(String name, SafetensorsDType dtype, long[] shape, long dataBegin, long dataEnd, Path file) {
    public TensorInfo {
        shape = shape.clone();
    }

    @Override
    public long[] shape() {
        return shape.clone();
    }

    public long elementCount() {
        long n = 1;
        for (long d : shape) n *= d;
        return n;
    }

    public long byteSize() {
        return dataEnd - dataBegin;
    }

    @Override
    public String toString() {
        return name + " " + dtype + Arrays.toString(shape) + " in " + file;
    }
}
