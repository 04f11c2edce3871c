package lambdad.runtime;

import com.amazonaws.services.lambda.runtime.Context;
import com.amazonaws.services.lambda.runtime.CustomPojoSerializer;
import com.amazonaws.services.lambda.runtime.RequestHandler;
import com.amazonaws.services.lambda.runtime.RequestStreamHandler;
import com.fasterxml.jackson.databind.JavaType;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.ObjectReader;
import com.fasterxml.jackson.databind.ObjectWriter;
import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.io.UncheckedIOException;
import java.lang.reflect.Constructor;
import java.lang.reflect.GenericArrayType;
import java.lang.reflect.InvocationTargetException;
import java.lang.reflect.Method;
import java.lang.reflect.Modifier;
import java.lang.reflect.ParameterizedType;
import java.lang.reflect.Type;
import java.lang.reflect.TypeVariable;
import java.lang.reflect.WildcardType;
import java.nio.charset.StandardCharsets;
import java.util.ArrayDeque;
import java.util.Arrays;
import java.util.Collection;
import java.util.Comparator;
import java.util.HashMap;
import java.util.Iterator;
import java.util.Map;
import java.util.ServiceLoader;
import java.util.function.Consumer;

/**
 * Turns _HANDLER into an {@link Invoker}, with the rules and the wording of AWS's Java runtime:
 * {@code pkg.Class} implementing RequestStreamHandler or RequestHandler, or
 * {@code pkg.Class::method} where the public method named so with the longest signature wins
 * (a trailing Context counting one extra), among (), (I), (I, Context), (Context),
 * (InputStream[, OutputStream][, Context]) and (OutputStream[, Context]).
 *
 * <p>Failures come back two ways, as AWS's: a fatal {@link UserFault} is thrown (exception in a
 * static initialiser or a constructor: an init error), a non-fatal one is returned wrapped in
 * a {@link FaultInvoker} and reported by every invocation (class or method not found).
 *
 * <p>{@link #prepare} does ahead, before a staged environment's first invocation, what needs
 * none of the function's code (see there); {@link #load()} does the rest.
 */
final class HandlerLoader {

    /** One invocation: reads the event bytes, writes the response to {@code out}. */
    interface Invoker {
        void invoke(byte[] input, Output out, Context context) throws Throwable;
    }

    /** The response buffer, reused between invocations. */
    static final class Output extends ByteArrayOutputStream {
        Output(int size) {
            super(size);
        }

        byte[] buffer() {
            return buf;
        }
    }

    /** A handler that could not be loaded: every invocation reports the fault. */
    static final class FaultInvoker implements Invoker {
        final UserFault fault;

        FaultInvoker(UserFault fault) {
            this.fault = fault;
        }

        @Override
        public void invoke(byte[] input, Output out, Context context) {
            throw fault;
        }
    }

    private static final byte[] JSON_NULL = {'n', 'u', 'l', 'l'};
    private static final String EVENTS_PACKAGE = "com.amazonaws.services.lambda.runtime.events.";

    private final String handler;
    private final ClassLoader loader;
    private final String className;
    private final String methodName;

    // What prepare() found ahead; null where it did not (load() then looks for it itself).
    private Class<?> prepared;  // the handler's class: loaded and linked, not initialised
    private Type[] params;  // the type arguments it gives RequestHandler
    private Method[] overloads;  // its public methods named methodName, best first
    private Constructor<?> constructor;
    private Iterator<CustomPojoSerializer> serializers;  // the function's, none instantiated
    private ClassLoader serializersLoader;
    private final Map<Type, Codec> codecs = new HashMap<>();  // of JDK types only
    private boolean beans;  // Jackson will build codecs of the function's classes

    private HandlerLoader(String handler, ClassLoader loader) {
        this.handler = handler;
        this.loader = loader;
        int colon = handler.lastIndexOf("::");
        this.className = colon < 0 ? handler : handler.substring(0, colon);
        this.methodName = colon < 0 ? null : handler.substring(colon + 2);
    }

