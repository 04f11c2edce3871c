// lambdad's in-environment bootstrap for the managed Node.js runtimes.
//
// It speaks the Lambda Runtime API (2018-06-01) as a client, the way AWS's Node.js runtime
// does: load the handler named by _HANDLER (CommonJS via require, ES modules via import()),
// then loop: fetch the next invocation, call handler(event, context, callback), post the
// result or the error. Init failures go to /runtime/init/error and the process exits.
//
// No npm packages. One persistent keep-alive HTTP/1.1 connection over a raw TCP socket
// with TCP_NODELAY, a hand-written request writer and response parser. The socket is
// unref'd while the handler runs so that 'beforeExit' tells us when the event loop is
// empty, which is what AWS's callback semantics (callbackWaitsForEmptyEventLoop) need.
//
// Launch: node bootstrap.mjs   (with AWS_LAMBDA_RUNTIME_API, _HANDLER, LAMBDA_TASK_ROOT...)

import fs from 'node:fs';
import Module, { createRequire } from 'node:module';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import util from 'node:util';

const API_PREFIX = '/2018-06-01/runtime';
const ERROR_TYPE_HEADER = 'Lambda-Runtime-Function-Error-Type';
const HANDLER_STREAMING = Symbol.for('aws.lambda.runtime.handler.streaming');
const STREAM_RESPONSE = 'response';
const HTTP_INTEGRATION_CONTENT_TYPE = 'application/vnd.awslambda.http-integration-response';

// ------------------------------------------------------------------------------------------
// Errors (AWS's names and messages)
// ------------------------------------------------------------------------------------------

function runtimeError(shortName, base = Error) {
  const cls = class extends base {};
  Object.defineProperty(cls, 'name', { value: shortName });
  cls.prototype.name = `Runtime.${shortName}`;
  return cls;
}

const ImportModuleError = runtimeError('ImportModuleError');
const HandlerNotFound = runtimeError('HandlerNotFound');
const MalformedHandlerName = runtimeError('MalformedHandlerName');
const UserCodeSyntaxError = runtimeError('UserCodeSyntaxError');
const NodeJsExit = runtimeError('NodeJsExit');

class UnhandledPromiseRejection extends Error {
  constructor(reason, promise) {
    super(reason);
    this.reason = reason;
    this.promise = promise;
  }
}
UnhandledPromiseRejection.prototype.name = 'Runtime.UnhandledPromiseRejection';

const NODEJS_EXIT_MESSAGE =
  'The Lambda runtime client detected an unexpected Node.js exit code. This is most ' +
  'commonly caused by a Promise that was never settled. For more information, see ' +
  'https://nodejs.org/docs/latest/api/process.html#exit-codes';

function looksLikeError(obj) {
  return (
    obj &&
    typeof obj.name === 'string' &&
    typeof obj.message === 'string' &&
    typeof obj.stack === 'string' &&
    obj.name &&
    obj.message &&
    obj.stack
  );
}

/** The JSON body posted to the Runtime API for an error. */
function toRapidResponse(error) {
  try {
    if (util.types.isNativeError(error) || looksLikeError(error)) {
      return {
        errorType: error.name,
        errorMessage: error.message,
        trace: String(error.stack).split('\n'),
      };
    }
    return { errorType: typeof error, errorMessage: String(error), trace: [] };
  } catch {
    return {
      errorType: 'handled',
      errorMessage:
        'callback called with Error argument, but there was a problem while retrieving one ' +
        'or more of its message, name, and stack',
    };
  }
}

function intoError(err) {
  return err instanceof Error ? err : new Error(err);
}

function withEnumerableProperties(value) {
  if (value instanceof Error) {
    const out = Object.assign(
      { errorType: value.name, errorMessage: value.message, code: value.code },
      value,
    );
    if (typeof value.stack === 'string') out.stack = value.stack.split('\n');
    return out;
  }
  return value;
}

/** The error as AWS writes it in the log after "Invoke Error" / "Uncaught Exception". */
function toFormatted(error) {
  try {
    return '\t' + JSON.stringify(error, (_k, v) => withEnumerableProperties(v));
  } catch {
    return '\t' + JSON.stringify(toRapidResponse(error));
  }
}

// ------------------------------------------------------------------------------------------
// Logging: console.* -> "<ISO time>\t<request id>\t<LEVEL>\t<message>\n", written
// synchronously so that it is in the pipe before the response is posted.
// ------------------------------------------------------------------------------------------

let currentRequestId; // undefined until the first invocation, as in AWS's logs
let logFd = 1; // the function's log; a scratch sink while a staged environment warms up
const sleepCell = new Int32Array(new SharedArrayBuffer(4));

function writeAll(fd, text) {
  const buf = Buffer.from(text, 'utf8');
  let off = 0;
  while (off < buf.length) {
    try {
      off += fs.writeSync(fd, buf, off, buf.length - off);
    } catch (err) {
      if (err.code === 'EAGAIN') {
        Atomics.wait(sleepCell, 0, 0, 1);
        continue;
      }
      return; // the log pipe is gone: nothing sensible left to do with the line
    }
  }
}

