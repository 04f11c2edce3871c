package com.amazonaws.services.lambda.runtime;

import java.io.IOException;

/**
 * Access to the environment's logger outside of a handler call.
 */
public final class LambdaRuntime {

    private LambdaRuntime() {
    }

    // Replaced by the runtime at start-up (it is read by reflection: keep the name).
    private static volatile LambdaLogger logger = new LambdaLogger() {
        @Override
        public void log(String message) {
            System.out.print(message);
        }

        @Override
        public void log(byte[] message) {
            try {
                System.out.write(message);
            } catch (IOException e) {
                e.printStackTrace();
            }
        }
    };

    /** The environment's logger. */
    public static LambdaLogger getLogger() {
        return logger;
    }
}
