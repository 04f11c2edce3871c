package lambdad.runtime;

import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.util.HashMap;
import java.util.Locale;
import java.util.Map;

/**
 * A minimal HTTP/1.1 client of the Lambda Runtime API (2018-06-01) over one keep-alive TCP
 * connection with TCP_NODELAY: one write per request, a hand-written response parser
 * (Content-Length, chunked with extensions and trailers, close-delimited, interim 1xx).
 * It reconnects once when the server had closed an idle connection. Not thread-safe.
 */
final class RuntimeApiClient {

    /** The server closed the connection; {@code partial} tells whether a response had begun. */
    static final class ConnectionLost extends IOException {
        private static final long serialVersionUID = 1L;
        final boolean partial;

        ConnectionLost(boolean partial) {
            super("Runtime API connection closed by the server");
            this.partial = partial;
        }
    }

    /** One response: status, lower-cased headers, body. */
    static final class Response {
        final int status;
        final Map<String, String> headers;
        final byte[] body;

        Response(int status, Map<String, String> headers, byte[] body) {
            this.status = status;
            this.headers = headers;
            this.body = body;
        }

        String header(String lowerName) {
            return headers.get(lowerName);
        }
    }

    private static final byte[] EMPTY = new byte[0];
    private static final String PREFIX = "/2018-06-01/runtime/";
    private static final String SAFE =
            "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~";

    private final String host;
    private final int port;
    private final byte[] nextRequest;
    private final byte[] restoreRequest;
    private final byte[] waitRequest;
    private final String postHead;

    private Socket socket;
    private InputStream in;
    private OutputStream out;
    private byte[] buf = new byte[16384];
    private int pos;
    private int lim;
    private boolean asked;  // askForWork's question is on the connection, its answer not read

    RuntimeApiClient(String address) {
        int colon = address.lastIndexOf(':');
        if (colon < 0) {
            throw new IllegalArgumentException("AWS_LAMBDA_RUNTIME_API is not host:port: " + address);
        }
        String h = address.substring(0, colon);
        if (h.startsWith("[") && h.endsWith("]")) {
            h = h.substring(1, h.length() - 1);
        }
        this.host = h.isEmpty() ? "127.0.0.1" : h;
        this.port = Integer.parseInt(address.substring(colon + 1));
        String agent = "aws-lambda-java/" + System.getProperty("java.version") + "-lambdad";
        this.nextRequest = ("GET " + PREFIX + "invocation/next HTTP/1.1\r\nHost: " + address
                + "\r\nUser-Agent: " + agent + "\r\n\r\n").getBytes(StandardCharsets.ISO_8859_1);
        this.restoreRequest = ("GET " + PREFIX + "restore/next HTTP/1.1\r\nHost: " + address
                + "\r\nUser-Agent: " + agent + "\r\n\r\n").getBytes(StandardCharsets.ISO_8859_1);
        this.waitRequest = ("GET " + PREFIX + "lambdad/wait HTTP/1.1\r\nHost: " + address
                + "\r\nUser-Agent: " + agent + "\r\n\r\n").getBytes(StandardCharsets.ISO_8859_1);
        this.postHead = "Host: " + address + "\r\nUser-Agent: " + agent + "\r\n";
    }

    // -- requests --------------------------------------------------------------------------

    Response next() throws IOException {
        Response r = exchange(nextRequest, null, 0, 0);
        if (r.status != 200) {
            throw new IOException("Runtime API /invocation/next answered " + r.status + ": "
                    + new String(r.body, 0, Math.min(r.body.length, 200), StandardCharsets.UTF_8));
        }
        return r;
    }

    /** SnapStart: tells the platform init is done; returns when the environment is restored. */
    void restoreNext() throws IOException {
        Response r = exchange(restoreRequest, null, 0, 0);
        if (r.status != 200) {
            throw new IOException("Runtime API /restore/next answered " + r.status);
        }
    }