const LEVELS = {
  TRACE: { name: 'TRACE', priority: 1 },
  DEBUG: { name: 'DEBUG', priority: 2 },
  INFO: { name: 'INFO', priority: 3 },
  WARN: { name: 'WARN', priority: 4 },
  ERROR: { name: 'ERROR', priority: 5 },
  FATAL: { name: 'FATAL', priority: 6 },
};

function jsonErrorReplacer(_key, value) {
  if (value instanceof Error) {
    return Object.assign(
      {
        errorType: value?.constructor?.name ?? 'UnknownError',
        errorMessage: value.message,
        stackTrace: typeof value.stack === 'string' ? value.stack.split('\n') : value.stack,
      },
      value,
    );
  }
  return value;
}

function formatJson(level, params) {
  const out = {
    timestamp: new Date().toISOString(),
    level: level.name,
    requestId: currentRequestId,
  };
  if (params.length === 1) {
    out.message = params[0];
    try {
      return JSON.stringify(out, jsonErrorReplacer);
    } catch {
      out.message = util.format(out.message);
      return JSON.stringify(out);
    }
  }
  out.message = util.format(...params);
  for (const param of params) {
    if (param instanceof Error) {
      out.errorType = param?.constructor?.name ?? 'UnknownError';
      out.errorMessage = param.message;
      out.stackTrace = typeof param.stack === 'string' ? param.stack.split('\n') : [];
      break;
    }
  }
  return JSON.stringify(out);
}

let logErrorStructured;

function patchConsole() {
  const json = (process.env.AWS_LAMBDA_LOG_FORMAT || '').toUpperCase() === 'JSON';
  const log = json
    ? (level, params) => writeAll(logFd, formatJson(level, params).replace(/\n/g, '\r') + '\n')
    : (level, params) => {
        const time = new Date().toISOString();
        const line = `${time}\t${currentRequestId}\t${level.name}\t${util.format(...params)}`;
        writeAll(logFd, line.replace(/\n/g, '\r') + '\n');
      };
  const minimum = LEVELS[(process.env.AWS_LAMBDA_LOG_LEVEL || '').toUpperCase()] ?? LEVELS.TRACE;
  const nop = () => {};
  const make = (level) => (level.priority >= minimum.priority ? (...p) => log(level, p) : nop);
  console.trace = make(LEVELS.TRACE);
  console.debug = make(LEVELS.DEBUG);
  console.info = make(LEVELS.INFO);
  console.log = console.info;
  console.warn = make(LEVELS.WARN);
  console.error = make(LEVELS.ERROR);
  console.fatal = (...p) => log(LEVELS.FATAL, p);
  logErrorStructured = json
    ? (_msg, err) => console.error(intoError(err))
    : (msg, err) => console.error(msg, toFormatted(intoError(err)));
}

// ------------------------------------------------------------------------------------------
// Runtime API client: one keep-alive connection, minimal HTTP/1.1.
// ------------------------------------------------------------------------------------------

const CRLFCRLF = Buffer.from('\r\n\r\n');
const CRLF = Buffer.from('\r\n');

/** Parse a chunked body starting at `pos`; null if incomplete. */
function parseChunked(buf, pos) {
  const parts = [];
  for (;;) {
    const eol = buf.indexOf(CRLF, pos);
    if (eol < 0) return null;
    const size = parseInt(buf.toString('latin1', pos, eol).split(';', 1)[0].trim() || '0', 16);
    pos = eol + 2;
    if (size === 0) {
      for (;;) {
        const end = buf.indexOf(CRLF, pos);
        if (end < 0) return null;
        const empty = end === pos;
        pos = end + 2;
        if (empty) return { body: Buffer.concat(parts), end: pos };
      }
    }
    if (buf.length < pos + size + 2) return null;
    parts.push(buf.subarray(pos, pos + size));
    pos += size + 2;
  }
}

function getRequest(pathTail, address) {
  return Buffer.from(
    `GET ${API_PREFIX}/${pathTail} HTTP/1.1\r\nHost: ${address}\r\n` +
      `User-Agent: aws-lambda-nodejs/${process.version}-lambdad\r\n\r\n`,
    'latin1',
  );
}

class RuntimeClient {
  constructor(address) {
    const colon = address.lastIndexOf(':');
    this.host = address.slice(0, colon).replace(/^\[|\]$/g, '') || '127.0.0.1';
    this.port = Number(address.slice(colon + 1));
    this.hostHeader = address;
    this.sock = null;
    this.buf = null;
    this.pending = null;
    this.nextRequest = getRequest('invocation/next', address);
    this.postPrefix = `POST ${API_PREFIX}/`;
    this.postSuffix =
      ` HTTP/1.1\r\nHost: ${address}\r\nUser-Agent: aws-lambda-nodejs/${process.version}` +
      '-lambdad\r\n';
  }