    static String className(String handler) {
        int colon = handler.lastIndexOf("::");
        return colon < 0 ? handler : handler.substring(0, colon);
    }

    /**
     * Does now what {@link #load()} can without running any code of the function: loads and
     * links the handler's class without initialising it (no static initialiser runs), finds
     * RequestHandler's type arguments or the method's overloads and the constructor by
     * reflection, looks up the function's CustomPojoSerializer (its provider's class loaded,
     * not instantiated), builds the JSON codecs of the JDK types among the handler's input
     * and output (a Map, a String: never one of the function's classes, which Jackson could
     * initialise or whose annotations could name the function's (de)serialisers), and runs
     * the invoker's code once around a stand-in of its own (see warmUp).
     *
     * <p>It reports nothing and never throws: where anything goes wrong, that step is left to
     * load(), which meets the same failure after the wait and reports it as it always did
     * (class not found, a missing dependency...), at the same moment.
     */
    static HandlerLoader prepare(String handler, ClassLoader loader) {
        HandlerLoader h = new HandlerLoader(handler, loader);
        try {
            h.prepareAhead();
        } catch (Throwable ignored) {
            // load() meets it again (what was found before stays: load() checks it)
        }
        return h;
    }

    private void prepareAhead() throws Throwable {
        if (className.isEmpty() || (methodName != null && methodName.isEmpty())) {
            return;
        }
        Class<?> clazz = Class.forName(className, false, loader);
        prepared = clazz;
        boolean jackson = false;
        try {
            Iterator<CustomPojoSerializer> it = ServiceLoader.load(CustomPojoSerializer.class, loader).iterator();
            jackson = !it.hasNext();  // (loads the first provider's class, if any: instantiates none)
            serializersLoader = loader;
            serializers = it;
        } catch (Throwable t) {
            // load() looks again, and reports a broken META-INF/services file there
        }
        Shape shape = null;
        if (methodName == null) {
            if (RequestStreamHandler.class.isAssignableFrom(clazz)) {
                constructor = clazz.getConstructor();  // (reflection links the class)
                shape = Shape.stream(true, true, true);  // (handleRequest(in, out, context))
            } else if (RequestHandler.class.isAssignableFrom(clazz)) {
                Type[] found = findInterfaceParameters(clazz, RequestHandler.class);
                if (found != null && found.length == 2) {
                    params = found;
                    constructor = clazz.getConstructor();
                    shape = Shape.pojo(found[0], found[1], true);
                }
            }
        } else {
            Method[] named = named(clazz.getMethods(), methodName);
            overloads = named;
            for (Method m : named) {
                shape = shape(m, message -> { });  // (what it ignores is told by load())
                if (shape != null) {
                    if (!Modifier.isStatic(m.getModifiers())) {
                        constructor = clazz.getConstructor();
                    }
                    break;
                }
            }
        }
        if (shape == null) {
            return;  // load() reports why
        }
        if (jackson && !shape.stream) {
            if (isEvent(shape.pType) || isEvent(shape.rType)) {
                Json.eventsMapper();  // (built from names only: no class of the function's is used)
            }
            prebuild(shape.pType);
            prebuild(shape.rType);
            beans = needsBeans(shape.pType) || needsBeans(shape.rType);
        }
        warmUp(methodName == null, shape);
    }

    private static boolean isEvent(Type type) {
        return type != null && rawName(type).startsWith(EVENTS_PACKAGE);
    }

    private boolean needsBeans(Type type) {
        return type != null && !isVoid(type) && !codecs.containsKey(type);
    }

    /**
     * Builds, around a stand-in of the runtime's own, the invoker the handler will get, and
     * runs it once: the call sites of its lambdas are linked (a cold JVM takes about half a
     * millisecond for one) and Method.invoke's first run is past before the function's
     * handler exists.
     */
    private static void warmUp(boolean iface, Shape shape) throws Throwable {
        StandIn standIn = new StandIn();
        Invoker invoker;
        if (shape.stream) {
            invoker = iface ? streamInvoker(standIn) : streamMethodInvoker(StandIn.method(shape.argc()), standIn,
                    shape.input, shape.output, shape.context);
        } else {
            invoker = jsonInvoker(iface ? standIn : methodHandler(StandIn.method(shape.argc()), standIn,
                    shape.input, shape.context), null, null);
        }
        invoker.invoke(new byte[0], new Output(16), null);
    }

