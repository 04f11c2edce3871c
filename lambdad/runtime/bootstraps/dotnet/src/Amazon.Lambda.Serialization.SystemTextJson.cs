// lambdad's stand-in for the Amazon.Lambda.Serialization.SystemTextJson NuGet package, plus
// the small reflection-based JSON engine (Lambdad.Json) that it and the runtime use.
//
// Mono has no System.Text.Json, and the JSON serializers Mono does ship pull in dozens of
// Debian packages (System.Web.Extensions) or cannot bind `object`/dictionaries naturally
// (DataContractJsonSerializer), so the engine is written here: stdlib only, mscorlib +
// System.Core. It follows System.Text.Json's behaviour as configured by AWS's
// DefaultLambdaJsonSerializer: property names as declared (CamelCaseLambdaJsonSerializer:
// camelCase), case-insensitive matching on input, null values omitted on output, enums as
// numbers, byte[]/MemoryStream as base64, DateTime as ISO 8601. Deviations, all lenient:
// public fields are (de)serialised too, `object` targets become Dictionary<string, object> /
// List<object> / string / long / double / bool instead of JsonElement, and the runtime type
// of a value (not the declared one) decides which members are written.

using System;
using System.Collections;
using System.Collections.Generic;
using System.Globalization;
using System.IO;
using System.Reflection;
using System.Text;
using Amazon.Lambda.Core;

[assembly: AssemblyTitle("Amazon.Lambda.Serialization.SystemTextJson (lambdad)")]
[assembly: AssemblyVersion("1.0.0.0")]
[assembly: AssemblyInformationalVersion("2.4.0-lambdad")]

namespace Lambdad.Json
{
    /// <summary>How member names are written (and matched).</summary>
    public enum NamingPolicy
    {
        /// <summary>As declared in the type (System.Text.Json's default).</summary>
        AsIs,

        /// <summary>System.Text.Json's JsonNamingPolicy.CamelCase.</summary>
        CamelCase,
    }

    /// <summary>Options of the JSON engine. Instances cache member maps: reuse them.</summary>
    public sealed class JsonOptions
    {
        public NamingPolicy Naming = NamingPolicy.AsIs;
        public bool IgnoreNullValues = true;
        public bool CaseInsensitive = true;

        /// <summary>AwsNamingPolicy's fixed names: XAmzId2 -> x-amz-id-2, XAmzRequestId -> x-amz-request-id.</summary>
        public bool AwsNames = true;

        public int MaxDepth = 64;

        internal readonly Dictionary<Type, MemberMap> Maps = new Dictionary<Type, MemberMap>();

        public static readonly JsonOptions Default = new JsonOptions();
    }

    /// <summary>Malformed JSON, or JSON that does not fit the target type.</summary>
    public class JsonException : Exception
    {
        public JsonException(string message) : base(message) { }

        public JsonException(string message, Exception inner) : base(message, inner) { }
    }

    /// <summary>A JSON number kept as its text until the target type is known.</summary>
    internal sealed class JsonNumber
    {
        public readonly string Text;

        public JsonNumber(string text) { Text = text; }

        public bool IsIntegral
        {
            get { return Text.IndexOfAny(new[] { '.', 'e', 'E' }) < 0; }
        }

        public object Natural()
        {
            if (IsIntegral)
            {
                long l;
                if (long.TryParse(Text, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out l)) return l;
                decimal m; // beyond long: keep every digit while decimal can
                if (decimal.TryParse(Text, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out m)) return m;
            }
            return double.Parse(Text, NumberStyles.Float, CultureInfo.InvariantCulture);
        }
    }

    internal sealed class Member
    {
        public string Name;
        public Type Type;
        public PropertyInfo Property;
        public FieldInfo Field;
        public bool CanRead;
        public bool CanWrite;

        public object Get(object target)
        {
            return Property != null ? Property.GetValue(target, null) : Field.GetValue(target);
        }

        public void Set(object target, object value)
        {
            if (Property != null) Property.SetValue(target, value, null);
            else Field.SetValue(target, value);
        }
    }

    internal sealed class MemberMap
    {
        public Member[] Readable;
        public Dictionary<string, Member> Exact;
        public Dictionary<string, Member> Folded;
    }

    /// <summary>Entry points of the engine.</summary>
    public static class JsonCodec
    {
        // ---------------------------------------------------------------- parsing

        /// <summary>Parses JSON text into Dictionary&lt;string, object&gt;, List&lt;object&gt;, string,
        /// long, double, bool or null.</summary>
        public static object Parse(string text)
        {
            return Naturalize(ParseTree(text));
        }

        internal static object ParseTree(string text)
        {
            var parser = new Parser(text);
            return parser.ParseDocument();
        }

        /// <summary>Deserialises JSON text to an instance of <paramref name="type"/>.</summary>
        public static object Deserialize(string text, Type type, JsonOptions options)
        {
            return Bind(ParseTree(text), type, options ?? JsonOptions.Default, 0, "$");
        }