  _connect() {
    const sock = net.createConnection({ host: this.host, port: this.port, noDelay: true });
    sock.setNoDelay(true);
    sock.on('data', (chunk) => this._onData(sock, chunk));
    sock.on('error', (err) => this._onClose(sock, err));
    sock.on('close', () => this._onClose(sock, null));
    this.sock = sock;
    this.buf = null;
    return sock;
  }

  _send() {
    const p = this.pending;
    const sock = this.sock || this._connect();
    sock.ref();
    sock.write(p.data);
  }

  _onData(sock, chunk) {
    if (sock !== this.sock) return;
    const p = this.pending;
    this.buf = this.buf ? Buffer.concat([this.buf, chunk]) : chunk;
    if (!p) return; // unsolicited bytes: keep them, the next parse will choke on them loudly
    p.started = true;
    const buf = this.buf;
    const headEnd = buf.indexOf(CRLFCRLF);
    if (headEnd < 0) return;
    const head = buf.toString('latin1', 0, headEnd);
    let pos = head.indexOf('\r\n');
    if (pos < 0) pos = head.length;
    const status = Number(head.slice(0, pos).split(' ', 3)[1]);
    const headers = {};
    while (pos < head.length) {
      pos += 2;
      let eol = head.indexOf('\r\n', pos);
      if (eol < 0) eol = head.length;
      const colon = head.indexOf(':', pos);
      if (colon > pos && colon < eol) {
        headers[head.slice(pos, colon).trim().toLowerCase()] = head.slice(colon + 1, eol).trim();
      }
      pos = eol;
    }
    const start = headEnd + 4;
    if (status >= 100 && status < 200) {
      this.buf = buf.length > start ? buf.subarray(start) : null;
      if (this.buf) this._onData(sock, Buffer.alloc(0));
      return;
    }
    let body;
    let end;
    const length = headers['content-length'];
    if (length !== undefined) {
      end = start + Number(length);
      if (buf.length < end) return;
      body = buf.subarray(start, end);
    } else if (/chunked/i.test(headers['transfer-encoding'] || '')) {
      const parsed = parseChunked(buf, start);
      if (!parsed) return;
      body = parsed.body;
      end = parsed.end;
    } else if (status === 204 || status === 304) {
      body = Buffer.alloc(0);
      end = start;
    } else {
      return; // body runs to the end of the connection: finished in _onClose
    }
    this.buf = buf.length > end ? buf.subarray(end) : null;
    this.pending = null;
    if ((headers.connection || '').toLowerCase() === 'close') {
      this.sock = null;
      sock.destroy();
    } else {
      sock.unref();
    }
    p.resolve({ status, headers, body });
  }

  _onClose(sock, err) {
    if (sock !== this.sock) return;
    this.sock = null;
    const p = this.pending;
    const buf = this.buf;
    this.buf = null;
    if (!p) return;
    if (!p.started && !p.retried) {
      p.retried = true; // the server had closed the idle keep-alive connection: once more
      this._send();
      return;
    }
    if (buf && !err) {
      const headEnd = buf.indexOf(CRLFCRLF);
      if (headEnd >= 0) {
        const status = Number(buf.toString('latin1', 0, 16).split(' ', 3)[1]);
        this.pending = null;
        p.resolve({ status, headers: {}, body: buf.subarray(headEnd + 4) });
        return;
      }
    }
    this.pending = null;
    p.reject(err || new Error('Runtime API connection closed'));
  }

  _request(data) {
    if (this.pending) {
      // A request is already in flight on the keep-alive connection (an error reported from
      // a stray callback while /next is pending): use a connection of its own.
      const other = new RuntimeClient(this.hostHeader);
      const done = () => other.sock && other.sock.destroy();
      return other._request(data).finally(done);
    }
    return new Promise((resolve, reject) => {
      this.pending = { data, resolve, reject, started: false, retried: false };
      this._send();
    });
  }

  async nextInvocation() {
    const res = await this._request(this.nextRequest);
    if (res.status !== 200) {
      throw new Error(`Runtime API /invocation/next answered ${res.status}: ${res.body}`);
    }
    return res;
  }

  /**
   * A staged environment's wait (LAMBDAD_STAGED): lambdad answers once the environment's
   * first invocation arrives, which is when init may run. If the wait fails instead (the
   * connection, another status), init runs at once, as unstaged; /next meets any trouble.
   */
  async waitForWork() {
    await this._request(getRequest('lambdad/wait', this.hostHeader)).catch(() => {});
  }

  _post(pathTail, body, contentType, errorType) {
    let head =
      this.postPrefix +
      pathTail +
      this.postSuffix +
      `Content-Type: ${contentType}\r\nContent-Length: ${Buffer.byteLength(body)}\r\n`;
    if (errorType !== undefined) {
      head += `${ERROR_TYPE_HEADER}: ${String(errorType).replace(/[\r\n]/g, ' ')}\r\n`;
    }
    head += '\r\n';
    // One write per request (a string is written as UTF-8 without an extra copy in JS).
    const data =
      typeof body === 'string' ? head + body : Buffer.concat([Buffer.from(head, 'utf8'), body]);
    return this._request(data);
  }