    /** A handler of every kind that does nothing, for {@link #warmUp}. */
    static final class StandIn implements RequestHandler<Object, Object>, RequestStreamHandler {
        @Override
        public Object handleRequest(Object input, Context context) {
            return null;
        }

        @Override
        public void handleRequest(InputStream input, OutputStream output, Context context) {
        }

        public void call() {
        }

        public void call(Object a) {
        }

        public void call(Object a, Object b) {
        }

        public void call(Object a, Object b, Object c) {
        }

        static Method method(int argc) throws NoSuchMethodException {
            Class<?>[] types = new Class<?>[argc];
            Arrays.fill(types, Object.class);
            return StandIn.class.getMethod("call", types);
        }
    }

    /** A document of {@link Training.Item}, for {@link #warmUpWhileWaiting}. */
    private static final byte[] BEAN_SAMPLE =
            "{\"name\":\"a\",\"count\":1,\"values\":[1.5],\"active\":true}".getBytes(StandardCharsets.UTF_8);

    /**
     * Where the handler takes or returns one of the function's classes, whose codec is built
     * after the wait (Jackson could initialise it): builds and runs one of a bean of the
     * runtime's own, so that Jackson's bean introspection and bean (de)serialisers are past
     * their first run. That costs more than it saves where init follows at once: only for an
     * environment waiting for its first invocation (see Bootstrap.init).
     */
    void warmUpWhileWaiting() {
        if (!beans) {
            return;
        }
        try {
            Codec codec = Codec.jackson(Training.Item.class);  // (the archive's training bean)
            codec.write(codec.read(BEAN_SAMPLE), new Output(64));
        } catch (Throwable ignored) {
            // only a warm-up
        }
    }

    /**
     * Builds the codec of a JDK type and runs it once on a small document of that type ({} for
     * a Map, "" for a String...), so that the first invocation finds Jackson's parser,
     * deserialisers, generator and serialisers for it past their first-run costs.
     */
    private void prebuild(Type type) {
        if (type == null || isVoid(type) || !ofTheJdk(type) || codecs.containsKey(type)) {
            return;
        }
        Codec codec = Codec.jackson(type);
        codecs.put(type, codec);
        byte[] sample = sample(type);
        if (sample != null) {
            try {
                codec.write(codec.read(sample), new Output(64));
            } catch (IOException | RuntimeException ignored) {
                // only a warm-up
            }
        }
    }

    private static byte[] sample(Type type) {
        Type raw = type instanceof ParameterizedType ? ((ParameterizedType) type).getRawType() : type;
        if (!(raw instanceof Class)) {
            return null;
        }
        Class<?> c = (Class<?>) raw;
        String json;
        if (c == Object.class || Map.class.isAssignableFrom(c)) {
            json = "{}";
        } else if (c.isArray() || Collection.class.isAssignableFrom(c)) {
            json = "[]";
        } else if (c == String.class || c == CharSequence.class) {
            json = "\"\"";
        } else if (c == Boolean.class || c == boolean.class) {
            json = "false";
        } else if (Number.class.isAssignableFrom(c) || c.isPrimitive()) {
            json = "0";
        } else {
            return null;
        }
        return json.getBytes(StandardCharsets.UTF_8);
    }

