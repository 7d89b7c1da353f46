namespace MoeNotebooks.Reports;

/// <summary>The plotly.js bundled inside Plotly.NET.dll; see <see cref="MoeNotebooks.Interactive.PlotlyJs"/>.</summary>
public static class PlotlyJs
{
    /// <summary>Manifest resource name, e.g. <c>Plotly.NET.plotly-2.28.0.min.js</c>.</summary>
    public static string ResourceName => MoeNotebooks.Interactive.PlotlyJs.ResourceName;

    /// <summary>plotly.js version, e.g. <c>2.28.0</c>.</summary>
    public static string Version => MoeNotebooks.Interactive.PlotlyJs.Version;

    /// <summary>File name of the shared copy beside the reports (<c>--shared-assets</c>).</summary>
    public static string FileName => MoeNotebooks.Interactive.PlotlyJs.FileName;

    /// <summary>The minified source, safe inside an inline &lt;script&gt; and offline.</summary>
    public static string Source => MoeNotebooks.Interactive.PlotlyJs.Source;
}
