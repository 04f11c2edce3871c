package lambdad.runtime;

import com.amazonaws.services.lambda.runtime.LambdaLogger;
import com.amazonaws.services.lambda.runtime.logging.LogFormat;
import com.amazonaws.services.lambda.runtime.logging.LogLevel;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.time.Instant;
import java.time.ZoneOffset;
import java.time.format.DateTimeFormatter;

/**
 * The environment's LambdaLogger (context.getLogger(), LambdaRuntime.getLogger()), as AWS's:
 * TEXT writes the message as given (with a "[LEVEL] " prefix when a level is given), JSON writes
 * one {"timestamp","message","level","AWSRequestId"} record per line; messages below
 * AWS_LAMBDA_LOG_LEVEL are dropped, log(String) is never filtered. Writes go through the same
 * stream as System.out so that the two keep their order.
 */
final class RuntimeLogger implements LambdaLogger {

    private static final byte[] NULL_BYTES = "null".getBytes(StandardCharsets.UTF_8);
    private static final DateTimeFormatter TIMESTAMP =
            DateTimeFormatter.ofPattern("yyyy-MM-dd'T'HH:mm:ss.SSS'Z'").withZone(ZoneOffset.UTC);

    private final PrintStream out;
    private final LogLevel minimum;
    final LogFormat format;
    private volatile String requestId;
    private volatile String tenantId;

    RuntimeLogger(PrintStream out, String level, String format) {
        this.out = out;
        LogLevel lvl = LogLevel.UNDEFINED;
        if (level != null && !level.isEmpty()) {
            try {
                lvl = LogLevel.fromString(level);
            } catch (IllegalArgumentException ignored) {
                // AWS validates the setting before the environment starts
            }
        }
        this.minimum = lvl;
        LogFormat fmt = LogFormat.TEXT;
        if (format != null && !format.isEmpty()) {
            try {
                fmt = LogFormat.fromString(format);
            } catch (IllegalArgumentException ignored) {
                // as above
            }
        }
        this.format = fmt;
    }

    void setInvocation(String requestId, String tenantId) {
        this.requestId = requestId;
        this.tenantId = tenantId;
    }

    @Override
    public void log(String message) {
        log(message, LogLevel.UNDEFINED);
    }

    @Override
    public void log(byte[] message) {
        log(message, LogLevel.UNDEFINED);
    }

    @Override
    public void log(String message, LogLevel logLevel) {
        if (logLevel == null) {
            logLevel = LogLevel.UNDEFINED;
        }
        if (enabled(logLevel)) {
            write(text(message, logLevel).getBytes(StandardCharsets.UTF_8));
        }
    }

    /**
     * Builds a record and drops it: in the JSON format, the timestamp's formatter is past its
     * first run (about a millisecond in a cold JVM) when the function first logs.
     */
    void warmUp() {
        text("warm-up", LogLevel.INFO).getBytes(StandardCharsets.UTF_8);
    }

    private String text(String message, LogLevel logLevel) {
        String text;
        if (format == LogFormat.JSON) {
            StringBuilder sb = new StringBuilder(96 + (message == null ? 4 : message.length()));
            sb.append("{\"timestamp\":");
            JsonText.quote(sb, TIMESTAMP.format(Instant.now()));
            sb.append(",\"message\":");
            JsonText.quote(sb, message);
            sb.append(",\"level\":\"").append(logLevel.name()).append('"');
            String rid = requestId;
            if (rid != null) {
                sb.append(",\"AWSRequestId\":");
                JsonText.quote(sb, rid);
            }
            String tid = tenantId;
            if (tid != null) {
                sb.append(",\"tenantId\":");
                JsonText.quote(sb, tid);
            }
            text = sb.append("}\n").toString();
        } else if (logLevel == LogLevel.UNDEFINED) {
            text = message == null ? "null" : message;
        } else {
            text = "[" + logLevel.name() + "] " + message;
        }
        return text;
    }

    @Override
    public void log(byte[] message, LogLevel logLevel) {
        if (logLevel == null) {
            logLevel = LogLevel.UNDEFINED;
        }
        if (enabled(logLevel)) {
            write(message == null ? NULL_BYTES : message);
        }
    }

    private boolean enabled(LogLevel level) {
        return level == LogLevel.UNDEFINED || level.ordinal() >= minimum.ordinal();
    }

    private void write(byte[] bytes) {
        synchronized (out) {
            out.write(bytes, 0, bytes.length);
            out.flush();
        }
    }
}