        public static T Deserialize<T>(string text, JsonOptions options)
        {
            return (T)Deserialize(text, typeof(T), options);
        }

        /// <summary>Serialises a value to JSON text.</summary>
        public static string Serialize(object value, JsonOptions options)
        {
            var sb = new StringBuilder(256);
            Write(sb, value, options ?? JsonOptions.Default, 0);
            return sb.ToString();
        }

        /// <summary>Appends the JSON string literal of <paramref name="s"/> (quotes included).</summary>
        public static void WriteString(StringBuilder sb, string s)
        {
            sb.Append('"');
            int start = 0;
            for (int i = 0; i < s.Length; i++)
            {
                char c = s[i];
                string esc = null;
                switch (c)
                {
                    case '"': esc = "\\\""; break;
                    case '\\': esc = "\\\\"; break;
                    case '\n': esc = "\\n"; break;
                    case '\r': esc = "\\r"; break;
                    case '\t': esc = "\\t"; break;
                    case '\b': esc = "\\b"; break;
                    case '\f': esc = "\\f"; break;
                    default:
                        if (c < 0x20 || c == '\u2028' || c == '\u2029')
                            esc = "\\u" + ((int)c).ToString("x4", CultureInfo.InvariantCulture);
                        break;
                }
                if (esc != null)
                {
                    if (i > start) sb.Append(s, start, i - start);
                    sb.Append(esc);
                    start = i + 1;
                }
            }
            if (start < s.Length) sb.Append(s, start, s.Length - start);
            sb.Append('"');
        }

        public static string Quote(string s)
        {
            var sb = new StringBuilder(s.Length + 2);
            WriteString(sb, s);
            return sb.ToString();
        }

        internal static object Naturalize(object node)
        {
            var num = node as JsonNumber;
            if (num != null) return num.Natural();
            var obj = node as Dictionary<string, object>;
            if (obj != null)
            {
                var copy = new Dictionary<string, object>(obj.Count);
                foreach (var kv in obj) copy[kv.Key] = Naturalize(kv.Value);
                return copy;
            }
            var list = node as List<object>;
            if (list != null)
            {
                var copy = new List<object>(list.Count);
                foreach (var item in list) copy.Add(Naturalize(item));
                return copy;
            }
            return node;
        }

        private sealed class Parser
        {
            private readonly string _s;
            private int _i;
            private int _depth;

            public Parser(string s) { _s = s; }

            public object ParseDocument()
            {
                SkipWs();
                if (_i >= _s.Length) throw Error("The input does not contain any JSON tokens");
                var value = ParseValue();
                SkipWs();
                if (_i < _s.Length) throw Error("'" + _s[_i] + "' is invalid after a single JSON value");
                return value;
            }

            private JsonException Error(string what)
            {
                return new JsonException(what + ". Position: " + _i.ToString(CultureInfo.InvariantCulture) + ".");
            }

            private void SkipWs()
            {
                while (_i < _s.Length)
                {
                    char c = _s[_i];
                    if (c == ' ' || c == '\t' || c == '\n' || c == '\r') _i++;
                    else break;
                }
            }

            private object ParseValue()
            {
                if (_i >= _s.Length) throw Error("Unexpected end of data");
                char c = _s[_i];
                switch (c)
                {
                    case '{': return ParseObject();
                    case '[': return ParseArray();
                    case '"': return ParseString();
                    case 't': Literal("true"); return true;
                    case 'f': Literal("false"); return false;
                    case 'n': Literal("null"); return null;
                    default:
                        if (c == '-' || (c >= '0' && c <= '9')) return ParseNumber();
                        throw Error("'" + c + "' is an invalid start of a value");
                }
            }

            private void Literal(string word)
            {
                if (string.CompareOrdinal(_s, _i, word, 0, word.Length) != 0)
                    throw Error("'" + _s[_i] + "' is an invalid JSON literal. Expected the literal '" + word + "'");
                _i += word.Length;
            }

            private void Enter()
            {
                if (++_depth > 256) throw Error("The maximum nesting depth of 256 was exceeded");
            }

            private Dictionary<string, object> ParseObject()
            {
                Enter();
                _i++;
                var obj = new Dictionary<string, object>();
                SkipWs();
                if (_i < _s.Length && _s[_i] == '}') { _i++; _depth--; return obj; }
                while (true)
                {
                    SkipWs();
                    if (_i >= _s.Length || _s[_i] != '"') throw Error("Expected a property name");
                    string key = ParseString();
                    SkipWs();
                    if (_i >= _s.Length || _s[_i] != ':') throw Error("Expected ':' after a property name");
                    _i++;
                    SkipWs();
                    obj[key] = ParseValue();
                    SkipWs();
                    if (_i >= _s.Length) throw Error("Unexpected end of data in an object");
                    char c = _s[_i++];
                    if (c == ',') continue;
                    if (c == '}') break;
                    _i--;
                    throw Error("'" + c + "' is invalid after a property value; expected ',' or '}'");
                }
                _depth--;
                return obj;
            }

