package com.amazonaws.services.lambda.runtime;

/**
 * A handler taking and returning plain Java objects, (de)serialised from and to JSON.
 *
 * @param <I> the input type
 * @param <O> the output type
 */
public interface RequestHandler<I, O> {

    /** Handles one invocation. */
    O handleRequest(I input, Context context);
}
