package lambdad.runtime;

import com.amazonaws.services.lambda.runtime.Client;
import com.amazonaws.services.lambda.runtime.ClientContext;
import com.amazonaws.services.lambda.runtime.CognitoIdentity;
import com.amazonaws.services.lambda.runtime.Context;
import com.amazonaws.services.lambda.runtime.LambdaLogger;
import com.fasterxml.jackson.databind.JsonNode;
import java.io.IOException;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.Map;

/** The Context handed to the handler, and its client context and identity. */
final class InvocationContext implements Context {

    /** What is the same for every invocation of the environment. */
    static final class Static {
        final String functionName;
        final String functionVersion;
        final String logGroupName;
        final String logStreamName;
        final int memoryLimit;
        final LambdaLogger logger;

        Static(Map<String, String> env, LambdaLogger logger) {
            this.functionName = env.get("AWS_LAMBDA_FUNCTION_NAME");
            this.functionVersion = env.get("AWS_LAMBDA_FUNCTION_VERSION");
            this.logGroupName = env.get("AWS_LAMBDA_LOG_GROUP_NAME");
            this.logStreamName = env.get("AWS_LAMBDA_LOG_STREAM_NAME");
            int memory = 128;
            try {
                memory = Integer.parseInt(env.getOrDefault("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128").trim());
            } catch (NumberFormatException ignored) {
                // AWS's default
            }
            this.memoryLimit = memory;
            this.logger = logger;
        }
    }

    private final Static common;
    private final String requestId;
    private final long deadlineMs;
    private final String invokedFunctionArn;
    private final String traceId;
    private final String tenantId;
    private final CognitoIdentity identity;
    private final ClientContext clientContext;

    InvocationContext(Static common, String requestId, long deadlineMs, String invokedFunctionArn,
            String traceId, String tenantId, CognitoIdentity identity, ClientContext clientContext) {
        this.common = common;
        this.requestId = requestId;
        this.deadlineMs = deadlineMs;
        this.invokedFunctionArn = invokedFunctionArn;
        this.traceId = traceId;
        this.tenantId = tenantId;
        this.identity = identity;
        this.clientContext = clientContext;
    }

    @Override
    public String getAwsRequestId() {
        return requestId;
    }

    @Override
    public String getLogGroupName() {
        return common.logGroupName;
    }

    @Override
    public String getLogStreamName() {
        return common.logStreamName;
    }

    @Override
    public String getFunctionName() {
        return common.functionName;
    }

    @Override
    public String getFunctionVersion() {
        return common.functionVersion;
    }

    @Override
    public String getInvokedFunctionArn() {
        return invokedFunctionArn;
    }

    @Override
    public CognitoIdentity getIdentity() {
        return identity;
    }

    @Override
    public ClientContext getClientContext() {
        return clientContext;
    }

    @Override
    public int getRemainingTimeInMillis() {
        long delta = deadlineMs - System.currentTimeMillis();
        return delta > 0 ? (int) Math.min(delta, Integer.MAX_VALUE) : 0;
    }

    @Override
    public int getMemoryLimitInMB() {
        return common.memoryLimit;
    }

    @Override
    public LambdaLogger getLogger() {
        return common.logger;
    }

    @Override
    public String getXrayTraceId() {
        return traceId;
    }

    @Override
    public String getTenantId() {
        return tenantId;
    }

    @Override
    public String toString() {
        return "LambdaContext[awsRequestId=" + requestId + ", functionName=" + common.functionName
                + ", functionVersion=" + common.functionVersion + ", invokedFunctionArn="
                + invokedFunctionArn + ", memoryLimitInMB=" + common.memoryLimit + "]";
    }

    // -- the headers' JSON documents --------------------------------------------------------------

    static CognitoIdentity parseIdentity(String header) throws IOException {
        if (header == null || header.isEmpty()) {
            return null;
        }
        JsonNode node = Json.mapper().readTree(header);
        return new Identity(text(node, "cognitoIdentityId"), text(node, "cognitoIdentityPoolId"));
    }

    static ClientContext parseClientContext(String header) throws IOException {
        if (header == null || header.isEmpty()) {
            return null;
        }
        JsonNode node = Json.mapper().readTree(header);
        if (node == null || !node.isObject()) {
            return null;
        }
        JsonNode c = node.get("client");
        AppClient client = c == null || !c.isObject() ? null : new AppClient(
                text(c, "installation_id"), text(c, "app_title"), text(c, "app_version_name"),
                text(c, "app_version_code"), text(c, "app_package_name"));
        return new MobileClientContext(client, stringMap(node.get("custom")), stringMap(node.get("env")));
    }

    private static String text(JsonNode node, String field) {
        JsonNode v = node == null ? null : node.get(field);
        if (v == null || v.isNull()) {
            return null;
        }
        return v.isValueNode() ? v.asText() : v.toString();
    }

    private static Map<String, String> stringMap(JsonNode node) {
        if (node == null || !node.isObject()) {
            return null;
        }
        Map<String, String> out = new LinkedHashMap<>();
        for (Iterator<Map.Entry<String, JsonNode>> it = node.fields(); it.hasNext(); ) {
            Map.Entry<String, JsonNode> e = it.next();
            JsonNode v = e.getValue();
            out.put(e.getKey(), v == null || v.isNull() ? null : v.isValueNode() ? v.asText() : v.toString());
        }
        return out;
    }

    static final class Identity implements CognitoIdentity {
        private final String identityId;
        private final String poolId;

        Identity(String identityId, String poolId) {
            this.identityId = identityId;
            this.poolId = poolId;
        }

        @Override
        public String getIdentityId() {
            return identityId;
        }

        @Override
        public String getIdentityPoolId() {
            return poolId;
        }
    }

    static final class AppClient implements Client {
        private final String installationId;
        private final String appTitle;
        private final String appVersionName;
        private final String appVersionCode;
        private final String appPackageName;

        AppClient(String installationId, String appTitle, String appVersionName, String appVersionCode,
                String appPackageName) {
            this.installationId = installationId;
            this.appTitle = appTitle;
            this.appVersionName = appVersionName;
            this.appVersionCode = appVersionCode;
            this.appPackageName = appPackageName;
        }

        @Override
        public String getInstallationId() {
            return installationId;
        }

        @Override
        public String getAppTitle() {
            return appTitle;
        }

        @Override
        public String getAppVersionName() {
            return appVersionName;
        }

        @Override
        public String getAppVersionCode() {
            return appVersionCode;
        }

        @Override
        public String getAppPackageName() {
            return appPackageName;
        }
    }

    static final class MobileClientContext implements ClientContext {
        private final Client client;
        private final Map<String, String> custom;
        private final Map<String, String> env;

        MobileClientContext(Client client, Map<String, String> custom, Map<String, String> env) {
            this.client = client;
            this.custom = custom;
            this.env = env;
        }

        @Override
        public Client getClient() {
            return client;
        }

        @Override
        public Map<String, String> getCustom() {
            return custom;
        }

        @Override
        public Map<String, String> getEnvironment() {
            return env;
        }
    }
}