            private List<object> ParseArray()
            {
                Enter();
                _i++;
                var list = new List<object>();
                SkipWs();
                if (_i < _s.Length && _s[_i] == ']') { _i++; _depth--; return list; }
                while (true)
                {
                    SkipWs();
                    list.Add(ParseValue());
                    SkipWs();
                    if (_i >= _s.Length) throw Error("Unexpected end of data in an array");
                    char c = _s[_i++];
                    if (c == ',') continue;
                    if (c == ']') break;
                    _i--;
                    throw Error("'" + c + "' is invalid after a value; expected ',' or ']'");
                }
                _depth--;
                return list;
            }

            private string ParseString()
            {
                _i++; // opening quote
                int start = _i;
                StringBuilder sb = null;
                while (true)
                {
                    if (_i >= _s.Length) throw Error("Unterminated string");
                    char c = _s[_i];
                    if (c == '"')
                    {
                        string result = sb == null ? _s.Substring(start, _i - start) : sb.Append(_s, start, _i - start).ToString();
                        _i++;
                        return result;
                    }
                    if (c == '\\')
                    {
                        if (sb == null) sb = new StringBuilder();
                        sb.Append(_s, start, _i - start);
                        _i++;
                        if (_i >= _s.Length) throw Error("Unterminated string");
                        char e = _s[_i++];
                        switch (e)
                        {
                            case '"': sb.Append('"'); break;
                            case '\\': sb.Append('\\'); break;
                            case '/': sb.Append('/'); break;
                            case 'b': sb.Append('\b'); break;
                            case 'f': sb.Append('\f'); break;
                            case 'n': sb.Append('\n'); break;
                            case 'r': sb.Append('\r'); break;
                            case 't': sb.Append('\t'); break;
                            case 'u':
                                if (_i + 4 > _s.Length) throw Error("Invalid \\u escape");
                                int code;
                                if (!int.TryParse(_s.Substring(_i, 4), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out code))
                                    throw Error("Invalid \\u escape");
                                sb.Append((char)code);
                                _i += 4;
                                break;
                            default:
                                _i--;
                                throw Error("'" + e + "' is not a valid escapable character");
                        }
                        start = _i;
                        continue;
                    }
                    if (c < 0x20) throw Error("Invalid control character in a string");
                    _i++;
                }
            }

            private JsonNumber ParseNumber()
            {
                int start = _i;
                if (_s[_i] == '-') _i++;
                int digits = _i;
                while (_i < _s.Length && _s[_i] >= '0' && _s[_i] <= '9') _i++;
                if (_i == digits) throw Error("Invalid number");
                if (_s[digits] == '0' && _i - digits > 1) throw Error("Invalid leading zero in a number");
                if (_i < _s.Length && _s[_i] == '.')
                {
                    _i++;
                    int frac = _i;
                    while (_i < _s.Length && _s[_i] >= '0' && _s[_i] <= '9') _i++;
                    if (_i == frac) throw Error("Invalid number");
                }
                if (_i < _s.Length && (_s[_i] == 'e' || _s[_i] == 'E'))
                {
                    _i++;
                    if (_i < _s.Length && (_s[_i] == '+' || _s[_i] == '-')) _i++;
                    int exp = _i;
                    while (_i < _s.Length && _s[_i] >= '0' && _s[_i] <= '9') _i++;
                    if (_i == exp) throw Error("Invalid number");
                }
                return new JsonNumber(_s.Substring(start, _i - start));
            }
        }

        // ---------------------------------------------------------------- binding

        private static JsonException Mismatch(object node, Type type, string path)
        {
            string kind = node == null ? "null" : node is string ? "a string" : node is bool ? "a boolean"
                : node is JsonNumber ? "a number" : node is List<object> ? "an array" : "an object";
            return new JsonException("The JSON value (" + kind + ") could not be converted to " + TypeName(type) + ". Path: " + path + ".");
        }

        internal static string TypeName(Type type)
        {
            return type.FullName ?? type.Name;
        }

        private static object Bind(object node, Type type, JsonOptions o, int depth, string path)
        {
            if (depth > o.MaxDepth)
                throw new JsonException("The maximum object depth of " + o.MaxDepth + " was exceeded. Path: " + path + ".");
            if (type == typeof(object)) return Naturalize(node);
            Type underlying = Nullable.GetUnderlyingType(type);
            if (node == null)
            {
                if (type.IsValueType && underlying == null) throw Mismatch(node, type, path);
                return null;
            }
            if (underlying != null) type = underlying;

