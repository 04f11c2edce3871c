// lambdad-dotnet-runtime.exe: the `dotnet8`-style managed runtime of lambdad, on Mono.
//
// It does what AWS's Amazon.Lambda.RuntimeSupport does for class-library handlers:
//   * reads _HANDLER = "Assembly::Namespace.Class::Method", loads
//     $LAMBDA_TASK_ROOT/Assembly.dll, finds the method (static, or instance on a type with a
//     public parameterless constructor) and the ILambdaSerializer named by a
//     [LambdaSerializer] attribute on the method or the assembly;
//   * loops on the Lambda Runtime API (2018-06-01): GET next, deserialise the event, call
//     the handler with (input), (input, ILambdaContext), (ILambdaContext) or (), wait for a
//     returned Task / Task<T>, serialise the result and POST it;
//   * reports exceptions in AWS's JSON shape ({"errorType", "errorMessage", "stackTrace",
//     "cause", "causes"}) with the Lambda-Runtime-Function-Error-Type header, and
//     handler-loading failures (LambdaValidationException, AWS's messages) to
//     /runtime/init/error before exiting with status 1;
//   * in a staged environment (LAMBDAD_STAGED), finds the handler by reflection and warms its
//     own code paths before it waits for the first invocation, then runs the function's init;
//   * routes Console.Out / Console.Error / ILambdaLogger / LambdaLogger to the log with
//     AWS's .NET prefix "<timestamp>\t<request id>\t<level>\t<message>", unbuffered, so
//     everything logged is written before the response is posted.
// Deviation: without a [LambdaSerializer] attribute AWS fails the init for non-Stream
// inputs/outputs; lambdad falls back to DefaultLambdaJsonSerializer instead.
//
// The Runtime API client is a hand-written HTTP/1.1 client on one keep-alive TCP connection
// (TCP_NODELAY) opened with libc's socket calls through P/Invoke; it pipelines each result
// with the next GET /invocation/next. Measured against the test server on this machine:
// HttpWebRequest ~620 ms to the first /next and ~1.4 ms per invocation;
// System.Net.Sockets.Socket ~85 ms and ~0.5 ms (its first use loads System.Configuration and
// System.Xml to read machine.config); libc sockets ~25-30 ms (mono itself: ~20 ms) and
// ~0.2-0.3 ms. Only mscorlib and our assemblies are loaded on the normal path.

using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.Globalization;
using System.IO;
using System.Net;
using System.Net.Sockets;
using System.Reflection;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Text;
using System.Threading.Tasks;
using Amazon.Lambda.Core;
using Amazon.Lambda.RuntimeSupport;
using Amazon.Lambda.Serialization.SystemTextJson;
using Lambdad.Json;

[assembly: AssemblyTitle("lambdad .NET runtime (Mono)")]
[assembly: AssemblyVersion("1.0.0.0")]

namespace Amazon.Lambda.RuntimeSupport
{
    /// <summary>A handler that cannot be loaded (AWS's exception type name, kept for fidelity).</summary>
    public class LambdaValidationException : Exception
    {
        public LambdaValidationException(string message) : base(message) { }

        public LambdaValidationException(string message, Exception inner) : base(message, inner) { }
    }
}

namespace Lambdad.Runtime
{
    // ------------------------------------------------------------------------------------
    // Entry point
    // ------------------------------------------------------------------------------------

    public static class Program
    {
        private static readonly byte[] Empty = new byte[0];

        public static int Main(string[] args)
        {
            // a staged environment (built ahead of its first invocation): lambdad's, not the function's
            bool staged = Environment.GetEnvironmentVariable("LAMBDAD_STAGED") == "1";
            Environment.SetEnvironmentVariable("LAMBDAD_STAGED", null);
            string api = Environment.GetEnvironmentVariable("AWS_LAMBDA_RUNTIME_API");
            if (string.IsNullOrEmpty(api))
            {
                Console.Error.WriteLine("lambdad-dotnet-runtime: AWS_LAMBDA_RUNTIME_API is not set");
                return 1;
            }
            string taskRoot = Environment.GetEnvironmentVariable("LAMBDA_TASK_ROOT");
            if (string.IsNullOrEmpty(taskRoot)) taskRoot = Directory.GetCurrentDirectory();
            try { Directory.SetCurrentDirectory(taskRoot); }
            catch (Exception) { }

            LogWriter.Configure();
            var stdout = new LogWriter(Console.OpenStandardOutput(), LogLevel.Information);
            var stderr = new LogWriter(Console.OpenStandardError(), LogLevel.Error);
            Console.SetOut(stdout);
            Console.SetError(stderr);
            LogWriter.Out = stdout;
            SetStaticLogger(stdout);

            var client = new RuntimeApiClient(api);
            string handlerString = Environment.GetEnvironmentVariable("_HANDLER");
            HandlerInvoker resolved = null;
            if (staged)
            {
                // staged: init (loading the handler runs the function's code) waits for the first
                // invocation. What runs none of the function's code is done before: finding the
                // handler by reflection (null if that fails: Load meets the same error after the
                // wait and reports it as ever), and the host's own first-use costs (JIT).
                resolved = HandlerInvoker.Resolve(handlerString, taskRoot);
                Warmup.Run(resolved, client);
                client.WaitForWork();
            }
            HandlerInvoker handler;
            try
            {
                handler = resolved != null ? resolved.Load() : HandlerInvoker.Load(handlerString, taskRoot);
                if (ShouldPreJit()) handler.PreJit();
            }
            catch (Exception exception)
            {
                Console.Error.WriteLine(exception);
                try
                {
                    client.PostInitError(ErrorJson.Write(ErrorInfo.From(exception)));
                }
                catch (Exception post)
                {
                    LogWriter.Internal("could not report the init error: " + post.Message);
                }
                return 1;
            }

            try
            {
                Serve(client, handler);
            }
            catch (Exception lost)
            {
                // the Runtime API went away: the environment is being shut down
                LogWriter.Internal("lost the Runtime API: " + lost.Message);
                return 1;
            }
            return 0;
        }

        // AWS_LAMBDA_DOTNET_PREJIT (AWS's variable): Never, Always, or ProvisionedConcurrency
        // (the default: only when AWS_LAMBDA_INITIALIZATION_TYPE=provisioned-concurrency).
        private static bool ShouldPreJit()
        {
            string mode = Environment.GetEnvironmentVariable("AWS_LAMBDA_DOTNET_PREJIT");
            if (string.Equals(mode, "Always", StringComparison.OrdinalIgnoreCase)) return true;
            if (string.Equals(mode, "Never", StringComparison.OrdinalIgnoreCase)) return false;
            return string.Equals(Environment.GetEnvironmentVariable("AWS_LAMBDA_INITIALIZATION_TYPE"), "provisioned-concurrency", StringComparison.Ordinal);
        }

        // Amazon.Lambda.Core.LambdaLogger writes through a private static delegate; point it
        // at the log with no level column, like AWS's runtime does.
        private static void SetStaticLogger(LogWriter stdout)
        {
            FieldInfo field = typeof(LambdaLogger).GetField("_loggingAction", BindingFlags.NonPublic | BindingFlags.Static);
            if (field != null)
                field.SetValue(null, new Action<string>(message => stdout.FormattedWriteLine(null, message)));
        }

        private static void Serve(RuntimeApiClient client, HandlerInvoker handler)
        {
            var statics = new StaticContext();
            ApiResponse next = client.Next();
            while (true)
            {
                string requestId = next.Header("lambda-runtime-aws-request-id") ?? "";
                LogWriter.RequestId = requestId;
                string traceId = next.Header("lambda-runtime-trace-id");
                TraceIdVariable.Set(traceId);
                var context = new LambdaContext(statics, next, requestId);

                byte[] output = null;
                Exception failure = null;
                try
                {
                    output = handler.Invoke(next.Body, context);
                }
                catch (UserCodeException e)
                {
                    failure = e.InnerException;
                }
                catch (Exception e)
                {
                    failure = e;
                }

                string errorType = null;
                if (failure != null)
                {
                    // AWS's runtime logs the exception (Console.Error.WriteLine) before reporting it
                    Console.Error.WriteLine(failure);
                    ErrorInfo info = ErrorInfo.From(failure);
                    output = ErrorJson.Write(info);
                    errorType = info.ErrorType;
                }
                // the log writers are unbuffered: everything logged is out before the post
                int status;
                next = client.FinishAndNext(requestId, output ?? Empty, errorType, out status);
                if (status != 202)
                    LogWriter.Internal("the Runtime API answered " + status + " to the " + (errorType == null ? "response" : "error") + " of " + requestId);
            }
        }
    }

    /// <summary>Wraps an exception thrown by user code (or its serializer) through reflection.</summary>
    // _X_AMZN_TRACE_ID, set for each invocation as AWS's runtime sets it, but not through
    // Environment.SetEnvironmentVariable (glibc's setenv, which keeps every value a variable
    // ever had: ~100 bytes an invocation for the life of the environment). One buffer, handed
    // to putenv (the C environment then points at it), is rewritten in place.
    internal static class TraceIdVariable
    {
        private const string Name = "_X_AMZN_TRACE_ID";
        private const int Size = 512;
        private static IntPtr buffer = IntPtr.Zero;

        [DllImport("libc", EntryPoint = "putenv")]
        private static extern int PutEnv(IntPtr text);

