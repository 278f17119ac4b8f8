package dev.smelter;

/** A native call failed; {@link #status()} says how, the message says what and where. */
public class SmelterException extends RuntimeException {
    private final Status status;
    private final String detail;

    public SmelterException(Status status, String message) {
        super(message + " [" + status + "]");
        this.status = status;
        this.detail = message;
    }

    /** The same failure with what was being done in front, e.g. the tensor's name. */
    public SmelterException within(String context) {
        SmelterException e = new SmelterException(status, context + ": " + detail);
        e.initCause(this);
        return e;
    }

    public Status status() {
        return status;
    }
}
