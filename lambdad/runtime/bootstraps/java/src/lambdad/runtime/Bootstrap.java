package lambdad.runtime;

import com.amazonaws.services.lambda.runtime.ClientContext;
import com.amazonaws.services.lambda.runtime.CognitoIdentity;
import com.amazonaws.services.lambda.runtime.LambdaLogger;
import com.amazonaws.services.lambda.runtime.LambdaRuntime;
import com.amazonaws.services.lambda.runtime.logging.LogFormat;
import com.amazonaws.services.lambda.runtime.logging.LogLevel;
import java.io.BufferedOutputStream;
import java.io.File;
import java.io.FileDescriptor;
import java.io.FileOutputStream;
import java.io.IOError;
import java.io.IOException;
import java.io.PrintStream;
import java.lang.reflect.Field;
import java.net.URL;
import java.net.URLClassLoader;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;

/**
 * lambdad's runtime for the managed Java runtimes (java17, java21): a client of the Lambda
 * Runtime API (2018-06-01) that behaves like AWS's Java runtime.
 *
 * <p>It loads the handler named by {@code _HANDLER} from {@code $LAMBDA_TASK_ROOT} (its classes,
 * top-level JARs and {@code lib/*.jar}) and the layers' {@code /opt/java/lib/*.jar}, through a
 * class loader whose parent holds the Lambda API types and Jackson; then it fetches
 * invocations, calls the handler and posts the result or the error, until the environment is
 * stopped. Init failures are posted to {@code /runtime/init/error} and the JVM exits with 1.
 *
 * <p>Every environment builds the function's class loader and does all it can without running
 * the function's code (the handler's class loaded but not initialised, see
 * {@link HandlerLoader#prepare}, and the runtime's own first runs), then asks {@code GET
 * /runtime/lambdad/wait} before it initialises the handler: lambdad answers at once, unless it
 * staged the environment ahead of its first invocation, then when that arrives — no code of the
 * function runs before. (lambdad's other bootstraps ask only when {@code LAMBDAD_STAGED=1}
 * says so, and take the variable out of their environment; a JVM cannot take a variable out of
 * {@link System#getenv()}, so lambdad gives Java none, and the question costs one local round
 * trip where the environment was not staged.)
 *
 * <p>System properties: {@code lambdad.optRoot} (default /opt/java) where layers are mounted;
 * {@code lambdad.eagerInitErrors=true} reports "class not found"/"no such method" at init, as
 * an init error, where AWS reports them on every invocation instead.
 */
public final class Bootstrap {

    private static final String TRACE_PROPERTY = "com.amazonaws.xray.traceHeader";

    private final RuntimeApiClient client;
    private final RuntimeLogger logger;
    private final PrintStream stdout;
    private final PrintStream stderr;
    private final InvocationContext.Static common;

    private Bootstrap(RuntimeApiClient client, RuntimeLogger logger, PrintStream stdout, PrintStream stderr,
            Map<String, String> env) {
        this.client = client;
        this.logger = logger;
        this.stdout = stdout;
        this.stderr = stderr;
        this.common = new InvocationContext.Static(env, logger);
    }

    public static void main(String[] args) throws Exception {
        if (args.length > 0 && args[0].equals("--train")) {
            Training.main(Arrays.copyOfRange(args, 1, args.length));
            return;
        }
        Json.warmUp();
        Map<String, String> env = System.getenv();
        PrintStream stdout = stream(FileDescriptor.out);
        PrintStream stderr = stream(FileDescriptor.err);
        System.setOut(stdout);
        System.setErr(stderr);

        String api = env.get("AWS_LAMBDA_RUNTIME_API");
        if (api == null) {
            stderr.println("Could not get environment variable AWS_LAMBDA_RUNTIME_API");
            stderr.flush();
            System.exit(-1);
        }
        String handler = args.length > 0 ? args[0] : env.getOrDefault("_HANDLER", "");
        String taskRoot = env.get("LAMBDA_TASK_ROOT");
        if (taskRoot == null || taskRoot.isEmpty()) {
            taskRoot = System.getProperty("user.dir");
        }
        String optRoot = System.getProperty("lambdad.optRoot", "/opt/java");
        boolean eager = Boolean.getBoolean("lambdad.eagerInitErrors");
        boolean staged = true; // (see the class comment: lambdad answers at once if not)

        RuntimeLogger logger = new RuntimeLogger(stdout, env.get("AWS_LAMBDA_LOG_LEVEL"), env.get("AWS_LAMBDA_LOG_FORMAT"));
        installLogger(logger);
        Bootstrap runtime = new Bootstrap(new RuntimeApiClient(api), logger, stdout, stderr, env);
        try {
            HandlerLoader.Invoker invoker = runtime.init(handler, taskRoot, optRoot, eager, staged, env);
            runtime.serve(invoker, -1);
        } catch (IOException e) {
            // The Runtime API went away: the environment is being shut down.
            stderr.println("lambdad java runtime: lost the Runtime API: " + e);
            runtime.flush();
            System.exit(1);
        }
    }