  postResponse(id, bodyString, contentType = 'application/json') {
    return this._post(`invocation/${encodeURIComponent(id)}/response`, bodyString, contentType);
  }

  postError(id, error) {
    const response = toRapidResponse(error);
    return this._post(
      `invocation/${encodeURIComponent(id)}/error`,
      JSON.stringify(response),
      'application/json',
      response.errorType,
    );
  }

  postInitError(error) {
    const response = toRapidResponse(error);
    const body = JSON.stringify(response);
    return this._post('init/error', body, 'application/json', response.errorType);
  }
}

// ------------------------------------------------------------------------------------------
// Handler loading (AWS's resolution order)
// ------------------------------------------------------------------------------------------

const runtimeDir = process.env.LAMBDA_RUNTIME_DIR;
// Module-not-found messages name the requiring file in their "Require stack"; AWS's runtime
// is /var/runtime/index.mjs, so name <LAMBDA_RUNTIME_DIR>/index.mjs the same way.
const userRequire = createRequire(
  runtimeDir ? path.join(runtimeDir, 'index.mjs') : fileURLToPath(import.meta.url),
);

/** Whether `folder`'s package scope is "type": "module". `quiet` (a look ahead): null where
 * an unreadable package.json would be warned about, which belongs to init's log. */
function hasTypeModule(folder, quiet = false) {
  for (;;) {
    if (folder.endsWith('/node_modules')) return false;
    const pj = path.join(folder, 'package.json');
    if (fs.existsSync(pj)) {
      try {
        const pkg = JSON.parse(fs.readFileSync(pj, 'utf8'));
        if (pkg) return pkg.type === 'module';
      } catch (err) {
        if (quiet) return null;
        console.warn(
          `${pj} cannot be read, it will be ignored for ES module detection purposes.`,
          err,
        );
        return false;
      }
    }
    if (folder === '/' || folder === path.dirname(folder)) return false;
    folder = path.dirname(folder);
  }
}

function requireIfExists(file) {
  return fs.existsSync(file) ? userRequire(file) : undefined;
}

async function importIfExists(file) {
  return fs.existsSync(file) ? await import(pathToFileURL(file).href) : undefined;
}

/**
 * The first module loadModule would load, { file, esm } (esm: by import()), found by the same
 * filesystem checks and resolution, none of which loads anything; null where that fails or
 * would log. What it looked at cannot change before init: the function's code and layers are
 * read-only, and nothing runs in between.
 */
function findModule(appRoot, moduleRoot, moduleName) {
  const base = path.resolve(appRoot, moduleRoot, moduleName);
  if (fs.existsSync(base)) return { file: base, esm: false };
  const typeModule = hasTypeModule(path.dirname(base), true);
  if (typeModule === null) return null;
  if (fs.existsSync(base + '.js')) return { file: base + '.js', esm: typeModule };
  if (fs.existsSync(base + '.mjs')) return { file: base + '.mjs', esm: true };
  if (fs.existsSync(base + '.cjs')) return { file: base + '.cjs', esm: false };
  try {
    return { file: userRequire.resolve(moduleName, { paths: [appRoot, moduleRoot] }), esm: false };
  } catch {
    return null; // (init meets the same error and reports it)
  }
}

/** `found`: findModule's answer, from a staged environment's look ahead. */
async function loadModule(appRoot, moduleRoot, moduleName, found) {
  if (found) {
    // (through the same helpers: an error thrown by the module's code has the same trace)
    const loaded = found.esm ? await importIfExists(found.file) : requireIfExists(found.file);
    if (loaded) return loaded;
    // A module that exported nothing truthy: the search goes on as it would have (loading
    // that one again is a cache hit, as it would also have been).
  }
  const base = path.resolve(appRoot, moduleRoot, moduleName);
  const extensionless = requireIfExists(base);
  if (extensionless) return extensionless;
  const typeModule = hasTypeModule(path.dirname(base));
  if (!typeModule) {
    const loaded = requireIfExists(base + '.js');
    if (loaded) return loaded;
  }
  const loaded =
    (typeModule && (await importIfExists(base + '.js'))) ||
    (await importIfExists(base + '.mjs')) ||
    requireIfExists(base + '.cjs');
  if (loaded) return loaded;
  // Fall back to Node's own resolution from the task root (node_modules, NODE_PATH).
  return userRequire(userRequire.resolve(moduleName, { paths: [appRoot, moduleRoot] }));
}

function installAwsLambdaGlobal() {
  if (['1', 'true'].includes(process.env.AWS_LAMBDA_NODEJS_NO_GLOBAL_AWSLAMBDA)) return;
  globalThis.awslambda = {
    streamifyResponse(handler, options) {
      handler[HANDLER_STREAMING] = STREAM_RESPONSE;
      void options;
      return handler;
    },
    HttpResponseStream: {
      from(stream, prelude) {
        stream.setContentType(HTTP_INTEGRATION_CONTENT_TYPE);
        stream.write(JSON.stringify(prelude));
        stream.write(Buffer.alloc(8));
        return stream;
      },
    },
  };
}

