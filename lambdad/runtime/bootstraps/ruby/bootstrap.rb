# frozen_string_literal: true

# lambdad's in-environment bootstrap for the managed Ruby runtimes (ruby3.2, ruby3.3, ruby3.4,
# all mapped to the Ruby that is installed).
#
# It speaks the Lambda Runtime API (2018-06-01) as a client, the way AWS's Ruby runtime
# (aws_lambda_ric) does: require the file named by _HANDLER, then loop forever fetching the
# next invocation, calling the handler with the keyword arguments event: and context:, and
# posting the result or the error. Init failures go to /runtime/init/error and the process
# exits.
#
# What it copies from AWS's Ruby runtime, so that functions behave the same:
#
# * handlers "file.method" (a top-level method) and "file.Module::Class.method" (a class or
#   module method); anything else is an init error (Init<ArgumentError>);
# * events of content type application/json are JSON.parse'd, others are handed over as the
#   raw string; results are serialised with #to_json, an IO/StringIO result is sent raw as
#   application/unknown; AwsLambda::Marshaller may be reopened to change either;
# * errors are {"errorMessage", "errorType", "stackTrace"} with errorType "Function<Class>"
#   (handler), "Init<Class>" (loading the handler file) or "Runtime<Class>"; the
#   Lambda-Runtime-Function-Error-Type header is that type for a few core classes and
#   "Function<UserException>" otherwise. A StandardError keeps the environment alive; a
#   NameError/NoMethodError (a missing handler method included) or a non-StandardError
#   exception (SystemExit...) is posted and then the process exits (status 255), as AWS's;
# * the context object (LambdaContext) with AWS's attribute names, Logger lines to
#   $stdout/$stderr carrying the request id, $stdout.sync = true.
#
# A staged environment (LAMBDAD_STAGED) waits for its first invocation before it requires the
# handler file (that is the function's init); what runs none of the function's code is done
# before the wait: the handler string parsed and its file found, Fiddle loaded, and the
# invocation path run once on a handler of the bootstrap's own (see ahead_of_wait).
#
# Stdlib only, Ruby 3.1 to 3.4. One persistent keep-alive HTTP/1.1 connection over a raw TCP
# socket with TCP_NODELAY and a minimal hand-written request writer and response parser:
# net/http would cost ~30 ms more at start-up and more per invocation.
#
# Launch: ruby bootstrap.rb   (with AWS_LAMBDA_RUNTIME_API, _HANDLER, LAMBDA_TASK_ROOT...)
# Requiring this file only defines things; LambdadBootstrap.main runs the runtime.

require 'json'
require 'logger'
require 'socket'
require 'stringio'

# AWS's runtime exposes its (de)serialisation hooks under this name; functions may reopen it.
module AwsLambda
  class Marshaller
    class << self
      # The event handed to the handler: parsed JSON, or the raw body for other content types.
      def marshall_request(raw_request)
        content_type = raw_request['Content-Type']
        if content_type.nil? || content_type.start_with?('application/json')
          JSON.parse(raw_request.body)
        else
          raw_request.body
        end
      end

      # A JSON string, or [io, 'application/unknown'] for a response to send unformatted.
      def marshall_response(method_response)
        case method_response
        when StringIO, IO
          [method_response, 'application/unknown']
        else
          method_response.to_json
        end
      end
    end
  end
end

# The context argument handed to the handler (AWS's class name and attribute names).
class LambdaContext
  attr_reader :aws_request_id, :invoked_function_arn, :log_group_name, :log_stream_name,
              :function_name, :memory_limit_in_mb, :function_version, :identity,
              :client_context, :deadline_ms, :tenant_id

  def initialize(request_id, deadline_ms, invoked_function_arn, identity, client_context,
                 tenant_id, static)
    @clock_diff = Process.clock_gettime(Process::CLOCK_REALTIME, :millisecond) -
                  Process.clock_gettime(Process::CLOCK_MONOTONIC, :millisecond)
    @deadline_ms = deadline_ms
    @aws_request_id = request_id
    @invoked_function_arn = invoked_function_arn
    @log_group_name, @log_stream_name, @function_name, @memory_limit_in_mb,
      @function_version = static
    @identity = identity
    @client_context = client_context
    @tenant_id = tenant_id
  end

  def get_remaining_time_in_millis # rubocop:disable Naming/AccessorMethodName
    remaining = @deadline_ms - (Process.clock_gettime(Process::CLOCK_MONOTONIC, :millisecond) +
                                @clock_diff)
    remaining.positive? ? remaining : 0
  end