    /** A UTF-8 stream over fd 1 or 2 that flushes on newlines (and before every post). */
    static PrintStream stream(FileDescriptor fd) {
        return new PrintStream(new BufferedOutputStream(new FileOutputStream(fd), 8192), true, StandardCharsets.UTF_8);
    }

    private static void installLogger(LambdaLogger logger) {
        try {
            Field f = LambdaRuntime.class.getDeclaredField("logger");
            f.setAccessible(true);
            f.set(null, logger);
        } catch (ReflectiveOperationException | RuntimeException e) {
            System.err.println("lambdad java runtime: cannot install the LambdaRuntime logger: " + e);
        }
    }

    /** The function's class loader: task root, its JARs, lib/*.jar, then the layers' JARs. */
    static ClassLoader customerLoader(String taskRoot, String optRoot) throws IOException {
        List<URL> urls = new ArrayList<>();
        File task = new File(taskRoot);
        urls.add(new URL("file", null, -1, task.getAbsolutePath() + "/"));
        addJars(task, urls);
        addJars(new File(task, "lib"), urls);
        addJars(new File(optRoot, "lib"), urls);
        return new CustomerClassLoader(urls.toArray(new URL[0]), ClassLoader.getSystemClassLoader());
    }

    /**
     * Parent-first, like AWS's, except for Jackson: a function that bundles its own Jackson gets
     * it (AWS's runtime keeps its Jackson shaded out of the function's way), while the runtime
     * keeps serialising with its own.
     */
    static final class CustomerClassLoader extends URLClassLoader {
        static {
            ClassLoader.registerAsParallelCapable();
        }

        CustomerClassLoader(URL[] urls, ClassLoader parent) {
            super(urls, parent);
        }

        @Override
        protected Class<?> loadClass(String name, boolean resolve) throws ClassNotFoundException {
            if (!name.startsWith("com.fasterxml.jackson.")) {
                return super.loadClass(name, resolve);
            }
            synchronized (getClassLoadingLock(name)) {
                Class<?> c = findLoadedClass(name);
                if (c == null) {
                    try {
                        c = findClass(name);
                    } catch (ClassNotFoundException e) {
                        return super.loadClass(name, resolve);
                    }
                }
                if (resolve) {
                    resolveClass(c);
                }
                return c;
            }
        }
    }

    private static void addJars(File dir, List<URL> urls) throws IOException {
        String[] names = dir.list();
        if (names == null) {
            return;
        }
        Arrays.sort(names);
        for (String name : names) {
            if (name.endsWith(".jar")) {
                urls.add(new URL("file", null, -1, dir.getAbsolutePath() + "/" + name));
            }
        }
    }

    /**
     * Loads the handler; on a fatal failure posts the init error and exits. {@code staged}: first
     * waits for the environment's first invocation, which is when the function's init may run.
     */
    HandlerLoader.Invoker init(String handler, String taskRoot, String optRoot, boolean eager,
            boolean staged, Map<String, String> env) throws IOException {
        UserFault fault;
        try {
            ClassLoader loader = customerLoader(taskRoot, optRoot);
            Thread.currentThread().setContextClassLoader(loader);
            if (staged) {
                client.askForWork();  // (its answer is read below)
            }
            // Everything that needs none of the function's code is done before the wait (a
            // staged environment's first invocation then finds it done): the handler's class
            // loaded but not initialised, its reflection, the JDK types' codecs, the runtime's
            // own first runs. Where the environment was not staged, this is work its init
            // would have done right after anyway, and the wait's answer came meanwhile.
            HandlerLoader prepared = HandlerLoader.prepare(handler, loader);
            warmUp();
            if (staged) {
                if (!client.answered()) {
                    // No answer yet: the environment was staged and waits for its first
                    // invocation. Time for warm-ups that would cost one whose init follows
                    // at once more than they save.
                    prepared.warmUpWhileWaiting();
                    warmUpWhileWaiting();
                }
                client.waitForWork();
            }
            HandlerLoader.Invoker invoker = prepared.load();
            if (!(eager && invoker instanceof HandlerLoader.FaultInvoker)) {
                if ("snap-start".equals(env.get("AWS_LAMBDA_INITIALIZATION_TYPE"))) {
                    flush();
                    client.restoreNext();
                }
                return invoker;
            }
            fault = ((HandlerLoader.FaultInvoker) invoker).fault;
        } catch (UserFault f) {
            fault = f;
        } catch (IOException e) {
            throw e;
        } catch (Throwable t) {
            fault = UserFault.of(UserFault.filterStackTrace(t), true);
        }
        logger.log(fault.reportableError(), logger.format == LogFormat.JSON ? LogLevel.ERROR : LogLevel.UNDEFINED);
        flush();
        try {
            client.postInitError(fault.toJson().getBytes(StandardCharsets.UTF_8), fault.exception);
        } finally {
            flush();
            System.exit(1);
        }
        return null;
    }

