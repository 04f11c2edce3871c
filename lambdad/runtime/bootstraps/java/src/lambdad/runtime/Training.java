package lambdad.runtime;

import com.amazonaws.services.lambda.runtime.Context;
import com.amazonaws.services.lambda.runtime.RequestHandler;
import com.amazonaws.services.lambda.runtime.RequestStreamHandler;
import java.io.BufferedInputStream;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Deque;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * A training run for the class-data-sharing archive (build.py runs it under
 * -XX:ArchiveClassesAtExit): the runtime serves a few invocations of every handler kind from an
 * in-process Runtime API, so that the classes a real environment loads end up in the archive.
 */
final class Training {

    private Training() {
    }

    // -- handlers -------------------------------------------------------------------------------

    public static final class MapHandler implements RequestHandler<Map<String, Object>, Map<String, Object>> {
        @Override
        public Map<String, Object> handleRequest(Map<String, Object> event, Context context) {
            System.out.println("training " + context.getAwsRequestId());
            context.getLogger().log("log " + context.getRemainingTimeInMillis() + "\n");
            Map<String, Object> out = new LinkedHashMap<>(event);
            out.put("function", context.getFunctionName());
            out.put("memory", context.getMemoryLimitInMB());
            out.put("identity", context.getIdentity() == null ? null : context.getIdentity().getIdentityId());
            out.put("client", context.getClientContext() == null ? null : context.getClientContext().getCustom());
            return out;
        }
    }

    public static final class Item {
        public String name;
        public int count;
        private List<Double> values = new ArrayList<>();
        private boolean active;

        public List<Double> getValues() {
            return values;
        }

        public void setValues(List<Double> values) {
            this.values = values;
        }

        public boolean isActive() {
            return active;
        }

        public void setActive(boolean active) {
            this.active = active;
        }
    }

    public static final class PojoHandler implements RequestHandler<Item, Item> {
        @Override
        public Item handleRequest(Item item, Context context) {
            item.count++;
            return item;
        }
    }

    public static final class Methods {
        public static String upper(String s, Context context) {
            return s.toUpperCase();
        }

        public Integer twice(Integer n) {
            return n * 2;
        }

        public void fail(Map<String, Object> event, Context context) {
            throw new IllegalStateException("training failure", new IOException("cause"));
        }
    }

    public static final class StreamHandler implements RequestStreamHandler {
        @Override
        public void handleRequest(InputStream in, OutputStream out, Context context) throws IOException {
            out.write(in.readAllBytes());
        }
    }

    // -- a tiny Runtime API --------------------------------------------------------------------------

    private static final class Event {
        final byte[] body;
        final Map<String, String> headers;

        Event(String body, Map<String, String> headers) {
            this.body = body.getBytes(StandardCharsets.UTF_8);
            this.headers = headers;
        }
    }

    private static final class Server implements Runnable {
        final ServerSocket socket;
        final Deque<Event> events = new ArrayDeque<>();
        private int counter;

        Server() throws IOException {
            socket = new ServerSocket(0, 50, InetAddress.getLoopbackAddress());
        }

        @Override
        public void run() {
            while (true) {
                try (Socket s = socket.accept()) {
                    serve(s);
                } catch (IOException e) {
                    if (socket.isClosed()) {
                        return;
                    }
                }
            }
        }

