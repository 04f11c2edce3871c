// lambdad's stand-in for the (Newtonsoft.Json based) Amazon.Lambda.Serialization.Json package,
// so that older handlers carrying
//   [assembly: LambdaSerializer(typeof(Amazon.Lambda.Serialization.Json.JsonSerializer))]
// compile and run. It uses the lambdad JSON engine from
// Amazon.Lambda.Serialization.SystemTextJson.dll: names as declared, nulls omitted,
// case-insensitive matching (Newtonsoft's defaults as AWS configures them).

using System;
using System.IO;
using System.Reflection;
using System.Text;
using Amazon.Lambda.Core;
using Lambdad.Json;

[assembly: AssemblyTitle("Amazon.Lambda.Serialization.Json (lambdad)")]
[assembly: AssemblyVersion("1.0.0.0")]
[assembly: AssemblyInformationalVersion("2.2.0-lambdad")]

namespace Amazon.Lambda.Serialization.Json
{
    /// <summary>Thrown when the event or the response cannot be converted.</summary>
    public class JsonSerializerException : Exception
    {
        public JsonSerializerException(string message) : base(message) { }

        public JsonSerializerException(string message, Exception exception) : base(message, exception) { }
    }

    /// <summary>The serializer of AWS's older .NET templates.</summary>
    public class JsonSerializer : ILambdaSerializer
    {
        private static readonly UTF8Encoding Utf8 = new UTF8Encoding(false);
        private readonly JsonOptions _options = new JsonOptions { Naming = NamingPolicy.AsIs, AwsNames = false };

        public void Serialize<T>(T response, Stream responseStream)
        {
            string json;
            try
            {
                json = JsonCodec.Serialize(response, _options);
            }
            catch (Exception e)
            {
                throw new JsonSerializerException("Error converting the response object of type " + typeof(T).FullName + " from the Lambda function to JSON: " + e.Message, e);
            }
            byte[] bytes = Utf8.GetBytes(json);
            responseStream.Write(bytes, 0, bytes.Length);
        }

        public T Deserialize<T>(Stream requestStream)
        {
            string json;
            using (var reader = new StreamReader(requestStream, Utf8)) json = reader.ReadToEnd();
            try
            {
                return (T)JsonCodec.Deserialize(json, typeof(T), _options);
            }
            catch (Exception e)
            {
                throw new JsonSerializerException("Error converting the Lambda event JSON payload to type " + typeof(T).FullName + ": " + e.Message, e);
            }
        }
    }
}