    /** Whether every class {@code t} names is the JDK's (none of the function's or the runtime's). */
    private static boolean ofTheJdk(Type t) {
        if (t instanceof Class) {
            Class<?> c = (Class<?>) t;
            while (c.isArray()) {
                c = c.getComponentType();
            }
            ClassLoader cl = c.getClassLoader();
            return cl == null || cl == ClassLoader.getPlatformClassLoader();
        }
        if (t instanceof ParameterizedType) {
            ParameterizedType p = (ParameterizedType) t;
            Type owner = p.getOwnerType();
            return (owner == null || ofTheJdk(owner)) && ofTheJdk(p.getRawType())
                    && allOfTheJdk(p.getActualTypeArguments());
        }
        if (t instanceof WildcardType) {
            WildcardType w = (WildcardType) t;
            return allOfTheJdk(w.getUpperBounds()) && allOfTheJdk(w.getLowerBounds());
        }
        if (t instanceof GenericArrayType) {
            return ofTheJdk(((GenericArrayType) t).getGenericComponentType());
        }
        return false;  // a type variable: left to load()
    }

    private static boolean allOfTheJdk(Type[] types) {
        for (Type t : types) {
            if (!ofTheJdk(t)) {
                return false;
            }
        }
        return true;
    }

    /**
     * Turns the handler into an Invoker: initialises its class (its static initialiser runs
     * now), constructs the handler, builds what is left of the codecs.
     */
    Invoker load() {
        if (className.isEmpty() || (methodName != null && methodName.isEmpty())) {
            return new FaultInvoker(UserFault.of("Invalid handler: `" + handler + "'"));
        }
        Class<?> clazz;
        try {
            clazz = Class.forName(className, true, loader);
        } catch (ClassNotFoundException e) {
            return new FaultInvoker(UserFault.classNotFound(e, className));
        } catch (NoClassDefFoundError e) {
            // AWS defers it to the first invocation, then stops the environment.
            return new FaultInvoker(UserFault.initError(e, className));
        } catch (Throwable t) {
            throw UserFault.initError(t, className);
        }
        if (clazz != prepared) {  // (cannot happen: the loader keeps the class it loaded)
            params = null;
            overloads = null;
            constructor = null;
            codecs.clear();
        }
        Invoker invoker = methodName == null ? loadInterfaceHandler(clazz) : loadMethodHandler(clazz, methodName);
        if (invoker instanceof FaultInvoker && ((FaultInvoker) invoker).fault.fatal) {
            throw ((FaultInvoker) invoker).fault;
        }
        return invoker;
    }

    // -- pkg.Class --------------------------------------------------------------------------------

    private Invoker loadInterfaceHandler(Class<?> clazz) {
        if (RequestStreamHandler.class.isAssignableFrom(clazz)) {
            try {
                return streamInvoker((RequestStreamHandler) newInstance(constructor(clazz)));
            } catch (UserFault f) {
                return new FaultInvoker(f);
            } catch (Throwable t) {
                return new FaultInvoker(UserFault.of(t, false));
            }
        }
        if (RequestHandler.class.isAssignableFrom(clazz)) {
            Type[] params = this.params != null ? this.params : findInterfaceParameters(clazz, RequestHandler.class);
            if (params == null) {
                return new FaultInvoker(UserFault.of("Class " + clazz.getName()
                        + " does not implement RequestHandler with concrete type parameters"));
            }
            if (params.length != 2) {
                return new FaultInvoker(UserFault.of(
                        "Invalid class signature for RequestHandler. Expected two generic types, got " + params.length));
            }
            for (Type t : params) {
                if (t instanceof TypeVariable && !hasBound((TypeVariable<?>) t)) {
                    return new FaultInvoker(UserFault.of("Class " + clazz.getName()
                            + " does not implement RequestHandler with concrete type parameters: parameter "
                            + t + " has no upper bound."));
                }
            }
            try {
                @SuppressWarnings("unchecked")
                RequestHandler<Object, Object> h = (RequestHandler<Object, Object>) newInstance(constructor(clazz));
                return pojoInvoker(h, params[0], params[1]);
            } catch (UserFault f) {
                return new FaultInvoker(f);
            } catch (Throwable t) {
                return new FaultInvoker(UserFault.of(t, false));
            }
        }
        return new FaultInvoker(UserFault.of(
                "Class does not implement an appropriate handler interface: " + clazz.getName()));
    }

