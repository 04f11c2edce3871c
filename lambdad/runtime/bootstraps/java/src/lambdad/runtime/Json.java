package lambdad.runtime;

import com.fasterxml.jackson.annotation.JsonInclude;
import com.fasterxml.jackson.core.JsonFactory;
import com.fasterxml.jackson.core.JsonGenerator;
import com.fasterxml.jackson.core.JsonParser;
import com.fasterxml.jackson.core.json.JsonReadFeature;
import com.fasterxml.jackson.core.json.JsonWriteFeature;
import com.fasterxml.jackson.databind.DeserializationFeature;
import com.fasterxml.jackson.databind.MapperFeature;
import com.fasterxml.jackson.databind.Module;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.SerializationFeature;
import com.fasterxml.jackson.databind.json.JsonMapper;
import java.io.ByteArrayOutputStream;
import java.nio.charset.StandardCharsets;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.atomic.AtomicBoolean;

/**
 * The Jackson mappers, configured like AWS's Java runtime serialisation
 * (aws-lambda-java-serialization's JacksonFactory). Building a mapper costs a cold JVM tens of
 * milliseconds, so {@link #warmUp()} starts it on a background thread while the main thread
 * loads the function; {@link #mapper()} waits for it.
 */
final class Json {

    private static final CompletableFuture<ObjectMapper> MAPPER = new CompletableFuture<>();
    private static volatile ObjectMapper eventsMapper;
    private static final AtomicBoolean STARTED = new AtomicBoolean();

    private Json() {
    }

    /** Builds the mappers on a daemon thread (idempotent). */
    static void warmUp() {
        if (!STARTED.compareAndSet(false, true)) {
            return;
        }
        Thread t = new Thread(Json::build, "lambdad-json-init");
        t.setDaemon(true);
        t.start();
    }

    private static void build() {
        try {
            ObjectMapper plain = create(false);
            // Exercise the parser, the Map deserialiser and the generator once, the way the
            // runtime uses them: events are bytes, responses go to an OutputStream, the
            // context's headers are strings.
            byte[] event = "{\"a\":[1,2.5,\"x\",true,null],\"b\":{\"c\":\"d\"}}".getBytes(StandardCharsets.UTF_8);
            Map<?, ?> sample = plain.readValue(event, Map.class);
            plain.writeValue(new ByteArrayOutputStream(64), sample);
            plain.readTree("{\"k\":\"v\"}");
            MAPPER.complete(plain);
        } catch (Throwable t) {
            MAPPER.completeExceptionally(t);
        }
    }

    /** The mapper for handler inputs and outputs. */
    static ObjectMapper mapper() {
        if (STARTED.compareAndSet(false, true)) {
            build();
        }
        try {
            return MAPPER.join();
        } catch (java.util.concurrent.CompletionException e) {
            Throwable cause = e.getCause() == null ? e : e.getCause();
            throw new IllegalStateException("Jackson could not be initialised: " + cause, cause);
        }
    }

    /**
     * The mapper for aws-lambda-java-events classes: AWS maps those with mix-ins; matching
     * property names case-insensitively ("Records", "Sns", "eventSourceARN") covers most.
     */
    static ObjectMapper eventsMapper() {
        ObjectMapper m = eventsMapper;
        if (m == null) {
            synchronized (Json.class) {
                m = eventsMapper;
                if (m == null) {
                    mapper();  // fails the same way when Jackson is unusable
                    m = create(true);
                    eventsMapper = m;
                }
            }
        }
        return m;
    }

