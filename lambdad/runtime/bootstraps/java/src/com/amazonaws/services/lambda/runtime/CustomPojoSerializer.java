package com.amazonaws.services.lambda.runtime;

import java.io.InputStream;
import java.io.OutputStream;
import java.lang.reflect.Type;

/**
 * A serializer for handler inputs and outputs that replaces the runtime's own; provided by the
 * function through META-INF/services (at most one).
 */
public interface CustomPojoSerializer {

    <T> T fromJson(InputStream input, Type type);

    <T> T fromJson(String input, Type type);

    <T> void toJson(T value, OutputStream output, Type type);
}