    private static Invoker streamInvoker(RequestStreamHandler h) {
        return (input, out, context) -> h.handleRequest(new ByteArrayInputStream(input), out, context);
    }

    private static boolean hasBound(TypeVariable<?> t) {
        for (Type bound : t.getBounds()) {
            if (!Object.class.equals(bound)) {
                return true;
            }
        }
        return false;
    }

    /** Breadth-first search for the type arguments {@code clazz} gives {@code iface}. */
    private static Type[] findInterfaceParameters(Class<?> clazz, Class<?> iface) {
        ArrayDeque<Frame> queue = new ArrayDeque<>();
        queue.add(new Frame(clazz, null));
        while (!queue.isEmpty()) {
            Frame cur = queue.poll();
            for (Type type : cur.clazz.getGenericInterfaces()) {
                if (type instanceof ParameterizedType) {
                    Frame next = Frame.of((ParameterizedType) type, cur);
                    if (iface.isAssignableFrom(next.clazz)) {
                        return next.args;
                    }
                    queue.add(next);
                } else if (type instanceof Class) {
                    queue.add(Frame.ofClass((Class<?>) type, cur));
                }
            }
            Type sup = cur.clazz.getGenericSuperclass();
            if (sup instanceof ParameterizedType) {
                queue.add(Frame.of((ParameterizedType) sup, cur));
            } else if (sup instanceof Class) {
                queue.add(Frame.ofClass((Class<?>) sup, cur));
            }
        }
        return null;
    }

    /** A class in the hierarchy and the type arguments it was given (null when raw). */
    private static final class Frame {
        final Class<?> clazz;
        final Type[] args;

        Frame(Class<?> clazz, Type[] args) {
            this.clazz = clazz;
            this.args = args;
        }

        static Frame ofClass(Class<?> c, Frame from) {
            TypeVariable<?>[] vars = c.getTypeParameters();
            if (vars.length == 0 || from.args == null) {
                return new Frame(c, null);
            }
            Type[] args = new Type[vars.length];
            for (int i = 0; i < vars.length; i++) {
                args[i] = from.resolve(vars[i]);
            }
            return new Frame(c, args);
        }

        static Frame of(ParameterizedType p, Frame from) {
            Type[] args = p.getActualTypeArguments().clone();
            for (int i = 0; i < args.length; i++) {
                if (args[i] instanceof TypeVariable) {
                    args[i] = from.resolve((TypeVariable<?>) args[i]);
                }
            }
            return new Frame((Class<?>) p.getRawType(), args);
        }

        Type resolve(TypeVariable<?> t) {
            TypeVariable<?>[] vars = clazz.getTypeParameters();
            for (int i = 0; i < vars.length; i++) {
                if (vars[i].getName().equals(t.getName())) {
                    return args == null ? vars[i] : args[i];
                }
            }
            return t;
        }
    }

    // -- pkg.Class::method ------------------------------------------------------------------------

    private static final Comparator<Method> PRIORITY = (lhs, rhs) -> {
        if (!lhs.isBridge() && rhs.isBridge()) {
            return -1;
        } else if (!rhs.isBridge() && lhs.isBridge()) {
            return 1;
        }
        return -Integer.compare(weight(lhs), weight(rhs));
    };

    private static int weight(Method m) {
        Class<?>[] p = m.getParameterTypes();
        return p.length + (p.length > 0 && p[p.length - 1] == Context.class ? 1 : 0);
    }

    private Invoker loadMethodHandler(Class<?> clazz, String methodName) {
        Method[] named = overloads;
        if (named == null) {
            try {
                named = named(clazz.getMethods(), methodName);
            } catch (NoClassDefFoundError e) {
                return new FaultInvoker(new UserFault("Error loading method " + methodName + " on class "
                        + clazz.getName(), e.getClass().getName(), UserFault.trace(e), false));
            }
        }
        for (Method m : named) {
            Invoker invoker = fromOverload(clazz, m);
            if (invoker != null) {
                return invoker;
            }
        }
        return new FaultInvoker(UserFault.of("No public method named " + methodName
                + " with appropriate method signature found on class " + clazz.getName()));
    }