        [DllImport("libc", EntryPoint = "getenv")]
        private static extern IntPtr GetEnv(string name);

        public static void Set(string value)
        {
            if (string.IsNullOrEmpty(value))
            {
                Environment.SetEnvironmentVariable(Name, null); // unsetenv frees nothing: fine
                return;
            }
            byte[] text = Encoding.UTF8.GetBytes(Name + "=" + value + "\0");
            if (text.Length > Size)
            {
                Environment.SetEnvironmentVariable(Name, value);
                return;
            }
            try
            {
                if (buffer == IntPtr.Zero)
                    buffer = Marshal.AllocHGlobal(Size);
                Marshal.Copy(text, 0, buffer, text.Length);
                if (GetEnv(Name) != IntPtr.Add(buffer, Name.Length + 1)) // not ours (first time, or changed)
                    PutEnv(buffer);
            }
            catch (Exception e) when (e is DllNotFoundException || e is EntryPointNotFoundException)
            {
                Environment.SetEnvironmentVariable(Name, value);
            }
        }

        /// <summary>
        /// A staged environment's warm-up, before its wait: sets the variable once and unsets it
        /// (binding the P/Invokes), if it is not set; the function's init finds it as it was.
        /// </summary>
        public static void Rehearse()
        {
            if (Environment.GetEnvironmentVariable(Name) != null) return;
            Set("Root=1-00000000-000000000000000000000000;Parent=0000000000000000;Sampled=0");
            Set(null);
        }
    }

    internal sealed class UserCodeException : Exception
    {
        public UserCodeException(Exception inner) : base(inner.Message, inner) { }
    }

    // ------------------------------------------------------------------------------------
    // Handler loading and invocation
    // ------------------------------------------------------------------------------------

    internal sealed class HandlerInvoker
    {
        private const BindingFlags DefaultFlags = BindingFlags.DeclaredOnly | BindingFlags.NonPublic | BindingFlags.Public
                                                  | BindingFlags.Instance | BindingFlags.Static;
        private const string Format = "ASSEMBLY::TYPE::METHOD";
        private static readonly string[] Separator = { "::" };
        private static string _taskRoot;
        private static bool _resolving; // the AssemblyResolve handler is installed

        private Assembly _assembly;
        private Type _type;
        private string _typeName;
        private MethodInfo _method;
        private object _target;
        private Type _inputType;          // null: no input parameter
        private bool _inputFirst;         // the input is the first parameter (context second)
        private int _parameterCount;
        private object _serializer;
        private MethodInfo _deserialize;  // Deserialize<TInput>, null for Stream / no input
        private MethodInfo _serialize;    // Serialize<TOutput>, null for Stream / no output
        private Type _outputType;         // null: void / Task
        private bool _awaitTask;
        private PropertyInfo _taskResult;

        /// <summary>
        /// Loads the handler: finds it, runs its type's initialisation (as AWS does, in init),
        /// then reads its serializer and signature. The order decides which error is reported.
        /// </summary>
        public static HandlerInvoker Load(string handlerString, string taskRoot)
        {
            HandlerInvoker invoker = Find(handlerString, taskRoot);
            invoker.CreateTarget();
            invoker._serializer = FindSerializer(invoker._method, invoker._assembly);
            invoker.ReadSignature();
            invoker.BindSerializer();
            return invoker;
        }

        /// <summary>
        /// A staged environment's handler, found before its wait by the part of Load that runs
        /// no code of the function: the handler string, the assembly loaded, the type and the
        /// method found and checked, the signature read, all by reflection. Mono runs a
        /// module's initializer and a type's static constructor only when one of the module's
        /// types is initialised (created, or its static members used), which none of this does;
        /// the attributes (FindSerializer instantiates them) are left for after the wait too.
        /// Null if any of it fails: Load, after the wait, then meets and reports the same error.
        /// </summary>
        public static HandlerInvoker Resolve(string handlerString, string taskRoot)
        {
            try
            {
                HandlerInvoker invoker = Find(handlerString, taskRoot);
                invoker.ReadSignature();
                return invoker;
            }
            catch (Exception)
            {
                return null;
            }
        }

        /// <summary>
        /// The rest of Load for a resolved handler, after the wait: the steps that run the
        /// function's code, in Load's order. ReadSignature, which Load runs between them, ran
        /// in Resolve and passed: the same error as Load's comes first.
        /// </summary>
        public HandlerInvoker Load()
        {
            CreateTarget();
            _serializer = FindSerializer(_method, _assembly);
            BindSerializer();
            return this;
        }

        /// <summary>An invoker of one of the host's own methods (the warm-up's), loaded as a handler is.</summary>
        public static HandlerInvoker Own(MethodInfo method)
        {
            Type type = method.DeclaringType;
            ValidateMethod(method);
            CheckType(type, method);
            var invoker = new HandlerInvoker { _assembly = type.Assembly, _type = type, _typeName = type.FullName, _method = method };
            invoker.ReadSignature();
            return invoker.Load();
        }

        public bool AwaitsTask { get { return _awaitTask; } }

        private static HandlerInvoker Find(string handlerString, string taskRoot)
        {
            _taskRoot = taskRoot;
            if (!_resolving)
            {
                AppDomain.CurrentDomain.AssemblyResolve += ResolveFromTaskRoot;
                _resolving = true;
            }

            // HandlerInfo: "Assembly::Namespace.Type::Method"
            if (string.IsNullOrEmpty(handlerString))
                throw Validation("Empty lambda function handler. The valid format is 'ASSEMBLY{0}TYPE{1}METHOD'.", "::", "::");
            string[] parts = handlerString.Split(Separator, StringSplitOptions.None);
            if (parts.Length != 3)
                throw Validation("Invalid lambda function handler: '{0}'. The valid format is 'ASSEMBLY{1}TYPE{2}METHOD'.", handlerString, "::", "::");
            string assemblyName = parts[0].Trim(), typeName = parts[1].Trim(), methodName = parts[2].Trim();
            if (assemblyName.Length == 0)
                throw Validation("Invalid lambda function handler: '{0}', the assembly is missing. The valid format is 'ASSEMBLY{1}TYPE{2}METHOD'.", handlerString, "::", "::");
            if (typeName.Length == 0)
                throw Validation("Invalid lambda function handler: '{0}', the type is missing. The valid format is 'ASSEMBLY{1}TYPE{2}METHOD'.", handlerString, "::", "::");
            if (methodName.Length == 0)
                throw Validation("Invalid lambda function handler: '{0}', the method is missing. The valid format is 'ASSEMBLY{1}TYPE{2}METHOD'.", handlerString, "::", "::");

            Assembly assembly;
            string path = Path.Combine(taskRoot, assemblyName + ".dll");
            if (!File.Exists(path))
                throw Validation("Could not find the specified handler assembly with the file name '{0}'. The assembly should be located in the root of your uploaded .zip file.",
                    assemblyName + ", Culture=neutral, PublicKeyToken=null");
            try
            {
                assembly = Assembly.LoadFrom(path);
            }
            catch (Exception e)
            {
                throw new LambdaValidationException(Fmt("Unable to load assembly '{0}'.", assemblyName), e);
            }

            Type type = assembly.GetType(typeName);
            if (type == null)
                throw Validation("Unable to load type '{0}' from assembly '{1}'.", typeName, assemblyName);

            MethodInfo method = FindByName(type, methodName) ?? FindBySignature(type, methodName);
            if (method == null)
                throw Validation("Unable to find method '{0}' in type '{1}' from assembly '{2}': Found no methods matching method name '{3}'.",
                    methodName, typeName, assemblyName, methodName);
            ValidateMethod(method);
            CheckType(type, method);
            return new HandlerInvoker { _assembly = assembly, _type = type, _typeName = typeName, _method = method };
        }

        private static Assembly ResolveFromTaskRoot(object sender, ResolveEventArgs args)
        {
            string name = new AssemblyName(args.Name).Name;
            foreach (string dir in new[] { _taskRoot, "/opt/dotnetcore/store", "/opt/lib", "/opt" })
            {
                if (dir == null) continue;
                string candidate = Path.Combine(dir, name + ".dll");
                if (File.Exists(candidate)) return Assembly.LoadFrom(candidate);
            }
            return null;
        }

        private static string Fmt(string format, params object[] args)
        {
            try { return string.Format(CultureInfo.InvariantCulture, format, args); }
            catch (FormatException) { return format; }
        }

        private static LambdaValidationException Validation(string format, params object[] args)
        {
            return new LambdaValidationException(Fmt(format, args));
        }

        private static MethodInfo FindByName(Type type, string name)
        {
            for (Type t = type; t != null; t = t.BaseType)
            {
                try
                {
                    MethodInfo m = t.GetMethod(name, DefaultFlags);
                    if (m != null) return m;
                }
                catch (AmbiguousMatchException)
                {
                    var candidates = new List<string>();
                    foreach (MethodInfo m in t.GetMethods(DefaultFlags))
                        if (m.Name == name || m.ToString() == name) candidates.Add(m.ToString());
                    throw Validation("The method '{0}' in type '{1}' appears to have a number of overloads. To call this method please specify a complete method signature. Possible candidates are:\n{2}.",
                        name, t.FullName, string.Join("\n", candidates));
                }
            }
            return null;
        }