    /**
     * Sends the question of {@link #waitForWork()} without reading its answer: the runtime
     * prepares what it can meanwhile, and where the environment was not staged the answer
     * is there when it asks for it, instead of a round trip later. Any other request reads
     * that answer first (an init error is posted after the wait, as always).
     */
    void askForWork() {
        try {
            if (socket == null) {
                connect();
            }
            out.write(waitRequest);
            out.flush();
            asked = true;
        } catch (IOException e) {
            close();  // waitForWork asks again
        }
    }

    /**
     * A staged environment's wait: lambdad answers once the environment's first invocation
     * arrives, which is when the function's init may run (at once if it was not staged); the
     * question was sent by {@link #askForWork()}, or is now. Whatever else happens (the
     * connection fails, another status), init runs now: its /next meets the same trouble.
     */
    void waitForWork() {
        if (asked) {
            settle();
            return;
        }
        try {
            exchange(waitRequest, null, 0, 0);
        } catch (IOException ignored) {
            // init runs all the same (exchange closed the connection)
        }
    }

    /** Whether askForWork's question was answered (or there is none to wait for). */
    boolean answered() {
        if (!asked) {
            return true;
        }
        try {
            return lim > pos || in.available() > 0;
        } catch (IOException e) {
            return true;  // waitForWork meets it
        }
    }

    /** Reads the answer to askForWork's question when it is still due (see waitForWork). */
    private void settle() {
        if (!asked) {
            return;
        }
        asked = false;
        try {
            readResponse();
        } catch (IOException e) {
            close();  // init runs all the same: the next request connects again
        }
    }

    int postResponse(String requestId, byte[] body, int len, String contentType) throws IOException {
        return post(responsePath(requestId), body, len, contentType, null);
    }

    int postError(String requestId, byte[] body, String errorType) throws IOException {
        return post(errorPath(requestId), body, body.length, "application/json", errorType);
    }

    int postInitError(byte[] body, String errorType) throws IOException {
        return post("init/error", body, body.length, "application/json", errorType);
    }

    private int post(String path, byte[] body, int len, String contentType, String errorType)
            throws IOException {
        return exchange(postHead(path, len, contentType, errorType), body, 0, len).status;
    }

    private byte[] postHead(String path, int len, String contentType, String errorType) {
        StringBuilder head = new StringBuilder(256);
        head.append("POST ").append(PREFIX).append(path).append(" HTTP/1.1\r\n").append(postHead)
                .append("Content-Type: ").append(contentType)
                .append("\r\nContent-Length: ").append(len).append("\r\n");
        if (errorType != null && !errorType.isEmpty()) {
            head.append("Lambda-Runtime-Function-Error-Type: ").append(headerSafe(errorType)).append("\r\n");
        }
        head.append("\r\n");
        return latin1(head);
    }

    /**
     * Builds, without sending, the heads of a response and of an error post once: their code
     * and its string concatenations' call sites are past their first run when the first
     * invocation posts (see Bootstrap.warmUp).
     */
    void warmUp() {
        postHead(responsePath("warm-up"), 0, "application/json", null);
        postHead(errorPath("warm-up"), 0, "application/json", "java.lang.Error");
    }

    static String responsePath(String requestId) {
        return "invocation/" + quote(requestId) + "/response";
    }

    static String errorPath(String requestId) {
        return "invocation/" + quote(requestId) + "/error";
    }

    /**
     * Posts an invocation's result and asks for the next invocation in one write (HTTP/1.1
     * pipelining): one system call and one wake-up of the Runtime API instead of two. Falls
     * back to two plain exchanges on a fresh connection when the server had closed this one.
     */
    Response finishAndNext(String path, byte[] body, int len, String contentType, String errorType)
            throws IOException {
        settle();
        if (socket == null) {
            post(path, body, len, contentType, errorType);
            return next();
        }
        byte[] head = postHead(path, len, contentType, errorType);
        try {
            if (len <= 65536) {
                byte[] all = new byte[head.length + len + nextRequest.length];
                System.arraycopy(head, 0, all, 0, head.length);
                System.arraycopy(body, 0, all, head.length, len);
                System.arraycopy(nextRequest, 0, all, head.length + len, nextRequest.length);
                out.write(all);
            } else {
                out.write(head);
                out.write(body, 0, len);
                out.write(nextRequest);
            }
            out.flush();
        } catch (IOException e) {
            close();  // nothing was answered: send both again on a new connection
            post(path, body, len, contentType, errorType);
            return next();
        }
        try {
            readResponse();
        } catch (ConnectionLost lost) {
            close();
            if (lost.partial) {
                throw lost;
            }
            post(path, body, len, contentType, errorType);
            return next();
        }
        if (socket == null) {  // the server closed after the post: the pipelined GET is lost
            return next();
        }
        Response r;
        try {
            r = readResponse();
        } catch (ConnectionLost lost) {
            close();
            if (lost.partial) {
                throw lost;
            }
            return next();
        }
        if (r.status != 200) {
            throw new IOException("Runtime API /invocation/next answered " + r.status + ": "
                    + new String(r.body, 0, Math.min(r.body.length, 200), StandardCharsets.UTF_8));
        }
        return r;
    }