    /** The public methods named {@code name}, the one to call first. */
    private static Method[] named(Method[] all, String name) {
        Method[] named = Arrays.stream(all).filter(m -> m.getName().equals(name)).toArray(Method[]::new);
        Arrays.sort(named, PRIORITY);
        return named;
    }

    /** Where load() tells which overloads it ignores (a constant: see warmUp). */
    private static final Consumer<String> TO_STDERR = message -> System.err.println(message);

    private Invoker fromOverload(Class<?> clazz, Method m) {
        Shape s = shape(m, TO_STDERR);
        if (s == null) {
            return null;
        }
        return s.stream ? streamMethod(clazz, m, s.input, s.output, s.context)
                : pojoMethod(clazz, m, s.pType, s.rType, s.context);
    }

    /** How an overload is called: its stream arguments, or its input and output types. */
    private static final class Shape {
        final boolean stream;
        final boolean input;
        final boolean output;
        final boolean context;
        final Type pType;
        final Type rType;

        private Shape(boolean stream, boolean input, boolean output, boolean context, Type pType, Type rType) {
            this.stream = stream;
            this.input = input;
            this.output = output;
            this.context = context;
            this.pType = pType;
            this.rType = rType;
        }

        static Shape stream(boolean input, boolean output, boolean context) {
            return new Shape(true, input, output, context, null, null);
        }

        static Shape pojo(Type pType, Type rType, boolean context) {
            return new Shape(false, pType != null, false, context, pType, rType);
        }

        int argc() {
            return (input ? 1 : 0) + (output ? 1 : 0) + (context ? 1 : 0);
        }
    }

    /** The shape of an overload; null for one that is ignored, after telling {@code ignored} why. */
    private static Shape shape(Method m, Consumer<String> ignored) {
        Type r = m.getGenericReturnType();
        Type[] p = m.getGenericParameterTypes();
        switch (p.length) {
            case 0:
                return Shape.pojo(null, r, false);
            case 1:
                if (p[0] == InputStream.class) {
                    return Shape.stream(true, false, false);
                } else if (p[0] == OutputStream.class) {
                    return Shape.stream(false, true, false);
                } else if (p[0] == Context.class) {
                    return Shape.pojo(null, r, true);
                }
                return Shape.pojo(p[0], r, false);
            case 2:
                if (p[0] == OutputStream.class) {
                    if (p[1] == Context.class) {
                        return Shape.stream(false, true, true);
                    }
                    ignored.accept("Ignoring two-argument overload because first argument type is "
                            + "OutputStream and second argument type is not Context");
                    return null;
                } else if (p[0] == Context.class) {
                    ignored.accept("Ignoring two-argument overload because first argument type is Context");
                    return null;
                } else if (p[0] == InputStream.class) {
                    if (p[1] == OutputStream.class) {
                        return Shape.stream(true, true, false);
                    } else if (p[1] == Context.class) {
                        return Shape.stream(true, false, true);
                    }
                    ignored.accept("Ignoring two-argument overload because second parameter type, "
                            + rawName(p[1]) + ", is not OutputStream.");
                    return null;
                } else if (p[1] == Context.class) {
                    return Shape.pojo(p[0], r, true);
                }
                ignored.accept("Ignoring two-argument overload because second parameter type is not Context");
                return null;
            case 3:
                if (p[0] == InputStream.class && p[1] == OutputStream.class && p[2] == Context.class) {
                    return Shape.stream(true, true, true);
                }
                ignored.accept("Ignoring three-argument overload because argument signature is not "
                        + "(InputStream, OutputStream, Context");
                return null;
            default:
                ignored.accept("Ignoring an overload of method " + m.getName()
                        + " because it has too many parameters: Expected at most 3, got " + p.length);
                return null;
        }
    }

    private static String rawName(Type t) {
        if (t instanceof Class) {
            return ((Class<?>) t).getName();
        }
        if (t instanceof ParameterizedType) {
            return rawName(((ParameterizedType) t).getRawType());
        }
        return t.getTypeName();
    }