        private static MethodInfo FindBySignature(Type type, string signature)
        {
            for (Type t = type; t != null; t = t.BaseType)
            {
                foreach (MethodInfo m in t.GetMethods(DefaultFlags))
                    if (string.Equals(m.ToString(), signature, StringComparison.Ordinal)) return m;
            }
            return null;
        }

        private static void ValidateMethod(MethodInfo method)
        {
            if (method.IsAbstract)
                throw Validation("The method '{0}' cannot be used as a Lambda Handler because it is an abstract method. Handler methods cannot be abstract. Please specify a non-abstract handler method.", method);
            if (method.IsGenericMethod)
                throw Validation("The method '{0}' cannot be used as a Lambda Handler because it is a generic method. Handler methods cannot be generic. Please specify a non-generic handler method.", method);
            if (method.ReturnType == typeof(void) && method.IsDefined(typeof(AsyncStateMachineAttribute), false))
                throw Validation("The method '{0}' cannot be used as a Lambda Handler because it is an 'async void' method. Handler methods cannot be 'async void'. Please specify a method that is not 'async void'.", method);
            ParameterInfo[] parameters = method.GetParameters();
            if (parameters.Length > 0 && parameters[parameters.Length - 1].IsDefined(typeof(ParamArrayAttribute), false))
                throw Validation("The method '{0}' cannot be used as a Lambda Handler because it is a 'params' method. Please specify a method that does not use 'params'.", method);
            if ((method.CallingConvention & CallingConventions.VarArgs) == CallingConventions.VarArgs)
                throw Validation("The method '{0}' cannot be used as a Lambda Handler because it is a 'vararg (variable arguments)' method. Please specify a method that is not 'vararg'.", method);
        }

        // The checks of AWS's handler-type validation (no code of the function runs)
        private static void CheckType(Type type, MethodInfo method)
        {
            if (type.IsGenericType)
                throw Validation("The type '{0}' cannot be used as a Lambda Handler type because it is generic. Handler methods cannot be located in generic types. Please specify a handler method in a non-generic type.", type.FullName);
            if (!method.IsStatic && type.IsAbstract)
                throw Validation("The instance method '{0}' cannot be used as a Lambda Handler because its type '{1}' is abstract. Please either use a static handler or specify a type that is not abstract.", method, type.FullName);
            bool isStruct = type.IsValueType && !type.IsPrimitive && !type.IsEnum;
            if (!type.IsClass && !isStruct)
                throw Validation("The type '{0}' cannot be used as a handler type since it is not a class or a struct. Please specify a handler method on a class or struct.", type.FullName);
        }

        private void CreateTarget()
        {
            if (_method.IsStatic)
            {
                // run the static initializer now, during the init phase (as AWS does)
                RuntimeHelpers.RunClassConstructor(_type.TypeHandle);
                _target = null;
                return;
            }
            _target = Activator.CreateInstance(_type);
        }

        private static bool IsSerializerAttribute(object attribute)
        {
            return attribute.GetType().FullName == "Amazon.Lambda.Core.LambdaSerializerAttribute";
        }

        private static object FindSerializer(MethodInfo method, Assembly assembly)
        {
            object attribute = null;
            foreach (object a in method.GetCustomAttributes(false))
                if (IsSerializerAttribute(a)) attribute = a;
            if (attribute == null)
                foreach (object a in assembly.GetCustomAttributes(false))
                    if (IsSerializerAttribute(a)) attribute = a;
            if (attribute == null) return null;

            Type attributeType = attribute.GetType();
            PropertyInfo property = attributeType.GetProperty("SerializerType");
            if (property == null)
                throw Validation("The '{0}' class is invalid: no 'SerializerType' property detected.", attributeType.FullName);
            var serializerType = property.GetValue(attribute, null) as Type;
            if (serializerType == null)
                throw Validation("The 'SerializerType' property on attribute class '{0}' is not set.", attributeType.FullName);
            ConstructorInfo constructor = serializerType.GetConstructor(Type.EmptyTypes);
            if (constructor == null)
                throw Validation("The indicated serializer '{0}' does not define a public zero-parameter constructor.", serializerType.FullName);
            if (serializerType.GetInterface("Amazon.Lambda.Core.ILambdaSerializer") == null)
                throw Validation("The '{0}' class is invalid: it does not implement the 'ILambdaSerializer' interface.", serializerType.FullName);
            return constructor.Invoke(null);
        }

        private static bool IsContext(Type type)
        {
            return type.FullName == "Amazon.Lambda.Core.ILambdaContext";
        }

        private static Type TaskResultType(Type type)
        {
            for (Type t = type; t != null; t = t.BaseType)
                if (t.IsGenericType && t.GetGenericTypeDefinition() == typeof(Task<>)) return t;
            return null;
        }

        // The handler's signature: what it takes and returns (reflection only)
        private void ReadSignature()
        {
            ParameterInfo[] parameters = _method.GetParameters();
            _parameterCount = parameters.Length;
            if (parameters.Length > 2)
                throw Validation("Method '{0}' of type '{1}' is not supported: the method has more than 2 parameters.", _method.Name, _typeName);
            if (parameters.Length == 2)
            {
                if (!IsContext(parameters[1].ParameterType))
                    throw Validation("Method '{0}' of type '{1}' is not supported: the method has 2 parameters, but the second parameter is not of type '{2}'.",
                        _method.Name, _typeName, "Amazon.Lambda.Core.ILambdaContext");
                _inputType = parameters[0].ParameterType;
                _inputFirst = true;
            }
            else if (parameters.Length == 1 && !IsContext(parameters[0].ParameterType))
            {
                _inputType = parameters[0].ParameterType;
                _inputFirst = true;
            }

            Type returnType = _method.ReturnType;
            Type taskT = TaskResultType(returnType);
            if (taskT != null)
            {
                _awaitTask = true;
                _taskResult = taskT.GetProperty("Result");
                _outputType = taskT.GetGenericArguments()[0];
            }
            else if (typeof(Task).IsAssignableFrom(returnType))
            {
                _awaitTask = true;
            }
            else if (returnType != typeof(void))
            {
                _outputType = returnType;
            }
        }

        // The serializer's methods for the signature's types (needs the serializer instance)
        private void BindSerializer()
        {
            if (_inputType != null && _inputType != typeof(Stream))
                _deserialize = SerializerMethod("Deserialize", _inputType);
            if (_outputType != null && !typeof(Stream).IsAssignableFrom(_outputType))
                _serialize = SerializerMethod("Serialize", _outputType);
        }

        private MethodInfo SerializerMethod(string name, Type dataType)
        {
            // lenient: without [LambdaSerializer] AWS fails the init; lambdad uses its default
            if (_serializer == null) _serializer = new DefaultLambdaJsonSerializer();
            Type iface = _serializer.GetType().GetInterface("Amazon.Lambda.Core.ILambdaSerializer");
            MethodInfo generic = iface.GetMethod(name);
            return generic.MakeGenericMethod(dataType);
        }

        /// <summary>
        /// Compiles, during init, what the first invocation would otherwise JIT: the JSON
        /// engine on a sample document, the context, and the handler and serializer methods.
        /// No user code runs.
        /// </summary>
        public void PreJit()
        {
            try
            {
                const string sample = "{\"s\":\"x\\u00e9\",\"n\":-1.5e3,\"i\":42,\"b\":[true,false,null],\"o\":{}}";
                object tree = JsonCodec.Parse(sample);
                JsonCodec.Serialize(tree, null);
                JsonCodec.Deserialize(sample, typeof(Dictionary<string, object>), null);
                var headers = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
                headers["lambda-runtime-deadline-ms"] = "0";
                var context = new LambdaContext(new StaticContext(), new ApiResponse { Headers = headers }, "");
                context.RemainingTime.ToString();
                RuntimeHelpers.PrepareMethod(_method.MethodHandle);
                if (_deserialize != null) RuntimeHelpers.PrepareMethod(_deserialize.MethodHandle);
                if (_serialize != null) RuntimeHelpers.PrepareMethod(_serialize.MethodHandle);
                if (_inputType != null && _inputType != typeof(Stream) && !_inputType.IsAbstract && !_inputType.IsInterface)
                    JsonCodec.GetMemberNames(_inputType);
                if (_outputType != null && !typeof(Stream).IsAssignableFrom(_outputType) && !_outputType.IsAbstract && !_outputType.IsInterface)
                    JsonCodec.GetMemberNames(_outputType);
            }
            catch (Exception e)
            {
                LogWriter.Internal("pre-JIT skipped: " + e.Message);
            }
        }

        private static object CallUser(MethodInfo method, object target, object[] args)
        {
            try
            {
                return method.Invoke(target, args);
            }
            catch (TargetInvocationException e)
            {
                throw new UserCodeException(e.InnerException ?? e);
            }
        }