/** The handler string's parts, { moduleRoot, moduleName, handlerPath }; null if malformed. */
function handlerParts(fullHandler) {
  if (fullHandler.includes('..')) return null;
  const handlerString = path.basename(fullHandler);
  const moduleRoot = fullHandler.substring(0, fullHandler.indexOf(handlerString));
  const match = handlerString.match(/^([^.]*)\.(.*)$/);
  if (!match) return null;
  const [, moduleName, handlerPath] = match;
  return { moduleRoot, moduleName, handlerPath };
}

/** `found`: findModule's answer for this handler, if a staged environment looked ahead. */
async function loadHandler(appRoot, fullHandler, found = null) {
  if (fullHandler.includes('..')) {
    throw new MalformedHandlerName(
      `'${fullHandler}' is not a valid handler name. Use absolute paths when specifying root ` +
        'directories in handler names.',
    );
  }
  const parts = handlerParts(fullHandler);
  if (!parts) throw new MalformedHandlerName('Bad handler');
  const { moduleRoot, moduleName, handlerPath } = parts;
  installAwsLambdaGlobal();
  let app;
  try {
    app = await loadModule(appRoot, moduleRoot, moduleName, found);
  } catch (err) {
    if (err instanceof SyntaxError) throw new UserCodeSyntaxError(String(err));
    if (err && err.code === 'MODULE_NOT_FOUND') throw new ImportModuleError(String(err));
    throw err;
  }
  const fn = handlerPath.split('.').reduce((obj, key) => obj && obj[key], app);
  if (!fn) throw new HandlerNotFound(`${fullHandler} is undefined or not exported`);
  if (typeof fn !== 'function') throw new HandlerNotFound(`${fullHandler} is not a function`);
  return fn;
}

// ------------------------------------------------------------------------------------------
// Invocation
// ------------------------------------------------------------------------------------------

let exitListener = null; // what to do when the event loop empties during an invocation

// _X_AMZN_TRACE_ID, set for each invocation as AWS's runtime sets it. Assigning process.env
// ends in glibc's setenv, which keeps every value the variable ever had (~140 bytes an
// invocation for the life of the environment): lambdad's addon (lambdad_env.c, built by
// build.py) rewrites one buffer handed to putenv instead. Without the addon, process.env.
const traceIdSetter = (() => {
  try {
    const addon = createRequire(import.meta.url)('./build/lambdad_env.node');
    return (value) => addon.setTraceId(value);
  } catch {
    return () => false;
  }
})();

export function setTraceId(trace) {
  if (!trace) delete process.env._X_AMZN_TRACE_ID;
  else if (!traceIdSetter(trace)) process.env._X_AMZN_TRACE_ID = trace;
}

function parseJsonHeader(value, name) {
  if (value === undefined) return undefined;
  try {
    return JSON.parse(value);
  } catch (err) {
    throw new Error(`Cannot parse ${name} as json: ${err.toString()}`);
  }
}

function serialize(result) {
  try {
    return JSON.stringify(result === undefined ? null : result);
  } catch {
    throw new Error('Unable to stringify response body');
  }
}

function makeResponseStream() {
  const chunks = [];
  let contentType = 'application/octet-stream';
  let ended = false;
  const stream = {
    setContentType(type) {
      contentType = type;
    },
    write(chunk, encoding, cb) {
      if (typeof encoding === 'function') cb = encoding;
      const enc = typeof encoding === 'string' ? encoding : 'utf8';
      chunks.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk, enc));
      if (cb) process.nextTick(cb);
      return true;
    },
    end(chunk, encoding, cb) {
      if (typeof chunk === 'function') [chunk, cb] = [undefined, chunk];
      if (chunk !== undefined && chunk !== null) stream.write(chunk, encoding);
      ended = true;
      if (typeof cb === 'function') process.nextTick(cb);
    },
    on() {
      return stream;
    },
    once() {
      return stream;
    },
    get writableFinished() {
      return ended;
    },
  };
  return {
    stream,
    contentType: () => contentType,
    body: () => Buffer.concat(chunks),
    ended: () => ended,
  };
}

function staticContext() {
  const env = process.env;
  return {
    functionVersion: env.AWS_LAMBDA_FUNCTION_VERSION,
    functionName: env.AWS_LAMBDA_FUNCTION_NAME,
    memoryLimitInMB: env.AWS_LAMBDA_FUNCTION_MEMORY_SIZE,
    logGroupName: env.AWS_LAMBDA_LOG_GROUP_NAME,
    logStreamName: env.AWS_LAMBDA_LOG_STREAM_NAME,
  };
}

/** What invoke() needs to know of a handler. */
function handlerMeta(handler) {
  return {
    isAsync: handler.constructor && handler.constructor.name === 'AsyncFunction',
    streaming: handler[HANDLER_STREAMING] === STREAM_RESPONSE,
  };
}

