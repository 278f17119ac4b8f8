package dev.smelter;

/** A native call failed; {@link #status()} says how, the message says what and where. */
public class SmelterException extends RuntimeException {
    private final Status status;

    public SmelterException(Status status, String message) {
        super(message + " [" + status + "]");
        this.status = status;
    }

    public Status status() {
        return status;
    }
}