        public byte[] Invoke(byte[] payload, ILambdaContext context)
        {
            object input = null;
            if (_inputType != null)
            {
                var stream = new MemoryStream(payload, 0, payload.Length, false, true);
                input = _deserialize == null ? stream : CallUser(_deserialize, _serializer, new object[] { stream });
            }
            object[] args;
            if (_parameterCount == 0) args = new object[0];
            else if (_parameterCount == 2) args = new[] { input, context };
            else args = new[] { _inputFirst ? input : context };

            object result = CallUser(_method, _target, args);
            if (_awaitTask)
            {
                var task = result as Task;
                if (task == null) throw new InvalidOperationException("The handler returned a null Task.");
                try
                {
                    task.GetAwaiter().GetResult(); // throws the task's own exception, not an AggregateException
                }
                catch (Exception e)
                {
                    throw new UserCodeException(e);
                }
                result = _taskResult == null ? null : _taskResult.GetValue(task, null);
            }
            if (_outputType == null) return null;

            var output = result as Stream;
            if (output != null || typeof(Stream).IsAssignableFrom(_outputType))
            {
                if (output == null) return null;
                try
                {
                    var ms = output as MemoryStream;
                    if (ms != null && ms.CanSeek && ms.Position == ms.Length && ms.Length > 0) ms.Position = 0;
                    var copy = new MemoryStream();
                    output.CopyTo(copy);
                    return copy.ToArray();
                }
                finally
                {
                    output.Dispose();
                }
            }
            var buffer = new MemoryStream();
            CallUser(_serialize, _serializer, new[] { result, buffer });
            return buffer.ToArray();
        }
    }

    // ------------------------------------------------------------------------------------
    // Warm-up: a staged environment's, before its wait
    // ------------------------------------------------------------------------------------

    /// <summary>
    /// Runs the host's own first-use paths on values of its own, so that their JIT compilation
    /// and class initialisation are paid before the invocation arrives rather than in its Init
    /// Duration and its first invocation: a canned invocation through the Runtime API client,
    /// the context, handlers of the host's own loaded and invoked as the function's will be
    /// (reflection, JSON in and out, dictionaries and objects), the log writer (on a scratch
    /// stream), the error writer. No code of the function runs (its types are only looked at,
    /// by Resolve); what would log or post is compiled but not run. Measured (bench, 1024 MB,
    /// an echo handler): the first invocation of a staged function ~25 ms -> ~5 ms client-side,
    /// its Init Duration ~10.5 ms -> ~0.8 ms.
    /// </summary>
    internal static class Warmup
    {
        private const string Event = "{\"s\":\"x\\u00e9\\n\",\"i\":42,\"l\":12345678901,\"d\":-1.5e3,\"b\":[true,false,null],"
                                     + "\"o\":{\"k\":\"v\"},\"a\":[1,2.5,\"x\",{}]}";
        private const string Record = "{\"name\":\"x\",\"Count\":1,\"Total\":2.5,\"Price\":1.25,\"Flag\":true,\"At\":\"2024-01-02T03:04:05Z\","
                                      + "\"Size\":1,\"Values\":[1,2],\"Names\":[\"a\"],\"Tags\":{\"k\":\"v\"},\"Child\":{\"Name\":\"y\"},"
                                      + "\"Field\":3,\"Missing\":null,\"Unknown\":{}}";

        public static void Run(HandlerInvoker resolved, RuntimeApiClient client)
        {
            try
            {
                ApiResponse next = client.Rehearse(Encoding.UTF8.GetBytes(Event));
                TraceIdVariable.Rehearse();
                var context = new LambdaContext(new StaticContext(), next, next.Header("lambda-runtime-aws-request-id"));
                Invoke("Handle", next.Body, context);
                Invoke("Record", Encoding.UTF8.GetBytes(Record), context);
                if (resolved != null && resolved.AwaitsTask) Invoke("HandleAsync", next.Body, context);
                JsonCodec.CamelCase("WarmUp"); // CamelCaseLambdaJsonSerializer's names

                var scratch = new LogWriter(new MemoryStream(), LogLevel.Information);
                scratch.WriteLine("warm-up {0}", 1);
                scratch.FormattedWriteLine(null, "warm-up");
                scratch.Write("warm-up\n");
                Console.Out.Write(""); // Console's own wrapper: nothing is written

                try
                {
                    throw new InvalidOperationException("warm-up", new ArgumentException("warm-up"));
                }
                catch (Exception e)
                {
                    ErrorJson.Write(ErrorInfo.From(new UserCodeException(e)));
                    e.ToString(); // Console.Error.WriteLine(exception)'s text
                }

                // what cannot run before the invocation (it asks for it, posts, or loops on the Runtime API)
                Compile(typeof(Program).GetMethod("ShouldPreJit", BindingFlags.NonPublic | BindingFlags.Static));
                Compile(typeof(Program).GetMethod("Serve", BindingFlags.NonPublic | BindingFlags.Static));
                Compile(typeof(RuntimeApiClient).GetMethod("Next"));
                Compile(typeof(RuntimeApiClient).GetMethod("FinishAndNext"));
            }
            catch (Exception e)
            {
                LogWriter.Internal("warm-up skipped: " + e.Message);
            }
        }

        private static void Invoke(string name, byte[] payload, ILambdaContext context)
        {
            HandlerInvoker.Own(typeof(WarmHandler).GetMethod(name)).Invoke(payload, context);
        }

        // Mono compiles a method for its function pointer (RuntimeHelpers.PrepareMethod does nothing there)
        private static void Compile(MethodInfo method)
        {
            method.MethodHandle.GetFunctionPointer();
        }
    }

    /// <summary>The warm-up's handlers: the host's own, in the shapes of a function's.</summary>
    internal sealed class WarmHandler
    {
        public Dictionary<string, object> Handle(Dictionary<string, object> input, ILambdaContext context)
        {
            // what handlers read of their context
            input["context"] = new Dictionary<string, object>
            {
                { "AwsRequestId", context.AwsRequestId },
                { "InvokedFunctionArn", context.InvokedFunctionArn },
                { "FunctionName", context.FunctionName },
                { "FunctionVersion", context.FunctionVersion },
                { "LogGroupName", context.LogGroupName },
                { "LogStreamName", context.LogStreamName },
                { "MemoryLimitInMB", context.MemoryLimitInMB },
                { "RemainingTime", (long)context.RemainingTime.TotalMilliseconds },
                { "Logger", context.Logger != null },
                { "ClientContext", context.ClientContext },
                { "Identity", context.Identity },
            };
            return input;
        }

        public async Task<Dictionary<string, object>> HandleAsync(Dictionary<string, object> input, ILambdaContext context)
        {
            await Task.FromResult(0); // (completed: no thread pool)
            return Handle(input, context);
        }

        public static WarmRecord Record(WarmRecord input)
        {
            input.Count++;
            return input;
        }
    }

    internal enum WarmSize
    {
        Small,
        Large,
    }

    /// <summary>A POCO of the host's own, with members of the kinds functions' have.</summary>
    internal sealed class WarmRecord
    {
        public string Name { get; set; }
        public int Count { get; set; }
        public double Total { get; set; }
        public decimal Price { get; set; }
        public bool Flag { get; set; }
        public DateTime At { get; set; }
        public WarmSize Size { get; set; }
        public List<int> Values { get; set; }
        public string[] Names { get; set; }
        public Dictionary<string, string> Tags { get; set; }
        public WarmRecord Child { get; set; }
        public int? Missing { get; set; }
        public long Field;
    }

    // ------------------------------------------------------------------------------------
    // Context
    // ------------------------------------------------------------------------------------

    internal sealed class StaticContext
    {
        public readonly string FunctionName = Environment.GetEnvironmentVariable("AWS_LAMBDA_FUNCTION_NAME");
        public readonly string FunctionVersion = Environment.GetEnvironmentVariable("AWS_LAMBDA_FUNCTION_VERSION");
        public readonly string LogGroupName = Environment.GetEnvironmentVariable("AWS_LAMBDA_LOG_GROUP_NAME");
        public readonly string LogStreamName = Environment.GetEnvironmentVariable("AWS_LAMBDA_LOG_STREAM_NAME");
        public readonly int MemoryLimitInMB;

        public StaticContext()
        {
            int memory;
            if (int.TryParse(Environment.GetEnvironmentVariable("AWS_LAMBDA_FUNCTION_MEMORY_SIZE"), NumberStyles.Integer, CultureInfo.InvariantCulture, out memory))
                MemoryLimitInMB = memory;
        }
    }

    internal sealed class ContextLogger : ILambdaLogger
    {
        public static readonly ContextLogger Instance = new ContextLogger();

        public void Log(string message)
        {
            LogWriter.Out.FormattedWriteLine(LogLevel.Information, message);
        }

        public void LogLine(string message)
        {
            LogWriter.Out.FormattedWriteLine(LogLevel.Information, message);
        }
    }

    internal sealed class CognitoIdentity : ICognitoIdentity
    {
        public string IdentityId { get; set; }
        public string IdentityPoolId { get; set; }
    }

    internal sealed class ClientApplication : IClientApplication
    {
        public string AppPackageName { get; set; }
        public string AppTitle { get; set; }
        public string AppVersionCode { get; set; }
        public string AppVersionName { get; set; }
        public string InstallationId { get; set; }
    }

    internal sealed class ClientContext : IClientContext
    {
        public IDictionary<string, string> Environment { get; set; }
        public IClientApplication Client { get; set; }
        public IDictionary<string, string> Custom { get; set; }
    }

    internal sealed class LambdaContext : ILambdaContext
    {
        private static readonly DateTime Epoch = new DateTime(1970, 1, 1, 0, 0, 0, DateTimeKind.Utc);
        private readonly StaticContext _static;
        private readonly string _clientContextJson;
        private readonly string _identityJson;
        private readonly long _deadlineMs;
        private bool _parsedClientContext, _parsedIdentity;
        private IClientContext _clientContext;
        private ICognitoIdentity _identity;