    // -- connection ---------------------------------------------------------------------------

    private void connect() throws IOException {
        Socket s = new Socket();
        s.setTcpNoDelay(true);
        s.connect(new InetSocketAddress(host, port));
        socket = s;
        in = s.getInputStream();
        out = s.getOutputStream();
        pos = 0;
        lim = 0;
    }

    void close() {
        Socket s = socket;
        socket = null;
        asked = false;
        in = null;
        out = null;
        pos = 0;
        lim = 0;
        if (s != null) {
            try {
                s.close();
            } catch (IOException ignored) {
                // nothing to do
            }
        }
    }

    private Response exchange(byte[] head, byte[] body, int off, int len) throws IOException {
        settle();
        for (int attempt = 0; ; attempt++) {
            boolean reused = socket != null;
            if (!reused) {
                connect();
            }
            try {
                if (body == null || len == 0) {
                    out.write(head);
                } else if (len <= 65536) {
                    byte[] all = new byte[head.length + len];
                    System.arraycopy(head, 0, all, 0, head.length);
                    System.arraycopy(body, off, all, head.length, len);
                    out.write(all);
                } else {
                    out.write(head);
                    out.write(body, off, len);
                }
                out.flush();
                return readResponse();
            } catch (ConnectionLost lost) {
                close();
                if (attempt > 0 || lost.partial || !reused) {
                    throw lost;
                }
            } catch (IOException e) {
                close();
                if (attempt > 0 || !reused) {
                    throw e;
                }
            }
        }
    }

    // -- response parsing ------------------------------------------------------------------

    private int fill() throws IOException {
        if (pos == lim) {
            pos = 0;
            lim = 0;
        } else if (lim == buf.length) {
            if (pos > 0) {
                System.arraycopy(buf, pos, buf, 0, lim - pos);
                lim -= pos;
                pos = 0;
            } else {
                buf = java.util.Arrays.copyOf(buf, buf.length * 2);
            }
        }
        int n;
        try {
            n = in.read(buf, lim, buf.length - lim);
        } catch (java.net.SocketException e) {
            n = -1;
        }
        if (n > 0) {
            lim += n;
        }
        return n;
    }

    /** Reads one CRLF-terminated line (without the CRLF) as Latin-1. */
    private String readLine(boolean started) throws IOException {
        int scan = pos;
        while (true) {
            for (int i = scan; i < lim; i++) {
                if (buf[i] == '\n') {
                    int end = (i > pos && buf[i - 1] == '\r') ? i - 1 : i;
                    String line = new String(buf, pos, end - pos, StandardCharsets.ISO_8859_1);
                    pos = i + 1;
                    return line;
                }
            }
            int before = pos;
            scan = lim;
            if (fill() <= 0) {
                throw new ConnectionLost(started || lim > pos);
            }
            scan -= before - pos;  // fill() may have moved the unread bytes to the front
        }
    }