    private Invoker pojoMethod(Class<?> clazz, Method m, Type pType, Type rType, boolean needsContext) {
        try {
            Object instance = Modifier.isStatic(m.getModifiers()) ? null : newInstance(constructor(clazz));
            return pojoInvoker(methodHandler(m, instance, pType != null, needsContext), pType, rType);
        } catch (UserFault f) {
            return new FaultInvoker(f);
        } catch (Throwable t) {
            return new FaultInvoker(UserFault.of(t, false));
        }
    }

    private static RequestHandler<Object, Object> methodHandler(Method m, Object instance, boolean hasInput,
            boolean needsContext) {
        int argc = (hasInput ? 1 : 0) + (needsContext ? 1 : 0);
        return (input, context) -> {
            Object[] args = new Object[argc];
            int i = 0;
            if (hasInput) {
                args[i++] = input;
            }
            if (needsContext) {
                args[i] = context;
            }
            return call(m, instance, args);
        };
    }

    private Invoker streamMethod(Class<?> clazz, Method m, boolean needsInput, boolean needsOutput,
            boolean needsContext) {
        try {
            if (!isVoid(m.getReturnType())) {
                System.err.println("Will ignore return type " + m.getReturnType() + " on byte stream handler");
            }
            Object instance = Modifier.isStatic(m.getModifiers()) ? null : newInstance(constructor(clazz));
            return streamMethodInvoker(m, instance, needsInput, needsOutput, needsContext);
        } catch (UserFault f) {
            return new FaultInvoker(f);
        } catch (Throwable t) {
            return new FaultInvoker(UserFault.of(t, false));
        }
    }

    private static Invoker streamMethodInvoker(Method m, Object instance, boolean needsInput, boolean needsOutput,
            boolean needsContext) {
        int argc = (needsInput ? 1 : 0) + (needsOutput ? 1 : 0) + (needsContext ? 1 : 0);
        return (input, out, context) -> {
            Object[] args = new Object[argc];
            int i = 0;
            if (needsInput) {
                args[i++] = new ByteArrayInputStream(input);
            }
            if (needsOutput) {
                args[i++] = out;
            }
            if (needsContext) {
                args[i] = context;
            }
            call(m, instance, args);
            if (!needsOutput) {
                out.write(JSON_NULL);
            }
        };
    }

    private static Object call(Method m, Object instance, Object[] args) {
        try {
            return m.invoke(instance, args);
        } catch (InvocationTargetException e) {
            throw sneaky(e.getCause() != null ? e.getCause() : e);
        } catch (IllegalAccessException e) {
            throw sneaky(e);
        }
    }

    // -- POJO (de)serialisation -------------------------------------------------------------------

    private static boolean isVoid(Type t) {
        return t == void.class || t == Void.class;
    }

    private Invoker pojoInvoker(RequestHandler<Object, Object> handler, Type pType, Type rType) {
        Codec in = pType == null ? null : codec(pType);
        Codec out = rType == null || isVoid(rType) ? null : codec(rType);
        return jsonInvoker(handler, in, out);
    }

    /** The invoker of a handler taking and returning JSON (null codecs: no input, output null). */
    private static Invoker jsonInvoker(RequestHandler<Object, Object> handler, Codec in, Codec out) {
        return (input, output, context) -> {
            Object value = null;
            if (in != null) {
                try {
                    value = in.read(input);
                } catch (Throwable t) {
                    throw new RuntimeException("An error occurred during JSON parsing", UserFault.filterStackTrace(t));
                }
            }
            Object result = handler.handleRequest(value, context);
            try {
                if (out != null) {
                    out.write(result, output);
                } else {
                    output.write(JSON_NULL);
                }
            } catch (Throwable t) {
                throw new RuntimeException("An error occurred during JSON serialization of response", t);
            }
        };
    }

    /** Reads and writes one type with Jackson or the function's own CustomPojoSerializer. */
    private abstract static class Codec {
        abstract Object read(byte[] input) throws IOException;