        public LambdaContext(StaticContext statics, ApiResponse next, string requestId)
        {
            _static = statics;
            AwsRequestId = requestId;
            InvokedFunctionArn = next.Header("lambda-runtime-invoked-function-arn");
            TraceId = next.Header("lambda-runtime-trace-id");
            _clientContextJson = next.Header("lambda-runtime-client-context");
            _identityJson = next.Header("lambda-runtime-cognito-identity");
            long.TryParse(next.Header("lambda-runtime-deadline-ms"), NumberStyles.Integer, CultureInfo.InvariantCulture, out _deadlineMs);
        }

        public string AwsRequestId { get; private set; }
        public string InvokedFunctionArn { get; private set; }
        public string TraceId { get; private set; }
        public string FunctionName { get { return _static.FunctionName; } }
        public string FunctionVersion { get { return _static.FunctionVersion; } }
        public string LogGroupName { get { return _static.LogGroupName; } }
        public string LogStreamName { get { return _static.LogStreamName; } }
        public int MemoryLimitInMB { get { return _static.MemoryLimitInMB; } }
        public ILambdaLogger Logger { get { return ContextLogger.Instance; } }

        public TimeSpan RemainingTime
        {
            get
            {
                long now = (long)(DateTime.UtcNow - Epoch).TotalMilliseconds;
                long left = _deadlineMs - now;
                return TimeSpan.FromMilliseconds(left > 0 ? left : 0);
            }
        }

        // Parsed lazily, as AWS does: malformed JSON only fails a handler that reads it.
        public IClientContext ClientContext
        {
            get
            {
                if (!_parsedClientContext)
                {
                    _clientContext = ParseClientContext(_clientContextJson);
                    _parsedClientContext = true;
                }
                return _clientContext;
            }
        }

        public ICognitoIdentity Identity
        {
            get
            {
                if (!_parsedIdentity)
                {
                    _identity = ParseIdentity(_identityJson);
                    _parsedIdentity = true;
                }
                return _identity;
            }
        }

        private static string Str(IDictionary<string, object> obj, string key)
        {
            object value;
            if (obj == null || !obj.TryGetValue(key, out value) || value == null) return null;
            return value as string ?? Convert.ToString(value, CultureInfo.InvariantCulture);
        }

        private static IDictionary<string, string> StrMap(IDictionary<string, object> obj, string key)
        {
            object value;
            if (obj == null || !obj.TryGetValue(key, out value)) return null;
            var map = value as IDictionary<string, object>;
            if (map == null) return null;
            var result = new Dictionary<string, string>();
            foreach (var kv in map)
                result[kv.Key] = kv.Value == null ? null : kv.Value as string ?? JsonCodec.Serialize(kv.Value, null);
            return result;
        }

        private static ICognitoIdentity ParseIdentity(string json)
        {
            if (string.IsNullOrEmpty(json)) return null;
            var obj = JsonCodec.Parse(json) as IDictionary<string, object>;
            if (obj == null) return null;
            return new CognitoIdentity
            {
                IdentityId = Str(obj, "cognitoIdentityId"),
                IdentityPoolId = Str(obj, "cognitoIdentityPoolId"),
            };
        }

        private static IClientContext ParseClientContext(string json)
        {
            if (string.IsNullOrEmpty(json)) return null;
            var obj = JsonCodec.Parse(json) as IDictionary<string, object>;
            if (obj == null) return null;
            object client;
            obj.TryGetValue("client", out client);
            var clientObj = client as IDictionary<string, object>;
            return new ClientContext
            {
                Environment = StrMap(obj, "env"),
                Custom = StrMap(obj, "custom"),
                Client = clientObj == null ? null : new ClientApplication
                {
                    AppPackageName = Str(clientObj, "app_package_name"),
                    AppTitle = Str(clientObj, "app_title"),
                    AppVersionCode = Str(clientObj, "app_version_code"),
                    AppVersionName = Str(clientObj, "app_version_name"),
                    InstallationId = Str(clientObj, "installation_id"),
                },
            };
        }
    }

    // ------------------------------------------------------------------------------------
    // Errors: AWS's LambdaJsonExceptionWriter shape
    // ------------------------------------------------------------------------------------

    internal sealed class ErrorInfo
    {
        public string ErrorType;
        public string ErrorMessage;
        public string StackTrace;
        public ErrorInfo InnerException;
        public List<ErrorInfo> InnerExceptions = new List<ErrorInfo>();

        public static ErrorInfo From(Exception exception)
        {
            var user = exception as UserCodeException;
            if (user != null && user.InnerException != null) exception = user.InnerException;
            var info = new ErrorInfo { ErrorType = exception.GetType().Name, ErrorMessage = exception.Message };
            if (!string.IsNullOrEmpty(exception.StackTrace))
            {
                try { info.StackTrace = new StackTrace(exception, true).ToString(); }
                catch (Exception) { info.StackTrace = exception.StackTrace; }
                info.StackTrace = TrimReflectionFrames(info.StackTrace);
            }
            if (exception.InnerException != null) info.InnerException = From(exception.InnerException);
            var aggregate = exception as AggregateException;
            if (aggregate != null)
                foreach (Exception inner in aggregate.InnerExceptions) info.InnerExceptions.Add(From(inner));
            return info;
        }

        // The handler is called through MethodInfo.Invoke: drop the reflection frames Mono
        // leaves at the bottom of the user's trace (AWS calls through a compiled delegate).
        private static string TrimReflectionFrames(string trace)
        {
            if (trace == null) return null;
            var lines = new List<string>(trace.Split('\n'));
            while (lines.Count > 1)
            {
                string last = lines[lines.Count - 1].Trim();
                if (last.Length == 0 || last.Contains(" System.Reflection.") || last.Contains("(wrapper managed-to-native) System.Reflection.")
                    || last.Contains("System.RuntimeMethodHandle."))
                    lines.RemoveAt(lines.Count - 1);
                else
                    break;
            }
            return string.Join("\n", lines);
        }
    }

    internal static class ErrorJson
    {
        private const int MaxPayload = 256 * 1024;
        private const string Truncated = "{\"errorMessage\": \"Exception exceeded maximum payload size of 256KB.\"}";
        private static readonly UTF8Encoding Utf8 = new UTF8Encoding(false);

        public static byte[] Write(ErrorInfo info)
        {
            string json = Append(info, 0, false);
            byte[] bytes = Utf8.GetBytes(json);
            return bytes.Length <= MaxPayload ? bytes : Utf8.GetBytes(Truncated);
        }

        private static string Tab(string s, int depth)
        {
            return new string(' ', depth * 2) + s;
        }

        private static string Esc(string s)
        {
            string quoted = JsonCodec.Quote(s ?? "");
            return quoted.Substring(1, quoted.Length - 2);
        }

        // Mirrors AWS's LambdaJsonExceptionWriter: 2-space indentation, "errorType" first,
        // one trimmed stack frame per array element, "cause" / "causes" for inner exceptions.
        private static string Append(ErrorInfo ex, int tab, bool appendComma)
        {
            var sb = new StringBuilder();
            int next = tab + 1, nextNext = next + 1;
            var elements = new List<string>();
            elements.Add(Tab("\"errorType\": \"" + Esc(ex.ErrorType) + "\"", next));
            if (ex.ErrorMessage != null) elements.Add(Tab("\"errorMessage\": \"" + Esc(ex.ErrorMessage) + "\"", next));
            string stack = StackTraceJson(ex.StackTrace, next);
            if (stack != null) elements.Add(stack);
            sb.Append(Tab("{", tab)).Append('\n');
            sb.Append(string.Join(",\n", elements));
            bool hasInner = ex.InnerException != null;
            bool hasInners = ex.InnerExceptions.Count > 0;
            if (hasInner)
            {
                sb.Append(",\n");
                sb.Append(Tab("\"cause\": ", next));
                sb.Append(Append(ex.InnerException, next, hasInners));
            }
            if (hasInners)
            {
                if (!hasInner) sb.Append(",\n");
                sb.Append(Tab("\"causes\": [", next)).Append('\n');
                for (int i = 0; i < ex.InnerExceptions.Count; i++)
                    sb.Append(Append(ex.InnerExceptions[i], nextNext, i != ex.InnerExceptions.Count - 1));
                sb.Append(Tab("]", next)).Append('\n');
            }
            if (!hasInner && !hasInners) sb.Append('\n');
            sb.Append(Tab("}" + (appendComma ? "," : ""), tab)).Append('\n');
            return sb.ToString();
        }

        private static string StackTraceJson(string stackTrace, int tab)
        {
            if (stackTrace == null) return null;
            var frames = new List<string>();
            foreach (string line in stackTrace.Split('\n'))
            {
                string s = line.Trim();
                if (s.Length > 0) frames.Add(Tab("\"" + Esc(s) + "\"", tab + 1));
            }
            if (frames.Count == 0) return null;
            return Tab("\"stackTrace\": [", tab) + "\n" + string.Join(",\n", frames) + "\n" + Tab("]", tab);
        }
    }

    // ------------------------------------------------------------------------------------
    // Logging
    // ------------------------------------------------------------------------------------

    internal enum LogLevel
    {
        Trace = 0,
        Debug = 1,
        Information = 2,
        Warning = 3,
        Error = 4,
        Critical = 5,
        None = 6,
    }