            if (type == typeof(string))
            {
                var s = node as string;
                if (s == null) throw Mismatch(node, type, path);
                return s;
            }
            if (type == typeof(bool))
            {
                if (!(node is bool)) throw Mismatch(node, type, path);
                return node;
            }
            var num = node as JsonNumber;
            var str = node as string;
            if (type.IsEnum)
            {
                if (num != null)
                    return Enum.ToObject(type, ParseNumber(num, Enum.GetUnderlyingType(type), type, path));
                if (str != null)
                {
                    try { return Enum.Parse(type, str, true); }
                    catch (ArgumentException) { throw Mismatch(node, type, path); }
                }
                throw Mismatch(node, type, path);
            }
            if (type.IsPrimitive || type == typeof(decimal))
            {
                if (type == typeof(char))
                {
                    if (str == null || str.Length != 1) throw Mismatch(node, type, path);
                    return str[0];
                }
                if (num == null) throw Mismatch(node, type, path);
                return ParseNumber(num, type, type, path);
            }
            if (str != null)
            {
                try
                {
                    if (type == typeof(DateTime))
                        return DateTime.Parse(str, CultureInfo.InvariantCulture, DateTimeStyles.RoundtripKind);
                    if (type == typeof(DateTimeOffset))
                        return DateTimeOffset.Parse(str, CultureInfo.InvariantCulture);
                    if (type == typeof(Guid)) return Guid.Parse(str);
                    if (type == typeof(TimeSpan)) return TimeSpan.Parse(str, CultureInfo.InvariantCulture);
                    if (type.FullName == "System.Uri") return Activator.CreateInstance(type, str); // typeof(Uri) would load System.dll
                    if (type == typeof(byte[])) return Convert.FromBase64String(str);
                    if (type == typeof(MemoryStream) || type == typeof(Stream))
                        return new MemoryStream(Convert.FromBase64String(str));
                }
                catch (FormatException e)
                {
                    throw new JsonException("The JSON value could not be converted to " + TypeName(type) + ": " + e.Message + " Path: " + path + ".", e);
                }
                throw Mismatch(node, type, path);
            }
            if (num != null && type == typeof(DateTime))
            {
                // epoch seconds, as some AWS event sources send them
                double seconds = double.Parse(num.Text, NumberStyles.Float, CultureInfo.InvariantCulture);
                return new DateTime(1970, 1, 1, 0, 0, 0, DateTimeKind.Utc).AddSeconds(seconds);
            }

            var list = node as List<object>;
            var obj = node as Dictionary<string, object>;
            if (type.IsArray)
            {
                if (list == null) throw Mismatch(node, type, path);
                Type elem = type.GetElementType();
                Array array = Array.CreateInstance(elem, list.Count);
                for (int i = 0; i < list.Count; i++)
                    array.SetValue(Bind(list[i], elem, o, depth + 1, path + "[" + i + "]"), i);
                return array;
            }

            Type keyType, valueType;
            if (DictionaryTypes(type, out keyType, out valueType))
            {
                if (obj == null) throw Mismatch(node, type, path);
                object dict;
                if (type.IsInterface || type.IsAbstract)
                    dict = Activator.CreateInstance(typeof(Dictionary<,>).MakeGenericType(keyType, valueType));
                else
                    dict = Construct(type, path);
                var ndict = dict as IDictionary;
                MethodInfo add = ndict == null ? FindAdd(dict.GetType(), keyType, valueType) : null;
                foreach (var kv in obj)
                {
                    object key = BindKey(kv.Key, keyType, path);
                    object value = Bind(kv.Value, valueType, o, depth + 1, path + "." + kv.Key);
                    if (ndict != null) ndict[key] = value;
                    else add.Invoke(dict, new[] { key, value });
                }
                return dict;
            }
            if (type == typeof(IDictionary) || type == typeof(Hashtable))
            {
                if (obj == null) throw Mismatch(node, type, path);
                var table = type == typeof(Hashtable) ? new Hashtable() : (IDictionary)new Dictionary<string, object>();
                foreach (var kv in obj) table[kv.Key] = Naturalize(kv.Value);
                return table;
            }

            Type elementType = EnumerableElement(type);
            if (elementType != null || type == typeof(IEnumerable) || type == typeof(IList) || type == typeof(ICollection) || type == typeof(ArrayList))
            {
                if (list == null) throw Mismatch(node, type, path);
                if (elementType == null) elementType = typeof(object);
                object collection;
                if (type.IsInterface || type.IsAbstract)
                {
                    Type listType = typeof(List<>).MakeGenericType(elementType);
                    collection = type.IsAssignableFrom(listType) ? Activator.CreateInstance(listType) : NewSet(type, elementType);
                    if (collection == null) throw new JsonException("The collection type " + TypeName(type) + " is not supported. Path: " + path + ".");
                }
                else
                {
                    collection = Construct(type, path);
                }
                var nlist = collection as IList;
                MethodInfo add = nlist == null ? collection.GetType().GetMethod("Add", new[] { elementType }) : null;
                if (nlist == null && add == null)
                    throw new JsonException("The collection type " + TypeName(type) + " has no Add method. Path: " + path + ".");
                for (int i = 0; i < list.Count; i++)
                {
                    object item = Bind(list[i], elementType, o, depth + 1, path + "[" + i + "]");
                    if (nlist != null) nlist.Add(item);
                    else add.Invoke(collection, new[] { item });
                }
                return collection;
            }