/** Run one invocation; resolves once its outcome has been posted. */
function invoke(client, handler, meta, staticData, res, fatal) {
  return new Promise((settled) => {
    const headers = res.headers;
    const id = headers['lambda-runtime-aws-request-id'];
    currentRequestId = id;
    let finished = false; // a callback/succeed/fail/done was already used
    let reported = false; // the outcome was already posted
    let context = null;

    const postError = (err) => {
      logErrorStructured('Invoke Error', err);
      client.postError(id, err).then(() => settled(), fatal);
    };
    const complete = (result) => {
      if (reported) {
        console.error(
          'Invocation has already been reported as done. ' +
            'Cannot call complete more than once per invocation.',
        );
        return;
      }
      reported = true;
      let body;
      try {
        body = serialize(result);
      } catch (err) {
        postError(err);
        return;
      }
      client.postResponse(id, body).then(() => settled(), fatal);
    };
    const once =
      (fn) =>
      (...args) => {
        if (!finished) {
          fn(...args);
          finished = true;
        }
      };
    const callback = once((err, result) => {
      exitListener = null;
      if (err !== undefined && err !== null) postError(err);
      else if (context && !context.callbackWaitsForEmptyEventLoop) complete(result);
      else exitListener = () => setImmediate(() => complete(result));
    });
    const done = (err, result) => {
      exitListener = null;
      if (err !== undefined && err !== null) postError(err);
      else complete(result);
    };
    const succeed = once((result) => done(null, result));
    const fail = once((err) =>
      err === undefined || err === null ? done('handled') : done(err, null),
    );

    errorCallbacks.uncaughtException = (err) => {
      client.postError(id, err).then(
        () => process.exit(129),
        () => process.exit(129),
      );
    };
    errorCallbacks.unhandledRejection = (err) => {
      client.postError(id, err).then(
        () => process.exit(128),
        () => process.exit(128),
      );
    };
    // The loop emptied before any callback: async handlers fail, others answer null.
    exitListener = () => {
      reported = true;
      if (meta.isAsync) {
        const err = new NodeJsExit(NODEJS_EXIT_MESSAGE);
        logErrorStructured('Invoke Error', err);
        client.postError(id, err).then(() => settled(), fatal);
      } else {
        client.postResponse(id, 'null').then(() => settled(), fatal);
      }
    };

    try {
      setTraceId(headers['lambda-runtime-trace-id']);
      const deadline = Number(headers['lambda-runtime-deadline-ms']);
      context = {
        callbackWaitsForEmptyEventLoop: true,
        succeed,
        fail,
        done: once(done),
        functionVersion: staticData.functionVersion,
        functionName: staticData.functionName,
        memoryLimitInMB: staticData.memoryLimitInMB,
        logGroupName: staticData.logGroupName,
        logStreamName: staticData.logStreamName,
        clientContext: parseJsonHeader(headers['lambda-runtime-client-context'], 'ClientContext'),
        identity: parseJsonHeader(headers['lambda-runtime-cognito-identity'], 'CognitoIdentity'),
        invokedFunctionArn: headers['lambda-runtime-invoked-function-arn'],
        awsRequestId: id,
        tenantId: headers['lambda-runtime-aws-tenant-id'],
        getRemainingTimeInMillis: () => deadline - Date.now(),
      };
      const event = JSON.parse(res.body.toString('utf8'));
      if (meta.streaming) {
        invokeStreaming(client, handler, event, context, id, settled, fatal, postError);
        return;
      }
      const result = handler(event, context, callback);
      if (result && typeof result.then === 'function') {
        result.then(succeed, fail).catch(fail);
      }
    } catch (err) {
      callback(err);
    }
  });
}

/** Response-streaming handlers, buffered: the whole stream is posted once it ends. */
function invokeStreaming(client, handler, event, context, id, settled, fatal, postError) {
  exitListener = () => postError(new NodeJsExit(NODEJS_EXIT_MESSAGE));
  const rs = makeResponseStream();
  let result;
  try {
    result = handler(event, rs.stream, context);
  } catch (err) {
    postError(err);
    return;
  }
  if (!result || typeof result.then !== 'function') {
    postError(new Error('Streaming does not support non-async handlers.'));
    return;
  }
  result.then(
    () => {
      if (!rs.ended()) {
        postError(new Error('Response stream is not finished.'));
        return;
      }
      client.postResponse(id, rs.body(), rs.contentType()).then(() => settled(), fatal);
    },
    (err) => postError(err),
  );
}

// ------------------------------------------------------------------------------------------
// A staged environment's work ahead of its wait
// ------------------------------------------------------------------------------------------
//
// Init (loading the handler's module) must wait for the first invocation, but nothing that
// runs none of the function's code has to: the handler's file is found, and the first-use
// costs of Node's module loaders and of this file's invocation path are paid on the
// bootstrap's own modules and a stand-in handler, so that they are off the first invocation
// (its Init Duration and Duration). Nothing reaches the function's log or the Runtime API.

