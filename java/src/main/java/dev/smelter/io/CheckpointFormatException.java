package dev.smelter.io;

import java.io.IOException;
import java.nio.file.Path;

/**
 * A checkpoint (safetensors file, index json) that is malformed or inconsistent. The message
 * always starts with the file, and names the tensor (and shard) where one is involved; {@link
 * #file()} and {@link #tensor()} give them to code.
 */
public class CheckpointFormatException extends IOException {
    private final Path file;
    private final String tensor;

    public CheckpointFormatException(Path file, String message) {
        this(file, null, message, null);
    }

    public CheckpointFormatException(Path file, String tensor, String message) {
        this(file, tensor, message, null);
    }

    public CheckpointFormatException(Path file, String tensor, String message, Throwable cause) {
        super(file + (tensor == null ? "" : ": tensor '" + tensor + "'") + ": " + message, cause);
        this.file = file;
        this.tensor = tensor;
    }

    /** A message that already names the file (and tensor). */
    public CheckpointFormatException(String message) {
        super(message);
        this.file = null;
        this.tensor = null;
    }

    /** The file at fault, or null when only the message names it. */
    public Path file() {
        return file;
    }

    /** The tensor at fault, or null. */
    public String tensor() {
        return tensor;
    }
}
