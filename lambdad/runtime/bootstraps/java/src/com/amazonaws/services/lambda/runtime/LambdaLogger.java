package com.amazonaws.services.lambda.runtime;

import com.amazonaws.services.lambda.runtime.logging.LogLevel;

/**
 * A low-level logger that writes to the function's log (API-compatible with
 * aws-lambda-java-core 1.2.x).
 */
public interface LambdaLogger {

    /** Writes a string to the log. */
    void log(String message);

    /** Writes bytes to the log. */
    void log(byte[] message);

    /** Writes a string at a level; dropped when below AWS_LAMBDA_LOG_LEVEL. */
    default void log(String message, LogLevel logLevel) {
        log(message);
    }

    /** Writes bytes at a level; dropped when below AWS_LAMBDA_LOG_LEVEL. */
    default void log(byte[] message, LogLevel logLevel) {
        log(message);
    }
}
