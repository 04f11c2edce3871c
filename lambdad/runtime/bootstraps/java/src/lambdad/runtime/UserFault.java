package lambdad.runtime;

import java.io.PrintWriter;
import java.io.StringWriter;
import java.util.Collections;
import java.util.IdentityHashMap;
import java.util.Set;

/**
 * A failure found by the runtime rather than thrown by the function (AWS's UserFault): a
 * message, the exception class name (may be null), the printed stack trace (may be null) and
 * whether it is fatal. Reported without a stackTrace field, as AWS's Java runtime does.
 */
final class UserFault extends RuntimeException {
    private static final long serialVersionUID = 1L;
    static final String RUNTIME_PACKAGE = "lambdad.runtime.";

    final String msg;
    final String exception;
    final String trace;
    final boolean fatal;

    UserFault(String msg, String exception, String trace, boolean fatal) {
        super(msg, null, false, false);
        this.msg = msg;
        this.exception = exception;
        this.trace = trace;
        this.fatal = fatal;
    }

    static UserFault of(String msg) {
        return new UserFault(msg, null, null, false);
    }

    static UserFault of(Throwable t, boolean fatal) {
        String msg = t.getLocalizedMessage() == null ? t.getClass().getName() : t.getLocalizedMessage();
        return new UserFault(msg, t.getClass().getName(), trace(t), fatal);
    }

    static UserFault initError(Throwable e, String className) {
        return new UserFault("Error loading class " + className
                + (e.getMessage() == null ? "" : ": " + e.getMessage()),
                e.getClass().getName(), trace(e), true);
    }

    static UserFault classNotFound(Throwable e, String className) {
        return new UserFault("Class not found: " + className, e.getClass().getName(), trace(e), false);
    }

    /** The throwable's stack trace as printed, with the runtime's own frames removed. */
    static String trace(Throwable t) {
        filterStackTrace(t);
        StringWriter sw = new StringWriter();
        t.printStackTrace(new PrintWriter(sw));
        return sw.toString();
    }

    /** How AWS's runtime writes the failure to the log. */
    String reportableError() {
        if (exception != null || trace != null) {
            return msg + ": " + (exception == null ? "" : exception) + "\n" + (trace == null ? "" : trace) + "\n";
        }
        return msg + "\n";
    }

    /** Removes this runtime's frames (and everything below them) from t, its causes and suppressed. */
    static <T extends Throwable> T filterStackTrace(T t) {
        filter(t, Collections.newSetFromMap(new IdentityHashMap<>()));
        return t;
    }

    private static void filter(Throwable t, Set<Throwable> seen) {
        if (t == null || !seen.add(t)) {
            return;
        }
        StackTraceElement[] trace = t.getStackTrace();
        for (int i = 0; i < trace.length; i++) {
            if (trace[i].getClassName().startsWith(RUNTIME_PACKAGE)) {
                StackTraceElement[] kept = new StackTraceElement[i];
                System.arraycopy(trace, 0, kept, 0, i);
                t.setStackTrace(kept);
                break;
            }
        }
        filter(t.getCause(), seen);
        for (Throwable s : t.getSuppressed()) {
            filter(s, seen);
        }
    }

    // -- the JSON documents posted to the Runtime API -------------------------------------------

    /** {"errorMessage", "errorType"} of a fault (no stackTrace, as AWS). */
    String toJson() {
        StringBuilder sb = new StringBuilder(128);
        sb.append("{\"errorMessage\":");
        JsonText.quote(sb, msg);
        if (exception != null) {
            sb.append(",\"errorType\":");
            JsonText.quote(sb, exception);
        }
        return sb.append('}').toString();
    }

    /** {"errorMessage", "errorType", "stackTrace", "cause"?} of a throwable (AWS's Failure). */
    static String failureJson(Throwable t) {
        StringBuilder sb = new StringBuilder(512);
        appendFailure(sb, t, Collections.newSetFromMap(new IdentityHashMap<>()));
        return sb.toString();
    }

    private static void appendFailure(StringBuilder sb, Throwable t, Set<Throwable> seen) {
        seen.add(t);
        String message = t.getLocalizedMessage() == null ? t.getClass().getName() : t.getLocalizedMessage();
        sb.append("{\"errorMessage\":");
        JsonText.quote(sb, message);
        sb.append(",\"errorType\":");
        JsonText.quote(sb, t.getClass().getName());
        sb.append(",\"stackTrace\":[");
        StackTraceElement[] trace = t.getStackTrace();
        for (int i = 0; i < trace.length; i++) {
            if (i > 0) {
                sb.append(',');
            }
            JsonText.quote(sb, trace[i].toString());
        }
        sb.append(']');
        Throwable cause = t.getCause();
        if (cause != null && !seen.contains(cause)) {
            sb.append(",\"cause\":");
            appendFailure(sb, cause, seen);
        }
        sb.append('}');
    }
}