    /// <summary>
    /// Console.Out / Console.Error replacement: Write() passes text through, every WriteLine()
    /// becomes one log record "&lt;timestamp&gt;\t&lt;request id&gt;\t&lt;level&gt;\t&lt;message&gt;" (AWS's
    /// .NET 6+ format; AWS_LAMBDA_HANDLER_LOG_FORMAT=Unformatted writes the bare message and
    /// AWS_LAMBDA_LOG_FORMAT=JSON writes JSON records). Nothing is buffered.
    /// </summary>
    internal sealed class LogWriter : TextWriter
    {
        private static readonly UTF8Encoding Utf8 = new UTF8Encoding(false);
        private static readonly object Lock = new object();
        private static LogLevel _minimum = LogLevel.Information;
        private static bool _unformatted;
        private static bool _json;

        public static volatile string RequestId = "";
        public static LogWriter Out;

        private readonly Stream _stream;
        private readonly LogLevel _defaultLevel;
        private readonly Encoder _encoder = Utf8.GetEncoder();
        private byte[] _bytes = new byte[1024];

        public LogWriter(Stream stream, LogLevel defaultLevel) : base(CultureInfo.InvariantCulture)
        {
            _stream = stream;
            _defaultLevel = defaultLevel;
            CoreNewLine = new[] { '\n' };
        }

        public static void Configure()
        {
            LogLevel level;
            if (TryParseLevel(Environment.GetEnvironmentVariable("AWS_LAMBDA_HANDLER_LOG_LEVEL"), out level)
                || TryParseLevel(Environment.GetEnvironmentVariable("AWS_LAMBDA_LOG_LEVEL"), out level))
                _minimum = level;
            _unformatted = string.Equals(Environment.GetEnvironmentVariable("AWS_LAMBDA_HANDLER_LOG_FORMAT"), "Unformatted", StringComparison.OrdinalIgnoreCase);
            _json = string.Equals(Environment.GetEnvironmentVariable("AWS_LAMBDA_LOG_FORMAT"), "JSON", StringComparison.OrdinalIgnoreCase);
        }

        private static bool TryParseLevel(string value, out LogLevel level)
        {
            level = LogLevel.Information;
            if (string.IsNullOrEmpty(value)) return false;
            switch (value.Trim().ToUpperInvariant())
            {
                case "TRACE": case "TRCE": level = LogLevel.Trace; return true;
                case "DEBUG": case "DBUG": level = LogLevel.Debug; return true;
                case "INFO": case "INFORMATION": level = LogLevel.Information; return true;
                case "WARN": case "WARNING": level = LogLevel.Warning; return true;
                case "ERROR": case "FAIL": level = LogLevel.Error; return true;
                case "FATAL": case "CRITICAL": case "CRIT": level = LogLevel.Critical; return true;
                case "NONE": level = LogLevel.None; return true;
            }
            return false;
        }

        private static string Label(LogLevel level)
        {
            switch (level)
            {
                case LogLevel.Trace: return "trce";
                case LogLevel.Debug: return "dbug";
                case LogLevel.Information: return "info";
                case LogLevel.Warning: return "warn";
                case LogLevel.Error: return "fail";
                case LogLevel.Critical: return "crit";
            }
            return level.ToString();
        }

        /// <summary>A line from the runtime itself (not the function) on stderr, unprefixed.</summary>
        public static void Internal(string message)
        {
            byte[] bytes = Utf8.GetBytes("lambdad-dotnet-runtime: " + message + "\n");
            lock (Lock)
            {
                try
                {
                    if (_internal == null) _internal = Console.OpenStandardError();
                    _internal.Write(bytes, 0, bytes.Length);
                }
                catch (Exception) { }
            }
        }

        private static Stream _internal;

        public override Encoding Encoding { get { return Utf8; } }

        private void WriteRaw(char[] chars, int index, int count, bool flush)
        {
            int max = Utf8.GetMaxByteCount(count);
            if (_bytes.Length < max) _bytes = new byte[Math.Max(max, _bytes.Length * 2)];
            int n = _encoder.GetBytes(chars, index, count, _bytes, 0, flush);
            if (n > 0) _stream.Write(_bytes, 0, n);
        }

        private void WriteRaw(string s)
        {
            if (string.IsNullOrEmpty(s)) return;
            char[] chars = s.ToCharArray();
            WriteRaw(chars, 0, chars.Length, false);
        }

        public override void Write(char value)
        {
            lock (Lock) WriteRaw(new[] { value }, 0, 1, false);
        }

        public override void Write(char[] buffer, int index, int count)
        {
            lock (Lock) WriteRaw(buffer, index, count, false);
        }

        public override void Write(string value)
        {
            lock (Lock) WriteRaw(value);
        }

        public override void Flush()
        {
            lock (Lock) _stream.Flush();
        }

        public void FormattedWriteLine(LogLevel? level, string message)
        {
            if (level.HasValue && level.Value < _minimum) return;
            string line;
            if (_json)
            {
                var sb = new StringBuilder(64 + (message == null ? 0 : message.Length));
                sb.Append("{\"timestamp\":\"").Append(Timestamp()).Append('"');
                if (level.HasValue) sb.Append(",\"level\":\"").Append(level.Value.ToString()).Append('"');
                sb.Append(",\"requestId\":");
                JsonCodec.WriteString(sb, RequestId ?? "");
                sb.Append(",\"message\":");
                JsonCodec.WriteString(sb, message ?? "");
                sb.Append("}\n");
                line = sb.ToString();
            }
            else if (_unformatted)
            {
                line = (message ?? "") + "\n";
            }
            else if (level.HasValue)
            {
                line = Timestamp() + "\t" + RequestId + "\t" + Label(level.Value) + "\t" + (message ?? "") + "\n";
            }
            else
            {
                line = Timestamp() + "\t" + RequestId + "\t" + (message ?? "") + "\n";
            }
            lock (Lock)
            {
                char[] chars = line.ToCharArray();
                WriteRaw(chars, 0, chars.Length, false);
            }
        }

        private static string Timestamp()
        {
            return DateTime.UtcNow.ToString("yyyy-MM-ddTHH:mm:ss.fffZ", CultureInfo.InvariantCulture);
        }

        private void Line(string message)
        {
            FormattedWriteLine(_defaultLevel, message);
        }

        public override void WriteLine() { Line(""); }
        public override void WriteLine(string value) { Line(value); }
        public override void WriteLine(object value) { Line(value == null ? "" : Convert.ToString(value, FormatProvider)); }
        public override void WriteLine(bool value) { Line(value ? "True" : "False"); }
        public override void WriteLine(char value) { Line(value.ToString()); }
        public override void WriteLine(char[] buffer) { Line(buffer == null ? "" : new string(buffer)); }
        public override void WriteLine(char[] buffer, int index, int count) { Line(new string(buffer, index, count)); }
        public override void WriteLine(decimal value) { Line(value.ToString(FormatProvider)); }
        public override void WriteLine(double value) { Line(value.ToString(FormatProvider)); }
        public override void WriteLine(float value) { Line(value.ToString(FormatProvider)); }
        public override void WriteLine(int value) { Line(value.ToString(FormatProvider)); }
        public override void WriteLine(uint value) { Line(value.ToString(FormatProvider)); }
        public override void WriteLine(long value) { Line(value.ToString(FormatProvider)); }
        public override void WriteLine(ulong value) { Line(value.ToString(FormatProvider)); }
        public override void WriteLine(string format, object arg0) { Line(string.Format(FormatProvider, format, arg0)); }
        public override void WriteLine(string format, object arg0, object arg1) { Line(string.Format(FormatProvider, format, arg0, arg1)); }
        public override void WriteLine(string format, object arg0, object arg1, object arg2) { Line(string.Format(FormatProvider, format, arg0, arg1, arg2)); }
        public override void WriteLine(string format, params object[] arg) { Line(string.Format(FormatProvider, format, arg)); }
        public override Task WriteLineAsync(string value) { Line(value); return Task.FromResult(true); }
        public override Task WriteLineAsync() { Line(""); return Task.FromResult(true); }
        public override Task WriteAsync(string value) { Write(value); return Task.FromResult(true); }
        public override Task FlushAsync() { Flush(); return Task.FromResult(true); }
    }

    // ------------------------------------------------------------------------------------
    // Runtime API client: HTTP/1.1 over one keep-alive TCP connection
    // ------------------------------------------------------------------------------------

    internal sealed class ApiResponse
    {
        public int Status;
        public Dictionary<string, string> Headers;
        public byte[] Body;
        public bool Closed; // the server closed the connection after this response

        public string Header(string name)
        {
            string value;
            return Headers.TryGetValue(name, out value) ? value : null;
        }
    }

    internal sealed class ConnectionLostException : IOException
    {
        public readonly bool Partial;

        public ConnectionLostException(bool partial) : base("Runtime API connection closed by the server")
        {
            Partial = partial;
        }
    }

    /// <summary>
    /// A blocking TCP socket straight on libc. System.Net.Sockets.Socket costs ~50 ms on its
    /// first use under Mono (its static initialisation loads System.Configuration and
    /// System.Xml to read machine.config); these few P/Invokes cost nothing.
    /// </summary>
    internal sealed unsafe class NativeSocket
    {
        private const int AF_INET = 2, AF_INET6 = 10, SOCK_STREAM = 1, SOCK_CLOEXEC = 0x80000;
        private const int IPPROTO_TCP = 6, TCP_NODELAY = 1, MSG_NOSIGNAL = 0x4000;
        private const int EINTR = 4, EAGAIN = 11, EISCONN = 106, EALREADY = 114, EINPROGRESS = 115;

