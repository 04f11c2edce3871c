package com.amazonaws.services.lambda.runtime;

import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;

/**
 * A handler reading the raw event and writing the raw response.
 */
public interface RequestStreamHandler {

    /** Handles one invocation. */
    void handleRequest(InputStream input, OutputStream output, Context context) throws IOException;
}