            if (obj == null) throw Mismatch(node, type, path);
            if (type.IsInterface || type.IsAbstract)
                throw new JsonException("Deserialization of interface or abstract types is not supported. Type '" + TypeName(type) + "'. Path: " + path + ".");
            object target = Construct(type, path);
            MemberMap map = GetMap(type, o);
            foreach (var kv in obj)
            {
                Member m;
                if (!map.Exact.TryGetValue(kv.Key, out m) && (map.Folded == null || !map.Folded.TryGetValue(kv.Key, out m)))
                    continue; // unknown members are ignored
                if (!m.CanWrite) continue;
                m.Set(target, Bind(kv.Value, m.Type, o, depth + 1, path + "." + kv.Key));
            }
            return target;
        }

        // HashSet<T> lives in System.Core: kept out of Bind so that it is loaded only if used
        [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.NoInlining)]
        private static object NewSet(Type type, Type elementType)
        {
            Type setType = typeof(HashSet<>).MakeGenericType(elementType);
            return type.IsAssignableFrom(setType) ? Activator.CreateInstance(setType) : null;
        }

        private static object Construct(Type type, string path)
        {
            if (!type.IsValueType && type.GetConstructor(BindingFlags.Instance | BindingFlags.Public, null, Type.EmptyTypes, null) == null)
                throw new JsonException("Deserialization of types without a parameterless constructor is not supported. Type '" + TypeName(type) + "'. Path: " + path + ".");
            return Activator.CreateInstance(type);
        }

        private static MethodInfo FindAdd(Type type, Type keyType, Type valueType)
        {
            return type.GetMethod("Add", new[] { keyType, valueType });
        }

        private static object BindKey(string key, Type keyType, string path)
        {
            if (keyType == typeof(string) || keyType == typeof(object)) return key;
            try
            {
                if (keyType.IsEnum) return Enum.Parse(keyType, key, true);
                if (keyType == typeof(Guid)) return Guid.Parse(key);
                return Convert.ChangeType(key, keyType, CultureInfo.InvariantCulture);
            }
            catch (Exception e)
            {
                throw new JsonException("The dictionary key '" + key + "' could not be converted to " + TypeName(keyType) + ". Path: " + path + ".", e);
            }
        }

        private static object ParseNumber(JsonNumber num, Type type, Type reported, string path)
        {
            var inv = CultureInfo.InvariantCulture;
            const NumberStyles integer = NumberStyles.AllowLeadingSign;
            const NumberStyles real = NumberStyles.Float;
            try
            {
                switch (Type.GetTypeCode(type))
                {
                    case TypeCode.Int32: return int.Parse(num.Text, integer, inv);
                    case TypeCode.Int64: return long.Parse(num.Text, integer, inv);
                    case TypeCode.Double: return double.Parse(num.Text, real, inv);
                    case TypeCode.Decimal: return decimal.Parse(num.Text, real, inv);
                    case TypeCode.Single: return float.Parse(num.Text, real, inv);
                    case TypeCode.Int16: return short.Parse(num.Text, integer, inv);
                    case TypeCode.Byte: return byte.Parse(num.Text, integer, inv);
                    case TypeCode.SByte: return sbyte.Parse(num.Text, integer, inv);
                    case TypeCode.UInt16: return ushort.Parse(num.Text, integer, inv);
                    case TypeCode.UInt32: return uint.Parse(num.Text, integer, inv);
                    case TypeCode.UInt64: return ulong.Parse(num.Text, integer, inv);
                }
            }
            catch (FormatException e)
            {
                throw new JsonException("The JSON value " + num.Text + " could not be converted to " + TypeName(reported) + ". Path: " + path + ".", e);
            }
            catch (OverflowException e)
            {
                throw new JsonException("The JSON value " + num.Text + " could not be converted to " + TypeName(reported) + ". Path: " + path + ".", e);
            }
            throw new JsonException("The JSON value could not be converted to " + TypeName(reported) + ". Path: " + path + ".");
        }

        private static bool DictionaryTypes(Type type, out Type keyType, out Type valueType)
        {
            foreach (Type t in SelfAndInterfaces(type))
            {
                if (!t.IsGenericType) continue;
                Type def = t.GetGenericTypeDefinition();
                if (def == typeof(IDictionary<,>) || def == typeof(IReadOnlyDictionary<,>) || def == typeof(Dictionary<,>))
                {
                    Type[] args = t.GetGenericArguments();
                    keyType = args[0];
                    valueType = args[1];
                    return true;
                }
            }
            keyType = valueType = null;
            return false;
        }

        private static Type EnumerableElement(Type type)
        {
            if (type == typeof(string)) return null;
            foreach (Type t in SelfAndInterfaces(type))
            {
                if (t.IsGenericType && t.GetGenericTypeDefinition() == typeof(IEnumerable<>))
                    return t.GetGenericArguments()[0];
            }
            return null;
        }

        private static IEnumerable<Type> SelfAndInterfaces(Type type)
        {
            yield return type;
            foreach (Type t in type.GetInterfaces()) yield return t;
        }