        abstract void write(Object value, OutputStream out) throws IOException;

        static Codec of(CustomPojoSerializer custom, Type type) {
            return new Codec() {
                @Override
                Object read(byte[] input) {
                    return custom.fromJson(new ByteArrayInputStream(input), type);
                }

                @Override
                void write(Object value, OutputStream out) {
                    custom.toJson(value, out, type);
                }
            };
        }

        static Codec jackson(Type type) {
            JavaType javaType = Json.mapper().getTypeFactory().constructType(type);
            ObjectMapper mapper = javaType.getRawClass().getName().startsWith(EVENTS_PACKAGE)
                    ? Json.eventsMapper() : Json.mapper();
            ObjectReader reader = mapper.readerFor(javaType);
            ObjectWriter writer = mapper.writerFor(javaType);
            return new Codec() {
                @Override
                Object read(byte[] input) {
                    try {
                        return reader.readValue(input);
                    } catch (IOException e) {
                        throw new UncheckedIOException(e);
                    }
                }

                @Override
                void write(Object value, OutputStream out) {
                    try {
                        writer.writeValue(out, value);
                    } catch (IOException e) {
                        throw new UncheckedIOException(e);
                    }
                }
            };
        }
    }

    /** The function's CustomPojoSerializer, or Jackson (the JDK types' codecs built ahead). */
    private Codec codec(Type type) {
        CustomPojoSerializer custom = customSerializer(serializers, serializersLoader);
        if (custom != null) {
            return Codec.of(custom, type);
        }
        Codec c = codecs.get(type);
        return c != null ? c : Codec.jackson(type);
    }

    private static volatile boolean customLoaded;
    private static CustomPojoSerializer custom;

    /**
     * The function's CustomPojoSerializer, found with the context class loader; {@code found}
     * is a lookup prepare() began with {@code foundWith}, its first provider instantiated
     * only now.
     */
    private static synchronized CustomPojoSerializer customSerializer(Iterator<CustomPojoSerializer> found,
            ClassLoader foundWith) {
        if (!customLoaded) {
            customLoaded = true;
            ClassLoader cl = Thread.currentThread().getContextClassLoader();
            Iterator<CustomPojoSerializer> it = found != null && foundWith == cl ? found
                    : ServiceLoader.load(CustomPojoSerializer.class, cl).iterator();
            if (it.hasNext()) {
                custom = it.next();
                if (it.hasNext()) {
                    throw new IllegalStateException(
                            "Too many serializers provided inside the META-INF/services folder, only one is allowed");
                }
            }
        }
        return custom;
    }

    // -- construction -------------------------------------------------------------------------------

    private Constructor<?> constructor(Class<?> clazz) throws Exception {
        return constructor != null ? constructor : getConstructor(clazz);
    }

    private static Constructor<?> getConstructor(Class<?> clazz) throws Exception {
        try {
            return clazz.getConstructor();
        } catch (NoSuchMethodException e) {
            if (clazz.getEnclosingClass() != null && !Modifier.isStatic(clazz.getModifiers())) {
                throw new Exception("Class " + clazz.getName()
                        + " cannot be instantiated because it is a non-static inner class");
            }
            throw new Exception("Class " + clazz.getName() + " has no public zero-argument constructor", e);
        }
    }

    private static Object newInstance(Constructor<?> constructor) {
        try {
            return constructor.newInstance();
        } catch (UserFault e) {
            throw e;
        } catch (InvocationTargetException e) {
            throw UserFault.of(e.getCause() == null ? e : e.getCause(), true);
        } catch (InstantiationException e) {
            throw sneaky(e.getCause() == null ? e : e.getCause());
        } catch (IllegalAccessException e) {
            throw sneaky(e);
        }
    }

    static RuntimeException sneaky(Throwable t) {
        return HandlerLoader.<RuntimeException>sneaky0(t);
    }

    @SuppressWarnings("unchecked")
    private static <T extends Throwable> T sneaky0(Throwable t) throws T {
        throw (T) t;
    }
}
