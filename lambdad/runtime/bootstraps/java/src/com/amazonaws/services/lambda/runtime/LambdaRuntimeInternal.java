package com.amazonaws.services.lambda.runtime;

/**
 * Used by logging integrations (for example aws-lambda-java-log4j2).
 */
public final class LambdaRuntimeInternal {

    private static volatile boolean useLog4jAppender;

    private LambdaRuntimeInternal() {
    }

    public static void setUseLog4jAppender(boolean useLog4j) {
        useLog4jAppender = useLog4j;
    }

    public static boolean getUseLog4jAppender() {
        return useLog4jAppender;
    }
}