        [DllImport("libc", SetLastError = true)]
        private static extern int socket(int domain, int type, int protocol);

        [DllImport("libc", SetLastError = true)]
        private static extern int connect(int fd, byte[] address, int length);

        [DllImport("libc", SetLastError = true)]
        private static extern int setsockopt(int fd, int level, int name, ref int value, int length);

        [DllImport("libc", SetLastError = true)]
        private static extern IntPtr send(int fd, byte* buffer, IntPtr length, int flags);

        [DllImport("libc", SetLastError = true)]
        private static extern IntPtr recv(int fd, byte* buffer, IntPtr length, int flags);

        [DllImport("libc", SetLastError = true)]
        private static extern int close(int fd);

        private int _fd;

        private NativeSocket(int fd) { _fd = fd; }

        public static NativeSocket Connect(string host, int port)
        {
            byte[] address = SocketAddress(host, port);
            int family = address.Length == 16 ? AF_INET : AF_INET6;
            int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
            if (fd < 0) throw Failure("socket");
            int one = 1;
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, ref one, 4);
            while (connect(fd, address, address.Length) != 0)
            {
                int errno = Marshal.GetLastWin32Error();
                if (errno == EISCONN) break;
                if (errno == EINTR || errno == EALREADY || errno == EINPROGRESS || errno == EAGAIN)
                {
                    System.Threading.Thread.Sleep(1);
                    continue;
                }
                close(fd);
                throw new SocketFailure("connect to " + host + ":" + port + " failed: errno " + errno, errno);
            }
            return new NativeSocket(fd);
        }

        // struct sockaddr_in / sockaddr_in6, Linux layout
        private static byte[] SocketAddress(string host, int port)
        {
            byte[] ip = ParseIPv4(host == "localhost" ? "127.0.0.1" : host) ?? Resolve(host);
            byte[] sa = new byte[ip.Length == 4 ? 16 : 28];
            sa[0] = (byte)(ip.Length == 4 ? AF_INET : AF_INET6); // sa_family, little-endian host order
            sa[2] = (byte)(port >> 8);
            sa[3] = (byte)port;
            Buffer.BlockCopy(ip, 0, sa, ip.Length == 4 ? 4 : 8, ip.Length);
            return sa;
        }

        // IPv6 literals and host names: System.dll is loaded only for these
        [MethodImpl(MethodImplOptions.NoInlining)]
        private static byte[] Resolve(string host)
        {
            IPAddress parsed;
            if (!IPAddress.TryParse(host, out parsed))
            {
                IPAddress[] all = Dns.GetHostAddresses(host);
                parsed = all[0];
                foreach (IPAddress a in all)
                {
                    if (a.AddressFamily == AddressFamily.InterNetwork)
                    {
                        parsed = a;
                        break;
                    }
                }
            }
            return parsed.GetAddressBytes();
        }

        private static byte[] ParseIPv4(string host)
        {
            string[] parts = host.Split('.');
            if (parts.Length != 4) return null;
            var ip = new byte[4];
            for (int i = 0; i < 4; i++)
            {
                int v;
                if (!int.TryParse(parts[i], NumberStyles.None, CultureInfo.InvariantCulture, out v) || v > 255) return null;
                ip[i] = (byte)v;
            }
            return ip;
        }

        private static SocketFailure Failure(string call)
        {
            int errno = Marshal.GetLastWin32Error();
            return new SocketFailure(call + " failed: errno " + errno, errno);
        }

        public void SendAll(byte[] data, int offset, int count)
        {
            fixed (byte* p = data)
            {
                while (count > 0)
                {
                    long n = (long)send(_fd, p + offset, (IntPtr)count, MSG_NOSIGNAL);
                    if (n < 0)
                    {
                        int errno = Marshal.GetLastWin32Error();
                        if (errno == EINTR) continue;
                        throw new SocketFailure("send failed: errno " + errno, errno);
                    }
                    offset += (int)n;
                    count -= (int)n;
                }
            }
        }

        /// <summary>Blocks until some bytes arrive; 0 at the end of the stream.</summary>
        public int Receive(byte[] buffer, int offset, int count)
        {
            fixed (byte* p = buffer)
            {
                while (true)
                {
                    long n = (long)recv(_fd, p + offset, (IntPtr)count, 0);
                    if (n >= 0) return (int)n;
                    int errno = Marshal.GetLastWin32Error();
                    if (errno == EINTR) continue; // Mono's GC signals interrupt blocking calls
                    if (errno == 104) return 0;   // ECONNRESET: treat as the end of the stream
                    throw new SocketFailure("recv failed: errno " + errno, errno);
                }
            }
        }