    @SuppressWarnings("deprecation")
    private static ObjectMapper create(boolean caseInsensitive) {
        JsonFactory factory = JsonFactory.builder()
                .enable(JsonReadFeature.ALLOW_NON_NUMERIC_NUMBERS)
                .enable(JsonReadFeature.ALLOW_LEADING_ZEROS_FOR_NUMBERS)
                .enable(JsonReadFeature.ALLOW_SINGLE_QUOTES)
                .enable(JsonReadFeature.ALLOW_BACKSLASH_ESCAPING_ANY_CHARACTER)
                .enable(JsonReadFeature.ALLOW_UNESCAPED_CONTROL_CHARS)
                .enable(JsonReadFeature.ALLOW_UNQUOTED_FIELD_NAMES)
                .disable(JsonReadFeature.ALLOW_JAVA_COMMENTS)
                .disable(JsonReadFeature.ALLOW_YAML_COMMENTS)
                .enable(JsonWriteFeature.QUOTE_FIELD_NAMES)
                .enable(JsonWriteFeature.WRITE_NAN_AS_STRINGS)
                .disable(JsonWriteFeature.ESCAPE_NON_ASCII)
                .disable(JsonWriteFeature.WRITE_NUMBERS_AS_STRINGS)
                .build();
        factory.disable(JsonParser.Feature.AUTO_CLOSE_SOURCE);
        factory.disable(JsonParser.Feature.STRICT_DUPLICATE_DETECTION);
        factory.enable(JsonGenerator.Feature.IGNORE_UNKNOWN);
        factory.disable(JsonGenerator.Feature.AUTO_CLOSE_JSON_CONTENT);
        factory.disable(JsonGenerator.Feature.AUTO_CLOSE_TARGET);
        factory.disable(JsonGenerator.Feature.FLUSH_PASSED_TO_STREAM);
        factory.disable(JsonGenerator.Feature.STRICT_DUPLICATE_DETECTION);
        factory.disable(JsonGenerator.Feature.WRITE_BIGDECIMAL_AS_PLAIN);

        JsonMapper.Builder builder = JsonMapper.builder(factory)
                .enable(MapperFeature.ALLOW_FINAL_FIELDS_AS_MUTATORS)
                .enable(MapperFeature.AUTO_DETECT_FIELDS)
                .enable(MapperFeature.AUTO_DETECT_GETTERS)
                .enable(MapperFeature.AUTO_DETECT_IS_GETTERS)
                .enable(MapperFeature.AUTO_DETECT_SETTERS)
                .enable(MapperFeature.CAN_OVERRIDE_ACCESS_MODIFIERS)
                .enable(MapperFeature.USE_STD_BEAN_NAMING)
                .enable(MapperFeature.USE_ANNOTATIONS)
                .disable(MapperFeature.AUTO_DETECT_CREATORS)
                .disable(MapperFeature.INFER_PROPERTY_MUTATORS)
                .disable(MapperFeature.SORT_PROPERTIES_ALPHABETICALLY)
                .disable(MapperFeature.USE_GETTERS_AS_SETTERS)
                .disable(MapperFeature.USE_WRAPPER_NAME_AS_PROPERTY_NAME)
                .disable(MapperFeature.USE_STATIC_TYPING)
                .disable(MapperFeature.REQUIRE_SETTERS_FOR_GETTERS)
                .enable(SerializationFeature.FAIL_ON_SELF_REFERENCES)
                .enable(SerializationFeature.FAIL_ON_UNWRAPPED_TYPE_IDENTIFIERS)
                .enable(SerializationFeature.WRAP_EXCEPTIONS)
                .disable(SerializationFeature.CLOSE_CLOSEABLE)
                .disable(SerializationFeature.FAIL_ON_EMPTY_BEANS)
                .disable(SerializationFeature.FLUSH_AFTER_WRITE_VALUE)
                .disable(SerializationFeature.INDENT_OUTPUT)
                .disable(SerializationFeature.ORDER_MAP_ENTRIES_BY_KEYS)
                .disable(SerializationFeature.USE_EQUALITY_FOR_OBJECT_ID)
                .disable(SerializationFeature.WRITE_CHAR_ARRAYS_AS_JSON_ARRAYS)
                .disable(SerializationFeature.WRAP_ROOT_VALUE)
                // AWS disables eager fetching; enabling it only moves work to init, the output
                // is the same.
                .enable(SerializationFeature.EAGER_SERIALIZER_FETCH)
                .enable(DeserializationFeature.ACCEPT_EMPTY_ARRAY_AS_NULL_OBJECT)
                .enable(DeserializationFeature.ACCEPT_EMPTY_STRING_AS_NULL_OBJECT)
                .enable(DeserializationFeature.ACCEPT_SINGLE_VALUE_AS_ARRAY)
                .enable(DeserializationFeature.FAIL_ON_INVALID_SUBTYPE)
                .enable(DeserializationFeature.FAIL_ON_UNRESOLVED_OBJECT_IDS)
                .enable(DeserializationFeature.READ_UNKNOWN_ENUM_VALUES_AS_NULL)
                .enable(DeserializationFeature.UNWRAP_SINGLE_VALUE_ARRAYS)
                .enable(DeserializationFeature.WRAP_EXCEPTIONS)
                .disable(DeserializationFeature.FAIL_ON_IGNORED_PROPERTIES)
                .disable(DeserializationFeature.FAIL_ON_NULL_FOR_PRIMITIVES)
                .disable(DeserializationFeature.FAIL_ON_NUMBERS_FOR_ENUMS)
                .disable(DeserializationFeature.FAIL_ON_READING_DUP_TREE_KEY)
                .disable(DeserializationFeature.FAIL_ON_UNKNOWN_PROPERTIES)
                .configure(MapperFeature.ACCEPT_CASE_INSENSITIVE_PROPERTIES, caseInsensitive);
        ObjectMapper mapper = builder.build();
        mapper.setSerializationInclusion(JsonInclude.Include.NON_NULL);
        // AWS registers the java.time and Optional modules; Debian does not package them, so
        // they are used only when present on the runtime's classpath.
        registerIfPresent(mapper, "com.fasterxml.jackson.datatype.jsr310.JavaTimeModule");
        registerIfPresent(mapper, "com.fasterxml.jackson.datatype.jdk8.Jdk8Module");
        registerIfPresent(mapper, "com.fasterxml.jackson.datatype.joda.JodaModule");
        return mapper;
    }

    private static void registerIfPresent(ObjectMapper mapper, String className) {
        try {
            Class<?> c = Class.forName(className, true, Json.class.getClassLoader());
            mapper.registerModule((Module) c.getDeclaredConstructor().newInstance());
        } catch (ReflectiveOperationException | LinkageError | ClassCastException ignored) {
            // not installed
        }
    }
}