// A module of the bootstrap's own for each loader. The CommonJS one is compiled as require()
// compiles a file, under a name beside this file (nothing is read from it); and a require() of
// the bootstrap's own (not userRequire: the function's module sees its parent's children)
// loads /dev/null, an empty module, then forgotten, for require()'s path of a new file.
const WARM_ESM = 'data:text/javascript,export%20default%20JSON.stringify(%7Bwarm%3A1%7D)%3B';
const WARM_CJS_SOURCE =
  "'use strict';\nmodule.exports = { sep: require('node:path').sep, file: __filename };\n";

function warmCommonJs() {
  const file = path.join(path.dirname(fileURLToPath(import.meta.url)), 'lambdad-warm.cjs');
  const warm = new Module(file, null);
  warm.filename = file;
  warm.paths = [];
  warm._compile(WARM_CJS_SOURCE, file);
  const warmRequire = createRequire(file);
  const empty = warmRequire.resolve('/dev/null');
  warmRequire(empty);
  delete warmRequire.cache[empty];
}

async function warmEsModules() {
  await import(WARM_ESM);
  // loadHandler itself, by import() of this very module: a hit in the loader's cache, nothing
  // is read or run again (only if its URL is the one it was loaded by, so that it is that
  // hit). The awslambda global it installs goes until init.
  const here = fileURLToPath(import.meta.url);
  if (pathToFileURL(here).href !== import.meta.url) return;
  const installed = Object.getOwnPropertyDescriptor(globalThis, 'awslambda');
  try {
    await loadHandler(path.dirname(here), 'bootstrap.setTraceId', { file: here, esm: true });
  } finally {
    if (installed) Object.defineProperty(globalThis, 'awslambda', installed);
    else delete globalThis.awslambda;
  }
}

// Modules preloaded by NODE_OPTIONS are the function's, and may have hooked the loaders (ESM
// hooks, a patched require): then the loaders meet only the function's own modules, at init.
const PRELOADS = /(^|\s)(-r|--require|--import|--(experimental-)?loader)(\s|=|$)/;

function loadersHooked() {
  return PRELOADS.test(process.env.NODE_OPTIONS || '') || PRELOADS.test(process.execArgv.join(' '));
}

/** The handler's module file found ahead, as its loader will meet it: resolved (CommonJS, as
 * require() resolves it, cached) and read (through the OS cache). Nothing is evaluated. */
async function warmModuleFile(found) {
  if (!path.isAbsolute(found.file)) return; // a module of Node's own (the resolution's fallback)
  if (found.esm) {
    await import.meta.resolve?.(pathToFileURL(found.file).href); // (a promise on Node 18)
    await fs.promises.readFile(found.file); // (as the ES module loader reads it)
  } else {
    userRequire.resolve(found.file);
    fs.readFileSync(found.file, 'utf8');
  }
}

const WARM_EVENT = '{"warm":true,"n":[1,2.5,"x"],"o":{"k":"v"},"s":"\\u00e9"}';

/** A Runtime API client with canned answers: an event for /next, 202 for posts. */
function cannedClient() {
  const client = new RuntimeClient(process.env.AWS_LAMBDA_RUNTIME_API || '127.0.0.1:9001');
  const sock = { ref() {}, unref() {}, destroy() {} };
  const event = Buffer.from(WARM_EVENT);
  client._send = function () {
    let answer = 'HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\n';
    let body = Buffer.from('{"status":"OK"}');
    if (this.pending.data === this.nextRequest) {
      answer =
        'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n' +
        'Lambda-Runtime-Aws-Request-Id: 00000000-0000-4000-8000-000000000000\r\n' +
        `Lambda-Runtime-Deadline-Ms: ${Date.now() + 3000}\r\n` +
        'Lambda-Runtime-Invoked-Function-Arn: arn:aws:lambda:us-east-1:0:function:w\r\n' +
        'Lambda-Runtime-Trace-Id: Root=1-00000000-000000000000000000000000;Sampled=0\r\n';
      body = event;
    }
    answer += `Content-Length: ${body.length}\r\n\r\n`;
    this.sock = sock;
    this._onData(sock, Buffer.concat([Buffer.from(answer, 'latin1'), body]));
  };
  return client;
}

/** Stand-in handlers' invocations through invoke(), each a function that runs one: answered
 * (and logging), failing, then both again (V8 compiles a regular expression to machine code on
 * its second use). The console's lines go to `logFd`, which the caller points elsewhere. */
function warmInvocations() {
  const client = cannedClient();
  const staticData = staticContext();
  const answered = async (event, context) => {
    console.log('warm', event);
    return { event, id: context.awsRequestId, left: context.getRemainingTimeInMillis() };
  };
  const failing = () => {
    throw new TypeError('warm');
  };
  return [answered, failing, answered, failing].map((handler) => async () => {
    const res = await client.nextInvocation();
    await invoke(client, handler, handlerMeta(handler), staticData, res, () => {});
  });
}