    private Response readResponse() throws IOException {
        while (true) {
            String statusLine = readLine(false);
            if (statusLine.isEmpty()) {
                continue;  // stray CRLF between messages
            }
            int sp = statusLine.indexOf(' ');
            int status;
            try {
                int sp2 = statusLine.indexOf(' ', sp + 1);
                status = Integer.parseInt(statusLine.substring(sp + 1, sp2 < 0 ? statusLine.length() : sp2));
            } catch (RuntimeException e) {
                throw new IOException("Malformed Runtime API status line: " + statusLine);
            }
            Map<String, String> headers = new HashMap<>(16);
            while (true) {
                String line = readLine(true);
                if (line.isEmpty()) {
                    break;
                }
                int colon = line.indexOf(':');
                if (colon > 0) {
                    headers.put(line.substring(0, colon).trim().toLowerCase(Locale.ROOT),
                            line.substring(colon + 1).trim());
                }
            }
            if (status >= 100 && status < 200) {
                continue;  // interim response: the real one follows
            }
            byte[] body;
            String length = headers.get("content-length");
            String te = headers.get("transfer-encoding");
            if (te != null && te.toLowerCase(Locale.ROOT).contains("chunked")) {
                body = readChunked();
            } else if (length != null) {
                body = readExact(Integer.parseInt(length.trim()));
            } else if (status == 204 || status == 304) {
                body = EMPTY;
            } else {
                body = readToEof();
                headers.put("connection", "close");
            }
            String conn = headers.get("connection");
            if (conn != null && conn.equalsIgnoreCase("close")) {
                close();
            }
            return new Response(status, headers, body);
        }
    }

    private byte[] readExact(int n) throws IOException {
        if (n == 0) {
            return EMPTY;
        }
        byte[] outBuf = new byte[n];
        int have = Math.min(n, lim - pos);
        System.arraycopy(buf, pos, outBuf, 0, have);
        pos += have;
        while (have < n) {
            int k;
            try {
                k = in.read(outBuf, have, n - have);
            } catch (java.net.SocketException e) {
                k = -1;
            }
            if (k <= 0) {
                throw new ConnectionLost(true);
            }
            have += k;
        }
        return outBuf;
    }

    private byte[] readChunked() throws IOException {
        java.io.ByteArrayOutputStream acc = new java.io.ByteArrayOutputStream();
        while (true) {
            String sizeLine = readLine(true);
            int semi = sizeLine.indexOf(';');
            String hex = (semi >= 0 ? sizeLine.substring(0, semi) : sizeLine).trim();
            int size = hex.isEmpty() ? 0 : Integer.parseInt(hex, 16);
            if (size == 0) {
                while (!readLine(true).isEmpty()) {
                    // trailers: ignored
                }
                return acc.toByteArray();
            }
            acc.write(readExact(size));
            if (!readLine(true).isEmpty()) {
                throw new IOException("Malformed chunk in Runtime API response");
            }
        }
    }

    private byte[] readToEof() throws IOException {
        java.io.ByteArrayOutputStream acc = new java.io.ByteArrayOutputStream();
        acc.write(buf, pos, lim - pos);
        pos = lim;
        byte[] tmp = new byte[65536];
        int k;
        while ((k = in.read(tmp)) > 0) {
            acc.write(tmp, 0, k);
        }
        return acc.toByteArray();
    }

    // -- helpers -----------------------------------------------------------------------------

    private static byte[] latin1(CharSequence s) {
        int n = s.length();
        byte[] b = new byte[n];
        for (int i = 0; i < n; i++) {
            char c = s.charAt(i);
            b[i] = c < 256 ? (byte) c : (byte) '?';
        }
        return b;
    }

    static String quote(String value) {
        boolean safe = true;
        for (int i = 0; i < value.length(); i++) {
            if (SAFE.indexOf(value.charAt(i)) < 0) {
                safe = false;
                break;
            }
        }
        if (safe) {
            return value;
        }
        StringBuilder sb = new StringBuilder();
        for (byte b : value.getBytes(StandardCharsets.UTF_8)) {
            char c = (char) (b & 0xff);
            if (c < 128 && SAFE.indexOf(c) >= 0) {
                sb.append(c);
            } else {
                sb.append('%').append(Character.toUpperCase(Character.forDigit(c >> 4, 16)))
                        .append(Character.toUpperCase(Character.forDigit(c & 15, 16)));
            }
        }
        return sb.toString();
    }

    private static String headerSafe(String value) {
        return value.replace('\r', ' ').replace('\n', ' ');
    }

}
