using System.Runtime.CompilerServices;
using Microsoft.DotNet.Interactive;
using Microsoft.DotNet.Interactive.Formatting;
using Plotly.NET;

namespace MoeNotebooks.Interactive;

/// <summary>
/// Shows a Plotly.NET chart in a notebook WITHOUT the network. Plotly.NET.Interactive's formatter writes chart HTML
/// that loads require.js and plotly.js from CDNs, so charts are blank offline and in exported notebooks. This
/// formatter (registered for <see cref="GenericChart"/> by every chart helper, replacing that one) writes plotly.js
/// inline in the FIRST chart a kernel shows and, in that one and every later chart, a plot script that only calls the
/// <c>Plotly</c> global. Outputs of one notebook share one page in VS Code, Jupyter and nbconvert's HTML, so
/// later charts draw with the copy the first one brought.
/// </summary>
public static class ChartDisplay
{
    /// <summary>Attribute on the inline plotly.js &lt;script&gt; (report writers drop it and add their own single copy).</summary>
    public const string InlinePlotlyMarker = "data-moenotebooks-plotly";

    private static readonly ConditionalWeakTable<Kernel, object> KernelsWithPlotly = new();
    private static readonly ConditionalWeakTable<Kernel, object> KernelsWithFormatters = new();
    private static int registeredOutsideKernels;

    /// <summary>
    /// Registers the chart formatter and <see cref="TableDisplay"/>'s table formatter once per kernel (the formatter
    /// registry is process-wide and the packages' own extensions register theirs again in every new kernel, so ours
    /// must come after theirs in each); later calls in the same kernel do nothing. Every chart and table helper calls
    /// it, so it has run before any of their results is displayed.
    /// </summary>
    public static void Install()
    {
        FSharpCoreBinding.Install();
        var kernel = KernelInvocationContext.Current?.HandlingKernel?.RootKernel;
        if (kernel is null)
        {
            if (Interlocked.Exchange(ref registeredOutsideKernels, 1) == 0)
            {
                Register();
            }

            return;
        }

        lock (KernelsWithFormatters)
        {
            if (KernelsWithFormatters.TryGetValue(kernel, out _))
            {
                return;
            }

            KernelsWithFormatters.Add(kernel, new object());
        }

        Register();
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void Register()
    {
        Formatter.Register<GenericChart>((chart, writer) => writer.Write(ToHtml(chart, NeedsPlotly())), HtmlFormatter.MimeType);
        Formatter.Register<Microsoft.Data.Analysis.DataFrame>((frame, writer) => writer.Write(TableDisplay.ToHtml(frame)), HtmlFormatter.MimeType);
        Formatter.Register<HeadlineSet>((set, writer) => writer.Write(Headlines.ToHtml(set)), HtmlFormatter.MimeType);
        Formatter.Register<SkipNotice>((notice, writer) => writer.Write(Headlines.ToHtml(notice)), HtmlFormatter.MimeType);
    }

    /// <summary>
    /// True for the first chart shown by the current kernel session (plotly.js must come with it), false afterwards;
    /// true outside a kernel (a lone fragment must bring its own plotly.js).
    /// </summary>
    private static bool NeedsPlotly()
    {
        var kernel = KernelInvocationContext.Current?.HandlingKernel?.RootKernel;
        if (kernel is null)
        {
            return true;
        }

        lock (KernelsWithPlotly)
        {
            if (KernelsWithPlotly.TryGetValue(kernel, out _))
            {
                return false;
            }

            KernelsWithPlotly.Add(kernel, new object());
            return true;
        }
    }

    /// <summary>
    /// The chart as HTML that needs no network: a &lt;div&gt; and a script calling <c>Plotly.newPlot</c>, preceded by
    /// the inlined plotly.js when <paramref name="includePlotly"/>.
    /// </summary>
    public static string ToHtml(GenericChart chart, bool includePlotly)
    {
        Install();
        return ToHtmlCore(chart, includePlotly);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static string ToHtmlCore(GenericChart chart, bool includePlotly)
    {
        var options = DisplayOptions.init(null, null, null, null, null, null, Microsoft.FSharp.Core.FSharpOption<PlotlyJSReference>.Some(PlotlyJSReference.NoReference));
        var withoutLoader = Chart.withDisplayOptions(options).Invoke(chart);
        var plot = GenericChart.toChartHTML(withoutLoader);
        return includePlotly
            ? $"<script type=\"text/javascript\" {InlinePlotlyMarker}=\"{PlotlyJs.Version}\">/* plotly.js {PlotlyJs.Version} (MIT), inlined once per kernel session */\n{PlotlyJs.Source}\n</script>\n{plot}"
            : plot;
    }
}
