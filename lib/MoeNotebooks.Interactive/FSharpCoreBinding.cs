using System.Reflection;
using System.Runtime.CompilerServices;
using System.Runtime.Loader;

namespace MoeNotebooks.Interactive;

/// <summary>
/// Plotly.NET 6 is compiled against FSharp.Core 10.1 while the .NET Interactive kernel ships (and has already loaded)
/// FSharp.Core 10.0. Without help, the runtime cannot bind the higher version and chart code throws
/// <see cref="FileNotFoundException"/>. This binding answers any FSharp.Core request with the copy already loaded.
/// </summary>
public static class FSharpCoreBinding
{
    private const string FSharpCoreName = "FSharp.Core";
    private static int installed;

    /// <summary>True once the resolver is registered in this process.</summary>
    public static bool IsInstalled => Volatile.Read(ref installed) == 1;

    /// <summary>Registers the resolver once per process; later calls do nothing.</summary>
    public static void Install()
    {
        if (Interlocked.Exchange(ref installed, 1) == 1)
        {
            return;
        }

        AssemblyLoadContext.Default.Resolving += ResolveFSharpCore;
        ScriptSafeJson();
    }

    /// <summary>
    /// Chart data and layout are written by Plotly.NET (Newtonsoft.Json) into a &lt;script&gt; block of the chart's HTML.
    /// By default Newtonsoft leaves &lt; and &gt; as they are, so a title or label holding <c>&lt;/script&gt;</c> would end
    /// the script and inject markup (a scenario named <c>&lt;/script&gt;&lt;script&gt;alert(1)&lt;/script&gt;</c>).
    /// EscapeHtml writes &lt; &gt; &amp; ' " as \u003c... escapes: the same string for the chart, inert for the HTML parser.
    /// Set once for the process, before any chart is serialised; separate so Plotly.NET loads after the binding is in place.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void ScriptSafeJson() =>
        global::Globals.JSON_CONFIG.StringEscapeHandling = Newtonsoft.Json.StringEscapeHandling.EscapeHtml;

#pragma warning disable CA2255 // Intended: the fix must be in place before any Plotly.NET type is touched from this assembly.
    [ModuleInitializer]
    internal static void InstallOnModuleLoad() => Install();
#pragma warning restore CA2255

    /// <summary>The FSharp.Core already loaded in any load context, if any (highest version first).</summary>
    public static Assembly? FindLoadedFSharpCore() =>
        AppDomain.CurrentDomain.GetAssemblies()
            .Where(a => string.Equals(a.GetName().Name, FSharpCoreName, StringComparison.OrdinalIgnoreCase))
            .OrderByDescending(a => a.GetName().Version)
            .FirstOrDefault();

    private static Assembly? ResolveFSharpCore(AssemblyLoadContext context, AssemblyName requested) =>
        string.Equals(requested.Name, FSharpCoreName, StringComparison.OrdinalIgnoreCase)
            ? FindLoadedFSharpCore()
            : null;
}