        private void serve(Socket s) throws IOException {
            InputStream in = new BufferedInputStream(s.getInputStream());
            OutputStream out = s.getOutputStream();
            while (true) {
                String requestLine = line(in);
                if (requestLine == null) {
                    return;
                }
                int length = 0;
                String h;
                while ((h = line(in)) != null && !h.isEmpty()) {
                    if (h.toLowerCase().startsWith("content-length:")) {
                        length = Integer.parseInt(h.substring(15).trim());
                    }
                }
                in.readNBytes(length);
                if (requestLine.startsWith("GET")) {
                    Event e;
                    synchronized (this) {
                        e = events.poll();
                    }
                    if (e == null) {
                        return;
                    }
                    StringBuilder head = new StringBuilder("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n");
                    head.append("Lambda-Runtime-Aws-Request-Id: training-").append(++counter).append("\r\n");
                    head.append("Lambda-Runtime-Deadline-Ms: ").append(System.currentTimeMillis() + 60000).append("\r\n");
                    head.append("Lambda-Runtime-Invoked-Function-Arn: arn:aws:lambda:us-east-1:123456789012:function:training\r\n");
                    head.append("Lambda-Runtime-Trace-Id: Root=1-00000000-000000000000000000000000;Sampled=0\r\n");
                    for (Map.Entry<String, String> x : e.headers.entrySet()) {
                        head.append(x.getKey()).append(": ").append(x.getValue()).append("\r\n");
                    }
                    if ((counter & 1) == 0) {
                        head.append("Transfer-Encoding: chunked\r\n\r\n");
                        ByteArrayOutputStream chunked = new ByteArrayOutputStream();
                        chunked.write(head.toString().getBytes(StandardCharsets.ISO_8859_1));
                        chunked.write((Integer.toHexString(e.body.length) + ";x=1\r\n").getBytes(StandardCharsets.ISO_8859_1));
                        chunked.write(e.body);
                        chunked.write("\r\n0\r\nX-Trailer: 1\r\n\r\n".getBytes(StandardCharsets.ISO_8859_1));
                        out.write(chunked.toByteArray());
                    } else {
                        head.append("Content-Length: ").append(e.body.length).append("\r\n\r\n");
                        ByteArrayOutputStream plain = new ByteArrayOutputStream();
                        plain.write(head.toString().getBytes(StandardCharsets.ISO_8859_1));
                        plain.write(e.body);
                        out.write(plain.toByteArray());
                    }
                } else {
                    out.write("HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\nContent-Length: 15\r\n\r\n{\"status\":\"OK\"}"
                            .getBytes(StandardCharsets.ISO_8859_1));
                }
                out.flush();
            }
        }

        private static String line(InputStream in) throws IOException {
            StringBuilder sb = new StringBuilder();
            int c;
            while ((c = in.read()) >= 0) {
                if (c == '\n') {
                    int n = sb.length();
                    return n > 0 && sb.charAt(n - 1) == '\r' ? sb.substring(0, n - 1) : sb.toString();
                }
                sb.append((char) c);
            }
            return sb.length() == 0 ? null : sb.toString();
        }
    }

    static void main(String[] args) throws Exception {
        Server server = new Server();
        Thread t = new Thread(server, "training-api");
        t.setDaemon(true);
        t.start();
        String api = "127.0.0.1:" + server.socket.getLocalPort();
        Path taskRoot = Files.createTempDirectory("lambdad-java-training");
        Map<String, String> env = new HashMap<>(System.getenv());
        env.put("AWS_LAMBDA_FUNCTION_NAME", "training");
        env.put("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "512");
        Map<String, String> mobile = new HashMap<>();
        mobile.put("Lambda-Runtime-Client-Context",
                "{\"client\":{\"installation_id\":\"i\",\"app_title\":\"t\"},\"custom\":{\"k\":\"v\"},\"env\":{\"platform\":\"x\"}}");
        mobile.put("Lambda-Runtime-Cognito-Identity", "{\"cognitoIdentityId\":\"id\",\"cognitoIdentityPoolId\":\"pool\"}");
        String map = "{\"key\":\"value\",\"n\":1,\"f\":2.5,\"list\":[1,\"a\",null,true],\"nested\":{\"x\":{\"y\":[]}}}";
        Object[][] runs = {
            {"lambdad.runtime.Training$MapHandler", new Event[] {new Event(map, mobile), new Event(map, Map.of()), new Event("[1,2", Map.of())}},
            {"lambdad.runtime.Training$PojoHandler", new Event[] {
                new Event("{\"name\":\"a\",\"count\":1,\"values\":[1.5,2],\"active\":true,\"extra\":{}}", Map.of()),
                new Event("{\"name\":\"b\"}", Map.of())}},
            {"lambdad.runtime.Training$Methods::upper", new Event[] {new Event("\"hello\"", Map.of()), new Event("\"x\"", Map.of())}},
            {"lambdad.runtime.Training$Methods::twice", new Event[] {new Event("21", Map.of())}},
            {"lambdad.runtime.Training$Methods::fail", new Event[] {new Event("{}", Map.of())}},
            {"lambdad.runtime.Training$StreamHandler", new Event[] {new Event(map, Map.of()), new Event("{}", Map.of())}},
            {"lambdad.runtime.TrainingNoSuchClass", new Event[] {new Event("{}", Map.of())}},
            {"lambdad.runtime.Training$Methods::missing", new Event[] {new Event("{}", Map.of())}},
        };
        for (Object[] run : runs) {
            Event[] events = (Event[]) run[1];
            synchronized (server) {
                server.events.addAll(List.of(events));
            }
            Bootstrap.runForTraining(api, (String) run[0], taskRoot.toString(), events.length, env);
        }
        server.socket.close();
        Files.deleteIfExists(taskRoot);
        System.out.flush();
    }
}
