package dev.smelter.io;

import java.io.IOException;

/** A checkpoint file that is not what it claims to be; the message names the file and tensor. */
public class CheckpointFormatException extends IOException {
    public CheckpointFormatException(String message) {
        super(message);
    }
}