        // ---------------------------------------------------------------- members

        /// <summary>System.Text.Json's JsonNamingPolicy.CamelCase.</summary>
        public static string CamelCase(string name)
        {
            if (string.IsNullOrEmpty(name) || !char.IsUpper(name[0])) return name;
            char[] chars = name.ToCharArray();
            for (int i = 0; i < chars.Length; i++)
            {
                if (i == 1 && !char.IsUpper(chars[i])) break;
                bool hasNext = i + 1 < chars.Length;
                if (i > 0 && hasNext && !char.IsUpper(chars[i + 1]))
                {
                    if (chars[i + 1] == ' ') chars[i] = char.ToLowerInvariant(chars[i]);
                    break;
                }
                chars[i] = char.ToLowerInvariant(chars[i]);
            }
            return new string(chars);
        }

        private static string ConvertName(string name, JsonOptions o)
        {
            if (o.AwsNames)
            {
                if (name == "XAmzId2") return "x-amz-id-2";
                if (name == "XAmzRequestId") return "x-amz-request-id";
            }
            return o.Naming == NamingPolicy.CamelCase ? CamelCase(name) : name;
        }

        // Attribute support by name, so that the attributes of System.Text.Json (ours, below),
        // Newtonsoft.Json and System.Runtime.Serialization are all honoured when present.
        private static void ReadAttributes(MemberInfo member, out string name, out bool ignore)
        {
            name = null;
            ignore = false;
            object[] attributes;
            try { attributes = member.GetCustomAttributes(true); }
            catch (Exception) { return; }
            foreach (object a in attributes)
            {
                string typeName = a.GetType().Name;
                if (typeName == "JsonIgnoreAttribute" || typeName == "IgnoreDataMemberAttribute" || typeName == "NonSerializedAttribute")
                {
                    ignore = true;
                }
                else if (typeName == "JsonPropertyNameAttribute" || typeName == "JsonPropertyAttribute" || typeName == "DataMemberAttribute")
                {
                    foreach (string prop in new[] { "Name", "PropertyName" })
                    {
                        PropertyInfo pi = a.GetType().GetProperty(prop);
                        if (pi != null && pi.PropertyType == typeof(string))
                        {
                            var value = pi.GetValue(a, null) as string;
                            if (!string.IsNullOrEmpty(value)) name = value;
                        }
                    }
                }
            }
        }

        /// <summary>The JSON names of a type's members (and a warm member cache).</summary>
        public static string[] GetMemberNames(Type type, JsonOptions options = null)
        {
            MemberMap map = GetMap(type, options ?? JsonOptions.Default);
            return Array.ConvertAll(map.Readable, m => m.Name);
        }

        internal static MemberMap GetMap(Type type, JsonOptions o)
        {
            lock (o.Maps)
            {
                MemberMap map;
                if (o.Maps.TryGetValue(type, out map)) return map;
                map = BuildMap(type, o);
                o.Maps[type] = map;
                return map;
            }
        }

        private static MemberMap BuildMap(Type type, JsonOptions o)
        {
            var members = new List<Member>();
            var seen = new Dictionary<string, bool>(); // not HashSet: that would load System.Core
            const BindingFlags flags = BindingFlags.Instance | BindingFlags.Public;
            foreach (PropertyInfo p in type.GetProperties(flags))
            {
                if (p.GetIndexParameters().Length != 0) continue;
                MethodInfo getter = p.GetGetMethod(false), setter = p.GetSetMethod(false);
                if (getter == null && setter == null) continue;
                string name;
                bool ignore;
                ReadAttributes(p, out name, out ignore);
                if (ignore || seen.ContainsKey(p.Name)) continue; // hidden (`new`) members: most derived wins
                seen[p.Name] = true;
                members.Add(new Member
                {
                    Name = name ?? ConvertName(p.Name, o),
                    Type = p.PropertyType,
                    Property = p,
                    CanRead = getter != null,
                    CanWrite = setter != null,
                });
            }
            foreach (FieldInfo f in type.GetFields(flags))
            {
                if (f.IsLiteral) continue;
                string name;
                bool ignore;
                ReadAttributes(f, out name, out ignore);
                if (ignore || seen.ContainsKey(f.Name)) continue;
                seen[f.Name] = true;
                members.Add(new Member
                {
                    Name = name ?? ConvertName(f.Name, o),
                    Type = f.FieldType,
                    Field = f,
                    CanRead = true,
                    CanWrite = !f.IsInitOnly,
                });
            }
            var map = new MemberMap
            {
                Readable = members.FindAll(m => m.CanRead).ToArray(),
                Exact = new Dictionary<string, Member>(StringComparer.Ordinal),
                Folded = o.CaseInsensitive ? new Dictionary<string, Member>(StringComparer.OrdinalIgnoreCase) : null,
            };
            foreach (Member m in members)
            {
                if (!map.Exact.ContainsKey(m.Name)) map.Exact[m.Name] = m;
                if (map.Folded != null && !map.Folded.ContainsKey(m.Name)) map.Folded[m.Name] = m;
            }
            return map;
        }

