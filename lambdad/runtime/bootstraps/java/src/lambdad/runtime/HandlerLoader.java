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
import java.lang.reflect.InvocationTargetException;
import java.lang.reflect.Method;
import java.lang.reflect.Modifier;
import java.lang.reflect.ParameterizedType;
import java.lang.reflect.Type;
import java.lang.reflect.TypeVariable;
import java.util.ArrayDeque;
import java.util.Arrays;
import java.util.Comparator;
import java.util.Iterator;
import java.util.ServiceLoader;

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

    private HandlerLoader() {
    }

    static String className(String handler) {
        int colon = handler.lastIndexOf("::");
        return colon < 0 ? handler : handler.substring(0, colon);
    }

    static Invoker load(String handler, ClassLoader loader) {
        int colon = handler.lastIndexOf("::");
        String className = colon < 0 ? handler : handler.substring(0, colon);
        String methodName = colon < 0 ? null : handler.substring(colon + 2);
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
        Invoker invoker = methodName == null ? loadInterfaceHandler(clazz) : loadMethodHandler(clazz, methodName);
        if (invoker instanceof FaultInvoker && ((FaultInvoker) invoker).fault.fatal) {
            throw ((FaultInvoker) invoker).fault;
        }
        return invoker;
    }

    // -- pkg.Class --------------------------------------------------------------------------------

    private static Invoker loadInterfaceHandler(Class<?> clazz) {
        if (RequestStreamHandler.class.isAssignableFrom(clazz)) {
            try {
                RequestStreamHandler h = (RequestStreamHandler) newInstance(getConstructor(clazz));
                return (input, out, context) -> h.handleRequest(new ByteArrayInputStream(input), out, context);
            } catch (UserFault f) {
                return new FaultInvoker(f);
            } catch (Throwable t) {
                return new FaultInvoker(UserFault.of(t, false));
            }
        }
        if (RequestHandler.class.isAssignableFrom(clazz)) {
            Type[] params = findInterfaceParameters(clazz, RequestHandler.class);
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
                RequestHandler<Object, Object> h = (RequestHandler<Object, Object>) newInstance(getConstructor(clazz));
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

    private static Invoker loadMethodHandler(Class<?> clazz, String methodName) {
        Method[] all;
        try {
            all = clazz.getMethods();
        } catch (NoClassDefFoundError e) {
            return new FaultInvoker(new UserFault("Error loading method " + methodName + " on class "
                    + clazz.getName(), e.getClass().getName(), UserFault.trace(e), false));
        }
        Method[] named = Arrays.stream(all).filter(m -> m.getName().equals(methodName)).toArray(Method[]::new);
        Arrays.sort(named, PRIORITY);
        for (Method m : named) {
            Invoker invoker = fromOverload(clazz, m);
            if (invoker != null) {
                return invoker;
            }
        }
        return new FaultInvoker(UserFault.of("No public method named " + methodName
                + " with appropriate method signature found on class " + clazz.getName()));
    }

    private static Invoker fromOverload(Class<?> clazz, Method m) {
        Type r = m.getGenericReturnType();
        Type[] p = m.getGenericParameterTypes();
        switch (p.length) {
            case 0:
                return pojoMethod(clazz, m, null, r, false);
            case 1:
                if (p[0] == InputStream.class) {
                    return streamMethod(clazz, m, true, false, false);
                } else if (p[0] == OutputStream.class) {
                    return streamMethod(clazz, m, false, true, false);
                } else if (p[0] == Context.class) {
                    return pojoMethod(clazz, m, null, r, true);
                }
                return pojoMethod(clazz, m, p[0], r, false);
            case 2:
                if (p[0] == OutputStream.class) {
                    if (p[1] == Context.class) {
                        return streamMethod(clazz, m, false, true, true);
                    }
                    System.err.println("Ignoring two-argument overload because first argument type is "
                            + "OutputStream and second argument type is not Context");
                    return null;
                } else if (p[0] == Context.class) {
                    System.err.println("Ignoring two-argument overload because first argument type is Context");
                    return null;
                } else if (p[0] == InputStream.class) {
                    if (p[1] == OutputStream.class) {
                        return streamMethod(clazz, m, true, true, false);
                    } else if (p[1] == Context.class) {
                        return streamMethod(clazz, m, true, false, true);
                    }
                    System.err.println("Ignoring two-argument overload because second parameter type, "
                            + rawName(p[1]) + ", is not OutputStream.");
                    return null;
                } else if (p[1] == Context.class) {
                    return pojoMethod(clazz, m, p[0], r, true);
                }
                System.err.println("Ignoring two-argument overload because second parameter type is not Context");
                return null;
            case 3:
                if (p[0] == InputStream.class && p[1] == OutputStream.class && p[2] == Context.class) {
                    return streamMethod(clazz, m, true, true, true);
                }
                System.err.println("Ignoring three-argument overload because argument signature is not "
                        + "(InputStream, OutputStream, Context");
                return null;
            default:
                System.err.println("Ignoring an overload of method " + m.getName()
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

    private static Invoker pojoMethod(Class<?> clazz, Method m, Type pType, Type rType, boolean needsContext) {
        try {
            Object instance = Modifier.isStatic(m.getModifiers()) ? null : newInstance(getConstructor(clazz));
            int argc = (pType != null ? 1 : 0) + (needsContext ? 1 : 0);
            boolean hasInput = pType != null;
            RequestHandler<Object, Object> h = (input, context) -> {
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
            return pojoInvoker(h, pType, rType);
        } catch (UserFault f) {
            return new FaultInvoker(f);
        } catch (Throwable t) {
            return new FaultInvoker(UserFault.of(t, false));
        }
    }

    private static Invoker streamMethod(Class<?> clazz, Method m, boolean needsInput, boolean needsOutput,
            boolean needsContext) {
        try {
            if (!isVoid(m.getReturnType())) {
                System.err.println("Will ignore return type " + m.getReturnType() + " on byte stream handler");
            }
            Object instance = Modifier.isStatic(m.getModifiers()) ? null : newInstance(getConstructor(clazz));
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
        } catch (UserFault f) {
            return new FaultInvoker(f);
        } catch (Throwable t) {
            return new FaultInvoker(UserFault.of(t, false));
        }
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

    private static Invoker pojoInvoker(RequestHandler<Object, Object> handler, Type pType, Type rType) {
        Codec in = pType == null ? null : Codec.of(pType);
        Codec out = rType == null || isVoid(rType) ? null : Codec.of(rType);
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

        static Codec of(Type type) {
            CustomPojoSerializer custom = customSerializer();
            if (custom != null) {
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

    private static volatile boolean customLoaded;
    private static CustomPojoSerializer custom;

    private static synchronized CustomPojoSerializer customSerializer() {
        if (!customLoaded) {
            customLoaded = true;
            ClassLoader cl = Thread.currentThread().getContextClassLoader();
            Iterator<CustomPojoSerializer> it = ServiceLoader.load(CustomPojoSerializer.class, cl).iterator();
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
