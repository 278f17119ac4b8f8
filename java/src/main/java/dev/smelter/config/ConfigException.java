package dev.smelter.config;

/** A merge configuration that cannot be run; the message says where and why. */
public class ConfigException extends Exception {
    public ConfigException(String message) {
        super(message);
    }
}
