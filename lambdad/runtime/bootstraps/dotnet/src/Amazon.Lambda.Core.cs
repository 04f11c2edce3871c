// lambdad's API-compatible stand-in for the Amazon.Lambda.Core NuGet package.
//
// Handler code written against AWS's Amazon.Lambda.Core compiles unchanged against this
// assembly (same namespace, type and member names). It is built with Mono's `mcs` into
// Amazon.Lambda.Core.dll next to lambdad-dotnet-runtime.exe; see ../README.md.

using System;
using System.Collections.Generic;
using System.IO;
using System.Reflection;

[assembly: AssemblyTitle("Amazon.Lambda.Core (lambdad)")]
[assembly: AssemblyVersion("1.0.0.0")]
[assembly: AssemblyInformationalVersion("2.5.0-lambdad")]

namespace Amazon.Lambda.Core
{
    /// <summary>Information about the invocation, the function and the execution environment.</summary>
    public interface ILambdaContext
    {
        /// <summary>The AWS request ID associated with the request.</summary>
        string AwsRequestId { get; }

        /// <summary>Client application and device information (AWS Mobile SDK); can be null.</summary>
        IClientContext ClientContext { get; }

        /// <summary>Name of the Lambda function that is running.</summary>
        string FunctionName { get; }

        /// <summary>The version of the function that is executing.</summary>
        string FunctionVersion { get; }

        /// <summary>Amazon Cognito identity of the caller (AWS Mobile SDK); can be null.</summary>
        ICognitoIdentity Identity { get; }

        /// <summary>The ARN used to invoke this function (function or alias ARN).</summary>
        string InvokedFunctionArn { get; }

        /// <summary>The logger associated with this context.</summary>
        ILambdaLogger Logger { get; }

        /// <summary>The CloudWatch log group of the function.</summary>
        string LogGroupName { get; }

        /// <summary>The CloudWatch log stream of this execution environment.</summary>
        string LogStreamName { get; }

        /// <summary>Memory limit, in MB, configured for the function.</summary>
        int MemoryLimitInMB { get; }

        /// <summary>Time left before the invocation times out.</summary>
        TimeSpan RemainingTime { get; }
    }

    /// <summary>Lambda runtime logger.</summary>
    public interface ILambdaLogger
    {
        /// <summary>Logs a message.</summary>
        void Log(string message);

        /// <summary>Logs a message followed by the current line terminator.</summary>
        void LogLine(string message);
    }

    /// <summary>Information about the Amazon Cognito identity provider.</summary>
    public interface ICognitoIdentity
    {
        /// <summary>The Amazon Cognito identity ID.</summary>
        string IdentityId { get; }

        /// <summary>The Amazon Cognito identity pool ID.</summary>
        string IdentityPoolId { get; }
    }

    /// <summary>Information about the client application passed by the AWS Mobile SDK.</summary>
    public interface IClientApplication
    {
        /// <summary>Application package name.</summary>
        string AppPackageName { get; }

        /// <summary>Application title.</summary>
        string AppTitle { get; }

        /// <summary>Application version code.</summary>
        string AppVersionCode { get; }

        /// <summary>Application version name.</summary>
        string AppVersionName { get; }

        /// <summary>Installation ID.</summary>
        string InstallationId { get; }
    }

    /// <summary>Client context sent by the AWS Mobile SDK.</summary>
    public interface IClientContext
    {
        /// <summary>Environment information provided by the mobile SDK.</summary>
        IDictionary<string, string> Environment { get; }

        /// <summary>The client information provided by the AWS Mobile SDK.</summary>
        IClientApplication Client { get; }

        /// <summary>Custom values set by the client application.</summary>
        IDictionary<string, string> Custom { get; }
    }

    /// <summary>Converts the invocation payload to the handler's input type and its result back.</summary>
    public interface ILambdaSerializer
    {
        /// <summary>Deserializes a stream to a particular type.</summary>
        T Deserialize<T>(Stream requestStream);

        /// <summary>Serializes an object to a stream.</summary>
        void Serialize<T>(T response, Stream responseStream);
    }

    /// <summary>
    /// Names the <see cref="ILambdaSerializer"/> used to convert a handler's input and output,
    /// on the assembly (<c>[assembly: LambdaSerializer(typeof(...))]</c>) or on the method.
    /// </summary>
    [AttributeUsage(AttributeTargets.Assembly | AttributeTargets.Method, AllowMultiple = false)]
    public sealed class LambdaSerializerAttribute : Attribute
    {
        /// <summary>Type of the serializer; it needs a public parameterless constructor.</summary>
        public Type SerializerType { get; set; }

        /// <summary>Constructs the attribute with the serializer type.</summary>
        public LambdaSerializerAttribute(Type serializerType)
        {
            SerializerType = serializerType;
        }
    }

    /// <summary>Static logger; the lambdad runtime routes it to the function's log.</summary>
    public static class LambdaLogger
    {
        // The runtime replaces this (by reflection, like AWS's runtime) so that messages
        // carry the timestamp and request id prefix; by default it writes to the console.
        private static Action<string> _loggingAction = LogToConsole;

        private static void LogToConsole(string message)
        {
            Console.WriteLine(message);
        }

        /// <summary>Logs a message to the function's log.</summary>
        public static void Log(string message)
        {
            _loggingAction(message);
        }
    }
}