    /**
     * Runs once what every invocation runs of the runtime's own code, on dummy values: the
     * context built from the headers, the response's and the error's request heads. The first
     * invocation finds their classes loaded and initialised and their call sites linked.
     */
    private void warmUp() {
        InvocationContext context = new InvocationContext(common, "warm-up", 0, null, null, null, null, null);
        context.getRemainingTimeInMillis();
        client.warmUp();
    }

    /**
     * Runs once, on a throwaway exception, what reporting a function's error runs (the stack
     * trace filtered and printed, the error document), and builds a log record without
     * writing it: a first invocation that fails or logs finds them past their first run.
     */
    private void warmUpWhileWaiting() {
        try {
            Throwable t = new IllegalStateException("warm-up", new RuntimeException("cause"));
            UserFault.failureJson(t).getBytes(StandardCharsets.UTF_8);  // (frames and all)
            UserFault.of(t, false).reportableError();
            logger.warmUp();
        } catch (RuntimeException ignored) {
            // only a warm-up
        }
    }

    /** The invocation loop; returns after {@code max} invocations when max >= 0 (training). */
    void serve(HandlerLoader.Invoker invoker, int max) throws IOException {
        HandlerLoader.Output out = new HandlerLoader.Output(1024);
        RuntimeApiClient.Response request = client.next();
        for (int n = 1; ; n++) {
            String requestId = request.header("lambda-runtime-aws-request-id");
            if (requestId == null) {
                requestId = "";
            }
            String traceId = request.header("lambda-runtime-trace-id");
            if (traceId != null) {
                System.setProperty(TRACE_PROPERTY, traceId);
            } else {
                System.clearProperty(TRACE_PROPERTY);
            }
            String tenantId = request.header("lambda-runtime-aws-tenant-id");
            logger.setInvocation(requestId, tenantId);

            UserFault fault;
            byte[] errorBody;
            String errorType;
            boolean fatal;
            try {
                long deadline = parseLong(request.header("lambda-runtime-deadline-ms"));
                CognitoIdentity identity = InvocationContext.parseIdentity(request.header("lambda-runtime-cognito-identity"));
                ClientContext clientContext = InvocationContext.parseClientContext(request.header("lambda-runtime-client-context"));
                InvocationContext context = new InvocationContext(common, requestId, deadline,
                        request.header("lambda-runtime-invoked-function-arn"), traceId, tenantId, identity, clientContext);
                out.reset();
                invoker.invoke(request.body, out, context);
                fault = null;
                errorBody = null;
                errorType = null;
                fatal = false;
            } catch (UserFault f) {
                fault = f;
                errorBody = f.toJson().getBytes(StandardCharsets.UTF_8);
                errorType = f.exception;
                fatal = f.fatal;
            } catch (Throwable t) {
                UserFault.filterStackTrace(t);
                fault = UserFault.of(t, false);
                errorBody = UserFault.failureJson(t).getBytes(StandardCharsets.UTF_8);
                errorType = t.getClass().getName();
                fatal = t instanceof VirtualMachineError || t instanceof IOError;
            }
            if (fault != null) {
                logger.log(fault.reportableError(), logger.format == LogFormat.JSON ? LogLevel.ERROR : LogLevel.UNDEFINED);
            }
            flush();
            boolean last = fatal || (max >= 0 && n >= max);
            if (fault == null) {
                Thread.interrupted();  // clear a flag the function may have left set
                if (last) {
                    client.postResponse(requestId, out.buffer(), out.size(), "application/json");
                } else {
                    request = client.finishAndNext(RuntimeApiClient.responsePath(requestId),
                            out.buffer(), out.size(), "application/json", null);
                }
            } else if (last) {
                client.postError(requestId, errorBody, errorType);
            } else {
                request = client.finishAndNext(RuntimeApiClient.errorPath(requestId),
                        errorBody, errorBody.length, "application/json", errorType);
            }
            if (fatal) {
                flush();
                System.exit(1);
            }
            if (last) {
                return;
            }
        }
    }

    private static long parseLong(String s) {
        if (s == null) {
            return 0;
        }
        try {
            return Long.parseLong(s.trim());
        } catch (NumberFormatException e) {
            return 0;
        }
    }

    void flush() {
        PrintStream out = System.out;
        PrintStream err = System.err;
        if (out != null) {
            out.flush();
        }
        if (err != null) {
            err.flush();
        }
        if (out != stdout) {
            stdout.flush();
        }
        if (err != stderr) {
            stderr.flush();
        }
    }

    /** Runs the runtime in this JVM against {@code api} (used by {@link Training}). */
    static void runForTraining(String api, String handler, String taskRoot, int invocations,
            Map<String, String> env) throws IOException {
        RuntimeLogger logger = new RuntimeLogger(System.out, "", "");
        installLogger(logger);
        RuntimeApiClient client = new RuntimeApiClient(api);
        Bootstrap runtime = new Bootstrap(client, logger, System.out, System.err, env);
        HandlerLoader.Invoker invoker = runtime.init(handler, taskRoot, "/nonexistent", false, false, env);
        runtime.serve(invoker, invocations);
        client.close();
    }
}