end

module LambdadBootstrap
  API_VERSION = '2018-06-01'
  ERROR_TYPE_HEADER = 'Lambda-Runtime-Function-Error-Type'
  THIS_FILE = File.expand_path(__FILE__)
  # This file's names as backtraces may spell them (a symlinked launch path included).
  THIS_FILES = [THIS_FILE, File.realpath(__FILE__)].uniq.freeze
  MAX_TRACE = 100
  # Error classes whose type AWS's runtime puts in the error-type header as is.
  HEADER_SAFE_CLASSES = %w[ArgumentError NoMethodError Exception StandardError NameError
                           LoadError SystemExit SystemStackError].freeze
  URL_SAFE = /\A[A-Za-z0-9\-._~]*\z/.freeze
  EMPTY = ''.b.freeze
  ERROR_LOG = 'Error raised from handler method'
  CRITICAL_LOG = 'Critical exception from handler'
  KERNEL_METHOD = Kernel.instance_method(:method) # an exception may define its own #method
  MAIN_OBJECT = TOPLEVEL_BINDING.receiver # where a "file.method" handler's method is defined

  # The Runtime API went away (the environment is being torn down).
  class ConnectionLost < StandardError
    attr_reader :partial

    def initialize(partial)
      super('Runtime API connection closed by the server')
      @partial = partial
    end
  end

  # The Runtime API answered /invocation/next with something other than an event.
  class ApiError < StandardError; end

  # What /invocation/next answered; quacks like the Net::HTTPResponse AWS's marshaller gets.
  class RawRequest
    attr_reader :headers, :body

    def initialize(headers, body)
      @headers = headers
      @body = body
    end

    def [](name)
      @headers[name.downcase]
    end
  end

  # A minimal HTTP/1.1 client bound to one keep-alive connection to the Runtime API.
  class RuntimeClient
    attr_reader :address

    def initialize(address)
      @address = address
      host, _, port = address.rpartition(':')
      host = host.delete_prefix('[').delete_suffix(']')
      @host = host.empty? ? '127.0.0.1' : host
      @port = Integer(port, 10)
      @sock = nil
      @buf = String.new(encoding: Encoding::BINARY)
      agent = "aws-lambda-ruby/#{RUBY_VERSION}-lambdad"
      prefix = "/#{API_VERSION}/runtime"
      @next_request = "GET #{prefix}/invocation/next HTTP/1.1\r\nHost: #{address}\r\n" \
                      "User-Agent: #{agent}\r\n\r\n".b.freeze
      @wait_request = "GET #{prefix}/lambdad/wait HTTP/1.1\r\nHost: #{address}\r\n" \
                      "User-Agent: #{agent}\r\n\r\n".b.freeze
      @post_head = "POST #{prefix}/%s HTTP/1.1\r\nHost: #{address}\r\nUser-Agent: #{agent}\r\n" \
                   "Content-Type: %s\r\nContent-Length: %d\r\n"
    end

    def close
      sock = @sock
      @sock = nil
      @buf = String.new(encoding: Encoding::BINARY)
      sock&.close
    rescue IOError, SystemCallError
      nil
    end

    # -> [headers (lower-case names), body (binary)]
    def next_invocation
      status, headers, body = exchange(@next_request, nil)
      unless status == 200
        raise ApiError, "Runtime API /invocation/next answered #{status}: #{body.byteslice(0, 200)}"
      end

      [headers, body]
    end

    # A staged environment's wait (LAMBDAD_STAGED): lambdad answers GET /runtime/lambdad/wait
    # when the environment's first invocation arrives, and its init may run then. Any failure
    # (the connection, another status) ends the wait: init runs, and /next meets it again.
    def wait_for_invocation
      exchange(@wait_request, nil)[0] == 200
    rescue StandardError
      false
    end

    def post_response(request_id, body, content_type)
      post("invocation/#{quote(request_id)}/response", body, content_type, nil)
    end

    def post_error(request_id, body, error_type)
      post("invocation/#{quote(request_id)}/error", body, 'application/json', error_type)
    end

    def post_init_error(body, error_type)
      post('init/error', body, 'application/json', error_type)
    end

    private

    def post(path, body, content_type, error_type)
      head = format(@post_head, path, content_type, body.bytesize)
      head << "#{ERROR_TYPE_HEADER}: #{error_type.tr("\r\n", '  ')}\r\n" if error_type
      head << "\r\n"
      exchange(head.b, body)[0]
    end

    def quote(value)
      return value if URL_SAFE.match?(value)

      value.b.gsub(/[^A-Za-z0-9\-._~]/n) { |c| format('%%%02X', c.ord) }
    end

    def connect
      sock = TCPSocket.new(@host, @port)
      sock.setsockopt(Socket::IPPROTO_TCP, Socket::TCP_NODELAY, 1)
      sock.sync = true
      @buf = String.new(encoding: Encoding::BINARY)
      @sock = sock
    end

    # Send one request and read its response, reconnecting once if the server had closed
    # the idle keep-alive connection.
    def exchange(head, body)
      attempt = 0
      begin
        sock = @sock || connect
        if body.nil? || body.empty?
          sock.write(head)
        else
          sock.write(head, body)
        end
        read_response(sock)
      rescue ConnectionLost => e
        close
        attempt += 1
        retry if attempt == 1 && !e.partial
        raise
      rescue Errno::EPIPE, Errno::ECONNRESET, Errno::ECONNABORTED, IOError
        close
        attempt += 1
        retry if attempt == 1
        raise ConnectionLost, true
      end
    end

    def fill(sock)
      @buf << sock.readpartial(65_536)
      true
    rescue EOFError, Errno::ECONNRESET, Errno::ECONNABORTED
      false
    end

    def read_response(sock)
      until (eoh = @buf.index("\r\n\r\n"))
        raise ConnectionLost, !@buf.empty? unless fill(sock)
      end
      lines = @buf.byteslice(0, eoh).force_encoding(Encoding::UTF_8).split("\r\n")
      @buf = @buf.byteslice(eoh + 4, @buf.bytesize) || String.new(encoding: Encoding::BINARY)
      status = lines[0].split(' ', 3)[1].to_i
      headers = {}
      lines.each_with_index do |line, i|
        next if i.zero?

        name, value = line.split(':', 2)
        headers[name.strip.downcase] = value ? value.strip : ''
      end
      return read_response(sock) if status >= 100 && status < 200 # interim: the real one follows

      length = headers['content-length']
      body =
        if length
          read_exact(sock, length.to_i)
        elsif headers['transfer-encoding'].to_s.downcase.include?('chunked')
          read_chunked(sock)
        elsif status == 204 || status == 304
          EMPTY
        else # delimited by the end of the connection
          nil while fill(sock)
          headers['connection'] = 'close'
          rest = @buf
          @buf = String.new(encoding: Encoding::BINARY)
          rest
        end
      close if headers['connection'].to_s.downcase == 'close'
      [status, headers, body]
    end

    def read_exact(sock, size)
      raise ConnectionLost, true while @buf.bytesize < size && !fill(sock)
      out = @buf.byteslice(0, size)
      @buf = @buf.byteslice(size, @buf.bytesize) || String.new(encoding: Encoding::BINARY)
      out
    end

    def read_line(sock)
      until (eol = @buf.index("\r\n"))
        raise ConnectionLost, true unless fill(sock)
      end
      line = @buf.byteslice(0, eol)
      @buf = @buf.byteslice(eol + 2, @buf.bytesize)
      line
    end

    def read_chunked(sock)
      body = String.new(encoding: Encoding::BINARY)
      loop do
        size = read_line(sock).split(';', 2)[0].strip.to_i(16)
        if size.zero?
          nil until read_line(sock).empty? # trailers, then the blank line ending the message
          return body
        end
        body << read_exact(sock, size + 2).byteslice(0, size)
      end
    end
  end

  # A staged environment's warm-up, before its wait: a client that talks to no one. Its
  # exchange parses a canned answer (an event for /invocation/next, Accepted for a post)
  # through the real parser; everything else (requests built, responses read) is the real
  # client's code.
  class ScratchClient < RuntimeClient
    EVENT = '{"s":"h\u00e9llo \u2603","n":[1,2.5,null,true,false],"o":{"k":"v"}}'
    NEXT = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" \
           "Lambda-Runtime-Aws-Request-Id: 00000000-0000-0000-0000-000000000000\r\n" \
           "Lambda-Runtime-Deadline-Ms: 0\r\n" \
           "Lambda-Runtime-Invoked-Function-Arn: arn:aws:lambda:us-east-1:0:function:f\r\n" \
           "Lambda-Runtime-Client-Context: {\"custom\":{}}\r\n" \
           "Lambda-Runtime-Cognito-Identity: {\"cognitoIdentityId\":\"\"}\r\n" \
           "Content-Length: %d\r\n\r\n%s"
    ACCEPTED = "HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\n" \
               "Content-Length: 15\r\n\r\n{\"status\":\"OK\"}"

    def initialize(address, event)
      super(address)
      @event = event.b
    end

    private

    def exchange(head, _body)
      canned = head.start_with?('GET') ? format(NEXT, @event.bytesize, @event) : ACCEPTED
      read_response(StringIO.new(canned.b))
    end
  end

  # The warm-up's trace variable: left alone (TraceIdVariable#rehearse warms the real one).
  NO_TRACE = Object.new
  def NO_TRACE.set(_value); end

  # What a staged environment found and built before its wait (see ahead_of_wait).
  Ahead = Struct.new(:handler, :feature, :trace)

  # The handler the warm-up invokes, as a function's would be: the context read, a Logger
  # line and a puts (into a scratch $stdout), its event echoed, or raised on.
  module Rehearsal
    class Failure < StandardError; end

    def self.handler(event:, context:)
      raise Failure, 'rehearsed' if event['fail']

      Logger.new($stdout).info('rehearsed')
      puts context.aws_request_id
      { event: event, remaining: context.get_remaining_time_in_millis,
        function: context.function_name, arn: context.invoked_function_arn }
    end
  end

  # An exception on its way to the Runtime API, classified the way AWS's runtime does.
  # _X_AMZN_TRACE_ID, set for each invocation as AWS's runtime sets it, but not through ENV[]=
  # (glibc's setenv, which keeps every value a variable ever had: ~100 bytes an invocation for
  # the life of the environment). One buffer, handed to putenv (the C environment then points
  # at it), is rewritten in place. Without Fiddle, ENV[]= as before.
  class TraceIdVariable
    NAME = '_X_AMZN_TRACE_ID'
    SIZE = 512

    def initialize
      require 'fiddle'
      @putenv = Fiddle::Function.new(Fiddle.dlopen(nil)['putenv'], [Fiddle::TYPE_VOIDP],
                                     Fiddle::TYPE_INT)
      @buffer = Fiddle::Pointer.malloc(SIZE, Fiddle::RUBY_FREE)
    rescue LoadError, StandardError # no Fiddle, or no putenv to find
      @putenv = nil
    end

    def set(value)
      if value.nil?
        ENV.delete(NAME) # unsetenv drops the pointer and frees nothing: fine
        return
      end
      text = "#{NAME}=#{value}\0"
      if @putenv.nil? || text.bytesize > SIZE
        ENV[NAME] = value
        return
      end
      @buffer[0, text.bytesize] = text
      @putenv.call(@buffer) unless ENV[NAME] == value # not ours (first time, or changed)
    end

    # A staged environment's warm-up, before its wait: the variable set once (putenv's first
    # call) and unset, if it is not set; the function's init finds it as it was.
    def rehearse
      return if ENV.key?(NAME)

      set('Root=1-00000000-000000000000000000000000;Parent=0000000000000000;Sampled=0')
      set(nil)
    end
  end

  class LambdaError
    attr_reader :error_type

    def initialize(error, classification)
      @error_class = error.class.to_s
      @error_type = "#{classification}<#{error.class}>"
      @error_message = LambdadBootstrap.message_of(error)
      @stack_trace = LambdadBootstrap.stack_trace_of(error)
    end

    # The error type header: AWS names only a few core classes there.
    def runtime_error_type
      HEADER_SAFE_CLASSES.include?(@error_class) ? @error_type : 'Function<UserException>'
    end

    def to_lambda_response
      { errorMessage: @error_message, errorType: @error_type, stackTrace: @stack_trace }
    end
  end

  # Logger lines to $stdout/$stderr as AWS's runtime writes them: with the request id.
  class LogFormatter < ::Logger::Formatter
    LINE = "%s, [%s #%d] %5s %s -- %s: %s\n"

    def call(severity, time, progname, msg)
      text = format(LINE, severity[0], format_datetime(time), Process.pid, severity,
                    $_global_aws_request_id, progname, msg2str(msg))
      LambdadBootstrap.utf8(text)
    end
  end

  # AWS_LAMBDA_LOG_FORMAT=JSON: one JSON object per Logger record.
  class JsonLogFormatter < ::Logger::Formatter
    def call(severity, time, progname, msg)
      payload = {
        timestamp: time.utc.strftime('%Y-%m-%dT%H:%M:%S.%6NZ'),
        level: severity,
        message: LambdadBootstrap.utf8(msg.is_a?(Exception) ? msg.message : msg2str(msg)),
        requestId: $_global_aws_request_id
      }
      payload[:logger] = LambdadBootstrap.utf8(progname) unless progname.nil? || progname == ''
      if msg.is_a?(Exception)
        payload[:errorType] = msg.class.to_s
        payload[:errorMessage] = LambdadBootstrap.utf8(msg.message)
        payload[:stackTrace] = Array(msg.backtrace).map { |l| LambdadBootstrap.utf8(l) }
      end
      "#{JSON.generate(payload.compact)}\n"
    end
  end

  # Loggers writing to $stdout or $stderr get the Lambda formatter unless given their own.
  module LoggerPatch
    def initialize(*args, **kwargs, &block)
      super
      dev = args[0]
      return unless dev.equal?($stdout) || dev.equal?($stderr) ||
                    dev.equal?(STDOUT) || dev.equal?(STDERR)

      formatter = LambdadBootstrap.log_formatter_class.new
      formatter.datetime_format = @default_formatter&.datetime_format
      @default_formatter = formatter
    end
  end

  class << self
    attr_reader :log_formatter_class

    def utf8(value)
      str = value.to_s
      str = str.dup.force_encoding(Encoding::UTF_8) unless str.encoding == Encoding::UTF_8
      str.valid_encoding? ? str : str.scrub("\uFFFD")
    end

    # Exception#message as Ruby 3.2+ gives it: Ruby 3.1's error_highlight and did_you_mean
    # append their hints to the message itself (3.2+ moved them to #detailed_message).
    def message_of(error)
      if RUBY_VERSION < '3.2' && KERNEL_METHOD.bind_call(error, :message).owner == Exception
        meth = KERNEL_METHOD.bind_call(error, :to_s)
        while (owner = meth.owner.name) &&
              (owner.start_with?('ErrorHighlight') || owner.start_with?('DidYouMean')) &&
              (parent = meth.super_method)
          meth = parent
        end
        utf8(meth.call)
      else
        utf8(error.message)
      end
    rescue Exception # rubocop:disable Lint/RescueException
      begin
        utf8(error.message)
      rescue Exception # rubocop:disable Lint/RescueException
        "<unprintable #{error.class} object>"
      end
    end

    # The backtrace up to (not including) the first frame of this bootstrap, as strings.
    def stack_trace_of(error)
      frames = error.backtrace_locations || error.backtrace || []
      trace = []
      frames.first(MAX_TRACE).each do |frame|
        own = if frame.is_a?(String)
                THIS_FILES.any? { |f| frame.start_with?("#{f}:") }
              else
                THIS_FILES.include?(frame.absolute_path) || THIS_FILES.include?(frame.path)
              end
        break if own

        trace << utf8(frame)
      end
      trace
    rescue StandardError
      []
    end

    def log_error(message, lambda_error)
      $stdout.puts(message)
      $stdout.puts(JSON.pretty_generate(lambda_error.to_lambda_response))
    rescue StandardError
      nil
    end

    def flush_stdio
      $stdout.flush
      $stderr.flush
    rescue StandardError
      nil
    end

    # $LOAD_PATH as AWS's RUBYLIB puts it: the task root, then /opt/ruby/lib, then Ruby's.
    def setup_load_path(task_root)
      front = [task_root, '/opt/ruby/lib']
      $LOAD_PATH.replace(front + ($LOAD_PATH - front))
    end

    # GEM_PATH is the platform's to set; a bootstrap started without one gets AWS's layout
    # (the function's vendor/bundle, then layers), for both the Ruby version the function
    # asked for and the one running it, followed by Ruby's own gem directories.
    def setup_gem_path(task_root, env)
      return unless env['GEM_PATH'].to_s.empty?

      versions = [RbConfig::CONFIG['ruby_version']]
      declared = env['AWS_EXECUTION_ENV'].to_s[/\AAWS_Lambda_ruby(\d+\.\d+)\z/, 1]
      versions.unshift("#{declared}.0") if declared
      versions.uniq!
      dirs = versions.map { |v| File.join(task_root, 'vendor', 'bundle', 'ruby', v) } +
             versions.map { |v| "/opt/ruby/gems/#{v}" }
      env['GEM_PATH'] = "#{dirs.join(File::PATH_SEPARATOR)}#{File::PATH_SEPARATOR}"
      Gem.clear_paths if defined?(Gem)
    end

    def setup_logging(env)
      json = env['AWS_LAMBDA_LOG_FORMAT'].to_s.casecmp?('JSON')
      @log_formatter_class = json ? JsonLogFormatter : LogFormatter
      ::Logger.prepend(LoggerPatch) unless ::Logger <= LoggerPatch
    end

    # [file, class name or nil, method] from "file.method" / "file.Module::Class.method".
    def parse_handler(spec)
      parts = spec.split('.')
      case parts.size
      when 2 then [parts[0], nil, parts[1]]
      when 3 then parts
      else
        raise ArgumentError, "Invalid handler #{parts}, must be of form FILENAME.METHOD or " \
                             'FILENAME.CLASS.METHOD where FILENAME corresponds with an existing ' \
                             'Ruby source file FILENAME.rb, CLASS is an optional module/class ' \
                             'namespace and METHOD is a callable method. If using CLASS, METHOD ' \
                             'must be a class-level method.'
      end
    end

    # require the handler file the way AWS does (a load-path name), except that a file in
    # the task root is required by its full path, so that a library this bootstrap already
    # loaded (json, logger, socket...) cannot shadow a function file of the same name.
    def require_handler_file(task_root, file)
      require(handler_feature(task_root, file))
    end

    # What require_handler_file requires: found by a filesystem check only.
    def handler_feature(task_root, file)
      path = File.join(task_root, "#{file}.rb")
      File.file?(path) ? path : file
    end

    # AWS's environments run with LANG=en_US.UTF-8; without a locale Ruby would read files
    # as US-ASCII.
    def utf8_by_default
      return unless Encoding.default_external == Encoding::US_ASCII

      verbose = $VERBOSE
      begin
        $VERBOSE = nil # "warning: setting Encoding.default_external"
        Encoding.default_external = Encoding::UTF_8
      ensure
        $VERBOSE = verbose
      end
    end

    def main
      env = ENV
      staged = env.delete('LAMBDAD_STAGED') == '1' # (the function must not see it)
      $stdout.sync = true
      $stderr.sync = true
      utf8_by_default
      client = RuntimeClient.new(env.fetch('AWS_LAMBDA_RUNTIME_API'))
      task_root = env['LAMBDA_TASK_ROOT'].to_s
      task_root = Dir.pwd if task_root.empty?
      handler_spec = env['_HANDLER'].to_s
      begin
        Dir.chdir(task_root) unless Dir.pwd == task_root
      rescue SystemCallError
        nil
      end
      static = [env['AWS_LAMBDA_LOG_GROUP_NAME'], env['AWS_LAMBDA_LOG_STREAM_NAME'],
                env['AWS_LAMBDA_FUNCTION_NAME'], env['AWS_LAMBDA_FUNCTION_MEMORY_SIZE'],
                env['AWS_LAMBDA_FUNCTION_VERSION']].map { |v| v&.freeze }.freeze

      begin
        setup_load_path(task_root)
        setup_gem_path(task_root, env)
        setup_logging(env)
        if staged
          ahead = ahead_of_wait(client, task_root, handler_spec, env, static)
          # Built ahead of its first invocation: the function's init runs when that arrives.
          client.wait_for_invocation
        end
        if ahead&.handler # parsed and found ahead (a staged environment)
          file, class_name, method_name = ahead.handler
          require(ahead.feature)
        else
          file, class_name, method_name = parse_handler(handler_spec)
          require_handler_file(task_root, file)
        end
      rescue Exception => e # rubocop:disable Lint/RescueException -- LoadError, SyntaxError...
        fail_init(client, handler_spec, e)
      end

      serve(client, class_name&.freeze, method_name.to_sym, static, ahead&.trace)
    rescue ConnectionLost, ApiError, SystemCallError, IOError => e
      # The Runtime API went away (the environment is being shut down): leave quietly.
      $stderr.puts("lambdad bootstrap: lost the Runtime API: #{e.class}: #{e.message}")
      flush_stdio
      exit(1)
    end

    # A staged environment's work before its wait, none of it the function's code (its files
    # are not read, let alone required), so that its first invocation finds the rest done:
    #
    # * the handler string parsed and its file found (filesystem checks only). If parsing
    #   fails, nothing is kept: after the wait parse_handler meets the same error and it is
    #   reported as ever (posting an init error before the wait would get the environment
    #   killed);
    # * the trace variable's Fiddle loaded (~1.5 ms, most of what init took after the wait;
    #   it warms require too), unless the function brings a fiddle gem of its own;
    # * the invocation path run once on the bootstrap's own handler (warm_up).
    #
    # Never raises: whatever failed is left for the normal path after the wait.
    def ahead_of_wait(client, task_root, handler_spec, env, static)
      ahead = Ahead.new
      begin
        ahead.handler = parse_handler(handler_spec).map(&:freeze).freeze
        ahead.feature = handler_feature(task_root, ahead.handler[0])
      rescue StandardError
        ahead.handler = nil
      end
      begin
        unless own_fiddle?(task_root, env)
          ahead.trace = TraceIdVariable.new
          ahead.trace.rehearse
        end
      rescue StandardError
        ahead.trace = nil
      end
      warm_up(client, static)
      ahead
    end

    # Whether the function brings a fiddle gem (in its or its layers' gem directories, or in
    # its bundle's lockfile). Its init may activate that version, which the default gem loaded
    # ahead would conflict with (Gem::LoadError): the trace variable then loads Fiddle after
    # init, as in an environment that is not staged.
    def own_fiddle?(task_root, env)
      dirs = env['GEM_PATH'].to_s.split(File::PATH_SEPARATOR).select do |dir|
        dir.start_with?("#{task_root}/", '/opt/')
      end
      return true if dirs.any? { |dir| !Dir.glob(File.join(dir, 'gems', 'fiddle-*')).empty? }

      gemfile = env['BUNDLE_GEMFILE'].to_s
      locks = if gemfile.empty?
                [File.join(task_root, 'Gemfile.lock'), File.join(task_root, 'gems.locked')]
              else
                ["#{gemfile}.lock", gemfile.sub(/\.rb\z/, '.locked')]
              end
      locks.any? { |lock| File.file?(lock) && File.read(lock).match?(/^\s+fiddle\b/) }
    rescue StandardError
      true
    end

    # A staged environment's warm-up of the invocation path (Ruby's first-use costs: method
    # and constant caches, JSON's parser and generator, Logger and its formatter, Time
    # formatting, backtraces): two invocations of Rehearsal, one answered, one raising, each
    # through handle as a function's (the canned event parsed, the context built, the
    # response or the error report formatted and its request built). Nothing reaches the
    # function's log ($stdout and $stderr are scratch buffers meanwhile) nor the Runtime API
    # (ScratchClient); the globals handle sets are put back (the request id to nil: nothing
    # had set it).
    def warm_up(client, static)
      address = client.address
      stdout = $stdout
      stderr = $stderr
      begin
        $stdout = StringIO.new
        $stderr = StringIO.new
        [ScratchClient::EVENT, '{"fail":true}'].each do |event|
          scratch = ScratchClient.new(address, event)
          headers, body = scratch.next_invocation
          handle(scratch, NO_TRACE, headers, body, 'LambdadBootstrap::Rehearsal', :handler, static)
        end
      rescue StandardError, ScriptError, SystemExit # a warm-up must never end the environment
        nil
      ensure
        $stdout = stdout
        $stderr = stderr
        $_global_aws_request_id = nil
      end
    end

    def fail_init(client, handler_spec, exc)
      error = LambdaError.new(exc, 'Init')
      log_error("Init error when loading handler #{handler_spec}", error)
      flush_stdio
      client.post_init_error(error.to_lambda_response.to_json, error.runtime_error_type)
      exit(-4)
    end

    # The invocation loop. `trace`: the trace variable, if a staged environment built it ahead.
    def serve(client, class_name, method_name, static, trace = nil)
      trace ||= TraceIdVariable.new
      loop do
        headers, body = client.next_invocation
        handle(client, trace, headers, body, class_name, method_name, static)
      end
    end

    # One invocation: the handler called with its event and context, its result or its error
    # posted (a critical error then ends the process).
    def handle(client, trace, headers, body, class_name, method_name, static)
      request_id = headers['lambda-runtime-aws-request-id'].to_s
      $_global_aws_request_id = request_id
      trace.set(headers['lambda-runtime-trace-id'])

      begin
        event = AwsLambda::Marshaller.marshall_request(RawRequest.new(headers, body))
        context = make_context(request_id, headers, static)
      rescue StandardError => e
        # AWS's runtime dies on these (an init error after the fact); report them on the
        # invocation instead and carry on.
        post_error(client, request_id, LambdaError.new(e, 'Runtime'),
                   'Error preparing the invocation')
        return
      end

      critical = false
      begin
        response =
          if class_name
            Object.const_get(class_name).__send__(method_name, event: event, context: context)
          else
            MAIN_OBJECT.__send__(method_name, event: event, context: context)
          end
        payload, content_type = AwsLambda::Marshaller.marshall_response(response)
        if content_type.nil?
          content_type = 'application/json'
        elsif content_type == 'application/unknown' && payload.respond_to?(:read)
          payload = payload.read || EMPTY # an IO: send its content unformatted
        end
      rescue NameError => e # NoMethodError included: AWS treats both as fatal
        error = LambdaError.new(e, 'Function')
        critical = true
      rescue StandardError => e
        error = LambdaError.new(e, 'Function')
      rescue Exception => e # rubocop:disable Lint/RescueException -- SystemExit, signals...
        error = LambdaError.new(e, 'Function')
        critical = true
      else
        error = nil
      end

      if error
        post_error(client, request_id, error, critical ? CRITICAL_LOG : ERROR_LOG)
        exit(-1) if critical
        return
      end

      flush_stdio
      client.post_response(request_id, payload.to_s, content_type)
    end

    def post_error(client, request_id, error, log_message)
      log_error(log_message, error) if log_message
      flush_stdio
      client.post_error(request_id, error.to_lambda_response.to_json, error.runtime_error_type)
    end

    def make_context(request_id, headers, static)
      raw = headers['lambda-runtime-cognito-identity']
      identity = raw.nil? || raw.empty? ? nil : JSON.parse(raw)
      raw = headers['lambda-runtime-client-context']
      client_context = raw.nil? || raw.empty? ? nil : JSON.parse(raw)
      LambdaContext.new(request_id, headers['lambda-runtime-deadline-ms'].to_i,
                        headers['lambda-runtime-invoked-function-arn'], identity,
                        client_context, headers['lambda-runtime-aws-tenant-id'], static)
    end
  end
end

if $PROGRAM_NAME == __FILE__ || File.expand_path($PROGRAM_NAME) == LambdadBootstrap::THIS_FILE
  LambdadBootstrap.main
end