        // ---------------------------------------------------------------- writing

        private static void Write(StringBuilder sb, object value, JsonOptions o, int depth)
        {
            if (value == null) { sb.Append("null"); return; }
            if (depth > o.MaxDepth)
                throw new JsonException("A possible object cycle was detected. This can either be due to a cycle or if the object depth is larger than the maximum allowed depth of " + o.MaxDepth + ".");
            var inv = CultureInfo.InvariantCulture;
            Type type = value.GetType();
            var s = value as string;
            if (s != null) { WriteString(sb, s); return; }
            if (type.IsEnum)
            {
                sb.Append(Convert.ToString(Convert.ChangeType(value, Enum.GetUnderlyingType(type), inv), inv));
                return;
            }
            switch (Type.GetTypeCode(type))
            {
                case TypeCode.Boolean: sb.Append((bool)value ? "true" : "false"); return;
                case TypeCode.Char: WriteString(sb, value.ToString()); return;
                case TypeCode.SByte:
                case TypeCode.Byte:
                case TypeCode.Int16:
                case TypeCode.UInt16:
                case TypeCode.Int32:
                case TypeCode.UInt32:
                case TypeCode.Int64:
                case TypeCode.UInt64:
                case TypeCode.Decimal:
                    sb.Append(((IFormattable)value).ToString(null, inv));
                    return;
                case TypeCode.Double:
                    WriteReal((double)value, sb, ((double)value).ToString("R", inv));
                    return;
                case TypeCode.Single:
                    WriteReal((float)value, sb, ((float)value).ToString("R", inv));
                    return;
                case TypeCode.DateTime:
                    var dt = (DateTime)value;
                    string format = dt.Kind == DateTimeKind.Utc ? "yyyy-MM-ddTHH:mm:ss.FFFFFFFZ"
                        : dt.Kind == DateTimeKind.Local ? "yyyy-MM-ddTHH:mm:ss.FFFFFFFzzz" : "yyyy-MM-ddTHH:mm:ss.FFFFFFF";
                    WriteString(sb, dt.ToString(format, inv));
                    return;
            }
            if (value is DateTimeOffset) { WriteString(sb, ((DateTimeOffset)value).ToString("yyyy-MM-ddTHH:mm:ss.FFFFFFFzzz", inv)); return; }
            if (value is Guid) { WriteString(sb, ((Guid)value).ToString("D")); return; }
            if (value is TimeSpan) { WriteString(sb, ((TimeSpan)value).ToString("c", inv)); return; }
            if (type.FullName == "System.Uri") { WriteString(sb, (string)type.GetProperty("OriginalString").GetValue(value, null)); return; }
            var bytes = value as byte[];
            if (bytes != null) { WriteString(sb, Convert.ToBase64String(bytes)); return; }
            var ms = value as MemoryStream;
            if (ms != null) { WriteString(sb, Convert.ToBase64String(ms.ToArray())); return; }
            var num = value as JsonNumber;
            if (num != null) { sb.Append(num.Text); return; }
            if (value is Type || value is Delegate || value is IntPtr || value is Stream)
                throw new JsonException("Serialization of '" + TypeName(type) + "' instances is not supported.");

            var dict = value as IDictionary;
            if (dict != null)
            {
                // null dictionary values are kept, like System.Text.Json does
                sb.Append('{');
                bool first = true;
                foreach (DictionaryEntry e in dict)
                {
                    if (!first) sb.Append(',');
                    first = false;
                    WriteString(sb, Convert.ToString(e.Key, inv));
                    sb.Append(':');
                    Write(sb, e.Value, o, depth + 1);
                }
                sb.Append('}');
                return;
            }
            Type keyType, valueType;
            if (DictionaryTypes(type, out keyType, out valueType))
            {
                // a generic dictionary that is not an IDictionary: enumerate its KeyValuePairs
                Type pairType = typeof(KeyValuePair<,>).MakeGenericType(keyType, valueType);
                PropertyInfo keyProp = pairType.GetProperty("Key"), valueProp = pairType.GetProperty("Value");
                sb.Append('{');
                bool first = true;
                foreach (object pair in (IEnumerable)value)
                {
                    if (!first) sb.Append(',');
                    first = false;
                    WriteString(sb, Convert.ToString(keyProp.GetValue(pair, null), inv));
                    sb.Append(':');
                    Write(sb, valueProp.GetValue(pair, null), o, depth + 1);
                }
                sb.Append('}');
                return;
            }
            var enumerable = value as IEnumerable;
            if (enumerable != null)
            {
                sb.Append('[');
                bool first = true;
                foreach (object item in enumerable)
                {
                    if (!first) sb.Append(',');
                    first = false;
                    Write(sb, item, o, depth + 1);
                }
                sb.Append(']');
                return;
            }

            MemberMap map = GetMap(type, o);
            sb.Append('{');
            bool firstMember = true;
            foreach (Member m in map.Readable)
            {
                object v = m.Get(value);
                if (v == null && o.IgnoreNullValues) continue;
                if (!firstMember) sb.Append(',');
                firstMember = false;
                WriteString(sb, m.Name);
                sb.Append(':');
                Write(sb, v, o, depth + 1);
            }
            sb.Append('}');
        }

