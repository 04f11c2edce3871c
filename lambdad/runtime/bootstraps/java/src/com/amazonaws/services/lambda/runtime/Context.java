package com.amazonaws.services.lambda.runtime;

/**
 * The context of one invocation (API-compatible with aws-lambda-java-core 1.2.x).
 */
public interface Context {

    /** The request id of this invocation (the same id the caller of Invoke sees). */
    String getAwsRequestId();

    /** The CloudWatch log group the environment logs to. */
    String getLogGroupName();

    /** The CloudWatch log stream the environment logs to. */
    String getLogStreamName();

    /** The name of the function. */
    String getFunctionName();

    /** The version of the function being run. */
    String getFunctionVersion();

    /** The ARN the function was invoked with (may carry a version or an alias). */
    String getInvokedFunctionArn();

    /** The Amazon Cognito identity of the caller (null when none was given). */
    CognitoIdentity getIdentity();

    /** The client context of the caller (null when none was given). */
    ClientContext getClientContext();

    /** Milliseconds left before the invocation times out. */
    int getRemainingTimeInMillis();

    /** The memory configured for the function, in MB. */
    int getMemoryLimitInMB();

    /** The logger of the environment. */
    LambdaLogger getLogger();

    /** The X-Ray trace header of this invocation (later aws-lambda-java-core versions). */
    default String getXrayTraceId() {
        return null;
    }

    /** The tenant id of this invocation (later aws-lambda-java-core versions). */
    default String getTenantId() {
        return null;
    }
}