/**
 * What a staged environment does before its wait (`waited`, asked already): find the handler's
 * module (findModule's answer, or null) and warm up. Whatever fails here is left for init to
 * meet and report as before (a warm-up step's own trouble only skips that step); the state
 * invoke() sets is put back. An invocation that arrives meanwhile stops the warm-up at its
 * next step: init is not kept waiting for the rest.
 */
async function prepare(appRoot, fullHandler, waited) {
  let answered = false;
  waited.then(() => {
    answered = true;
  });
  let found = null;
  try {
    const parts = handlerParts(fullHandler); // (null, malformed: reported by init)
    if (parts) found = findModule(appRoot, parts.moduleRoot, parts.moduleName);
  } catch {
    // (init meets it)
  }
  const hooked = loadersHooked();
  const saved = { ...errorCallbacks, trace: process.env._X_AMZN_TRACE_ID };
  const steps = [
    () => !hooked && warmCommonJs(),
    () => !hooked && warmEsModules(),
    () => !hooked && found && warmModuleFile(found),
  ];
  let scratch = null; // the console's lines, formatted and dropped (none without it)
  try {
    scratch = fs.openSync('/dev/null', 'w');
    steps.push(...warmInvocations());
  } catch {
    // (only the invocations are left out)
  }
  try {
    if (scratch !== null) logFd = scratch;
    for (const step of steps) {
      // A turn of the event loop first: the question goes out, and an answer that is there
      // already is seen (most steps' own work runs none). Resumed from the tick queue, as
      // after a socket's data: an init error's trace is the same as after the wait.
      await new Promise((resolve) => setImmediate(() => process.nextTick(resolve)));
      if (answered) break;
      try {
        await step();
      } catch {
        // (the warm-up's own trouble: none of the function's code ran)
      }
    }
  } finally {
    logFd = 1;
    if (scratch !== null) fs.closeSync(scratch);
    currentRequestId = undefined;
    exitListener = null;
    errorCallbacks.uncaughtException = saved.uncaughtException;
    errorCallbacks.unhandledRejection = saved.unhandledRejection;
    if (saved.trace === undefined) delete process.env._X_AMZN_TRACE_ID;
    else process.env._X_AMZN_TRACE_ID = saved.trace;
  }
  return found;
}

// ------------------------------------------------------------------------------------------
// Main
// ------------------------------------------------------------------------------------------

const errorCallbacks = { uncaughtException: null, unhandledRejection: null };

function fatal(err) {
  writeAll(2, `lambdad bootstrap: lost the Runtime API: ${err && err.stack ? err.stack : err}\n`);
  process.exit(1);
}

// Whether lambdad built this environment ahead of its first invocation (staged). The variable
// is lambdad's: it goes before any of the function's code could see it.
function takeStagedFlag() {
  const staged = process.env.LAMBDAD_STAGED === '1';
  delete process.env.LAMBDAD_STAGED;
  return staged;
}

async function main() {
  const staged = takeStagedFlag();
  patchConsole();
  const client = new RuntimeClient(process.env.AWS_LAMBDA_RUNTIME_API);
  const initFailed = (code) => (err) => {
    client.postInitError(err).then(
      () => process.exit(code),
      () => process.exit(code),
    );
  };
  errorCallbacks.uncaughtException = initFailed(129);
  errorCallbacks.unhandledRejection = initFailed(128);
  process.on('uncaughtException', (err) => {
    logErrorStructured('Uncaught Exception', err);
    errorCallbacks.uncaughtException(err);
  });
  process.on('unhandledRejection', (reason, promise) => {
    const err = new UnhandledPromiseRejection(reason, promise);
    logErrorStructured('Unhandled Promise Rejection', err);
    errorCallbacks.unhandledRejection(err);
  });
  process.on('beforeExit', () => {
    const listener = exitListener;
    exitListener = null;
    if (listener) listener();
  });

  // Staged: everything above is set up ahead, and so is all that runs none of the function's
  // code (prepare), but loading the handler is the function's init, which must run for (and
  // be timed from) the invocation that takes the environment. The wait is asked first, so an
  // invocation that is already there is not kept waiting for the question.
  const appRoot = process.env.LAMBDA_TASK_ROOT || process.cwd();
  const fullHandler = process.env._HANDLER || '';
  let found = null;
  if (staged) {
    const waited = client.waitForWork();
    found = await prepare(appRoot, fullHandler, waited);
    await waited;
  }

  let handler;
  try {
    handler = await loadHandler(appRoot, fullHandler, found);
  } catch (err) {
    logErrorStructured('Uncaught Exception', err);
    await client.postInitError(err).catch(() => {});
    process.exit(129);
  }
  const meta = handlerMeta(handler);
  const staticData = staticContext();
  for (;;) {
    const res = await client.nextInvocation().catch(fatal);
    await invoke(client, handler, meta, staticData, res, fatal);
  }
}

// Run when started as the runtime (not when imported, e.g. by a test of setTraceId).
const entry = process.argv[1] ? fs.realpathSync(process.argv[1]) : '';
if (entry === fs.realpathSync(fileURLToPath(import.meta.url))) main();