        private static void WriteReal(double d, StringBuilder sb, string text)
        {
            if (double.IsNaN(d) || double.IsInfinity(d))
                throw new JsonException(".NET number values such as positive and negative infinity cannot be written as valid JSON.");
            sb.Append(text);
        }
    }
}

namespace System.Text.Json.Serialization
{
    /// <summary>The JSON name of a property or field (honoured by the lambdad serializers).</summary>
    [AttributeUsage(AttributeTargets.Property | AttributeTargets.Field, AllowMultiple = false)]
    public sealed class JsonPropertyNameAttribute : Attribute
    {
        public JsonPropertyNameAttribute(string name) { Name = name; }

        public string Name { get; private set; }
    }

    /// <summary>Excludes a property or field from (de)serialisation.</summary>
    [AttributeUsage(AttributeTargets.Property | AttributeTargets.Field, AllowMultiple = false)]
    public sealed class JsonIgnoreAttribute : Attribute
    {
    }
}

namespace Amazon.Lambda.Serialization.SystemTextJson
{
    using Lambdad.Json;

    /// <summary>Thrown when the event or the response cannot be converted.</summary>
    public class JsonSerializerException : Exception
    {
        public JsonSerializerException(string message) : base(message) { }

        public JsonSerializerException(string message, Exception exception) : base(message, exception) { }
    }

    /// <summary>The serializer of AWS's .NET templates: names as declared, nulls omitted,
    /// case-insensitive property matching.</summary>
    public class DefaultLambdaJsonSerializer : ILambdaSerializer
    {
        private const string DebugVariable = "LAMBDA_NET_SERIALIZER_DEBUG";
        private static readonly UTF8Encoding Utf8 = new UTF8Encoding(false);
        private readonly bool _debug;

        /// <summary>Options of the underlying lambdad JSON engine.</summary>
        protected JsonOptions SerializerOptions { get; private set; }

        public DefaultLambdaJsonSerializer() : this(NamingPolicy.AsIs) { }

        protected DefaultLambdaJsonSerializer(NamingPolicy naming)
        {
            SerializerOptions = new JsonOptions { Naming = naming };
            _debug = string.Equals(Environment.GetEnvironmentVariable(DebugVariable), "true", StringComparison.OrdinalIgnoreCase);
        }

        public void Serialize<T>(T response, Stream responseStream)
        {
            string json;
            try
            {
                json = JsonCodec.Serialize(response, SerializerOptions);
            }
            catch (Exception e)
            {
                throw new JsonSerializerException("Error converting the response object of type " + typeof(T).FullName + " from the Lambda function to JSON: " + e.Message, e);
            }
            if (_debug)
                Console.WriteLine("Lambda Serialize " + (response == null ? typeof(T) : response.GetType()).FullName + ": " + json);
            byte[] bytes = Utf8.GetBytes(json);
            responseStream.Write(bytes, 0, bytes.Length);
        }

        public T Deserialize<T>(Stream requestStream)
        {
            string json;
            var ms = requestStream as MemoryStream;
            if (ms != null)
            {
                json = Utf8.GetString(ms.ToArray());
            }
            else
            {
                using (var reader = new StreamReader(requestStream, Utf8)) json = reader.ReadToEnd();
            }
            if (json.Length > 0 && json[0] == '\uFEFF') json = json.Substring(1);
            if (_debug) Console.WriteLine("Lambda Deserialize " + typeof(T).FullName + ": " + json);
            try
            {
                return (T)JsonCodec.Deserialize(json, typeof(T), SerializerOptions);
            }
            catch (Exception e)
            {
                string message = typeof(T) == typeof(string)
                    ? "Error converting the Lambda event JSON payload to a string. JSON strings must be quoted, for example \"Hello World\" in order to be converted to a string: " + e.Message
                    : "Error converting the Lambda event JSON payload to type " + typeof(T).FullName + ": " + e.Message;
                throw new JsonSerializerException(message, e);
            }
        }
    }

    /// <summary>Like <see cref="DefaultLambdaJsonSerializer"/> but writes camelCase names.</summary>
    public class CamelCaseLambdaJsonSerializer : DefaultLambdaJsonSerializer
    {
        public CamelCaseLambdaJsonSerializer() : base(NamingPolicy.CamelCase) { }
    }

    /// <summary>The first (now obsolete) System.Text.Json serializer; camelCase names.</summary>
    [Obsolete("Use DefaultLambdaJsonSerializer or CamelCaseLambdaJsonSerializer.")]
    public class LambdaJsonSerializer : DefaultLambdaJsonSerializer
    {
        public LambdaJsonSerializer() : base(NamingPolicy.CamelCase) { }
    }
}