        public void Close()
        {
            if (_fd >= 0)
            {
                close(_fd);
                _fd = -1;
            }
        }
    }

    internal sealed class SocketFailure : IOException
    {
        public readonly int Errno;

        public SocketFailure(string message, int errno) : base(message) { Errno = errno; }

        // the peer had closed the connection before we wrote (EPIPE, ECONNRESET)
        public bool Stale { get { return Errno == 32 || Errno == 104; } }
    }

    internal sealed class RuntimeApiClient
    {
        private const string Prefix = "/2018-06-01/runtime/";
        private const string ErrorContentType = "application/vnd.aws.lambda.error+json";
        private const string Unreserved = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~";
        private static readonly byte[] HeaderEnd = { 13, 10, 13, 10 };
        private static readonly byte[] LineEnd = { 13, 10 };

        private readonly string _host;
        private readonly int _port;
        private readonly string _commonHeaders;
        private readonly byte[] _nextRequest;
        private readonly byte[] _waitRequest;
        private NativeSocket _socket;
        private byte[] _buf = new byte[65536];
        private int _start, _end;

        public RuntimeApiClient(string address)
        {
            int colon = address.LastIndexOf(':');
            if (colon < 0) throw new ArgumentException("AWS_LAMBDA_RUNTIME_API must be host:port, got " + address);
            _host = address.Substring(0, colon).Trim('[', ']');
            if (_host.Length == 0) _host = "127.0.0.1";
            _port = int.Parse(address.Substring(colon + 1), CultureInfo.InvariantCulture);
            string agent = "aws-lambda-dotnet/mono-" + Environment.Version + "-lambdad";
            _commonHeaders = "Host: " + address + "\r\nUser-Agent: " + agent + "\r\n";
            _nextRequest = Latin1("GET " + Prefix + "invocation/next HTTP/1.1\r\n" + _commonHeaders + "\r\n");
            _waitRequest = Latin1("GET " + Prefix + "lambdad/wait HTTP/1.1\r\n" + _commonHeaders + "\r\n");
        }

        private static byte[] Latin1(string s)
        {
            var bytes = new byte[s.Length];
            for (int i = 0; i < s.Length; i++) bytes[i] = s[i] < 256 ? (byte)s[i] : (byte)'?';
            return bytes;
        }

        private static string Latin1(byte[] bytes, int index, int count)
        {
            var chars = new char[count];
            for (int i = 0; i < count; i++) chars[i] = (char)bytes[index + i];
            return new string(chars);
        }

        private void EnsureConnected()
        {
            if (_socket == null)
            {
                _socket = NativeSocket.Connect(_host, _port);
                _start = _end = 0;
            }
        }

        public void Close()
        {
            NativeSocket socket = _socket;
            _socket = null;
            _start = _end = 0;
            if (socket != null) socket.Close();
        }

        private static byte[] Concat(byte[] a, byte[] b, byte[] c)
        {
            var all = new byte[a.Length + (b == null ? 0 : b.Length) + (c == null ? 0 : c.Length)];
            Buffer.BlockCopy(a, 0, all, 0, a.Length);
            int at = a.Length;
            if (b != null) { Buffer.BlockCopy(b, 0, all, at, b.Length); at += b.Length; }
            if (c != null) Buffer.BlockCopy(c, 0, all, at, c.Length);
            return all;
        }

        // Sends one request (head + body, plus an optional pipelined request) and reads the
        // first response, reconnecting once if the server had closed the idle connection.
        private ApiResponse Exchange(byte[] head, byte[] body, byte[] pipelined)
        {
            byte[] request;
            byte[] large = null;
            if (body == null || body.Length < 65536)
            {
                request = Concat(head, body, pipelined);
            }
            else
            {
                request = head;
                large = pipelined == null ? body : Concat(body, pipelined, null);
            }
            for (int attempt = 0; ; attempt++)
            {
                EnsureConnected();
                try
                {
                    _socket.SendAll(request, 0, request.Length);
                    if (large != null) _socket.SendAll(large, 0, large.Length);
                    return ReadResponse();
                }
                catch (ConnectionLostException lost)
                {
                    Close();
                    if (attempt > 0 || lost.Partial) throw;
                }
                catch (SocketFailure failure)
                {
                    Close();
                    if (attempt > 0 || !failure.Stale) throw;
                }
            }
        }

        // Receives more bytes into the buffer; false at the end of the stream.
        private bool Fill()
        {
            if (_start > 0 && _end == _buf.Length)
            {
                Buffer.BlockCopy(_buf, _start, _buf, 0, _end - _start);
                _end -= _start;
                _start = 0;
            }
            if (_end == _buf.Length) Array.Resize(ref _buf, _buf.Length * 2);
            int n = _socket.Receive(_buf, _end, _buf.Length - _end);
            if (n <= 0) return false;
            _end += n;
            return true;
        }

        private int Find(byte[] pattern, int from)
        {
            byte first = pattern[0];
            for (int i = from; i <= _end - pattern.Length; i++)
            {
                if (_buf[i] != first) continue;
                int j = 1;
                while (j < pattern.Length && _buf[i + j] == pattern[j]) j++;
                if (j == pattern.Length) return i;
            }
            return -1;
        }

        private string ReadLine()
        {
            int eol;
            while ((eol = Find(LineEnd, _start)) < 0)
                if (!Fill()) throw new ConnectionLostException(true);
            string line = Latin1(_buf, _start, eol - _start);
            _start = eol + 2;
            return line;
        }

        private byte[] ReadExact(int n)
        {
            var body = new byte[n];
            int have = Math.Min(n, _end - _start);
            Buffer.BlockCopy(_buf, _start, body, 0, have);
            _start += have;
            while (have < n)
            {
                int k = _socket.Receive(body, have, n - have);
                if (k <= 0) throw new ConnectionLostException(true);
                have += k;
            }
            return body;
        }

        private ApiResponse ReadResponse()
        {
            int end;
            while ((end = Find(HeaderEnd, _start)) < 0)
            {
                bool partial = _end > _start;
                if (!Fill()) throw new ConnectionLostException(partial);
            }
            string[] lines = Latin1(_buf, _start, end - _start).Split(new[] { "\r\n" }, StringSplitOptions.None);
            _start = end + 4;
            string[] statusLine = lines[0].Split(' ');
            var response = new ApiResponse
            {
                Status = int.Parse(statusLine[1], CultureInfo.InvariantCulture),
                Headers = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase),
            };
            for (int i = 1; i < lines.Length; i++)
            {
                int colon = lines[i].IndexOf(':');
                if (colon <= 0) continue;
                response.Headers[lines[i].Substring(0, colon).Trim()] = lines[i].Substring(colon + 1).Trim();
            }
            if (response.Status >= 100 && response.Status < 200) return ReadResponse();

            string length = response.Header("content-length");
            string encoding = response.Header("transfer-encoding");
            if (length != null)
            {
                response.Body = ReadExact(int.Parse(length, CultureInfo.InvariantCulture));
            }
            else if (encoding != null && encoding.IndexOf("chunked", StringComparison.OrdinalIgnoreCase) >= 0)
            {
                response.Body = ReadChunked();
            }
            else if (response.Status == 204 || response.Status == 304)
            {
                response.Body = new byte[0];
            }
            else
            {
                // delimited by the end of the connection
                while (Fill()) { }
                response.Body = new byte[_end - _start];
                Buffer.BlockCopy(_buf, _start, response.Body, 0, _end - _start);
                response.Closed = true;
                Close();
                return response;
            }
            if (_start == _end) _start = _end = 0;
            string connection = response.Header("connection");
            if (connection != null && connection.Equals("close", StringComparison.OrdinalIgnoreCase))
            {
                response.Closed = true;
                Close();
            }
            return response;
        }

        private byte[] ReadChunked()
        {
            var body = new MemoryStream();
            while (true)
            {
                string sizeLine = ReadLine();
                int semi = sizeLine.IndexOf(';');
                if (semi >= 0) sizeLine = sizeLine.Substring(0, semi);
                sizeLine = sizeLine.Trim();
                int size = sizeLine.Length == 0 ? 0 : int.Parse(sizeLine, NumberStyles.HexNumber, CultureInfo.InvariantCulture);
                if (size == 0)
                {
                    while (ReadLine().Length > 0) { } // trailers, up to the blank line
                    return body.ToArray();
                }
                byte[] chunk = ReadExact(size);
                body.Write(chunk, 0, chunk.Length);
                ReadLine();
            }
        }

        private static ApiResponse CheckNext(ApiResponse response)
        {
            if (response.Status != 200)
                throw new IOException("Runtime API /invocation/next answered " + response.Status + ": " + Encoding.UTF8.GetString(response.Body ?? new byte[0]));
            return response;
        }

        public ApiResponse Next()
        {
            return CheckNext(Exchange(_nextRequest, null, null));
        }

        private static string Quote(string value)
        {
            var sb = new StringBuilder(value.Length);
            foreach (char c in value)
            {
                if (Unreserved.IndexOf(c) >= 0) sb.Append(c);
                else foreach (byte b in Encoding.UTF8.GetBytes(c.ToString())) sb.Append('%').Append(b.ToString("X2"));
            }
            return sb.ToString();
        }

        private static string HeaderSafe(string value)
        {
            return value.Replace('\r', ' ').Replace('\n', ' ');
        }

        private byte[] PostHead(string path, int length, string contentType, string errorType)
        {
            var head = new StringBuilder(256);
            head.Append("POST ").Append(Prefix).Append(path).Append(" HTTP/1.1\r\n").Append(_commonHeaders);
            head.Append("Content-Type: ").Append(contentType).Append("\r\n");
            head.Append("Content-Length: ").Append(length.ToString(CultureInfo.InvariantCulture)).Append("\r\n");
            if (errorType != null) head.Append("Lambda-Runtime-Function-Error-Type: ").Append(HeaderSafe(errorType)).Append("\r\n");
            head.Append("\r\n");
            return Latin1(head.ToString());
        }

        /// <summary>
        /// Posts an invocation's result and asks for the next invocation in the same write
        /// (HTTP/1.1 pipelining), then reads both answers: one system call and one wake-up
        /// less per invocation on each side. Falls back to a plain /next if the server closed
        /// the connection after the post.
        /// </summary>
        public ApiResponse FinishAndNext(string requestId, byte[] body, string errorType, out int postStatus)
        {
            string path = "invocation/" + Quote(requestId) + (errorType == null ? "/response" : "/error");
            byte[] head = PostHead(path, body.Length, errorType == null ? "application/json" : ErrorContentType, errorType);
            ApiResponse posted = Exchange(head, body, _nextRequest);
            postStatus = posted.Status;
            if (posted.Closed || _socket == null) return Next();
            try
            {
                return CheckNext(ReadResponse());
            }
            catch (ConnectionLostException lost)
            {
                Close();
                if (lost.Partial) throw;
                return Next(); // the server dropped the pipelined request: ask again
            }
        }

        /// <summary>
        /// A staged environment's warm-up, before its wait (nothing is connected yet): parses a
        /// canned /invocation/next answer carrying <paramref name="body"/> as the first real one
        /// will be, and builds the heads of a response and of an error, so that the first
        /// invocation's are not the first (JIT). Nothing is sent; the buffer is left empty.
        /// </summary>
        public ApiResponse Rehearse(byte[] body)
        {
            if (_socket != null) throw new InvalidOperationException("the Runtime API client is connected");
            long deadline = (long)(DateTime.UtcNow - new DateTime(1970, 1, 1, 0, 0, 0, DateTimeKind.Utc)).TotalMilliseconds + 60000;
            byte[] head = Latin1("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                + "Lambda-Runtime-Aws-Request-Id: 00000000-0000-0000-0000-000000000000\r\n"
                + "Lambda-Runtime-Deadline-Ms: " + deadline.ToString(CultureInfo.InvariantCulture) + "\r\n"
                + "Lambda-Runtime-Invoked-Function-Arn: arn:aws:lambda:us-east-1:000000000000:function:warm-up\r\n"
                + "Lambda-Runtime-Trace-Id: Root=1-00000000-000000000000000000000000;Parent=0000000000000000;Sampled=0\r\n"
                + "Lambda-Runtime-Client-Context: {\"client\":{\"installation_id\":\"i\",\"app_title\":\"t\"},\"custom\":{\"k\":\"v\"},\"env\":{\"k\":\"v\"}}\r\n"
                + "Lambda-Runtime-Cognito-Identity: {\"cognitoIdentityId\":\"i\",\"cognitoIdentityPoolId\":\"p\"}\r\n"
                + "Content-Length: " + body.Length.ToString(CultureInfo.InvariantCulture) + "\r\n\r\n");
            byte[] canned = Concat(head, body, null);
            if (_buf.Length < canned.Length) _buf = new byte[canned.Length];
            Buffer.BlockCopy(canned, 0, _buf, 0, canned.Length);
            _start = 0;
            _end = canned.Length;
            try
            {
                ApiResponse next = CheckNext(ReadResponse());
                string path = "invocation/" + Quote(next.Header("lambda-runtime-aws-request-id"));
                PostHead(path + "/response", body.Length, "application/json", null);
                PostHead(path + "/error", body.Length, ErrorContentType, "Warmup");
                return next;
            }
            finally
            {
                _start = _end = 0;
            }
        }

        /// <summary>
        /// A staged environment's wait (LAMBDAD_STAGED): lambdad answers GET /runtime/lambdad/wait
        /// (200, {}) when the environment's first invocation arrives, and init may run then. Any
        /// failure (an exception, another status) lets init run at once: its /next meets it again.
        /// </summary>
        public void WaitForWork()
        {
            try
            {
                Exchange(_waitRequest, null, null);
            }
            catch (Exception)
            {
                Close();
            }
        }

        public int PostInitError(byte[] body)
        {
            // like AWS's ReportInitializationErrorAsync(exception): no error-type header
            return Exchange(PostHead("init/error", body.Length, ErrorContentType, null), body, null).Status;
        }
    }
}
